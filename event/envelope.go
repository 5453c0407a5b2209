package event

import (
	"encoding/json"
	"strconv"
)

// The envelope's format, in one place: the type (whose struct tags are
// the format the reference reader and MarshalEnvelope read and write), the
// collector's writer (EnvelopeWriter), and what the worker's fast reader
// reads of it (collectorHead for the writer's layout, fields for any
// other). To add a field: add it to Envelope; write it in
// EnvelopeWriter.Reset where its place in Envelope is; read it in fields
// and, where EnvelopeWriter writes it, in collectorHead. The tests hold
// the writer to MarshalEnvelope (ingest), the fast reader to the
// reference (FuzzDecoder) and the collector's output to the fast layout
// (TestCollectorEnvelopesTakeTheFastPath).

// EnvelopeVersion is the version of the envelope format written to Kafka.
// A worker refuses (dead-letters) envelopes of a version it does not know,
// so a format change must bump it and keep reading the old one.
const EnvelopeVersion = 1

// Signals are the privacy choices the request carried. The collector only
// records them; the worker's policy stage decides what they mean.
type Signals struct {
	DNT    bool `json:"dnt,omitempty"`    // DNT: 1 header
	GPC    bool `json:"gpc,omitempty"`    // Sec-GPC: 1 header
	OptOut bool `json:"optout,omitempty"` // the opt-out cookie was present
	// NoGeo is set when the request asked for no IP geolocation (ip=0).
	NoGeo bool `json:"nogeo,omitempty"`
}

// Envelope is one event as the collector writes it to the raw topic: the
// normalised Mixpanel object plus the request context the worker needs.
//
// It carries the raw client IP and identifiers, so it exists only in the
// collector's memory, the raw topic (short retention) and the worker's memory.
type Envelope struct {
	Version    int     `json:"v"`
	Kind       Kind    `json:"kind"`
	Project    string  `json:"project"`
	Endpoint   string  `json:"endpoint"`
	ReceivedAt int64   `json:"received_at"` // Unix milliseconds
	IP         string  `json:"ip,omitempty"`
	UserAgent  string  `json:"ua,omitempty"`
	Signals    Signals `json:"signals"`
	RequestID  string  `json:"request_id,omitempty"`
	// Event is the normalised Mixpanel object, one shape for every kind:
	//
	//	{"event": name, "properties": {...}, "value": ...}
	//
	// properties always holds time (Unix ms) and $insert_id, and
	// distinct_id when there is one. For KindTrack, event is the event name
	// and value is absent. For KindEngage and KindGroups, event is the one
	// profile operation of this update ("$set", "$set_once", "$add",
	// "$append", "$union", "$remove", "$unset", "$delete"), value is its
	// operand as the SDK sent it, and properties holds the update's
	// modifiers ($ignore_time, $ignore_alias) and, for groups, $group_key
	// and $group_id. An update that carries several operations becomes one
	// envelope per operation.
	Event json.RawMessage `json:"event"`
}

// MarshalEnvelope encodes env for the raw topic.
func MarshalEnvelope(env *Envelope) ([]byte, error) {
	return json.Marshal(env)
}

// EnvelopeWriter writes the envelopes of one request: the collector's
// writer. It produces the bytes MarshalEnvelope would, without marshalling
// by reflection and re-validating each event: the parts all envelopes of
// a request share are encoded once, and the event, which Veil has just
// written itself, is copied in. ingest's
// TestEnvelopeWriterMatchesMarshalEnvelope holds the two equal, and the
// Decoder's collectorHead reads what it writes with prefix compares.
type EnvelopeWriter struct {
	head    []byte // {"v":1,"kind":K,"project":
	mid     []byte // ,"endpoint":...,"received_at":N
	ip      string
	ipJSON  []byte // ,"ip":"..." or nothing
	ua      []byte // ,"ua":"..." or nothing
	signals Signals
	sigJSON []byte // ,"signals":{...}
	tail    []byte // ,"request_id":"..." or nothing, then ,"event":
	// The last project written, which rarely changes.
	project     string
	projectJSON []byte
	hasProject  bool
	buf         []byte // what the shared parts are slices of
}

