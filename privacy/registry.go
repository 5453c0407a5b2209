// Package privacy answers end users' privacy requests: the opt-out registry,
// the opt-out and opt-in pages, and data deletion and retrieval tasks in the
// shapes of Mixpanel's GDPR API.
//
// Everything it stores is keyed by pseudonyms, never by raw ids: a request
// names raw distinct_ids, which are turned into their pseudonyms under every
// key held and then forgotten.
package privacy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/sink"
)

// Config is the privacy section of Veil's configuration.
type Config struct {
	// Database holds the registry and the task table. It is kept apart from
	// the analysts' database: who opted out is nobody's analysis.
	Database string `yaml:"database"`
	// Refresh is how often every worker reloads the registry; an opt-out or
	// deletion is in force everywhere within about twice this.
	Refresh time.Duration `yaml:"refresh"`
	// AdminTokenEnv and AdminTokenFile name where the bearer token of the
	// admin APIs comes from; it never lives in the configuration file.
	AdminTokenEnv  string `yaml:"admin_token_env"`
	AdminTokenFile string `yaml:"admin_token_file"`
	// TaskPoll is how often the task runner looks for new requests.
	TaskPoll time.Duration `yaml:"task_poll"`
	// Settle is how long a deletion waits, after its tombstones are written,
	// for every worker to see them and flush what it already held.
	Settle time.Duration `yaml:"settle"`
	// RetentionDays maps a table of the analysts' database (events,
	// profile_ops, …) to how many days its rows are kept; a table not
	// listed is kept until deleted. The host running privacy tasks applies
	// it every RetentionEvery.
	RetentionDays  map[string]int `yaml:"retention_days"`
	RetentionEvery time.Duration  `yaml:"retention_every"`
	// Cluster is sink.cluster, set by the application rather than read
	// from this section: on a cluster the privacy tables are replicated to
	// every node, and deletions and retention run ON CLUSTER.
	Cluster string `yaml:"-"`
	// ClusterUser and ClusterPassword are sink.username and sink.password,
	// set by the application too: on a cluster, what every node is asked
	// (its parts, its mutations) is read with them.
	ClusterUser     string `yaml:"-"`
	ClusterPassword string `yaml:"-"`
}

// DefaultConfig returns the privacy defaults.
func DefaultConfig() Config {
	return Config{
		Database:      "veil_privacy",
		Refresh:       2 * time.Second,
		AdminTokenEnv: "VEIL_ADMIN_TOKEN",
		TaskPoll:      time.Second,
		Settle:        6 * time.Second,
		// About 13 months: a year of history plus the month in progress.
		RetentionDays:  map[string]int{"events": 395},
		RetentionEvery: time.Hour,
	}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	switch {
	case c.Database == "" || strings.ContainsAny(c.Database, "`. \"';"):
		return errors.New("privacy.database must be a plain identifier")
	case c.Refresh <= 0 || c.Refresh > 5*time.Second:
		return errors.New("privacy.refresh must be between 0 and 5s: opt-outs must be in force within 5 s")
	case c.TaskPoll <= 0:
		return errors.New("privacy.task_poll must be positive")
	case c.Settle < c.Refresh:
		return errors.New("privacy.settle must be at least privacy.refresh")
	case c.RetentionEvery <= 0:
		return errors.New("privacy.retention_every must be positive")
	}
	for t, d := range c.RetentionDays {
		if d < 0 || t == "" || strings.ContainsAny(t, "`. \"';") {
			return fmt.Errorf("privacy.retention_days: %q must be a table name with a number of days ≥ 0", t)
		}
	}
	return nil
}

// Migrate creates the privacy database and tables.
func Migrate(ctx context.Context, conn driver.Conn, db string) error {
	return MigrateCluster(ctx, conn, db, "")
}

