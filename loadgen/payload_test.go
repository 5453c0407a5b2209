package loadgen

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/kafkatest"
)

// decodeBody undoes what appendBody did: form, base64, JSON.
func decodeBody(t *testing.T, body []byte) []map[string]any {
	t.Helper()
	form, err := url.ParseQuery(string(body))
	if err != nil {
		t.Fatalf("body is not a form: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(form.Get("data"))
	if err != nil {
		t.Fatalf("data is not base64: %v", err)
	}
	var events []map[string]any
	if bytes.HasPrefix(raw, []byte("[")) {
		err = json.Unmarshal(raw, &events)
	} else {
		var one map[string]any
		err = json.Unmarshal(raw, &one)
		events = append(events, one)
	}
	if err != nil {
		t.Fatalf("data is not JSON: %v\n%s", err, raw)
	}
	return events
}

func TestTemplateBodies(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		batch, rest int
	}{
		{"single", 1, 0},
		{"batch50", 50, 0},
		{"batch50_rest7", 50, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGenerator(7, 8, tc.batch, tc.rest, "tok", now)
			if len(g.full) != 8 || (tc.rest > 0) != (g.rest != nil) {
				t.Fatalf("got %d templates and rest %v", len(g.full), g.rest != nil)
			}
			templates := append([]*template(nil), g.full...)
			if g.rest != nil {
				if g.rest.events != tc.rest {
					t.Fatalf("rest template has %d events, want %d", g.rest.events, tc.rest)
				}
				templates = append(templates, g.rest)
			}
			seen := map[string]bool{}
			wantIDs := 0
			for round := range 2 { // each template twice: ids must differ
				for _, tp := range templates {
					body := tp.appendBody(nil, &g.run, g.take(tp.events))
					if len(body) > tp.size {
						t.Fatalf("body of %d bytes exceeds the template's size %d", len(body), tp.size)
					}
					events := decodeBody(t, body)
					if len(events) != tp.events {
						t.Fatalf("round %d: %d events, want %d", round, len(events), tp.events)
					}
					for _, ev := range events {
						props, ok := ev["properties"].(map[string]any)
						if !ok || ev["event"] == "" {
							t.Fatalf("not a Mixpanel event: %v", ev)
						}
						if n := len(props); n < 10 || n > 30 {
							t.Errorf("event %q has %d properties, want 10 to 30", ev["event"], n)
						}
						for _, k := range []string{"token", "distinct_id", "$device_id", "$insert_id", "time", "mp_lib", "$lib_version", "$os", "$browser", "$current_url"} {
							if _, ok := props[k]; !ok {
								t.Errorf("event lacks %s", k)
							}
						}
						if props["token"] != "tok" || props["mp_lib"] != "web" {
							t.Errorf("token %v, mp_lib %v", props["token"], props["mp_lib"])
						}
						id, _ := props["$insert_id"].(string)
						if len(id) < slotLen || len(id) > slotLen+2 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
							t.Errorf("$insert_id %q is not 15 to 17 base-36 characters", id)
						}
						if seen[id] {
							t.Errorf("$insert_id %q repeated", id)
						}
						seen[id] = true
						wantIDs++
						if ts, ok := props["time"].(float64); !ok || ts < float64(now.Add(-time.Minute).Unix()) || ts > float64(now.Unix()) {
							t.Errorf("time %v is not within the last minute of %v in seconds", props["time"], now.Unix())
						}
					}
					ip, err := netip.ParseAddr(tp.xff)
					if err != nil {
						t.Fatalf("X-Forwarded-For %q: %v", tp.xff, err)
					}
					inDoc := false
					for _, p := range docPrefixes {
						inDoc = inDoc || p.Contains(ip)
					}
					if !inDoc {
						t.Errorf("X-Forwarded-For %s is outside the documentation ranges", ip)
					}
					if tp.ua == "" {
						t.Error("template without a user agent")
					}
				}
			}
			if len(seen) != wantIDs {
				t.Fatalf("%d distinct ids for %d events", len(seen), wantIDs)
			}
		})
	}
}

