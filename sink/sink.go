// Package sink owns Veil's ClickHouse schema and writes de-identified events
// to it in batched native inserts.
package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Config is the sink section of Veil's configuration.
type Config struct {
	// Addr lists ClickHouse's native addresses: the server, or every node
	// of the cluster when Cluster is set.
	Addr []string `yaml:"addr"`
	// Cluster, when set, names the cluster (in the servers' remote_servers)
	// that Veil's schema is created on: replicated local tables on every
	// node behind Distributed tables, sharded by the pseudonymous user (see
	// docs/schema.md). Empty: one server.
	Cluster  string `yaml:"cluster"`
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// MaxRows, MaxBytes and MaxAge bound a batch; it is flushed at whichever
	// comes first. ClickHouse wants few large inserts (about one a second per
	// table): each insert makes a part that must later be merged.
	MaxRows  int           `yaml:"max_rows"`
	MaxBytes int           `yaml:"max_bytes"`
	MaxAge   time.Duration `yaml:"max_age"`
	// RetryMin and RetryMax bound the exponential backoff of a failed insert.
	// Inserts are retried until they succeed or the worker stops: a batch is
	// never dropped, and its offsets are not committed until it is written.
	RetryMin    time.Duration `yaml:"retry_min"`
	RetryMax    time.Duration `yaml:"retry_max"`
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// WriteTimeout bounds one insert attempt, so that a server that accepts
	// the connection but never answers is retried like one that refuses it.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// AnalystUser and AnalystPassword, when the password is set and the
	// server has SQL-driven access control (20.4+), make `veil migrate`
	// create or update a read-only user with the analyst role. On older
	// servers the user is configured in users.xml (see docs/schema.md).
	AnalystUser     string `yaml:"analyst_user"`
	AnalystPassword string `yaml:"analyst_password"`
	// AnalystLimits bound each analyst query (time, memory, rows and bytes
	// read, concurrent queries); see AnalystLimits for the defaults and
	// why. `veil migrate` puts them in the analyst settings profile on
	// servers with SQL-driven access control; on 18.16 they belong in the
	// analyst profile of users.xml (see docs/schema.md).
	AnalystLimits AnalystLimits `yaml:"analyst_limits"`
}

// DefaultConfig returns the sink defaults.
func DefaultConfig() Config {
	return Config{
		Addr:     []string{"127.0.0.1:9000"},
		Database: "veil",
		Username: "default",
		// Each flush makes one part per table (per shard on a cluster),
		// which ClickHouse merges later: larger batches cost it less per
		// row. Over the same 400 000 events, batches of 40 000 took 2.2
		// core-µs of ClickHouse CPU per stored row, merges included, against
		// 6.3 for batches of 10 000 (3.9 against 14.9 on 2 shards × 2
		// replicas; clustertest's BenchmarkBatchSize, docs/performance.md).
		// 50 000 rows of ~1 KiB fit 64 MiB; the worker holds at most two
		// batches. One second keeps the send-to-queryable lag low: a worker
		// reaches max_rows within it only above 50 000 events/s.
		MaxRows:     50000,
		MaxBytes:    64 << 20,
		MaxAge:      time.Second,
		RetryMin:    100 * time.Millisecond,
		RetryMax:    30 * time.Second,
		DialTimeout: 5 * time.Second,
		// An insert of max_bytes takes well under a second on a healthy
		// server; a minute leaves room for a busy one.
		WriteTimeout:  time.Minute,
		AnalystUser:   "analyst",
		AnalystLimits: DefaultAnalystLimits(),
	}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	switch {
	case len(c.Addr) == 0:
		return errors.New("sink.addr must list at least one ClickHouse native address")
	case c.Database == "" || strings.ContainsAny(c.Database, "`. \"'"):
		return errors.New("sink.database must be a plain identifier")
	case c.Cluster != "" && !plainIdent.MatchString(c.Cluster):
		return errors.New("sink.cluster must be a plain identifier (letters, digits, underscores)")
	case c.MaxRows <= 0:
		return errors.New("sink.max_rows must be positive")
	case c.MaxBytes <= 0:
		return errors.New("sink.max_bytes must be positive")
	case c.MaxAge <= 0:
		return errors.New("sink.max_age must be positive")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return errors.New("sink.retry_min must be positive and at most sink.retry_max")
	case c.DialTimeout <= 0:
		return errors.New("sink.dial_timeout must be positive")
	case c.WriteTimeout <= 0:
		return errors.New("sink.write_timeout must be positive")
	case c.AnalystPassword != "" && (c.AnalystUser == "" || strings.ContainsAny(c.AnalystUser, "`. \"'\\")):
		return errors.New("sink.analyst_user must be a plain identifier when sink.analyst_password is set")
	}
	return c.AnalystLimits.Validate()
}

// Deps are the sink's collaborators.
type Deps struct {
	Logger  *zap.Logger
	Metrics prometheus.Registerer
}

