package kafkacluster_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sync/errgroup"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/sink"
	"github.com/veilhq/veil/worker"
)

// kafkaConfig returns Veil's Kafka configuration for the shared cluster,
// with topics of the test's own: three copies of each partition, two of
// them in sync before a write is acknowledged.
func kafkaConfig(t testing.TB) kafkax.Config {
	t.Helper()
	cfg := kafkax.DefaultConfig()
	cfg.Brokers = cluster(t).Brokers()
	cfg.RawTopic = testsvc.Unique(t, "raw")
	cfg.DLQTopic = testsvc.Unique(t, "dlq")
	cfg.Partitions, cfg.ReplicationFactor, cfg.MinInsyncReplicas = 4, 3, 2
	if err := kafkax.EnsureTopics(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTopicsAreReplicated: the topics Veil creates have three replicas,
// all in sync, on every broker's word, and min.insync.replicas 2.
func TestTopicsAreReplicated(t *testing.T) {
	cfg := kafkaConfig(t)
	for _, addr := range cfg.Brokers {
		conn, err := kafka.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		parts, err := conn.ReadPartitions(cfg.RawTopic, cfg.DLQTopic)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) != 2*cfg.Partitions {
			t.Fatalf("broker %s: %d partitions, want %d", addr, len(parts), 2*cfg.Partitions)
		}
		for _, p := range parts {
			if len(p.Replicas) != 3 || len(p.Isr) != 3 {
				t.Fatalf("broker %s: %s/%d has replicas %v, in sync %v", addr, p.Topic, p.ID, p.Replicas, p.Isr)
			}
		}
	}
	c := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: &kafka.Transport{}}
	defer c.Transport.(*kafka.Transport).CloseIdleConnections()
	res, err := c.DescribeConfigs(context.Background(), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: cfg.RawTopic, ConfigNames: []string{"min.insync.replicas"}},
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: cfg.DLQTopic, ConfigNames: []string{"min.insync.replicas"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Resources {
		if len(r.ConfigEntries) != 1 || r.ConfigEntries[0].ConfigValue != "2" {
			t.Fatalf("%s: min.insync.replicas %+v, want 2", r.ResourceName, r.ConfigEntries)
		}
	}
}

func envelope(t testing.TB, id, insertID string) []byte {
	t.Helper()
	obj, _ := json.Marshal(map[string]any{"event": "delivered", "properties": map[string]any{
		"distinct_id": id, "time": time.Now().UnixMilli(), "$insert_id": insertID,
	}})
	b, err := event.MarshalEnvelope(&event.Envelope{Version: event.EnvelopeVersion, Kind: event.KindTrack, Project: "shop",
		Endpoint: "/track", ReceivedAt: time.Now().UnixMilli(), Event: obj})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startWorker runs one member of group until the returned stop is called.
func startWorker(t *testing.T, kcfg kafkax.Config, scfg sink.Config, group string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := sink.Open(ctx, scfg, sink.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	wcfg := worker.DefaultConfig()
	wcfg.GroupID = group
	w, err := worker.New(wcfg, kcfg, worker.Deps{Logger: zaptest.NewLogger(t), Metrics: prometheus.NewRegistry(), Sink: s})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
		s.Close()
	}
}

// committedLag returns the messages of topic the group has not committed.
func committedLag(t *testing.T, brokers []string, group, topic string, partitions int) int64 {
	t.Helper()
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport, Timeout: 5 * time.Second}
	ctx := context.Background()
	var reqs []kafka.OffsetRequest
	var ids []int
	for p := range partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
		ids = append(ids, p)
	}
	lo, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	of, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ids}})
	if err != nil {
		t.Fatal(err)
	}
	committed := map[int]int64{}
	for _, p := range of.Topics[topic] {
		committed[p.Partition] = max(0, p.CommittedOffset)
	}
	var lag int64
	for _, p := range lo.Topics[topic] {
		lag += p.LastOffset - committed[p.Partition]
	}
	return lag
}

// TestDeliveredExactlyOnce: the collector's producer writes events with
// acks=all from many concurrent requests into topics of three replicas,
// two workers of one group read them, and each event is one row in
// ClickHouse; the group's offsets cover every message.
func TestDeliveredExactlyOnce(t *testing.T) {
	const requests, perRequest = 60, 25
	kcfg := kafkaConfig(t)
	scfg := testsvc.SinkConfig(t)
	{
		s, err := sink.Open(context.Background(), scfg, sink.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Migrate(context.Background())
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	group := testsvc.Unique(t, "group")
	stop1 := startWorker(t, kcfg, scfg, group)
	stop2 := startWorker(t, kcfg, scfg, group)

	p := kafkax.NewProducer(kcfg.Brokers, kcfg.RawTopic, kafkax.DefaultProducerConfig(), nil)
	var g errgroup.Group
	for r := range requests {
		g.Go(func() error {
			id := fmt.Sprintf("user-%d", r)
			msgs := make([]kafka.Message, perRequest)
			for i := range msgs {
				msgs[i] = kafka.Message{Key: event.Key("shop", id), Value: envelope(t, id, fmt.Sprintf("%d-%d", r, i))}
			}
			return p.WriteMessages(context.Background(), msgs...)
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	_ = p.Close()

	conn := testsvc.Conn(t, scfg)
	q := "SELECT count() FROM " + scfg.Database + ".events"
	testsvc.Eventually(t, 60*time.Second, "every event stored", func() bool { return testsvc.Count(t, conn, q) >= requests*perRequest })
	testsvc.Eventually(t, 30*time.Second, "every offset committed", func() bool {
		return committedLag(t, kcfg.Brokers, group, kcfg.RawTopic, kcfg.Partitions) == 0
	})
	stop1()
	stop2()
	if n := testsvc.Count(t, conn, q); n != requests*perRequest {
		t.Fatalf("%d rows, want %d", n, requests*perRequest)
	}
	if n := testsvc.Count(t, conn, "SELECT uniqExact(insert_id) FROM "+scfg.Database+".events"); n != requests*perRequest {
		t.Fatalf("%d distinct insert ids, want %d", n, requests*perRequest)
	}
}

// TestProducerFillsBatchesToTheBrokerLimit: writes of a thousand events
// of about a KiB that do not compress are stored whole by Apache Kafka at
// its default message.max.bytes, whatever the compression.
func TestProducerFillsBatchesToTheBrokerLimit(t *testing.T) {
	kcfg := kafkaConfig(t)
	for _, compression := range []string{"none", "lz4"} {
		t.Run(compression, func(t *testing.T) {
			pcfg := kafkax.DefaultProducerConfig()
			pcfg.Compression = compression
			p := kafkax.NewProducer(kcfg.Brokers, kcfg.RawTopic, pcfg, nil)
			defer p.Close()
			msgs := make([]kafka.Message, 1000)
			for i := range msgs {
				v := make([]byte, 1040)
				_, _ = rand.Read(v)
				msgs[i] = kafka.Message{Key: []byte("one-user"), Value: v}
			}
			if err := p.WriteMessages(context.Background(), msgs...); err != nil {
				t.Fatal(err)
			}
		})
	}
}
