// Package spool is the collector's durable spool: when Kafka cannot take
// a request's messages within a short deadline, they are appended to
// segment files on a local disk, fsync'd, and the request is answered as
// if Kafka had taken them. A replayer sends them to Kafka, in the order
// they were spooled, once it is back (and on start-up after a crash), and
// removes them only after Kafka has acknowledged them.
//
// The contract, for the collector and its users:
//
//   - A request answered success is in Kafka or in the spool (fsync'd)
//     before the answer is written.
//   - While the spool holds anything, every request's messages are
//     spooled behind it rather than sent past it, so a request answered
//     before another was sent is never overtaken by it in its partition.
//   - A message may reach Kafka twice: a write abandoned at the deadline
//     may still be stored by the broker before its spooled copy is
//     replayed, and a replay whose acknowledgement is lost in a crash is
//     replayed again. Both copies are the same bytes (the same envelope,
//     the same $insert_id and time), which the worker stores as the same
//     row: ClickHouse folds them (ReplacingMergeTree; FINAL shows one).
//   - The spool is bounded in bytes and in the age of its oldest message;
//     past either bound a request is refused (the collector answers 503,
//     as it does without a spool) and counted, and nothing spooled is
//     ever dropped to make room.
//
// The segment files are github.com/tidwall/wal's: an append-only log of
// numbered entries, each write fsync'd, trimmed from the front once
// replayed. One entry is one request's messages (entry.go).
package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/tidwall/wal"
	"go.uber.org/zap"

	"github.com/veilhq/veil/internal/kafkax"
)

// Producer is the Kafka writer the spool stands in front of: the
// collector's (ingest.Producer).
type Producer = kafkax.MessageWriter

// Deps are the spool's collaborators.
type Deps struct {
	Logger  *zap.Logger
	Metrics prometheus.Registerer
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Why messages were spooled (veil_collector_spool_spooled_events_total).
const (
	// ReasonDeadline: Kafka did not acknowledge the write within
	// collector.spool.deadline.
	ReasonDeadline = "deadline"
	// ReasonKafkaError: Kafka refused the write.
	ReasonKafkaError = "kafka_error"
	// ReasonBehind: the spool held messages, which a request must not
	// overtake.
	ReasonBehind = "behind"
)

// Why a request was refused (veil_collector_spool_refused_events_total).
const (
	// RefusedFull: the spool would exceed collector.spool.max_bytes.
	RefusedFull = "full"
	// RefusedTooOld: the oldest spooled message is older than
	// collector.spool.max_age.
	RefusedTooOld = "too_old"
	// RefusedWriteFailed: the disk did not take the write.
	RefusedWriteFailed = "write_failed"
	// RefusedClosed: the collector is shutting down.
	RefusedClosed = "closed"
)

// ReasonCorrupt is the replay error of an entry that cannot be read back
// (veil_collector_spool_replay_errors_total); it is skipped.
const ReasonCorrupt = "corrupt"

var (
	// ErrSpooled is matched (errors.Is) by the error WriteMessages returns
	// when Kafka failed and the messages were spooled instead: the write
	// is durable and the request is answered success. The abandoned
	// Kafka write may still hold the messages' memory.
	ErrSpooled = errors.New("spool: messages spooled")
	// ErrRefused is matched by the error of a write that neither Kafka
	// nor the spool took.
	ErrRefused = errors.New("spool: refused")
)

// SpooledError is WriteMessages' answer when Kafka failed (Cause) and the
// messages were spooled. errors.Is(err, ErrSpooled) holds, and errors.As
// sees the cause, so that the Kafka failure is still counted by its
// reason.
type SpooledError struct{ Cause error }

func (e *SpooledError) Error() string {
	return "kafka did not take the write (" + e.Cause.Error() + "); spooled"
}
func (e *SpooledError) Is(target error) bool { return target == ErrSpooled }
func (e *SpooledError) Unwrap() error        { return e.Cause }

// RefusedError is WriteMessages' answer when the spool refused the
// messages: Reason is one of the Refused* constants, and Cause Kafka's
// error when Kafka was tried first (nil when the spool held messages and
// Kafka was not tried).
type RefusedError struct {
	Reason string
	Cause  error
}

func (e *RefusedError) Error() string {
	if e.Cause == nil {
		return "spool refused the write: " + e.Reason
	}
	return "kafka did not take the write (" + e.Cause.Error() + ") and the spool refused it: " + e.Reason
}
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }
func (e *RefusedError) Unwrap() error        { return e.Cause }

