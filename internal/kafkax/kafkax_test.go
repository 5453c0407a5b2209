package kafkax

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestConfigValidateReplication(t *testing.T) {
	for _, tc := range []struct {
		rf, minISR int
		want       string // "" for valid
		wantISR    int
	}{
		{rf: 3, minISR: 0, wantISR: 2},
		{rf: 3, minISR: 2, wantISR: 2},
		{rf: 3, minISR: 3, wantISR: 3},
		{rf: 1, minISR: 0, wantISR: 1},
		{rf: 2, minISR: 0, wantISR: 1},
		{rf: 1, minISR: 2, want: "kafka.min_insync_replicas must be between 0 (replication_factor - 1) and kafka.replication_factor"},
		{rf: 3, minISR: -1, want: "kafka.min_insync_replicas must be between 0 (replication_factor - 1) and kafka.replication_factor"},
		{rf: 0, minISR: 0, want: "kafka.replication_factor must be positive"},
	} {
		t.Run(fmt.Sprintf("rf=%d/min_isr=%d", tc.rf, tc.minISR), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ReplicationFactor, cfg.MinInsyncReplicas = tc.rf, tc.minISR
			err := cfg.Validate()
			if tc.want != "" {
				if err == nil || err.Error() != tc.want {
					t.Fatalf("Validate() = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.MinISR(); got != tc.wantISR {
				t.Fatalf("MinISR() = %d, want %d", got, tc.wantISR)
			}
		})
	}
}

// topicConfig returns a topic's setting as the broker reports it.
func topicConfig(t *testing.T, brokers []string, topic, name string) string {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := c.DescribeConfigs(context.Background(), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{name}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Resources {
		for _, e := range r.ConfigEntries {
			if e.ConfigName == name {
				return e.ConfigValue
			}
		}
	}
	t.Fatalf("%s: no %s", topic, name)
	return ""
}

// TestEnsureTopicsSetsMinInsyncReplicas: every topic gets the configured
// min.insync.replicas, the raw topic its retention, and the privacy topic
// one partition.
func TestEnsureTopicsSetsMinInsyncReplicas(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.RawTopic, cfg.DLQTopic = fmt.Sprintf("raw%d", topics.Add(1)), fmt.Sprintf("dlq%d", topics.Add(1))
	cfg.PrivacyTopic = fmt.Sprintf("privacy%d", topics.Add(1))
	cfg.Partitions, cfg.ReplicationFactor, cfg.MinInsyncReplicas = 2, 1, 1
	if err := EnsureTopics(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ topic, name, want string }{
		{cfg.RawTopic, "min.insync.replicas", "1"},
		{cfg.DLQTopic, "min.insync.replicas", "1"},
		{cfg.PrivacyTopic, "min.insync.replicas", "1"},
		{cfg.RawTopic, "retention.ms", fmt.Sprint(cfg.RawRetention.Milliseconds())},
	} {
		if got := topicConfig(t, cfg.Brokers, c.topic, c.name); got != c.want {
			t.Errorf("%s %s = %s, want %s", c.topic, c.name, got, c.want)
		}
	}
	conn, err := kafka.Dial("tcp", cfg.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(cfg.PrivacyTopic)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 {
		t.Errorf("%s has %d partitions, want 1: the election gives its one partition to one worker", cfg.PrivacyTopic, len(parts))
	}
}

// createElsewhere creates a topic the way another process (`veil
// migrate`) would: with a client and connections of its own.
func createElsewhere(t *testing.T, topic string, partitions int) {
	t.Helper()
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(cluster.ListenAddrs()...), Transport: transport}
	res, err := c.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestClientsSeeTopicsCreatedElsewhere: a topic created by another
// client is written to at once, by the collector's producer that was
// told a moment before that it did not exist, and by a Writer in a
// process whose other writers had read the cluster's metadata before.
func TestClientsSeeTopicsCreatedElsewhere(t *testing.T) {
	ctx := context.Background()
	t.Run("producer", func(t *testing.T) {
		topic := fmt.Sprintf("later%d", topics.Add(1))
		p := testProducer(t, topic, DefaultProducerConfig())
		if err := p.WriteMessages(ctx, messages("k", "early")...); err == nil {
			t.Fatal("a write to a topic that does not exist succeeded")
		}
		createElsewhere(t, topic, 1)
		if err := p.WriteMessages(ctx, messages("k", "v")...); err != nil {
			t.Fatalf("write right after the topic was created: %v", err)
		}
		if got := readAll(t, topic, 0); fmt.Sprint(got) != "[v]" {
			t.Fatalf("stored %v", got)
		}
	})
	t.Run("writer", func(t *testing.T) {
		first := newTopic(t, 1)
		w1 := NewWriter(cluster.ListenAddrs(), first, DefaultWriterConfig(), nil)
		defer w1.Close()
		if err := w1.WriteMessages(ctx, messages("k", "a")...); err != nil {
			t.Fatal(err)
		}
		topic := fmt.Sprintf("later%d", topics.Add(1))
		createElsewhere(t, topic, 1)
		w2 := NewWriter(cluster.ListenAddrs(), topic, DefaultWriterConfig(), nil)
		defer w2.Close()
		if err := w2.WriteMessages(ctx, messages("k", "b")...); err != nil {
			t.Fatalf("write right after the topic was created: %v", err)
		}
		if got := readAll(t, topic, 0); fmt.Sprint(got) != "[b]" {
			t.Fatalf("stored %v", got)
		}
	})
}

// TestProducerBatchesFitTheBroker: writes of a thousand records of about
// a KiB, which do not compress, are stored whole at the broker's default
// message.max.bytes with max_batch_bytes at its default (a batch's
// framing counted), and on a topic whose max.message.bytes is lower than
// max_batch_bytes (the batch is sent again in halves).
func TestProducerBatchesFitTheBroker(t *testing.T) {
	for _, tc := range []struct {
		name        string
		compression string
		topicMax    string // "" for the broker's default
	}{
		{"none/default-limit", "none", ""},
		{"lz4/default-limit", "lz4", ""},
		{"none/topic-limit-100k", "none", "100000"},
		{"zstd/topic-limit-100k", "zstd", "100000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := fmt.Sprintf("big%d", topics.Add(1))
			tcfg := kafka.TopicConfig{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}
			if tc.topicMax != "" {
				tcfg.ConfigEntries = []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: tc.topicMax}}
			}
			c := &kafka.Client{Addr: kafka.TCP(cluster.ListenAddrs()...)}
			res, err := c.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tcfg}})
			if err == nil {
				err = res.Errors[topic]
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg := DefaultProducerConfig()
			cfg.Compression = tc.compression
			p := testProducer(t, topic, cfg)
			msgs := make([]kafka.Message, 1000)
			for i := range msgs {
				v := make([]byte, 1040)
				_, _ = rand.Read(v)
				msgs[i] = kafka.Message{Key: []byte("k"), Value: v}
			}
			if err := p.WriteMessages(context.Background(), msgs...); err != nil {
				t.Fatal(err)
			}
			if got := len(readAll(t, topic, 0)); got != len(msgs) {
				t.Fatalf("stored %d messages, want %d", got, len(msgs))
			}
		})
	}
}

func TestConfigValidateTopics(t *testing.T) {
	const want = "kafka.privacy_topic must be set and differ from kafka.raw_topic and kafka.dlq_topic"
	for _, tc := range []struct {
		name, privacy, err string
	}{
		{"default", "veil.privacy", ""},
		{"empty", "", want},
		{"the raw topic", "veil.events.raw", want},
		{"the dead-letter topic", "veil.events.dlq", want},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.PrivacyTopic = tc.privacy
			err := cfg.Validate()
			if (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
				t.Fatalf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
}
