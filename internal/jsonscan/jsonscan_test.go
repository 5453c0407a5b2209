package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestNumber holds Number to encoding/json: a text that is one number to
// the end is valid JSON exactly when Number reads all of it.
func TestNumber(t *testing.T) {
	for _, s := range []string{
		"0", "-0", "7", "-12", "10", "1.5", "-0.25", "1e3", "1E+3", "2e-7", "1.5e10",
		"01", "-", "", "1.", ".5", "1e", "1e+", "+1", "0x10", "1_0", "--1", "1.e3", "Infinity",
	} {
		end, ok := Number([]byte(s), 0)
		if got, want := ok && end == len(s), json.Valid([]byte(s)); got != want {
			t.Errorf("Number(%q) = %d, %v; encoding/json says valid: %v", s, end, ok, want)
		}
	}
}

// TestStringRun checks where a run stops for each kind of byte, at every
// position of an eight-byte word and in the tail after the last one.
func TestStringRun(t *testing.T) {
	for _, tc := range []struct {
		c    byte
		stop Stop
		want bool // the run stops at c
	}{
		{'"', 0, true}, {'\\', 0, true}, {'\n', 0, false}, {'\n', Controls, true}, {0x1f, Controls, true},
		{' ', Controls | NonASCII, false}, {0x80, Controls, false}, {0xc3, NonASCII, true}, {0xff, NonASCII, true},
		{'a', Controls | NonASCII, false}, {0x7f, Controls | NonASCII, false},
	} {
		for n := range 20 {
			b := []byte(strings.Repeat("x", n) + string(tc.c) + "yyyyyyyy")
			want := len(b)
			if tc.want {
				want = n
			}
			if got := StringRun(b, 0, tc.stop); got != want {
				t.Errorf("byte %#x after %d plain bytes, stop %b: run ends at %d, want %d", tc.c, n, tc.stop, got, want)
			}
		}
	}
}

func TestSkipWS(t *testing.T) {
	if got := SkipWS([]byte(" \t\r\n x"), 0); got != 5 {
		t.Fatalf("SkipWS = %d, want 5", got)
	}
	if got := SkipWS([]byte("  "), 1); got != 2 {
		t.Fatalf("SkipWS at the end = %d, want 2", got)
	}
}
