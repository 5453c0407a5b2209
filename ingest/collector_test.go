package ingest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/event/rules"
	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/internal/kafkax"
)

// decodeAll checks that the worker can read every message produced: each
// value must pass event.Decode.
func decodeAll(t testing.TB, p *kafkatest.Producer) []event.Event {
	t.Helper()
	msgs := p.Messages()
	out := make([]event.Event, 0, len(msgs))
	for i, m := range msgs {
		var ev event.Event
		if err := event.Decode(m.Value, &ev); err != nil {
			t.Fatalf("message %d does not decode: %v: %s", i, err, m.Value)
		}
		out = append(out, ev)
	}
	return out
}

// envelopes returns the envelopes produced, decoded by encoding/json.
func envelopes(t *testing.T, p *kafkatest.Producer) []event.Envelope {
	t.Helper()
	var out []event.Envelope
	for _, m := range p.Messages() {
		var env event.Envelope
		if err := json.Unmarshal(m.Value, &env); err != nil {
			t.Fatalf("produced value is not an envelope: %v", err)
		}
		out = append(out, env)
	}
	return out
}

var fixedNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func newTestCollector(t testing.TB, mutate func(*Config)) (*Collector, *kafkatest.Producer, *prometheus.Registry) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Projects = []Project{{Name: "shop", Token: "tok-shop", Secret: "sec-shop"}}
	cfg.TrustedProxies = []string{"10.0.0.0/8"}
	if mutate != nil {
		mutate(&cfg)
	}
	p := &kafkatest.Producer{}
	reg := prometheus.NewRegistry()
	c, err := New(cfg, "veil.events.raw", Deps{Producer: p, Metrics: reg, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return fixedNow }
	t.Cleanup(func() { decodeAll(t, p) })
	return c, p, reg
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

type response struct {
	status int
	body   string
	header http.Header
}

func do(t *testing.T, c *Collector, req *http.Request) response {
	t.Helper()
	if req.RemoteAddr == "" || req.RemoteAddr == "192.0.2.1:1234" { // httptest's default
		req.RemoteAddr = "198.51.100.20:5555"
	}
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return response{rec.Code, string(b), rec.Result().Header}
}

func form(path, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

const (
	evA = `{"event":"signup","properties":{"token":"tok-shop","distinct_id":"u-1","time":1795348800,"plan":"pro"}}`
	evB = `{"event":"view","properties":{"token":"tok-shop","distinct_id":42,"time":1795348800123,"$insert_id":"abc-123"}}`
)

func TestTrackAccepts(t *testing.T) {
	tests := []struct {
		name   string
		req    func() *http.Request
		events int
	}{
		{"GET base64 one event", func() *http.Request {
			return httptest.NewRequest(http.MethodGet, "/track?data="+url.QueryEscape(b64(evA)), nil)
		}, 1},
		{"GET trailing slash", func() *http.Request {
			return httptest.NewRequest(http.MethodGet, "/track/?data="+url.QueryEscape(b64(evA)), nil)
		}, 1},
		{"POST form base64 array", func() *http.Request {
			return form("/track", "data="+url.QueryEscape(b64("["+evA+","+evB+"]")))
		}, 2},
		{"POST form base64 with unescaped plus", func() *http.Request {
			// The Node library leaves '+' unescaped; a form decoder makes it ' '.
			return form("/track", "data="+b64(`{"event":"a>>>b","properties":{"token":"tok-shop","k":"~~~~>>>"}}`))
		}, 1},
		{"POST form raw JSON data", func() *http.Request {
			return form("/track", "data="+url.QueryEscape("["+evA+"]"))
		}, 1},
		{"POST JSON body", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/track", strings.NewReader("["+evA+","+evB+"]"))
			r.Header.Set("Content-Type", "application/json")
			return r
		}, 2},
		{"POST text/plain beacon form", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/track", strings.NewReader("data="+url.QueryEscape(b64(evA))))
			r.Header.Set("Content-Type", "text/plain;charset=UTF-8")
			return r
		}, 1},
		{"URL-safe base64 without padding", func() *http.Request {
			return httptest.NewRequest(http.MethodGet, "/track?data="+base64.RawURLEncoding.EncodeToString([]byte(evB)), nil)
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			resp := do(t, c, tt.req())
			if resp.status != 200 || resp.body != "1" {
				t.Fatalf("got %d %q, want 200 \"1\"", resp.status, resp.body)
			}
			if got := len(envelopes(t, p)); got != tt.events {
				t.Fatalf("produced %d events, want %d", got, tt.events)
			}
		})
	}
}

