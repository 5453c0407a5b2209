// Package kafkax holds what the collector and the worker both need from
// kafka-go: the topic settings, topic creation, and a writer whose zero-value
// pitfalls (acks=none, a one-second batch timeout) are set explicitly.
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// Config is the kafka section of Veil's configuration.
type Config struct {
	Brokers  []string `yaml:"brokers"`
	RawTopic string   `yaml:"raw_topic"`
	DLQTopic string   `yaml:"dlq_topic"`
	// PrivacyTopic is a topic of one partition that carries no messages:
	// the workers elect the one that runs privacy tasks and retention as
	// the member of their privacy group given its partition (Election).
	PrivacyTopic string `yaml:"privacy_topic"`
	// Partitions, ReplicationFactor and MinInsyncReplicas apply when Veil
	// creates the topics. Partitions bound the number of workers that can
	// share the load.
	Partitions        int `yaml:"partitions"`
	ReplicationFactor int `yaml:"replication_factor"`
	// MinInsyncReplicas is the topics' min.insync.replicas: how many
	// copies a write must reach before Kafka acknowledges it (the
	// collector and the dead-letter writer ask for acks=all). 0 means one
	// less than ReplicationFactor, at least 1: with three copies a write
	// is on two brokers before the SDK hears "1", and one broker may be
	// down without refusing writes.
	MinInsyncReplicas int `yaml:"min_insync_replicas"`
	// RawRetention is how long raw events (which hold raw IPs and ids) stay
	// in Kafka. Keep it short: it only needs to cover worker outages.
	RawRetention time.Duration `yaml:"raw_retention"`
}

// DefaultConfig returns the Kafka defaults.
func DefaultConfig() Config {
	return Config{
		Brokers:           []string{"127.0.0.1:9092"},
		RawTopic:          "veil.events.raw",
		DLQTopic:          "veil.events.dlq",
		PrivacyTopic:      "veil.privacy",
		Partitions:        12,
		ReplicationFactor: 3,
		RawRetention:      72 * time.Hour,
	}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("kafka.brokers must list at least one broker")
	case c.RawTopic == "":
		return errors.New("kafka.raw_topic must be set")
	case c.DLQTopic == "" || c.DLQTopic == c.RawTopic:
		return errors.New("kafka.dlq_topic must be set and differ from kafka.raw_topic")
	case c.PrivacyTopic == "" || c.PrivacyTopic == c.RawTopic || c.PrivacyTopic == c.DLQTopic:
		return errors.New("kafka.privacy_topic must be set and differ from kafka.raw_topic and kafka.dlq_topic")
	case c.Partitions <= 0:
		return errors.New("kafka.partitions must be positive")
	case c.ReplicationFactor <= 0:
		return errors.New("kafka.replication_factor must be positive")
	case c.MinInsyncReplicas < 0 || c.MinInsyncReplicas > c.ReplicationFactor:
		return errors.New("kafka.min_insync_replicas must be between 0 (replication_factor - 1) and kafka.replication_factor")
	case c.RawRetention <= 0:
		return errors.New("kafka.raw_retention must be positive")
	}
	return nil
}

// MinISR is the min.insync.replicas Veil gives the topics it creates.
func (c Config) MinISR() int {
	if c.MinInsyncReplicas > 0 {
		return c.MinInsyncReplicas
	}
	return max(1, c.ReplicationFactor-1)
}

// EnsureTopics creates the raw, dead-letter and privacy topics when they are missing,
// with cfg's partitions, replication factor and min.insync.replicas, and
// returns once every broker of the cluster knows both topics and a leader
// for each of their partitions. Kafka creates topics asynchronously: a
// client that asks another broker right after CreateTopics may otherwise
// be told the topic does not exist. An existing topic is left as it is.
func EnsureTopics(ctx context.Context, cfg Config) error {
	// A transport of its own, closed on return: it leaves no connection
	// behind, and no client depends on what its cache learned.
	transport := &kafka.Transport{ClientID: "veil"}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second, Transport: transport}
	minISR := kafka.ConfigEntry{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(cfg.MinISR())}
	retention := kafka.ConfigEntry{ConfigName: "retention.ms", ConfigValue: fmt.Sprint(cfg.RawRetention.Milliseconds())}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{
			Topic: cfg.RawTopic, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor,
			ConfigEntries: []kafka.ConfigEntry{retention, minISR},
		},
		{
			Topic: cfg.DLQTopic, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor,
			ConfigEntries: []kafka.ConfigEntry{minISR},
		},
		{Topic: cfg.PrivacyTopic, NumPartitions: 1, ReplicationFactor: cfg.ReplicationFactor, ConfigEntries: []kafka.ConfigEntry{minISR}},
	}})
	if err != nil {
		return fmt.Errorf("kafka: create topics: %w", err)
	}
	for topic, terr := range resp.Errors {
		if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
			return fmt.Errorf("kafka: create topic %s: %w", topic, terr)
		}
	}
	return waitForTopics(ctx, cfg.Brokers, cfg.RawTopic, cfg.DLQTopic, cfg.PrivacyTopic)
}

