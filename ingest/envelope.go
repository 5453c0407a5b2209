package ingest

import (
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

// newEnvelopeWriter prepares the envelopes of a request from env, whose
// Project and Event are ignored. The shared parts are slices of one
// buffer: a single-event request pays for one allocation, not one a part.
func newEnvelopeWriter(env *event.Envelope) *envelopeWriter {
	w := &envelopeWriter{signals: env.Signals}
	b := make([]byte, 0, 160+len(env.Endpoint)+len(env.IP)+len(env.UserAgent)+len(env.RequestID))
	part := func(from int) []byte { return b[from:len(b):len(b)] }

	n := len(b)
	b = strconv.AppendInt(append(b, `{"v":`...), int64(env.Version), 10)
	b = strconv.AppendUint(append(b, `,"kind":`...), uint64(env.Kind), 10)
	b = append(b, `,"project":`...)
	w.head = part(n)
	n = len(b)
	b = event.AppendJSONStringHTML(append(b, `,"endpoint":`...), env.Endpoint)
	b = strconv.AppendInt(append(b, `,"received_at":`...), env.ReceivedAt, 10)
	w.mid = part(n)
	w.ip = env.IP
	if env.IP != "" {
		n = len(b)
		b = event.AppendJSONStringHTML(append(b, `,"ip":`...), env.IP)
		w.ipJSON = part(n)
	}
	if env.UserAgent != "" {
		n = len(b)
		b = event.AppendJSONStringHTML(append(b, `,"ua":`...), env.UserAgent)
		w.ua = part(n)
	}
	n = len(b)
	b = appendSignals(b, env.Signals)
	w.sigJSON = part(n)
	n = len(b)
	if env.RequestID != "" {
		b = event.AppendJSONStringHTML(append(b, `,"request_id":`...), env.RequestID)
	}
	b = append(b, `,"event":`...)
	w.tail = part(n)
	return w
}

// appendSignals appends `,"signals":` and s as json.Marshal writes it: the
// set flags in field order (they are omitempty).
func appendSignals(b []byte, s event.Signals) []byte {
	b = append(b, `,"signals":{`...)
	sep := false
	for _, f := range [...]struct {
		name string
		set  bool
	}{{`"dnt":true`, s.DNT}, {`"gpc":true`, s.GPC}, {`"optout":true`, s.OptOut}, {`"nogeo":true`, s.NoGeo}} {
		if f.set {
			if sep {
				b = append(b, ',')
			}
			b, sep = append(b, f.name...), true
		}
	}
	return append(b, '}')
}

// write returns the envelope of one normalised record.
func (w *envelopeWriter) write(n *normalized) []byte {
	if n.project != w.project || w.projectJSON == nil {
		w.project, w.projectJSON = n.project, event.AppendJSONStringHTML(nil, n.project)
	}
	ipJSON := w.ipJSON
	if n.ip != "" && n.ip != w.ip {
		ipJSON = event.AppendJSONStringHTML([]byte(`,"ip":`), n.ip)
	}
	sigJSON := w.sigJSON
	if n.noGeo && !w.signals.NoGeo {
		s := w.signals
		s.NoGeo = true
		sigJSON = appendSignals(nil, s)
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
