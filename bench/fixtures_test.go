package bench

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/enrich/geo/geotest"
	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/loadgen"
)

// The pipeline benchmarks run on the load generator's payloads
// (mixpanel-browser batches of 14 to 30 properties, see loadgen), so that
// the per-stage costs here and the throughput `veil-loadgen` measures
// describe the same events.

const benchToken = "tok-shop"

// benchSizes are the request sizes measured: a single-event request and
// mixpanel-browser's batch of 50.
var benchSizes = []int{1, 50}

// newCollector returns the collector's handler, producing to p. It trusts
// loopback as a proxy, as a collector behind a load balancer trusts the
// balancer, so the client address comes from X-Forwarded-For.
func newCollector(tb testing.TB, p ingest.Producer) http.Handler {
	tb.Helper()
	cfg := ingest.DefaultConfig()
	cfg.Projects = []ingest.Project{{Name: "shop", Token: benchToken}}
	cfg.TrustedProxies = []string{"127.0.0.0/8"}
	c, err := ingest.New(cfg, "veil.events.raw", ingest.Deps{Producer: p, Metrics: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	return c.Handler()
}

// trackRequest is req as mixpanel-browser sends it.
func trackRequest(req loadgen.Request) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/track/?verbose=1&ip=1&_=1795348800000", bytes.NewReader(req.Body))
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("User-Agent", req.UserAgent)
	r.Header.Set("X-Forwarded-For", req.ForwardedFor)
	r.Header.Set("Origin", "https://shop.example.com")
	return r
}

// envelopes returns the Kafka messages the collector produces for n
// requests of batch events, one slice per request.
func envelopes(tb testing.TB, n, batch int) [][]kafka.Message {
	tb.Helper()
	p := &kafkatest.Producer{} // keeps the messages: no memory is reused
	h := newCollector(tb, p)
	out := make([][]kafka.Message, 0, n)
	for _, req := range loadgen.Requests(2, n, batch, benchToken) {
		before := p.Len()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, trackRequest(req))
		if w.Code != http.StatusOK || w.Body.String() != `{"status":1,"error":null}` {
			tb.Fatalf("collector answered %d %s", w.Code, w.Body)
		}
		out = append(out, p.Messages()[before:])
	}
	return out
}

// docGeoDB writes a GeoIP2 City database covering the documentation
// ranges the load generator's addresses come from, so every lookup hits.
func docGeoDB(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "GeoLite2-City.mmdb")
	var recs []geotest.Record
	for i := range 256 {
		recs = append(recs,
			geotest.Record{Network: fmt.Sprintf("192.0.2.%d/32", i), CountryCode: "DE", Region: "Bavaria", City: fmt.Sprintf("Town %d", i)},
			geotest.Record{Network: fmt.Sprintf("198.51.100.%d/32", i), CountryCode: "FR", Region: "Île-de-France", City: fmt.Sprintf("Ville %d", i)},
			geotest.Record{Network: fmt.Sprintf("203.0.113.%d/32", i), CountryCode: "US", Region: "California", City: fmt.Sprintf("City %d", i)},
		)
	}
	recs = append(recs, geotest.Record{Network: "2001:db8::/32", CountryCode: "NL", Region: "North Holland", City: "Amsterdam"})
	geotest.Write(tb, path, geotest.Spec{Layout: geotest.GeoIP2, Records: recs})
	return path
}

// perEvent reports a benchmark's figures per event, for sub-benchmarks
// that handle several events per operation. Start it right before the
// timed loop and call report right after.
//
// Besides wall time it reports the process's CPU time per event
// (cpu-ns/event, from getrusage: every thread, the garbage collector's
// included), which stays meaningful when other work shares the machine
// and stretches the wall time.
type perEvent struct {
	b      *testing.B
	events int
	m0     runtime.MemStats
	cpu0   time.Duration
}

func startPerEvent(b *testing.B, events int) *perEvent {
	p := &perEvent{b: b, events: events}
	b.ReportAllocs()
	runtime.ReadMemStats(&p.m0)
	p.cpu0 = processCPU()
	return p
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (p *perEvent) report() {
	cpu := processCPU() - p.cpu0
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	n := float64(p.b.N) * float64(p.events)
	if n == 0 {
		return
	}
	p.b.ReportMetric(float64(p.b.Elapsed().Nanoseconds())/n, "ns/event")
	p.b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/event")
	p.b.ReportMetric(float64(m1.Mallocs-p.m0.Mallocs)/n, "allocs/event")
	p.b.ReportMetric(float64(m1.TotalAlloc-p.m0.TotalAlloc)/n, "B/event")
	p.b.ReportMetric(n/p.b.Elapsed().Seconds(), "events/s")
}
