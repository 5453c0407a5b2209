package bench

import (
	"context"
	"testing"
	"time"

	"github.com/pierrec/lz4/v4"

	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/internal/seal"
)

// BenchmarkRawTopicBytes measures what one mixpanel-browser request of 50
// events (the collector's own envelopes of load-generator traffic) costs
// the raw topic in bytes, and the collector in time, three ways:
//
//   - plain-lz4: unsealed envelopes, compressed by Kafka's lz4 as one
//     record batch (here: their keys and values as one LZ4 block, which
//     leaves out the batch's record headers);
//   - sealed-alone: each envelope sealed by itself, as Veil did before
//     frames, which nothing compresses afterwards, with its routing key;
//   - frame: the request's envelopes of one user compressed and sealed as
//     one frame (seal.Producer), as the collector writes them.
//
// kafka-B/event is the bytes handed to Kafka per event (keys and values).
func BenchmarkRawTopicBytes(b *testing.B) {
	reqs := envelopes(b, 64, 50)
	keys := benchSealKeys(b)
	now := time.Now()
	run := func(b *testing.B, one func(i int) int) {
		bytes, events := 0, 0
		i := 0
		for b.Loop() {
			bytes += one(i % len(reqs))
			events += len(reqs[i%len(reqs)])
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
		b.ReportMetric(float64(bytes)/float64(events), "kafka-B/event")
	}
	b.Run("plain-lz4", func(b *testing.B) {
		var c lz4.Compressor
		var raw, out []byte
		run(b, func(i int) int {
			raw = raw[:0]
			for _, m := range reqs[i] {
				raw = append(raw, m.Key...)
				raw = append(raw, m.Value...)
			}
			if need := lz4.CompressBlockBound(len(raw)); cap(out) < need {
				out = make([]byte, need)
			}
			n, err := c.CompressBlock(raw, out[:cap(out)])
			if err != nil || n == 0 {
				b.Fatal("not compressed", err)
			}
			return n
		})
	})
	b.Run("sealed-alone", func(b *testing.B) {
		var buf []byte
		run(b, func(i int) int {
			n := 0
			for _, m := range reqs[i] {
				buf = keys.Route(buf[:0], m.Key)
				buf = keys.Seal(buf, m.Value, now)
				n += len(buf)
			}
			return n
		})
	})
	b.Run("frame", func(b *testing.B) {
		next := &kafkatest.Producer{Copy: true, Releases: true}
		p := &seal.Producer{Keys: keys, Next: next}
		run(b, func(i int) int {
			next.Reset()
			if err := p.WriteMessages(context.Background(), reqs[i]...); err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, m := range next.Messages() {
				n += len(m.Key) + len(m.Value)
			}
			return n
		})
	})
}
