package rules

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"github.com/veilhq/veil/internal/jsonscan"
	"math"
	"strconv"
)

// A small JSON scanner for the collector's hot path and the worker's
// check of nested values. It validates a value exactly as encoding/json
// does (RFC 8259, nesting at most 10000 deep) and, in the same pass,
// enforces the rules on property values, so that an event can be checked
// and copied through without being decoded into maps and encoded again.
// FuzzScanValue holds it to json.Valid, and FuzzShapeAgree to CheckValue,
// which holds a decoded value to the same rules.

// Shape bounds a property value.
type Shape struct {
	MaxDepth int // objects and lists nested in a property, the property's own one included
	MaxKeys  int // keys of an object must be fewer
	MaxItems int // items of a list must be fewer
	// Strict also requires every number to be a finite float64 and every
	// key to be a valid name (ValidName).
	Strict bool
}

// AnyShape bounds nothing but the nesting encoding/json itself refuses.
var AnyShape = Shape{MaxDepth: 10000, MaxKeys: math.MaxInt, MaxItems: math.MaxInt}

// ScanError is a syntax error (Rule nil) or a rule broken by valid JSON.
type ScanError struct {
	Rule *Violation
}

var errSyntax = &ScanError{}

// SkipWS skips JSON whitespace.
func SkipWS(b []byte, i int) int { return jsonscan.SkipWS(b, i) }

// scanValue checks the JSON value starting at b[i] (no leading whitespace)
// and returns where it ends. depth is the nesting of the value itself: 1
// for a property's value.
func ScanValue(b []byte, i, depth int, lim *Shape) (int, *ScanError) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch c := b[i]; {
	case c == '{':
		if depth > lim.MaxDepth {
			return 0, tooDeep(lim)
		}
		i = SkipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		for n := 1; ; n++ {
			if n >= lim.MaxKeys {
				return 0, &ScanError{violation("", ReasonTooManyProps, "object has %d keys or more", lim.MaxKeys)}
			}
			end, err := ScanString(b, i)
			if err != nil {
				return 0, err
			}
			if lim.Strict && !QuotedNameValid(b[i:end]) {
				return 0, &ScanError{violation("", ReasonInvalidName, "a key holds a control character")}
			}
			i = SkipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return 0, errSyntax
			}
			if i, err = ScanValue(b, SkipWS(b, i+1), depth+1, lim); err != nil {
				return 0, err
			}
			i = SkipWS(b, i)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == '}' {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i = SkipWS(b, i+1)
		}
	case c == '[':
		if depth > lim.MaxDepth {
			return 0, tooDeep(lim)
		}
		i = SkipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, nil
		}
		for n := 1; ; n++ {
			if n >= lim.MaxItems {
				return 0, &ScanError{violation("", ReasonArrayTooLong, "list has %d items or more", lim.MaxItems)}
			}
			var err *ScanError
			if i, err = ScanValue(b, i, depth+1, lim); err != nil {
				return 0, err
			}
			i = SkipWS(b, i)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == ']' {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i = SkipWS(b, i+1)
		}
	case c == '"':
		return ScanString(b, i)
	case c == '-' || c >= '0' && c <= '9':
		end, err := scanNumber(b, i)
		if err == nil && lim.Strict && !FiniteNumber(b[i:end]) {
			return 0, &ScanError{violation("", ReasonInvalidNumber, "a number is too large for a float64")}
		}
		return end, err
	case c == 't':
		return ScanLiteral(b, i, "true")
	case c == 'f':
		return ScanLiteral(b, i, "false")
	case c == 'n':
		return ScanLiteral(b, i, "null")
	}
	return 0, errSyntax
}

func tooDeep(lim *Shape) *ScanError {
	if lim.MaxDepth >= AnyShape.MaxDepth {
		return errSyntax // encoding/json's own limit: not JSON it would read
	}
	return &ScanError{violation("", ReasonTooDeep, "nested more than %d levels deep", lim.MaxDepth)}
}

func ScanLiteral(b []byte, i int, lit string) (int, *ScanError) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errSyntax
	}
	return i + len(lit), nil
}

// SWAR constants: a byte of ones, and the top bit of each byte.
const swarLo, swarHi = 0x0101010101010101, 0x8080808080808080

// StringRun returns the index of the first byte from i on that a JSON
// string cannot hold as it is: a quote, a backslash or, with ctl, a
// control character. Bytes from 0x80 up are UTF-8, which a string holds
// as it is.
func StringRun(b []byte, i int, ctl bool) int {
	var stop jsonscan.Stop
	if ctl {
		stop = jsonscan.Controls
	}
	return jsonscan.StringRun(b, i, stop)
}

// scanString checks the string starting at b[i] == '"'.
func ScanString(b []byte, i int) (int, *ScanError) {
	if i >= len(b) || b[i] != '"' {
		return 0, errSyntax
	}
	for i++; i < len(b); i++ {
		if i = StringRun(b, i, true); i >= len(b) {
			break
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c < 0x20:
			return 0, errSyntax
		case c == '\\':
			i++
			if i >= len(b) {
				return 0, errSyntax
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-i < 5 || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
					return 0, errSyntax
				}
				i += 4
			default:
				return 0, errSyntax
			}
		}
	}
	return 0, errSyntax
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// scanNumber checks a JSON number.
func scanNumber(b []byte, i int) (int, *ScanError) {
	end, ok := jsonscan.Number(b, i)
	if !ok {
		return 0, errSyntax
	}
	return end, nil
}

// QuotedNameValid reports whether q, a checked JSON string with its
// quotes, is a valid name (ValidName) once unescaped.
func QuotedNameValid(q []byte) bool {
	text := q[1 : len(q)-1]
	if plainName(text) {
		return true
	}
	// A checked JSON string holds no raw control byte below 0x20, so
	// without a backslash its text is the name.
	if bytes.IndexByte(text, '\\') < 0 {
		return ValidName(text)
	}
	var s string
	if json.Unmarshal(q, &s) != nil {
		return false
	}
	return ValidName(s)
}

func parseFloat(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// plainName reports whether s holds no backslash, byte below 0x20, DEL or
// 0xC2 (the lead byte of U+0080–U+00BF): then, as the text of a checked
// JSON string, it is a valid name as it stands. One pass, eight bytes at a
// time, as ValidName's; most names are plain ASCII words.
func plainName(s []byte) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64(s[i:])
		d, c2, bs := x^(swarLo*0x7f), x^(swarLo*0xc2), x^(swarLo*'\\')
		if ((x-swarLo*0x20)&^x|(d-swarLo)&^d|(c2-swarLo)&^c2|(bs-swarLo)&^bs)&swarHi != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == 0xc2 || c == '\\' {
			return false
		}
	}
	return true
}
