package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/veilhq/veil/event"
)

func opsBatch(t *testing.T, users, perUser int) *Batch {
	t.Helper()
	b := NewBatch()
	ts := time.Date(2026, 11, 20, 10, 0, 0, 250e6, time.UTC)
	for i := 0; i < users*perUser; i++ {
		b.Cover("raw", 0, int64(i))
		u := fmt.Sprintf("u%d", i%users)
		if err := b.Append(&event.Event{Kind: event.KindTrack, Project: "p", Name: "e", DistinctID: u, InsertID: fmt.Sprint("e", i), Time: ts, ReceivedAt: ts}); err != nil {
			t.Fatal(err)
		}
		if err := b.Append(&event.Event{Kind: event.KindEngage, Project: "p", Name: "$add", DistinctID: u, InsertID: fmt.Sprint("o", i), Time: ts, ReceivedAt: ts,
			Value: map[string]any{"n": 1}, Properties: event.PropertiesOf(map[string]any{})}); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestShardParts: every row goes to its user's shard, in the batch's
// order, each once, and a second split (a retried flush) is the same.
func TestShardParts(t *testing.T) {
	b := opsBatch(t, 25, 4)
	parts := b.shardParts(3)
	rows := 0
	for s, p := range parts {
		rows += p.Len()
		for i, id := range p.events.distinctID {
			if ShardOf(id, 3) != s {
				t.Fatalf("user of shard %d in part %d", ShardOf(id, 3), s)
			}
			if i > 0 && p.events.insertID[i-1] >= p.events.insertID[i] && len(p.events.insertID[i-1]) == len(p.events.insertID[i]) {
				t.Fatalf("part %d out of the batch's order at %d", s, i)
			}
		}
		for e := range p.people.touched {
			if ShardOf(e.id, 3) != s {
				t.Fatalf("a touched profile in the wrong part")
			}
		}
		if p.dedupToken() != b.dedupToken() {
			t.Fatalf("part %d token %q, batch %q", s, p.dedupToken(), b.dedupToken())
		}
	}
	if rows != b.Len() {
		t.Fatalf("%d rows in the parts, %d in the batch", rows, b.Len())
	}
	if again := b.shardParts(3); &again[0] != &parts[0] {
		t.Fatal("a retried flush split the batch again")
	}
}

// TestRecentOps: operations written to a shard are added to what a replica
// reads back (unless it has them), for recentWindow and at most recentMax.
func TestRecentOps(t *testing.T) {
	b := opsBatch(t, 3, 2)
	var r recentOps
	start := time.Now()
	r.add(start, &b.people)
	u0 := entity{project: "p", id: "u0"}
	if n := len(r.byEntity[u0]); n != 2 {
		t.Fatalf("u0 has %d recent operations, want 2", n)
	}
	// A replica that has one of them gets the other added, once.
	s := &Sink{shards: []*shard{{recent: r}}}
	logs := map[string][]storedOp{"u0": {b.people.storedAt(0)}}
	s.addRecent(target{shard: 0}, logs, []entity{u0})
	if len(logs["u0"]) != 2 || logs["u0"][1].insertID != b.people.insertID[3] {
		t.Fatalf("logs after addRecent: %+v", logs["u0"])
	}
	if f := fold(logs["u0"], false); f.version != 2 || fmt.Sprint(f.props["n"].value) != "2" {
		t.Fatalf("fold: version %d, n %v", f.version, f.props["n"].value)
	}
	// Past the window they are forgotten.
	r.add(start.Add(recentWindow+time.Second), &opRows{})
	if len(r.byEntity) != 0 || len(r.order) != 0 {
		t.Fatalf("%d entities remembered past the window", len(r.byEntity))
	}
}
