package event

import (
	"encoding/json"
	"slices"
	"unicode/utf8"

	"github.com/veilhq/veil/internal/view"
)

// AppendJSON appends v encoded exactly as encoding/json encodes it with
// HTML escaping off (keys sorted byte-wise, invalid UTF-8 as U+FFFD, U+2028
// and U+2029 escaped), without reflection and without an allocation per
// value. keys is scratch space for sorting map keys; nested maps use the
// space after their parent's keys. It reports false for anything outside
// what event decoding produces (a float64, a struct, an invalid
// json.Number): the caller then falls back to encoding/json, which decides.
// The sink's TestAppendPropsJSONMatchesMarshal and FuzzAppendPropsJSON hold
// the two equal.
func AppendJSON(dst []byte, v any, keys *[]string) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), true
	case string:
		return AppendJSONString(dst, x), true
	case bool:
		if x {
			return append(dst, "true"...), true
		}
		return append(dst, "false"...), true
	case json.Number:
		if x == "" {
			return append(dst, '0'), true
		}
		if !validNumber(string(x)) {
			return dst, false
		}
		return append(dst, x...), true
	case map[string]any:
		if x == nil {
			return append(dst, "null"...), true
		}
		start := len(*keys)
		for k := range x {
			*keys = append(*keys, k)
		}
		mine := (*keys)[start:]
		slices.Sort(mine)
		dst = append(dst, '{')
		for i := range len(mine) {
			k := (*keys)[start+i] // *keys may have grown under a nested map
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendJSONString(dst, k)
			dst = append(dst, ':')
			var ok bool
			if dst, ok = AppendJSON(dst, x[k], keys); !ok {
				*keys = (*keys)[:start]
				return dst, false
			}
		}
		*keys = (*keys)[:start]
		return append(dst, '}'), true
	case []any:
		if x == nil {
			return append(dst, "null"...), true
		}
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, ok = AppendJSON(dst, e, keys); !ok {
				return dst, false
			}
		}
		return append(dst, ']'), true
	}
	return dst, false
}

const hexDigits = "0123456789abcdef"

// AppendJSONString is encoding/json's string encoding without HTML
// escaping.
func AppendJSONString(dst []byte, s string) []byte { return appendJSONString(dst, s, false) }

// AppendJSONStringHTML is encoding/json's default string encoding, which
// escapes <, > and & too: what json.Marshal writes.
func AppendJSONStringHTML(dst []byte, s string) []byte { return appendJSONString(dst, s, true) }

func appendJSONString(dst []byte, s string, html bool) []byte {
	dst = append(dst, '"')
	start := 0
	// Without HTML escaping, the bytes written as they are are the ones
	// the decoder's plain-string scan passes, eight at a time.
	plain := view.Bytes(s)
	for i := 0; i < len(s); {
		if !html {
			if i = skipPlain(plain, i); i == len(s) {
				break
			}
		}
		if b := s[i]; b < utf8.RuneSelf {
			if b >= ' ' && b != '"' && b != '\\' && (!html || (b != '<' && b != '>' && b != '&')) {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// validNumber reports whether s is a JSON number, as encoding/json checks
// a json.Number before writing it.
func validNumber(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
		if s == "" {
			return false
		}
	}
	switch {
	case s[0] == '0':
		s = s[1:]
	case '1' <= s[0] && s[0] <= '9':
		s = s[1:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	default:
		return false
	}
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		s = s[2:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
			if s == "" {
				return false
			}
		}
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	return s == ""
}
