package loadgen

import (
	"sync/atomic"
	"time"
)

// pacer hands out the requests of a run, each as a ticket: its sequence
// number and when it is due.
//
// At a fixed rate the schedule is fixed in advance, request i due at
// start + i/rate, whatever happened to earlier requests. A request that
// starts late (every connection busy) is still measured from when it was
// due, so a stalled server shows up as latency instead of silently
// lowering the rate it was offered: the "coordinated omission" that
// closed-loop generators suffer from. Flat out, a request is due when a
// worker is free to send it.
type pacer struct {
	start    time.Time
	rate     float64   // requests per second; 0 is flat out
	deadline time.Time // zero: no time bound
	limit    int64     // requests; 0: no count bound
	n        atomic.Int64
	over     atomic.Bool
}

func newPacer(start time.Time, rate float64, duration time.Duration, limit int64) *pacer {
	p := &pacer{start: start, rate: rate, limit: limit}
	if duration > 0 {
		p.deadline = start.Add(duration)
	}
	return p
}

// due is when request i is due at the fixed rate.
func (p *pacer) due(i int64) time.Time {
	return p.start.Add(time.Duration(float64(i) * float64(time.Second) / p.rate))
}

// next returns the next ticket, or ok false once the run is over: all
// limit requests handed out, or the next one due at or after the deadline
// (flat out: now at or after the deadline).
func (p *pacer) next(now time.Time) (i int64, due time.Time, ok bool) {
	if p.over.Load() {
		return 0, time.Time{}, false
	}
	i = p.n.Add(1) - 1
	if p.limit > 0 && i >= p.limit {
		p.over.Store(true)
		return i, time.Time{}, false
	}
	due = now
	if p.rate > 0 {
		due = p.due(i)
	}
	if !p.deadline.IsZero() && !due.Before(p.deadline) {
		p.over.Store(true)
		return i, time.Time{}, false
	}
	return i, due, true
}