// topicsTimeout bounds the wait for new topics to reach every broker; on a
// healthy cluster it takes milliseconds.
const topicsTimeout = 30 * time.Second

// waitForTopics waits until every broker the cluster lists reports each
// topic with a leader for every partition.
func waitForTopics(ctx context.Context, bootstrap []string, topics ...string) error {
	ctx, cancel := context.WithTimeout(ctx, topicsTimeout)
	defer cancel()
	dialer := &kafka.Dialer{ClientID: "veil", Timeout: 5 * time.Second}
	for {
		err := topicsEverywhere(ctx, dialer, bootstrap, topics)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: topics not known to every broker: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// topicsEverywhere asks each broker itself, on a connection of its own
// (not from a transport's cache), for the topics' partitions.
func topicsEverywhere(ctx context.Context, dialer *kafka.Dialer, bootstrap []string, topics []string) error {
	var brokers []kafka.Broker
	var err error
	for _, addr := range bootstrap {
		var conn *kafka.Conn
		if conn, err = dialer.DialContext(ctx, "tcp", addr); err != nil {
			continue
		}
		brokers, err = conn.Brokers()
		conn.Close()
		if err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	for _, b := range brokers {
		conn, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(b.Host, strconv.Itoa(b.Port)))
		if err != nil {
			return err
		}
		parts, err := conn.ReadPartitions(topics...)
		conn.Close()
		if err != nil {
			return fmt.Errorf("broker %d: %w", b.ID, err)
		}
		led := map[string]int{}
		for _, p := range parts {
			// A partition without a leader names no host.
			if p.Leader.Host == "" {
				return fmt.Errorf("broker %d: %s/%d has no leader yet", b.ID, p.Topic, p.ID)
			}
			led[p.Topic]++
		}
		for _, t := range topics {
			if led[t] == 0 {
				return fmt.Errorf("broker %d: %s has no partitions yet", b.ID, t)
			}
		}
	}
	return nil
}

// WriterConfig tunes a kafka-go Writer: the worker's dead-letter writer
// and the tests' producers. The collector has its own Producer.
type WriterConfig struct {
	// BatchTimeout is how long the writer waits to fill a batch.
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	BatchSize    int           `yaml:"batch_size"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	MaxAttempts  int           `yaml:"max_attempts"`
	// Compression as ProducerConfig's.
	Compression string `yaml:"compression"`
}

// compressions maps Compression's values to kafka-go's codecs.
var compressions = map[string]kafka.Compression{
	"none": 0, "gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4, "zstd": kafka.Zstd,
}

// DefaultWriterConfig returns the Writer defaults.
func DefaultWriterConfig() WriterConfig {
	// BatchSize 100: kafka-go sizes each batch up front and sends early only
	// when it is full, so a smaller batch sends sooner under load. Measured
	// (bench/kafka_test.go): the produce ceiling rose from 238k to 596k
	// events/s. BatchTimeout 1 ms: a write waits for its batch's timer.
	return WriterConfig{BatchTimeout: time.Millisecond, BatchSize: 100, WriteTimeout: 5 * time.Second, MaxAttempts: 3, Compression: "lz4"}
}

// Writer is a kafka-go Writer with a transport of its own. kafka-go's
// shared transport answers a Writer's metadata from a cache it refreshes
// every six seconds, so a Writer sharing it with a client that asked
// before a topic was created was told the topic does not exist; this one
// reads the cluster's metadata when it first writes, and Close leaves no
// connection or goroutine behind.
type Writer struct {
	*kafka.Writer
	transport *kafka.Transport
}

// Close flushes and closes the writer and its connections.
func (w *Writer) Close() error {
	err := w.Writer.Close()
	w.transport.CloseIdleConnections()
	return err
}

// NewWriter returns a synchronous writer to topic that waits for every
// in-sync replica (acks=all) and hashes keys to partitions, so one key's
// messages keep their order.
func NewWriter(brokers []string, topic string, wc WriterConfig, log *zap.Logger) *Writer {
	transport := &kafka.Transport{ClientID: "veil"}
	return &Writer{transport: transport, Writer: &kafka.Writer{
		Transport:    transport,
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: wc.BatchTimeout,
		BatchSize:    wc.BatchSize,
		BatchBytes:   16 << 20,
		WriteTimeout: wc.WriteTimeout,
		ReadTimeout:  wc.WriteTimeout,
		MaxAttempts:  wc.MaxAttempts,
		Compression:  compressions[wc.Compression],
		ErrorLogger:  ErrorLogger(log),
	}}
}

// ErrorLogger adapts zap to kafka-go's error logger. kafka-go's messages name
// brokers, topics and offsets, never message contents.
func ErrorLogger(log *zap.Logger) kafka.LoggerFunc {
	if log == nil {
		log = zap.NewNop()
	}
	s := log.Named("kafka").Sugar()
	return func(msg string, args ...any) {
		// An idle partition's fetch that ends without data is routine, not
		// a warning; at warn level it would drown the lines that matter.
		if strings.HasPrefix(msg, "no messages received") {
			s.Debugf(msg, args...)
			return
		}
		s.Warnf(msg, args...)
	}
}
