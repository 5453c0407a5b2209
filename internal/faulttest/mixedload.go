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

// The kinds of request a MixedLoad sends, in turn.
const (
	// KindSDK is an SDK's POST of a base64 form, sent again until it is
	// answered `1`.
	KindSDK = "sdk"
	// KindPixel is an <img> tag's GET with img=1: sent once, whatever
	// the answer.
	KindPixel = "pixel"
	// KindBeacon is navigator.sendBeacon's POST of text/plain on page
	// hide: sent once, its answer never read by the page.
	KindBeacon = "beacon"
)

var mixedKinds = []string{KindSDK, KindPixel, KindBeacon}

// MixedLoad is a bounded load of /track requests the way browsers and SDKs
// send them: one in three from an SDK (retried until accepted, as
// HTTPLoad's), one a pixel and one a beacon, which are sent once and lost
// if not accepted. No request carries an opt-out.
type MixedLoad struct {
	Token string
	// Requests requests of PerRequest events each, sent by Senders
	// concurrent senders, each pausing Every between its requests.
	Requests, PerRequest, Senders int
	Every                         time.Duration
	Users                         int
	// Prefix starts every $insert_id, so that several loads of one test
	// are told apart.
	Prefix string

	collector atomic.Pointer[string]
	accepted  atomic.Int64 // requests answered success
	mu        sync.Mutex
	res       MixedResult
	senders   *senders
}

// MixedResult is what the clients saw.
type MixedResult struct {
	// Accepted are the $insert_ids of the events of every request
	// answered success (`1`, or the pixel's GIF); Unaccepted those of the
	// pixels and beacons that were not (a 503, a refused connection),
	// which their clients never send again.
	Accepted, Unaccepted map[string]bool
	// Statuses counts the answers by kind and status ("200", "503",
	// "conn" for a failed connection, "200 but X" for a 200 that did not
	// say accepted).
	Statuses map[string]map[string]int
}

// Snapshot is the number of requests answered success so far.
func (l *MixedLoad) Snapshot() int { return int(l.accepted.Load()) }

// SetCollector points the load at a collector's base URL; requests sent
// from then on go there.
func (l *MixedLoad) SetCollector(base string) { l.collector.Store(&base) }

// Start sends the load in the background; Wait returns what was seen.
func (l *MixedLoad) Start(t *testing.T) {
	t.Helper()
	l.res = MixedResult{Accepted: map[string]bool{}, Unaccepted: map[string]bool{}, Statuses: map[string]map[string]int{}}
	for _, k := range mixedKinds {
		l.res.Statuses[k] = map[string]int{}
	}
	l.senders = startSenders(t, l.Senders, l.Requests, l.Every, l.send)
}

func (l *MixedLoad) send(ctx context.Context, client *http.Client, r int, ms int64) error {
	kind := mixedKinds[r%len(mixedKinds)]
	var events []map[string]any
	var ids []string
	for i := range l.PerRequest {
		n := r*l.PerRequest + i
		id := fmt.Sprintf("%s%s-%d", l.Prefix, kind, n)
		ids = append(ids, id)
		events = append(events, map[string]any{"event": "page_view", "properties": map[string]any{
			"token": l.Token, "distinct_id": fmt.Sprintf("user-%d", n%l.Users), "time": ms + int64(n), "$insert_id": id,
			"page": fmt.Sprintf("/p/%d", n%13),
		}})
	}
	var payload any = events
	if l.PerRequest == 1 {
		payload = events[0] // a pixel carries one event, not a list
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	data := url.QueryEscape(base64.StdEncoding.EncodeToString(b))
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 0; ; attempt++ {
		base := *l.collector.Load()
		var req *http.Request
		switch kind {
		case KindPixel:
			req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/track?img=1&data="+data, nil)
		case KindBeacon:
			req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/track", strings.NewReader("data="+data))
			if err == nil {
				req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
			}
		default:
			req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/track", strings.NewReader("data="+data))
			if err == nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
		}
		if err != nil {
			return err
		}
		status, wait := "conn", 100*time.Millisecond
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			status = fmt.Sprint(resp.StatusCode)
			if resp.StatusCode == http.StatusOK {
				accepted := strings.TrimSpace(string(body)) == "1"
				if kind == KindPixel {
					accepted = resp.Header.Get("Content-Type") == "image/gif"
				}
				if !accepted {
					status = "200 but " + strings.TrimSpace(string(body))
				}
			}
			if resp.Header.Get("Retry-After") != "" {
				wait = time.Second
			}
		}
		l.mu.Lock()
		l.res.Statuses[kind][status]++
		switch {
		case status == "200":
			l.accepted.Add(1)
			for _, id := range ids {
				l.res.Accepted[id] = true
			}
		case kind != KindSDK:
			for _, id := range ids {
				l.res.Unaccepted[id] = true
			}
		}
		l.mu.Unlock()
		if status == "200" || kind != KindSDK {
			return nil
		}
		if err := nextAttempt(ctx, deadline, r, attempt, status, wait); err != nil {
			return err
		}
	}
}