// Replays are sent in calls of at most this many messages and bytes: big
// enough that the producer fills its batches for every partition (it
// sends producer.max_batch per produce request), small enough that a
// failed call costs little to repeat.
const (
	replayMaxMessages = 10000
	replayMaxBytes    = 16 << 20
)

// The replayer's back-off after a failed replay, doubling: Kafka is
// asked again soon after it returns, without hammering it while it is
// away.
const (
	replayBackoffMin = 100 * time.Millisecond
	replayBackoffMax = 5 * time.Second
)

// Spool stands in front of the collector's producer.
type Spool struct {
	cfg           Config
	next          Producer
	replayTimeout time.Duration
	log           *zap.Logger
	now           func() time.Time
	m             *metrics
	wal           *wal.Log

	// held is the number of entries spooled and not yet replayed,
	// appends under way included; read without mu on the hot path.
	held atomic.Int64
	// wake tells the replayer an entry was written.
	wake chan struct{}

	mu         sync.Mutex // guards what follows and held's changes
	heldEvents int64
	heldBytes  int64
	oldest     time.Time // when the oldest held entry was spooled; zero when none
	since      time.Time // when the spool last went from empty to holding
	closed     bool

	// The group commit of appends: the first caller writes the queue's
	// entries in one fsync'd batch while later ones wait, and hands the
	// turn to the first of those that arrived meanwhile.
	qmu     sync.Mutex
	queue   []*appendReq
	writing bool
	last    uint64 // the last index written; only the writing caller uses it
	// dirSynced is the directory's modification time when it was last
	// fsync'd; the writing caller's.
	dirSynced time.Time

	// cursor is the index of the next entry to replay, and trimmed the
	// bytes replayed since the files were last trimmed; the replayer's.
	cursor  uint64
	trimmed int64
}

type appendReq struct {
	data []byte
	err  error
	lead bool // woken to write the queue, not with a result
	done chan struct{}
}

// Open opens (or creates) the spool in cfg.Dir in front of next. Messages
// the directory holds from a previous run are replayed by Run.
// replayTimeout bounds one replay call (collector.produce_timeout).
func Open(cfg Config, next Producer, replayTimeout time.Duration, deps Deps) (*Spool, error) {
	if !cfg.Enabled() {
		return nil, errors.New("collector.spool.dir must be set")
	}
	if err := cfg.Validate(replayTimeout); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("collector.spool.dir: %w", err)
	}
	// The spool holds what the raw topic holds: its owner's alone, even
	// in a directory made, or files left, with wider rights.
	if err := private(cfg.Dir); err != nil {
		return nil, fmt.Errorf("collector.spool.dir: %w", err)
	}
	s := &Spool{cfg: cfg, next: next, replayTimeout: replayTimeout, log: deps.Logger.Named("spool"),
		now: deps.Now, wake: make(chan struct{}, 1)}
	var err error
	if s.wal, err = openLog(cfg, s.log); err != nil {
		return nil, fmt.Errorf("collector.spool.dir: %w", err)
	}
	if err := s.load(); err != nil {
		s.wal.Close()
		return nil, fmt.Errorf("collector.spool.dir: %w", err)
	}
	s.m = newMetrics(deps.Metrics, s)
	if n := s.held.Load(); n > 0 {
		s.log.Info("spool holds messages from before; replaying them first",
			zap.Int64("requests", n), zap.Int64("events", s.heldEvents), zap.Int64("bytes", s.heldBytes))
	}
	return s, nil
}

// private takes the group's and others' rights off dir and what it holds.
func private(dir string) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			return os.Chmod(p, perm&^0o077)
		}
		return nil
	})
}

