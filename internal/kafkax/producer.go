package kafkax

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// ProducerConfig tunes the collector's producer.
type ProducerConfig struct {
	// MaxBatch is the most messages one produce request carries, and
	// MaxBatchBytes the most bytes its record batch may take before
	// compression: keys, values and headers with each record's framing
	// (at most recordOverhead bytes) and the batch's header, as the
	// broker measures it against its message.max.bytes. A single write
	// larger than either is sent in parts.
	// Requests are not held back to fill a batch: a batch is what arrived
	// while the partition's previous request was in flight.
	MaxBatch      int `yaml:"max_batch"`
	MaxBatchBytes int `yaml:"max_batch_bytes"`
	// WriteTimeout bounds one produce request, and MaxAttempts the tries
	// of one batch (a temporary error is retried after a back-off).
	WriteTimeout time.Duration `yaml:"write_timeout"`
	MaxAttempts  int           `yaml:"max_attempts"`
	// Compression of produced batches: auto (the default), lz4, zstd,
	// snappy, gzip or none. auto is lz4, or none when the envelopes are
	// sealed (seal.key_file), whose bytes do not compress. lz4 pays for
	// itself on plain envelopes even with the broker on the same machine:
	// with none, `veil dev`'s collector took 27 % fewer events/s
	// (docs/performance.md), the broker writing three times the bytes. On
	// sealed envelopes it only costs: the collector alone took 20–25 %
	// fewer events/s with lz4 than with none.
	Compression string `yaml:"compression"`
}

// DefaultProducerConfig returns the collector's producer defaults. One
// MiB of record batch stays under a broker's default message.max.bytes
// (1 MiB and 12 bytes, after compression) even with compression off. A
// broker or topic configured lower answers MESSAGE_TOO_LARGE, and the
// batch is sent again in halves.
func DefaultProducerConfig() ProducerConfig {
	return ProducerConfig{MaxBatch: 1000, MaxBatchBytes: 1 << 20, WriteTimeout: 5 * time.Second, MaxAttempts: 3, Compression: CompressionAuto}
}

// CompressionAuto is lz4 for plain envelopes and none for sealed ones.
const CompressionAuto = "auto"

// ForEnvelopes resolves CompressionAuto for envelopes that are sealed or
// not; any other setting is kept as it is.
func (c ProducerConfig) ForEnvelopes(sealed bool) ProducerConfig {
	if c.Compression == CompressionAuto {
		c.Compression = "lz4"
		if sealed {
			c.Compression = "none"
		}
	}
	return c
}

// Validate reports the first invalid setting, naming its key.
func (c ProducerConfig) Validate() error {
	switch {
	case c.MaxBatch <= 0:
		return errors.New("producer.max_batch must be positive")
	case c.MaxBatchBytes <= 0:
		return errors.New("producer.max_batch_bytes must be positive")
	case c.WriteTimeout <= 0:
		return errors.New("producer.write_timeout must be positive")
	case c.MaxAttempts <= 0:
		return errors.New("producer.max_attempts must be positive")
	}
	if _, ok := compressions[c.Compression]; !ok && c.Compression != CompressionAuto {
		return fmt.Errorf("producer.compression must be one of auto, none, gzip, snappy, lz4, zstd; got %q", c.Compression)
	}
	return nil
}

// Producer writes messages to one topic with acks from every in-sync
// replica, a key's messages to the partition kafka-go's Hash balancer
// picks (as NewWriter's writer does), so one key's messages keep their
// order.
//
// It groups the messages of concurrent WriteMessages calls per partition
// without a timer: a call that finds its partition idle sends at once,
// and the messages that arrive while that request is in flight go out
// together in the next one, sent by the first of their callers (group
// commit). kafka-go's Writer instead holds each batch until it is full or
// its timeout passes, and hands it through goroutines of its own; with the
// broker on the same two cores, grouping this way took the collector alone
// from 336 000–364 000 to 383 000–449 000 events/s in batches of 50, and
// the produce path alone to 1.3 times the Writer's rate in 50-message
// writes and 2.4 times in single messages (docs/performance.md).
// kafka-go does the protocol: its Client reads the topic's metadata, and a
// Conn to each partition's leader carries the produce requests (record
// batches, compression, the broker's errors). The sender writes the request
// and reads its answer on its own goroutine. The Client hands each request
// to a goroutine of its connection and the answer back: two more wake-ups
// per request, each of which waits for a core when the machine is busy
// (docs/performance.md).
//
// WriteMessages returns nil once every one of its messages was
// acknowledged, so the caller may then reuse their memory
// (ReleasesMessages); after an error, a message may still be referenced,
// and sent, as with kafka-go's Writer.
type Producer struct {
	dialer   *kafka.Dialer
	brokers  []string
	topic    string
	cfg      ProducerConfig
	codec    kafka.CompressionCodec // nil: none
	log      *zap.Logger
	balancer kafka.Hash

	mu         sync.Mutex
	parts      []*partQueue
	partIDs    []int
	refreshed  time.Time
	refreshing bool
	// answered is the index in brokers of the broker that last answered
	// a metadata request: the first one asked next time.
	answered atomic.Int32
	// closed is set by Close, under mu; a sender that finds it set closes
	// its partition's connection once the partition is idle.
	closed atomic.Bool
	// calls counts the WriteMessages calls under way, each until its last
	// partition has reported, including the calls whose caller has gone
	// and whose turns a goroutine of the producer still takes (finish).
	// A call is counted under mu before closed is set, so Close, which
	// waits for it, returns with none of the producer's goroutines left.
	calls sync.WaitGroup
}

