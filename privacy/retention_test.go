package privacy_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/privacy"
	"github.com/veilhq/veil/sink"
)

func TestMain(m *testing.M) { os.Exit(testsvc.Main(m)) }

func TestRetention(t *testing.T) {
	s, cfg := testsvc.Sink(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	b := sink.NewBatch()
	for i, ts := range []time.Time{
		time.Date(2026, 6, 10, 0, 0, 0, 0, time.UTC),  // a month wholly past retention: partition dropped
		time.Date(2026, 8, 15, 0, 0, 0, 0, time.UTC),  // past retention, in the straddling month
		time.Date(2026, 8, 30, 0, 0, 0, 0, time.UTC),  // within retention, same month
		time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC), // recent
	} {
		ev := event.Event{Kind: event.KindTrack, Project: "p", Name: "e", DistinctID: "d", InsertID: string(rune('a' + i)),
			Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(map[string]any{})}
		if err := b.Append(&ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	r := privacy.NewRetention(s.Conn(), cfg.Database, map[string]int{"events": 90}, time.Hour, nil)
	privacy.SetRetentionClock(r, func() time.Time { return now })
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	conn := testsvc.Conn(t, cfg)
	testsvc.Eventually(t, 10*time.Second, "expired rows gone", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Database+".events") == 2
	})
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Database+".events WHERE time >= toDateTime('2026-08-24 12:00:00')"); n != 2 {
		t.Fatalf("%d recent rows, want 2", n)
	}
	if n := testsvc.Count(t, conn, "SELECT count() FROM system.parts WHERE database = '"+cfg.Database+"' AND table = 'events' AND active AND partition = '202606'"); n != 0 {
		t.Fatalf("the June partition was not dropped")
	}
}
