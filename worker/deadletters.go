package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/event/rules"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/seal"
)

// The headers of a dead-lettered record.
const (
	// HeaderClass is the fixed reason (a metric label's value).
	HeaderClass = "veil-class"
	// HeaderReason is the fixed reason when the topic is sealed, the
	// reason with its detail when it is not.
	HeaderReason = "veil-reason"
	// HeaderDetail is the reason with its detail, sealed.
	HeaderDetail = "veil-detail"
	// HeaderSource is topic/partition/offset of the raw record.
	HeaderSource = "veil-source"
	// HeaderIndex is the place of an event in its sealed frame.
	HeaderIndex = "veil-index"
)

// DeadLetterReasons lists every fixed reason a record is dead-lettered
// with.
func DeadLetterReasons() []string {
	out := []string{dlqDecode, dlqEncode}
	out = append(out, rules.Reasons...)
	for _, err := range []error{seal.ErrNotSealed, seal.ErrUnknownEpoch, seal.ErrOpen, seal.ErrMalformed, seal.ErrNoKeys} {
		out = append(out, seal.Reason(err))
	}
	return out
}

// DeadLetter is one record of the dead-letter topic as the tools see it:
// its fixed reason and how many events it holds, never its contents.
type DeadLetter struct {
	Class     string
	Events    int
	Partition int
	Offset    int64
	Time      time.Time
	// Record is the record, sealed as it is in the topic.
	Record kafka.Message
}

// ScanDeadLetters calls fn with every record the dead-letter topic holds
// up to where each partition ended when the scan began.
func ScanDeadLetters(ctx context.Context, kcfg kafkax.Config, fn func(DeadLetter) error) error {
	conn, err := kafka.DialContext(ctx, "tcp", kcfg.Brokers[0])
	if err != nil {
		return err
	}
	parts, err := conn.ReadPartitions(kcfg.DLQTopic)
	conn.Close()
	if err != nil {
		return fmt.Errorf("dead-letter topic %s: %w", kcfg.DLQTopic, err)
	}
	slices.SortFunc(parts, func(a, b kafka.Partition) int { return a.ID - b.ID })
	for _, p := range parts {
		if err := scanPartition(ctx, kcfg, p.ID, fn); err != nil {
			return err
		}
	}
	return nil
}

func scanPartition(ctx context.Context, kcfg kafkax.Config, partition int, fn func(DeadLetter) error) error {
	pc, err := kafka.DialLeader(ctx, "tcp", kcfg.Brokers[0], kcfg.DLQTopic, partition)
	if err != nil {
		return err
	}
	first, last, err := pc.ReadOffsets()
	pc.Close()
	if err != nil {
		return err
	}
	if first >= last {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: kcfg.Brokers, Topic: kcfg.DLQTopic, Partition: partition, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return err
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := r.ReadMessage(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("dead-letter topic %s partition %d at offset %d: %w", kcfg.DLQTopic, partition, r.Offset(), err)
		}
		if err := fn(deadLetterOf(m)); err != nil {
			return err
		}
		if m.Offset >= last-1 {
			return nil
		}
	}
}

func deadLetterOf(m kafka.Message) DeadLetter {
	d := DeadLetter{Partition: m.Partition, Offset: m.Offset, Time: m.Time, Events: 1,
		Record: kafka.Message{Key: m.Key, Value: m.Value, Headers: m.Headers}}
	index := false
	for _, h := range m.Headers {
		switch h.Key {
		case HeaderClass:
			d.Class = string(h.Value)
		case HeaderIndex:
			index = true
		}
	}
	if d.Class == "" {
		// A record written before the class had a header of its own: a
		// rule's reason reads "class: detail".
		for _, h := range m.Headers {
			if h.Key == HeaderReason {
				d.Class, _, _ = strings.Cut(string(h.Value), ":")
			}
		}
	}
	if !index {
		d.Events = seal.Count(m.Value)
	}
	return d
}

// Replayed is what ReplayDeadLetters did.
type Replayed struct {
	Scanned        int            // records read
	Records        int            // records written back to the raw topic
	Events         int            // the events those hold
	EventsByReason map[string]int // of those, by reason
}

// ReplayDeadLetters writes the dead-lettered records of the given reasons
// back to the raw topic as they are (still sealed), for the workers to
// take again once what made them fail is mended: the key of a
// seal_unknown_epoch given to the workers, seal.accept_plain for
// unsealed. Replayed events the workers store twice are folded by
// ClickHouse; a record that fails again is dead-lettered again. With
// dryRun nothing is written.
func ReplayDeadLetters(ctx context.Context, kcfg kafkax.Config, reasons []string, dryRun bool) (Replayed, error) {
	known := DeadLetterReasons()
	for _, r := range reasons {
		if !slices.Contains(known, r) {
			return Replayed{}, fmt.Errorf("unknown dead-letter reason %q; the reasons are %s", r, strings.Join(known, ", "))
		}
	}
	if len(reasons) == 0 {
		return Replayed{}, errors.New("name the reasons to replay")
	}
	res := Replayed{EventsByReason: map[string]int{}}
	var w *kafkax.Writer
	if !dryRun {
		w = kafkax.NewWriter(kcfg.Brokers, kcfg.RawTopic, kafkax.DefaultWriterConfig(), nil)
		defer w.Close()
	}
	var batch []kafka.Message
	var batchEvents int
	batchByReason := map[string]int{}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if w != nil {
			if err := w.WriteMessages(ctx, batch...); err != nil {
				return fmt.Errorf("writing back to %s: %w", kcfg.RawTopic, err)
			}
		}
		res.Records += len(batch)
		res.Events += batchEvents
		for r, n := range batchByReason {
			res.EventsByReason[r] += n
		}
		batch, batchEvents = batch[:0], 0
		clear(batchByReason)
		return nil
	}
	err := ScanDeadLetters(ctx, kcfg, func(d DeadLetter) error {
		res.Scanned++
		if !slices.Contains(reasons, d.Class) {
			return nil
		}
		batch = append(batch, kafka.Message{Key: d.Record.Key, Value: d.Record.Value})
		batchEvents += d.Events
		batchByReason[d.Class] += d.Events
		if len(batch) == 100 {
			return flush()
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	return res, flush()
}
