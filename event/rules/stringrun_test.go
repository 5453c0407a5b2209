package rules

import (
	"math/rand/v2"
	"testing"
)

// TestStringRun holds the eight-bytes-at-a-time scan to a byte loop, at
// every start and for every byte value in every lane of a word.
func TestStringRun(t *testing.T) {
	ref := func(b []byte, i int, ctl bool) int {
		for ; i < len(b); i++ {
			if c := b[i]; c == '"' || c == '\\' || (ctl && c < 0x20) {
				break
			}
		}
		return i
	}
	check := func(b []byte) {
		t.Helper()
		for i := 0; i <= len(b)+2; i++ {
			for _, ctl := range []bool{false, true} {
				if got, want := StringRun(b, i, ctl), ref(b, i, ctl); got != want {
					t.Fatalf("StringRun(%q, %d, %v) = %d, want %d", b, i, ctl, got, want)
				}
			}
		}
	}
	for c := 0; c < 256; c++ {
		for lane := 0; lane < 19; lane++ {
			b := []byte("abcdefgh\xc3\xa9ijklmn opqrs")
			b[lane] = byte(c)
			check(b)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
			if r.IntN(4) > 0 {
				b[i] = 'a' + byte(r.IntN(26))
			}
		}
		check(b)
	}
}