// NewEnvelopeWriter prepares the envelopes of a request from env, whose
// Project and Event are ignored.
func NewEnvelopeWriter(env *Envelope) *EnvelopeWriter {
	w := &EnvelopeWriter{}
	w.Reset(env)
	return w
}

// Reset prepares w for the envelopes of a request from env, whose Project
// and Event are ignored. The shared parts are slices of one buffer, which
// w keeps for the next request.
func (w *EnvelopeWriter) Reset(env *Envelope) {
	b := w.buf[:0]
	if need := 160 + len(env.Endpoint) + len(env.IP) + len(env.UserAgent) + len(env.RequestID); cap(b) < need {
		b = make([]byte, 0, need)
	}
	*w = EnvelopeWriter{signals: env.Signals, projectJSON: w.projectJSON[:0]}
	// A part stays valid should b grow: it keeps the array it was
	// written in.
	part := func(from int) []byte { return b[from:len(b):len(b)] }

	n := len(b)
	b = strconv.AppendInt(append(b, `{"v":`...), int64(env.Version), 10)
	b = strconv.AppendUint(append(b, `,"kind":`...), uint64(env.Kind), 10)
	b = append(b, `,"project":`...)
	w.head = part(n)
	n = len(b)
	b = AppendJSONStringHTML(append(b, `,"endpoint":`...), env.Endpoint)
	b = strconv.AppendInt(append(b, `,"received_at":`...), env.ReceivedAt, 10)
	w.mid = part(n)
	w.ip = env.IP
	if env.IP != "" {
		n = len(b)
		b = AppendJSONStringHTML(append(b, `,"ip":`...), env.IP)
		w.ipJSON = part(n)
	}
	if env.UserAgent != "" {
		n = len(b)
		b = AppendJSONStringHTML(append(b, `,"ua":`...), env.UserAgent)
		w.ua = part(n)
	}
	n = len(b)
	b = appendSignals(b, env.Signals)
	w.sigJSON = part(n)
	n = len(b)
	if env.RequestID != "" {
		b = AppendJSONStringHTML(append(b, `,"request_id":`...), env.RequestID)
	}
	b = append(b, `,"event":`...)
	w.tail = part(n)
	w.buf = b
}

