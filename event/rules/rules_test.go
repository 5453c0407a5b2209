package rules

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
	"unicode"
)

func TestIsPlaceholderID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"00000000-0000-0000-0000-000000000000", true}, {"anon", true}, {"anonymous", true}, {"nil", true},
		{"none", true}, {"null", true}, {"n/a", true}, {"na", true}, {"undefined", true}, {"unknown", true},
		{"<nil>", true}, {"0", true}, {"-1", true}, {"true", true}, {"false", true}, {"[]", true}, {"{}", true},
		{"None", true}, {"NULL", true}, {"Undefined", true}, {"N/A", true}, {"TRUE", true},
		{"", false}, {"00", false}, {"1", false}, {"-2", false}, {"nulls", false}, {"null ", false}, {" null", false},
		{"undefined-1", false}, {"00000000-0000-0000-0000-000000000001", false}, {"user-149544", false},
		{"ñull", false}, {"[ ]", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if got := IsPlaceholderID(tt.id); got != tt.want {
				t.Fatalf("IsPlaceholderID(%q) = %v, want %v", tt.id, got, tt.want)
			}
			if got := IsPlaceholderID([]byte(tt.id)); got != tt.want {
				t.Fatalf("IsPlaceholderID([]byte(%q)) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"Sign Up", true}, {"", true}, {"Café ☕ 😀", true}, {"a\u00a0b", true}, {"a\u2028b", true},
		{"a\x00b", false}, {"a\tb", false}, {"\n", false}, {"\x1b[31m", false}, {"a\x7fb", false},
		{"a\u0080b", false}, {"a\u0085b", false}, {"a\u009fb", false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.name); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	// The word-at-a-time scan against the rune-by-rune definition, for
	// every byte value in every lane, and every pair across a word's end.
	ref := func(s []byte) bool {
		for _, r := range string(s) {
			if unicode.IsControl(r) {
				return false
			}
		}
		return true
	}
	for c := range 256 {
		for lane := range 18 {
			b := []byte("abcdefghijklmnopqrs")
			b[lane] = byte(c)
			for _, next := range []byte{'x', 0x80, 0x85, 0x9f, 0xa0} {
				b2 := append([]byte(nil), b...)
				b2[lane+1] = next
				if got, want := ValidName(b2), ref(b2); got != want {
					t.Fatalf("ValidName(%q) = %v, want %v", b2, got, want)
				}
			}
		}
	}
}

func TestFiniteNumber(t *testing.T) {
	tests := []struct {
		n    string
		want bool
	}{
		{"0", true}, {"-0", true}, {"1.5", true}, {"12345678901234567890123", true}, {"1e308", true},
		{"1.7976931348623157e308", true}, {"-1.7976931348623157E+308", true}, {"1e-400", true}, {"0e999999", true},
		{strings.Repeat("9", 300), true},
		{"1e999", false}, {"-1E400", false}, {"1.8e308", false}, {"1" + strings.Repeat("0", 400), false},
	}
	for _, tt := range tests {
		if got := FiniteNumber(tt.n); got != tt.want {
			t.Errorf("FiniteNumber(%.20s) = %v, want %v", tt.n, got, tt.want)
		}
	}
}

func TestTime(t *testing.T) {
	l := DefaultLimits()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC).UnixMilli()
	day := int64(86400000)
	tests := []struct {
		name, endpoint string
		ms             int64
		reason         string
	}{
		{"track now", EndpointTrack, now, ""},
		{"track 5 days ago", EndpointTrack, now - 5*day, ""},
		{"track 5 days and a millisecond ago", EndpointTrack, now - 5*day - 1, ReasonTooOld},
		{"track an hour ahead", EndpointTrack, now + 3600000, ""},
		{"track an hour and a millisecond ahead", EndpointTrack, now + 3600001, ReasonTooNew},
		{"track -1", EndpointTrack, -1, ReasonMalformed},
		{"import 1971", EndpointImport, ImportEpoch.UnixMilli(), ""},
		{"import 1970", EndpointImport, ImportEpoch.UnixMilli() - 1, ReasonTooOld},
		{"import -1", EndpointImport, -1, ReasonMalformed},
		{"import 2 hours ahead", EndpointImport, now + 2*3600000, ReasonTooNew},
		{"engage 1970", EndpointEngage, 5, ""},
		{"groups 2 hours ahead", EndpointGroups, now + 2*3600000, ReasonTooNew},
		{"beyond the year 5138", EndpointImport, MaxMillis + 1, ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := l.Time(tt.endpoint, "properties.time", tt.ms, now)
			got := ""
			if v != nil {
				got = v.Reason
			}
			if got != tt.reason {
				t.Fatalf("reason %q (%v), want %q", got, v, tt.reason)
			}
		})
	}
}

