// Package sink owns Veil's ClickHouse schema and writes de-identified events
// to it in batched native inserts.
package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/veilhq/veil/event"
)

// Config is the sink section of Veil's configuration.
type Config struct {
	Addr     []string `yaml:"addr"`
	Database string   `yaml:"database"`
	Username string   `yaml:"username"`
	Password string   `yaml:"password"`
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
}

// DefaultConfig returns the sink defaults.
func DefaultConfig() Config {
	return Config{
		Addr:     []string{"127.0.0.1:9000"},
		Database: "veil",
		Username: "default",
		// 10k rows of ~1 KiB each is ~10 MiB, well within one insert block;
		// one second keeps the send-to-queryable lag low at modest rates.
		MaxRows:     10000,
		MaxBytes:    16 << 20,
		MaxAge:      time.Second,
		RetryMin:    100 * time.Millisecond,
		RetryMax:    30 * time.Second,
		DialTimeout: 5 * time.Second,
	}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	switch {
	case len(c.Addr) == 0:
		return errors.New("sink.addr must list at least one ClickHouse native address")
	case c.Database == "" || strings.ContainsAny(c.Database, "`. \"'"):
		return errors.New("sink.database must be a plain identifier")
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
	}
	return nil
}

// Deps are the sink's collaborators.
type Deps struct {
	Logger  *zap.Logger
	Metrics prometheus.Registerer
}