// appendSignals appends `,"signals":` and s as json.Marshal writes it: the
// set flags in field order (they are omitempty).
func appendSignals(b []byte, s Signals) []byte {
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

// Record is what differs between the envelopes of one request: the
// project the record's token named, the record's own address and no-geo
// request (a profile update's $ip), and the normalised Mixpanel object
// (Envelope.Event).
type Record struct {
	Project string
	IP      string // overrides the request's address when set
	NoGeo   bool   // sets Signals.NoGeo
	Event   []byte
}

// Size is about what the envelope of r takes: exactly, unless r
// overrides the request's address or signals.
func (w *EnvelopeWriter) Size(r *Record) int {
	return len(w.head) + len(r.Project) + 2 + len(w.mid) + len(w.ipJSON) + len(w.ua) + len(w.sigJSON) + len(w.tail) + len(r.Event) + 1
}

// Append appends the envelope of r to b.
func (w *EnvelopeWriter) Append(b []byte, r *Record) []byte {
	if !w.hasProject || r.Project != w.project {
		w.project, w.projectJSON, w.hasProject = r.Project, AppendJSONStringHTML(w.projectJSON[:0], r.Project), true
	}
	ipJSON := w.ipJSON
	if r.IP != "" && r.IP != w.ip {
		ipJSON = AppendJSONStringHTML([]byte(`,"ip":`), r.IP)
	}
	sigJSON := w.sigJSON
	if r.NoGeo && !w.signals.NoGeo {
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
	b = append(b, r.Event...)
	return append(b, '}')
}

// Envelope fields, as bits of the set of fields seen.
const (
	fV = 1 << iota
	fKind
	fProject
	fEndpoint
	fReceivedAt
	fIP
	fUA
	fSignals
	fRequestID
	fEvent
)

// envHead is what collectorHead read: the envelope's fields before the
// event.
type envHead struct {
	received              int64
	project, endpoint, ip string
	ua                    string
	signals               Signals
	seen                  uint
}

// signals reads the signals object.
func (p *scanner) signals(s *Signals) bool {
	p.ws()
	if !p.lit('{') {
		return false
	}
	p.ws()
	if p.lit('}') {
		return true
	}
	var seen uint
	for {
		key, ok := p.rawKey()
		if !ok {
			return false
		}
		var dst *bool
		var bit uint
		switch string(key) {
		case "dnt":
			dst, bit = &s.DNT, 1
		case "gpc":
			dst, bit = &s.GPC, 2
		case "optout":
			dst, bit = &s.OptOut, 4
		case "nogeo":
			dst, bit = &s.NoGeo, 8
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		switch {
		case p.word("true"):
			*dst = true
		case p.word("false"):
			*dst = false
		default:
			return false
		}
		if more, ok := p.more('}'); !more {
			return ok
		}
	}
}

// fields reads the envelope's members one by one, up to its closing
// brace.
func (p *scanner) fields(f *envFields, m *memo, props *[]Prop) bool {
	for {
		key, ok := p.rawKey()
		if !ok {
			return false
		}
		var bit uint
		switch string(key) {
		case "v":
			bit = fV
			f.version, ok = p.integer()
		case "kind":
			bit = fKind
			f.kind, ok = p.integer()
			ok = ok && f.kind >= 0 && f.kind <= 255
		case "project":
			bit = fProject
			f.project, ok = p.str()
		case "endpoint":
			bit = fEndpoint
			f.endpoint, ok = p.str()
		case "received_at":
			bit = fReceivedAt
			f.received, ok = p.integer()
		case "ip":
			bit = fIP
			f.ip, ok = p.transient()
		case "ua":
			bit = fUA
			f.ua, ok = p.str()
		case "signals":
			bit = fSignals
			ok = p.signals(&f.signals)
		case "request_id":
			bit = fRequestID
			_, ok = p.transient()
		case "event":
			bit = fEvent
			ok = p.eventObject(f, m, props)
		default:
			return false
		}
		if !ok || f.seen&bit != 0 {
			return false
		}
		f.seen |= bit
		if more, ok := p.more('}'); !more {
			return ok
		}
	}
}

// collectorHead reads the envelope's fields before the event, just after
// the opening brace, in the layout EnvelopeWriter writes: v 1 and kind 1
// (a track event), project, endpoint, received_at, then ip and ua when
// there are, signals, request_id when there is one, and `,"event":`. Each
// value is read by the reader fields uses for it, so what it returns is
// what that loop would have found. It reports false on anything else: the
// caller starts over.
func (p *scanner) collectorHead() (h envHead, ok bool) {
	if !p.word(`"v":1,"kind":1,"project":`) {
		return h, false
	}
	if h.project, ok = p.str(); !ok || !p.word(`,"endpoint":`) {
		return h, false
	}
	if h.endpoint, ok = p.str(); !ok || !p.word(`,"received_at":`) {
		return h, false
	}
	if h.received, ok = p.integer(); !ok {
		return h, false
	}
	h.seen = fV | fKind | fProject | fEndpoint | fReceivedAt
	if p.word(`,"ip":`) {
		if h.ip, ok = p.transient(); !ok {
			return h, false
		}
		h.seen |= fIP
	}
	if p.word(`,"ua":`) {
		if h.ua, ok = p.str(); !ok {
			return h, false
		}
		h.seen |= fUA
	}
	if !p.word(`,"signals":`) {
		return h, false
	}
	if !p.word(`{}`) && !p.signals(&h.signals) {
		return h, false
	}
	h.seen |= fSignals
	if p.word(`,"request_id":`) {
		if _, ok = p.transient(); !ok {
			return h, false
		}
		h.seen |= fRequestID
	}
	return h, p.word(`,"event":`)
}
