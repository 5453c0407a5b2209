package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// DecodeFast reads a raw-topic message value into ev exactly as Decode
// does, without reflection, and reuses ev.Properties (cleared) when it has
// one. encoding/json took about 27 µs and 137 allocations per
// mixpanel-browser event, most of the worker's per-event cost.
//
// The hand-written scanner covers the common case only: a well-formed
// track envelope with the exact field names the collector writes. Anything
// else (profile and group updates, unknown or repeated fields, nulls where
// a value is expected, malformed JSON, any semantic error) is handed to
// Decode, which decides, so the result and every error are Decode's by
// construction. FuzzDecodeFast holds the two equal.
//
// Reusing the map is safe only when nothing still refers to the previous
// event's properties: the worker's batch encodes them on Append.
func DecodeFast(value []byte, ev *Event) error {
	props := ev.Properties
	if props == nil {
		props = make(map[string]any, 32)
	} else {
		clear(props)
	}
	if decodeTrack(value, ev, props, nil, nil) {
		return nil
	}
	return Decode(value, ev)
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

// decodeTrack decodes a track envelope into ev and reports whether it
// could; when it could not, ev is left for Decode to overwrite. The
// properties go to props or, when raw is not nil, to *raw (DecodeRaw),
// which passes its memo of the previous message too.
func decodeTrack(value []byte, ev *Event, props map[string]any, raw *[]Prop, memo *rawMemo) bool {
	p := scanner{b: value, view: raw != nil, memo: memo}
	var (
		version, kind, received int64
		project, endpoint, ip   string
		ua                      string
		signals                 Signals
		name                    string
		objLen                  int // the event object's bytes
		seen                    uint
		// addr is the address already parsed, and interned says project,
		// ua and endpoint are already shared (both from the memo).
		addr     netip.Addr
		interned bool
	)
	// The collector writes every envelope with the same fields in the same
	// order (event.Envelope's), without whitespace: collectorHead reads
	// that layout up to the event with prefix compares instead of a
	// key-by-key scan. On any other layout it has only read fields, and
	// the general loop below starts over. A head that is the previous
	// message's, byte for byte, is not read again.
	var (
		h      envHead
		headOK bool
	)
	if memo != nil && len(memo.head) > 0 && bytes.HasPrefix(value, memo.head) {
		p.i, h, headOK = len(memo.head), memo.h, true
		addr, interned = memo.addr, true
	}
	p.ws()
	if !headOK && !p.lit('{') {
		return false
	}
	p.ws()
	start := p.i
	if !headOK {
		h, headOK = p.collectorHead()
		if headOK && memo != nil && raw != nil {
			if h.ip != "" {
				a, err := netip.ParseAddr(h.ip)
				if err != nil {
					return false
				}
				addr = a.Unmap()
			}
			h.project, h.ua, h.endpoint = Intern(h.project), Intern(h.ua), Intern(h.endpoint)
			memo.remember(value[:p.i], h, addr)
			interned = true
		}
	}
	if headOK {
		version, kind, received = EnvelopeVersion, int64(KindTrack), h.received
		project, endpoint, ip, ua, signals = h.project, h.endpoint, h.ip, h.ua, h.signals
		seen = h.seen | fEvent
		var ok bool
		objStart := p.i
		if name, ok = p.trackObject(props, raw); !ok {
			return false
		}
		objLen = p.i - objStart
		p.ws()
		if !p.lit('}') {
			// More fields after the event: the general loop reads them,
			// and gives up on any of the fields above named again.
			if !p.lit(',') {
				return false
			}
			p.ws()
			goto fields
		}
		goto end
	}
	p.i = start
	if p.lit('}') {
		goto end
	}
fields:
	{
		for {
			key, ok := p.rawKey()
			if !ok {
				return false
			}
			var bit uint
			switch string(key) {
			case "v":
				bit = fV
				version, ok = p.integer()
			case "kind":
				bit = fKind
				kind, ok = p.integer()
				ok = ok && kind >= 0 && kind <= 255
			case "project":
				bit = fProject
				project, ok = p.str()
			case "endpoint":
				bit = fEndpoint
				endpoint, ok = p.str()
				endpoint = internEndpoint(endpoint)
			case "received_at":
				bit = fReceivedAt
				received, ok = p.integer()
			case "ip":
				bit = fIP
				ip, ok = p.transient()
			case "ua":
				bit = fUA
				ua, ok = p.str()
			case "signals":
				bit = fSignals
				ok = p.signals(&signals)
			case "request_id":
				bit = fRequestID
				_, ok = p.transient()
			case "event":
				// Parsed in place: the collector writes it last, so a
				// second pass over it would only repeat the work.
				bit = fEvent
				objStart := p.i
				name, ok = p.trackObject(props, raw)
				objLen = p.i - objStart
			default:
				return false
			}
			if !ok || seen&bit != 0 {
				return false
			}
			seen |= bit
			p.ws()
			if p.lit(',') {
				p.ws()
				continue
			}
			if !p.lit('}') {
				return false
			}
			break
		}
	}
end:
	p.ws()
	if p.i != len(p.b) || version != EnvelopeVersion || Kind(kind) != KindTrack || project == "" || seen&fEvent == 0 || name == "" {
		return false
	}
	// Cleared in place and then filled: a composite literal would be
	// built in the frame (600 bytes, zeroed on every call) and copied.
	*ev = Event{}
	ev.Kind, ev.Project, ev.Endpoint = KindTrack, project, endpoint
	ev.ReceivedAt, ev.UserAgent, ev.Signals = time.UnixMilli(received).UTC(), ua, signals
	ev.EventBytes = objLen
	switch {
	case addr.IsValid():
		ev.IP = addr
	case ip != "":
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return false
		}
		ev.IP = a.Unmap()
	}

	if raw != nil {
		// The strings read point into the message; what outlives it is
		// shared instead of copied for every event.
		if !interned {
			ev.Project, ev.UserAgent, endpoint = Intern(project), Intern(ua), Intern(endpoint)
		}
		ev.memo = memo
		ev.Name, ev.Endpoint = ev.InternField(0, name), endpoint
		return finishRaw(ev, *raw, memo, &p.taken)
	}
	ev.Name = name
	ev.Properties = props

	// Property values that become columns or registry entries outlive
	// the event: they get their own copy, out of the arena.
	cloneRetained(props)
	if id, ok := props[PropDistinctID]; ok {
		switch x := id.(type) {
		case string:
			ev.DistinctID = strings.Clone(x)
		case json.Number:
			ev.DistinctID = x.String()
		case nil:
		default:
			return false // Decode's stringify marshals it
		}
	}
	if id, ok := props[PropInsertID].(string); ok {
		ev.InsertID = id
	}
	ms, err := millis(props[PropTime])
	if err != nil {
		return false
	}
	ev.Time = time.UnixMilli(ms).UTC()
	delete(props, PropDistinctID)
	delete(props, PropInsertID)
	delete(props, PropTime)
	return true
}

