// Package choutage_test stops ClickHouse under load. It runs a ClickHouse
// of its own, so that the outage disturbs no other test.
package choutage_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/faulttest"
	"github.com/veilhq/veil/internal/testsvc"
)

func TestMain(m *testing.M) { os.Exit(faulttest.Main(m)) }

// startClickHouse runs a private clickhouse-server; the returned function
// gives the running instance, which changes when it is restarted.
func startClickHouse(t *testing.T) (current func() *chserver.Server, restart func()) {
	t.Helper()
	if _, err := chserver.Find(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	srv, err := chserver.Start(context.Background(), chserver.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		_ = srv.Stop(context.Background())
	})
	current = func() *chserver.Server { mu.Lock(); defer mu.Unlock(); return srv }
	restart = func() {
		mu.Lock()
		defer mu.Unlock()
		s, err := srv.Restart(context.Background())
		if err != nil {
			t.Fatalf("restarting ClickHouse: %v", err)
		}
		srv = s
	}
	return current, restart
}

// TestClickHouseOutage: ClickHouse is killed for 30 s while events keep
// arriving. The worker keeps retrying with backoff, stops fetching once its
// queue is full, commits nothing, and resumes by itself when ClickHouse is
// back; the backlog drains and every message is accounted for exactly.
func TestClickHouseOutage(t *testing.T) {
	const outage = 30 * time.Second
	start := time.Now()
	current, restart := startClickHouse(t)
	bin := faulttest.Veil(t)
	cfg := faulttest.Config(t, current())
	// A small queue, so that the fetch pause is visible within the outage.
	cfg.Worker.QueueCapacity = 500
	faulttest.Migrate(t, bin, cfg)
	// About 200 messages a second for 42 s: before, during and after the
	// outage.
	l := faulttest.NewLoad(t, 8000, 80)
	w := faulttest.StartWorker(t, bin, cfg, "worker")

	produced := make(chan error, 1)
	go func() {
		produced <- faulttest.Produce(context.Background(), cfg.Kafka.Brokers, cfg.Kafka.RawTopic, l.Messages, 20, 100*time.Millisecond)
	}()

	conn := testsvc.Conn(t, cfg.Sink)
	testsvc.Eventually(t, 30*time.Second, "events flowing", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Sink.Database+".events") >= 500
	})
	lagBefore := faulttest.Lag(cfg.Kafka.Brokers, cfg.Worker.GroupID, cfg.Kafka.RawTopic, cfg.Kafka.Partitions)
	current().Kill()
	down := time.Now()
	t.Logf("ClickHouse killed at %s; consumer lag was %d", down.Sub(start).Round(100*time.Millisecond), lagBefore)

	// Late in the outage: retrying, fetching paused, lag growing.
	time.Sleep(outage - 8*time.Second)
	m1 := w.Metrics()
	lag1 := faulttest.Lag(cfg.Kafka.Brokers, cfg.Worker.GroupID, cfg.Kafka.RawTopic, cfg.Kafka.Partitions)
	time.Sleep(4 * time.Second)
	m2 := w.Metrics()
	lag2 := faulttest.Lag(cfg.Kafka.Brokers, cfg.Worker.GroupID, cfg.Kafka.RawTopic, cfg.Kafka.Partitions)
	t.Logf("during the outage: lag %d → %d; fetched %.0f → %.0f; handled %.0f; failed write attempts %.0f",
		lag1, lag2, m1["veil_worker_events_fetched_total"], m2["veil_worker_events_fetched_total"],
		m2["veil_worker_events_consumed_total"], m2["veil_sink_insert_errors_total"])
	switch {
	case w.Exited():
		t.Fatal("the worker exited during the outage")
	case m2["veil_sink_write_retrying"] != 1:
		t.Errorf("veil_sink_write_retrying = %v during the outage, want 1", m2["veil_sink_write_retrying"])
	case m2["veil_sink_insert_errors_total"] < 5:
		t.Errorf("%v failed write attempts in %s; the worker is not retrying", m2["veil_sink_insert_errors_total"], outage)
	case m2["veil_worker_events_fetched_total"] != m1["veil_worker_events_fetched_total"]:
		t.Errorf("fetching did not pause: %v then %v messages fetched", m1["veil_worker_events_fetched_total"], m2["veil_worker_events_fetched_total"])
	case m2["veil_worker_events_fetched_total"]-m2["veil_worker_events_consumed_total"] > float64(cfg.Worker.QueueCapacity+1):
		t.Errorf("%v messages queued, more than worker.queue_capacity %d and the one in hand",
			m2["veil_worker_events_fetched_total"]-m2["veil_worker_events_consumed_total"], cfg.Worker.QueueCapacity)
	case lag2 <= lag1 || lag1 <= lagBefore:
		t.Errorf("consumer lag did not grow while ClickHouse was down: %d, %d, %d", lagBefore, lag1, lag2)
	case m2["veil_worker_consumer_lag_messages"] < float64(lag1)-1000:
		// The worker's own gauge, measured every second, shows it too.
		t.Errorf("veil_worker_consumer_lag_messages %v while the broker says %d", m2["veil_worker_consumer_lag_messages"], lag1)
	}

	time.Sleep(time.Until(down.Add(outage)))
	restart()
	up := time.Now()
	t.Logf("ClickHouse back after %s", up.Sub(down).Round(100*time.Millisecond))

	if err := <-produced; err != nil {
		t.Fatalf("producing: %v", err)
	}
	faulttest.Account(t, cfg, l, 90*time.Second)
	t.Logf("backlog drained %s after ClickHouse came back; the test took %s",
		time.Since(up).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	if m := w.Metrics(); m["veil_sink_write_retrying"] != 0 {
		t.Errorf("veil_sink_write_retrying = %v after recovery", m["veil_sink_write_retrying"])
	}
	testsvc.Eventually(t, 10*time.Second, "the lag gauge back to 0", func() bool {
		m := w.Metrics()
		_, ok := m["veil_worker_consumer_lag_messages"]
		return ok && m["veil_worker_consumer_lag_messages"] == 0
	})
	w.Stop(15 * time.Second)
}