// partQueue is one partition's writes waiting for a produce request.
type partQueue struct {
	id int
	mu sync.Mutex
	// busy is set while a caller is sending this partition's batches.
	busy    bool
	pending []*pendingWrite
	// conn is the connection to the partition's leader, nil until it is
	// dialled and after an error. Only the caller whose turn it is uses it;
	// Close takes it under mu from a partition that is not busy.
	conn *kafka.Conn
	// lastErr is the error of the partition's last failed attempt, nil
	// once an attempt succeeds; under mu. A caller whose deadline passes
	// while its write is retried gives it as the cause.
	lastErr error
}

// pendingWrite is one WriteMessages call's messages for one partition.
type pendingWrite struct {
	ctx  context.Context
	msgs []kafka.Message
	call *writeCall
	part int // the partition's index
	err  error
}

// writeCall is one WriteMessages call: each of its partitions reports on
// done, with its error or the call's turn to send (lead).
type writeCall struct {
	done chan partResult
}

type partResult struct {
	p    *partQueue
	w    *pendingWrite
	lead bool
}

// metadataTTL is how long the partition count is trusted before it is
// read again, so that partitions added to the topic are used.
const metadataTTL = 30 * time.Second

// metadataRetry is how soon metadata that could not be read is asked for
// again while the partitions known are written to.
const metadataRetry = time.Second

// NewProducer returns a producer to topic on brokers.
func NewProducer(brokers []string, topic string, cfg ProducerConfig, log *zap.Logger) *Producer {
	if log == nil {
		log = zap.NewNop()
	}
	return &Producer{
		dialer:  &kafka.Dialer{ClientID: "veil-collector"},
		brokers: brokers,
		topic:   topic,
		cfg:     cfg,
		codec:   compressions[cfg.ForEnvelopes(false).Compression].Codec(),
		log:     log.Named("kafka"),
	}
}

// ReleasesMessages reports that WriteMessages holds no reference to its
// messages once it has returned nil.
func (p *Producer) ReleasesMessages() bool { return true }

// Close stops new writes, waits for the writes under way (each bounded by
// its caller's context and, for one in flight, by WriteTimeout and
// MaxAttempts), and closes the connections.
func (p *Producer) Close() error {
	p.mu.Lock()
	p.closed.Store(true)
	parts := p.parts
	p.mu.Unlock()
	p.calls.Wait()
	for _, q := range parts {
		q.mu.Lock()
		q.closeConn()
		q.mu.Unlock()
	}
	return nil
}

// closeConn closes the partition's connection, if it has one.
func (q *partQueue) closeConn() {
	if q.conn != nil {
		_ = q.conn.Close()
		q.conn = nil
	}
}

var errProducerClosed = errors.New("kafka: producer closed")

// partitions returns the topic's partition queues, reading the topic's
// metadata the first time, after metadataTTL and after a failed write.
// One caller reads it while the others go on with the partitions known,
// so a slow or unreachable broker holds up only that caller. A call that
// gets the queues is counted in calls, and must call p.calls.Done when it
// is over.
func (p *Producer) partitions(ctx context.Context) ([]*partQueue, []int, error) {
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		return nil, nil, errProducerClosed
	}
	if len(p.parts) > 0 && (p.refreshing || time.Since(p.refreshed) < metadataTTL) {
		defer p.mu.Unlock()
		p.calls.Add(1)
		return p.parts, p.partIDs, nil
	}
	p.refreshing = true
	// Counted from here, so that Close waits for the metadata read too.
	p.calls.Add(1)
	p.mu.Unlock()

	n, err := p.partitionCount(ctx)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshing = false
	if err != nil {
		if len(p.parts) > 0 { // keep writing to the partitions known
			p.refreshed = time.Now().Add(metadataRetry - metadataTTL)
			return p.parts, p.partIDs, nil
		}
		p.calls.Done()
		return nil, nil, err
	}
	for len(p.parts) < n { // partitions are only ever added
		p.parts = append(p.parts, &partQueue{id: len(p.parts)})
		p.partIDs = append(p.partIDs, len(p.partIDs))
	}
	p.refreshed = time.Now()
	return p.parts, p.partIDs, nil
}