// envHead is what collectorHead read.
type envHead struct {
	received              int64
	project, endpoint, ip string
	ua                    string
	signals               Signals
	seen                  uint
}

// collectorHead reads the envelope's fields before the event, just after
// the opening brace, in the layout the collector writes (ingest's
// envelopeWriter): v 1 and kind 1 (a track event), project, endpoint,
// received_at, then ip and ua when there are, signals, request_id when
// there is one, and `,"event":`. Each value is read by the reader the
// general loop uses for it, so what it returns is what that loop would
// have found. It reports false on anything else: the caller starts over.
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
	h.endpoint = internEndpoint(h.endpoint)
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

// trackObject reads {"event": name, "properties": {...}} into props and
// returns the name.
func (p *scanner) trackObject(props map[string]any, raw *[]Prop) (string, bool) {
	if !p.lit('{') {
		return "", false
	}
	p.ws()
	var name string
	var gotName, gotProps bool
	if p.lit('}') {
		return "", true
	}
	for {
		key, ok := p.rawKey()
		if !ok {
			return "", false
		}
		switch string(key) {
		case "event":
			if gotName {
				return "", false
			}
			gotName = true
			name, ok = p.str()
		case "properties":
			if gotProps {
				return "", false
			}
			gotProps = true
			p.inProps = true
			if raw != nil {
				ok = p.lit('{') && p.rawObject(raw)
			} else {
				ok = p.lit('{') && p.object(props, 1)
			}
			p.inProps = false
		default:
			return "", false
		}
		if !ok {
			return "", false
		}
		p.ws()
		if p.lit(',') {
			p.ws()
			continue
		}
		return name, p.lit('}')
	}
}