type metrics struct {
	rows          prometheus.Counter
	flushDuration prometheus.Histogram
	batchRows     prometheus.Histogram
	errors        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veil_sink_rows_written_total", Help: "Rows written to ClickHouse.",
		}),
		flushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "veil_sink_flush_duration_seconds", Help: "Time to write one batch, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "veil_sink_batch_rows", Help: "Rows per written batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_sink_insert_errors_total", Help: "Failed insert attempts, by class.",
		}, []string{"class"}),
	}
	if reg != nil {
		reg.MustRegister(m.rows, m.flushDuration, m.batchRows, m.errors)
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
	v, err := conn.ServerVersion()
	if err != nil {
		conn.Close()
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

// Migrate applies the schema.
func (s *Sink) Migrate(ctx context.Context) error {
	return Migrate(ctx, s.conn, s.cfg.Database, s.caps, s.log)
}

// Ping checks that ClickHouse answers.
func (s *Sink) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// Close closes the connection pool.
func (s *Sink) Close() error { return s.conn.Close() }

// Full reports whether b has reached a row or byte bound.
func (s *Sink) Full(b *Batch) bool { return b.Len() >= s.cfg.MaxRows || b.bytes >= s.cfg.MaxBytes }

// MaxAge is how long a batch may wait before it is flushed.
func (s *Sink) MaxAge() time.Duration { return s.cfg.MaxAge }

var eventColumns = []string{
	"project", "time", "time_ms", "event", "distinct_id", "insert_id", "received_at",
	"country_code", "region", "city", "browser", "browser_version", "os", "device", "lib", "lib_version",
	"properties", "policy_version", "key_epoch", "consent", "transforms",
}

// Batch accumulates rows column by column, so that a flush hands each column
// to the driver as one slice and a retried flush can resend the same rows.
type Batch struct {
	project, event, distinctID, insertID             []string
	time, receivedAt                                 []time.Time
	timeMs                                           []uint16
	country, region, city                            []string
	browser, browserVersion, os, device, lib, libVer []string
	properties                                       []string
	policyVersion, keyEpoch                          []uint32
	consent, transforms                              [][]string
	bytes                                            int
	started                                          time.Time
}

// NewBatch returns an empty batch.
func NewBatch() *Batch { return &Batch{} }

// Len is the number of rows in b.
func (b *Batch) Len() int { return len(b.project) }

// Bytes is an estimate of b's size on the wire.
func (b *Batch) Bytes() int { return b.bytes }

// Started is when the first row was appended.
func (b *Batch) Started() time.Time { return b.started }

// Reset empties b, keeping its capacity.
func (b *Batch) Reset() {
	*b = Batch{
		project: b.project[:0], event: b.event[:0], distinctID: b.distinctID[:0], insertID: b.insertID[:0],
		time: b.time[:0], receivedAt: b.receivedAt[:0], timeMs: b.timeMs[:0],
		country: b.country[:0], region: b.region[:0], city: b.city[:0],
		browser: b.browser[:0], browserVersion: b.browserVersion[:0], os: b.os[:0], device: b.device[:0],
		lib: b.lib[:0], libVer: b.libVer[:0], properties: b.properties[:0],
		policyVersion: b.policyVersion[:0], keyEpoch: b.keyEpoch[:0], consent: b.consent[:0], transforms: b.transforms[:0],
	}
}

// Append adds a de-identified track event as a row.
func (b *Batch) Append(ev *event.Event) error {
	props, err := json.Marshal(ev.Properties)
	if err != nil {
		return fmt.Errorf("sink: properties are not JSON-encodable: %w", err)
	}
	if b.Len() == 0 {
		b.started = time.Now()
	}
	b.project = append(b.project, ev.Project)
	b.time = append(b.time, ev.Time)
	b.timeMs = append(b.timeMs, uint16(ev.Time.Nanosecond()/int(time.Millisecond)))
	b.event = append(b.event, ev.Name)
	b.distinctID = append(b.distinctID, ev.DistinctID)
	b.insertID = append(b.insertID, ev.InsertID)
	b.receivedAt = append(b.receivedAt, ev.ReceivedAt)
	b.country = append(b.country, ev.Geo.CountryCode)
	b.region = append(b.region, ev.Geo.Region)
	b.city = append(b.city, ev.Geo.City)
	d := &ev.Device
	b.browser = append(b.browser, d.Browser)
	b.browserVersion = append(b.browserVersion, d.BrowserVersion)
	b.os = append(b.os, d.OS)
	b.device = append(b.device, d.Device)
	b.lib = append(b.lib, d.Lib)
	b.libVer = append(b.libVer, d.LibVersion)
	b.properties = append(b.properties, string(props))
	b.policyVersion = append(b.policyVersion, ev.Provenance.PolicyVersion)
	b.keyEpoch = append(b.keyEpoch, ev.Provenance.KeyEpoch)
	b.consent = append(b.consent, nonNil(ev.Provenance.Consent))
	b.transforms = append(b.transforms, nonNil(ev.Provenance.Transforms))
	b.bytes += 64 + len(props) + len(ev.Project) + len(ev.Name) + len(ev.DistinctID) + len(ev.InsertID) +
		len(d.Browser) + len(d.OS) + len(d.Device) + len(d.Lib) + len(ev.Geo.City) + len(ev.Geo.Region)
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (b *Batch) columns() []any {
	return []any{
		b.project, b.time, b.timeMs, b.event, b.distinctID, b.insertID, b.receivedAt,
		b.country, b.region, b.city, b.browser, b.browserVersion, b.os, b.device, b.lib, b.libVer,
		b.properties, b.policyVersion, b.keyEpoch, b.consent, b.transforms,
	}
}

// Write inserts b, retrying with capped exponential backoff and jitter until
// it succeeds or ctx ends. It returns nil only when every row is in
// ClickHouse; on error nothing may be acknowledged.
func (s *Sink) Write(ctx context.Context, b *Batch) error {
	if b.Len() == 0 {
		return nil
	}
	start := time.Now()
	delay := s.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		err := s.insert(ctx, b)
		if err == nil {
			s.m.rows.Add(float64(b.Len()))
			s.m.batchRows.Observe(float64(b.Len()))
			s.m.flushDuration.Observe(time.Since(start).Seconds())
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		class := classify(err)
		s.m.errors.WithLabelValues(class).Inc()
		// ClickHouse errors say which column or setting is wrong, never a
		// row's values, so they are safe to log.
		s.log.Warn("insert failed; retrying", zap.Int("rows", b.Len()), zap.Int("attempt", attempt),
			zap.String("class", class), zap.Duration("backoff", delay), zap.Error(err))
		// Full jitter keeps several workers from retrying in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		delay = min(delay*2, s.cfg.RetryMax)
	}
}

func (s *Sink) insert(ctx context.Context, b *Batch) error {
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+".events ("+strings.Join(eventColumns, ", ")+")")
	if err != nil {
		return err
	}
	defer batch.Close()
	for i, col := range b.columns() {
		if err := batch.Column(i).Append(col); err != nil {
			return fmt.Errorf("column %s: %w", eventColumns[i], err)
		}
	}
	return batch.Send()
}

// classify names the kind of an insert failure for the error metric.
func classify(err error) string {
	var ex *clickhouse.Exception
	var ne net.Error
	switch {
	case errors.As(err, &ex):
		return "server"
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return "network"
	}
	return "other"
}
