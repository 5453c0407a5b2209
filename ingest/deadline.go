package ingest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// produceDeadlines hands out the contexts that bound Kafka writes. A
// context of its own for each request would start and stop a runtime timer
// each time, about a microsecond of a single-event request; instead the
// writes that start within one window share a context, whose deadline is
// the produce timeout after the window's end. A write is thus given at
// least the timeout and at most the timeout plus one window (a hundredth
// of it: 100 ms of the default 10 s).
type produceDeadlines struct {
	timeout time.Duration
	window  time.Duration
	now     func() time.Time

	cur atomic.Pointer[sharedDeadline]
	mu  sync.Mutex // serialises making the next one
}

type sharedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc // the timer's own expiry releases it; kept for vet
	until  time.Time          // writes that start before serve it
}

func newProduceDeadlines(timeout time.Duration) *produceDeadlines {
	return &produceDeadlines{timeout: timeout, window: timeout / 100, now: time.Now}
}

// context returns a context that ends no sooner than the produce timeout
// from now.
func (d *produceDeadlines) context() context.Context {
	now := d.now()
	if s := d.cur.Load(); s != nil && now.Before(s.until) {
		return s.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.cur.Load(); s != nil && now.Before(s.until) {
		return s.ctx
	}
	until := now.Add(d.window)
	ctx, cancel := context.WithDeadline(context.Background(), until.Add(d.timeout))
	d.cur.Store(&sharedDeadline{ctx: ctx, cancel: cancel, until: until})
	return ctx
}
