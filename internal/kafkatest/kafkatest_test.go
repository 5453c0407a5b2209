package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func msgs(values ...string) []kafka.Message {
	out := make([]kafka.Message, len(values))
	for i, v := range values {
		out[i] = kafka.Message{Key: []byte("k" + v), Value: []byte(v)}
	}
	return out
}

func values(ms []kafka.Message) string {
	var s []string
	for _, m := range ms {
		s = append(s, string(m.Value))
	}
	return strings.Join(s, ",")
}

// TestProducer: each configuration keeps, copies, discards or refuses
// exactly what it says.
func TestProducer(t *testing.T) {
	errDown := errors.New("kafka: leader not available")
	for _, tc := range []struct {
		name     string
		p        *Producer
		setup    func(p *Producer)
		errs     []error // of three writes: a, b, c
		kept     string  // values kept, after the writer overwrote a's memory
		held     string  // the failed writes' copies
		releases bool
	}{
		{"keeps as given", &Producer{}, nil, []error{nil, nil, nil}, "X,X,X", "", false},
		{"copies", &Producer{Copy: true, Releases: true}, nil, []error{nil, nil, nil}, "a,b,c", "", true},
		{"discards", &Producer{Discard: true}, nil, []error{nil, nil, nil}, "", "", false},
		{"fails every write", &Producer{Discard: true}, func(p *Producer) { p.Fail(errDown) }, []error{errDown, errDown, errDown}, "", "a,b,c", false},
		{"fails the next two", &Producer{Copy: true}, func(p *Producer) { p.FailNext(2, errDown) }, []error{errDown, errDown, nil}, "c", "a,b", false},
		{"fails, then recovers", &Producer{}, func(p *Producer) { p.Fail(errDown); p.Fail(nil) }, []error{nil, nil, nil}, "X,X,X", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(tc.p)
			}
			for i, v := range []string{"a", "b", "c"} {
				m := msgs(v)
				if err := tc.p.WriteMessages(context.Background(), m...); !errors.Is(err, tc.errs[i]) {
					t.Fatalf("write %s: %v, want %v", v, err, tc.errs[i])
				}
				m[0].Value[0] = 'X' // the writer reuses the memory
			}
			if got := values(tc.p.Messages()); got != tc.kept {
				t.Errorf("kept %q, want %q", got, tc.kept)
			}
			if tc.p.Len() != len(tc.p.Messages()) {
				t.Errorf("Len %d, Messages %d", tc.p.Len(), len(tc.p.Messages()))
			}
			given, copies := tc.p.Held()
			if got := values(copies); got != tc.held {
				t.Errorf("held %q, want %q", got, tc.held)
			}
			if len(given) != len(copies) || (len(given) > 0 && string(given[0].Value) != "X") {
				t.Errorf("held as given %q: want the writer's memory", values(given))
			}
			wantWrites := 3
			if tc.p.Discard {
				wantWrites = 0
			}
			if n := tc.p.Writes(); n != wantWrites {
				t.Errorf("Writes %d, want %d", n, wantWrites)
			}
			wantDeadlines := fmt.Sprint([]time.Duration{NoDeadline, NoDeadline, NoDeadline}) // written without a deadline
			if tc.p.Discard {
				wantDeadlines = "[]"
			}
			if got := fmt.Sprint(tc.p.Deadlines()); got != wantDeadlines {
				t.Errorf("Deadlines %s, want %s", got, wantDeadlines)
			}
			if tc.p.ReleasesMessages() != tc.releases {
				t.Errorf("ReleasesMessages %v, want %v", tc.p.ReleasesMessages(), tc.releases)
			}
			tc.p.Reset()
			if n, w, d := tc.p.Len(), tc.p.Writes(), len(tc.p.Deadlines()); n != 0 || w != 0 || d != 0 {
				t.Errorf("after Reset: %d messages, %d writes, %d deadlines", n, w, d)
			}
		})
	}
}

// TestProducerStalls: a stalled write returns only when its context ends,
// with the context's error, keeping no message; SetStall stalls and
// un-stalls the writes that start after it.
func TestProducerStalls(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     *Producer
		setup func(p *Producer)
		stall bool
	}{
		{"Stall", &Producer{Stall: true}, nil, true},
		{"SetStall(true)", &Producer{Copy: true}, func(p *Producer) { p.SetStall(true) }, true},
		{"SetStall(true), discarding", &Producer{Discard: true}, func(p *Producer) { p.SetStall(true) }, true},
		{"SetStall(true), failing", &Producer{}, func(p *Producer) { p.Fail(errors.New("down")); p.SetStall(true) }, true},
		{"SetStall(true), then false", &Producer{}, func(p *Producer) { p.SetStall(true); p.SetStall(false) }, false},
		{"Stall wins over SetStall(false)", &Producer{Stall: true}, func(p *Producer) { p.SetStall(false) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(tc.p)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tc.p.WriteMessages(ctx, msgs("a")...) }()
			if !tc.stall {
				if err := <-done; err != nil {
					t.Fatalf("write: %v", err)
				}
				if n := tc.p.Len(); n != 1 {
					t.Fatalf("kept %d messages, want 1", n)
				}
				return
			}
			select {
			case err := <-done:
				t.Fatalf("a stalled write returned %v before its context ended", err)
			case <-time.After(50 * time.Millisecond):
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("stalled write: %v, want context.Canceled", err)
			}
			if n := tc.p.Len(); n != 0 {
				t.Fatalf("a stalled write kept %d messages", n)
			}
			if given, _ := tc.p.Held(); len(given) != 0 {
				t.Fatalf("a stalled write was held as failed: %d messages", len(given))
			}
			if n, want := tc.p.Writes(), 1; n != want && !tc.p.Discard {
				t.Fatalf("Writes %d, want %d", n, want)
			}
		})
	}
}

