package kafkatest

import (
	"context"
	"errors"
	"strings"
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
			if tc.p.ReleasesMessages() != tc.releases {
				t.Errorf("ReleasesMessages %v, want %v", tc.p.ReleasesMessages(), tc.releases)
			}
			tc.p.Reset()
			if n := tc.p.Len(); n != 0 {
				t.Errorf("%d messages after Reset", n)
			}
		})
	}
}

// TestProducerStalls: a stalled write returns only when its context ends,
// with the context's error.
func TestProducerStalls(t *testing.T) {
	p := &Producer{Stall: true}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.WriteMessages(ctx, msgs("a")...) }()
	select {
	case err := <-done:
		t.Fatalf("a stalled write returned %v before its context ended", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stalled write: %v, want context.Canceled", err)
	}
	if n := p.Len(); n != 0 {
		t.Fatalf("a stalled write kept %d messages", n)
	}
}
