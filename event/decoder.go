package event

import (
	"bytes"
	"encoding/binary"
	"github.com/veilhq/veil/internal/view"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Decoder reads raw-topic messages into Events: the worker's fast
// reader. It owns everything reused from one message to the next (the
// property records, and what it remembers of the previous message), so
// one Decoder belongs to one goroutine, and what an Event it filled
// points into is valid until it reads the next message.
//
// It reads a well-formed track envelope itself, leaving the properties as
// JSON text (Properties) that the stages read and rewrite in place and
// the sink writes as it came. Anything else (profile and group updates, a
// property named twice, an unknown or repeated field, anything invalid) it
// hands to Decode, the reference reader, which decides: the result and
// every error are the reference's by construction. FuzzDecoder and
// internal/app's FuzzDecodersAgree hold the two equal.
type Decoder struct {
	props []Prop
	memo  memo
	// fast says the last message was read by the fast path.
	fast bool
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{} }

// Decode reads value into ev, replacing its contents. Errors are
// *DecodeError and never quote the message's content.
func (d *Decoder) Decode(value []byte, ev *Event) error {
	props, ok := d.track(value, ev, d.props[:0])
	d.props, d.fast = props[:0], ok
	if ok {
		return nil
	}
	return decodeReference(value, ev, props[:0])
}

// Fast reports whether the last message was read by the fast path rather
// than handed to the reference reader: for tests that hold the common
// case to it.
func (d *Decoder) Fast() bool { return d.fast }

// memo is what a Decoder remembers of the previous message. The events of
// one request arrive one after the other (the collector writes them in
// one produce call, and they share a key), and their envelopes are the
// same up to the event: the same project, address, user agent, signals
// and request id. When a message starts with the very bytes of the
// previous one's head, what was read from them is read again without
// scanning, parsing the address or hashing the user agent: identical
// bytes read the same. The same goes for a distinct_id equal to the
// previous event's, which keeps its copy, and for the event name and
// promoted values, which keep their interned string.
//
// It holds the raw address and distinct_id in the worker's memory, where
// every event's already are.
type memo struct {
	// head is a copy of the previous envelope's text up to and including
	// `,"event":`, when collectorHead read it; empty otherwise.
	head []byte
	// What was read from head: strings interned, the address parsed.
	h    envHead
	addr netip.Addr
	// distinct is the last distinct_id read, copied out of its message.
	distinct string
	// interned is the string Intern returned last for the event name
	// (column 0) and each column's promoted value.
	interned [numColumns]string
	// keys are the known ids of the previous message's first props, 0
	// for a name that is not known.
	keys [64]Known
	// next is, for each known id, the known id of the name that came
	// after it last (0 for another name).
	next [NumKnown]Known
}

// intern is Intern, answered with a comparison instead of a hash when
// slot's last value was the same.
func (m *memo) intern(slot Column, s string) string {
	last := &m.interned[slot]
	if *last == s {
		return *last
	}
	v := Intern(s)
	if len(s) <= maxInternLen { // the table's own string, not a copy
		*last = v
	}
	return v
}

// distinctID returns s, copied out of its message unless it is the
// previous one.
func (m *memo) distinctID(s string) string {
	if s != m.distinct {
		m.distinct = strings.Clone(s)
	}
	return m.distinct
}

// envFields is what the fast reader read of a whole envelope.
type envFields struct {
	envHead
	version, kind int64
	name          string
	objLen        int // the event object's bytes
	// addr is the address already parsed, and interned says project,
	// ua and endpoint are already shared (both from the memo).
	addr     netip.Addr
	interned bool
	// taken holds, for distinct_id, time and $insert_id, 1 + the index
	// of their prop (0: none), as props reads them.
	taken [knownInsertID]int32
}

// track reads a track envelope into ev and reports whether it could;
// when it could not, ev is left for the reference reader to overwrite.
func (d *Decoder) track(value []byte, ev *Event, props []Prop) ([]Prop, bool) {
	p := scanner{b: value, view: true}
	var f envFields
	ok := p.envelope(&f, &d.memo, &props)
	p.ws()
	if !ok || p.i != len(p.b) || f.version != EnvelopeVersion || Kind(f.kind) != KindTrack || f.project == "" || f.seen&fEvent == 0 || f.name == "" {
		return props, false
	}
	// Cleared in place and then filled: a composite literal would be
	// built in the frame and copied.
	*ev = Event{}
	ev.Kind, ev.EventBytes, ev.Signals = KindTrack, f.objLen, f.signals
	ev.ReceivedAt = time.UnixMilli(f.received).UTC()
	switch {
	case f.addr.IsValid():
		ev.IP = f.addr
	case f.ip != "":
		a, err := netip.ParseAddr(f.ip)
		if err != nil {
			return props, false
		}
		ev.IP = a.Unmap()
	}
	// The strings read point into the message; what outlives it is
	// shared instead of copied for every event.
	ev.Project, ev.UserAgent, ev.Endpoint = f.project, f.ua, f.endpoint
	if !f.interned {
		ev.Project, ev.UserAgent, ev.Endpoint = Intern(f.project), Intern(f.ua), Intern(f.endpoint)
	}
	ev.Name = d.memo.intern(ColumnNone, f.name)
	ev.Properties = Properties{list: props, msg: value}
	return props, d.memo.takeFields(ev, props, &f.taken)
}

// takeFields takes distinct_id, $insert_id and time out of the props into
// their fields, as the reference reader does; taken says where they are.
func (m *memo) takeFields(ev *Event, props []Prop, taken *[knownInsertID]int32) bool {
	haveTime := false
	for _, at := range taken {
		if at == 0 {
			continue
		}
		pr := &props[at-1]
		switch pr.known {
		case knownDistinctID:
			switch pr.kind {
			case PropString, PropNumber:
				ev.DistinctID = m.distinctID(pr.str)
			case PropNull:
			default:
				return false // the reference marshals it
			}
		case knownInsertID:
			if pr.kind == PropString {
				ev.InsertID = pr.str // copied by the sink with the props
			}
		case knownTime:
			if pr.kind != PropNumber {
				return false
			}
			ms, ok := parseInt(pr.str)
			if !ok {
				return false
			}
			ev.Time, haveTime = time.UnixMilli(ms).UTC(), true
		}
		pr.flags |= flagDropped
	}
	return haveTime
}

// envelope reads the envelope object into f and the event's properties
// into props. The collector writes every envelope with the same fields in
// the same order (Envelope's), without whitespace: collectorHead reads
// that layout up to the event with prefix compares instead of a
// key-by-key scan, and a head that is the previous message's, byte for
// byte, is not read again. Any other layout is read field by field.
func (p *scanner) envelope(f *envFields, m *memo, props *[]Prop) bool {
	head := false
	if len(m.head) > 0 && bytes.HasPrefix(p.b, m.head) {
		p.i, f.envHead, f.addr, f.interned, head = len(m.head), m.h, m.addr, true, true
	} else {
		p.ws()
		if !p.lit('{') {
			return false
		}
		p.ws()
		start := p.i
		if h, ok := p.collectorHead(); ok {
			if h.ip != "" {
				a, err := netip.ParseAddr(h.ip)
				if err != nil {
					return false
				}
				f.addr = a.Unmap()
			}
			h.project, h.ua, h.endpoint = Intern(h.project), Intern(h.ua), Intern(h.endpoint)
			m.remember(p.b[:p.i], h, f.addr)
			f.envHead, f.interned, head = h, true, true
		} else {
			p.i = start
		}
	}
	if head {
		f.version, f.kind = EnvelopeVersion, int64(KindTrack)
		f.seen |= fEvent
		if !p.eventObject(f, m, props) {
			return false
		}
		p.ws()
		if p.lit('}') {
			return true
		}
		// More fields after the event: the loop reads them, and gives
		// up on any of the fields above named again.
		if !p.lit(',') {
			return false
		}
		p.ws()
	} else if p.lit('}') {
		return true
	}
	return p.fields(f, m, props)
}

// remember makes head (the bytes collectorHead read) and what was read
// from it, its strings interned, the memo's.
func (m *memo) remember(head []byte, h envHead, addr netip.Addr) {
	m.head = append(m.head[:0], head...)
	h.ip = "" // kept parsed: the text points into the message
	m.h, m.addr = h, addr
}

// eventObject reads {"event": name, "properties": {...}}.
func (p *scanner) eventObject(f *envFields, m *memo, props *[]Prop) bool {
	start := p.i
	if !p.lit('{') {
		return false
	}
	defer func() { f.objLen = p.i - start }()
	p.ws()
	if p.lit('}') {
		return true
	}
	var gotName, gotProps bool
	for {
		key, ok := p.rawKey()
		if !ok {
			return false
		}
		switch string(key) {
		case "event":
			if gotName {
				return false
			}
			gotName = true
			f.name, ok = p.str()
		case "properties":
			if gotProps {
				return false
			}
			gotProps = true
			ok = p.lit('{') && p.props(f, m, props)
		default:
			return false
		}
		if !ok {
			return false
		}
		if more, ok := p.more('}'); !more {
			return ok
		}
	}
}

// props reads the members of the properties object, after its opening
// brace, into props. A repeated key makes it give up: the reference keeps
// the last value.
func (p *scanner) props(f *envFields, m *memo, props *[]Prop) bool {
	p.ws()
	if p.lit('}') {
		return true
	}
	// A repeat is looked for cheaply: a known name (most of them) has a
	// bit of its own in knownSeen; the other names have one bit per
	// (length, first, last byte) signature in seen, and are compared with
	// the other names read only when a signature repeats.
	var (
		seen      uint64
		knownSeen [(NumKnown + 63) / 64]uint64
		prevEnd   = -2  // where the previous prop's value ends
		prevKnown Known // the known id of the previous prop's name
	)
	for {
		keyStart := p.i
		k, known, ok := p.predictedKey(m, len(*props), prevKnown)
		if !ok {
			if k, ok = p.quickStr(); !ok {
				return false
			}
			known = knownID(k)
		}
		plainName := !p.slow
		if len(*props) < len(m.keys) {
			m.keys[len(*props)] = known
		}
		if prevKnown != 0 {
			m.next[prevKnown] = known
		}
		prevKnown = known
		if known != 0 {
			w, bit := known/64, uint64(1)<<(known%64)
			if knownSeen[w]&bit != 0 {
				return false
			}
			knownSeen[w] |= bit
			if known <= knownInsertID {
				f.taken[known-1] = int32(len(*props) + 1)
			}
		} else {
			sig := uint64(1) << keySignature(k)
			if seen&sig != 0 {
				for i := range *props {
					if pr := &(*props)[i]; pr.known == 0 && pr.name == k {
						return false
					}
				}
			}
			seen |= sig
		}
		keyEnd := p.i
		if p.i < len(p.b) && p.b[p.i] == ':' {
			p.i++
		} else if p.ws(); !p.lit(':') {
			return false
		}
		p.ws()
		if p.i >= len(p.b) {
			return false
		}
		var (
			kind    PropKind
			str     string
			escaped bool
		)
		start := p.i
		switch c := p.b[p.i]; {
		case c == '"':
			kind = PropString
			str, ok = p.quickStr()
			escaped = p.slow
		case c == '{':
			kind, ok = PropObject, p.skip(1)
		case c == '[':
			kind, ok = PropArray, p.skip(1)
		case c == 't':
			kind, str, ok = PropBool, "true", p.word("true")
		case c == 'f':
			kind, str, ok = PropBool, "false", p.word("false")
		case c == 'n':
			kind, ok = PropNull, p.word("null")
		default:
			kind, ok = PropNumber, p.numberSpan()
			if ok {
				str = view.String(p.b[start:p.i])
			}
		}
		if !ok {
			return false
		}
		if col := knownProps[max(known, 1)-1].Column; known != 0 && col != ColumnNone && (kind == PropString || kind == PropNumber) {
			// A promoted value becomes a column of the batch: it gets
			// a string of its own, shared with the events before.
			str = m.intern(col, str)
		}
		// The record is written in place, field by field, which measured
		// 2–3 % faster over the decode than appending a composite literal.
		ps := *props
		if len(ps) < cap(ps) {
			ps = ps[:len(ps)+1]
		} else {
			ps = append(ps, Prop{})
		}
		*props = ps
		pr := &ps[len(ps)-1]
		pr.name, pr.raw, pr.str, pr.val = k, p.b[start:p.i:p.i], str, nil
		pr.kind, pr.known, pr.flags = kind, known, 0
		if escaped {
			pr.flags |= flagText
		}
		if plainName {
			pr.flags |= flagPlainName
			if start == keyEnd+1 {
				pr.flags |= flagWhole
				pr.start, pr.end = int32(keyStart), int32(p.i)
			}
		}
		if keyStart == prevEnd+1 {
			pr.flags |= flagNext
		}
		prevEnd = p.i
		if p.i < len(p.b) && p.b[p.i] == ',' {
			p.i++
			p.ws()
			continue
		}
		if more, ok := p.more('}'); !more {
			return ok
		}
	}
}

// predictedKey reads the key of prop n, which follows a prop named by the
// known id prev (0: none or another name), when it is the known name
// that came after prev in the messages before, or else the one the
// previous message had in that place, as the events of a request mostly
// have (the SDK's standard properties come first, in the same order, and
// an optional one shifts the places of those after it): a compare
// instead of the scan for the end of the string and the table lookup. It
// leaves p as it was and reports false otherwise.
func (p *scanner) predictedKey(m *memo, n int, prev Known) (string, Known, bool) {
	id := m.next[prev]
	if prev == 0 || id == 0 {
		if n >= len(m.keys) {
			return "", 0, false
		}
		id = m.keys[n]
	}
	if id == 0 {
		return "", 0, false
	}
	w := &knownWords[id]
	i, j := p.i+1, p.i+1+int(w.n)
	if j >= len(p.b) || p.b[p.i] != '"' || p.b[j] != '"' {
		return "", 0, false
	}
	// A name is compared as one or two words loaded from the message
	// (the second overlapping the first), not by a call to compare.
	switch {
	case w.n > 16 || i+8 > len(p.b):
		if string(p.b[i:j]) != knownProps[id-1].Name {
			return "", 0, false
		}
	case w.n < 8:
		if binary.LittleEndian.Uint64(p.b[i:])&w.mask != w.w0 {
			return "", 0, false
		}
	default:
		if binary.LittleEndian.Uint64(p.b[i:]) != w.w0 || binary.LittleEndian.Uint64(p.b[j-8:]) != w.w1 {
			return "", 0, false
		}
	}
	p.i, p.slow = j+1, false
	return view.String(p.b[i:j]), id, true
}

// knownWord is a known name as predictedKey compares it: its length and,
// up to 16 bytes, its first eight bytes (masked to its length when
// shorter) and its last eight.
type knownWord struct {
	w0, w1, mask uint64
	n            uint8
}

var knownWords = func() (t [NumKnown]knownWord) {
	for i, kp := range knownProps {
		k := kp.Name
		w := &t[i+1]
		w.n = uint8(len(k))
		var buf [8]byte
		copy(buf[:], k)
		w.w0 = binary.LittleEndian.Uint64(buf[:])
		w.mask = ^uint64(0)
		if len(k) < 8 {
			w.mask = 1<<(8*len(k)) - 1
		} else {
			w.w1 = binary.LittleEndian.Uint64([]byte(k[len(k)-8:]))
		}
	}
	return t
}()

// parseInt is json.Number.Int64 (strconv.ParseInt in base 10) with a
// loop of its own for the common case, up to 18 digits with an optional
// minus sign, which cannot overflow: strconv's general parser was 2 % of
// the worker's pass for the one number every event carries.
func parseInt(s string) (int64, bool) {
	if d := strings.TrimPrefix(s, "-"); len(d) > 0 && len(d) <= 18 {
		var n int64
		i := 0
		for ; i < len(d) && d[i]-'0' <= 9; i++ {
			n = n*10 + int64(d[i]-'0')
		}
		if i == len(d) {
			if len(d) < len(s) {
				n = -n
			}
			return n, true
		}
	}
	// Longer, empty, a fraction or an exponent: strconv says what it is.
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func keySignature(k string) uint {
	if k == "" {
		return 0
	}
	return (uint(len(k))*7 + uint(k[0])*3 + uint(k[len(k)-1])) & 63
}