func openLog(cfg Config, log *zap.Logger) (*wal.Log, error) {
	opts := &wal.Options{
		SegmentSize:      cfg.SegmentBytes,
		SegmentCacheSize: 2,
		AllowEmpty:       true,
		DirPerms:         0o700,
		FilePerms:        0o600,
	}
	l, err := wal.Open(cfg.Dir, opts)
	if errors.Is(err, wal.ErrCorrupt) {
		// The last entry was cut short (the machine lost power while it
		// was written, before its fsync returned, so before its request
		// was answered). Cut it off and open again.
		cut, rerr := repairTail(cfg.Dir)
		if rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		log.Warn("spool's last segment ended in a partial entry, never acknowledged; cut it off", zap.Int64("bytes", cut))
		l, err = wal.Open(cfg.Dir, opts)
	}
	return l, err
}

// load counts what the log holds from a previous run.
func (s *Spool) load() error {
	first, err := s.wal.FirstIndex()
	if err != nil {
		return err
	}
	last, err := s.wal.LastIndex()
	if err != nil {
		return err
	}
	s.cursor, s.last = first, last
	for i := first; i <= last; i++ {
		b, err := s.wal.Read(i)
		if err != nil {
			return err
		}
		s.heldBytes += int64(len(b))
		ms, _, _, err := entryHead(b)
		if err != nil {
			continue // counted and skipped by the replayer
		}
		if s.oldest.IsZero() {
			s.oldest = time.UnixMilli(ms)
			s.since = s.oldest
		}
		s.heldEvents += entryEvents(b)
	}
	if last >= first {
		s.held.Store(int64(last - first + 1))
	}
	return nil
}

// ReleasesMessages reports whether the spool holds no message once
// WriteMessages has returned nil: it copies what it spools, so it does
// when the producer behind it does. (After ErrSpooled the abandoned Kafka
// write may still hold them.)
func (s *Spool) ReleasesMessages() bool {
	switch p := s.next.(type) {
	case *kafka.Writer:
		return !p.Async
	case interface{ ReleasesMessages() bool }:
		return p.ReleasesMessages()
	}
	return false
}

// WriteMessages writes msgs to Kafka, or spools them when Kafka does not
// take them within the deadline or the spool already holds messages. It
// returns nil when Kafka acknowledged them or they were spooled without
// trying Kafka, an error matching ErrSpooled when Kafka failed and they
// were spooled, and one matching ErrRefused when the spool refused them.
func (s *Spool) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if s.held.Load() > 0 {
		return s.spool(msgs, ReasonBehind, nil)
	}
	// The write gets the deadline. The collector's context has it already
	// (one timer shared by the writes of a window, see Deadline); another
	// caller's gets a timer of its own.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > s.cfg.Deadline+s.cfg.Deadline/50 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Deadline)
		defer cancel()
	}
	err := s.next.WriteMessages(ctx, msgs...)
	if err == nil {
		return nil
	}
	reason := ReasonKafkaError
	if errors.Is(err, context.DeadlineExceeded) {
		reason = ReasonDeadline
	}
	if serr := s.spool(msgs, reason, err); serr != nil {
		return serr
	}
	return &SpooledError{Cause: err}
}

// spool appends msgs as one entry. cause is Kafka's error, when Kafka was
// tried.
func (s *Spool) spool(msgs []kafka.Message, reason string, cause error) error {
	now := s.now()
	data := appendEntry(make([]byte, 0, entrySize(msgs)), now.UnixMilli(), msgs)
	events := eventsOf(msgs)
	if refused := s.reserve(now, events, int64(len(data))); refused != "" {
		s.m.refused.WithLabelValues(refused).Add(float64(events))
		return &RefusedError{Reason: refused, Cause: cause}
	}
	if err := s.append(data); err != nil {
		s.release(events, int64(len(data)))
		s.m.refused.WithLabelValues(RefusedWriteFailed).Add(float64(events))
		// The error names the file, not its contents.
		s.log.Error("spool write failed; answering 503", zap.Int64("events", events), zap.Error(err))
		return &RefusedError{Reason: RefusedWriteFailed, Cause: cause}
	}
	s.m.spooled.WithLabelValues(reason).Add(float64(events))
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// reserve takes room for an entry, or says why there is none.
func (s *Spool) reserve(now time.Time, events, bytes int64) (refused string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return RefusedClosed
	case s.heldBytes+bytes > s.cfg.MaxBytes:
		return RefusedFull
	case !s.oldest.IsZero() && now.Sub(s.oldest) > s.cfg.MaxAge:
		return RefusedTooOld
	}
	if s.held.Load() == 0 {
		s.oldest, s.since = now, now
		// Once per outage: from here on requests queue in the spool
		// until the replayer has emptied it.
		s.log.Warn("kafka did not take a write in time; spooling requests until it takes them again",
			zap.Duration("deadline", s.cfg.Deadline))
	}
	s.held.Add(1)
	s.heldEvents += events
	s.heldBytes += bytes
	return ""
}

