//go:build chdb

package chdbtest_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/privacy"
	"github.com/veilhq/veil/sink"
)

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRetention runs the retention job on the engine: a month wholly past
// retention goes as a dropped partition, the expired rows of the month
// that straddles the limit by a mutation, and nothing newer is touched.
func TestRetention(t *testing.T) {
	const db = "veil_retention"
	s := open(t, db, nil)
	migrate(t, s)
	ctx := context.Background()
	// Retention measures from the wall clock, so the rows do too.
	now := time.Now().UTC()
	const days = 90
	cutoff := now.Add(-days * 24 * time.Hour)
	old := time.Date(now.Year(), now.Month()-6, 10, 0, 0, 0, 0, time.UTC)
	b := sink.NewBatch()
	for i, ts := range []time.Time{old, cutoff.Add(-24 * time.Hour), cutoff.Add(24 * time.Hour), now.Add(-time.Hour)} {
		ev := event.Event{Kind: event.KindTrack, Project: "p", Name: "e", DistinctID: "d", InsertID: string(rune('a' + i)),
			Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(map[string]any{})}
		if err := b.Append(&ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	n := len(engine.Statements())
	r := privacy.NewRetention(s.Conn(), db, map[string]int{"events": days}, time.Hour, nil)
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	for _, st := range statementsSince(n) {
		if st.Code != 0 {
			t.Errorf("refused:\n%s\n%s", st.SQL, st.Err)
		}
	}
	eventually(t, 30*time.Second, "expired rows gone", func() bool {
		return query(t, "SELECT count() FROM "+db+".events") == "2\n"
	})
	if got := query(t, "SELECT count() FROM "+db+".events WHERE time > now() - INTERVAL 90 DAY"); got != "2\n" {
		t.Fatalf("%q recent rows, want 2", got)
	}
	if got := query(t, "SELECT count() FROM system.parts WHERE database = '"+db+"' AND table = 'events' AND active AND partition = '"+old.Format("200601")+"'"); got != "0\n" {
		t.Fatalf("the partition %s was not dropped", old.Format("200601"))
	}
}

// TestPrivacyTasks carries out a deletion and a retrieval on the engine
// through the privacy task runner, as the privacy API has them done: the
// deleted user's rows go from every table, the other user's stay, and the
// retrieval finds the other user's rows.
func TestPrivacyTasks(t *testing.T) {
	const db, privDB = "veil_tasks", "veil_tasks_privacy"
	s := open(t, db, nil)
	migrate(t, s)
	query(t, "DROP DATABASE IF EXISTS "+privDB+" SYNC")
	t.Cleanup(func() { _, _ = engine.Query("DROP DATABASE IF EXISTS " + privDB + " SYNC") })
	ctx := context.Background()
	if err := privacy.Migrate(ctx, s.Conn(), privDB); err != nil {
		t.Fatal(err)
	}
	keys, err := pseudonym.NewKeyring(map[uint32][]byte{1: []byte("a key of thirty-two bytes or more!")})
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := keys.Pseudonymize("shop", "alice@example.com")
	bob, _ := keys.Pseudonymize("shop", "bob@example.com")

	b := sink.NewBatch()
	ts := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	for i, id := range []string{alice, bob, alice, bob} {
		b.Cover("veil.events.raw", 0, int64(2*i))
		if err := b.Append(&event.Event{Kind: event.KindTrack, Project: "shop", Name: "view_item", DistinctID: id,
			InsertID: "ev-" + string(rune('a'+i)), Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(map[string]any{"sku": "A-1"})}); err != nil {
			t.Fatal(err)
		}
		b.Cover("veil.events.raw", 0, int64(2*i+1))
		if err := b.Append(&event.Event{Kind: event.KindEngage, Project: "shop", Endpoint: "/engage", Name: "$set", DistinctID: id,
			Value: map[string]any{"plan": "free"}, InsertID: "op-" + string(rune('a'+i)), Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(map[string]any{})}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}

	cfg := privacy.DefaultConfig()
	cfg.Database = privDB
	cfg.Refresh, cfg.TaskPoll, cfg.Settle = 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond
	tasks, err := privacy.NewTasks(cfg, s.Conn(), db, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := len(engine.Statements())
	runCtx, cancel := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error { return tasks.Run(runCtx) })
	defer func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Error(err)
		}
	}()

	done := func(kind, id string) privacy.Task {
		t.Helper()
		var task privacy.Task
		eventually(t, 60*time.Second, kind+" done", func() bool {
			var err error
			if task, err = tasks.Get(ctx, kind, id); err != nil {
				t.Fatal(err)
			}
			return task.Status == privacy.StatusSuccess || task.Status == privacy.StatusFailure
		})
		if task.Status != privacy.StatusSuccess {
			t.Fatalf("%s ended %s: %s", kind, task.Status, task.Error)
		}
		return task
	}
	del, err := tasks.Create(ctx, privacy.KindDeletion, "shop", "GDPR", []string{"alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	done(privacy.KindDeletion, del.ID)
	// Two events and two operations each; one state row per property
	// (plan, $last_seen).
	for _, table := range []string{"events", "profile_ops", "profile_state", "profiles"} {
		got := query(t, "SELECT countIf(distinct_id = '"+alice+"'), countIf(distinct_id = '"+bob+"') FROM "+db+"."+table)
		if want := "0\t2\n"; got != want {
			t.Errorf("%s after the deletion: alice, bob rows %q, want %q", table, got, want)
		}
	}
	if got := query(t, "SELECT count() FROM "+privDB+".deleted_users FINAL WHERE pseudonym = '"+alice+"'"); got != "1\n" {
		t.Errorf("%q tombstones for the deleted user, want 1", got)
	}

	// The registry every worker reads: the deletion's tombstone, and an
	// opt-out recorded by one worker and loaded by another.
	writer, err := privacy.NewRegistry(cfg, s.Conn(), keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Set(ctx, "shop", []string{"carol@example.com"}, true); err != nil {
		t.Fatal(err)
	}
	reader, err := privacy.NewRegistry(cfg, s.Conn(), keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := reader.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if !reader.OptedOut("shop", keys.All("shop", "carol@example.com")) || reader.OptedOut("shop", keys.All("shop", "bob@example.com")) {
		t.Error("the registry loaded from the engine does not have carol, and only carol, opted out")
	}
	if before, ok := reader.DeletedBefore("shop", keys.All("shop", "alice@example.com")); !ok || !before.Equal(del.RequestedAt.Add(time.Second)) {
		t.Errorf("alice's tombstone: %v %v, want events before %v refused", before, ok, del.RequestedAt.Add(time.Second))
	}

	ret, err := tasks.Create(ctx, privacy.KindRetrieval, "shop", "GDPR", []string{"bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	got := done(privacy.KindRetrieval, ret.ID)
	var doc struct {
		Tables map[string][]map[string]json.RawMessage `json:"tables"`
	}
	if err := json.Unmarshal([]byte(got.Result), &doc); err != nil {
		t.Fatalf("retrieval result: %v", err)
	}
	for table, want := range map[string]int{"events": 2, "profile_ops": 2, "profile_state": 2} {
		if len(doc.Tables[table]) != want {
			t.Errorf("retrieval: %d rows of %s, want %d", len(doc.Tables[table]), table, want)
		}
		for _, row := range doc.Tables[table] {
			if string(row["distinct_id"]) != `"`+bob+`"` {
				t.Errorf("retrieval: a row of %s of %s", table, row["distinct_id"])
			}
		}
	}
	if p := doc.Tables["events"]; len(p) > 0 && string(p[0]["properties"]) != `{"sku":"A-1"}` {
		t.Errorf("retrieval: properties %s, want the JSON object", p[0]["properties"])
	}
	for _, st := range statementsSince(n) {
		if st.Code != 0 {
			t.Errorf("refused:\n%s\n%s", st.SQL, st.Err)
		}
	}
	if !strings.Contains(got.Result, `"task_id":"`+ret.ID+`"`) {
		t.Errorf("retrieval result lacks its task id")
	}
}
