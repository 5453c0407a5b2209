package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/veilhq/veil/internal/kafkatest"
)

// releasingCopier keeps a copy of what it is given and says it keeps
// nothing else, as kafka-go's synchronous writer, so that the collector
// reuses message memory.
func releasingCopier() *kafkatest.Producer {
	return &kafkatest.Producer{Copy: true, Releases: true}
}

func newCollectorWith(t *testing.T, p Producer) *Collector {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Projects = []Project{{Name: "shop", Token: "tok-shop", Secret: "sec-shop"}, {Name: "blog", Token: "tok-blog"}}
	cfg.TrustedProxies = []string{"10.0.0.0/8"}
	cfg.Limits.RateLimit = 1e9 // the limiter's scratch is exercised too
	c, err := New(cfg, "veil.events.raw", Deps{Producer: p, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return fixedNow }
	return c
}

// reuseRequests are requests of different sizes and projects, so that
// reused buffers are both longer and shorter than what they held before.
func reuseRequests() []func() *http.Request {
	ev := func(i int, tok string, long bool) string {
		pad := ""
		if long {
			pad = strings.Repeat("x", 900)
		}
		return fmt.Sprintf(`{"event":"e%d","properties":{"token":%q,"distinct_id":"user-%d","time":1795348800,"pad":%q}}`, i, tok, i, pad)
	}
	var out []func() *http.Request
	for i := range 40 {
		var evs []string
		for j := range 1 + i%7 {
			tok := "tok-shop"
			if (i+j)%3 == 0 {
				tok = "tok-blog"
			}
			evs = append(evs, ev(i*10+j, tok, (i+j)%2 == 0))
		}
		body := "[" + strings.Join(evs, ",") + "]"
		ua := fmt.Sprintf("agent-%d", i)
		if i%4 == 0 {
			ua = strings.Repeat("long agent ", 40)
		}
		out = append(out, func() *http.Request {
			r := form("/track/?verbose=1&ip=1", "data="+url.QueryEscape(b64(body)))
			r.RemoteAddr = fmt.Sprintf("198.51.100.%d:5555", i)
			r.Header.Set("User-Agent", ua)
			return r
		})
	}
	return out
}

// TestMessageMemoryReused: with a producer that releases messages, the
// collector reuses their memory across requests, and every message is
// still exactly what a collector that reuses nothing produces.
func TestMessageMemoryReused(t *testing.T) {
	reqs := reuseRequests()
	want := &kafkatest.Producer{}
	ref := newCollectorWith(t, want)
	for _, req := range reqs {
		rec := httptest.NewRecorder()
		ref.Handler().ServeHTTP(rec, req())
		if rec.Code != http.StatusOK || rec.Body.String() != `{"status":1,"error":null}` {
			t.Fatalf("reference answered %d %s", rec.Code, rec.Body)
		}
	}
	if ref.reuseMessages {
		t.Fatal("a fake producer that keeps messages is taken to release them")
	}

	t.Run("sequential", func(t *testing.T) {
		p := releasingCopier()
		c := newCollectorWith(t, p)
		if !c.reuseMessages {
			t.Fatal("messages are not reused")
		}
		for round := range 3 {
			p.Reset()
			for _, req := range reqs {
				rec := httptest.NewRecorder()
				c.Handler().ServeHTTP(rec, req())
				if rec.Code != http.StatusOK {
					t.Fatalf("answered %d %s", rec.Code, rec.Body)
				}
			}
			sameMessages(t, fmt.Sprintf("round %d", round), p.Messages(), want.Messages())
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		p := releasingCopier()
		c := newCollectorWith(t, p)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range reqs {
					rec := httptest.NewRecorder()
					c.Handler().ServeHTTP(rec, reqs[(i+g*7)%len(reqs)]())
					if rec.Code != http.StatusOK {
						t.Errorf("answered %d %s", rec.Code, rec.Body)
					}
				}
			}()
		}
		wg.Wait()
		// Each message once per goroutine, in any order.
		count := map[string]int{}
		for _, m := range p.Messages() {
			count[string(m.Key)+"\n"+withoutRequestID(m.Value)]++
		}
		for _, m := range want.Messages() {
			if n := count[string(m.Key)+"\n"+withoutRequestID(m.Value)]; n != 4 {
				t.Fatalf("message %s produced %d times, want 4", m.Value, n)
			}
		}
		if p.Len() != 4*want.Len() {
			t.Fatalf("%d messages, want %d", p.Len(), 4*want.Len())
		}
	})

	t.Run("not after a failed write", func(t *testing.T) {
		// The first two writes fail, as kafka-go's do when a write times
		// out, keeping the messages themselves.
		p := releasingCopier()
		p.FailNext(2, errors.New("kafka: write timed out"))
		c := newCollectorWith(t, p)
		for _, req := range reqs {
			rec := httptest.NewRecorder()
			c.Handler().ServeHTTP(rec, req())
		}
		held, heldCopy := p.Held()
		if len(held) == 0 {
			t.Fatal("no write failed")
		}
		// What a failed write was given is left alone: the producer may
		// still be sending it.
		for i := range held {
			if !bytes.Equal(held[i].Key, heldCopy[i].Key) || !bytes.Equal(held[i].Value, heldCopy[i].Value) {
				t.Fatalf("message %d of a failed write was overwritten:\n got %s\nwant %s", i, held[i].Value, heldCopy[i].Value)
			}
		}
	})
}