type metrics struct {
	rows          *prometheus.CounterVec
	flushDuration prometheus.Histogram
	batchRows     prometheus.Histogram
	errors        *prometheus.CounterVec
	retrying      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_sink_rows_written_total", Help: "Rows written to ClickHouse, by table.",
		}, []string{"table"}),
		flushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "veil_sink_flush_duration_seconds", Help: "Time to write one batch, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "veil_sink_batch_rows", Help: "Rows per written batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_sink_insert_errors_total", Help: "Failed write attempts, by class.",
		}, []string{"class"}),
		retrying: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "veil_sink_write_retrying", Help: "1 while a batch is waiting to be retried (ClickHouse refusing or unreachable), else 0.",
		}),
	}
	for _, t := range tables {
		m.rows.WithLabelValues(t)
	}
	for _, c := range []string{"server", "network", "timeout", "other"} {
		m.errors.WithLabelValues(c)
	}
	if reg != nil {
		reg.MustRegister(m.rows, m.flushDuration, m.batchRows, m.errors, m.retrying)
	}
	return m
}

// Sink writes batches of events to ClickHouse.
type Sink struct {
	cfg  Config
	conn driver.Conn
	caps Capabilities
	log  *zap.Logger
	m    *metrics
	// shards are the cluster's shards with a pool per replica; nil on one
	// server.
	shards []*shard
}

// Open connects to ClickHouse and learns the server's capabilities.
func Open(ctx context.Context, cfg Config, deps Deps) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	conn, err := Connect(cfg)
	if err != nil {
		return nil, err
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("sink: ClickHouse at %v unreachable: %w", cfg.Addr, err)
	}
	c := cfg
	c.Cluster = "" // New checks the server; the shards are read here
	s, err := New(c, conn, deps)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.cfg = cfg
	if cfg.Cluster != "" {
		if s.shards, err = openShards(ctx, cfg); err != nil {
			conn.Close()
			return nil, err
		}
		s.log.Info("writing to a ClickHouse cluster", zap.String("cluster", cfg.Cluster), zap.Int("shards", len(s.shards)))
	}
	return s, nil
}

// New builds a sink on a connection already open, learning the server's
// capabilities from it; the sink owns conn from then on. Open is Connect,
// Ping and New; the tests that run Veil's statements on an embedded
// ClickHouse engine (internal/chdbtest) bring their own connection.
func New(cfg Config, conn driver.Conn, deps Deps) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	v, err := conn.ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("sink: server version: %w", err)
	}
	s := &Sink{
		cfg:  cfg,
		conn: conn,
		caps: CapabilitiesFor(v.Version.Major, v.Version.Minor),
		log:  deps.Logger,
		m:    newMetrics(deps.Metrics),
	}
	s.log.Info("connected to ClickHouse", zap.String("version", fmt.Sprintf("%d.%d.%d", v.Version.Major, v.Version.Minor, v.Version.Patch)))
	if cfg.Cluster != "" {
		// The shards are learnt by Open, which has a context to read
		// them with.
		return nil, errors.New("sink: on a cluster (sink.cluster) the sink is built by Open")
	}
	return s, nil
}

// Connect opens a native-protocol connection pool without checking it.
func Connect(cfg Config) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        cfg.Addr,
		Auth:        clickhouse.Auth{Database: "default", Username: cfg.Username, Password: cfg.Password},
		DialTimeout: cfg.DialTimeout,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		// The driver warns about servers older than it supports; Veil checks
		// the version itself and adapts the schema, so that warning is noise.
		Logger: nil,
	})
}

// Conn exposes the connection for migrations and privacy requests.
func (s *Sink) Conn() driver.Conn { return s.conn }

// Capabilities are what the connected server supports.
func (s *Sink) Capabilities() Capabilities { return s.caps }

// Migrate applies the schema and, where the server has SQL-driven access
// control, the analyst limits profile on the analyst role and, when
// configured, the read-only analyst user.
func (s *Sink) Migrate(ctx context.Context) error {
	if err := MigrateLayout(ctx, s.conn, s.cfg.Database, s.caps, s.Layout(), s.log); err != nil {
		return err
	}
	if !s.caps.RBAC {
		return nil
	}
	stmts := AnalystProfileStatements(s.cfg.AnalystLimits)
	if s.cfg.AnalystPassword != "" {
		sum := sha256.Sum256([]byte(s.cfg.AnalystPassword))
		stmts = AnalystUserStatements(s.cfg.AnalystUser, hex.EncodeToString(sum[:]), s.cfg.AnalystLimits)
	}
	stmts, err := s.Layout().Access(stmts)
	if err != nil {
		return err
	}
	for _, stmt := range stmts {
		if err := s.conn.Exec(ctx, stmt); err != nil {
			var ex *clickhouse.Exception
			if errors.As(err, &ex) {
				// The migrating user may lack access management; Veil runs
				// without the analyst user and limits rather than not at
				// all, and says so.
				s.log.Warn("analyst profile or user not created: the server refused", zap.Error(err))
				return nil
			}
			return fmt.Errorf("sink: create analyst profile and user: %w", err)
		}
	}
	return nil
}

// Ping checks that ClickHouse answers.
func (s *Sink) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// Close closes the connection pools.
func (s *Sink) Close() error {
	for _, sh := range s.shards {
		for _, c := range sh.conns {
			c.Close()
		}
	}
	return s.conn.Close()
}

// Layout is where the schema lives: the server, or sink.cluster.
func (s *Sink) Layout() Layout { return Layout{Cluster: s.cfg.Cluster} }