// The generator must not be the same event over and over: names, property
// kinds and shapes vary as a site's traffic does.
func TestTemplatesVary(t *testing.T) {
	g := newGenerator(1, 32, 50, 0, "tok", time.Now())
	names := map[string]bool{}
	uas := map[string]bool{}
	kinds := map[string]bool{}
	counts := map[int]bool{}
	queries := 0
	for _, tp := range g.full {
		uas[tp.ua] = true
		for _, ev := range decodeBody(t, tp.appendBody(nil, &g.run, g.take(tp.events))) {
			names[ev["event"].(string)] = true
			props := ev["properties"].(map[string]any)
			counts[len(props)] = true
			if u, _ := props["$current_url"].(string); strings.Contains(u, "?") {
				queries++
			}
			for _, v := range props {
				switch v.(type) {
				case string:
					kinds["string"] = true
				case float64:
					kinds["number"] = true
				case bool:
					kinds["bool"] = true
				case map[string]any:
					kinds["object"] = true
				case []any:
					kinds["list"] = true
				case nil:
					kinds["null"] = true
				}
			}
		}
	}
	if len(names) < 8 || len(uas) < 5 || len(kinds) != 6 || len(counts) < 8 || queries == 0 {
		t.Fatalf("too little variety: %d names, %d user agents, kinds %v, %d distinct property counts, %d URLs with a query",
			len(names), len(uas), kinds, len(counts), queries)
	}
}

func newTestCollector(t *testing.T, token string) (*ingest.Collector, *kafkatest.Producer) {
	t.Helper()
	cfg := ingest.DefaultConfig()
	cfg.Projects = []ingest.Project{{Name: "shop", Token: token}}
	cfg.TrustedProxies = []string{"127.0.0.0/8"}
	p := &kafkatest.Producer{}
	c, err := ingest.New(cfg, "veil.events.raw", ingest.Deps{Producer: p, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

// The collector accepts every generated event: each request is answered
// {"status":1,...} and yields one envelope per event, which the worker can
// decode, with the $insert_id the request carried and the client address
// from X-Forwarded-For.
func TestCollectorAcceptsGeneratedEvents(t *testing.T) {
	for _, batch := range []int{1, 50} {
		t.Run(map[int]string{1: "single", 50: "batch50"}[batch], func(t *testing.T) {
			c, p := newTestCollector(t, "tok-shop")
			h := c.Handler()
			g := newGenerator(3, 16, batch, 0, "tok-shop", time.Now())
			var ids []string
			var xffs []string
			for _, tp := range g.full {
				body := tp.appendBody(nil, &g.run, g.take(tp.events))
				for _, ev := range decodeBody(t, body) {
					ids = append(ids, ev["properties"].(map[string]any)["$insert_id"].(string))
					xffs = append(xffs, tp.xff)
				}
				r := httptest.NewRequest(http.MethodPost, "/track/?verbose=1&ip=1&_=1795348800000", bytes.NewReader(body))
				r.RemoteAddr = "127.0.0.1:40000"
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.Header.Set("User-Agent", tp.ua)
				r.Header.Set("X-Forwarded-For", tp.xff)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 || w.Body.String() != `{"status":1,"error":null}` {
					t.Fatalf("answer %d %s", w.Code, w.Body)
				}
			}
			if p.Len() != 16*batch {
				t.Fatalf("collector produced %d messages, want %d", p.Len(), 16*batch)
			}
			for i, m := range p.Messages() {
				var ev event.Event
				if err := event.Decode(m.Value, &ev); err != nil {
					t.Fatalf("message %d does not decode: %v", i, err)
				}
				if ev.InsertID != ids[i] || ev.Project != "shop" || ev.IP.String() != xffs[i] {
					t.Fatalf("message %d: insert id %q project %q ip %v, want %q shop %s", i, ev.InsertID, ev.Project, ev.IP, ids[i], xffs[i])
				}
			}
		})
	}
}

func TestPutBase36(t *testing.T) {
	var b [10]byte
	putBase36(b[:], 36*36+35)
	if string(b[:]) != "000000010z" {
		t.Fatalf("got %s", b[:])
	}
}

func TestAppendEscaped(t *testing.T) {
	if got := string(appendEscaped([]byte("x"), []byte("a+b/c=="))); got != "xa%2Bb%2Fc%3D%3D" {
		t.Fatalf("got %s", got)
	}
}
