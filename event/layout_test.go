package event_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/loadgen"
)

// The worker's decoder reads the envelope the collector writes with a fast
// path that expects the collector's field order; anything else still
// decodes, only slower. This holds the two packages to the same layout:
// every track envelope the collector writes, whatever the request's
// signals and headers, takes the fast path.
func TestCollectorEnvelopesTakeTheFastPath(t *testing.T) {
	p := &kafkatest.Producer{Copy: true}
	cfg := ingest.DefaultConfig()
	cfg.Projects = []ingest.Project{{Name: "shop", Token: "tok"}}
	cfg.TrustedProxies = []string{"127.0.0.0/8"}
	c, err := ingest.New(cfg, "veil.events.raw", ingest.Deps{Producer: p, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h := c.Handler()
	variants := []struct {
		name   string
		query  string
		header map[string]string
	}{
		{"browser", "verbose=1&ip=1", map[string]string{"User-Agent": "ua", "X-Forwarded-For": "set"}},
		{"no_geo", "verbose=1&ip=0", map[string]string{"User-Agent": "ua"}},
		{"dnt_gpc", "verbose=1", map[string]string{"DNT": "1", "Sec-GPC": "1", "X-Forwarded-For": "set"}},
		{"opt_out", "verbose=1", map[string]string{"Cookie": "veil_optout=1"}},
		{"bare", "", nil},
	}
	for _, batch := range []int{1, 50} {
		for _, v := range variants {
			before := p.Len()
			for _, req := range loadgen.Requests(3, 4, batch, "tok") {
				r := httptest.NewRequest(http.MethodPost, "/track/?"+v.query, bytes.NewReader(req.Body))
				r.RemoteAddr = "127.0.0.1:40000"
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				for k, val := range v.header {
					if val == "set" {
						val = req.ForwardedFor
					}
					r.Header.Set(k, val)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					t.Fatalf("%s: collector answered %d %s", v.name, w.Code, w.Body)
				}
			}
			msgs := p.Messages()[before:]
			if len(msgs) != 4*batch {
				t.Fatalf("%s, batches of %d: %d messages, want %d", v.name, batch, len(msgs), 4*batch)
			}
			for i, m := range msgs {
				if !event.CollectorLayout(m.Value) {
					t.Fatalf("%s, batches of %d: message %d does not take the fast path: %.200s", v.name, batch, i, m.Value)
				}
				var ev event.Event
				if err := event.NewDecoder().Decode(m.Value, &ev); err != nil {
					t.Fatalf("%s: message %d: %v", v.name, i, err)
				}
			}
		}
	}
}
