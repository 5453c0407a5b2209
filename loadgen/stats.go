package loadgen

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Error classes: a fixed set, so that the report's keys are stable.
const (
	classTimeout     = "timeout"      // no answer within the request timeout
	classConnect     = "connect"      // the connection was refused or could not be made
	classIO          = "io"           // the connection failed mid-request
	classRejected    = "rejected"     // 200, but not every event was accepted
	classStatus400   = "status_400"   // malformed request
	classStatus413   = "status_413"   // too large
	classStatus429   = "status_429"   // rate limited
	classStatus503   = "status_503"   // Kafka did not take the write in time
	classStatus4xx   = "status_4xx"   // any other 4xx
	classStatus5xx   = "status_5xx"   // any other 5xx
	classStatusOther = "status_other" // 1xx, 3xx
)

var errorClasses = []string{classTimeout, classConnect, classIO, classRejected, classStatus400, classStatus413,
	classStatus429, classStatus503, classStatus4xx, classStatus5xx, classStatusOther}

func statusClass(code int) string {
	switch {
	case code == 400:
		return classStatus400
	case code == 413:
		return classStatus413
	case code == 429:
		return classStatus429
	case code == 503:
		return classStatus503
	case code >= 400 && code < 500:
		return classStatus4xx
	case code >= 500:
		return classStatus5xx
	}
	return classStatusOther
}

// errorClass classifies a failed round trip.
func errorClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return classTimeout
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EADDRNOTAVAIL):
		return classConnect
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return classConnect
	}
	return classIO
}

// Latencies are recorded in microseconds, from 1 µs to 2 minutes, to three
// significant digits.
const (
	histMin    = 1
	histMax    = int64(2 * time.Minute / time.Microsecond)
	histDigits = 3
)

func newHist() *hdr.Histogram { return hdr.New(histMin, histMax, histDigits) }

func recordDuration(h *hdr.Histogram, d time.Duration) {
	us := d.Microseconds()
	if us < histMin {
		us = histMin
	}
	if us > histMax {
		us = histMax
	}
	_ = h.RecordValue(us) // within range by construction
}

// tick is what happened in one progress interval.
type tick struct {
	requests, events, errors int64
	lat                      *hdr.Histogram
}

// recorder collects the outcome of every request. One mutex guards it: a
// record takes tens of nanoseconds, far below what a request costs.
type recorder struct {
	mu          sync.Mutex
	start       time.Time // the run's start: the acceptance timeline's origin
	measureFrom time.Time // the end of the warmup

	// The measured part of the run.
	requests, events int64
	errors           map[string]int64
	lat              *hdr.Histogram // from due to answer
	service          *hdr.Histogram // from sending to answer
	lastEnd          time.Time

	cur tick

	// accepted counts the events accepted in each millisecond since start,
	// warmup included: the end-to-end lag is matched against it.
	accepted      []int64
	acceptedTotal int64
	lastAccept    time.Time
}

func newRecorder(start, measureFrom time.Time) *recorder {
	return &recorder{
		start:       start,
		measureFrom: measureFrom,
		errors:      map[string]int64{},
		lat:         newHist(),
		service:     newHist(),
		cur:         tick{lat: newHist()},
	}
}

// record notes one request: due is when it was scheduled, sent when it was
// sent, end when its answer was read; class is "" for success.
func (r *recorder) record(due, sent, end time.Time, events int, class string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if class == "" {
		ms := int(end.Sub(r.start) / time.Millisecond)
		if ms < 0 {
			ms = 0
		}
		for len(r.accepted) <= ms {
			r.accepted = append(r.accepted, 0)
		}
		r.accepted[ms] += int64(events)
		r.acceptedTotal += int64(events)
		r.lastAccept = end
	}
	r.cur.requests++
	if class == "" {
		r.cur.events += int64(events)
	} else {
		r.cur.errors++
	}
	recordDuration(r.cur.lat, end.Sub(due))
	if due.Before(r.measureFrom) {
		return
	}
	r.requests++
	if class == "" {
		r.events += int64(events)
	} else {
		r.errors[class]++
	}
	recordDuration(r.lat, end.Sub(due))
	recordDuration(r.service, end.Sub(sent))
	if end.After(r.lastEnd) {
		r.lastEnd = end
	}
}

// takeTick returns the current interval's figures and starts a new one.
func (r *recorder) takeTick() tick {
	fresh := newHist()
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.cur
	r.cur = tick{lat: fresh}
	return t
}

// acceptedSoFar returns how many events have been accepted, and when the
// last of them was.
func (r *recorder) acceptedSoFar() (int64, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acceptedTotal, r.lastAccept
}

// acceptedAt returns when the k-th accepted event (1-based) was accepted,
// taken as the middle of its millisecond, or ok false if fewer were.
func (r *recorder) acceptedAt(k int64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cum int64
	for ms, n := range r.accepted {
		cum += n
		if cum >= k {
			return r.start.Add(time.Duration(ms)*time.Millisecond + time.Millisecond/2), true
		}
	}
	return time.Time{}, false
}

// Percentiles are latency figures in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func percentiles(h *hdr.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		P50:  ms(h.ValueAtQuantile(50)),
		P90:  ms(h.ValueAtQuantile(90)),
		P99:  ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)),
		Max:  ms(h.Max()),
		Mean: h.Mean() / 1000,
	}
}

// responseOK reports whether a 200 answer says every event was accepted:
// "1", or the verbose {"status":1,"error":null}.
func responseOK(status int, body []byte) bool {
	if status != http.StatusOK {
		return false
	}
	s := string(body)
	return s == "1" || s == `{"status":1,"error":null}` || s == "{\"status\":1,\"error\":null}\n"
}
