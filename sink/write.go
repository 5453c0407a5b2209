package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Full reports whether b has reached a row or byte bound.
func (s *Sink) Full(b *Batch) bool { return b.Len() >= s.cfg.MaxRows || b.bytes >= s.cfg.MaxBytes }

// MaxAge is how long a batch may wait before it is flushed.
func (s *Sink) MaxAge() time.Duration { return s.cfg.MaxAge }

// step is one write of a flush: an insert into one table, or the state
// derived from an ops table. On a cluster each shard has steps of its own.
type step struct {
	key   string // in Batch.done
	table string
	shard int // index in Sink.shards; -1 on one server
	run   func(ctx context.Context, t target) (rows int, err error)
}

// target is where a step writes: the server's tables, or a replica of a
// shard and its local tables.
type target struct {
	conn    driver.Conn
	suffix  string // "" on one server, LocalSuffix on a cluster
	shard   int    // -1 on one server
	replica int    // index in the shard's replicas
}

func (s *Sink) steps(b *Batch, shard int) []step {
	var steps []step
	token := b.dedupToken()
	key := func(table string) string {
		if shard < 0 {
			return table
		}
		return fmt.Sprintf("%d/%s", shard, table)
	}
	if n := len(b.events.project); n > 0 {
		steps = append(steps, step{key(tableEvents), tableEvents, shard, func(ctx context.Context, t target) (int, error) {
			return n, s.insert(ctx, t, tableEvents, token, eventColumns, b.events.columns())
		}})
	}
	for _, r := range []*opRows{&b.people, &b.groups} {
		if r.len() == 0 {
			continue
		}
		steps = append(steps, step{key(r.table()), r.table(), shard, func(ctx context.Context, t target) (int, error) {
			if err := s.insert(ctx, t, r.table(), token, r.columnNames(), r.columns()); err != nil {
				return 0, err
			}
			s.rememberOps(t, r)
			return r.len(), nil
		}})
	}
	for _, r := range []*opRows{&b.people, &b.groups} {
		if r.len() == 0 {
			continue
		}
		table := tableProfileState
		if r.groups {
			table = tableGroupState
		}
		steps = append(steps, step{key(table), table, shard, func(ctx context.Context, t target) (int, error) {
			st, err := s.computeState(ctx, t, r)
			if err != nil {
				return 0, err
			}
			if st.len() == 0 {
				return 0, nil
			}
			names, cols := st.columns(r.groups)
			// No token: the rows carry the time they were computed, and a
			// recomputation is exact anyway (see state.go).
			return st.len(), s.insert(ctx, t, table, "", names, cols)
		}})
	}
	return steps
}

// Write writes b to every table it has rows for, retrying each write with
// capped exponential backoff and jitter until it succeeds or ctx ends. A
// retry resumes at the write that failed. Write returns nil only when every
// row is in ClickHouse; on error nothing may be acknowledged.
//
// On a cluster the batch is split by shard (ShardOf the user, or the
// group), and each shard's rows go to that shard's local tables through
// one of its replicas; a write that fails moves to the shard's next
// replica. The shards are written at once. Write returns nil only when
// every shard has acknowledged its part. A shard's part is the same rows in the same order on every
// attempt, so a retried insert is the same block, which the replicas
// deduplicate by its hash in ZooKeeper.
func (s *Sink) Write(ctx context.Context, b *Batch) error {
	if b.Len() == 0 {
		return nil
	}
	if b.done == nil {
		b.done = map[string]bool{}
	}
	start := time.Now()
	defer s.m.retrying.Set(0)
	var mu sync.Mutex // guards b.done while the shards are written at once
	if s.shards == nil {
		if err := s.runSteps(ctx, b, s.steps(b, -1), &mu); err != nil {
			return err
		}
	} else {
		// The shards are independent: each is written, and retried, on
		// its own, and the batch is done when all are.
		var g errgroup.Group
		for i, part := range b.shardParts(len(s.shards)) {
			steps := s.steps(part, i)
			g.Go(func() error { return s.runSteps(ctx, b, steps, &mu) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	s.m.batchRows.Observe(float64(b.Len()))
	s.m.flushDuration.Observe(time.Since(start).Seconds())
	return nil
}

// runSteps runs steps in order, each until it succeeds, skipping those b
// has done already; it returns only when all are done or ctx ends.
func (s *Sink) runSteps(ctx context.Context, b *Batch, steps []step, mu *sync.Mutex) error {
	delay := s.cfg.RetryMin
	for _, st := range steps {
		mu.Lock()
		done := b.done[st.key]
		mu.Unlock()
		if done {
			continue
		}
		for attempt := 1; ; attempt++ {
			t := s.target(st.shard)
			actx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
			rows, err := st.run(actx, t)
			cancel()
			if err == nil {
				mu.Lock()
				b.done[st.key] = true
				mu.Unlock()
				s.m.rows.WithLabelValues(st.table).Add(float64(rows))
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			class := classify(err)
			s.m.errors.WithLabelValues(class).Inc()
			s.m.retrying.Set(1)
			// ClickHouse errors say which column or setting is wrong, never a
			// row's values, so they are safe to log.
			fields := []zap.Field{zap.String("table", st.table), zap.Int("rows", b.Len()), zap.Int("attempt", attempt),
				zap.String("class", class), zap.Duration("backoff", delay), zap.Error(err)}
			if st.shard >= 0 {
				fields = append(fields, zap.Int("shard", s.shards[st.shard].num), zap.String("replica", s.shards[st.shard].addrs[t.replica]))
				s.failover(st.shard, t)
			}
			s.log.Warn("write failed; retrying", fields...)
			// Jitter keeps several workers from retrying in lockstep.
			wait := delay/2 + rand.N(delay/2+1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			delay = min(delay*2, s.cfg.RetryMax)
		}
	}
	return nil
}

// insert writes columns to table in one native insert. On servers that
// support it, token makes a retry of the same insert a no-op.
func (s *Sink) insert(ctx context.Context, t target, table, token string, names []string, cols []any) error {
	if token != "" && s.caps.InsertDedupToken {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(InsertSettings(s.caps, table, token)))
	}
	batch, err := t.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+table+t.suffix+" ("+strings.Join(names, ", ")+")")
	if err != nil {
		return err
	}
	defer batch.Close()
	for i, col := range cols {
		if err := batch.Column(i).Append(col); err != nil {
			return fmt.Errorf("column %s: %w", names[i], err)
		}
	}
	return batch.Send()
}

// InsertSettings are the per-insert settings of a write to table covering
// the Kafka ranges named by token. On 22.2+ the deduplication token makes
// ClickHouse skip an insert it has already stored (within the table's
// non_replicated_deduplication_window); older servers get none and rely on
// ReplacingMergeTree.
func InsertSettings(c Capabilities, table, token string) clickhouse.Settings {
	if !c.InsertDedupToken || token == "" {
		return nil
	}
	return clickhouse.Settings{"insert_deduplication_token": table + "@" + token}
}

// classify names the kind of a write failure for the error metric.
func classify(err error) string {
	var ex *clickhouse.Exception
	var ne net.Error
	switch {
	case errors.As(err, &ex):
		return "server"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "network"
	}
	return "other"
}
