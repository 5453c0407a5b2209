package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/faulttest"
	"github.com/veilhq/veil/internal/testsvc"
)

// produce runs faulttest.Produce in the background; wait returns its error.
func produce(t *testing.T, brokers []string, topic string, l *faulttest.Load) (wait func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		done <- faulttest.Produce(context.Background(), brokers, topic, l.Messages, 50, 50*time.Millisecond)
	}()
	return func() {
		t.Helper()
		if err := <-done; err != nil {
			t.Fatalf("producing the load: %v", err)
		}
	}
}

// TestReplicaKilledUnderLoad: the replica every worker writes shard 1
// through is killed with SIGKILL while a load flows, and restarted later.
// The worker moves to the other replica; nothing is lost, nothing stored
// twice after FINAL, profile counters are exact, and once the replica is
// back both replicas of the shard hold the same rows.
func TestReplicaKilledUnderLoad(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg := config(t)
	faulttest.Migrate(t, bin, cfg)
	l := faulttest.NewLoad(t, 3000, 60)
	w := faulttest.StartWorker(t, bin, cfg, "worker")
	wait := produce(t, cfg.Kafka.Brokers, cfg.Kafka.RawTopic, l)

	conn := testsvc.Conn(t, cfg.Sink)
	db := cfg.Sink.Database
	stored := func() uint64 { return testsvc.Count(t, conn, "SELECT uniqExact(insert_id) FROM "+db+".events") }
	testsvc.Eventually(t, 60*time.Second, "a third of the events stored", func() bool { return stored() >= uint64(len(l.Kept)/3) })
	victim := cluster.Shard(1)[0]
	victim.Kill()
	t.Logf("killed %s after %d events were stored", victim.Name, stored())
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = victim.Start(context.Background())
		}
	})
	testsvc.Eventually(t, 60*time.Second, "two thirds stored with the replica down", func() bool { return stored() >= uint64(2*len(l.Kept)/3) })
	m := w.Metrics()
	t.Logf("figures: with %s down: %d events stored, %.0f failed writes retried", victim.Name, stored(), m["veil_sink_insert_errors_total"])
	if err := victim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	wait()
	faulttest.Account(t, cfg, l, 90*time.Second)
	st := replicasAgree(t, db, "events_local", "distinct_id, insert_id")
	t.Logf("figures: event rows per shard (both replicas alike): %d, %d", st[0].rows, st[1].rows)
	w.Stop(15 * time.Second)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestZooKeeperStoppedUnderLoad: ZooKeeper is stopped for 20 s while a
// load flows. The replicated tables refuse inserts; the worker retries,
// commits nothing meanwhile and the consumer lag shows it; migrations (a
// worker starting) succeed meanwhile; once ZooKeeper is back everything is
// stored exactly once.
func TestZooKeeperStoppedUnderLoad(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg := config(t)
	faulttest.Migrate(t, bin, cfg)
	l := faulttest.NewLoad(t, 3000, 60)
	w := faulttest.StartWorker(t, bin, cfg, "worker")
	wait := produce(t, cfg.Kafka.Brokers, cfg.Kafka.RawTopic, l)

	conn := testsvc.Conn(t, cfg.Sink)
	db := cfg.Sink.Database
	stored := func() uint64 { return testsvc.Count(t, conn, "SELECT uniqExact(insert_id) FROM "+db+".events") }
	testsvc.Eventually(t, 60*time.Second, "a fifth of the events stored", func() bool { return stored() >= uint64(len(l.Kept)/5) })
	cluster.ZK.Stop()
	stopped := time.Now()
	t.Cleanup(func() {
		if cluster.ZK.Pid() == 0 {
			_ = cluster.ZK.Start(context.Background())
		}
	})
	testsvc.Eventually(t, 15*time.Second, "the worker retrying its writes", func() bool {
		return w.Metrics()["veil_sink_write_retrying"] == 1
	})
	held := stored()
	var lag int64
	testsvc.Eventually(t, 15*time.Second, "consumer lag", func() bool {
		lag = faulttest.Lag(cfg.Kafka.Brokers, cfg.Worker.GroupID, cfg.Kafka.RawTopic, cfg.Kafka.Partitions)
		return lag > 0
	})
	// A worker started now finds its schema in place and needs no
	// ZooKeeper for its migrations (veil migrate is the same code).
	faulttest.Migrate(t, bin, cfg)
	if cluster.ZK.Pid() != 0 || time.Since(stopped) > 20*time.Second {
		t.Fatalf("ZooKeeper came back (pid %d) or the outage ran over (%s) before the migration ended", cluster.ZK.Pid(), time.Since(stopped))
	}
	time.Sleep(time.Until(stopped.Add(20 * time.Second)))
	m := w.Metrics()
	t.Logf("figures: ZooKeeper down 20 s: lag %d, %.0f failed writes, %d events stored before (%d now)", lag, m["veil_sink_insert_errors_total"], held, stored())
	if m["veil_sink_insert_errors_total"] == 0 {
		t.Error("no write failed while ZooKeeper was down")
	}
	if err := cluster.ZK.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait()
	faulttest.Account(t, cfg, l, 120*time.Second)
	replicasAgree(t, db, "events_local", "distinct_id, insert_id")
	w.Stop(15 * time.Second)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestWorkerKilledMidBatchOnCluster: a worker process killed with SIGKILL
// mid-batch, and restarted: its replay reaches the same shards and folds
// into the same rows.
func TestWorkerKilledMidBatchOnCluster(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg := config(t)
	faulttest.Migrate(t, bin, cfg)
	l := faulttest.NewLoad(t, 3000, 60)
	w1 := faulttest.StartWorker(t, bin, cfg, "worker-1")
	wait := produce(t, cfg.Kafka.Brokers, cfg.Kafka.RawTopic, l)

	conn := testsvc.Conn(t, cfg.Sink)
	testsvc.Eventually(t, 60*time.Second, "a third of the events stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Sink.Database+".events") >= uint64(len(l.Kept)/3)
	})
	before := w1.Metrics()
	w1.Kill()
	t.Logf("figures: killed worker-1 after it consumed %.0f and stored %.0f messages (%.0f uncommitted)",
		before["veil_worker_events_consumed_total"], before["veil_worker_events_stored_total"], before["veil_worker_uncommitted_messages"])
	if before["veil_worker_events_consumed_total"] >= float64(l.Total()) {
		t.Fatalf("worker-1 consumed the whole load before it was killed; the test proves nothing")
	}
	w2 := faulttest.StartWorker(t, bin, cfg, "worker-2")
	wait()
	faulttest.Account(t, cfg, l, 90*time.Second)
	replicasAgree(t, cfg.Sink.Database, "events_local", "distinct_id, insert_id")
	w2.Stop(15 * time.Second)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}