// release gives back the room of an entry that was not written.
func (s *Spool) release(events, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held.Add(-1) == 0 {
		s.oldest = time.Time{}
	}
	s.heldEvents -= events
	s.heldBytes -= bytes
}

// Deadline is how long a write waits for Kafka before it is spooled
// (collector.spool.deadline). A caller that passes contexts with this
// deadline already spares the spool a timer per write.
func (s *Spool) Deadline() time.Duration { return s.cfg.Deadline }

// Room says whether the spool would take a request now, and if not why:
// the collector is ready while it would.
func (s *Spool) Room() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.heldBytes >= s.cfg.MaxBytes:
		return errors.New("spool full (collector.spool.max_bytes)")
	case !s.oldest.IsZero() && s.now().Sub(s.oldest) > s.cfg.MaxAge:
		return errors.New("spool's oldest message is past collector.spool.max_age")
	}
	return nil
}

// Held returns the number of requests, events and bytes spooled and not
// yet replayed.
func (s *Spool) Held() (requests, events, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held.Load(), s.heldEvents, s.heldBytes
}

// append writes data as the log's next entry and fsyncs it, with the
// entries of the callers that arrive while another batch is written.
func (s *Spool) append(data []byte) error {
	r := &appendReq{data: data, done: make(chan struct{})}
	s.qmu.Lock()
	s.queue = append(s.queue, r)
	if s.writing {
		s.qmu.Unlock()
		<-r.done
		if !r.lead {
			return r.err
		}
		s.qmu.Lock()
	}
	s.writing = true
	batch := s.queue
	s.queue = nil
	s.qmu.Unlock()

	var b wal.Batch
	for i, q := range batch {
		b.Write(s.last+uint64(i)+1, q.data)
	}
	err := s.wal.WriteBatch(&b)
	if err == nil {
		s.last += uint64(len(batch))
		if derr := s.syncDir(); derr != nil {
			// The entries are written and fsync'd, and will be
			// replayed: refusing their requests now would have them
			// stored and answered 503. Only a power loss could still
			// lose a new segment's name.
			s.log.Warn("spool directory could not be synced", zap.Error(derr))
		}
	} else if last, lerr := s.wal.LastIndex(); lerr == nil {
		s.last = last // a batch may be cut short between segments
	}
	for _, q := range batch {
		if q != r {
			q.err = err
			close(q.done)
		}
	}
	s.qmu.Lock()
	if len(s.queue) > 0 {
		s.queue[0].lead = true
		close(s.queue[0].done)
	} else {
		s.writing = false
	}
	s.qmu.Unlock()
	return err
}

// syncDir makes the directory's entries durable when they changed since
// it last did: the log fsyncs a segment's data but not the directory, so
// a segment created just before a power loss could vanish with the
// requests it answered. Stat is cheap; a directory's fsync (about 0.1 ms)
// is paid only after a new segment or a trim. The writing caller's.
func (s *Spool) syncDir() error {
	fi, err := os.Stat(s.cfg.Dir)
	if err != nil {
		return err
	}
	if fi.ModTime().Equal(s.dirSynced) {
		return nil
	}
	d, err := os.Open(s.cfg.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return err
	}
	s.dirSynced = fi.ModTime()
	return nil
}

