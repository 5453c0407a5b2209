package faulttest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/testsvc"
)

// HTTPLoad is a bounded load of /track requests sent to collectors the way
// an SDK sends them: a request not answered 200 with `1` (a 503 while
// Kafka cannot take the write, a refused connection) is sent again, the
// same events with the same $insert_ids, after its Retry-After (at most
// one second), until it is answered `1`. Every event is therefore
// accepted once the load has finished; what Veil must store is every
// event of the requests without the opt-out cookie.
type HTTPLoad struct {
	// Collectors are the base URLs requests go to, in turn.
	Collectors []string
	Token      string
	// Requests requests of PerRequest events each, sent by Senders
	// concurrent senders, each pausing Every between its requests.
	Requests, PerRequest, Senders int
	Every                         time.Duration
	// Users is the number of distinct_ids the events are spread over.
	Users int

	sent    atomic.Int64 // requests answered `1`
	mu      sync.Mutex
	res     HTTPResult
	senders *senders
}

// HTTPResult is what the SDKs saw.
type HTTPResult struct {
	// Events is the number of events accepted (answered `1`), Kept those
	// that must be stored and Dropped those sent with the opt-out cookie.
	Events, Dropped int
	Kept            map[string]bool
	// Attempts is every request sent, retries included; Statuses counts
	// the answers by status ("200", "503", "conn" for a failed
	// connection, "200 but 0" for a 200 not saying `1`).
	Attempts int
	Statuses map[string]int
	// First503 and Last503 bound the answers 503; Sent503 are the times
	// the requests answered 503 were sent.
	First503, Last503 time.Time
	Sent503           []time.Time
}

// SentAfter counts the answers 503 to requests sent at or after t.
func (r HTTPResult) SentAfter(t time.Time) int {
	n := 0
	for _, at := range r.Sent503 {
		if !at.Before(t) {
			n++
		}
	}
	return n
}

// optOutEvery: every optOutEvery-th request carries the opt-out cookie.
const optOutEvery = 10

// Start sends the load in the background; Wait returns what was seen.
func (l *HTTPLoad) Start(t *testing.T) {
	t.Helper()
	l.res = HTTPResult{Kept: map[string]bool{}, Statuses: map[string]int{}}
	l.senders = startSenders(t, l.Senders, l.Requests, l.Every, l.send)
}

// Accepted is the number of requests answered `1` so far.
func (l *HTTPLoad) Accepted() int { return int(l.sent.Load()) }

// send sends request r until it is answered `1`, for at most two minutes.
func (l *HTTPLoad) send(ctx context.Context, client *http.Client, r int, ms int64) error {
	var events []map[string]any
	var ids []string
	for i := 0; i < l.PerRequest; i++ {
		n := r*l.PerRequest + i
		id := fmt.Sprintf("ev-%d", n)
		ids = append(ids, id)
		events = append(events, map[string]any{"event": "page_view", "properties": map[string]any{
			"token": l.Token, "distinct_id": fmt.Sprintf("user-%d", n%l.Users), "time": ms + int64(n), "$insert_id": id,
			"page": fmt.Sprintf("/p/%d", n%13),
		}})
	}
	b, err := json.Marshal(events)
	if err != nil {
		return err
	}
	form := url.Values{"data": {base64.StdEncoding.EncodeToString(b)}}.Encode()
	optout := r%optOutEvery == optOutEvery-1
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 0; ; attempt++ {
		target := l.Collectors[(r+attempt)%len(l.Collectors)]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+"/track", strings.NewReader(form))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if optout {
			req.AddCookie(&http.Cookie{Name: "veil_optout", Value: "1"})
		}
		status, wait := "conn", 100*time.Millisecond
		began := time.Now()
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			status = fmt.Sprint(resp.StatusCode)
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) != "1" {
				status = "200 but " + strings.TrimSpace(string(body))
			}
			if ra := resp.Header.Get("Retry-After"); ra != "" {
				wait = time.Second
			}
		}
		now := time.Now()
		l.mu.Lock()
		l.res.Attempts++
		l.res.Statuses[status]++
		if status == "503" {
			if l.res.First503.IsZero() {
				l.res.First503 = now
			}
			l.res.Last503 = now
			l.res.Sent503 = append(l.res.Sent503, began)
		}
		if status == "200" {
			l.res.Events += len(ids)
			for _, id := range ids {
				if optout {
					l.res.Dropped++
				} else {
					l.res.Kept[id] = true
				}
			}
		}
		l.mu.Unlock()
		if status == "200" {
			l.sent.Add(1)
			return nil
		}
		if err := nextAttempt(ctx, deadline, r, attempt, status, wait); err != nil {
			return err
		}
	}
}

// Wait waits until every request was answered `1` and returns what the
// senders saw; a request never accepted fails the test.
func (l *HTTPLoad) Wait(t *testing.T) HTTPResult {
	t.Helper()
	l.senders.wait(t)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}

// Of503 says how many answers were 503 and over how long.
func (r HTTPResult) Of503() string {
	if r.Statuses["503"] == 0 {
		return "no 503"
	}
	return fmt.Sprintf("%d answers 503 over %s", r.Statuses["503"], r.Last503.Sub(r.First503).Round(10*time.Millisecond))
}

// AccountHTTP waits until the group has committed the whole raw topic and
// ClickHouse holds every kept event, then checks exactly: every event
// answered `1` without the opt-out cookie is stored once after FINAL,
// every opted-out one was dropped, nothing was dead-lettered, and sent =
// stored + dropped by policy + dead-lettered.
func AccountHTTP(t *testing.T, cfg app.Config, r HTTPResult, timeout time.Duration) {
	t.Helper()
	conn := testsvc.Conn(t, cfg.Sink)
	db := cfg.Sink.Database
	waitDrained(t, cfg, conn, len(r.Kept), timeout)
	st := ReadStored(t, conn, db)
	lost, extra := 0, 0
	for id := range r.Kept {
		if !st.InsertIDs[id] {
			lost++
		}
	}
	for id := range st.InsertIDs {
		if !r.Kept[id] {
			extra++
		}
	}
	dlq, otherDLQ := DeadLettered(t, cfg)
	dead := len(dlq) + otherDLQ
	dropped := r.Events - int(st.RowsFinal) - dead
	t.Logf("figures: accounting: accepted %d (answered 1) = stored %d + dropped by policy %d + dead-lettered %d; "+
		"%d event rows before deduplication; %d requests sent for %d accepted, answers %v",
		r.Events, st.RowsFinal, dropped, dead, st.Rows, r.Attempts, r.Statuses["200"], r.Statuses)
	if lost != 0 || extra != 0 {
		t.Errorf("events: %d accepted and lost, %d stored that must not be", lost, extra)
	}
	if st.RowsFinal != uint64(len(r.Kept)) || len(st.InsertIDs) != len(r.Kept) {
		t.Errorf("events: %d rows after FINAL, %d distinct insert_ids; want %d", st.RowsFinal, len(st.InsertIDs), len(r.Kept))
	}
	if dead != 0 {
		t.Errorf("dead-lettered: %d, want 0", dead)
	}
	if dropped != r.Dropped {
		t.Errorf("dropped by policy: %d, want %d", dropped, r.Dropped)
	}
}