// retainedProps are the properties whose string values the worker keeps
// beyond the event: $insert_id and what the enrichment stage promotes to
// columns (enrich.Promote).
var retainedProps = []string{
	PropInsertID, "$browser", "$browser_version", "$os", "$device", "mp_lib", "$lib_version",
	"$city", "$region", "mp_country_code",
}

// cloneRetained gives the string values of retainedProps in props their
// own copy, out of the arena or the message they point into.
func cloneRetained(props map[string]any) {
	for _, k := range retainedProps {
		if v, ok := props[k].(string); ok && v != "" {
			props[k] = strings.Clone(v)
		}
	}
}

// maxDepth bounds nesting; deeper values go to Decode (encoding/json
// allows 10000).
const maxDepth = 512

// scanner reads JSON from b at i. Every method reports false on anything
// it does not handle, and the caller gives up.
type scanner struct {
	b []byte
	i int
	// arena holds the bytes of the property strings read, one allocation
	// per message instead of one per string; the strings point into it
	// (see bytesString). Bytes are only ever appended to it, never
	// rewritten. Only property keys and values use it (inProps): the
	// envelope's fields and the event name go to caches and batch columns
	// that outlive the event, and a string there would keep the whole
	// arena, raw values included, alive with it.
	arena   []byte
	inProps bool
	// view makes every string read point into b instead of being copied
	// (DecodeRaw); slow is set when the last string read needed
	// unescaping or repair, so it is not b's bytes.
	view bool
	slow bool
	// taken holds, for distinct_id, time and $insert_id (known ids 1 to
	// 3), 1 + the index of their prop, as rawObject reads them (0: none),
	// so that finishRaw goes to them.
	taken [knownInsertID]int32
	// memo is DecodeRaw's memo of the previous message, or nil.
	memo *rawMemo
}

// bytesString returns b as a string that shares the scanner's arena.
// Unescaped strings are never longer than their JSON text (strSlow, whose
// output may be, allocates its own), so one arena of the message's size
// holds them all; the arena is replaced, never grown in place, if not.
func (p *scanner) bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if p.view {
		return unsafe.String(&b[0], len(b))
	}
	if !p.inProps {
		return string(b)
	}
	if cap(p.arena)-len(p.arena) < len(b) {
		p.arena = make([]byte, 0, max(len(p.b)-p.i, len(b), 64))
	}
	n := len(p.arena)
	p.arena = append(p.arena, b...)
	return unsafe.String(&p.arena[n], len(b))
}

// ws skips whitespace. The collector writes none, so the common case, a
// byte that is not a space or a control character, is settled inline.
func (p *scanner) ws() {
	if p.i < len(p.b) && p.b[p.i] > ' ' {
		return
	}
	p.wsSlow()
}

func (p *scanner) wsSlow() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) lit(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *scanner) word(w string) bool {
	if len(p.b)-p.i >= len(w) && string(p.b[p.i:p.i+len(w)]) == w {
		p.i += len(w)
		return true
	}
	return false
}

