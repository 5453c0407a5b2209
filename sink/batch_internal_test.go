package sink

import (
	"encoding/json"
	"testing"
)

func TestDedupToken(t *testing.T) {
	b := NewBatch()
	if tok := b.dedupToken(); tok != "" {
		t.Fatalf("empty batch token %q", tok)
	}
	for _, c := range []struct {
		p   int
		off int64
	}{{3, 7}, {0, 100}, {3, 42}, {0, 199}, {0, 150}} {
		b.Cover("veil.events.raw", c.p, c.off)
	}
	if tok := b.dedupToken(); tok != "veil.events.raw:0:100-199,3:7-42" {
		t.Fatalf("token %q", tok)
	}
	b.Reset()
	if tok := b.dedupToken(); tok != "" {
		t.Fatalf("token after reset %q", tok)
	}
}

func TestNumberAdd(t *testing.T) {
	tests := []struct {
		a, b any
		want json.Number
	}{
		{json.Number("1"), json.Number("2"), "3"},
		{json.Number("9223372036854775807"), json.Number("1"), "9.223372036854776e+18"},
		{json.Number("0.1"), json.Number("0.2"), "0.30000000000000004"},
		{json.Number("1.5"), 2.0, "3.5"},
		{json.Number("-4"), json.Number("4"), "0"},
	}
	for _, tt := range tests {
		a, _ := toNumber(tt.a)
		b, _ := toNumber(tt.b)
		if got := a.add(b).json(); got != tt.want {
			t.Errorf("%v + %v = %s, want %s", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestFoldDeduplicates: the same operation read twice (a replay not yet
// merged away) counts once, in the result and in the version.
func TestFoldDeduplicates(t *testing.T) {
	op := storedOp{ms: 1000, insertID: "i1", op: opAdd, operand: `{"n":1}`, modifiers: `{"$ignore_time":true}`}
	op2 := storedOp{ms: 2000, insertID: "i2", op: opAdd, operand: `{"n":1}`, modifiers: `{"$ignore_time":true}`}
	f := fold([]storedOp{op, op2, op, op2}, true)
	if f.version != 2 || f.props["n"].value != json.Number("2") || len(f.props) != 1 {
		t.Fatalf("version %d, props %v", f.version, f.props)
	}
}
