// Package worker consumes raw events from Kafka, holds each to the rules
// the collector held it to (event/rules: the raw topic is a boundary too),
// passes it through the privacy and enrichment stages, and writes the
// survivors to ClickHouse.
//
// Delivery: a Kafka offset is committed only after every message up to it has
// been written to ClickHouse, written to the dead-letter topic, or dropped by
// policy and counted. One goroutine processes messages in fetch order; a
// flusher writes each finished batch and then commits the offsets it covers,
// one batch at a time and in order, so what is committed is always
// contiguous. A crash
// replays from the last commit; replayed rows are identical and folded by
// ClickHouse's ReplacingMergeTree (see sink).
package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/event/rules"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/sink"
)

// Stage is one step of the per-event pipeline. It transforms ev in place and
// returns event.Keep, or the reason the event is dropped.
type Stage interface {
	Apply(ev *event.Event) event.DropReason
}

// StageFunc adapts a function to Stage.
type StageFunc func(ev *event.Event) event.DropReason

// Apply calls f.
func (f StageFunc) Apply(ev *event.Event) event.DropReason { return f(ev) }

// Config is the worker section of Veil's configuration.
type Config struct {
	GroupID string `yaml:"group_id"`
	// FetchMaxWait bounds how long an idle fetch waits for data (a fetch
	// returns as soon as data arrives, so it adds no latency). kafka-go
	// gives the broker this much less a quarter, so below about a second a
	// busy machine turns idle fetches into i/o timeouts and reconnects.
	FetchMaxWait time.Duration `yaml:"fetch_max_wait"`
	// QueueCapacity is how many fetched events may wait for processing:
	// a sealed frame takes a place for each of its events, so that the
	// memory the queue holds does not grow with the size of requests.
	QueueCapacity int `yaml:"queue_capacity"`
	// DrainTimeout bounds the final flush at shutdown.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// LagInterval is how often the consumer lag is measured at the broker.
	LagInterval      time.Duration `yaml:"lag_interval"`
	SessionTimeout   time.Duration `yaml:"session_timeout"`
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	Heartbeat        time.Duration `yaml:"heartbeat_interval"`
	// RemovedDecoder is the former worker.decoder, which chose among
	// three decoders that stored the same rows. The worker now has one
	// (event.Decoder); a configuration that still names the key is
	// refused, so that nobody believes it still chooses anything.
	RemovedDecoder string `yaml:"decoder"`
}

// DefaultConfig returns the worker defaults.
func DefaultConfig() Config {
	return Config{
		GroupID:       "veil-worker",
		FetchMaxWait:  time.Second,
		QueueCapacity: 10000,
		DrainTimeout:  15 * time.Second,
		// Three requests per interval per worker; a few seconds of
		// staleness does not matter for lag, which alerts look at over
		// minutes.
		LagInterval:      5 * time.Second,
		SessionTimeout:   10 * time.Second,
		RebalanceTimeout: 10 * time.Second,
		Heartbeat:        time.Second,
	}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	switch {
	case c.GroupID == "":
		return errors.New("worker.group_id must be set")
	case c.RemovedDecoder != "":
		return errors.New("worker.decoder is no longer a setting (the worker has one decoder): remove it from the configuration")
	case c.FetchMaxWait <= 0:
		return errors.New("worker.fetch_max_wait must be positive")
	case c.QueueCapacity <= 0:
		return errors.New("worker.queue_capacity must be positive")
	case c.DrainTimeout <= 0:
		return errors.New("worker.drain_timeout must be positive")
	case c.LagInterval <= 0:
		return errors.New("worker.lag_interval must be positive")
	case c.SessionTimeout <= 0 || c.RebalanceTimeout <= 0 || c.Heartbeat <= 0:
		return errors.New("worker.session_timeout, worker.rebalance_timeout and worker.heartbeat_interval must be positive")
	case c.Heartbeat >= c.SessionTimeout:
		return errors.New("worker.heartbeat_interval must be shorter than worker.session_timeout")
	}
	return nil
}

