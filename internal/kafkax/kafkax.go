// Package kafkax holds what the collector and the worker both need from
// kafka-go: the topic settings, topic creation, and a writer whose zero-value
// pitfalls (acks=none, a one-second batch timeout) are set explicitly.
package kafkax

import (
	"context"
	"errors"
	"fmt"
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
	// Partitions and ReplicationFactor apply when Veil creates the topics.
	// Partitions bound the number of workers that can share the load.
	Partitions        int `yaml:"partitions"`
	ReplicationFactor int `yaml:"replication_factor"`
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
	case c.Partitions <= 0:
		return errors.New("kafka.partitions must be positive")
	case c.ReplicationFactor <= 0:
		return errors.New("kafka.replication_factor must be positive")
	case c.RawRetention <= 0:
		return errors.New("kafka.raw_retention must be positive")
	}
	return nil
}

// EnsureTopics creates the raw and dead-letter topics when they are missing.
// An existing topic is left as it is.
func EnsureTopics(ctx context.Context, cfg Config) error {
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second}
	retention := fmt.Sprint(cfg.RawRetention.Milliseconds())
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{
			Topic: cfg.RawTopic, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: retention}},
		},
		{Topic: cfg.DLQTopic, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor},
	}})
	if err != nil {
		return fmt.Errorf("kafka: create topics: %w", err)
	}
	for topic, terr := range resp.Errors {
		if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
			return fmt.Errorf("kafka: create topic %s: %w", topic, terr)
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

// NewWriter returns a synchronous writer to topic that waits for every
// in-sync replica (acks=all) and hashes keys to partitions, so one key's
// messages keep their order.
func NewWriter(brokers []string, topic string, wc WriterConfig, log *zap.Logger) *kafka.Writer {
	return &kafka.Writer{
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
	}
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
