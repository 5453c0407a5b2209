package ingest

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
)

// A small JSON scanner for the hot path. It validates a value exactly as
// encoding/json does (RFC 8259, nesting at most 10000 deep) and, in the same
// pass, enforces the limits on property values, so that an event can be
// checked and copied through without being decoded into maps and encoded
// again. FuzzScanValue holds it to json.Valid.

// shapeLimits bound a property value.
type shapeLimits struct {
	maxDepth int // objects and lists nested in a property, the property's own one included
	maxKeys  int // keys of an object must be fewer
	maxItems int // items of a list must be fewer
}

// anyShape bounds nothing but the nesting encoding/json itself refuses.
var anyShape = shapeLimits{maxDepth: 10000, maxKeys: math.MaxInt, maxItems: math.MaxInt}

// scanError is a syntax error (shape nil) or a limit exceeded.
type scanError struct {
	shape *shapeError
}

var errSyntax = &scanError{}

// skipWS skips JSON whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanValue checks the JSON value starting at b[i] (no leading whitespace)
// and returns where it ends. depth is the nesting of the value itself: 1
// for a property's value.
func scanValue(b []byte, i, depth int, lim *shapeLimits) (int, *scanError) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch c := b[i]; {
	case c == '{':
		if depth > lim.maxDepth {
			return 0, tooDeep(lim)
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		for n := 1; ; n++ {
			if n >= lim.maxKeys {
				return 0, &scanError{&shapeError{reasonTooManyProps, fmt.Sprintf("object has %d keys or more", lim.maxKeys)}}
			}
			end, err := scanString(b, i)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return 0, errSyntax
			}
			if i, err = scanValue(b, skipWS(b, i+1), depth+1, lim); err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == '}' {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i = skipWS(b, i+1)
		}
	case c == '[':
		if depth > lim.maxDepth {
			return 0, tooDeep(lim)
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, nil
		}
		for n := 1; ; n++ {
			if n >= lim.maxItems {
				return 0, &scanError{&shapeError{reasonArrayTooLong, fmt.Sprintf("list has %d items or more", lim.maxItems)}}
			}
			var err *scanError
			if i, err = scanValue(b, i, depth+1, lim); err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == ']' {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i = skipWS(b, i+1)
		}
	case c == '"':
		return scanString(b, i)
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	}
	return 0, errSyntax
}

func tooDeep(lim *shapeLimits) *scanError {
	if lim.maxDepth >= anyShape.maxDepth {
		return errSyntax // encoding/json's own limit: not JSON it would read
	}
	return &scanError{&shapeError{reasonTooDeep, fmt.Sprintf("nested more than %d levels deep", lim.maxDepth)}}
}

func scanLiteral(b []byte, i int, lit string) (int, *scanError) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errSyntax
	}
	return i + len(lit), nil
}

// SWAR constants: a byte of ones, and the top bit of each byte.
const swarLo, swarHi = 0x0101010101010101, 0x8080808080808080

// stringRun returns the index of the first byte from i on that a JSON
// string cannot hold as it is: a quote, a backslash or, with ctl, a
// control character. Bytes from 0x80 up are UTF-8, which a string holds
// as it is. Strings make up most of a request, so it looks at eight bytes
// at a time; borrows in the subtractions only carry upward, so the lowest
// byte flagged is exact.
func stringRun(b []byte, i int, ctl bool) int {
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q, s := x^(swarLo*'"'), x^(swarLo*'\\')
		m := ((q - swarLo) &^ q) | ((s - swarLo) &^ s)
		if ctl {
			m |= (x - swarLo*0x20) &^ x
		}
		if m &= swarHi; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' || c == '\\' || (ctl && c < 0x20) {
			break
		}
	}
	return i
}

// scanString checks the string starting at b[i] == '"'.
func scanString(b []byte, i int) (int, *scanError) {
	if i >= len(b) || b[i] != '"' {
		return 0, errSyntax
	}
	for i++; i < len(b); i++ {
		if i = stringRun(b, i, true); i >= len(b) {
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

// scanNumber checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, *scanError) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	default:
		return 0, errSyntax
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return 0, errSyntax
		}
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return 0, errSyntax
		}
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	}
	return i, nil
}