func TestTrackEnvelope(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	req := form("/track?ip=0", "data="+url.QueryEscape(b64("["+evA+","+evB+"]")))
	req.Header.Set("DNT", "1")
	req.Header.Set("Sec-GPC", "1")
	req.Header.Set("User-Agent", "Mozilla/5.0 test")
	req.AddCookie(&http.Cookie{Name: "veil_optout", Value: "1"})
	if resp := do(t, c, req); resp.body != "1" {
		t.Fatalf("body %q", resp.body)
	}
	envs := envelopes(t, p)
	if len(envs) != 2 {
		t.Fatalf("%d envelopes", len(envs))
	}
	env := envs[0]
	if env.Project != "shop" || env.Kind != event.KindTrack || env.IP != "198.51.100.20" || env.UserAgent != "Mozilla/5.0 test" {
		t.Errorf("envelope context wrong: %+v", env)
	}
	if want := (event.Signals{DNT: true, GPC: true, OptOut: true, NoGeo: true}); env.Signals != want {
		t.Errorf("signals %+v, want %+v", env.Signals, want)
	}
	if env.ReceivedAt != fixedNow.UnixMilli() {
		t.Errorf("received_at %d", env.ReceivedAt)
	}
	var ev event.Event
	if err := event.Decode(mustJSON(t, env), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Name != "signup" || ev.DistinctID != "u-1" || ev.Time.UnixMilli() != 1795348800000 || len(ev.InsertID) != 32 {
		t.Errorf("normalised event wrong: %+v", ev)
	}
	if _, ok := ev.Properties.Get("token"); ok {
		t.Error("token was not removed from the properties")
	}
	if propOf(&ev.Properties, "plan") != "pro" {
		t.Errorf("properties %v", ev.Properties)
	}
	if err := event.Decode(mustJSON(t, envs[1]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.DistinctID != "42" || ev.InsertID != "abc-123" || ev.Time.UnixMilli() != 1795348800123 {
		t.Errorf("second event wrong: %+v", ev)
	}
	if got := string(p.Messages()[0].Key); got != "shop\x00u-1" {
		t.Errorf("key %q", got)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGeneratedInsertIDs: an event without a $insert_id is an event of its
// own, as Mixpanel counts it, whether or not it has a time: identical ones
// in one request, or in a request sent again, get different ids and are
// stored as different rows. The id is fixed in the envelope, so a replay
// of the message itself folds (the worker tests show it).
func TestGeneratedInsertIDs(t *testing.T) {
	tests := []struct{ name, event string }{
		{"without time", `{"event":"Tapped","properties":{"token":"tok-shop","distinct_id":"u-1"}}`},
		{"with time", `{"event":"Tapped","properties":{"token":"tok-shop","distinct_id":"u-1","time":1795348800}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			for range 2 {
				do(t, c, form("/track", "data="+url.QueryEscape(b64("["+tt.event+","+tt.event+"]"))))
			}
			ids := map[string]bool{}
			for _, ev := range decodeAll(t, p) {
				if !rules.ValidInsertID(ev.InsertID) {
					t.Fatalf("generated insert id %q", ev.InsertID)
				}
				ids[ev.InsertID] = true
			}
			if len(ids) != 4 {
				t.Fatalf("4 events got %d distinct insert ids: %v", len(ids), ids)
			}
		})
	}
}

func TestTrackRejects(t *testing.T) {
	tooMany := make([]string, 2001)
	for i := range tooMany {
		tooMany[i] = evA
	}
	// Three levels of objects under a property are allowed; a fourth is not.
	deep := `{"event":"e","properties":{"token":"tok-shop","a":{"b":{"c":{"d":{"e":1}}}}}}`
	longArr := `{"event":"e","properties":{"token":"tok-shop","a":[` + strings.Repeat("1,", 255) + `1]}}`
	tests := []struct {
		name       string
		req        *http.Request
		status     int
		verboseErr string // substring of the verbose error
		produced   int
		reason     string
		rejected   float64 // events counted under reason
	}{
		{"malformed base64", form("/track?verbose=1", "data=%%%not-base64!!"), 200, "", 0, reasonMalformed, 1},
		{"base64 of non-JSON", form("/track?verbose=1", "data="+url.QueryEscape(b64("hello"))), 200, "data must be a JSON object or array", 0, reasonMalformed, 1},
		{"invalid JSON", form("/track?verbose=1", "data="+url.QueryEscape(b64(`[{"event":`))), 200, "data is not valid JSON", 0, reasonMalformed, 1},
		{"no data", form("/track?verbose=1", ""), 200, "no data parameter", 0, reasonMalformed, 1},
		{"missing event name among valid", form("/track?verbose=1", "data="+url.QueryEscape(b64(`[`+evA+`,{"properties":{"token":"tok-shop"}},`+evB+`]`))), 200, "event 1: event: event name is missing", 2, reasonMissingEvent, 1},
		{"unknown token", form("/track?verbose=1", "data="+url.QueryEscape(b64(`{"event":"e","properties":{"token":"nope"}}`))), 200, "unknown project token", 0, reasonUnknownToken, 1},
		{"too old for track", form("/track?verbose=1", "data="+url.QueryEscape(b64(`{"event":"e","properties":{"token":"tok-shop","time":1000000000}}`))), 200, "older than 5 days; send historical events to /import", 0, reasonTooOld, 1},
		{"too far ahead", form("/track?verbose=1", "data="+url.QueryEscape(b64(`{"event":"e","properties":{"token":"tok-shop","time":1895348800}}`))), 200, "in the future", 0, reasonTooNew, 1},
		{"nested too deep", form("/track?verbose=1", "data="+url.QueryEscape(b64(deep))), 200, "nested more than 3 levels deep", 0, reasonTooDeep, 1},
		{"array too long", form("/track?verbose=1", "data="+url.QueryEscape(b64(longArr))), 200, "list has 255 items or more", 0, reasonArrayTooLong, 1},
		{"bad insert id", form("/track?verbose=1", "data="+url.QueryEscape(b64(`{"event":"e","properties":{"token":"tok-shop","$insert_id":"has space"}}`))), 200, "$insert_id must be", 0, reasonInvalidInsertID, 1},
		{"too many events", form("/track?verbose=1", "data="+url.QueryEscape(b64("["+strings.Join(tooMany, ",")+"]"))), 413, "more than 2000 events", 0, reasonTooManyEvents, 2001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, nil)
			resp := do(t, c, tt.req)
			if resp.status != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.status, tt.status, resp.body)
			}
			var v struct {
				Status int     `json:"status"`
				Error  *string `json:"error"`
			}
			if err := json.Unmarshal([]byte(resp.body), &v); err != nil {
				t.Fatalf("verbose answer is not JSON: %q", resp.body)
			}
			// Mixpanel answers status 1 when at least one record was
			// valid; the error still names the ones that were not.
			wantStatus := 0
			if tt.produced > 0 {
				wantStatus = 1
			}
			if v.Status != wantStatus || v.Error == nil || !strings.Contains(*v.Error, tt.verboseErr) {
				t.Fatalf("verbose answer %q, want status %d naming %q", resp.body, wantStatus, tt.verboseErr)
			}
			if got := len(envelopes(t, p)); got != tt.produced {
				t.Fatalf("produced %d, want %d", got, tt.produced)
			}
			if n := testutil.ToFloat64(metricVec(t, reg, "veil_collector_events_rejected_total", tt.reason)); n != tt.rejected {
				t.Fatalf("rejection reason %s counted %v times, want %v", tt.reason, n, tt.rejected)
			}
		})
	}
}

func TestTrackNonVerboseAnswersZero(t *testing.T) {
	c, _, _ := newTestCollector(t, nil)
	resp := do(t, c, form("/track", "data=!!!"))
	if resp.status != 200 || resp.body != "0" {
		t.Fatalf("got %d %q, want 200 \"0\"", resp.status, resp.body)
	}
}

func TestTrackBodyTooLarge(t *testing.T) {
	c, _, _ := newTestCollector(t, func(c *Config) { c.Limits.MaxBodyBytes = 100 })
	resp := do(t, c, form("/track", "data="+strings.Repeat("A", 200)))
	if resp.status != http.StatusRequestEntityTooLarge || resp.body != "0" {
		t.Fatalf("got %d %q", resp.status, resp.body)
	}
}

func TestTrackKafkaDown(t *testing.T) {
	c, p, reg := newTestCollector(t, nil)
	p.Fail(fmt.Errorf("produce: %w", kafka.LeaderNotAvailable))
	resp := do(t, c, form("/track?verbose=1", "data="+url.QueryEscape(b64(evA))))
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.status)
	}
	if resp.header.Get("Retry-After") == "" {
		t.Error("no Retry-After on 503")
	}
	if !strings.Contains(resp.body, `"status":0`) {
		t.Errorf("body %q", resp.body)
	}
	// Why Kafka refused the write is the label, one of a fixed set, each
	// present from the start.
	for _, reason := range kafkax.Reasons {
		want := 0.0
		if reason == kafkax.ReasonNotLeader {
			want = 1
		}
		if n := counter(t, reg, "veil_collector_produce_errors_total", reason); n != want {
			t.Errorf("produce errors{reason=%s} = %v, want %v", reason, n, want)
		}
	}
}

func TestClientIP(t *testing.T) {
	tests := []struct {
		remote, xff, want string
	}{
		{"198.51.100.20:1", "", "198.51.100.20"},
		{"198.51.100.20:1", "203.0.113.9", "198.51.100.20"},     // untrusted peer: header ignored
		{"10.1.2.3:1", "203.0.113.9", "203.0.113.9"},            // trusted proxy
		{"10.1.2.3:1", "203.0.113.9, 10.9.9.9", "203.0.113.9"},  // chain of trusted proxies
		{"10.1.2.3:1", "192.0.2.1, 203.0.113.9", "203.0.113.9"}, // left-most is spoofable
		{"10.1.2.3:1", "garbage", "10.1.2.3"},                   // malformed hop
		{"[::ffff:198.51.100.7]:1", "", "198.51.100.7"},         // mapped v4
		{"[2001:db8::1]:1", "", "2001:db8::1"},
	}
	c, _, _ := newTestCollector(t, nil)
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/track", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := c.clientIP(r).String(); got != tt.want {
			t.Errorf("remote %s xff %q: got %s, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no projects", func(c *Config) { c.Projects = nil }, "collector.projects"},
		{"bad proxy", func(c *Config) { c.TrustedProxies = []string{"nope"} }, "collector.trusted_proxies[0]"},
		{"duplicate token", func(c *Config) {
			c.Projects = append(c.Projects, Project{Name: "b", Token: "t"}, Project{Name: "c", Token: "t"})
		}, "collector.projects[2].token"},
		{"zero events", func(c *Config) { c.Limits.MaxEventsPerRequest = 0 }, "collector.limits.max_events_per_request"},
		{"half tls", func(c *Config) { c.TLSCert = "x" }, "collector.tls_cert"},
		{"duplicate name", func(c *Config) { c.Projects = append(c.Projects, Project{Name: "a", Token: "tb"}) }, "collector.projects[1].name"},
		{"duplicate id", func(c *Config) {
			c.Projects[0].ID = "7"
			c.Projects = append(c.Projects, Project{Name: "b", ID: "7", Token: "tb"})
		}, "collector.projects[1].id"},
		{"id clashes with a name", func(c *Config) { c.Projects = append(c.Projects, Project{Name: "b", ID: "a", Token: "tb"}) }, "collector.projects[1].id"},
		{"duplicate secret", func(c *Config) {
			c.Projects[0].Secret = "s"
			c.Projects = append(c.Projects, Project{Name: "b", Token: "tb", Secret: "s"})
		}, "collector.projects[1].secret"},
		{"secret is another project's token", func(c *Config) {
			c.Projects = append(c.Projects, Project{Name: "b", Token: "tb", Secret: "ta"})
		}, "collector.projects[1].secret"},
		{"service account without secret", func(c *Config) {
			c.ServiceAccounts = []ServiceAccount{{Username: "u", Projects: []string{"a"}}}
		}, "collector.service_accounts[0].secret"},
		{"service account without projects", func(c *Config) {
			c.ServiceAccounts = []ServiceAccount{{Username: "u", Secret: "s"}}
		}, "collector.service_accounts[0].projects"},
		{"service account for an unknown project", func(c *Config) {
			c.ServiceAccounts = []ServiceAccount{{Username: "u", Secret: "s", Projects: []string{"a", "zz"}}}
		}, "collector.service_accounts[0].projects[1]"},
		{"duplicate service account", func(c *Config) {
			c.ServiceAccounts = []ServiceAccount{{Username: "u", Secret: "s", Projects: []string{"a"}}, {Username: "u", Secret: "t", Projects: []string{"a"}}}
		}, "collector.service_accounts[1].username"},
		{"negative rate", func(c *Config) { c.Limits.RateLimit = -1 }, "collector.limits.rate_limit"},
		{"burst below a full request", func(c *Config) { c.Limits.RateLimit = 10; c.Limits.RateBurst = 100 }, "collector.limits.rate_burst"},
		{"redirect host with a scheme", func(c *Config) { c.RedirectHosts = []string{"shop.example.com", "https://x.example"} }, "collector.redirect_hosts[1]"},
		{"redirect host wildcard in the middle", func(c *Config) { c.RedirectHosts = []string{"a.*.example"} }, "collector.redirect_hosts[0]"},
		{"empty redirect host", func(c *Config) { c.RedirectHosts = []string{""} }, "collector.redirect_hosts[0]"},
		{"in-flight budget below one body", func(c *Config) { c.Limits.MaxInflightBytes = c.Limits.MaxBodyBytes - 1 }, "collector.limits.max_inflight_bytes"},
		{"no idle timeout", func(c *Config) { c.Server.IdleTimeout = 0 }, "collector.server.idle_timeout"},
		{"no connection cap", func(c *Config) { c.Server.MaxConnections = 0 }, "collector.server.max_connections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Projects = []Project{{Name: "a", Token: "ta"}}
			tt.mutate(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
	t.Run("defaults with a project are valid", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Projects = []Project{{Name: "a", Token: "ta", Secret: "sa"}}
		cfg.ServiceAccounts = []ServiceAccount{{Username: "u", Secret: "s", Projects: []string{"a"}}}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if b := cfg.Limits.rateBurst(); b != 2000 {
			t.Fatalf("default burst %d", b)
		}
	})
}

// TestMetrics: the endpoint label takes the four endpoint names, and the
// rejection reasons are a fixed set, all present from the start.
func TestMetrics(t *testing.T) {
	c, _, reg := newTestCollector(t, nil)
	do(t, c, get("/track", b64(evA)))
	do(t, c, get("/engage/", b64(updSet)))
	do(t, c, get("/groups/", b64(grpSet)))
	r := get("/import", b64(evImport))
	r.SetBasicAuth("sec-shop", "")
	do(t, c, r)
	for _, ep := range []string{"track", "engage", "groups", "import"} {
		if n := counter(t, reg, "veil_collector_events_accepted_total", ep); n != 1 {
			t.Errorf("accepted{endpoint=%s} = %v, want 1", ep, n)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "veil_collector_events_rejected_total":
			if len(mf.Metric) != len(rejectReasons) {
				t.Errorf("%d rejection series, want the %d fixed reasons", len(mf.Metric), len(rejectReasons))
			}
		case "veil_collector_requests_total":
			for _, m := range mf.Metric {
				if ep := m.Label[0].GetValue(); ep != "track" && ep != "engage" && ep != "groups" && ep != "import" {
					t.Errorf("endpoint label %q", ep)
				}
			}
		}
	}
}

func metricVec(t *testing.T, reg *prometheus.Registry, name, label string) prometheus.Collector {
	t.Helper()
	return &gathered{t: t, reg: reg, name: name, label: label}
}

func metricSingle(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	return metricVec(t, reg, name, "")
}

// gathered exposes one series of a registry as a collector for testutil.
type gathered struct {
	t           *testing.T
	reg         *prometheus.Registry
	name, label string
}

func (g *gathered) Describe(chan<- *prometheus.Desc) {}

func (g *gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, err := g.reg.Gather()
	if err != nil {
		g.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		for _, m := range mf.Metric {
			if g.label != "" && (len(m.Label) == 0 || m.Label[0].GetValue() != g.label) {
				continue
			}
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
			return
		}
	}
	g.t.Fatalf("metric %s{%s} not found", g.name, g.label)
}
