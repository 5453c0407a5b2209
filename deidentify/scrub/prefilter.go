package scrub

import (
	"math/bits"
	"strings"
)

// mayContain is the fast path: one pass over the bytes that answers "could
// any detector fire here?". It must be a superset of the detectors — a
// string it rejects is returned untouched — and FuzzScrubString checks
// exactly that. Its triggers, one per detector family:
//
//   - '@' or "%40": e-mail;
//   - "://": URL;
//   - in a run of digits and " -.()+": 9 digits (SSN and SIN have 9, NANP
//     and trunk-0 phones 10, cards 13), or 8 when the run holds a '+'
//     (E.164);
//   - three dots each after a digit: IPv4 ("1.2.3.4" has only 4 digits);
//   - in a run of hex digits, colons and dots: "::" or seven colons, as
//     every IPv6 address has one or the other;
//   - at a word start, two capitals then a digit (or a space and a digit):
//     IBAN and UK NINO; a token prefix (keyPrefixes, "eyJ", "Bearer").
//
// Prices, ISO dates (8 digits), times (two colons), versions, short
// integers, words and sentences trigger none of these, so most property
// values stop here without allocating.
func (sc *Scrubber) mayContain(s string) bool {
	// The first byte is checked here, inline: most other strings fail at
	// it (a capital, a digit), and calling lowerWord for them cost a short
	// clean string 2.5 ns, a fifth of its check.
	if len(s) > 0 && s[0]-'a' <= 'z'-'a' && lowerWord(s) {
		// One word of lower-case letters: of the triggers, only
		// "bearer" can start it (every key prefix holds a capital or a
		// punctuation mark).
		return len(s) >= 6 && s[:6] == "bearer"
	}
	digits, dots, colons := 0, 0, 0
	plus := false // the current digit run holds a '+'
	prevAlnum := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		cl := class[c]
		if cl&cDigit != 0 {
			digits++
			if digits >= 9 || (plus && digits >= 8) {
				return true
			}
			prevAlnum = true
			continue
		}
		if cl&(cLower|cUpper) != 0 {
			if !prevAlnum && i+1 < len(s) && triggerPair[c]>>(s[i+1]&63)&1 != 0 && wordTrigger(s, i) {
				return true
			}
			digits, dots, plus = 0, 0, false
			// Run through the rest of the letters at once: text is mostly
			// letters, and inside a word only the colon count can change.
			if colons == 0 {
				for i+1 < len(s) && class[s[i+1]]&(cLower|cUpper) != 0 {
					i++
				}
			} else {
				hexOnly := cl&cHexLetter != 0
				for i+1 < len(s) && class[s[i+1]]&(cLower|cUpper) != 0 {
					hexOnly = hexOnly && class[s[i+1]]&cHexLetter != 0
					i++
				}
				if !hexOnly {
					colons = 0
				}
			}
			prevAlnum = true
			continue
		}
		prevAlnum = false
		if c == ' ' { // the common separator, ahead of the switch
			dots, colons = 0, 0
			continue
		}
		switch c {
		case '@':
			return true
		case '.':
			if i > 0 && isDigit(s[i-1]) {
				dots++
				if dots >= 3 {
					return true
				}
			}
		case ':':
			if i+1 < len(s) && s[i+1] == ':' {
				return true
			}
			if i+2 < len(s) && s[i+1] == '/' && s[i+2] == '/' {
				return true
			}
			colons++
			if colons >= 7 {
				return true
			}
			digits, dots, plus = 0, 0, false
		case '+':
			plus = true
			dots, colons = 0, 0
		case '-', '(', ')':
			dots, colons = 0, 0
		case '%':
			if i+2 < len(s) && s[i+1] == '4' && s[i+2] == '0' {
				return true
			}
			digits, dots, colons, plus = 0, 0, 0, false
		default:
			digits, dots, colons, plus = 0, 0, 0, false
		}
	}
	return false
}

// triggerPair marks the first two bytes a word trigger can start with:
// bit b&63 of triggerPair[a] is set for a word starting "ab". A capital
// followed by a capital (IBAN, NINO, "SG.", "AKIA", "BEARER"…), "ey"
// ("eyJ"), "Be" and "be" ("Bearer") and the first two bytes of the key
// prefixes are marked; every trigger is at least three bytes long, so a
// word of one letter starts none. Other words, most of them, skip
// wordTrigger; the bits fold the second byte, so a few others call it for
// nothing.
var triggerPair = func() (t [256]uint64) {
	mark := func(a, b byte) { t[a] |= 1 << (b & 63) }
	for a := byte('A'); a <= 'Z'; a++ {
		for b := byte('A'); b <= 'Z'; b++ {
			mark(a, b)
		}
	}
	mark('e', 'y')
	mark('B', 'e')
	mark('b', 'e')
	for _, kp := range keyPrefixes {
		mark(kp.p[0], kp.p[1])
	}
	return t
}()

// wordTrigger checks the triggers that need a word start at i (a letter).
func wordTrigger(s string, i int) bool {
	c := s[i]
	if isUpper(c) && i+2 < len(s) && isUpper(s[i+1]) &&
		(isDigit(s[i+2]) || (s[i+2] == ' ' && i+3 < len(s) && isDigit(s[i+3]))) {
		return true
	}
	switch c {
	case 'e':
		return strings.HasPrefix(s[i:], "eyJ")
	case 'B', 'b':
		return strings.HasPrefix(s[i:], "Bearer") || strings.HasPrefix(s[i:], "bearer") || strings.HasPrefix(s[i:], "BEARER")
	}
	for set := keyPrefixesByFirst[c]; set != 0; set &= set - 1 {
		if hasKeyPrefix(s, i, keyPrefixes[bits.TrailingZeros32(set)].p) {
			return true
		}
	}
	return false
}

// lowerWord reports whether s is a non-empty run of the letters a to z,
// eight bytes at a time: the keys and short values of nested objects,
// which are most of the strings checked.
func lowerWord(s string) bool {
	if len(s) == 0 {
		return false
	}
	const ones, hi = 0x0101010101010101, 0x8080808080808080
	for len(s) > 0 {
		var x uint64
		if len(s) >= 8 {
			x = uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
				uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
			s = s[8:]
		} else {
			// Pad with 'a', which passes.
			x = ones * 'a'
			for i := 0; i < len(s); i++ {
				x = x&^(0xff<<(8*i)) | uint64(s[i])<<(8*i)
			}
			s = s[len(s):]
		}
		// With no byte's top bit set, adding 0x80-'a' sets a byte's top
		// bit when it is 'a' or above, and adding 0x80-'{' when it is
		// above 'z'; neither addition carries into the next byte.
		if x&hi != 0 || (x+ones*(0x80-'a'))&^(x+ones*(0x80-'{'))&hi != hi {
			return false
		}
	}
	return true
}
