package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/internal/testsvc"
)

func sealEvents(prefix string, n int) []map[string]any {
	var evs []map[string]any
	for i := range n {
		evs = append(evs, map[string]any{"event": "sealed", "properties": map[string]any{
			"token": "tok-shop", "distinct_id": fmt.Sprintf("user-canary-%d", i%3), "$insert_id": fmt.Sprintf("%s-%d", prefix, i),
			"$email": "canary.alice@example.com", "plan": "premium"}})
	}
	return evs
}

// writeKeys writes a seal key file of lines (keyLine).
func writeKeys(t *testing.T, path, lines string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fastRotation seals with the key file at path, read again every 100 ms,
// a new key sealing 500 ms after it was made.
func fastRotation(path string) func(*app.Config) {
	return func(c *app.Config) {
		c.Seal.KeyFile = path
		c.Seal.Reload = 100 * time.Millisecond
		c.Seal.ActivationDelay = 500 * time.Millisecond
	}
}

func keyLine(epoch uint32, b byte, created time.Time) string {
	return fmt.Sprintf("%d:%s:%s\n", epoch, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)), created.UTC().Format(time.RFC3339))
}

// TestSealWrongKey: a worker whose seal key is not the collectors' stores
// nothing: every message (a frame per user of the request) is
// dead-lettered whole with its reason, still sealed, so that the worker
// given the right key can have it replayed, and every event is counted.
func TestSealWrongKey(t *testing.T) {
	s := newStack(t, nil)
	s.startCollector()
	wcfg := s.cfg
	wcfg.Seal.KeyFile = testsvc.SealKeyFile(t) // another key of the same epoch
	_, reg := s.run("worker", func(ctx context.Context, deps app.Deps) error { return app.RunWorker(ctx, wcfg, deps, nil) })
	const n = 12
	if msg := post(t, s.collector, sealEvents("wrong", n)); msg != "" {
		t.Fatal(msg)
	}
	testsvc.Eventually(t, 30*time.Second, "every message dead-lettered", func() bool {
		return byLabel(t, reg, "veil_worker_events_dead_lettered_total")["seal_open_failed"] == n
	})
	conn := testsvc.Conn(t, s.cfg.Sink)
	if got := testsvc.Count(t, conn, "SELECT count() FROM "+s.cfg.Sink.Database+".events"); got != 0 {
		t.Fatalf("%d events stored by a worker with the wrong key", got)
	}
	right, err := seal.Load(s.cfg.Seal.Source(), s.cfg.Seal.ActivationDelay)
	if err != nil {
		t.Fatal(err)
	}
	// The reason's detail is sealed by the worker that wrote it.
	own, err := seal.Load(wcfg.Seal.Source(), wcfg.Seal.ActivationDelay)
	if err != nil {
		t.Fatal(err)
	}
	dead := testsvc.Records(t, s.cfg.Kafka.Brokers[0], s.cfg.Kafka.DLQTopic)
	if len(dead) != 3 {
		t.Fatalf("%d dead-lettered records, want 3 (one frame per user)", len(dead))
	}
	events := 0
	for _, m := range dead {
		if h := testsvc.Header(m, "veil-reason"); h != "seal_open_failed" {
			t.Fatalf("reason %q", h)
		}
		envs, err := right.OpenAll(m.Value)
		if err != nil || len(envs) != seal.Count(m.Value) {
			t.Fatalf("a dead-lettered message does not open with the collectors' key: %v", err)
		}
		for _, env := range envs {
			if !bytes.Contains(env, []byte(`"$insert_id":"wrong-`)) {
				t.Fatalf("a dead-lettered envelope is not one of the test's")
			}
			events++
		}
		detail, err := own.Open(nil, []byte(testsvc.Header(m, "veil-detail")))
		if err != nil || !strings.Contains(string(detail), "does not open") {
			t.Fatalf("sealed detail %q, %v", detail, err)
		}
		if bytes.Contains(m.Value, []byte("canary")) || bytes.Contains(m.Key, []byte("canary")) {
			t.Fatal("a dead-lettered record holds personal data in the clear")
		}
	}
	if events != n {
		t.Fatalf("the dead-lettered frames hold %d events, want %d", events, n)
	}
	t.Logf("figures: %d events, %d dead-lettered as seal_open_failed in %d frames, 0 stored, every one sealed and opening with the right key", n, events, len(dead))
}

// TestSealKeyRotation: a key added to the running collector's and worker's
// key file seals once it is old enough, without a restart; the worker
// opens the messages of both epochs, and every event is stored once.
func TestSealKeyRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seal.keys")
	made := time.Now().Add(-time.Hour)
	writeKeys(t, path, keyLine(1, 1, made))
	s := newStack(t, fastRotation(path))
	s.startCollector()
	s.startWorker(false)
	conn := testsvc.Conn(t, s.cfg.Sink)
	stored := func(want uint64) {
		t.Helper()
		testsvc.Eventually(t, 30*time.Second, fmt.Sprintf("%d events stored", want), func() bool {
			return testsvc.Count(t, conn, "SELECT count() FROM "+s.cfg.Sink.Database+".events FINAL") == want
		})
	}
	if msg := post(t, s.collector, sealEvents("before", 10)); msg != "" {
		t.Fatal(msg)
	}
	stored(10)
	// Epoch 2, made now: workers read it within seal.reload, collectors
	// seal with it after seal.activation_delay.
	writeKeys(t, path, keyLine(1, 1, made)+keyLine(2, 2, time.Now()))
	time.Sleep(1500 * time.Millisecond)
	if msg := post(t, s.collector, sealEvents("after", 10)); msg != "" {
		t.Fatal(msg)
	}
	stored(20)
	epochs := map[byte]int{}
	for _, m := range testsvc.Records(t, s.cfg.Kafka.Brokers[0], s.cfg.Kafka.RawTopic) {
		if !seal.IsSealed(m.Value) {
			t.Fatal("an unsealed record in the raw topic")
		}
		epochs[m.Value[6]] += seal.Count(m.Value)
	}
	if epochs[1] != 10 || epochs[2] != 10 || len(epochs) != 2 {
		t.Fatalf("events by epoch %v, want 10 of epoch 1 and 10 of epoch 2", epochs)
	}
	t.Logf("figures: 10 events sealed with epoch 1 and 10 with epoch 2 after a rotation without restart, 20 stored")
}