// MigrateCluster creates the privacy database and tables on every node of
// cluster (one server when it is empty). Each node holds every table in
// full, replicated through ZooKeeper, so that every worker reads the whole
// registry and every tombstone from whichever node it asks.
func MigrateCluster(ctx context.Context, conn driver.Conn, db, cluster string) error {
	if cluster != "" {
		// DDL on a cluster goes through ZooKeeper: a worker that starts
		// while ZooKeeper is down, with the tables in place, must not need it.
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name IN ('optout_registry', 'deleted_users', 'tasks')", db).Scan(&n); err != nil {
			return fmt.Errorf("privacy: migrate: %w", err)
		}
		if n == 3 {
			return nil
		}
	}
	stmts, err := MigrationStatements(db, cluster)
	if err != nil {
		return err
	}
	for _, s := range stmts {
		if err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("privacy: migrate: %w", err)
		}
	}
	return nil
}

// MigrationStatements renders the privacy database's DDL for one server
// (cluster empty) or for every node of cluster.
func MigrationStatements(db, cluster string) ([]string, error) {
	stmts := []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		// version orders the entries of one pseudonym: the newest wins.
		`CREATE TABLE IF NOT EXISTS ` + db + `.optout_registry (
    project    String,
    pseudonym  String,
    opted_out  UInt8,
    version    UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY (project, pseudonym)`,
		`CREATE TABLE IF NOT EXISTS ` + db + `.deleted_users (
    project        String,
    pseudonym      String,
    deleted_before DateTime,
    task_id        String,
    version        UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY (project, pseudonym)`,
		`CREATE TABLE IF NOT EXISTS ` + db + `.tasks (
    task_id         String,
    kind            String,
    project         String,
    compliance_type String,
    status          String,
    pseudonyms      Array(String),
    id_count        UInt32,
    requested_at    DateTime,
    updated_at      DateTime,
    result          String,
    error           String,
    version         UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY task_id`,
	}
	stmts, err := sink.Layout{Cluster: cluster}.Everywhere(stmts, 1)
	if err != nil {
		return nil, fmt.Errorf("privacy: migrate: %w", err)
	}
	return stmts, nil
}

// Registry is every worker's in-memory copy of the opt-out registry and the
// deletion tombstones, refreshed from ClickHouse.
type Registry struct {
	conn driver.Conn
	db   string
	keys *pseudonym.Keyring
	log  *zap.Logger
	cfg  Config

	mu      sync.RWMutex
	optOut  map[string]bool      // project \x00 pseudonym → opted out
	deleted map[string]tombstone // project \x00 pseudonym → newest tombstone
	seen    uint64               // newest version loaded

	optIns chan [2]string
}

// NewRegistry builds a registry; Run loads and refreshes it.
func NewRegistry(cfg Config, conn driver.Conn, keys *pseudonym.Keyring, log *zap.Logger) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Registry{
		conn: conn, db: cfg.Database, keys: keys, log: log, cfg: cfg,
		optOut: map[string]bool{}, deleted: map[string]tombstone{},
		optIns: make(chan [2]string, 1024),
	}, nil
}

func regKey(project, pseudonym string) string { return project + "\x00" + pseudonym }

// tombstone is a deletion request: events received up to before must not be
// stored. A cancelled request is a newer tombstone with a zero time.
type tombstone struct {
	before  time.Time
	version uint64
}

// OptedOut reports whether any of the user's pseudonyms is registered.
func (r *Registry) OptedOut(project string, ids []pseudonym.Pseudonym) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.optOut) == 0 {
		return false
	}
	for _, id := range ids {
		if r.optOut[regKey(project, id.Value)] {
			return true
		}
	}
	return false
}

// DeletedBefore returns the latest deletion request covering the user.
func (r *Registry) DeletedBefore(project string, ids []pseudonym.Pseudonym) (time.Time, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var at time.Time
	found := false
	for _, id := range ids {
		if tb, ok := r.deleted[regKey(project, id.Value)]; ok && tb.before.Unix() > 0 && (!found || tb.before.After(at)) {
			at, found = tb.before, true
		}
	}
	return at, found
}