// rawKey reads `"key" :` where key is plain ASCII without escapes, and
// returns its bytes (callers switch on string(key), which does not
// allocate).
func (p *scanner) rawKey() ([]byte, bool) {
	if !p.lit('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			k := p.b[start:p.i]
			p.i++
			p.ws()
			if !p.lit(':') {
				return nil, false
			}
			p.ws()
			return k, true
		}
		if c == '\\' || c < ' ' || c >= utf8.RuneSelf {
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// integer reads an integer the way encoding/json fills an int field.
func (p *scanner) integer() (int64, bool) {
	neg := p.lit('-')
	start := p.i
	var n int64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		n = n*10 + int64(p.b[p.i]-'0')
		p.i++
	}
	d := p.i - start
	if d == 0 || d > 18 || (d > 1 && p.b[start] == '0') {
		return 0, false
	}
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

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
		p.ws()
		if p.lit(',') {
			p.ws()
			continue
		}
		return p.lit('}')
	}
}

// internEndpoint shares the string of the collector's endpoint paths.
func internEndpoint(s string) string {
	for _, e := range [...]string{"/track", "/import", "/engage", "/groups"} {
		if s == e {
			return e
		}
	}
	return s
}

// transient reads a string that is used only during decoding (the client
// address, parsed at once, and the request id, unused): when it needs no
// unescaping it points into the message instead of being copied. An
// address with a zone ("%eth0") is copied, as netip keeps the zone.
func (p *scanner) transient() (string, bool) {
	if p.lit('"') {
		start := p.i
		for p.i < len(p.b) {
			c := p.b[p.i]
			if c == '"' {
				b := p.b[start:p.i]
				p.i++
				if len(b) == 0 {
					return "", true
				}
				return unsafe.String(&b[0], len(b)), true
			}
			if c == '\\' || c < ' ' || c >= utf8.RuneSelf || c == '%' {
				break
			}
			p.i++
		}
		p.i = start - 1
	}
	return p.str()
}

// str reads a JSON string and returns it unescaped as encoding/json does.
func (p *scanner) str() (string, bool) {
	p.slow = false
	if !p.lit('"') {
		return "", false
	}
	start := p.i
	for {
		p.i = skipPlain(p.b, p.i)
		if p.i >= len(p.b) {
			return "", false
		}
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.bytesString(p.b[start:p.i])
			p.i++
			return s, true
		case c == '\\':
			p.i = start
			return p.strSlow()
		case c < ' ':
			return "", false
		default:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				p.i = start
				return p.strSlow()
			}
			p.i += size
		}
	}
}

// quickStr is str for the common case in view mode, a string that needs
// no unescaping, inline; str reads any other.
func (p *scanner) quickStr() (string, bool) {
	if i := p.i + 1; p.view && p.lit('"') {
		j := skipPlain(p.b, i)
		if j < len(p.b) && p.b[j] == '"' && j > i {
			p.i, p.slow = j+1, false
			return unsafe.String(&p.b[i], j-i), true
		}
		p.i = i - 1
	}
	return p.str()
}

// skipPlain returns the index of the first byte from i on that a string
// cannot hold as it is: a quote, a backslash, a control character or the
// start of a multi-byte rune. It looks at eight bytes at a time, as most
// strings are plain ASCII.
func skipPlain(b []byte, i int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q, s := x^(lo*'"'), x^(lo*'\\')
		// A zero byte of q or s is a quote or a backslash; a byte below
		// 0x20 or with its top bit set stops too. Borrows only carry to
		// higher bytes, so the lowest flagged byte is exact.
		m := ((q - lo) &^ q) | ((s - lo) &^ s) | (x - lo*0x20) | x
		if m &= hi; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' || c == '\\' || c < ' ' || c >= utf8.RuneSelf {
			return i
		}
	}
	return i
}

