package ingest

import (
	"encoding/json"
	"strconv"

	"github.com/veilhq/veil/event"
)

// envelopeWriter writes the envelopes of one request. It produces the bytes
// event.MarshalEnvelope would, without marshalling by reflection and
// re-validating each event: the parts all envelopes of a request share are
// encoded once, and the event, which Veil has just written itself, is
// copied in. TestEnvelopeWriterMatchesMarshalEnvelope holds the two equal.
type envelopeWriter struct {
	head    []byte // {"v":1,"kind":K,"project":
	mid     []byte // ,"endpoint":...,"received_at":N
	ip      string
	ipJSON  []byte // ,"ip":"..." or nothing
	ua      []byte // ,"ua":"..." or nothing
	signals event.Signals
	sigJSON []byte // ,"signals":{...}
	tail    []byte // ,"request_id":"..." or nothing, then ,"event":
	// The last project and override written, which rarely change.
	project     string
	projectJSON []byte
}

func quoteJSON(s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return b
}

// newEnvelopeWriter prepares the envelopes of a request from env, whose
// Project and Event are ignored.
func newEnvelopeWriter(env *event.Envelope) *envelopeWriter {
	w := &envelopeWriter{signals: env.Signals}
	w.head = strconv.AppendInt(append([]byte(nil), `{"v":`...), int64(env.Version), 10)
	w.head = strconv.AppendUint(append(w.head, `,"kind":`...), uint64(env.Kind), 10)
	w.head = append(w.head, `,"project":`...)
	w.mid = append(append([]byte(nil), `,"endpoint":`...), quoteJSON(env.Endpoint)...)
	w.mid = strconv.AppendInt(append(w.mid, `,"received_at":`...), env.ReceivedAt, 10)
	w.setIP(env.IP)
	if env.UserAgent != "" {
		w.ua = append(append([]byte(nil), `,"ua":`...), quoteJSON(env.UserAgent)...)
	}
	w.sigJSON = signalsJSON(env.Signals)
	if env.RequestID != "" {
		w.tail = append(append([]byte(nil), `,"request_id":`...), quoteJSON(env.RequestID)...)
	}
	w.tail = append(w.tail, `,"event":`...)
	return w
}

func (w *envelopeWriter) setIP(ip string) {
	w.ip = ip
	w.ipJSON = nil
	if ip != "" {
		w.ipJSON = append(append([]byte(nil), `,"ip":`...), quoteJSON(ip)...)
	}
}

func signalsJSON(s event.Signals) []byte {
	b, _ := json.Marshal(s) // flat booleans always marshal
	return append(append([]byte(nil), `,"signals":`...), b...)
}

// write returns the envelope of one normalised record.
func (w *envelopeWriter) write(n *normalized) []byte {
	if n.project != w.project || w.projectJSON == nil {
		w.project, w.projectJSON = n.project, quoteJSON(n.project)
	}
	ipJSON := w.ipJSON
	if n.ip != "" && n.ip != w.ip {
		ipJSON = append(append([]byte(nil), `,"ip":`...), quoteJSON(n.ip)...)
	}
	sigJSON := w.sigJSON
	if n.noGeo && !w.signals.NoGeo {
		s := w.signals
		s.NoGeo = true
		sigJSON = signalsJSON(s)
	}
	b := make([]byte, 0, len(w.head)+len(w.projectJSON)+len(w.mid)+len(ipJSON)+len(w.ua)+len(sigJSON)+len(w.tail)+len(n.object)+1)
	b = append(b, w.head...)
	b = append(b, w.projectJSON...)
	b = append(b, w.mid...)
	b = append(b, ipJSON...)
	b = append(b, w.ua...)
	b = append(b, sigJSON...)
	b = append(b, w.tail...)
	b = append(b, n.object...)
	return append(b, '}')
}
