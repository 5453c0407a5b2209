package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/loadgen"
)

// BenchmarkCollectorTrack measures one /track request through the
// collector's handler, Kafka excluded (a producer that takes every write at
// once): reading the form, base64, splitting and validating the events,
// normalising them and writing their envelopes. The request and recorder
// of net/http/httptest are inside the loop, the network is not.
//
//   - events=1: a single-event request.
//   - events=50: mixpanel-browser's batch; ns/event is the per-event cost.
func BenchmarkCollectorTrack(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			reqs := loadgen.Requests(1, 256, n, benchToken)
			size := 0
			for _, r := range reqs {
				size += len(r.Body)
			}
			// Every write is taken at once and, as kafka-go's synchronous
			// writer and Veil's producer, kept nothing of: the collector
			// reuses the messages' memory as it does in production.
			h := newCollector(b, &kafkatest.Producer{Discard: true, Releases: true})
			b.SetBytes(int64(size / len(reqs)))
			i := 0
			pe := startPerEvent(b, n)
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, trackRequest(reqs[i%len(reqs)]))
				if w.Code != http.StatusOK {
					b.Fatalf("status %d %s", w.Code, w.Body)
				}
				i++
			}
			pe.report()
		})
	}
}

// BenchmarkEnvelope measures event.MarshalEnvelope, the reference encoding
// of one event's envelope (reflection-based). The collector's hot path
// writes the same bytes with a specialised writer whose cost is part of
// BenchmarkCollectorTrack; this is what that writer saves against.
func BenchmarkEnvelope(b *testing.B) {
	var envs []event.Envelope
	for _, req := range envelopes(b, 20, 50) {
		for _, m := range req {
			var env event.Envelope
			if err := json.Unmarshal(m.Value, &env); err != nil {
				b.Fatal(err)
			}
			envs = append(envs, env)
		}
	}
	size := 0
	for i := range envs {
		v, _ := event.MarshalEnvelope(&envs[i])
		size += len(v)
	}
	b.SetBytes(int64(size / len(envs)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := event.MarshalEnvelope(&envs[i%len(envs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