// Deps are the worker's collaborators.
type Deps struct {
	Logger  *zap.Logger
	Metrics prometheus.Registerer
	Sink    *sink.Sink
	// Rules are the limits every message is held to before the stages:
	// the collector's (collector.limits), so that the raw topic takes
	// nothing the collector would refuse. Nil means rules.DefaultLimits.
	Rules *rules.Limits
	// Stages run in order: policy, enrichment, de-identification, on the
	// worker's one processing goroutine: a stage may keep memos without a
	// lock.
	Stages []Stage
	// Seal, when set, opens the sealed envelopes of the raw topic and
	// seals what is dead-lettered (seal.key_file). AcceptPlain lets
	// envelopes that are not sealed through (seal.accept_plain).
	Seal        *seal.Keys
	AcceptPlain bool
}

// Worker is one member of the consumer group.
type Worker struct {
	cfg    Config
	kcfg   kafkax.Config
	sink   *sink.Sink
	rules  rules.Limits
	stages []Stage
	seal   *seal.Keys
	plain  bool // accept envelopes that are not sealed
	log    *zap.Logger
	m      *metrics
}

// New validates the configuration and builds a worker.
func New(cfg Config, kcfg kafkax.Config, deps Deps) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := kcfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Sink == nil {
		return nil, errors.New("worker: a sink is required")
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	lim := rules.DefaultLimits()
	if deps.Rules != nil {
		lim = *deps.Rules
		if err := lim.Validate("collector.limits"); err != nil {
			return nil, err
		}
	}
	return &Worker{
		cfg:    cfg,
		kcfg:   kcfg,
		sink:   deps.Sink,
		rules:  lim,
		stages: deps.Stages,
		seal:   deps.Seal,
		plain:  deps.AcceptPlain,
		log:    deps.Logger,
		m:      newMetrics(deps.Metrics),
	}, nil
}

// Run consumes until ctx ends, then stops fetching, flushes and commits what
// it holds within DrainTimeout, and returns.
func (w *Worker) Run(ctx context.Context) error {
	reader := kafka.NewReader(kafka.ReaderConfig{
		Brokers:  w.kcfg.Brokers,
		GroupID:  w.cfg.GroupID,
		Topic:    w.kcfg.RawTopic,
		MinBytes: 1,
		// One fetch (per partition) of at most 1 MiB, about a thousand
		// events (a larger single message still comes whole). Larger
		// fetches of a backlog outlast the fetch deadline, time out and are
		// fetched again with backoff: in the ClickHouse-outage test, 16 MiB
		// fetches took 23-27 s to drain the backlog, 1 MiB ones 11 s.
		MaxBytes:          1 << 20,
		MaxWait:           w.cfg.FetchMaxWait,
		ReadBatchTimeout:  w.cfg.FetchMaxWait + 5*time.Second,
		CommitInterval:    0, // synchronous: CommitMessages returns once the broker has the offsets
		StartOffset:       kafka.FirstOffset,
		SessionTimeout:    w.cfg.SessionTimeout,
		RebalanceTimeout:  w.cfg.RebalanceTimeout,
		HeartbeatInterval: w.cfg.Heartbeat,
		JoinGroupBackoff:  500 * time.Millisecond,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    time.Second,
		ErrorLogger:       kafkax.ErrorLogger(w.log),
	})
	dlq := kafkax.NewWriter(w.kcfg.Brokers, w.kcfg.DLQTopic, kafkax.DefaultWriterConfig(), w.log)

	// Phase two of shutdown: DrainTimeout after ctx ends, work in flight is
	// abandoned (it will be replayed, never lost).
	hard, hardCancel := context.WithCancel(context.Background())
	defer hardCancel()
	stopTimer := context.AfterFunc(ctx, func() { time.AfterFunc(w.cfg.DrainTimeout, hardCancel) })
	defer stopTimer()

	msgs := make(chan kafka.Message, w.cfg.QueueCapacity)
	places := semaphore.NewWeighted(int64(w.cfg.QueueCapacity))
	var g errgroup.Group
	g.Go(func() error { w.probeLag(ctx); return nil })
	g.Go(func() error { return w.fetch(ctx, reader, msgs, places) })
	p := &processor{w: w, reader: reader, dlq: dlq, hard: hard, batch: sink.NewBatch(), last: map[int]kafka.Message{}, dec: event.NewDecoder(), open: seal.Opener{Keys: w.seal}}
	g.Go(func() error { return p.run(msgs, places) })
	err := g.Wait()
	if cerr := reader.Close(); cerr != nil {
		w.log.Warn("closing the Kafka reader", zap.Error(cerr))
	}
	if cerr := dlq.Close(); cerr != nil {
		w.log.Warn("closing the dead-letter writer", zap.Error(cerr))
	}
	return err
}

