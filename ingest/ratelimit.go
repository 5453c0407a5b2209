package ingest

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLimiter is a token bucket of events per project. The set of projects
// is the configured one (or the single default project under
// AcceptAnyToken), so the map stays bounded.
type rateLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newRateLimiter(l Limits) *rateLimiter {
	if l.RateLimit <= 0 {
		return nil
	}
	return &rateLimiter{limit: rate.Limit(l.RateLimit), burst: l.rateBurst(), buckets: map[string]*rate.Limiter{}}
}

func (rl *rateLimiter) bucket(project string) *rate.Limiter {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	b, ok := rl.buckets[project]
	if !ok {
		b = rate.NewLimiter(rl.limit, rl.burst)
		rl.buckets[project] = b
	}
	return b
}

// projectCount is how many events of one project a request carries.
type projectCount struct {
	project string
	n       int
}

// admit takes the request's events out of each project's bucket, all or
// nothing. When a bucket is short it takes nothing and says how long until
// a retry can pass.
func (rl *rateLimiter) admit(counts []projectCount, now time.Time) (ok bool, retryAfter time.Duration) {
	if rl == nil {
		return true, 0
	}
	reservations := make([]*rate.Reservation, 0, len(counts))
	for _, pc := range counts {
		r := rl.bucket(pc.project).ReserveN(now, pc.n)
		if !r.OK() || r.DelayFrom(now) > 0 {
			wait := r.DelayFrom(now)
			if !r.OK() {
				wait = time.Second
			}
			r.CancelAt(now)
			for _, prev := range reservations {
				prev.CancelAt(now)
			}
			return false, wait
		}
		reservations = append(reservations, r)
	}
	return true, 0
}