func TestInsertID(t *testing.T) {
	for id, want := range map[string]string{
		"abc-123": "", "5e2a0c7d1f3b4a6e9c8d7b6a00000000": "", "null": ReasonInvalidInsertID, "0": ReasonInvalidInsertID,
		"": ReasonInvalidInsertID, "has space": ReasonInvalidInsertID, strings.Repeat("a", 37): ReasonInvalidInsertID,
	} {
		got := ""
		if v := InsertID(id); v != nil {
			got = v.Reason
		}
		if got != want {
			t.Errorf("InsertID(%q): %q, want %q", id, got, want)
		}
	}
}

// FuzzScanValue holds the JSON scanner to encoding/json: with no limits it
// accepts exactly what json.Valid accepts.
func FuzzScanValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,"x\u00e9\n",true,false,null,{}]}`, `"\ud83d"`, `-0`, `01`, `1.`, `1e`, `[1,]`, `{"a" 1}`, "\"\x01\"", `"\x"`, `[[[[]]]]`, ` {} `, `{}x`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		i := SkipWS(b, 0)
		end, err := ScanValue(b, i, 1, &AnyShape)
		ok := err == nil && SkipWS(b, end) == len(b)
		if want := json.Valid(b); ok != want {
			t.Fatalf("ScanValue(%q) ok=%v, json.Valid=%v", b, ok, want)
		}
	})
}

// FuzzShapeAgree holds the two forms of the value rules to each other:
// ScanValue on a value's JSON text (the collector's, and the worker's on
// raw props) and CheckValue on the value decoded (the worker's map path,
// profile operands) refuse the same values.
func FuzzShapeAgree(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,2.5e-3,"x",true,null,{}]}`, `1e999`, `[1,-1E400]`, `{"a\u0000":1}`, "{\"a\x7f\":1}", `{"a\u0085":1}`,
		`{"a":{"b":{"c":1}}}`, `[[[1]]]`, `[1,2,3,4]`, `{"a":1,"b":2,"c":3,"d":4}`, `"\u0000"`, `{"k":"v\u0000"}`,
		`12345678901234567890123`, `1e-400`, "{\"\xc2\x85\":1}", "{\"\xc2\":1}",
	} {
		f.Add([]byte(s))
	}
	lim := Limits{MaxDepth: 2, MaxProperties: 4, MaxArrayLen: 4}
	shape := lim.Shape()
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) || duplicateKeys(b) {
			return
		}
		i := SkipWS(b, 0)
		_, serr := ScanValue(b, i, 1, &shape)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return // deeper than encoding/json goes
		}
		verr := lim.CheckValue(v, 1)
		if (serr == nil) != (verr == nil) {
			t.Fatalf("%q: ScanValue %v, CheckValue %v", b, serr, verr)
		}
		if serr != nil && serr.Rule == nil {
			t.Fatalf("%q: valid JSON, but ScanValue says it is not", b)
		}
	})
}

// duplicateKeys reports whether an object in the JSON text b names a key
// twice, which a decoded map holds once.
func duplicateKeys(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		keys   map[string]bool
		object bool
		key    bool // the next token of the object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF || err != nil {
			return false
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].key && tok != json.Delim('}') {
			k := tok.(string)
			if stack[n-1].keys[k] {
				return true
			}
			stack[n-1].keys[k], stack[n-1].key = true, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, object: true, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].key = true
		}
	}
}

// TestQuotedNameValidAgrees holds the one-pass check of a quoted name to
// ValidName of its unescaped text, for names of every length around the
// eight-byte words with each kind of byte in each place.
func TestQuotedNameValidAgrees(t *testing.T) {
	specials := []string{"\x00", "\x1f", "\x7f", "\u0080", "\u009f", "\u00a0", "\\", "\"", "é", "\u2028"}
	for n := 0; n <= 17; n++ {
		for pos := 0; pos < n; pos++ {
			for _, sp := range specials {
				name := strings.Repeat("a", pos) + sp + strings.Repeat("b", n-pos-1)
				q, err := json.Marshal(name)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := QuotedNameValid(q), ValidName(name); got != want {
					t.Errorf("QuotedNameValid(%s) = %v, ValidName = %v", q, got, want)
				}
			}
		}
	}
}