// queuePlaces is the places in the queue m takes: one per event, and all
// of them for a frame of more events than the queue has places.
func (w *Worker) queuePlaces(m kafka.Message) int64 {
	return int64(min(seal.Count(m.Value), w.cfg.QueueCapacity))
}

func (w *Worker) fetch(ctx context.Context, r *kafka.Reader, out chan<- kafka.Message, places *semaphore.Weighted) error {
	defer close(out)
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.log.Warn("fetch failed; retrying", zap.Error(err))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		w.m.fetched.Add(float64(seal.Count(m.Value)))
		// While the processor is blocked (ClickHouse refusing writes),
		// fetching pauses once the queue's places are taken: the backlog
		// stays in Kafka as consumer lag.
		if err := places.Acquire(ctx, w.queuePlaces(m)); err != nil {
			return nil
		}
		select {
		case out <- m:
		case <-ctx.Done():
			return nil
		}
	}
}

// processor owns the batch and the offsets; only its goroutine touches them.
type processor struct {
	w      *Worker
	reader *kafka.Reader
	dlq    *kafkax.Writer
	hard   context.Context
	batch  *sink.Batch
	// last holds, per partition, the newest message handled since the last
	// commit: committing it acknowledges everything before it too.
	last    map[int]kafka.Message
	pending int
	// dec reads every message into ev, reusing its memory: the previous
	// event's properties are not needed once Append has copied them.
	dec *event.Decoder
	ev  event.Event
	// sealed holds the message being handled as it came, sealed, while it
	// is opened in place in the message's own memory: what is
	// dead-lettered when it does not open is the sealed original.
	sealed []byte
	open   seal.Opener

	// The flusher writes one batch and commits its offsets while the
	// processor fills the next: jobs is unbuffered, so at most one batch is
	// in flight and batches are written and committed in order.
	jobs        chan flushJob
	spare       chan *sink.Batch // batches the flusher has emptied
	flusherDone chan struct{}
	flusherErr  error // set before flusherDone is closed
	uncommitted atomic.Int64
}

// flushJob is a batch on its way to ClickHouse with the messages whose
// offsets its write acknowledges.
type flushJob struct {
	batch   *sink.Batch
	commit  []kafka.Message
	handled int64
}

func (p *processor) run(msgs <-chan kafka.Message, places *semaphore.Weighted) error {
	p.jobs = make(chan flushJob)
	p.spare = make(chan *sink.Batch, 2)
	p.flusherDone = make(chan struct{})
	go p.flusher()
	// However run ends, the flusher finishes the batch it holds (or gives
	// up at the hard stop) before run returns.
	defer func() {
		if p.jobs != nil {
			close(p.jobs)
			<-p.flusherDone
		}
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				left := p.uncommitted.Load()
				err := p.flush()
				close(p.jobs)
				<-p.flusherDone
				p.jobs = nil
				if err == nil {
					err = p.flusherErr
				}
				if err != nil {
					p.w.log.Warn("shutdown: batch not flushed; it will be replayed", zap.Int64("messages", p.uncommitted.Load()), zap.Error(err))
				} else {
					p.w.log.Info("shutdown: flushed and committed", zap.Int64("messages", left))
				}
				return nil
			}
			if p.pending == 0 {
				timer.Reset(p.w.sink.MaxAge())
			}
			n := p.w.queuePlaces(m) // before handle opens m in place
			err := p.handle(m)
			places.Release(n)
			if err != nil {
				// Only the hard stop makes handle fail; what is held is replayed.
				p.w.log.Warn("shutdown: stopped while handling a message", zap.Int("uncommitted", p.pending), zap.Error(err))
				return nil
			}
			if p.w.sink.Full(p.batch) {
				timer.Stop()
				if err := p.flush(); err != nil {
					p.w.log.Warn("shutdown: batch not flushed; it will be replayed", zap.Int("messages", p.pending), zap.Error(err))
					return nil
				}
			}
		case <-timer.C:
			if err := p.flush(); err != nil {
				p.w.log.Warn("shutdown: batch not flushed; it will be replayed", zap.Int("messages", p.pending), zap.Error(err))
				return nil
			}
		}
	}
}

