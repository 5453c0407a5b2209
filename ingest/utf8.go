package ingest

import "unicode/utf8"

// repairUTF8 makes b valid UTF-8 before it is decoded as JSON.
//
// mixpanel-browser encodes its payload one UTF-16 code unit at a time, so a
// character outside the Basic Multilingual Plane (every emoji) arrives as
// CESU-8: its surrogate pair as two 3-byte sequences, ED A0..AF xx followed
// by ED B0..BF xx. Those six bytes become the character's 4-byte UTF-8 form.
// Any other invalid sequence, a lone surrogate included, becomes U+FFFD:
// bad bytes are never a reason to lose an event.
//
// Valid input, the common case, is returned as is without copying.
func repairUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			// Copy the whole ASCII run at once.
			j := i + 1
			for j < len(b) && b[j] < utf8.RuneSelf {
				j++
			}
			out = append(out, b[i:j]...)
			i = j
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			out = append(out, b[i:i+size]...)
			i += size
			continue
		}
		if c == 0xED && i+2 < len(b) && b[i+1] >= 0xA0 && b[i+1] <= 0xBF && isCont(b[i+2]) {
			// An encoded surrogate: a high one followed by a low one is a
			// CESU-8 pair; anything else is a lone surrogate.
			if b[i+1] <= 0xAF && i+5 < len(b) && b[i+3] == 0xED && b[i+4] >= 0xB0 && b[i+4] <= 0xBF && isCont(b[i+5]) {
				hi := rune(b[i+1]&0x0F)<<6 | rune(b[i+2]&0x3F)
				lo := rune(b[i+4]&0x0F)<<6 | rune(b[i+5]&0x3F)
				out = utf8.AppendRune(out, 0x10000+hi<<10+lo)
				i += 6
				continue
			}
			out = utf8.AppendRune(out, utf8.RuneError)
			i += 3
			continue
		}
		out = utf8.AppendRune(out, utf8.RuneError)
		i++
	}
	return out
}

func isCont(c byte) bool { return c&0xC0 == 0x80 }
