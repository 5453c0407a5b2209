package kafkax

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestElectionOneAtATime: of three members of one group, exactly one is
// elected; when it leaves, another is, and never two at once.
func TestElectionOneAtATime(t *testing.T) {
	topic := newTopic(t, 1)
	var mu sync.Mutex
	running, most := map[int]bool{}, 0
	elected := func() []int {
		mu.Lock()
		defer mu.Unlock()
		var out []int
		for i, on := range running {
			if on {
				out = append(out, i)
			}
		}
		return out
	}
	cancels := make([]context.CancelFunc, 3)
	var wg sync.WaitGroup
	for i := range cancels {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		e := Election{Brokers: cluster.ListenAddrs(), Topic: topic, Group: topic + ".group",
			SessionTimeout: 6 * time.Second, RebalanceTimeout: 6 * time.Second, Heartbeat: 500 * time.Millisecond}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.Run(ctx, func(ctx context.Context) {
				mu.Lock()
				running[i] = true
				n := 0
				for _, on := range running {
					if on {
						n++
					}
				}
				most = max(most, n)
				mu.Unlock()
				<-ctx.Done()
				mu.Lock()
				running[i] = false
				mu.Unlock()
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	}()
	waitFor(t, "one member elected", func() bool { return len(elected()) == 1 })
	first := elected()[0]
	cancels[first]()
	waitFor(t, "another member elected", func() bool { e := elected(); return len(e) == 1 && e[0] != first })
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Errorf("%d members ran at once", most)
	}
}