// partitionCount reads the number of the topic's partitions from the
// cluster. The transport is new each time and closed after: kafka-go's
// transport answers metadata from a cache refreshed every six seconds,
// which would go on saying that a topic created meanwhile (by `veil
// migrate`, or the collector's own start) does not exist.
func (p *Producer) partitionCount(ctx context.Context) (int, error) {
	var md *kafka.MetadataResponse
	err := p.askBrokers(ctx, func(ctx context.Context, addr string) error {
		transport := &kafka.Transport{ClientID: "veil-collector", MetadataTopics: []string{p.topic}}
		defer transport.CloseIdleConnections()
		client := &kafka.Client{Addr: kafka.TCP(addr), Transport: transport}
		var err error
		md, err = client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{p.topic}})
		return err
	})
	if err != nil {
		return 0, err
	}
	if len(md.Topics) != 1 {
		return 0, fmt.Errorf("kafka: no metadata for topic %s", p.topic)
	}
	if err := md.Topics[0].Error; err != nil {
		return 0, err
	}
	if len(md.Topics[0].Partitions) == 0 {
		return 0, fmt.Errorf("kafka: topic %s has no partitions", p.topic)
	}
	return len(md.Topics[0].Partitions), nil
}

// forget makes the next write read the topic's metadata again.
func (p *Producer) forget() {
	p.mu.Lock()
	p.refreshed = time.Time{}
	p.mu.Unlock()
}

// WriteMessages writes msgs and waits for the broker's acknowledgement of
// every one, or for ctx to end. A produce request is bounded by
// WriteTimeout, and is not retried once every caller waiting for it has
// gone.
func (p *Producer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	parts, ids, err := p.partitions(ctx)
	if err != nil {
		return err
	}
	owned := false // by finish, which then ends the call
	defer func() {
		if !owned {
			p.calls.Done()
		}
	}()
	call := &writeCall{}
	// The collector's calls mostly hold one key's messages: one
	// partition, without grouping.
	first := p.balancer.Balance(msgs[0], ids...)
	same := true
	for i := 1; i < len(msgs) && same; i++ {
		same = (len(msgs[0].Key) > 0 && bytes.Equal(msgs[i].Key, msgs[0].Key)) || p.balancer.Balance(msgs[i], ids...) == first
	}
	var writes []*pendingWrite
	if same {
		writes = []*pendingWrite{{ctx: ctx, msgs: msgs, call: call, part: first}}
	} else {
		byPart := map[int]*pendingWrite{}
		for _, m := range msgs {
			id := p.balancer.Balance(m, ids...)
			w := byPart[id]
			if w == nil {
				w = &pendingWrite{ctx: ctx, call: call, part: id}
				byPart[id] = w
				writes = append(writes, w)
			}
			w.msgs = append(w.msgs, m)
		}
	}
	// Each partition sends this call at most one turn and one result, so
	// no sender ever waits on the channel.
	call.done = make(chan partResult, 2*len(writes))
	for i, w := range writes {
		q := parts[w.part]
		q.mu.Lock()
		q.pending = append(q.pending, w)
		lead := !q.busy
		q.busy = true
		q.mu.Unlock()
		if lead {
			call.done <- partResult{p: q, w: writes[i], lead: true}
		}
	}
	// Each write reports its result once; before that, its partition may
	// give this call the turn to send (its own write among those sent).
	var firstErr error
	for left := len(writes); left > 0; {
		var r partResult
		select {
		case r = <-call.done:
		case <-ctx.Done():
			// The caller goes; its turns are still taken, so that the
			// writes queued behind its own are sent. Writes of its that
			// are not sent yet never will be; one in flight may still
			// be stored.
			owned = true
			go p.finish(call, left)
			return p.deadlineError(ctx.Err(), parts, writes)
		}
		if r.lead {
			p.send(r.p)
			continue
		}
		left--
		if r.w.err != nil && firstErr == nil {
			firstErr = r.w.err
		}
	}
	return firstErr
}

// DeadlineError is WriteMessages' error when the caller's context ended
// first: the context's error, and the last failure of a partition the
// call was writing to (nil when none failed), which is why the write
// took too long. errors.Is and errors.As see both.
type DeadlineError struct {
	Err   error
	Cause error
}