// OptIn clears the user's opt-out here at once and, in the background, in
// the registry every worker reads.
func (r *Registry) OptIn(project, id string) {
	ids := r.keys.All(project, id)
	r.mu.Lock()
	was := false
	for _, p := range ids {
		k := regKey(project, p.Value)
		was = was || r.optOut[k]
		delete(r.optOut, k)
	}
	r.mu.Unlock()
	if !was {
		return
	}
	select {
	case r.optIns <- [2]string{project, id}:
	default:
		r.log.Warn("opt-in queue full; the opt-in takes effect on this worker only until it is sent again")
	}
}

// Set records ids of project as opted out (or back in) in ClickHouse and
// in this copy.
func (r *Registry) Set(ctx context.Context, project string, ids []string, optedOut bool) error {
	b, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+".optout_registry (project, pseudonym, opted_out, version)")
	if err != nil {
		return err
	}
	defer b.Close()
	v := uint64(time.Now().UnixNano())
	var flag uint8
	if optedOut {
		flag = 1
	}
	var keys []string
	for _, id := range ids {
		for _, p := range r.keys.All(project, id) {
			if err := b.Append(project, p.Value, flag, v); err != nil {
				return err
			}
			keys = append(keys, regKey(project, p.Value))
		}
	}
	if err := b.Send(); err != nil {
		return err
	}
	r.mu.Lock()
	for _, k := range keys {
		if optedOut {
			r.optOut[k] = true
		} else {
			delete(r.optOut, k)
		}
	}
	r.mu.Unlock()
	return nil
}

// Run loads the registry, then refreshes it every cfg.Refresh and writes
// opt-ins, until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	if err := r.refresh(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("loading the opt-out registry failed; retrying", zap.Error(err))
	}
	t := time.NewTicker(r.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.refresh(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("refreshing the opt-out registry failed", zap.Error(err))
			}
		case oi := <-r.optIns:
			if err := r.Set(ctx, oi[0], []string{oi[1]}, false); err != nil && ctx.Err() == nil {
				r.log.Warn("recording an opt-in failed", zap.Error(err))
			}
		}
	}
}

// Load reads the registry once; workers call it before consuming so that
// the first events are already judged against it.
func (r *Registry) Load(ctx context.Context) error { return r.refresh(ctx) }

func (r *Registry) refresh(ctx context.Context) error {
	r.mu.RLock()
	since := r.seen
	r.mu.RUnlock()
	// Entries are read in version order, newer over older. The overlap of a
	// few seconds catches inserts that became visible out of order.
	const overlap = uint64(10 * time.Second)
	from := uint64(0)
	if since > overlap {
		from = since - overlap
	}
	rows, err := r.conn.Query(ctx, "SELECT project, pseudonym, opted_out, version FROM "+r.db+".optout_registry WHERE version >= ? ORDER BY version", from)
	if err != nil {
		return err
	}
	type entry struct {
		k   string
		out bool
		v   uint64
	}
	var opts []entry
	for rows.Next() {
		var p, ps string
		var out uint8
		var v uint64
		if err := rows.Scan(&p, &ps, &out, &v); err != nil {
			rows.Close()
			return err
		}
		opts = append(opts, entry{regKey(p, ps), out == 1, v})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	drows, err := r.conn.Query(ctx, "SELECT project, pseudonym, deleted_before, version FROM "+r.db+".deleted_users WHERE version >= ?", from)
	if err != nil {
		return err
	}
	type tomb struct {
		k string
		t time.Time
		v uint64
	}
	var tombs []tomb
	for drows.Next() {
		var p, ps string
		var t time.Time
		var v uint64
		if err := drows.Scan(&p, &ps, &t, &v); err != nil {
			drows.Close()
			return err
		}
		tombs = append(tombs, tomb{regKey(p, ps), t, v})
	}
	drows.Close()
	if err := drows.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range opts {
		if e.out {
			r.optOut[e.k] = true
		} else {
			delete(r.optOut, e.k)
		}
		r.seen = max(r.seen, e.v)
	}
	for _, tb := range tombs {
		if cur, ok := r.deleted[tb.k]; !ok || tb.v >= cur.version {
			r.deleted[tb.k] = tombstone{tb.t, tb.v}
		}
		r.seen = max(r.seen, tb.v)
	}
	return nil
}
