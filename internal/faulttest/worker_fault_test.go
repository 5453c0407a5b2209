package faulttest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/faulttest"
	"github.com/veilhq/veil/internal/testsvc"
)

func TestMain(m *testing.M) { os.Exit(faulttest.Main(m)) }

// produce runs faulttest.Produce in the background; wait returns its error.
func produce(t *testing.T, brokers []string, topic string, l *faulttest.Load, chunk int, every time.Duration) (wait func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- faulttest.Produce(context.Background(), brokers, topic, l.Messages, chunk, every) }()
	return func() {
		t.Helper()
		if err := <-done; err != nil {
			t.Fatalf("producing the load: %v", err)
		}
	}
}

// TestWorkerKilledMidBatch: a worker process killed with SIGKILL while a
// load flows, and restarted, loses nothing and stores nothing twice after
// deduplication; profile counters built from $add are exact.
func TestWorkerKilledMidBatch(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg := faulttest.Config(t, testsvc.ClickHouse(t))
	faulttest.Migrate(t, bin, cfg)
	l := faulttest.NewLoad(t, 4000, 60)

	w1 := faulttest.StartWorker(t, bin, cfg, "worker-1")
	wait := produce(t, cfg.Kafka.Brokers, cfg.Kafka.RawTopic, l, 100, 40*time.Millisecond)

	// Kill it once it has stored a third of the load, with the producer
	// still going: it holds a batch being built, and fetched messages.
	conn := testsvc.Conn(t, cfg.Sink)
	testsvc.Eventually(t, 60*time.Second, "a third of the events stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Sink.Database+".events") >= uint64(len(l.Kept)/3)
	})
	before := w1.Metrics()
	w1.Kill()
	t.Logf("killed worker-1 after it consumed %.0f and stored %.0f messages (%.0f uncommitted)",
		before["veil_worker_events_consumed_total"], before["veil_worker_events_stored_total"], before["veil_worker_uncommitted_messages"])
	if before["veil_worker_events_consumed_total"] >= float64(l.Total()) {
		t.Fatalf("worker-1 consumed the whole load before it was killed; the test proves nothing")
	}

	w2 := faulttest.StartWorker(t, bin, cfg, "worker-2")
	wait()
	faulttest.Account(t, cfg, l, 60*time.Second)
	w2.Stop(15 * time.Second)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestMemberLeavesGroup: two workers share the partitions of one group; one
// is killed with SIGKILL mid-stream. Its partitions move to the other after
// the session timeout, and the whole load is accounted for exactly.
func TestMemberLeavesGroup(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg := faulttest.Config(t, testsvc.ClickHouse(t))
	faulttest.Migrate(t, bin, cfg)
	l := faulttest.NewLoad(t, 4000, 60)

	a := faulttest.StartWorker(t, bin, cfg, "worker-a")
	b := faulttest.StartWorker(t, bin, cfg, "worker-b")
	wait := produce(t, cfg.Kafka.Brokers, cfg.Kafka.RawTopic, l, 50, 50*time.Millisecond)

	// Both members have written part of the load: the partitions are
	// shared, and each holds a batch in progress.
	testsvc.Eventually(t, 60*time.Second, "both workers storing", func() bool {
		ma, mb := a.Metrics(), b.Metrics()
		return ma["veil_worker_events_stored_total"] >= 200 && mb["veil_worker_events_stored_total"] >= 200
	})
	ma := a.Metrics()
	a.Kill()
	t.Logf("killed worker-a after it consumed %.0f and stored %.0f messages (%.0f uncommitted)",
		ma["veil_worker_events_consumed_total"], ma["veil_worker_events_stored_total"], ma["veil_worker_uncommitted_messages"])
	if ma["veil_worker_events_consumed_total"]+b.Metrics()["veil_worker_events_consumed_total"] >= float64(l.Total()) {
		t.Fatalf("the whole load was consumed before worker-a was killed; the test proves nothing")
	}

	wait()
	faulttest.Account(t, cfg, l, 60*time.Second)
	mb := b.Metrics()
	t.Logf("worker-b consumed %.0f messages", mb["veil_worker_events_consumed_total"])
	if ma["veil_worker_events_consumed_total"]+mb["veil_worker_events_consumed_total"] < float64(l.Total()) {
		t.Errorf("the two workers consumed %.0f messages together, fewer than the %d sent",
			ma["veil_worker_events_consumed_total"]+mb["veil_worker_events_consumed_total"], l.Total())
	}
	b.Stop(15 * time.Second)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}