// Wait waits until every request was sent (an SDK's until accepted) and
// returns what the clients saw.
func (l *MixedLoad) Wait(t *testing.T) MixedResult {
	t.Helper()
	l.senders.wait(t)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}

// Merge adds the results of another load.
func (r MixedResult) Merge(o MixedResult) MixedResult {
	for id := range o.Accepted {
		r.Accepted[id] = true
	}
	for id := range o.Unaccepted {
		r.Unaccepted[id] = true
	}
	for k, m := range o.Statuses {
		if r.Statuses[k] == nil {
			r.Statuses[k] = map[string]int{}
		}
		for s, n := range m {
			r.Statuses[k][s] += n
		}
	}
	return r
}

// AccountMixed waits until the group has committed the whole raw topic and
// ClickHouse holds every accepted event, then checks exactly: every event
// answered success is stored once after FINAL; nothing is stored that was
// not sent; an event whose pixel or beacon was not accepted may be stored
// (Kafka may have taken the write the collector gave up on) and is
// counted; nothing was dead-lettered. It returns the stored figures.
func AccountMixed(t *testing.T, cfg app.Config, r MixedResult, timeout time.Duration) Stored {
	t.Helper()
	conn := testsvc.Conn(t, cfg.Sink)
	waitDrained(t, cfg, conn, len(r.Accepted), timeout)
	st := ReadStored(t, conn, cfg.Sink.Database)
	lost, stray, unknown := 0, 0, 0
	for id := range r.Accepted {
		if !st.InsertIDs[id] {
			lost++
		}
	}
	for id := range st.InsertIDs {
		switch {
		case r.Accepted[id]:
		case r.Unaccepted[id]:
			stray++
		default:
			unknown++
		}
	}
	dlq, otherDLQ := DeadLettered(t, cfg)
	t.Logf("figures: accounting: %d events answered success = %d stored once after FINAL (%d lost); %d events of pixels and beacons not accepted, "+
		"of which %d stored all the same; %d event rows before deduplication; dead-lettered %d; answers %v",
		len(r.Accepted), len(r.Accepted)-lost, lost, len(r.Unaccepted), stray, st.Rows, len(dlq)+otherDLQ, r.Statuses)
	if lost != 0 || unknown != 0 {
		t.Errorf("events: %d answered success and lost, %d stored that were never sent", lost, unknown)
	}
	if st.RowsFinal != uint64(len(st.InsertIDs)) || len(st.InsertIDs) != len(r.Accepted)+stray {
		t.Errorf("events: %d rows after FINAL, %d distinct insert_ids; want %d (each accepted event once, and the %d strays)",
			st.RowsFinal, len(st.InsertIDs), len(r.Accepted)+stray, stray)
	}
	if len(dlq)+otherDLQ != 0 {
		t.Errorf("dead-lettered: %d, want 0", len(dlq)+otherDLQ)
	}
	return st
}