func (e *DeadlineError) Error() string {
	if e.Cause == nil {
		return e.Err.Error()
	}
	return e.Err.Error() + " (last produce error: " + e.Cause.Error() + ")"
}

// Unwrap gives both errors.
func (e *DeadlineError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Cause, e.Err}
}

// deadlineError names err with the last failure of writes' partitions.
func (p *Producer) deadlineError(err error, parts []*partQueue, writes []*pendingWrite) error {
	var cause error
	for _, w := range writes {
		q := parts[w.part]
		q.mu.Lock()
		if q.lastErr != nil {
			cause = q.lastErr
		}
		q.mu.Unlock()
	}
	return &DeadlineError{Err: err, Cause: cause}
}

// finish takes the turns of a call whose caller has gone, until each of
// its left partitions has reported, and then ends the call (calls).
func (p *Producer) finish(call *writeCall, left int) {
	defer p.calls.Done()
	for left > 0 {
		if r := <-call.done; r.lead {
			p.send(r.p)
		} else {
			left--
		}
	}
}

// send writes the next produce request of q's pending writes, on the
// goroutine of the call whose turn it is, then hands the turn to the call
// of the first write still waiting. A call is given the turn only when its
// write heads the queue, so its own write is always among those sent.
func (p *Producer) send(q *partQueue) {
	q.mu.Lock()
	batch, rest := p.take(q.pending)
	q.pending = rest
	q.mu.Unlock()

	var ready []*pendingWrite
	var msgs []kafka.Message
	for _, w := range batch {
		if err := w.ctx.Err(); err != nil {
			w.err = err // its turn came too late: not sent
			continue
		}
		ready = append(ready, w)
		msgs = append(msgs, w.msgs...)
	}
	if len(msgs) > 0 {
		err := p.produce(q, msgs, func() bool {
			for _, w := range ready {
				if w.ctx.Err() == nil {
					return true
				}
			}
			return false
		})
		for _, w := range ready {
			w.err = err
		}
	}
	for _, w := range batch {
		w.call.done <- partResult{p: q, w: w}
	}

	q.mu.Lock()
	if len(q.pending) == 0 {
		q.busy = false
		if p.closed.Load() {
			q.closeConn()
		}
		q.mu.Unlock()
		return
	}
	next := q.pending[0].call
	q.mu.Unlock()
	next.done <- partResult{p: q, lead: true}
}

// take splits pending into the next produce request's writes and the
// rest: whole writes up to MaxBatch messages and MaxBatchBytes, at least
// one (a write larger than that alone is split by produce).
func (p *Producer) take(pending []*pendingWrite) (batch, rest []*pendingWrite) {
	n, size := 0, batchOverhead
	for i, w := range pending {
		wsize := 0
		for j := range w.msgs {
			wsize += recordSize(&w.msgs[j])
		}
		if i > 0 && (n+len(w.msgs) > p.cfg.MaxBatch || size+wsize > p.cfg.MaxBatchBytes) {
			return pending[:i:i], append([]*pendingWrite(nil), pending[i:]...)
		}
		n += len(w.msgs)
		size += wsize
	}
	return pending, nil
}

