// Package spoolfault_test proves the collector's spool: real `veil
// collector` and `veil worker` processes, built from this tree, while the
// Kafka broker is stopped and started again and the collector is killed,
// under a load of SDK requests (retried until accepted) and of pixels and
// beacons (sent once), with an exact accounting of every event answered
// success.
package spoolfault_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/veilhq/veil/ingest/spool"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/faulttest"
	"github.com/veilhq/veil/internal/testsvc"
)

func TestMain(m *testing.M) { os.Exit(faulttest.Main(m)) }

// broker is an embedded Kafka broker of the test's own, persisted in a
// directory, that can be stopped and started again on the same address,
// as a broker restarted by its operator.
type broker struct {
	t    *testing.T
	dir  string
	port int
	c    *kfake.Cluster
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	b := &broker{t: t, dir: t.TempDir()}
	b.start()
	_, port, err := net.SplitHostPort(b.c.ListenAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	b.port, _ = strconv.Atoi(port)
	t.Cleanup(b.stop)
	return b
}

func (b *broker) start() {
	b.t.Helper()
	var err error
	for range 50 { // the port may take a moment to be free again
		b.c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(b.port), kfake.DataDir(b.dir),
			kfake.DefaultNumPartitions(4), kfake.GroupMinSessionTimeout(500*time.Millisecond))
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("starting the broker: %v", err)
}

func (b *broker) stop() {
	if b.c != nil {
		b.c.Close()
		b.c = nil
	}
}

func (b *broker) addrs() []string {
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))}
}

// setup starts a broker, migrates, and returns a configuration with the
// spool on, a worker running, and the veil binary.
func setup(t *testing.T, edit func(*spool.Config)) (app.Config, *broker, string) {
	t.Helper()
	b := startBroker(t)
	cfg := faulttest.Config(t, testsvc.ClickHouse(t))
	// The package's own one-broker Kafka, which the tests stop and start:
	// one replica, whatever the shared Kafka has (VEIL_TEST_KAFKA).
	cfg.Kafka.Brokers = b.addrs()
	cfg.Kafka.ReplicationFactor, cfg.Kafka.MinInsyncReplicas = 1, 1
	cfg.Collector.Spool.Dir = filepath.Join(t.TempDir(), "spool")
	if edit != nil {
		edit(&cfg.Collector.Spool)
	}
	bin := faulttest.Veil(t)
	faulttest.Migrate(t, bin, cfg)
	faulttest.StartWorker(t, bin, cfg, "worker")
	return cfg, b, bin
}

// spoolFigures are a collector's spool metrics.
func spoolFigures(m map[string]float64) string {
	return fmt.Sprintf("spooled %v (deadline %v, kafka_error %v, behind %v), replayed %v, refused %v (full %v, too_old %v), held %v events in %v bytes; produce errors %v",
		m["veil_collector_spool_spooled_events_total"],
		m["veil_collector_spool_spooled_events_total{reason=deadline}"], m["veil_collector_spool_spooled_events_total{reason=kafka_error}"],
		m["veil_collector_spool_spooled_events_total{reason=behind}"], m["veil_collector_spool_replayed_events_total"],
		m["veil_collector_spool_refused_events_total"], m["veil_collector_spool_refused_events_total{reason=full}"],
		m["veil_collector_spool_refused_events_total{reason=too_old}"], m["veil_collector_spool_events"], m["veil_collector_spool_bytes"],
		m["veil_collector_produce_errors_total"])
}

