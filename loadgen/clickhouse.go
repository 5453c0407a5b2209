package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// The end-to-end measurement. ClickHouse's count of the events table is
// sampled every WatchInterval over its HTTP interface (the first sample,
// before any request, is the baseline). Events are matched to samples in
// the order they were accepted: if a sample taken at T counts Q rows above
// the baseline, the first Q events the collector accepted are taken to
// have become queryable by T at the latest, and each one's lag is T minus
// the moment its acceptance was read. The worker writes what it fetched in
// one insert per batch, so events become queryable in acceptance order up
// to one batch; the lag is an upper bound, coarse by one sampling interval
// plus the count query's own time. The throughput is the number of rows
// that appeared over the time they took to appear.

// countSample is one reading of the table's row count above the baseline.
type countSample struct {
	at   time.Time // when the answer was read
	rows int64
}

// counter reads SELECT count() FROM table over ClickHouse's HTTP interface.
type counter struct {
	url            string
	query          string
	user, password string // none when user is empty
	client         *http.Client
}

func newCounter(url, table, user, password string) *counter {
	return &counter{
		url:      url,
		query:    "SELECT count() FROM " + table,
		user:     user,
		password: password,
		client:   &http.Client{Transport: loopbackTransport(2), Timeout: 10 * time.Second, CheckRedirect: noRedirects},
	}
}

func (c *counter) count(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(c.query))
	if err != nil {
		return 0, err
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("loadgen: ClickHouse count: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return 0, fmt.Errorf("loadgen: ClickHouse count: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("loadgen: ClickHouse count: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("loadgen: ClickHouse count: unexpected answer %q", strings.TrimSpace(string(b)))
	}
	return n, nil
}

func (c *counter) close() { c.client.CloseIdleConnections() }

// watcher samples the count while the run lasts.
type watcher struct {
	c        *counter
	baseline int64
	interval time.Duration

	mu      sync.Mutex
	samples []countSample
	errors  int64
}

// run samples until ctx ends.
func (w *watcher) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.sample(ctx)
		}
	}
}

func (w *watcher) sample(ctx context.Context) (countSample, bool) {
	n, err := w.c.count(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			w.errors++
		}
		return countSample{}, false
	}
	s := countSample{at: time.Now(), rows: n - w.baseline}
	w.samples = append(w.samples, s)
	return s, true
}

func (w *watcher) last() (countSample, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.samples) == 0 {
		return countSample{}, false
	}
	return w.samples[len(w.samples)-1], true
}

func (w *watcher) snapshot() ([]countSample, int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]countSample(nil), w.samples...), w.errors
}

// Lags are kept in milliseconds, up to an hour.
func newLagHist() *hdr.Histogram { return hdr.New(1, int64(time.Hour/time.Millisecond), histDigits) }

// matchLags gives each accepted event (counted per millisecond since start
// in accepted) the time of the first sample whose count includes it, and
// records the lags. It returns how many events were matched.
func matchLags(start time.Time, accepted []int64, samples []countSample, h *hdr.Histogram) int64 {
	var total int64
	for _, n := range accepted {
		total += n
	}
	ms, left := 0, int64(0) // the bucket being consumed and what is left of it
	if len(accepted) > 0 {
		left = accepted[0]
	}
	var matched int64
	for _, s := range samples {
		q := min(s.rows, total)
		for matched < q {
			for left == 0 {
				ms++
				left = accepted[ms]
			}
			take := min(left, q-matched)
			at := start.Add(time.Duration(ms)*time.Millisecond + time.Millisecond/2)
			lag := s.at.Sub(at).Milliseconds()
			lag = max(lag, 1)
			lag = min(lag, h.HighestTrackableValue())
			_ = h.RecordValues(lag, take) // clamped into range above
			left -= take
			matched += take
		}
	}
	return matched
}

// EndToEnd is what the watch of the events table found.
type EndToEnd struct {
	Table    string `json:"table"`
	Baseline int64  `json:"baseline_rows"`
	// Accepted is every event the collector accepted during the run,
	// warmup included; Queryable the rows that appeared in the table.
	Accepted  int64 `json:"accepted_events"`
	Queryable int64 `json:"queryable_events"`
	// CaughtUp says whether every accepted event became queryable within
	// the drain time.
	CaughtUp bool `json:"caught_up"`
	// DrainSeconds is from the last acceptance until the count caught up
	// (or the drain time ran out).
	DrainSeconds float64 `json:"drain_seconds"`
	// EventsPerSec is Queryable over the time from the first request until
	// the count caught up: the rate the whole pipeline sustained.
	EventsPerSec float64 `json:"events_per_sec"`
	// DuringSendPerSec is the rows that appeared while requests were being
	// sent, over that time.
	DuringSendPerSec float64 `json:"during_send_events_per_sec"`
	// LagMs is the accepted→queryable lag of the events matched to a
	// sample (see the method), in milliseconds.
	LagMs       Percentiles `json:"lag_ms"`
	Matched     int64       `json:"matched_events"`
	Samples     int         `json:"samples"`
	CountErrors int64       `json:"count_errors"`
	Method      string      `json:"method"`
}

const lagMethod = "count() sampled every watch interval; the first Q accepted events are taken as queryable at the first sample counting Q rows above the baseline; lag = that sample's time - the event's acceptance time (upper bound, resolution one interval)"

func lagPercentiles(h *hdr.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		P50:  float64(h.ValueAtQuantile(50)),
		P90:  float64(h.ValueAtQuantile(90)),
		P99:  float64(h.ValueAtQuantile(99)),
		P999: float64(h.ValueAtQuantile(99.9)),
		Max:  float64(h.Max()),
		Mean: h.Mean(),
	}
}
