package loadgen

import (
	"maps"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// drainPacer takes tickets at the given moments until the pacer says stop.
func drainPacer(p *pacer, now func(i int) time.Time) (dues []time.Time) {
	for i := 0; ; i++ {
		_, due, ok := p.next(now(i))
		if !ok {
			return dues
		}
		dues = append(dues, due)
		if i > 1e6 {
			panic("pacer never stops")
		}
	}
}

func TestPacer(t *testing.T) {
	at := func(time.Time) func(int) time.Time { return func(int) time.Time { return t0 } }
	for _, tc := range []struct {
		name     string
		rate     float64
		duration time.Duration
		limit    int64
		now      func(i int) time.Time
		want     int
		wantDue  map[int]time.Duration // ticket → due - start
	}{
		// 1000/s for 200 ms: tickets 0..199, due every millisecond; the
		// one due at the deadline is not sent.
		{"rate_duration", 1000, 200 * time.Millisecond, 0, at(t0), 200,
			map[int]time.Duration{0: 0, 1: time.Millisecond, 199: 199 * time.Millisecond}},
		// The schedule does not depend on when tickets are taken: late
		// takers get the times they were due, not now.
		{"rate_late_taker", 100, time.Second, 0, func(int) time.Time { return t0.Add(time.Hour) }, 100,
			map[int]time.Duration{50: 500 * time.Millisecond}},
		{"rate_fractional", 3, time.Second, 0, at(t0), 3,
			map[int]time.Duration{1: 333333333, 2: 666666666}},
		{"rate_limit_first", 1000, time.Second, 25, at(t0), 25, nil},
		{"limit_only", 0, 0, 7, at(t0), 7, map[int]time.Duration{6: 0}},
		// Flat out, a ticket is due when taken, and the deadline is
		// checked against the clock.
		{"flat_out_duration", 0, 10 * time.Millisecond, 0, func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }, 10,
			map[int]time.Duration{9: 9 * time.Millisecond}},
		{"flat_out_limit_first", 0, time.Hour, 3, at(t0), 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPacer(t0, tc.rate, tc.duration, tc.limit)
			dues := drainPacer(p, tc.now)
			if len(dues) != tc.want {
				t.Fatalf("%d tickets, want %d", len(dues), tc.want)
			}
			for i, d := range tc.wantDue {
				if got := dues[i].Sub(t0); got != d {
					t.Errorf("ticket %d due at +%v, want +%v", i, got, d)
				}
			}
			// Once over, it stays over.
			if _, _, ok := p.next(t0); ok {
				t.Error("a ticket after the end")
			}
		})
	}
}

// Concurrent takers share one schedule: every ticket number is handed out
// once, and exactly limit of them.
func TestPacerConcurrent(t *testing.T) {
	p := newPacer(t0, 1e6, time.Hour, 10000)
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i, _, ok := p.next(t0)
				if !ok {
					return
				}
				mu.Lock()
				if seen[i] {
					t.Errorf("ticket %d twice", i)
				}
				seen[i] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != 10000 {
		t.Fatalf("%d tickets, want 10000", len(seen))
	}
}

func TestRequestRate(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		unit  string
		batch int
		want  float64
	}{
		{50000, UnitEvents, 50, 1000},
		{50000, UnitRequests, 50, 50000},
		{0, UnitEvents, 50, 0},
	} {
		c := Config{Rate: tc.rate, RateUnit: tc.unit, Batch: tc.batch}
		if got := c.requestRate(); got != tc.want {
			t.Errorf("rate %v %s batch %d: %v requests/s, want %v", tc.rate, tc.unit, tc.batch, got, tc.want)
		}
	}
}

func TestMatchLags(t *testing.T) {
	// 3 events accepted in ms 0, 2 in ms 5, 5 in ms 10 (10 in all).
	accepted := make([]int64, 11)
	accepted[0], accepted[5], accepted[10] = 3, 2, 5
	samples := []countSample{
		{t0.Add(100 * time.Millisecond), 0},
		{t0.Add(1000 * time.Millisecond), 4}, // events 1-4: ms 0 (3) and ms 5 (1)
		{t0.Add(1500 * time.Millisecond), 4},
		{t0.Add(2000 * time.Millisecond), 12}, // more rows than accepted: capped at 10
	}
	h := newLagHist()
	if n := matchLags(t0, accepted, samples, h); n != 10 {
		t.Fatalf("matched %d, want 10", n)
	}
	// Lags (ms, the event taken at the middle of its millisecond, then
	// truncated): 3×999, 1×994, 1×1994, 5×1989.
	want := map[int64]int64{999: 3, 994: 1, 1994: 1, 1989: 5}
	got := map[int64]int64{}
	for _, b := range h.Distribution() { // exact below 2048 at 3 digits
		if b.Count > 0 {
			got[b.From] += b.Count
		}
	}
	if h.TotalCount() != 10 || !maps.Equal(got, want) {
		t.Fatalf("lags %v, want %v", got, want)
	}
}

func TestMatchLagsNothing(t *testing.T) {
	h := newLagHist()
	if n := matchLags(t0, nil, []countSample{{t0, 5}}, h); n != 0 || h.TotalCount() != 0 {
		t.Fatalf("matched %d with nothing accepted", n)
	}
}
