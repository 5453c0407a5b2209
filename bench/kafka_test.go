package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/veilhq/veil/internal/devstack"
	"github.com/veilhq/veil/internal/kafkax"
)

// produceConcurrency is the number of producing goroutines for requests of
// n events, as many as `make bench` has connections in its flat-out runs
// (16 for batches, 128 for single events): the collector writes each
// request's events with one WriteMessages call from the request's
// goroutine, and the producer groups the calls that overlap.
func produceConcurrency(n int) int {
	if n == 1 {
		return 128
	}
	return 16
}

// BenchmarkKafkaProduce is the Kafka ceiling of the collector: its
// producer alone (kafkax.NewProducer with the collector's defaults: acks=all,
// lz4, hash partitioning on the same keys, concurrent writes grouped per
// partition), writing the very envelopes the collector produces for the
// load generator's requests into the embedded broker `veil dev` runs
// (kfake, 4 partitions), from 16 goroutines (128 for single events), one
// WriteMessages per request. No HTTP, no decoding: what is left is the
// produce path.
//
//   - events=N/kfake-disk: kfake persisting to a data directory, as in
//     `veil dev`.
//   - events=N/kfake-memory: kfake in memory only.
//   - events=N/kfake-disk-writer: kafka-go's Writer instead (batches of
//     at most 100, a 1 ms batch timeout), which the collector used before
//     its own producer.
func BenchmarkKafkaProduce(b *testing.B) {
	for _, n := range benchSizes {
		reqs := envelopes(b, 4096/n, n)
		for _, v := range []struct {
			name   string
			disk   bool
			writer bool
		}{
			{"kfake-disk", true, false},
			{"kfake-memory", false, false},
			{"kfake-disk-writer", true, true},
		} {
			b.Run(fmt.Sprintf("events=%d/%s", n, v.name), func(b *testing.B) {
				brokers := startBroker(b, v.disk)
				topic := devstack.Config(brokers[0], "", b.TempDir(), devstack.Project{}).Kafka.RawTopic
				var w interface {
					WriteMessages(context.Context, ...kafka.Message) error
					Close() error
				}
				if v.writer {
					w = kafkax.NewWriter(brokers, topic, kafkax.DefaultWriterConfig(), nil)
				} else {
					w = kafkax.NewProducer(brokers, topic, kafkax.DefaultProducerConfig(), nil)
				}
				defer w.Close()
				ctx := context.Background()
				// The first write fetches metadata; leave it out.
				if err := w.WriteMessages(ctx, reqs[0]...); err != nil {
					b.Fatal(err)
				}
				var next atomic.Int64
				b.SetParallelism(max(1, produceConcurrency(n)/runtime.GOMAXPROCS(0)))
				pe := startPerEvent(b, n)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := next.Add(1)
						if err := w.WriteMessages(ctx, reqs[int(i)%len(reqs)]...); err != nil {
							b.Error(err)
							return
						}
					}
				})
				pe.report()
			})
		}
	}
}

// startBroker starts a kfake cluster as `veil dev` does, with its topics.
func startBroker(b *testing.B, disk bool) []string {
	b.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(0)}
	if disk {
		opts = append(opts, kfake.DataDir(filepath.Join(b.TempDir(), "kafka")))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := kafkax.EnsureTopics(ctx, devstack.Config(brokers[0], "", b.TempDir(), devstack.Project{}).Kafka); err != nil {
		b.Fatal(err)
	}
	return brokers
}
