package privacy

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"
)

// Retention removes rows older than each table's retention. Whole monthly
// partitions past the limit are dropped (cheap, immediate); the rows of the
// partition that straddles the limit are removed by a mutation. Tables
// without a configured retention are kept forever.
type Retention struct {
	conn  driver.Conn
	db    string
	days  map[string]int // table → days
	every time.Duration
	log   *zap.Logger
	now   func() time.Time
	place placement
}

// NewRetention builds the retention job for the data database. days maps a
// table name to its retention in days; 0 or a missing table means forever.
func NewRetention(conn driver.Conn, db string, days map[string]int, every time.Duration, log *zap.Logger) *Retention {
	if log == nil {
		log = zap.NewNop()
	}
	if every <= 0 {
		every = time.Hour
	}
	return &Retention{conn: conn, db: db, days: days, every: every, log: log, now: time.Now}
}

// OnCluster makes r apply retention on every shard of cluster (sink.cluster):
// partitions are listed on every node, as user with password (sink.username
// and sink.password), and dropped on every shard, through shards
// (sink.Sink.EachShard) or, when it is nil, ON CLUSTER.
func (r *Retention) OnCluster(cluster, user, password string, shards ShardRunner) *Retention {
	r.place = placement{cluster: cluster, user: user, password: password, shards: shards}
	return r
}

// Run applies retention now and then every interval until ctx ends.
func (r *Retention) Run(ctx context.Context) error {
	if len(r.days) == 0 {
		<-ctx.Done()
		return nil
	}
	for {
		if err := r.Apply(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("applying retention failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.every):
		}
	}
}

// Apply removes what is past retention in every configured table.
func (r *Retention) Apply(ctx context.Context) error { return r.ApplyAt(ctx, r.now()) }

// ApplyAt is Apply with retention measured back from now.
func (r *Retention) ApplyAt(ctx context.Context, now time.Time) error {
	tables := make([]string, 0, len(r.days))
	for t := range r.days {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	for _, table := range tables {
		days := r.days[table]
		if days <= 0 {
			continue
		}
		cutoff := now.UTC().Add(-time.Duration(days) * 24 * time.Hour)
		if err := r.applyTable(ctx, table, cutoff); err != nil {
			return fmt.Errorf("retention of %s: %w", table, err)
		}
	}
	return nil
}

func (r *Retention) applyTable(ctx context.Context, table string, cutoff time.Time) error {
	// Veil's tables are partitioned by toYYYYMM(time): a partition whose
	// month ended before the cutoff holds nothing newer, and goes whole.
	parts, err := r.place.everyNode(ctx, r.conn, "parts")
	if err != nil {
		return err
	}
	local := r.place.local(table)
	rows, err := r.conn.Query(ctx, "SELECT DISTINCT partition FROM "+parts+" WHERE database = ? AND table = ? AND active", r.db, local)
	if err != nil {
		return err
	}
	var old []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return err
		}
		month, err := time.Parse("200601", p)
		if err != nil {
			continue // not a monthly partition: the mutation below handles it
		}
		if month.AddDate(0, 1, 0).Before(cutoff) || month.AddDate(0, 1, 0).Equal(cutoff) {
			old = append(old, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, p := range old {
		if err := r.place.alterEachShard(ctx, r.conn, r.db+"."+local, "DROP PARTITION "+p); err != nil {
			return err
		}
		r.log.Info("retention: partition dropped", zap.String("table", table), zap.String("partition", p))
	}
	// What remains before the cutoff lives in the straddling partition.
	var n uint64
	if err := r.conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.%s WHERE time < ?", r.db, table), cutoff).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := r.place.alterEachShard(ctx, r.conn, r.db+"."+local, "DELETE WHERE time < ?", cutoff); err != nil {
		return err
	}
	r.log.Info("retention: expired rows deleted", zap.String("table", table), zap.Uint64("rows", n))
	return nil
}