// waitSpoolEmpty waits until the collector has replayed everything it
// spooled.
func waitSpoolEmpty(t *testing.T, c *faulttest.Proc, timeout time.Duration) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := c.Metrics()
		if m != nil && m["veil_collector_spool_events"] == 0 && m["veil_collector_spool_bytes"] == 0 {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spool did not drain within %s: %s", timeout, spoolFigures(m))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The broker stopped for 30 s under load: every request is answered
// success (pixels and beacons included, which would otherwise be lost),
// and every event answered success is stored exactly once after FINAL.
func TestBrokerStoppedUnderLoad(t *testing.T) {
	cfg, b, bin := setup(t, nil)
	c := faulttest.StartCollector(t, bin, cfg, "collector")
	load := &faulttest.MixedLoad{Token: "tok-shop", Requests: 3000, PerRequest: 1, Senders: 6, Every: 100 * time.Millisecond, Users: 50}
	load.SetCollector(c.URL)
	load.Start(t)
	time.Sleep(8 * time.Second)
	before := load.Snapshot()
	b.stop()
	stopped := time.Now()
	time.Sleep(30 * time.Second)
	during := load.Snapshot() - before
	atStop := c.Metrics()
	b.start()
	t.Logf("figures: broker stopped for %s; %d requests answered success while it was; at its restart: %s",
		time.Since(stopped).Round(100*time.Millisecond), during, spoolFigures(atStop))
	r := load.Wait(t)
	m := waitSpoolEmpty(t, c, 2*time.Minute)
	t.Logf("figures: after the load: %s", spoolFigures(m))
	faulttest.AccountMixed(t, cfg, r, 3*time.Minute)
	if len(r.Unaccepted) != 0 {
		t.Errorf("%d pixel and beacon events were not accepted: the spool had room for all", len(r.Unaccepted))
	}
	if during == 0 || atStop["veil_collector_spool_spooled_events_total"] == 0 {
		t.Errorf("no request was accepted while the broker was stopped (%d), or none spooled", during)
	}
	if m["veil_collector_spool_replayed_events_total"] != m["veil_collector_spool_spooled_events_total"] {
		t.Errorf("replayed %v of %v spooled events", m["veil_collector_spool_replayed_events_total"], m["veil_collector_spool_spooled_events_total"])
	}
	if m["veil_collector_spool_refused_events_total"] != 0 {
		t.Errorf("the spool refused %v events", m["veil_collector_spool_refused_events_total"])
	}
}

// The collector killed with SIGKILL while its spool holds events, and
// started again on the same spool: they are replayed, none lost, none
// doubled.
func TestCollectorKilledWithSpoolHeld(t *testing.T) {
	cfg, b, bin := setup(t, nil)
	c := faulttest.StartCollector(t, bin, cfg, "collector")
	b.stop()
	first := &faulttest.MixedLoad{Token: "tok-shop", Requests: 600, PerRequest: 1, Senders: 6, Every: 10 * time.Millisecond, Users: 50, Prefix: "a-"}
	first.SetCollector(c.URL)
	first.Start(t)
	r := first.Wait(t)
	held := c.Metrics()
	t.Logf("figures: before the kill: %s", spoolFigures(held))
	if held["veil_collector_spool_events"] != float64(len(r.Accepted)) || len(r.Unaccepted) != 0 {
		t.Fatalf("the spool holds %v events; %d were accepted and %d not", held["veil_collector_spool_events"], len(r.Accepted), len(r.Unaccepted))
	}
	c.Kill()
	b.start()
	c2 := faulttest.StartCollector(t, bin, cfg, "collector-restarted")
	m := waitSpoolEmpty(t, c2, 2*time.Minute)
	t.Logf("figures: after the restart: %s", spoolFigures(m))
	if m["veil_collector_spool_replayed_events_total"] < float64(len(r.Accepted)) {
		t.Errorf("the restarted collector replayed %v events, want the %d spooled before the kill", m["veil_collector_spool_replayed_events_total"], len(r.Accepted))
	}
	// The restarted collector serves as before.
	second := &faulttest.MixedLoad{Token: "tok-shop", Requests: 300, PerRequest: 1, Senders: 3, Every: 10 * time.Millisecond, Users: 50, Prefix: "b-"}
	second.SetCollector(c2.URL)
	second.Start(t)
	r = r.Merge(second.Wait(t))
	faulttest.AccountMixed(t, cfg, r, 3*time.Minute)
}

// The spool full while the broker is stopped: requests are answered 503
// as without a spool (the SDKs' are sent again, pixels and beacons are
// lost to their clients), and nothing answered success is lost.
func TestSpoolFull(t *testing.T) {
	cfg, b, bin := setup(t, func(c *spool.Config) {
		c.MaxBytes = 64 << 10
		c.SegmentBytes = 16 << 10
	})
	c := faulttest.StartCollector(t, bin, cfg, "collector")
	b.stop()
	load := &faulttest.MixedLoad{Token: "tok-shop", Requests: 900, PerRequest: 1, Senders: 6, Every: 10 * time.Millisecond, Users: 50}
	load.SetCollector(c.URL)
	load.Start(t)
	testsvc.Eventually(t, time.Minute, "the spool to refuse", func() bool {
		return c.Metrics()["veil_collector_spool_refused_events_total{reason=full}"] > 0
	})
	time.Sleep(5 * time.Second)
	full := c.Metrics()
	b.start()
	r := load.Wait(t)
	m := waitSpoolEmpty(t, c, 2*time.Minute)
	t.Logf("figures: when full: %s; after: %s", spoolFigures(full), spoolFigures(m))
	faulttest.AccountMixed(t, cfg, r, 3*time.Minute)
	if len(r.Unaccepted) == 0 || r.Statuses[faulttest.KindSDK]["503"] == 0 {
		t.Errorf("no pixel or beacon lost (%d), or no SDK request answered 503 (%v): the spool was never full", len(r.Unaccepted), r.Statuses)
	}
	if full["veil_collector_spool_bytes"] > 64<<10 {
		t.Errorf("the spool held %v bytes, more than its max_bytes", full["veil_collector_spool_bytes"])
	}
}

// A produce request the broker answers only after the spool's deadline
// (2 s) but stores all the same: the collector gave up on it and spooled
// its events, and the replay stores them a second time in Kafka. The
// duplicates are the same envelopes, and every event answered success is
// stored exactly once after FINAL.
func TestLateAcknowledgementIsFolded(t *testing.T) {
	cfg, b, bin := setup(t, nil)
	c := faulttest.StartCollector(t, bin, cfg, "collector")
	warm := &faulttest.MixedLoad{Token: "tok-shop", Requests: 30, PerRequest: 1, Senders: 3, Every: 10 * time.Millisecond, Users: 50, Prefix: "warm-"}
	warm.SetCollector(c.URL)
	warm.Start(t)
	r := warm.Wait(t)
	// The next two produce requests are answered 3 s late, then stored.
	// (kfake runs the control function again on a request it woke, hence
	// the memory of those already slowed.) Whether the broker still stores
	// a request whose producer has given up on it depends on timing, so
	// the round is repeated, up to three times, until one was stored twice.
	var m map[string]float64
	var inKafka int64
	for round := 1; round <= 3; round++ {
		var slowed atomic.Int32
		var seen sync.Map
		b.c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
			b.c.KeepControl()
			if _, again := seen.LoadOrStore(req, true); !again && slowed.Add(1) <= 2 {
				b.c.SleepControl(func() { time.Sleep(3 * time.Second) })
			}
			return nil, nil, false
		})
		load := &faulttest.MixedLoad{Token: "tok-shop", Requests: 300, PerRequest: 1, Senders: 6, Every: 20 * time.Millisecond, Users: 50, Prefix: fmt.Sprintf("late%d-", round)}
		load.SetCollector(c.URL)
		load.Start(t)
		r = r.Merge(load.Wait(t))
		m = waitSpoolEmpty(t, c, 2*time.Minute)
		inKafka = topicMessages(t, cfg.Kafka.Brokers, cfg.Kafka.RawTopic, cfg.Kafka.Partitions)
		t.Logf("figures: round %d: %d events answered success, %d messages in the raw topic; %s", round, len(r.Accepted), inKafka, spoolFigures(m))
		if inKafka > int64(len(r.Accepted)) {
			break
		}
	}
	if m["veil_collector_spool_spooled_events_total{reason=deadline}"] == 0 {
		t.Fatal("no write passed the spool's deadline: the test proves nothing")
	}
	if inKafka <= int64(len(r.Accepted)) {
		t.Errorf("the raw topic holds %d messages for %d events: no late write was stored twice in three rounds, the test proves nothing", inKafka, len(r.Accepted))
	}
	faulttest.AccountMixed(t, cfg, r, 3*time.Minute)
}

// topicMessages is the number of messages in topic: the sum of its
// partitions' last offsets.
func topicMessages(t *testing.T, brokers []string, topic string, partitions int) int64 {
	t.Helper()
	var n int64
	for p := range partitions {
		conn, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		n += last
	}
	return n
}
