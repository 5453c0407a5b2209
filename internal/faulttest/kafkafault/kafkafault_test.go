// Package kafkafault_test proves Veil's delivery contract on a cluster of
// three Apache Kafka brokers (three copies of each partition, two in sync
// before a write is acknowledged) while brokers are killed and paused and
// workers crash: real `veil collector` and `veil worker` processes, built
// from this tree, and a load sent over HTTP the way an SDK sends it.
package kafkafault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/faulttest"
	"github.com/veilhq/veil/internal/kafkacluster"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/testsvc"
)

func TestMain(m *testing.M) { os.Exit(faulttest.Main(m)) }

// config is faulttest.Config on the Apache cluster, with Veil's topics at
// three replicas, two in sync, and six partitions.
func config(t *testing.T) (app.Config, *kafkacluster.Cluster) {
	t.Helper()
	c := testsvc.Apache(t)
	cfg := faulttest.Config(t, testsvc.ClickHouse(t))
	cfg.Kafka.Brokers = c.Brokers()
	cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor, cfg.Kafka.MinInsyncReplicas = 6, 3, 2
	return cfg, c
}

// partitions returns topic's partitions as a running broker sees them.
func partitions(t *testing.T, c *kafkacluster.Cluster, topic string) []kafka.Partition {
	t.Helper()
	for _, n := range c.Nodes() {
		if n.Pid == 0 {
			continue
		}
		conn, err := (&kafka.Dialer{Timeout: 2 * time.Second}).Dial("tcp", n.Address)
		if err != nil {
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		parts, err := conn.ReadPartitions(topic)
		conn.Close()
		if err != nil {
			continue
		}
		return parts
	}
	t.Fatal("no broker answers")
	return nil
}

// waitDropped waits until the cluster has taken node id out of topic: no
// partition is led by it or leaderless, and none counts it among its
// in-sync replicas (an acks=all write waits for every one of them). It
// returns when that was first seen.
func waitDropped(t *testing.T, c *kafkacluster.Cluster, topic string, id int) time.Time {
	t.Helper()
	testsvc.Eventually(t, 60*time.Second, "node out of leadership and in-sync replicas", func() bool {
		for _, p := range partitions(t, c, topic) {
			if p.Leader.ID == id || p.Leader.Host == "" || slices.ContainsFunc(p.Isr, func(b kafka.Broker) bool { return b.ID == id }) {
				return false
			}
		}
		return true
	})
	return time.Now()
}

// waitInSync waits until every partition of the topics has all three
// replicas in sync on every running broker's word: the next test starts
// on a whole cluster.
func waitInSync(t *testing.T, c *kafkacluster.Cluster, topics ...string) {
	t.Helper()
	testsvc.Eventually(t, 90*time.Second, "every replica back in sync", func() bool {
		for _, n := range c.Nodes() {
			conn, err := (&kafka.Dialer{Timeout: 2 * time.Second}).Dial("tcp", n.Address)
			if err != nil {
				return false
			}
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			parts, err := conn.ReadPartitions(topics...)
			conn.Close()
			if err != nil {
				return false
			}
			for _, p := range parts {
				if len(p.Isr) != len(p.Replicas) {
					return false
				}
			}
		}
		return true
	})
}

// brokerFault runs a collector and a worker under an SDK-like load, does
// fault to node 1 once the load flows, and calls recover after hold; then
// it waits for the load and accounts for every event. Node 1 is the first
// broker of every client's bootstrap list, and leads a third of the
// partitions. It reports the 503s the clients saw, and fails on any to a
// request sent more than a second after the cluster had taken the broker
// out of leadership and in-sync replicas (the producer's metadata is then
// stale for at most one failed attempt), and when no request was
// accepted between then and the broker's return.
func brokerFault(t *testing.T, what string, fault, recover func(c *kafkacluster.Cluster, id int) error, hold time.Duration) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg, c := config(t)
	faulttest.Migrate(t, bin, cfg)
	col := faulttest.StartCollector(t, bin, cfg, "collector")
	w := faulttest.StartWorker(t, bin, cfg, "worker")

	load := &faulttest.HTTPLoad{Collectors: []string{col.URL}, Token: "tok-shop", Requests: 1000, PerRequest: 10,
		Senders: 4, Every: 40 * time.Millisecond, Users: 200}
	load.Start(t)
	testsvc.Eventually(t, 60*time.Second, "load flowing", func() bool { return load.Accepted() >= 150 })

	const victim = 1
	if err := fault(c, victim); err != nil {
		t.Fatal(err)
	}
	faulted := time.Now()
	atFault := load.Accepted()
	dropped := waitDropped(t, c, cfg.Kafka.RawTopic, victim)
	t.Logf("node %d %s after %d requests accepted; out of leadership and in-sync replicas %s later",
		victim, what, atFault, dropped.Sub(faulted).Round(100*time.Millisecond))
	time.Sleep(time.Until(dropped.Add(time.Second)))
	atDropped := load.Accepted()
	time.Sleep(time.Until(faulted.Add(hold)))
	atRecover := load.Accepted()
	t.Logf("%d requests accepted while the node was out, before it came back", atRecover-atDropped)
	if atRecover == atDropped {
		t.Errorf("no request accepted in the %s between the cluster dropping node %d and its return",
			faulted.Add(hold).Sub(dropped.Add(time.Second)).Round(100*time.Millisecond), victim)
	}
	if err := recover(c, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d serving again %s after the fault; %d requests accepted meanwhile",
		victim, time.Since(faulted).Round(100*time.Millisecond), atRecover-atFault)
	if atRecover >= load.Requests {
		t.Fatalf("the load ended before the broker came back; the test proves less than it says")
	}

	r := load.Wait(t)
	late := r.SentAfter(dropped.Add(time.Second))
	t.Logf("figures: 503s: %s; %d to requests sent once the node was out", r.Of503(), late)
	faulttest.AccountHTTP(t, cfg, r, 90*time.Second)
	if late != 0 {
		t.Errorf("%d answers 503 to requests sent more than a second after every partition had a leader and an in-sync quorum on running brokers", late)
	}
	col.Stop(15 * time.Second)
	w.Stop(15 * time.Second)
	waitInSync(t, c, cfg.Kafka.RawTopic, cfg.Kafka.DLQTopic)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestBrokerKilled: the broker leading partition 0 is killed with SIGKILL
// while SDK-like clients send events to a collector, and started again
// 15 s later. The collector answers 503 only until the cluster has moved
// the node's leaderships and in-sync places; every event answered `1` is
// stored exactly once.
func TestBrokerKilled(t *testing.T) {
	brokerFault(t, "killed (SIGKILL)", (*kafkacluster.Cluster).Kill,
		func(c *kafkacluster.Cluster, id int) error { return c.StartNode(context.Background(), id) }, 15*time.Second)
}

// TestBrokerPaused: the broker leading partition 0 is stopped with SIGSTOP
// for 20 s (a long GC pause, a partitioned host: its connections stay open
// and nothing answers), then continued.
func TestBrokerPaused(t *testing.T) {
	brokerFault(t, "paused (SIGSTOP)", (*kafkacluster.Cluster).Pause, (*kafkacluster.Cluster).Resume, 20*time.Second)
}

// TestWorkerKilledInRebalance: three workers of one group share the
// partitions; one is killed with SIGKILL mid-stream. Its partitions move to
// the other two, and the whole load (events, profile and group operations,
// poison messages, opted-out events) is accounted for exactly.
func TestWorkerKilledInRebalance(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg, _ := config(t)
	faulttest.Migrate(t, bin, cfg)
	l := faulttest.NewLoad(t, 5000, 60)

	ws := []*faulttest.Proc{
		faulttest.StartWorker(t, bin, cfg, "worker-a"),
		faulttest.StartWorker(t, bin, cfg, "worker-b"),
		faulttest.StartWorker(t, bin, cfg, "worker-c"),
	}
	done := make(chan error, 1)
	go func() {
		done <- faulttest.Produce(context.Background(), cfg.Kafka.Brokers, cfg.Kafka.RawTopic, l.Messages, 50, 40*time.Millisecond)
	}()
	testsvc.Eventually(t, 60*time.Second, "every worker storing", func() bool {
		for _, w := range ws {
			if w.Metrics()["veil_worker_events_stored_total"] < 100 {
				return false
			}
		}
		return true
	})
	ma := ws[0].Metrics()
	ws[0].Kill()
	t.Logf("killed worker-a (pid %d) after it consumed %.0f and stored %.0f messages (%.0f uncommitted)", ws[0].Pid(),
		ma["veil_worker_events_consumed_total"], ma["veil_worker_events_stored_total"], ma["veil_worker_uncommitted_messages"])
	consumed := func() float64 {
		return ma["veil_worker_events_consumed_total"] + ws[1].Metrics()["veil_worker_events_consumed_total"] + ws[2].Metrics()["veil_worker_events_consumed_total"]
	}
	if consumed() >= float64(l.Total()) {
		t.Fatalf("the whole load was consumed before worker-a was killed; the test proves nothing")
	}
	if err := <-done; err != nil {
		t.Fatalf("producing the load: %v", err)
	}
	faulttest.Account(t, cfg, l, 90*time.Second)
	mb, mc := ws[1].Metrics(), ws[2].Metrics()
	t.Logf("worker-b consumed %.0f, worker-c %.0f messages", mb["veil_worker_events_consumed_total"], mc["veil_worker_events_consumed_total"])
	if got := consumed(); got < float64(l.Total()) {
		t.Errorf("the workers consumed %.0f messages together, fewer than the %d sent", got, l.Total())
	}
	ws[1].Stop(15 * time.Second)
	ws[2].Stop(15 * time.Second)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestManyProcesses: two `veil collector` and three `veil worker`
// processes, each from its own configuration file, share the cluster and
// one ClickHouse. SDK-like clients send a bounded load to both collectors;
// a worker is killed with SIGKILL mid-run. Every event answered `1` is
// stored exactly once, and every process is stopped by its pid.
func TestManyProcesses(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg, _ := config(t)
	faulttest.Migrate(t, bin, cfg)
	cols := []*faulttest.Proc{
		faulttest.StartCollector(t, bin, cfg, "collector-1"),
		faulttest.StartCollector(t, bin, cfg, "collector-2"),
	}
	ws := []*faulttest.Proc{
		faulttest.StartWorker(t, bin, cfg, "worker-1"),
		faulttest.StartWorker(t, bin, cfg, "worker-2"),
		faulttest.StartWorker(t, bin, cfg, "worker-3"),
	}
	load := &faulttest.HTTPLoad{Collectors: []string{cols[0].URL, cols[1].URL}, Token: "tok-shop", Requests: 800, PerRequest: 10,
		Senders: 4, Every: 20 * time.Millisecond, Users: 300}
	load.Start(t)
	testsvc.Eventually(t, 60*time.Second, "every worker storing", func() bool {
		for _, w := range ws {
			if w.Metrics()["veil_worker_events_stored_total"] < 100 {
				return false
			}
		}
		return true
	})
	m := ws[1].Metrics()
	ws[1].Kill()
	t.Logf("killed worker-2 (pid %d) after %d requests accepted; it had stored %.0f events, %.0f uncommitted",
		ws[1].Pid(), load.Accepted(), m["veil_worker_events_stored_total"], m["veil_worker_uncommitted_messages"])
	if load.Accepted() >= load.Requests {
		t.Fatalf("the load ended before the worker was killed; the test proves less than it says")
	}
	r := load.Wait(t)
	faulttest.AccountHTTP(t, cfg, r, 90*time.Second)
	var accepted float64
	for _, c := range cols {
		accepted += c.Metrics()["veil_collector_events_accepted_total"]
	}
	if accepted < float64(r.Events) {
		t.Errorf("the collectors counted %.0f events accepted, fewer than the %d answered 1", accepted, r.Events)
	}
	for _, p := range append(cols, ws[0], ws[2]) {
		p.Stop(15 * time.Second)
	}
	for _, p := range append(cols, ws...) {
		if !p.Exited() {
			t.Errorf("pid %d still runs", p.Pid())
		}
	}
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestTwoBrokersPaused: two of the three brokers stop (SIGSTOP) for 6 s
// under load, fewer than min.insync.replicas: no write can be
// acknowledged, and the collector answers 503 once collector.
// produce_timeout (3 s here) passes. Each 503 is counted once in
// veil_collector_produce_errors_total under one of its fixed reasons; when
// the brokers continue, the clients' retries are taken and every event
// answered `1` is stored exactly once.
func TestTwoBrokersPaused(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg, c := config(t)
	cfg.Collector.ProduceTimeout = 3 * time.Second
	faulttest.Migrate(t, bin, cfg)
	col := faulttest.StartCollector(t, bin, cfg, "collector")
	w := faulttest.StartWorker(t, bin, cfg, "worker")
	load := &faulttest.HTTPLoad{Collectors: []string{col.URL}, Token: "tok-shop", Requests: 500, PerRequest: 10,
		Senders: 4, Every: 40 * time.Millisecond, Users: 200}
	load.Start(t)
	testsvc.Eventually(t, 60*time.Second, "load flowing", func() bool { return load.Accepted() >= 100 })
	atPause := load.Accepted()
	for _, id := range []int{2, 3} {
		if err := c.Pause(id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(6 * time.Second)
	for _, id := range []int{2, 3} {
		if err := c.Resume(id); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("nodes 2 and 3 paused for 6 s after %d requests accepted; %d accepted meanwhile", atPause, load.Accepted()-atPause)
	r := load.Wait(t)
	faulttest.AccountHTTP(t, cfg, r, 90*time.Second)
	m := col.Metrics()
	byReason := map[string]float64{}
	for _, reason := range kafkax.Reasons {
		byReason[reason] = m["veil_collector_produce_errors_total{reason="+reason+"}"]
	}
	t.Logf("503s: %s; veil_collector_produce_errors_total by reason: %v", r.Of503(), byReason)
	if r.Statuses["503"] == 0 {
		t.Errorf("no 503 while two brokers of three were stopped for 6 s, with a produce timeout of 3 s")
	}
	if got := m["veil_collector_produce_errors_total"]; got != float64(r.Statuses["503"]) {
		t.Errorf("veil_collector_produce_errors_total = %v, want the %d answers 503", got, r.Statuses["503"])
	}
	col.Stop(15 * time.Second)
	w.Stop(15 * time.Second)
	waitInSync(t, c, cfg.Kafka.RawTopic, cfg.Kafka.DLQTopic)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// adminCall calls a worker's privacy API with the fault tests' admin token.
func adminCall(t *testing.T, w *faulttest.Proc, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+w.Admin()+path, r)
	req.Header.Set("Authorization", "Bearer fault-test-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

// TestPrivacyRunnerKilled: every worker may run privacy tasks, and exactly
// one does at a time, elected through Kafka. The runner is killed with
// SIGKILL in the middle of a deletion (its tombstones written, waiting for
// every worker to see them); another worker is elected, carries the
// deletion on from its last status, and it ends SUCCESS once, its status
// never going back; the user's events are gone and everyone else's kept.
func TestPrivacyRunnerKilled(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg, _ := config(t)
	cfg.Privacy.Settle = 8 * time.Second
	faulttest.Migrate(t, bin, cfg)
	l := faulttest.NewLoad(t, 1000, 10)
	ws := []*faulttest.Proc{
		faulttest.StartWorker(t, bin, cfg, "worker-a"),
		faulttest.StartWorker(t, bin, cfg, "worker-b"),
		faulttest.StartWorker(t, bin, cfg, "worker-c"),
	}
	if err := faulttest.Produce(context.Background(), cfg.Kafka.Brokers, cfg.Kafka.RawTopic, l.Messages, 200, 0); err != nil {
		t.Fatal(err)
	}
	faulttest.Account(t, cfg, l, 90*time.Second)

	// runner returns the index of the worker that says it runs the tasks,
	// -1 unless exactly one among those alive does.
	runner := func() int {
		who := -1
		for i, w := range ws {
			if w.Exited() {
				continue
			}
			if w.Metrics()["veil_privacy_task_runner"] == 1 {
				if who >= 0 {
					return -1
				}
				who = i
			}
		}
		return who
	}
	testsvc.Eventually(t, 30*time.Second, "exactly one runner", func() bool { return runner() >= 0 })
	first := runner()

	code, v := adminCall(t, ws[(first+1)%3], http.MethodPost, "/api/app/data-deletions/v3.0/?token=tok-shop",
		map[string]any{"distinct_ids": []string{"user-3"}, "compliance_type": "GDPR"})
	if code != 200 {
		t.Fatalf("create deletion: %d %v", code, v)
	}
	id := v["results"].(map[string]any)["task_id"].(string)
	var seen []string
	status := func(via *faulttest.Proc) string {
		_, v := adminCall(t, via, http.MethodGet, "/api/app/data-deletions/v3.0/"+id+"?token=tok-shop", nil)
		r, _ := v["results"].(map[string]any)
		st, _ := r["status"].(string)
		if len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
		}
		return st
	}
	via := ws[(first+1)%3]
	testsvc.Eventually(t, 30*time.Second, "deletion STAGING", func() bool { return status(via) == "STAGING" })
	ws[first].Kill()
	killed := time.Now()
	t.Logf("killed the runner %s (pid %d) with the deletion in STAGING", []string{"worker-a", "worker-b", "worker-c"}[first], ws[first].Pid())
	testsvc.Eventually(t, 30*time.Second, "another runner elected", func() bool { return runner() >= 0 })
	t.Logf("%s elected %s after the kill", []string{"worker-a", "worker-b", "worker-c"}[runner()], time.Since(killed).Round(100*time.Millisecond))
	testsvc.Eventually(t, 60*time.Second, "deletion SUCCESS", func() bool { return status(via) == "SUCCESS" })
	t.Logf("statuses seen: %v", seen)
	want := []string{"STAGING", "STARTED", "SUCCESS"}
	if !slices.Equal(seen, want) && !slices.Equal(seen, append([]string{"PENDING"}, want...)) {
		t.Errorf("statuses %v, want [PENDING] STAGING STARTED SUCCESS in order", seen)
	}
	conn := testsvc.Conn(t, cfg.Sink)
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Privacy.Database+".tasks WHERE task_id = ? AND status = 'SUCCESS'", id); n != 1 {
		t.Errorf("the deletion was completed %d times, want once", n)
	}
	// Exactly the kept events of every user but user-3 remain.
	var want3 int
	for i := 0; i < 1000; i++ {
		if l.Kept[fmt.Sprintf("ev-%d", i)] && i%10 == 3 {
			want3++
		}
	}
	got := testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Sink.Database+".events FINAL")
	t.Logf("events after the deletion: %d of %d (user-3 had %d)", got, len(l.Kept), want3)
	if got != uint64(len(l.Kept)-want3) {
		t.Errorf("%d events after the deletion, want %d", got, len(l.Kept)-want3)
	}
	for i, w := range ws {
		if i != first {
			w.Stop(15 * time.Second)
		}
	}
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestTooFewInSyncReplicas: topics that want all three copies in sync
// (kafka.min_insync_replicas 3) lose one broker. Once the cluster has
// dropped it from the in-sync replicas, Kafka refuses every write with
// NOT_ENOUGH_REPLICAS; the collector answers 503, each counted under
// reason="not_enough_replicas", and the clients' retries are taken once
// the broker is back in sync.
func TestTooFewInSyncReplicas(t *testing.T) {
	start := time.Now()
	bin := faulttest.Veil(t)
	cfg, c := config(t)
	cfg.Kafka.MinInsyncReplicas = 3
	faulttest.Migrate(t, bin, cfg)
	col := faulttest.StartCollector(t, bin, cfg, "collector")
	w := faulttest.StartWorker(t, bin, cfg, "worker")
	load := &faulttest.HTTPLoad{Collectors: []string{col.URL}, Token: "tok-shop", Requests: 400, PerRequest: 10,
		Senders: 4, Every: 40 * time.Millisecond, Users: 200}
	load.Start(t)
	testsvc.Eventually(t, 60*time.Second, "load flowing", func() bool { return load.Accepted() >= 100 })
	const victim = 3
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	dropped := waitDropped(t, c, cfg.Kafka.RawTopic, victim)
	testsvc.Eventually(t, 30*time.Second, "a write refused for too few in-sync replicas", func() bool {
		return col.Metrics()["veil_collector_produce_errors_total{reason="+kafkax.ReasonNotEnoughReplicas+"}"] > 0
	})
	atRestart := load.Accepted()
	if err := c.StartNode(context.Background(), victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d killed; out of the in-sync replicas %s later; started again %s after the kill, %d requests accepted by then",
		victim, dropped.Sub(killed).Round(100*time.Millisecond), time.Since(killed).Round(100*time.Millisecond), atRestart)
	if atRestart >= load.Requests {
		t.Fatalf("the load ended before the broker came back; the test proves less than it says")
	}
	r := load.Wait(t)
	faulttest.AccountHTTP(t, cfg, r, 90*time.Second)
	m := col.Metrics()
	byReason := map[string]float64{}
	for _, reason := range kafkax.Reasons {
		byReason[reason] = m["veil_collector_produce_errors_total{reason="+reason+"}"]
	}
	t.Logf("503s: %s; veil_collector_produce_errors_total by reason: %v", r.Of503(), byReason)
	if got := m["veil_collector_produce_errors_total"]; got != float64(r.Statuses["503"]) {
		t.Errorf("veil_collector_produce_errors_total = %v, want the %d answers 503", got, r.Statuses["503"])
	}
	if n := r.SentAfter(dropped.Add(time.Second)); n == 0 {
		t.Errorf("no 503 to a request sent while only two of three copies, fewer than min.insync.replicas, were in sync")
	}
	col.Stop(15 * time.Second)
	w.Stop(15 * time.Second)
	waitInSync(t, c, cfg.Kafka.RawTopic, cfg.Kafka.DLQTopic)
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}
