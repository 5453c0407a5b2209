package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/ingest/spool"
	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/internal/keyfile"
	"github.com/veilhq/veil/internal/seal"
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
	// Every write is taken at once and, as kafka-go's synchronous writer
	// and Veil's producer, kept nothing of: the collector reuses the
	// messages' memory as it does in production.
	benchTrack(b, func(*testing.B) ingest.Producer { return &kafkatest.Producer{Discard: true, Releases: true} })
}

// BenchmarkCollectorTrackSpool is BenchmarkCollectorTrack with the spool
// configured in front of the producer (collector.spool.dir in a temporary
// directory) and Kafka healthy: every write is taken before the spool's
// deadline, so the spool stays empty and what is measured is its cost on
// the way through (an atomic load and the deadline's context per request).
func BenchmarkCollectorTrackSpool(b *testing.B) {
	benchTrack(b, func(b *testing.B) ingest.Producer {
		cfg := spool.DefaultConfig()
		cfg.Dir = filepath.Join(b.TempDir(), "spool")
		sp, err := spool.Open(cfg, &kafkatest.Producer{Discard: true, Releases: true}, ingest.DefaultConfig().ProduceTimeout, spool.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if r, _, _ := sp.Held(); r != 0 {
				b.Errorf("%d requests spooled with Kafka healthy", r)
			}
			sp.Close()
		})
		return sp
	})
}

// BenchmarkCollectorTrackSealed is BenchmarkCollectorTrack with the
// envelopes sealed (seal.key_file) and keyed by the routing hash: what
// sealing costs the collector's handler, the broker's share excluded.
func BenchmarkCollectorTrackSealed(b *testing.B) {
	benchTrack(b, func(b *testing.B) ingest.Producer {
		r, err := seal.NewRing([]keyfile.Key{{Epoch: 1, Secret: make([]byte, seal.MinKeyLen)}})
		if err != nil {
			b.Fatal(err)
		}
		keys, err := seal.FromRing(r, 0)
		if err != nil {
			b.Fatal(err)
		}
		return &seal.Producer{Keys: keys, Next: &kafkatest.Producer{Discard: true, Releases: true}}
	})
}

// benchTrack runs one /track request after another through a collector
// writing to the producer newProducer makes, by request size.
func benchTrack(b *testing.B, newProducer func(*testing.B) ingest.Producer) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			reqs := loadgen.Requests(1, 256, n, benchToken)
			size := 0
			for _, r := range reqs {
				size += len(r.Body)
			}
			h := newCollector(b, newProducer(b))
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