// produce sends msgs to q's partition in requests of at most MaxBatch
// messages and MaxBatchBytes, retrying temporary errors while waiting
// reports that a caller still waits for them.
func (p *Producer) produce(q *partQueue, msgs []kafka.Message, waiting func() bool) error {
	// A message without a time gets the time it was first sent: a retry
	// sends the same record batch.
	now := time.Now()
	for i := range msgs {
		if msgs[i].Time.IsZero() {
			msgs[i].Time = now
		}
	}
	for len(msgs) > 0 {
		n, size := 0, batchOverhead
		for n < len(msgs) && n < p.cfg.MaxBatch {
			s := recordSize(&msgs[n])
			if n > 0 && (size+s > p.cfg.MaxBatchBytes || !closeInTime(msgs[0].Time, msgs[n].Time)) {
				break
			}
			size += s
			n++
		}
		if err := p.produceFitting(q, msgs[:n], waiting); err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

// produceFitting sends msgs in one request, or, when the broker finds the
// record batch larger than the topic's max.message.bytes (set lower than
// MaxBatchBytes), in two halves, each split again as needed. A single
// message too large fails: no retry can help it.
func (p *Producer) produceFitting(q *partQueue, msgs []kafka.Message, waiting func() bool) error {
	err := p.produceOnce(q, msgs, waiting)
	if len(msgs) < 2 || !errors.Is(err, kafka.MessageSizeTooLarge) {
		return err
	}
	half := len(msgs) / 2
	if err := p.produceFitting(q, msgs[:half], waiting); err != nil {
		return err
	}
	return p.produceFitting(q, msgs[half:], waiting)
}

// batchOverhead is the size of a record batch's header (magic v2), and
// recordOverhead the most a record's framing adds to its key, value and
// headers: its length, attributes, time and offset deltas and the key,
// value and header-count lengths, each a varint of at most five bytes
// (the time delta is bounded by maxTimeDelta).
const (
	batchOverhead  = 61
	recordOverhead = 1 + 6*5
)

// recordSize bounds the bytes m takes in an uncompressed record batch.
func recordSize(m *kafka.Message) int {
	n := recordOverhead + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += 2*5 + len(h.Key) + len(h.Value)
	}
	return n
}

// maxTimeDelta is the furthest a record's time may be from the first
// record's in one record batch. A record holds the difference in
// milliseconds, which kafka-go's Conn caps at 32 bits (and franz-go read
// no more than that until 2023); records further apart go in requests of
// their own.
const maxTimeDelta = (1<<31 - 1) * time.Millisecond

func closeInTime(first, t time.Time) bool {
	d := t.Sub(first)
	return d < maxTimeDelta && d > -maxTimeDelta
}

// produceOnce sends msgs in one produce request to q's leader, on q's
// connection, dialling it first when there is none. After an error the
// connection is closed, so a retry asks the cluster for the partition's
// leader again (a leader that moved answers NotLeaderForPartition).
func (p *Producer) produceOnce(q *partQueue, msgs []kafka.Message, waiting func() bool) error {
	var err error
	for attempt := 0; attempt < p.cfg.MaxAttempts; attempt++ {
		if attempt > 0 {
			time.Sleep(backoff(attempt))
			if !waiting() { // every caller's deadline has passed
				break
			}
		}
		if q.conn == nil {
			q.conn, err = p.dialLeader(q.id)
		}
		if q.conn != nil {
			// The deadline bounds the request on this side, and kafka-go
			// gives the broker the time left as the request's timeout.
			_ = q.conn.SetDeadline(time.Now().Add(p.cfg.WriteTimeout))
			if _, err = q.conn.WriteCompressedMessages(p.codec, msgs...); err == nil {
				q.setLastErr(nil)
				return nil
			}
			q.closeConn()
		}
		q.setLastErr(err)
		p.forget()
		// kafka-go's messages name brokers, topics and partitions,
		// never message contents.
		p.log.Warn("produce failed", zap.String("topic", p.topic), zap.Int("partition", q.id), zap.Int("attempt", attempt+1), zap.Error(err))
		if !retriable(err) {
			break
		}
	}
	return err
}

func (q *partQueue) setLastErr(err error) {
	q.mu.Lock()
	q.lastErr = err
	q.mu.Unlock()
}

// dialLeader connects to partition's leader, asking the brokers in turn
// which one it is (askBrokers).
func (p *Producer) dialLeader(partition int) (*kafka.Conn, error) {
	var c *kafka.Conn
	err := p.askBrokers(context.Background(), func(ctx context.Context, addr string) error {
		var err error
		c, err = p.dialer.DialLeader(ctx, "tcp", addr, p.topic, partition)
		return err
	})
	return c, err
}

// askBrokers calls ask with each bootstrap broker in turn until one
// succeeds, within WriteTimeout, starting with the broker that answered
// last. Each broker has a share of the time of its own: a broker that
// takes the connection and answers nothing (stopped, or its host cut
// off, while the kernel still accepts) must not use all of it, or the
// brokers after it are never asked, and every write fails until the
// cluster drops that broker. The share is WriteTimeout divided among the
// brokers: 1.7 s each for three brokers with the default 5 s.
func (p *Producer) askBrokers(ctx context.Context, ask func(ctx context.Context, addr string) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	n := len(p.brokers)
	share := p.cfg.WriteTimeout / time.Duration(n)
	first := int(p.answered.Load())
	var err error
	for i := 0; i < n; i++ {
		b := (first + i) % n
		bctx, bcancel := context.WithTimeout(ctx, share)
		err = ask(bctx, p.brokers[b])
		bcancel()
		if err == nil {
			p.answered.Store(int32(b))
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return err
}

// retriable reports whether a produce error may pass on its own: a
// Kafka error marked temporary, or a network error.
func retriable(err error) bool {
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		return kerr.Temporary()
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded)
}

// backoff is the wait before attempt (1, 2, …): 100 ms doubling, at most
// one second.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << (attempt - 1)
	return min(d, time.Second)
}
