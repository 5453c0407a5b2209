// Package kafkatest is the fake Kafka producer of Veil's tests and
// benchmarks: one type, configured per test to keep what it is given, keep
// copies, keep nothing, stall, fail with a given error, or say that it
// releases the messages it was given (as kafka-go's synchronous Writer and
// Veil's own producer do).
//
// It is for tests and tools only: the veil binary does not link it
// (cmd/veil/deps_test.go).
package kafkatest

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"

	"github.com/segmentio/kafka-go"
)

// Producer takes writes as a test configures it; its zero value keeps
// every message it is given, as given, and never fails. It is safe for
// concurrent use.
type Producer struct {
	// Copy keeps copies of each message's key and value (what a broker
	// stores) instead of the messages themselves, whose memory a
	// collector that is told they are released reuses.
	Copy bool
	// Discard keeps nothing: writes succeed at once (a collector without
	// Kafka, for benchmarks).
	Discard bool
	// Releases is what ReleasesMessages reports: that the producer holds
	// no reference to a write's messages once it has returned nil.
	Releases bool
	// Stall makes each write wait for its context to end and return the
	// context's error: a broker that never answers.
	Stall bool

	// failing is non-zero while Fail or FailNext has set a failure: the
	// one check a Discard write makes without the lock.
	failing atomic.Int32

	mu       sync.Mutex
	msgs     []kafka.Message
	err      error // every write fails with it (Fail)
	failures int   // the next failures writes fail with failErr (FailNext)
	failErr  error
	held     []kafka.Message // the failed writes' messages, as given
	heldCopy []kafka.Message // and copies of them made when given
}

// WriteMessages keeps msgs (or copies, or nothing) unless a failure is
// set, in which case it keeps a reference to them and a copy (Held) and
// returns the error, as kafka-go's Writer may still hold a failed write's
// messages.
func (p *Producer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if p.Stall {
		<-ctx.Done()
		return ctx.Err()
	}
	if p.Discard && p.failing.Load() == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.err
	if err == nil && p.failures > 0 {
		p.failures--
		err = p.failErr
		if p.failures == 0 {
			p.failing.Add(-1)
		}
	}
	if err != nil {
		for _, m := range msgs {
			p.held = append(p.held, m)
			p.heldCopy = append(p.heldCopy, clone(m))
		}
		return err
	}
	switch {
	case p.Discard:
	case p.Copy:
		for _, m := range msgs {
			p.msgs = append(p.msgs, clone(m))
		}
	default:
		p.msgs = append(p.msgs, msgs...)
	}
	return nil
}

// ReleasesMessages reports Releases.
func (p *Producer) ReleasesMessages() bool { return p.Releases }

// Close does nothing: the fake holds no connection.
func (p *Producer) Close() error { return nil }

// Fail makes every write fail with err from now on; Fail(nil) ends that.
func (p *Producer) Fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.err == nil && err != nil:
		p.failing.Add(1)
	case p.err != nil && err == nil:
		p.failing.Add(-1)
	}
	p.err = err
}

// FailNext makes the next n writes fail with err.
func (p *Producer) FailNext(n int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures == 0 && n > 0 {
		p.failing.Add(1)
	}
	if p.failures > 0 && n <= 0 {
		p.failing.Add(-1)
	}
	p.failures, p.failErr = max(n, 0), err
}

// Messages returns what was kept, in the order written.
func (p *Producer) Messages() []kafka.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]kafka.Message(nil), p.msgs...)
}

// Len is how many messages were kept.
func (p *Producer) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

// Held returns the messages of the writes that failed, as given (whose
// memory the writer may since have changed), and copies of them made when
// they were given.
func (p *Producer) Held() (given, copies []kafka.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]kafka.Message(nil), p.held...), append([]kafka.Message(nil), p.heldCopy...)
}

// Reset forgets the messages kept and held; the configuration and any
// failure set stay.
func (p *Producer) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs, p.held, p.heldCopy = nil, nil, nil
}

func clone(m kafka.Message) kafka.Message {
	c := kafka.Message{Topic: m.Topic, Key: bytes.Clone(m.Key), Value: bytes.Clone(m.Value), Time: m.Time}
	for _, h := range m.Headers {
		c.Headers = append(c.Headers, kafka.Header{Key: h.Key, Value: bytes.Clone(h.Value)})
	}
	return c
}