// handle opens one message and runs each of its events through the
// stages. It returns an error only when the worker is stopping hard.
func (p *processor) handle(m kafka.Message) error {
	w := p.w
	p.last[m.Partition] = m
	p.pending++
	w.m.pending.Set(float64(p.uncommitted.Add(1)))
	// Every message handled is covered by the batch, whatever its outcome:
	// the covered offsets name the batch for deduplication. A message is
	// handled whole between two flushes, so a batch never holds part of a
	// frame's events.
	p.batch.Cover(m.Topic, m.Partition, m.Offset)

	value := m.Value
	if w.seal == nil {
		if seal.IsSealed(value) {
			w.m.consumed.Add(float64(seal.Count(value)))
			return p.deadLetter(m, m.Key, m.Value, -1, seal.Reason(seal.ErrNoKeys), seal.ErrNoKeys.Error())
		}
		return p.event(m, -1, value)
	}
	if !seal.IsSealed(value) && w.plain {
		return p.event(m, -1, value)
	}
	// Opened in place: the sealed original is kept aside, to be
	// dead-lettered as it came if it does not open.
	p.sealed = append(p.sealed[:0], m.Value...)
	m.Value = p.sealed
	envs, err := p.open.Open(value)
	if err != nil {
		// Never stored: kept, sealed, in the dead-letter topic until the
		// key that opens it is given to the workers.
		w.m.consumed.Add(float64(seal.Count(m.Value)))
		return p.deadLetter(m, m.Key, m.Value, -1, seal.Reason(err), err.Error())
	}
	index := -1 // an envelope sealed alone has no index
	if seal.IsFrame(m.Value) {
		index = 0
	}
	for env, ok := envs.Next(); ok; env, ok = envs.Next() {
		if err := p.event(m, index, env); err != nil {
			return err
		}
		if index >= 0 {
			index++
		}
	}
	return nil
}

// event decodes one envelope of m, the index-th of its frame (-1: m holds
// it alone), and runs it through the stages.
func (p *processor) event(m kafka.Message, index int, value []byte) error {
	w := p.w
	w.m.consumed.Inc()
	ev := &p.ev
	if err := p.dec.Decode(value, ev); err != nil {
		return p.deadLetter(m, m.Key, value, index, dlqDecode, err.Error())
	}
	// The raw topic is a boundary too: a message no collector would have
	// written is never stored.
	if v := w.rules.Event(ev); v != nil {
		return p.deadLetter(m, m.Key, value, index, v.Reason, v.Error())
	}
	for _, st := range w.stages {
		if reason := st.Apply(ev); reason != event.Keep {
			w.m.dropped.WithLabelValues(string(reason)).Inc()
			return nil
		}
	}
	if err := p.batch.Append(ev); err != nil {
		return p.deadLetter(m, m.Key, value, index, dlqEncode, err.Error())
	}
	return nil
}

// Dead-letter reasons: a fixed set, used as a metric label: these two,
// and the reasons of the rules (rules.Reasons) a message broke.
const (
	dlqDecode = "decode"
	dlqEncode = "encode"
)

