package faulttest

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// senders is the HTTP loads' engine: n goroutines send requests 0 …
// requests-1 in turn, each pausing every between its requests, until all
// are sent, a send fails (the first error ends them all) or the test
// ends, which stops the senders and waits for them.
type senders struct {
	done     chan struct{}
	mu       sync.Mutex
	firstErr error
}

// startSenders starts them; send is given the shared client, the request's
// number and the load's start in Unix milliseconds.
func startSenders(t *testing.T, n, requests int, every time.Duration, send func(ctx context.Context, client *http.Client, r int, ms int64) error) *senders {
	s := &senders{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	client := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	var next atomic.Int64
	ms := time.Now().UnixMilli()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r := int(next.Add(1)) - 1
				if r >= requests || ctx.Err() != nil {
					return
				}
				if err := send(ctx, client, r, ms); err != nil {
					s.mu.Lock()
					if s.firstErr == nil {
						s.firstErr = err
					}
					s.mu.Unlock()
					cancel()
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(every):
				}
			}
		}()
	}
	go func() { wg.Wait(); close(s.done) }()
	return s
}

// wait waits for the senders and fails the test with the first error.
func (s *senders) wait(t *testing.T) {
	t.Helper()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstErr != nil {
		t.Fatalf("sending the load: %v", s.firstErr)
	}
}

// nextAttempt waits wait before request r's next attempt, or says why there
// is none: the test ended, or two minutes passed without its acceptance.
func nextAttempt(ctx context.Context, deadline time.Time, r, attempt int, status string, wait time.Duration) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if time.Now().After(deadline) {
		return fmt.Errorf("request %d not accepted after %d attempts in two minutes (last: %s)", r, attempt+1, status)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
		return nil
	}
}
