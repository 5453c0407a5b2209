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
	// The last project written, which rarely changes.
	project     string
	projectJSON []byte
	hasProject  bool
	buf         []byte // what the shared parts are slices of
}

// newEnvelopeWriter prepares the envelopes of a request from env, whose
// Project and Event are ignored.
func newEnvelopeWriter(env *event.Envelope) *envelopeWriter {
	w := &envelopeWriter{}
	w.reset(env)
	return w
}

// reset prepares w for the envelopes of a request from env, whose Project
// and Event are ignored. The shared parts are slices of one buffer, which
// w keeps for the next request.
func (w *envelopeWriter) reset(env *event.Envelope) {
	b := w.buf[:0]
	if need := 160 + len(env.Endpoint) + len(env.IP) + len(env.UserAgent) + len(env.RequestID); cap(b) < need {
		b = make([]byte, 0, need)
	}
	*w = envelopeWriter{signals: env.Signals, projectJSON: w.projectJSON[:0]}
	// A part stays valid should b grow: it keeps the array it was
	// written in.
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
	w.buf = b
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
	return w.append(make([]byte, 0, w.size(n)), n)
}

// size is about what the envelope of n takes: exactly, unless n overrides
// the request's address or signals.
func (w *envelopeWriter) size(n *normalized) int {
	return len(w.head) + len(n.project) + 2 + len(w.mid) + len(w.ipJSON) + len(w.ua) + len(w.sigJSON) + len(w.tail) + len(n.object) + 1
}

// sizeAll is size summed over a request's records.
func (w *envelopeWriter) sizeAll(norm []normalized) int {
	total := 0
	for i := range norm {
		total += w.size(&norm[i])
	}
	return total
}

// append appends the envelope of one normalised record to b.
func (w *envelopeWriter) append(b []byte, n *normalized) []byte {
	if !w.hasProject || n.project != w.project {
		w.project, w.projectJSON, w.hasProject = n.project, event.AppendJSONStringHTML(w.projectJSON[:0], n.project), true
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
