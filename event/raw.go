package event

import (
	"encoding/binary"
	"encoding/json"
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// PropKind is the JSON type of a raw property's value.
type PropKind uint8

// The kinds of JSON value a property holds.
const (
	PropString PropKind = iota + 1
	PropNumber
	PropBool
	PropNull
	PropObject
	PropArray
)

// Prop is one top-level property of a track event read by DecodeRaw: its
// name and its value's JSON text as the message carries it. The worker's
// stages read and mark props in place instead of decoding every value
// into a map, and the sink writes each kept prop's text as it came, so a
// property nobody needs to change costs a scan and a copy.
//
// Key, Raw and Str may point into the message value: they are valid while
// the worker handles the message, and the sink copies what it keeps. A
// stage changes a value through Str and Escaped or SetOutValue and drops
// a prop with Drop, but never reassigns Key or Raw (a name changes on the
// map, after Materialize): AppendProperties copies the props nothing
// changed straight out of the message.
type Prop struct {
	Key string
	// Raw is the value's JSON text.
	Raw []byte
	// Str is a string's unescaped text, or a number's text.
	Str string
	// Out, when a stage set it, is the JSON text written instead of Raw.
	Out  []byte
	Kind PropKind
	// Known is the id of Key among the names Mixpanel's SDKs and Veil's
	// stages use (KnownProp), 0 for any other name. DecodeRaw sets it.
	Known uint8
	// Escaped is set when Raw is not Str quoted as it is (the string had
	// escapes or invalid UTF-8): the value is then written from Str.
	Escaped bool
	// PlainKey is set when the key's JSON text is Key quoted as it is (it
	// needs no unescaping), so that it is written as it came.
	PlainKey bool
	// Drop removes the property from the event.
	Drop bool
	// member says how the prop's member sits in the message (memberWhole,
	// memberNext), for AppendProperties' runs, and whether DecodeRaw
	// found an object or array clean (memberCleaned).
	member uint8
}

// How a prop's member sits in the message DecodeRaw read.
const (
	// memberWhole: the message holds `"Key":Raw`, the key plain, in one
	// piece.
	memberWhole uint8 = 1 << iota
	// memberNext: it starts one byte, a comma, after the previous prop's
	// value ends.
	memberNext
	// memberCleaned: the value is an object or array that CleanJSON
	// holds clean by the Event's Cleaner (SetCleaner), checked as it was
	// read.
	memberCleaned
)

// CleanedBy reports whether pr's value is an object or array that
// CleanJSON(pr.Raw, c) would hold clean, as DecodeRaw found while reading
// it with the Cleaner its Event had (SetCleaner). It reports false when
// that is not known, and once a stage has set pr.Out.
func (pr *Prop) CleanedBy(ev *Event, c Cleaner) bool {
	return pr.member&memberCleaned != 0 && pr.Out == nil && ev.memo != nil && ev.memo.checkedBy == c
}

// Value returns the prop's value as encoding/json decodes it into an any
// with UseNumber: what the property map of Decode would hold.
func (pr *Prop) Value() (any, bool) {
	if pr.Out != nil {
		return DecodeJSONValue(pr.Out)
	}
	switch pr.Kind {
	case PropString:
		return pr.Str, true
	case PropNumber:
		return json.Number(pr.Str), true
	case PropBool:
		return pr.Raw[0] == 't', true
	case PropNull:
		return nil, true
	}
	return DecodeJSONValue(pr.Raw)
}

// DecodeRaw reads a raw-topic message value into ev as DecodeFast does,
// except that a track event's properties are left as JSON text in
// ev.Props (ev.Properties stays nil) for the stages to read and rewrite in
// place. What DecodeRaw does not cover (profile and group updates, a
// property named twice, anything DecodeFast hands to Decode) is decoded by
// DecodeFast into ev.Properties, so every error is Decode's.
//
// ev's prop and scratch space is reused: nothing may still refer to the
// previous event's props, as the worker's batch copies them on Append.
func DecodeRaw(value []byte, ev *Event) error {
	props := ev.Props
	if props == nil {
		props = ev.propsBuf
	}
	props, scratch, keys := props[:0], ev.scratch[:0], ev.keys[:0]
	memo := ev.memo
	if memo == nil {
		memo = new(rawMemo)
	}
	memo.checkedBy = memo.cleaner
	if decodeTrack(value, ev, nil, &props, memo) {
		ev.scratch, ev.keys, ev.memo, ev.value = scratch, keys, memo, value
		return nil
	}
	ev.Props, ev.value = nil, nil
	err := DecodeFast(value, ev)
	ev.propsBuf, ev.scratch, ev.keys, ev.memo = props[:0], scratch, keys, memo
	return err
}

// rawMemo is what DecodeRaw remembers of the previous message. The events
// of one request arrive one after the other (the collector writes them in
// one produce call, and they share a key), and their envelopes are the
// same up to the event: the same project, address, user agent, signals
// and request id. When a message starts with the very bytes of the
// previous one's head, what was read from them is read again without
// scanning, parsing the address or hashing the user agent: identical
// bytes read the same. The same goes for a distinct_id equal to the
// previous event's, which keeps its copy.
//
// The memo holds the raw address and distinct_id in the worker's memory,
// where every event's already are; it lives as long as the Event.
type rawMemo struct {
	// head is a copy of the previous envelope's text up to and including
	// `,"event":`, when collectorHead read it; empty otherwise.
	head []byte
	// What was read from head: strings interned, the address parsed.
	h    envHead
	addr netip.Addr
	// distinct is the last distinct_id read, copied out of its message.
	distinct string
	// interned is the string Intern returned last for each field of the
	// Event that InternField fills: the event name and the promoted
	// values of the next message mostly repeat this one's.
	interned [InternFields]string
	// keys are the known ids (KnownProp) of the previous message's first
	// props, 0 for a name that is not known.
	keys [64]uint8
	// next is, for each known id, the known id of the name that came
	// after it last (0 for another name).
	next [NumKnownProps]uint8
	// stage is what the stages keep from one event to the next
	// (StageMemo).
	stage [StageMemos]any
	// cleaner is the Cleaner the last stage to call SetCleaner gave:
	// DecodeRaw checks the next message's objects and arrays with it while
	// it reads them, and checkedBy is the one it checked the current
	// message's with (Prop.CleanedBy): a stage may set another before it
	// asks.
	cleaner, checkedBy Cleaner
}

// InternFields is the number of fields InternField tells apart; field 0
// is the event name, which the decoder interns.
const InternFields = 16

// InternField is the package's Intern for the value of one field of ev
// (0 ≤ field < InternFields, one number per field the callers fill),
// answered with a comparison instead of a hash when the field's last
// value was the same. Only the goroutine that owns ev may call it, as the
// worker's stages do.
func (ev *Event) InternField(field int, s string) string {
	if ev.memo == nil || field < 0 || field >= InternFields {
		return Intern(s)
	}
	slot := &ev.memo.interned[field]
	if *slot == s {
		return *slot
	}
	v := Intern(s)
	if len(s) <= maxInternLen { // the table's own string, not a copy
		*slot = v
	}
	return v
}

// SetCleaner makes c the Cleaner that DecodeRaw checks the objects and
// arrays of ev's next messages with, while it reads them, so that the
// stage that would check them with c afterwards asks Prop.CleanedBy
// instead of walking them again. A stage calls it with the Cleaner of the
// event's project: the next message mostly has the same. c's verdict on a
// string must not change while ev holds it, and c must be comparable (a
// pointer, as the scrubber is): CleanedBy compares it. Only the goroutine that owns
// ev may call it; it does nothing on an Event DecodeRaw did not read.
func (ev *Event) SetCleaner(c Cleaner) {
	if ev.memo != nil {
		ev.memo.cleaner = c
	}
}

// StageMemos is the number of slots StageMemo has. Each package whose
// stage keeps a memo owns one slot: de-identification slot 0.
const StageMemos = 1

// StageMemo returns slot i of what the worker's stages remember from one
// event to the next on this Event, or nil when ev keeps no memo (it was
// not read by DecodeRaw). A stage stores its own state there: the verdict
// on a value the next event of the same request is likely to repeat, so
// that it answers by a comparison instead of doing the work again. The
// state lives as long as ev, and only the goroutine that owns ev may use
// it, as with InternField.
func (ev *Event) StageMemo(i int) *any {
	if ev.memo == nil || i < 0 || i >= StageMemos {
		return nil
	}
	return &ev.memo.stage[i]
}

// remember makes head (the bytes collectorHead read) and what was read
// from it, its strings interned, the memo's.
func (m *rawMemo) remember(head []byte, h envHead, addr netip.Addr) {
	m.head = append(m.head[:0], head...)
	h.ip = "" // kept parsed: the text points into the message
	m.h, m.addr = h, addr
}

// distinctID returns s, copied out of its message unless it is the
// previous one. A nil memo always copies.
func (m *rawMemo) distinctID(s string) string {
	if m == nil {
		return strings.Clone(s)
	}
	if s != m.distinct {
		m.distinct = strings.Clone(s)
	}
	return m.distinct
}

// finishRaw takes distinct_id, $insert_id and time out of the props into
// their fields, as decodeTrack does with the map; taken says where they
// are (see scanner.taken).
func finishRaw(ev *Event, props []Prop, memo *rawMemo, taken *[knownInsertID]int32) bool {
	ev.Props = props
	haveTime := false
	for _, at := range taken {
		if at == 0 {
			continue
		}
		pr := &props[at-1]
		switch pr.Known {
		case knownDistinctID:
			switch pr.Kind {
			case PropString, PropNumber:
				ev.DistinctID = memo.distinctID(pr.Str)
			case PropNull:
			default:
				return false // Decode's stringify marshals it
			}
		case knownInsertID:
			if pr.Kind == PropString {
				ev.InsertID = pr.Str // copied by the sink with the props
			}
		case knownTime:
			if pr.Kind != PropNumber {
				return false
			}
			ms, ok := parseInt(pr.Str)
			if !ok {
				return false
			}
			ev.Time, haveTime = time.UnixMilli(ms).UTC(), true
		}
		pr.Drop = true
	}
	return haveTime
}

// rawObject reads the members of the properties object, after its opening
// brace, into props. A repeated key makes it give up: the map keeps the
// last value, and DecodeFast decides.
func (p *scanner) rawObject(props *[]Prop) bool {
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
		knownSeen [(NumKnownProps + 63) / 64]uint64
		prevEnd   = -2  // where the previous prop's value ends
		prevKnown uint8 // the known id of the previous prop's name
	)
	for {
		keyStart := p.i
		// DecodeRaw reads in view mode, where key is quickStr.
		k, known, ok := p.predictedKey(len(*props), prevKnown)
		if !ok {
			if k, ok = p.quickStr(); !ok {
				return false
			}
			known = knownID(k)
		}
		plainKey := !p.slow
		if m := p.memo; m != nil {
			if len(*props) < len(m.keys) {
				m.keys[len(*props)] = known
			}
			if prevKnown != 0 {
				m.next[prevKnown] = known
			}
		}
		prevKnown = known
		if known != 0 {
			w, bit := known/64, uint64(1)<<(known%64)
			if knownSeen[w]&bit != 0 {
				return false
			}
			knownSeen[w] |= bit
			if known <= knownInsertID {
				p.taken[known-1] = int32(len(*props) + 1)
			}
		} else {
			sig := uint64(1) << keySignature(k)
			if seen&sig != 0 {
				for i := range *props {
					if pr := &(*props)[i]; pr.Known == 0 && pr.Key == k {
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
			cleaned uint8
		)
		start := p.i
		switch c := p.b[p.i]; {
		case c == '"':
			kind = PropString
			str, ok = p.quickStr()
			escaped = p.slow
		case c == '{' || c == '[':
			kind = PropObject
			if c == '[' {
				kind = PropArray
			}
			// Checked with the Cleaner while it is read; a value it
			// does not hold clean is read again, only for its syntax.
			if m := p.memo; m != nil && m.checkedBy != nil {
				if ok = p.walk(1, m.checkedBy); ok {
					cleaned = memberCleaned
					break
				}
				p.i = start
			}
			ok = p.skip(1)
		case c == 't':
			kind, ok = PropBool, p.word("true")
		case c == 'f':
			kind, ok = PropBool, p.word("false")
		case c == 'n':
			kind, ok = PropNull, p.word("null")
		default:
			kind, ok = PropNumber, p.numberSpan()
			if ok {
				str = p.bytesString(p.b[start:p.i])
			}
		}
		if !ok {
			return false
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
		pr.Key, pr.Raw, pr.Str, pr.Out = k, p.b[start:p.i:p.i], str, nil
		pr.Kind, pr.Known, pr.Escaped, pr.PlainKey, pr.Drop = kind, known, escaped, plainKey, false
		pr.member = cleaned
		if plainKey && start == keyEnd+1 {
			pr.member |= memberWhole
		}
		if keyStart == prevEnd+1 {
			pr.member |= memberNext
		}
		prevEnd = p.i
		if p.i < len(p.b) && p.b[p.i] == ',' {
			p.i++
			p.ws()
			continue
		}
		p.ws()
		if p.lit(',') {
			p.ws()
			continue
		}
		return p.lit('}')
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
func (p *scanner) predictedKey(n int, prev uint8) (string, uint8, bool) {
	m := p.memo
	if m == nil {
		return "", 0, false
	}
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
		if string(p.b[i:j]) != knownNames[id-1] {
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
	return unsafe.String(&p.b[i], int(w.n)), id, true
}

// knownWord is a known name as predictedKey compares it: its length and,
// up to 16 bytes, its first eight bytes (masked to its length when
// shorter) and its last eight.
type knownWord struct {
	w0, w1, mask uint64
	n            uint8
}

var knownWords = func() (t [NumKnownProps]knownWord) {
	for i, k := range knownNames {
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

// DecodeJSONValue decodes one JSON value as encoding/json decodes it into
// an any with UseNumber.
func DecodeJSONValue(b []byte) (any, bool) {
	p := scanner{b: b, inProps: true}
	p.ws()
	v, ok := p.value(1)
	p.ws()
	return v, ok && p.i == len(b)
}

// Cleaner says whether a string may be stored as it is.
type Cleaner interface {
	Clean(s string) bool
}

// CleanJSON reports whether the JSON text b of an object or array prop can
// be stored as it is: every key and string in it is clean by c, none needs
// unescaping, and no object names a key twice (or has more keys than a
// cheap check covers). When it reports false the caller decodes the value
// (DecodeJSONValue) and rewrites it.
func CleanJSON(b []byte, c Cleaner) bool {
	p := scanner{b: b, view: true}
	p.ws()
	if !p.clean(c) {
		return false
	}
	p.ws()
	return p.i == len(b)
}

// maxCleanKeys is the most keys an object may have for CleanJSON to look
// for repeats by comparing each with the ones before it.
const maxCleanKeys = 16

// skip reads any JSON value that value accepts, without building it.
func (p *scanner) skip(depth int) bool { return p.walk(depth, nil) }

// clean reads a JSON value as skip does and reports whether CleanJSON's
// promise holds for it.
func (p *scanner) clean(c Cleaner) bool { return p.walk(1, c) }

// walk reads a JSON value without building it. With a Cleaner it also
// requires every key and string to be clean and plain, and the keys of
// each object to be distinct and at most maxCleanKeys.
func (p *scanner) walk(depth int, c Cleaner) bool {
	if p.i >= len(p.b) {
		return false
	}
	switch b := p.b[p.i]; b {
	case '"':
		s, ok := p.quickStr()
		return ok && (c == nil || (!p.slow && c.Clean(s)))
	case '{', '[':
		if depth >= maxDepth {
			return false
		}
		p.i++
		p.ws()
		end := byte('}')
		if b == '[' {
			end = ']'
		}
		if p.lit(end) {
			return true
		}
		var keys [maxCleanKeys]string
		n := 0
		for {
			if b == '{' {
				k, ok := p.quickStr()
				if !ok {
					return false
				}
				if c != nil {
					if p.slow || !c.Clean(k) || n == len(keys) {
						return false
					}
					for _, seen := range keys[:n] {
						if seen == k {
							return false
						}
					}
					keys[n] = k
					n++
				}
				p.ws()
				if !p.lit(':') {
					return false
				}
				p.ws()
			}
			if !p.walk(depth+1, c) {
				return false
			}
			p.ws()
			if p.lit(',') {
				p.ws()
				continue
			}
			return p.lit(end)
		}
	case 't':
		return p.word("true")
	case 'f':
		return p.word("false")
	case 'n':
		return p.word("null")
	}
	return p.numberSpan()
}

// Materialize turns a raw event's kept props into ev.Properties, for code
// that works on the map. It does nothing to an event that has the map.
func (ev *Event) Materialize() error {
	if ev.Props == nil {
		return nil
	}
	m := make(map[string]any, len(ev.Props))
	for i := range ev.Props {
		pr := &ev.Props[i]
		if pr.Drop {
			continue
		}
		v, ok := pr.Value()
		if !ok {
			return &DecodeError{Reason: "malformed property value"}
		}
		m[pr.Key] = v
	}
	cloneRetained(m)
	ev.Properties = m
	ev.propsBuf, ev.Props, ev.value = ev.Props[:0], nil, nil
	return nil
}

// PropIndex returns the index of the kept prop named k, or -1.
func (ev *Event) PropIndex(k string) int {
	for i := range ev.Props {
		if pr := &ev.Props[i]; pr.Key == k && !pr.Drop {
			return i
		}
	}
	return -1
}

// SetOutValue makes v, a value as DecodeJSONValue returns them, the value
// written for prop i. It reports false when v cannot be encoded.
func (ev *Event) SetOutValue(i int, v any) bool {
	start := len(ev.scratch)
	var ok bool
	ev.scratch, ok = AppendJSON(ev.scratch, v, &ev.keys)
	if !ok {
		ev.scratch = ev.scratch[:start]
		return false
	}
	ev.Props[i].Out = ev.scratch[start:len(ev.scratch):len(ev.scratch)]
	return true
}

// AppendProperties appends ev's properties as a JSON object: the map as
// AppendJSON encodes it, or a raw event's kept props in their order. It
// reports false when the map holds something AppendJSON does not encode.
func (ev *Event) AppendProperties(dst []byte) ([]byte, bool) {
	if ev.Props == nil {
		return AppendJSON(dst, ev.Properties, &ev.keys)
	}
	return ev.appendProps(dst, true), true
}

// appendProps appends a raw event's kept props as a JSON object; with
// runs, a run of props that came as they are, one after the other in the
// message, is written in one copy of the message's text.
func (ev *Event) appendProps(dst []byte, runs bool) []byte {
	dst = append(dst, '{')
	n := 0
	for i := 0; i < len(ev.Props); i++ {
		pr := &ev.Props[i]
		if pr.Drop {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		start, end := -1, 0
		if runs {
			start, end = ev.verbatim(pr)
		}
		if start >= 0 {
			last := i
			for last+1 < len(ev.Props) && ev.Props[last+1].asCame() && ev.Props[last+1].member&memberNext != 0 {
				last++
			}
			if last > i {
				if _, e := ev.verbatim(&ev.Props[last]); e > end {
					n += last - i
					i, end = last, e
				}
			}
			dst = append(dst, ev.value[start:end]...)
			continue
		}
		dst = appendProp(dst, pr)
	}
	return append(dst, '}')
}

// appendProp appends pr's member, `"key":value`, as AppendProperties
// writes a prop that is not part of a run.
func appendProp(dst []byte, pr *Prop) []byte {
	if pr.PlainKey {
		dst = append(dst, '"')
		dst = append(dst, pr.Key...)
		dst = append(dst, '"')
	} else {
		dst = AppendJSONString(dst, pr.Key)
	}
	dst = append(dst, ':')
	switch {
	case pr.Out != nil:
		return append(dst, pr.Out...)
	case pr.Kind == PropString && pr.Escaped:
		return AppendJSONString(dst, pr.Str)
	}
	return append(dst, pr.Raw...)
}

// PropertiesSizeHint is about how many bytes AppendProperties writes for
// a raw event, which is written from its message (which holds every kept
// prop as it came) and from what the stages wrote; 0 for an event with
// the map. A string a stage rewrote may come out longer, so the hint is
// not a bound.
func (ev *Event) PropertiesSizeHint() int {
	if ev.Props == nil {
		return 0
	}
	return len(ev.value) + len(ev.scratch) + 256
}

// verbatim returns where pr's member, `"key":value`, is in the message
// DecodeRaw read, when it is to be written as it came (kept, its key plain,
// its value not rewritten) and the message holds it in one piece, without
// whitespace; start is -1 otherwise.
func (ev *Event) verbatim(pr *Prop) (start, end int) {
	if !pr.asCame() || len(pr.Key) == 0 || len(pr.Raw) == 0 || len(ev.value) == 0 {
		return -1, 0
	}
	// Offsets by address: Key and Raw point into the message when the
	// decoder took them from it, and anything else falls outside it.
	base := uintptr(unsafe.Pointer(unsafe.SliceData(ev.value)))
	k := uintptr(unsafe.Pointer(unsafe.StringData(pr.Key))) - base
	r := uintptr(unsafe.Pointer(unsafe.SliceData(pr.Raw))) - base
	n := uintptr(len(ev.value))
	if k == 0 || k >= n || r >= n || r != k+uintptr(len(pr.Key))+2 || uintptr(len(pr.Raw)) > n-r ||
		ev.value[k-1] != '"' || ev.value[r-2] != '"' || ev.value[r-1] != ':' {
		return -1, 0
	}
	return int(k) - 1, int(r) + len(pr.Raw)
}

// asCame reports whether pr is kept and is to be written as its member
// came in the message, which holds it in one piece.
func (pr *Prop) asCame() bool {
	return pr.member&memberWhole != 0 && !pr.Drop && pr.Out == nil && (!pr.Escaped || pr.Kind != PropString)
}

// Intern returns a copy of s that later calls with an equal string are
// likely to share: the envelope fields and promoted properties of the
// worker's events (project, event name, user agent, browser, library)
// repeat from one event to the next, and sharing them saves an allocation
// each. The table is a fixed array of recent strings indexed by hash, read
// without a lock; a collision only costs a copy. It holds no identifiers
// and no property values beyond those.
func Intern(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > maxInternLen {
		return strings.Clone(s)
	}
	slot := &interned[maphash.String(internSeed, s)%uint64(len(interned))]
	if v := slot.Load(); v != nil && *v == s {
		return *v
	}
	v := strings.Clone(s)
	slot.Store(&v)
	return v
}

const maxInternLen = 512

var (
	interned   [4096]atomic.Pointer[string]
	internSeed = maphash.MakeSeed()
)