// requestID is where envelopes differ between two runs of a request.
var requestID = regexp.MustCompile(`"request_id":"[0-9a-f]{16}"`)

// withoutRequestID blanks what differs from one run of a request to the
// next: its id, and the random part of the $insert_ids generated for its
// events (the rest is the event's index).
func withoutRequestID(v []byte) string {
	s := requestID.ReplaceAllString(string(v), `"request_id":"-"`)
	return generatedID.ReplaceAllString(s, `"$$insert_id":"-$1"`)
}

var generatedID = regexp.MustCompile(`"\$insert_id":"[0-9a-f]{24}([0-9a-f]{8})"`)

func sameMessages(t *testing.T, what string, got, want []kafka.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, want[i].Key) || withoutRequestID(got[i].Value) != withoutRequestID(want[i].Value) {
			t.Fatalf("%s: message %d\n got %q %s\nwant %q %s", what, i, got[i].Key, got[i].Value, want[i].Key, want[i].Value)
		}
	}
}

func TestReleasesMessages(t *testing.T) {
	tests := []struct {
		name string
		p    Producer
		want bool
	}{
		{"kafka-go writer", &kafka.Writer{}, true},
		{"asynchronous kafka-go writer", &kafka.Writer{Async: true}, false},
		{"producer that keeps messages", &kafkatest.Producer{}, false},
		{"producer that says it releases them", releasingCopier(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := releasesMessages(tt.p); got != tt.want {
				t.Fatalf("releasesMessages = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestConstantBodies: the shared verbose answers are what json.Marshal
// writes.
func TestConstantBodies(t *testing.T) {
	for _, tt := range []struct {
		v    verboseBody
		want []byte
	}{{verboseBody{Status: 1}, bodyVerboseOK}, {verboseBody{Status: 0}, bodyVerboseNone}} {
		b, err := json.Marshal(tt.v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, tt.want) {
			t.Fatalf("json.Marshal = %s, shared body %s", b, tt.want)
		}
	}
	for n, v := range hvLengths {
		if len(v) != 1 || v[0] != fmt.Sprint(n) {
			t.Fatalf("hvLengths[%d] = %q", n, v)
		}
	}
}

func TestProduceDeadlines(t *testing.T) {
	start := time.Now()
	now := start
	d := newProduceDeadlines(10 * time.Second)
	d.now = func() time.Time { return now }
	deadline := func(ctx context.Context) time.Time {
		t.Helper()
		dl, ok := ctx.Deadline()
		if !ok {
			t.Fatal("no deadline")
		}
		return dl
	}
	first := d.context()
	if dl := deadline(first); dl.Before(now.Add(10*time.Second)) || dl.After(now.Add(10*time.Second+100*time.Millisecond)) {
		t.Fatalf("deadline %v after now, want 10s to 10.1s", dl.Sub(now))
	}
	now = start.Add(99 * time.Millisecond)
	if ctx := d.context(); ctx != first {
		t.Fatal("a write within the window got a context of its own")
	}
	if dl := deadline(first); dl.Sub(now) < 10*time.Second {
		t.Fatalf("the last write of a window has %v, less than the timeout", dl.Sub(now))
	}
	now = start.Add(100 * time.Millisecond)
	second := d.context()
	if second == first {
		t.Fatal("a write after the window shares the window's context")
	}
	if dl := deadline(second); dl.Sub(now) < 10*time.Second || dl.Sub(now) > 10*time.Second+100*time.Millisecond {
		t.Fatalf("deadline %v after now, want 10s to 10.1s", dl.Sub(now))
	}
}

// TestProduceTimeout: a write that does not return within the produce
// timeout is answered 503.
func TestProduceTimeout(t *testing.T) {
	c, _, _ := newTestCollector(t, func(c *Config) { c.ProduceTimeout = 50 * time.Millisecond })
	c.producer = &kafkatest.Producer{Stall: true}
	start := time.Now()
	resp := do(t, c, form("/track", string(formB64(evA))))
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d %s, want 503", resp.status, resp.body)
	}
	if took := time.Since(start); took < 50*time.Millisecond || took > 5*time.Second {
		t.Fatalf("answered after %v, want the 50ms timeout", took)
	}
}

// TestRequestLog: a request's log lines carry its id and endpoint first,
// and name the handler's line as their caller.
func TestRequestLog(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := DefaultConfig()
	cfg.Projects = []Project{{Name: "shop", Token: "tok-shop"}}
	c, err := New(cfg, "veil.events.raw", Deps{Producer: &kafkatest.Producer{}, Logger: zap.New(core, zap.AddCaller()), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	resp := do(t, c, form("/track?verbose=1", "data="+url.QueryEscape(b64(`{"event":"e","properties":{"token":"nope"}}`))))
	if resp.status != http.StatusOK {
		t.Fatalf("status %d", resp.status)
	}
	entries := logs.All()
	if len(entries) != 1 {
		t.Fatalf("%d log lines, want 1", len(entries))
	}
	e := entries[0]
	if e.Message != "records rejected" {
		t.Fatalf("message %q", e.Message)
	}
	var keys []string
	for _, f := range e.Context {
		keys = append(keys, f.Key)
	}
	if got, want := strings.Join(keys, ","), "request_id,endpoint,rejected,accepted,first_reason"; got != want {
		t.Fatalf("fields %s, want %s", got, want)
	}
	if id := e.ContextMap()["request_id"]; id != resp.header.Get("X-Request-Id") {
		t.Fatalf("request_id %v, answer's X-Request-Id %q", id, resp.header.Get("X-Request-Id"))
	}
	if e.ContextMap()["endpoint"] != "track" {
		t.Fatalf("endpoint %v", e.ContextMap()["endpoint"])
	}
	if !strings.HasSuffix(e.Caller.File, "ingest/collector.go") || !strings.Contains(e.Caller.Function, "serveIngest") {
		t.Fatalf("caller %s (%s), want the handler", e.Caller.String(), e.Caller.Function)
	}
}

// FuzzQueryParams holds parseQuery to url.ParseQuery, as r.URL.Query()
// reads a query: pairs it cannot parse are left out.
func FuzzQueryParams(f *testing.F) {
	for _, q := range []string{"verbose=1&ip=1&_=1795348800000", "data=&data=e30", "a;b=1&ip=0", "ip=%zz&ip=1", "d%61ta=x", "callback=mp.cb&img=1",
		"+=1&%20=2", "ip", "=&&ip=+", "ip=%2", "data=&data=%zz&data=x", "strict=1&project_id=p%201&verbose=0&verbose=1"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		want, _ := url.ParseQuery(raw)
		q := parseQuery(raw)
		for key, name := range queryKeyNames {
			if q.has[key] != want.Has(name) || q.first[key] != want.Get(name) {
				t.Fatalf("%q: %s = %q (%v); url.Values has %q", raw, name, q.first[key], q.has[key], want[name])
			}
			p := params{query: &q, form: url.Values{"verbose": {"form"}}}
			if queryKey(key) == qVerbose {
				if p.get(qVerbose) != "form" {
					t.Fatalf("%q: a form field does not come first", raw)
				}
			} else if p.get(queryKey(key)) != want.Get(name) {
				t.Fatalf("%q: get(%s) = %q, want %q", raw, name, p.get(queryKey(key)), want.Get(name))
			}
		}
		wantData := ""
		for _, w := range want["data"] {
			if w != "" {
				wantData = w
				break
			}
		}
		if q.data != wantData {
			t.Fatalf("%q: first non-empty data %q; url.Values has %q", raw, q.data, want["data"])
		}
	})
}

// FuzzMediaType holds mediaType to mime.ParseMediaType.
func FuzzMediaType(f *testing.F) {
	for _, v := range []string{"application/x-www-form-urlencoded", "text/plain;charset=UTF-8", "Application/JSON ", "text/", "/plain", "text/plain/x", "a b/c", "\u212a/x", "", "x", "text/plain; charset=a; charset=b"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		want, _, _ := mime.ParseMediaType(v)
		if got := mediaType(v); got != want {
			t.Fatalf("mediaType(%q) = %q, mime.ParseMediaType %q", v, got, want)
		}
	})
}