// deadLetter writes value, read from m (the index-th envelope of its
// frame, or -1: all of m), to the dead-letter topic with its reason,
// retrying until Kafka takes it: a message is never acknowledged
// unwritten. A frame that did not open is dead-lettered whole; an event
// of a frame that did, alone, sealed again.
func (p *processor) deadLetter(m kafka.Message, key, value []byte, index int, class, reason string) error {
	events := 1
	if index < 0 {
		events = seal.Count(value)
	}
	dm := kafka.Message{
		Key:   key,
		Value: value,
		Headers: []kafka.Header{
			{Key: HeaderReason, Value: []byte(reason)},
			{Key: HeaderClass, Value: []byte(class)},
			{Key: HeaderSource, Value: fmt.Appendf(nil, "%s/%d/%d", m.Topic, m.Partition, m.Offset)},
		},
	}
	if index >= 0 {
		dm.Headers = append(dm.Headers, kafka.Header{Key: HeaderIndex, Value: strconv.AppendInt(nil, int64(index), 10)})
	}
	if k := p.w.seal; k != nil {
		// The dead-letter topic is sealed like the raw topic. An envelope
		// that is not sealed (it came so, or was opened from its frame)
		// is sealed; the key of one that came unsealed, which may name
		// the user, is routed by hash. The reason's detail may name a
		// property the client chose: it is sealed too (veil-detail), and
		// veil-reason keeps only the fixed reason.
		now := time.Now()
		if !seal.IsSealed(dm.Value) {
			dm.Value = k.Seal(nil, dm.Value, now)
			if !seal.IsSealed(m.Value) {
				dm.Key = k.Route(nil, dm.Key)
			}
		}
		dm.Headers[0].Value = []byte(class)
		dm.Headers = append(dm.Headers, kafka.Header{Key: HeaderDetail, Value: k.Seal(nil, []byte(reason), now)})
	}
	delay := 100 * time.Millisecond
	for {
		err := p.dlq.WriteMessages(p.hard, dm)
		if err == nil {
			p.w.m.deadLettered.WithLabelValues(class).Add(float64(events))
			// A rule's detail names the field, which may be a property
			// name chosen by the client: it goes to the dead-letter
			// header, next to the message itself, and the log gets the
			// rule's reason only.
			detail := reason
			if class != dlqDecode && class != dlqEncode {
				detail = class
			}
			p.w.log.Warn("event dead-lettered", zap.String("reason", detail), zap.Int("partition", m.Partition), zap.Int64("offset", m.Offset), zap.Int("index", index), zap.Int("events", events))
			return nil
		}
		if p.hard.Err() != nil {
			return p.hard.Err()
		}
		p.w.log.Warn("dead-letter write failed; retrying", zap.Error(err))
		select {
		case <-p.hard.Done():
			return p.hard.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// flush writes the batch, then commits every message handled since the last
// commit. On error (only at a hard stop) nothing is committed.
func (p *processor) flush() error {
	if p.pending == 0 {
		return nil
	}
	job := flushJob{batch: p.batch, handled: int64(p.pending), commit: make([]kafka.Message, 0, len(p.last))}
	for _, m := range p.last {
		job.commit = append(job.commit, m)
	}
	select {
	case p.jobs <- job:
	case <-p.flusherDone:
		return p.flusherErr
	}
	clear(p.last)
	p.pending = 0
	select {
	case b := <-p.spare:
		p.batch = b
	default:
		p.batch = sink.NewBatch()
	}
	return nil
}

// flusher writes each batch it is handed, then commits every message the
// batch covers. It stops when jobs is closed, or at the hard stop, when a
// write gives up: what it held is then replayed, never acknowledged.
func (p *processor) flusher() {
	defer close(p.flusherDone)
	for job := range p.jobs {
		rows := job.batch.Len()
		if err := p.w.sink.Write(p.hard, job.batch); err != nil {
			p.flusherErr = err
			return
		}
		p.w.m.stored.Add(float64(rows))
		if err := p.reader.CommitMessages(p.hard, job.commit...); err != nil {
			// The rows are written; a failed commit only means a replay,
			// which deduplication absorbs.
			p.w.m.commitErrors.Inc()
			p.w.log.Warn("offset commit failed; the batch may be replayed", zap.Error(err))
		}
		p.w.m.pending.Set(float64(p.uncommitted.Add(-job.handled)))
		job.batch.Reset()
		select {
		case p.spare <- job.batch:
		default:
		}
	}
}
