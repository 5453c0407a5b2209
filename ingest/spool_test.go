package ingest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/ingest/spool"
	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/internal/kafkax"
)

// failing is the fake producer failing its first n writes with Kafka's
// err and keeping the messages of the failed writes uncopied, as a
// producer whose write timed out may (kafkatest.Producer.Held); the later
// writes it copies.
func failing(n int, err error) *kafkatest.Producer {
	p := &kafkatest.Producer{Copy: true, Releases: true}
	p.FailNext(n, err)
	return p
}

// spooledCollector is a collector whose producer sits behind a spool.
func spooledCollector(t *testing.T, p Producer, edit func(*spool.Config)) (*Collector, *spool.Spool, *prometheus.Registry) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Projects = []Project{{Name: "shop", Token: "tok-shop", Secret: "sec-shop"}}
	cfg.Spool.Dir = filepath.Join(t.TempDir(), "spool")
	if edit != nil {
		edit(&cfg.Spool)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sp, err := spool.Open(cfg.Spool, p, cfg.ProduceTimeout, spool.Deps{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	c, err := New(cfg, "veil.events.raw", Deps{Producer: sp, Metrics: reg, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return fixedNow }
	return c, sp, reg
}

func pixel(data string) *http.Request {
	return get("/track?img=1&data="+url.QueryEscape(b64(data)), "")
}

func beacon(data string) *http.Request {
	// navigator.sendBeacon: a POST of text/plain that nobody reads the
	// answer of.
	return post("/track", "text/plain;charset=UTF-8", []byte("data="+url.QueryEscape(b64(data))))
}

// With a spool, a request Kafka refuses is answered as if Kafka had taken
// it, in each endpoint's own shape, and its events are on disk.
func TestSpooledRequestsAreAnsweredSuccess(t *testing.T) {
	ev := func(id string) string {
		return fmt.Sprintf(`{"event":"e","properties":{"token":"tok-shop","distinct_id":"u1","time":1795348800,"$insert_id":%q}}`, id)
	}
	for _, tc := range []struct {
		name        string
		req         *http.Request
		status      int
		contentType string
		body        string
	}{
		{"SDK form POST", form("/track", "data="+url.QueryEscape(b64(ev("a")))), 200, "", "1"},
		{"pixel (img=1)", pixel(ev("b")), 200, "image/gif", ""},
		{"beacon", beacon(ev("c")), 200, "", "1"},
		{"verbose", form("/track?verbose=1", "data="+url.QueryEscape(b64(ev("d")))), 200, "", `{"status":1,"error":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := failing(1, fmt.Errorf("produce: %w", kafka.NotEnoughReplicas))
			c, sp, reg := spooledCollector(t, p, nil)
			resp := do(t, c, tc.req)
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.status, tc.status, resp.body)
			}
			if tc.contentType != "" && resp.header.Get("Content-Type") != tc.contentType {
				t.Errorf("Content-Type %q, want %q", resp.header.Get("Content-Type"), tc.contentType)
			}
			if tc.body != "" && strings.TrimSpace(resp.body) != tc.body {
				t.Errorf("body %q, want %q", resp.body, tc.body)
			}
			if _, events, _ := sp.Held(); events != 1 {
				t.Errorf("spool holds %d events, want 1", events)
			}
			// Kafka's refusal is still counted by its reason.
			if n := counter(t, reg, "veil_collector_produce_errors_total", kafkax.ReasonNotEnoughReplicas); n != 1 {
				t.Errorf("produce errors{not_enough_replicas} = %v, want 1", n)
			}
			if n := counter(t, reg, "veil_collector_spool_spooled_events_total", spool.ReasonKafkaError); n != 1 {
				t.Errorf("spooled{kafka_error} = %v, want 1", n)
			}
		})
	}
}

// The messages of a write Kafka failed may still be held by the producer
// when the spool answers: their memory is not reused for later requests.
func TestSpoolDoesNotReuseHeldMessages(t *testing.T) {
	p := failing(1, kafka.RequestTimedOut)
	c, sp, _ := spooledCollector(t, p, nil)
	if !c.reuseMessages {
		t.Fatal("the spool in front of a producer that releases its messages does not say it does")
	}
	reqs := reuseRequests()
	for i := range 40 {
		if resp := do(t, c, reqs[i%len(reqs)]()); resp.status != 200 {
			t.Fatalf("request %d: %d %s", i, resp.status, resp.body)
		}
	}
	held, copies := p.Held()
	if len(held) == 0 {
		t.Fatal("no write failed: the test proves nothing")
	}
	for i := range held {
		if !bytes.Equal(held[i].Key, copies[i].Key) || !bytes.Equal(held[i].Value, copies[i].Value) {
			t.Fatalf("message %d of a failed, spooled write was overwritten:\n got %s\nwant %s", i, held[i].Value, copies[i].Value)
		}
	}
	if r, _, _ := sp.Held(); r == 0 {
		t.Error("nothing spooled")
	}
}

// A full spool answers 503 as the collector without one does; a refusal
// that never tried Kafka is not counted as Kafka's error.
func TestSpoolFullAnswers503(t *testing.T) {
	p := failing(1000, kafka.NotEnoughReplicas)
	c, sp, reg := spooledCollector(t, p, func(c *spool.Config) { c.MaxBytes = 700; c.SegmentBytes = 700 })
	ev := `{"event":"e","properties":{"token":"tok-shop","distinct_id":"u1","time":1795348800,"$insert_id":"x"}}`
	var statuses []int
	for range 4 {
		resp := do(t, c, form("/track", "data="+url.QueryEscape(b64(ev))))
		statuses = append(statuses, resp.status)
		if resp.status == http.StatusServiceUnavailable && resp.header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	}
	_, held, _ := sp.Held()
	accepted := 0
	for _, s := range statuses {
		if s == 200 {
			accepted++
		}
	}
	if accepted == 0 || accepted == 4 || int64(accepted) != held {
		t.Fatalf("statuses %v with %d events spooled: want some 200s, then 503s, and every 200 spooled", statuses, held)
	}
	if n := counter(t, reg, "veil_collector_spool_refused_events_total", spool.RefusedFull); n != float64(4-accepted) {
		t.Errorf("refused{full} = %v, want %d", n, 4-accepted)
	}
	// Only the first request tried Kafka; the others queued behind it.
	if n := counter(t, reg, "veil_collector_produce_errors_total", kafkax.ReasonNotEnoughReplicas); n != 1 {
		t.Errorf("produce errors = %v, want 1", n)
	}
}

// In front of a spool, the collector's writes get the spool's deadline,
// not the produce timeout: a write Kafka has not taken by then is
// spooled.
func TestSpoolDeadlineBoundsWrites(t *testing.T) {
	p := &kafkatest.Producer{} // keeps how long each write was given
	c, _, _ := spooledCollector(t, p, func(c *spool.Config) { c.Deadline = 3 * time.Second })
	ev := `{"event":"e","properties":{"token":"tok-shop","distinct_id":"u1","time":1795348800}}`
	if resp := do(t, c, form("/track", "data="+url.QueryEscape(b64(ev)))); resp.status != 200 {
		t.Fatalf("status %d", resp.status)
	}
	if left := p.Deadlines(); len(left) != 1 || left[0] > 3*time.Second+3*time.Second/100 || left[0] < 2*time.Second {
		t.Errorf("the write was given %v, want the spool's 3 s deadline (collector.produce_timeout is %v)", left, c.cfg.ProduceTimeout)
	}
}
