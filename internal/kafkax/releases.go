package kafkax

import (
	"context"

	"github.com/segmentio/kafka-go"
)

// MessageWriter is what Veil writes messages to Kafka through: its own
// Producer, kafka-go's Writer, and what stands in front of them (the
// collector's spool, sealing).
type MessageWriter interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// ReleasesMessages reports whether w, a Kafka writer, is done with the
// messages of a WriteMessages call once it has returned nil, so that the
// caller may reuse their memory. kafka-go's synchronous Writer is: it
// returns only after every batch holding them was written (or on an
// error, after which callers do not reuse them). A writer of Veil's says
// so with a method ReleasesMessages() bool; any other is taken to keep
// what it is given.
func ReleasesMessages(w any) bool {
	switch w := w.(type) {
	case *kafka.Writer:
		return !w.Async
	case interface{ ReleasesMessages() bool }:
		return w.ReleasesMessages()
	}
	return false
}