// Run replays the spool to Kafka until ctx ends: whatever the directory
// held at Open first, then each entry as it is written, in order.
func (s *Spool) Run(ctx context.Context) error {
	backoff := replayBackoffMin
	var msgs []kafka.Message
	for {
		n, err := s.replayOnce(ctx, &msgs)
		var wait <-chan time.Time
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			reason := kafkax.ErrorReason(err)
			s.m.replayErrors.WithLabelValues(reason).Inc()
			s.log.Warn("replaying the spool failed; trying again", zap.String("reason", reason),
				zap.Duration("backoff", backoff), zap.Error(err))
			wait = time.After(backoff)
			backoff = min(2*backoff, replayBackoffMax)
		case n > 0:
			backoff = replayBackoffMin
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
			if wait != nil {
				// Kafka just failed: wait out the back-off even if new
				// entries arrive.
				select {
				case <-ctx.Done():
					return nil
				case <-wait:
				}
			}
		case <-wait:
		}
	}
}

// replayOnce sends the next entries to Kafka and, once acknowledged,
// removes them. It returns how many entries it replayed.
func (s *Spool) replayOnce(ctx context.Context, buf *[]kafka.Message) (int, error) {
	last, err := s.wal.LastIndex()
	if err != nil {
		return 0, err
	}
	msgs := (*buf)[:0]
	// bytes and events are what the entries count for in the figures
	// (load's way: a corrupt entry's head, when it can be read).
	var bytes, events int64
	var replayed int64 // the events of the entries that could be read
	i := s.cursor
	for ; i <= last && len(msgs) < replayMaxMessages && bytes < replayMaxBytes; i++ {
		b, err := s.wal.Read(i)
		if err != nil {
			return 0, err
		}
		bytes += int64(len(b))
		before := len(msgs)
		var derr error
		if msgs, _, derr = decodeEntry(msgs, b); derr != nil {
			msgs = msgs[:before]
			events += entryEvents(b)
			s.m.replayErrors.WithLabelValues(ReasonCorrupt).Inc()
			s.log.Error("a spooled entry cannot be read; skipping it", zap.Uint64("index", i), zap.Int("bytes", len(b)))
			continue
		}
		n := eventsOf(msgs[before:])
		events += n
		replayed += n
	}
	entries := int(i - s.cursor)
	if entries == 0 {
		return 0, nil
	}
	*buf = msgs
	if len(msgs) > 0 {
		wctx, cancel := context.WithTimeout(ctx, s.replayTimeout)
		err := s.next.WriteMessages(wctx, msgs...)
		cancel()
		clear(msgs) // the entries' memory goes with them
		if err != nil {
			return 0, err
		}
	}
	s.cursor = i
	s.m.replayed.Add(float64(replayed))
	// The next entry's time is the new oldest, read before the lock.
	var next time.Time
	if i <= last {
		if b, err := s.wal.Read(i); err == nil {
			if ms, _, _, err := entryHead(b); err == nil {
				next = time.UnixMilli(ms)
			}
		}
	}
	s.mu.Lock()
	if s.held.Add(-int64(entries)) == 0 {
		s.log.Info("spool drained; requests go to kafka again", zap.Duration("spooling_for", s.now().Sub(s.since).Round(time.Millisecond)))
		s.oldest = time.Time{}
	} else if !next.IsZero() {
		s.oldest = next
	} else {
		// Only entries still being written remain.
		s.oldest = s.now()
	}
	s.heldEvents -= events
	s.heldBytes -= bytes
	s.mu.Unlock()
	// Trimming rewrites the rest of the first segment, so it is done
	// once a segment's worth was replayed, or when nothing is left (which
	// costs nothing). Entries replayed but not yet trimmed when the
	// collector dies are replayed again at the next start: duplicates
	// that ClickHouse folds.
	s.trimmed += bytes
	if i > last || s.trimmed >= int64(s.cfg.SegmentBytes) {
		if err := s.wal.TruncateFront(i); err != nil {
			return entries, err
		}
		s.trimmed = 0
	}
	return entries, nil
}

// Close stops taking messages and closes the files. Run must have
// returned; what is left is replayed at the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	// An append under way finishes first: WriteBatch and Close share
	// the log's lock.
	requests, events, bytes := s.Held()
	if requests > 0 {
		s.log.Info("spool closed with messages left; they are replayed at the next start",
			zap.Int64("requests", requests), zap.Int64("events", events), zap.Int64("bytes", bytes))
	}
	return s.wal.Close()
}
