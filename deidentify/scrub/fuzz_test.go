package scrub

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

// canaries must never survive scrubbing when they stand as words in text.
var canaries = []string{
	"alice@example.com",
	"4111 1111 1111 1111",
	"4111111111111111",
	"+14155552671",
	"123-45-6789",
	"GB82WEST12345698765432",
	"203.0.113.7",
	"2001:db8::7",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123",
}

// fuzzSeeds are texts that exercise the detectors' edges.
var fuzzSeeds = []string{
	"", "plain text", "19.99", "2024-05-01T12:30:00Z", "1.2.3", "1700000000000", "12:30:00",
	"123e4567-e89b-12d3-a456-426614174000", "18c5b1f2e3d4a5-0b1c2d3e4f5a6b-26021051-1fa400-18c5b1f2e3d4a5",
	"https://user:pw@example.com/u/alice%40example.com?utm_source=a%40b.co&x=1#f",
	"https://example.com/r/https%3A%2F%2Fb.example%2F%3Fq%3D1", "(https://example.com/a?b=c).",
	"+44 (0)20 7946 0958", "(415) 555-2671", "415-555-2671", "020 7946 0958", "AB 12 34 56 C",
	"GB82 WEST 1234 5698 7654 32", "::ffff:203.0.113.7", "fe80::1%eth0", "Bearer abcdef0123456789xyz",
	"sk_live_51HxYzAbCdEf0123456789", "AKIAIOSFODNN7EXAMPLE", "a%40b%40example.com", "josé@exämple.de",
	"Chrome/120.0.0.0", "0.4111111111111111", "[email]#2", "\xff\xfe@\x80.com",
	"http://[2001:db8::7]:443/a%2Fb?utm_term=%E2%82%AC+1&&utm_source=#", "HTTP://u@203.0.113.7:80/x;y=1?utm_content=a+b",
	"https://x.example/%zz/alice@example.com%2?utm_source=%4", "4111111111111111.https://x.example/?q=s",
	"https://a.example/(x)?utm_medium=(a@b.co)).", "see <https://a.example/p?q=1>, [https://b.example/#x]",
	"ftp://user:pass@host/file", "https://a.example/r/https%3A%2F%2Fb.example%2Fu%2Falice%2540example.com%3Fq%3D1",
}

func FuzzScrubString(f *testing.F) {
	for i, c := range canaries {
		f.Add(c, "", uint8(i))
		f.Add("text before", "and after", uint8(i))
	}
	for i, s := range fuzzSeeds {
		f.Add(s, s, uint8(i))
	}
	sc := mustNew(f, Config{})
	f.Fuzz(func(t *testing.T, a, b string, k uint8) {
		checkScrub(t, sc, a)
		checkScrub(t, sc, "https://"+a) // the shape the cache of clean URLs takes
		c := canaries[int(k)%len(canaries)]
		in := a + " " + c + " " + b
		out := checkScrub(t, sc, in)
		for _, c := range canaries {
			// A canary standing as a word of its own must go; one glued to
			// fuzzed text may be part of a longer token ("04111…").
			if w := " " + c + " "; strings.Contains(in, w) && strings.Contains(out, w) {
				t.Fatalf("canary %q survived: String(%q) = %q", c, in, out)
			}
		}
		if len(a) <= 64 {
			addr, err := netip.ParseAddr(a)
			want := err == nil && addr.Is6() && addr.Zone() == "" && !addr.IsUnspecified()
			if got := isIPv6(a); got != want {
				t.Fatalf("isIPv6(%q) = %v, netip says %v", a, got, want)
			}
		}
	})
}

// checkScrub checks the properties every scrub must have and returns the
// output.
func checkScrub(t *testing.T, sc *Scrubber, in string) string {
	t.Helper()
	out, f := sc.String(in)
	if utf8.ValidString(in) && !utf8.ValidString(out) {
		t.Fatalf("String(%q) = %q: invalid UTF-8", in, out)
	}
	if (out != in) != (f != 0) {
		t.Fatalf("String(%q) = %q, %v: changed output and finding disagree", in, out, f)
	}
	if again, f2 := sc.String(out); again != out || f2 != 0 {
		t.Fatalf("not idempotent: String(%q) = %q, then %q (%v)", in, out, again, f2)
	}
	// The cache of clean URLs answers from the second sighting on: the
	// answer must be the scan's, and a URL that changes never enters it.
	for range 2 {
		if again, f2 := sc.String(in); again != out || f2 != f {
			t.Fatalf("String(%q) = %q, %v, then %q, %v", in, out, f, again, f2)
		}
	}
	if _, cached := sc.urls.lookup(in); cached && (out != in || !cacheable(in)) {
		t.Fatalf("%q is in the cache of clean URLs; String makes it %q", in, out)
	}
	if sc.mayContain(in) {
		if want, wf := sc.scrub(in); want != out || wf != f {
			t.Fatalf("String(%q) = %q, %v; the scan without the cache gives %q, %v", in, out, f, want, wf)
		}
	}
	if !sc.mayContain(in) {
		if _, _, changed := sc.scan(in, 0, false); changed {
			t.Fatalf("prefilter let %q through but the scanner changes it", in)
		}
	}
	return out
}

func FuzzScrubValue(f *testing.F) {
	f.Add([]byte(`{"$current_url":"https://example.com/?e=alice%40example.com","alice@example.com":1,"[email]":2}`))
	f.Add([]byte(`[{"a":"+14155552671"},["203.0.113.7", 4111111111111111, true, null]]`))
	f.Add([]byte(`{"b@example.com":"x","a@example.com":"y","[email]#2":"z"}`))
	f.Add([]byte(`"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123"`))
	for _, c := range canaries {
		j, _ := json.Marshal(map[string]any{c: c, "k": []any{c}})
		f.Add(j)
	}
	sc := mustNew(f, Config{})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		var v any
		if d.Decode(&v) != nil {
			return
		}
		keys := countKeys(v)
		out, _ := sc.Value(v)
		if n := countKeys(out); n != keys {
			t.Fatalf("Value lost keys: %d before, %d after", keys, n)
		}
		walkStrings(out, func(s string) {
			if again, f := sc.String(s); again != s || f != 0 {
				t.Fatalf("output string %q not fully scrubbed: %q", s, again)
			}
		})
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("output does not marshal: %v", err)
		}
	})
}

func countKeys(v any) int {
	n := 0
	switch t := v.(type) {
	case map[string]any:
		for _, e := range t {
			n += 1 + countKeys(e)
		}
	case []any:
		for _, e := range t {
			n += countKeys(e)
		}
	}
	return n
}

func walkStrings(v any, fn func(string)) {
	switch t := v.(type) {
	case string:
		fn(t)
	case map[string]any:
		for k, e := range t {
			fn(k)
			walkStrings(e, fn)
		}
	case []any:
		for _, e := range t {
			walkStrings(e, fn)
		}
	}
}
