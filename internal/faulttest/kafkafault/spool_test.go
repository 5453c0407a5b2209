package kafkafault_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/faulttest"
	"github.com/veilhq/veil/internal/testsvc"
)

// TestBrokersPausedWithSpool: two of the three brokers stop (SIGSTOP) for
// 30 s under a load of SDK requests, pixels and beacons, fewer than
// min.insync.replicas, so Kafka acknowledges no write. With the spool on,
// the writes that wait past collector.spool.deadline are spooled and
// answered success, and the requests after them queue in the spool; no
// request is answered 503, no pixel or beacon is lost, and once the
// brokers continue the spool drains and every event answered success is
// stored exactly once after FINAL (a write given up at the deadline that
// the brokers completed later is folded with its replayed copy).
func TestBrokersPausedWithSpool(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg, c := config(t)
	cfg.Collector.Spool.Dir = filepath.Join(t.TempDir(), "spool")
	faulttest.Migrate(t, bin, cfg)
	col := faulttest.StartCollector(t, bin, cfg, "collector")
	faulttest.StartWorker(t, bin, cfg, "worker")
	load := &faulttest.MixedLoad{Token: "tok-shop", Requests: 2400, PerRequest: 1, Senders: 6, Every: 100 * time.Millisecond, Users: 50}
	load.SetCollector(col.URL)
	load.Start(t)
	testsvc.Eventually(t, 60*time.Second, "load flowing", func() bool { return load.Snapshot() >= 200 })
	atPause := load.Snapshot()
	for _, id := range []int{2, 3} {
		if err := c.Pause(id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(30 * time.Second)
	during := load.Snapshot() - atPause
	m := col.Metrics()
	for _, id := range []int{2, 3} {
		if err := c.Resume(id); err != nil {
			t.Fatal(err)
		}
	}
	spooled := func(m map[string]float64, reason string) float64 {
		return m[fmt.Sprintf("veil_collector_spool_spooled_events_total{reason=%s}", reason)]
	}
	t.Logf("figures: nodes 2 and 3 paused for 30 s; %d requests answered success meanwhile; spooled %v (deadline %v, kafka_error %v, behind %v), %v held",
		during, m["veil_collector_spool_spooled_events_total"], spooled(m, "deadline"), spooled(m, "kafka_error"), spooled(m, "behind"), m["veil_collector_spool_events"])
	r := load.Wait(t)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m = col.Metrics()
		if m["veil_collector_spool_events"] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("figures: after: replayed %v of %v spooled, %v held, refused %v, produce errors %v",
		m["veil_collector_spool_replayed_events_total"], m["veil_collector_spool_spooled_events_total"], m["veil_collector_spool_events"],
		m["veil_collector_spool_refused_events_total"], m["veil_collector_produce_errors_total"])
	faulttest.AccountMixed(t, cfg, r, 3*time.Minute)
	if len(r.Unaccepted) != 0 || during == 0 || m["veil_collector_spool_spooled_events_total"] == 0 {
		t.Errorf("%d pixel and beacon events lost, %d requests accepted while paused, %v spooled: the spool did not stand in for Kafka",
			len(r.Unaccepted), during, m["veil_collector_spool_spooled_events_total"])
	}
	if m["veil_collector_spool_events"] != 0 || m["veil_collector_spool_replayed_events_total"] != m["veil_collector_spool_spooled_events_total"] {
		t.Errorf("the spool did not drain: %v held, %v of %v replayed", m["veil_collector_spool_events"],
			m["veil_collector_spool_replayed_events_total"], m["veil_collector_spool_spooled_events_total"])
	}
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}