// strSlow unescapes from p.i, just after the opening quote, following
// encoding/json's unquote: invalid UTF-8 and unpaired surrogates become
// U+FFFD.
func (p *scanner) strSlow() (string, bool) {
	p.slow = true
	out := make([]byte, 0, 64)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out), true
		case c < ' ':
			return "", false
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return "", false
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return "", false
				}
				if utf16.IsSurrogate(r) {
					save := p.i
					var r2 rune = -1
					if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
						p.i += 2
						var ok2 bool
						if r2, ok2 = p.hex4(); !ok2 {
							return "", false
						}
					}
					if dec := utf16.DecodeRune(r, r2); dec != unicode.ReplacementChar {
						out = utf8.AppendRune(out, dec)
						break
					}
					p.i = save
					r = unicode.ReplacementChar
				}
				out = utf8.AppendRune(out, r)
			default:
				return "", false
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			p.i++
		default:
			r, size := utf8.DecodeRune(p.b[p.i:])
			p.i += size
			out = utf8.AppendRune(out, r) // RuneError for an invalid byte
		}
	}
	return "", false
}

func (p *scanner) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	p.i += 4
	return r, true
}

// number reads a JSON number and returns its text, as json.Number.
func (p *scanner) number() (json.Number, bool) {
	start := p.i
	if !p.numberSpan() {
		return "", false
	}
	return json.Number(p.b[start:p.i]), true
}

// numberSpan reads a JSON number.
func (p *scanner) numberSpan() bool {
	p.lit('-')
	switch {
	case p.lit('0'):
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.digits()
	default:
		return false
	}
	if p.lit('.') {
		if p.digits() == 0 {
			return false
		}
	}
	if p.lit('e') || p.lit('E') {
		if !p.lit('+') {
			p.lit('-')
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *scanner) digits() int {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

// value reads any JSON value as encoding/json decodes it into an any with
// UseNumber.
func (p *scanner) value(depth int) (any, bool) {
	if p.i >= len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		return p.str()
	case c == '{':
		if depth >= maxDepth {
			return nil, false
		}
		p.i++
		m := map[string]any{}
		return m, p.object(m, depth+1)
	case c == '[':
		if depth >= maxDepth {
			return nil, false
		}
		p.i++
		return p.array(depth + 1)
	case c == 't':
		return true, p.word("true")
	case c == 'f':
		return false, p.word("false")
	case c == 'n':
		return nil, p.word("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return nil, false
}

// key reads an object key, sharing the string of a known one (KnownProp).
// In view mode every key points into the message, so there is nothing to
// share.
func (p *scanner) key() (string, bool) {
	if p.view {
		return p.quickStr()
	}
	if p.i < len(p.b) && p.b[p.i] == '"' {
		for j := p.i + 1; j < len(p.b) && j-p.i <= maxKnownLen+1; j++ {
			c := p.b[j]
			if c == '"' {
				if id := knownID(p.b[p.i+1 : j]); id != 0 {
					p.i = j + 1
					return knownNames[id-1], true
				}
				break
			}
			if c == '\\' || c < ' ' || c >= utf8.RuneSelf {
				break
			}
		}
	}
	return p.str()
}

// object reads members into m, after the opening brace; a repeated key
// takes its last value, as in encoding/json.
func (p *scanner) object(m map[string]any, depth int) bool {
	p.ws()
	if p.lit('}') {
		return true
	}
	for {
		k, ok := p.key()
		if !ok {
			return false
		}
		p.ws()
		if !p.lit(':') {
			return false
		}
		p.ws()
		v, ok := p.value(depth)
		if !ok {
			return false
		}
		m[k] = v
		p.ws()
		if p.lit(',') {
			p.ws()
			continue
		}
		return p.lit('}')
	}
}

func (p *scanner) array(depth int) ([]any, bool) {
	out := make([]any, 0)
	p.ws()
	if p.lit(']') {
		return out, true
	}
	for {
		v, ok := p.value(depth)
		if !ok {
			return nil, false
		}
		out = append(out, v)
		p.ws()
		if p.lit(',') {
			p.ws()
			continue
		}
		return out, p.lit(']')
	}
}
