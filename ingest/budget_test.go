package ingest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestInflightBodyBudget: the bodies in flight hold at most
// collector.limits.max_inflight_bytes together; a request that does not
// fit is answered 503 with Retry-After and counted, and once memory is
// given back the same request passes.
func TestInflightBodyBudget(t *testing.T) {
	const (
		maxBody = 32 << 10
		budget  = 48 << 10
	)
	c, p, reg := newTestCollector(t, func(c *Config) {
		c.Limits.MaxBodyBytes = maxBody
		c.Limits.MaxInflightBytes = budget
		c.Limits.MaxEventBytes = maxBody
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, l) }()
	tr := &http.Transport{}
	defer func() {
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	target := "http://" + l.Addr().String() + "/track?verbose=1"
	// One event of 30 KiB.
	event := `{"event":"e","properties":{"token":"tok-shop","pad":"` + strings.Repeat("x", 30<<10) + `"}}`
	send := func() (int, string, string) {
		resp, err := client.Post(target, "application/json", strings.NewReader(event))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get("Retry-After")
	}

	// A client sends 20 KiB of a 32 KiB body and stalls: its buffer has
	// grown to hold the body it declared (its last step), half the budget.
	staller, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer staller.Close()
	fmt.Fprintf(staller, "POST /track HTTP/1.1\r\nHost: veil\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(event), event[:20<<10])
	held := func() float64 { return gauge(t, reg, "veil_collector_body_bytes_in_flight") }
	waitFor(t, "the stalled body to hold its memory", func() bool { return held() == float64(len(event)+1) })

	// A whole request now needs more than what is left.
	if status, body, retry := send(); status != http.StatusServiceUnavailable || body != `{"status":0,"error":"the collector is busy; retry"}` || retry != "1" {
		t.Fatalf("over the budget: %d %q Retry-After %q, want 503 and Retry-After 1", status, body, retry)
	}
	if n := counter(t, reg, "veil_collector_events_rejected_total", reasonOverloaded); n != 1 {
		t.Fatalf("rejected{reason=overloaded} = %v, want 1", n)
	}
	if n := held(); n != float64(len(event)+1) {
		t.Fatalf("bodies hold %v bytes after the refusal, want the stalled one's %d", n, len(event)+1)
	}

	staller.Close()
	waitFor(t, "the stalled body's memory to be given back", func() bool { return held() == 0 })
	if status, body, _ := send(); status != http.StatusOK || body != `{"status":1,"error":null}` {
		t.Fatalf("within the budget: %d %q, want 200", status, body)
	}
	if n := len(envelopes(t, p)); n != 1 {
		t.Fatalf("produced %d, want 1", n)
	}
	if n := held(); n != 0 {
		t.Fatalf("bodies hold %v bytes with no request in flight", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
