package event

import (
	"bytes"
	"encoding/json"
	"github.com/veilhq/veil/internal/jsonscan"
	"github.com/veilhq/veil/internal/view"
	"hash/maphash"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting; deeper values go to Decode (encoding/json
// allows 10000).
const maxDepth = 512

// scanner reads JSON from b at i. Every method reports false on anything
// it does not handle, and the caller gives up.
type scanner struct {
	b []byte
	i int
	// arena holds the bytes of the strings DecodeJSONValue reads, one
	// allocation per value instead of one per string; the strings point
	// into it (see bytesString). Bytes are only ever appended to it, never
	// rewritten.
	arena []byte
	// view makes every string read point into b instead of being copied
	// (the Decoder); slow is set when the last string read needed
	// unescaping or repair, so it is not b's bytes.
	view bool
	slow bool
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
		return view.String(b)
	}
	if cap(p.arena)-len(p.arena) < len(b) {
		p.arena = make([]byte, 0, max(len(p.b)-p.i, len(b), 64))
	}
	n := len(p.arena)
	p.arena = append(p.arena, b...)
	return view.String(p.arena[n:])
}

// ws skips whitespace. The collector writes none, so the common case, a
// byte that is not a space or a control character, is settled inline.
func (p *scanner) ws() {
	if p.i < len(p.b) && p.b[p.i] > ' ' {
		return
	}
	p.wsSlow()
}

func (p *scanner) wsSlow() { p.i = jsonscan.SkipWS(p.b, p.i) }

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
	k, ok := p.plain()
	if !ok {
		return nil, false
	}
	p.ws()
	if !p.lit(':') {
		return nil, false
	}
	p.ws()
	return k, true
}

// plain reads a string that needs no unescaping and is plain ASCII, and
// returns its bytes; it leaves p as it was and reports false for any
// other.
func (p *scanner) plain() ([]byte, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	j := skipPlain(p.b, p.i+1)
	if j >= len(p.b) || p.b[j] != '"' {
		return nil, false
	}
	k := p.b[p.i+1 : j]
	p.i = j + 1
	return k, true
}

// more reads what follows a member of an object or an item of an array
// whose closing byte is end: a comma (more, and the next one follows) or
// end (ok).
func (p *scanner) more(end byte) (more, ok bool) {
	p.ws()
	if p.lit(',') {
		p.ws()
		return true, true
	}
	return false, p.lit(end)
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

// transient reads a string that is used only during decoding (the client
// address, parsed at once, and the request id, unused): when it needs no
// unescaping it points into the message instead of being copied. An
// address with a zone ("%eth0") is copied, as netip keeps the zone.
func (p *scanner) transient() (string, bool) {
	start := p.i
	if b, ok := p.plain(); ok && bytes.IndexByte(b, '%') < 0 {
		return view.String(b), true
	}
	p.i = start
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
			return view.String(p.b[i:j]), true
		}
		p.i = i - 1
	}
	return p.str()
}

// skipPlain returns the index of the first byte from i on that a string
// cannot hold as it is: a quote, a backslash, a control character or the
// start of a multi-byte rune (which str checks).
func skipPlain(b []byte, i int) int {
	return jsonscan.StringRun(b, i, jsonscan.Controls|jsonscan.NonASCII)
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
	var ok bool
	p.i, ok = jsonscan.Number(p.b, p.i)
	return ok
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
					return knownProps[id-1].Name, true
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
		if more, ok := p.more('}'); !more {
			return ok
		}
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
		if more, ok := p.more(']'); !more {
			return out, ok
		}
	}
}

// DecodeJSONValue decodes one JSON value as encoding/json decodes it into
// an any with UseNumber.
func DecodeJSONValue(b []byte) (any, bool) {
	p := scanner{b: b}
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
			if more, ok := p.more(end); !more {
				return ok
			}
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