// TestDeadLetterReplay: frames sealed with a key the worker does not have
// yet are dead-lettered as seal_unknown_epoch; `veil dlq list` counts them
// by reason from their headers; once the worker has the key, `veil dlq
// replay` writes them back to the raw topic and every event is stored
// once, a second replay folded by ClickHouse.
func TestDeadLetterReplay(t *testing.T) {
	dir := t.TempDir()
	made := time.Now().Add(-time.Hour)
	collectorKeys, workerKeys := filepath.Join(dir, "collector.keys"), filepath.Join(dir, "worker.keys")
	both := keyLine(1, 1, made) + keyLine(2, 2, made)
	writeKeys(t, collectorKeys, both)
	writeKeys(t, workerKeys, keyLine(1, 1, made))
	s := newStack(t, fastRotation(collectorKeys))
	s.startCollector()
	wcfg := s.cfg
	wcfg.Seal.KeyFile = workerKeys
	_, reg := s.run("worker", func(ctx context.Context, deps app.Deps) error { return app.RunWorker(ctx, wcfg, deps, nil) })
	const n = 9
	if msg := post(t, s.collector, sealEvents("replay", n)); msg != "" {
		t.Fatal(msg)
	}
	testsvc.Eventually(t, 30*time.Second, "every event dead-lettered", func() bool {
		return byLabel(t, reg, "veil_worker_events_dead_lettered_total")["seal_unknown_epoch"] == n
	})
	var list bytes.Buffer
	if err := app.DeadLetters(context.Background(), s.cfg, &list); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list.String(), ": 3 records, 9 events\n") || !regexp.MustCompile(`(?m)^seal_unknown_epoch +3 +9 `).MatchString(list.String()) {
		t.Fatalf("veil dlq list printed\n%s", list.String())
	}
	if strings.Contains(list.String(), "canary") {
		t.Fatal("veil dlq list shows personal data")
	}
	var out bytes.Buffer
	if err := app.ReplayDeadLetters(context.Background(), s.cfg, []string{"seal_unknown_epoch"}, true, &out); err != nil {
		t.Fatal(err)
	}
	if want := "would replay 3 records (9 events: seal_unknown_epoch 9) of the 3 in"; !strings.HasPrefix(out.String(), want) {
		t.Fatalf("dry run printed %q, want %q…", out.String(), want)
	}
	if err := app.ReplayDeadLetters(context.Background(), s.cfg, []string{"seal_unkown_epoch"}, false, io.Discard); err == nil || !strings.Contains(err.Error(), `unknown dead-letter reason "seal_unkown_epoch"`) {
		t.Fatalf("a misspelt reason: %v", err)
	}
	conn := testsvc.Conn(t, s.cfg.Sink)
	events := "SELECT count() FROM " + s.cfg.Sink.Database + ".events"
	if got := testsvc.Count(t, conn, events); got != 0 {
		t.Fatalf("%d events stored before the replay", got)
	}

	// The worker is given the key; the records are replayed.
	writeKeys(t, workerKeys, both)
	time.Sleep(500 * time.Millisecond) // past seal.reload
	out.Reset()
	if err := app.ReplayDeadLetters(context.Background(), s.cfg, []string{"seal_unknown_epoch"}, false, &out); err != nil {
		t.Fatal(err)
	}
	if want := "replayed 3 records (9 events: seal_unknown_epoch 9)"; !strings.HasPrefix(out.String(), want) {
		t.Fatalf("replay printed %q, want %q…", out.String(), want)
	}
	testsvc.Eventually(t, 30*time.Second, "the replayed events stored", func() bool {
		return testsvc.Count(t, conn, events) == n
	})
	// Replayed again: stored twice, folded to once.
	if err := app.ReplayDeadLetters(context.Background(), s.cfg, []string{"seal_unknown_epoch"}, false, io.Discard); err != nil {
		t.Fatal(err)
	}
	testsvc.Eventually(t, 30*time.Second, "the second replay stored", func() bool {
		return testsvc.Count(t, conn, events) == 2*n
	})
	if got := testsvc.Count(t, conn, events+" FINAL"); got != n {
		t.Fatalf("%d events after FINAL, want %d", got, n)
	}
	if got := byLabel(t, reg, "veil_worker_events_dead_lettered_total")["seal_unknown_epoch"]; got != n {
		t.Fatalf("%v dead-lettered as seal_unknown_epoch, want %d: a replayed record failed again", got, n)
	}
	t.Logf("figures: %d events in 3 frames dead-lettered as seal_unknown_epoch, replayed twice once the worker had the key: %d rows, %d after FINAL", n, 2*n, n)
}
