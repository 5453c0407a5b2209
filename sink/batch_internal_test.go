package sink

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/veilhq/veil/event"
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

// TestBatchReusesText: a batch refilled after Reset writes its properties
// into the chunks of the rows before, so a worker's batches stop
// allocating for them once grown, and every row keeps exactly its own
// properties, also when a string is longer than a chunk.
func TestBatchReusesText(t *testing.T) {
	raw := func(i int, pad string) (*event.Event, []byte) {
		body := fmt.Sprintf(`{"event":"e","properties":{"n":%d,"pad":%q,"distinct_id":"d","time":1700000000000,"$insert_id":"i%d"}}`, i, pad, i)
		msg, err := event.MarshalEnvelope(&event.Envelope{Version: 1, Kind: event.KindTrack, Project: "p", Endpoint: "/track", ReceivedAt: 1700000000000, Event: json.RawMessage(body)})
		if err != nil {
			t.Fatal(err)
		}
		var ev event.Event
		if err := event.NewDecoder().Decode(msg, &ev); err != nil {
			t.Fatal(err)
		}
		return &ev, msg
	}
	fill := func(b *Batch, round int) []string {
		var want []string
		for i := range 300 {
			pad := strings.Repeat(string(rune('a'+round)), 500)
			if i == 150 {
				pad = strings.Repeat("L", textChunk+10) // a chunk of its own
			}
			ev, msg := raw(i, pad)
			if i == 200 {
				// A value a stage rewrote, which comes out longer than
				// the message it came in.
				pad = strings.Repeat(`"`, 3000)
				ev.Properties.SetString(ev.Properties.Index("pad"), pad)
				// With the hint's room left in the chunk, the append
				// outgrows it.
				if free := cap(b.text) - len(b.text) - ev.Properties.SizeHint(); free > 0 {
					b.text = b.text[:len(b.text)+free]
				}
			}
			if err := b.Append(ev); err != nil {
				t.Fatal(err)
			}
			// The worker lets the message go: the batch holds copies.
			for j := range msg {
				msg[j] = 'X'
			}
			want = append(want, fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
		}
		return want
	}
	b := NewBatch()
	fill(b, 0)
	chunks := len(b.chunks)
	if chunks < 2 {
		t.Fatalf("%d chunks for 150 KB of properties", chunks)
	}
	b.Reset()
	want := fill(b, 1)
	if len(b.chunks) != chunks {
		t.Fatalf("the refilled batch has %d chunks, had %d", len(b.chunks), chunks)
	}
	for i, id := range b.events.insertID {
		if id != fmt.Sprintf("i%d", i) {
			t.Fatalf("row %d $insert_id %q", i, id)
		}
	}
	if !slices.Equal(b.events.properties, want) {
		for i := range want {
			if b.events.properties[i] != want[i] {
				t.Fatalf("row %d properties %.80q…, want %.80q…", i, b.events.properties[i], want[i])
			}
		}
		t.Fatalf("%d rows, want %d", len(b.events.properties), len(want))
	}
}
