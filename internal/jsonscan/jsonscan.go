// Package jsonscan is the core both of Veil's JSON scanners stand on: the
// collector's checking scanner (event/rules) and the worker's decoder
// (event). It finds where a string's plain run, a number or whitespace
// ends, exactly as RFC 8259 has them, and nothing else: what each scanner
// builds or checks on top stays with it.
package jsonscan

import (
	"encoding/binary"
	"math/bits"
)

// Stop says which bytes besides a quote and a backslash end a run.
type Stop uint8

// The bytes a run may stop at.
const (
	// Controls: a control character (below 0x20), which a JSON string
	// may not hold as it is.
	Controls Stop = 1 << iota
	// NonASCII: a byte from 0x80 up, the start of a multi-byte rune,
	// for a reader that checks UTF-8 itself.
	NonASCII
)

// SWAR constants: a byte of ones, and the top bit of each byte.
const lo, hi = 0x0101010101010101, 0x8080808080808080

// StringRun returns the index of the first byte from i on that ends a
// plain run of a JSON string's text: a quote, a backslash, or a byte stop
// names. Strings make up most of an event, so it looks at eight bytes at
// a time; borrows in the subtractions only carry upward, so the lowest
// byte flagged is exact.
func StringRun(b []byte, i int, stop Stop) int {
	ctl, high := stop&Controls != 0, stop&NonASCII != 0
	// The stops as masks, so that the loop has no branch on them.
	var ctlMask, highMask uint64
	if ctl {
		ctlMask = ^uint64(0)
	}
	if high {
		highMask = ^uint64(0)
	}
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q, s := x^(lo*'"'), x^(lo*'\\')
		m := ((q - lo) &^ q) | ((s - lo) &^ s) | ((x-lo*0x20)&^x)&ctlMask | x&highMask
		if m &= hi; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' || c == '\\' || (ctl && c < 0x20) || (high && c >= 0x80) {
			break
		}
	}
	return i
}

// Number returns where the JSON number starting at b[i] ends:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, and false when there is
// none.
func Number(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// SkipWS returns the index of the first byte from i on that is not JSON
// whitespace.
func SkipWS(b []byte, i int) int {
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
