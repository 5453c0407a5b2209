package kafkacluster_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/kafkax"
)

// BenchmarkProduceApache measures messages/s into the three Apache Kafka
// brokers (three copies, two in sync, acks=all, lz4): the collector's
// Producer against kafka-go's Writer as kafkax.NewWriter sets it up, with
// 16 callers at once, each writing one request's events (batch) under one
// user's key. A figure, not a test: run it alone,
//
//	go test -run '^$' -bench ProduceApache -benchtime 5s ./internal/kafkacluster/
func BenchmarkProduceApache(b *testing.B) {
	for _, batch := range []int{1, 50} {
		for _, kind := range []string{"producer", "writer"} {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, kind), func(b *testing.B) {
				kcfg := kafkaConfig(b)
				var w interface {
					WriteMessages(context.Context, ...kafka.Message) error
					Close() error
				}
				if kind == "writer" {
					w = kafkax.NewWriter(kcfg.Brokers, kcfg.RawTopic, kafkax.DefaultWriterConfig(), nil)
				} else {
					w = kafkax.NewProducer(kcfg.Brokers, kcfg.RawTopic, kafkax.DefaultProducerConfig(), nil)
				}
				defer w.Close()
				value := envelope(b, "a-user-of-the-shop", "an-insert-id-of-36-characters-000000")
				ctx := context.Background()
				// The first write reads metadata and dials; leave it out.
				if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("warm"), Value: value}); err != nil {
					b.Fatal(err)
				}
				var users atomic.Int64
				b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
				b.SetBytes(int64(batch * len(value)))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					msgs := make([]kafka.Message, batch)
					for pb.Next() {
						key := event.Key("shop", fmt.Sprint(users.Add(1)%1000))
						for i := range msgs {
							msgs[i] = kafka.Message{Key: key, Value: value}
						}
						if err := w.WriteMessages(ctx, msgs...); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}