// TestProducerStallToggledUnderWrites: SetStall while writes run (go test
// -race checks it): each write either stalls to its deadline or is kept,
// and every one is counted.
func TestProducerStallToggledUnderWrites(t *testing.T) {
	p := &Producer{Copy: true}
	stop := make(chan struct{})
	toggled := make(chan struct{})
	go func() {
		defer close(toggled)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				p.SetStall(i%2 == 0)
				time.Sleep(time.Millisecond)
			}
		}
	}()
	const writers, each = 4, 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, stalled := 0, 0
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				err := p.WriteMessages(ctx, msgs("a")...)
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, context.DeadlineExceeded):
					stalled++
				default:
					t.Errorf("write: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-toggled
	if ok+stalled != writers*each || p.Writes() != writers*each {
		t.Fatalf("%d kept + %d stalled, %d counted; want %d writes", ok, stalled, p.Writes(), writers*each)
	}
	if p.Len() != ok || len(p.Deadlines()) != writers*each {
		t.Fatalf("kept %d messages and %d deadlines; want %d and %d", p.Len(), len(p.Deadlines()), ok, writers*each)
	}
}

// TestProducerDeadlines: each write's deadline is kept as the time it had
// left, whatever became of the write; Discard keeps none, and counts no
// write.
func TestProducerDeadlines(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p       *Producer
		setup   func(p *Producer)
		timeout time.Duration // 0: no deadline
		want    int           // deadlines kept
	}{
		{"kept", &Producer{}, nil, 3 * time.Second, 1},
		{"copied", &Producer{Copy: true}, nil, 3 * time.Second, 1},
		{"failed", &Producer{}, func(p *Producer) { p.FailNext(1, errors.New("down")) }, 3 * time.Second, 1},
		{"stalled", &Producer{}, func(p *Producer) { p.SetStall(true) }, 50 * time.Millisecond, 1},
		{"no deadline", &Producer{}, nil, 0, 1},
		{"discarded", &Producer{Discard: true}, nil, 3 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(tc.p)
			}
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			_ = tc.p.WriteMessages(ctx, msgs("a")...)
			got := tc.p.Deadlines()
			if len(got) != tc.want || tc.p.Writes() != tc.want {
				t.Fatalf("Deadlines %v, Writes %d; want %d of each", got, tc.p.Writes(), tc.want)
			}
			if tc.want == 0 {
				return
			}
			switch {
			case tc.timeout == 0 && got[0] != NoDeadline:
				t.Errorf("a write without a deadline: %v, want NoDeadline", got[0])
			case tc.timeout > 0 && (got[0] > tc.timeout || got[0] < tc.timeout/2):
				t.Errorf("a write given %v: %v", tc.timeout, got[0])
			}
		})
	}
}

// TestProducerDiscardAllocatesNothing: the benchmarks' producer adds no
// allocation of its own to what they measure, also once a stall or a
// failure has come and gone.
func TestProducerDiscardAllocatesNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(p *Producer)
	}{
		{"fresh", nil},
		{"after a stall", func(p *Producer) { p.SetStall(true); p.SetStall(false) }},
		{"after failures", func(p *Producer) {
			p.FailNext(1, errors.New("down"))
			_ = p.WriteMessages(context.Background())
			p.Fail(errors.New("down"))
			p.Fail(nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Producer{Discard: true, Releases: true}
			if tc.setup != nil {
				tc.setup(p)
			}
			m := msgs("a", "b", "c")
			ctx := context.Background()
			if n := testing.AllocsPerRun(1000, func() { _ = p.WriteMessages(ctx, m...) }); n != 0 {
				t.Errorf("%v allocations a write, want 0", n)
			}
		})
	}
}

// BenchmarkDiscard is the fake's own cost in the benchmarks, from
// parallel writers.
func BenchmarkDiscard(b *testing.B) {
	p := &Producer{Discard: true, Releases: true}
	m := msgs("a", "b", "c")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			_ = p.WriteMessages(ctx, m...)
		}
	})
}
