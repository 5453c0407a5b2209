package sink_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/sink"
)

func TestMain(m *testing.M) { os.Exit(testsvc.Main(m)) }

func TestMigrateIsIdempotent(t *testing.T) {
	cfg := testsvc.SinkConfig(t)
	ctx := context.Background()
	s, err := sink.Open(ctx, cfg, sink.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 3; i++ {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	// Migrations that need a feature the server lacks are not recorded, so
	// that they run once the server is upgraded.
	want := 0
	for _, m := range sink.Migrations {
		if m.Requires == nil || m.Requires(s.Capabilities()) {
			want++
		}
	}
	conn := testsvc.Conn(t, cfg)
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Database+".schema_migrations FINAL"); n != uint64(want) {
		t.Fatalf("%d recorded migrations, want %d", n, want)
	}
	if s.Capabilities().Major == 18 && want != len(sink.Migrations)-1 {
		t.Fatalf("on 18.16 exactly the RBAC migration should be skipped; %d of %d apply", want, len(sink.Migrations))
	}
}

func TestWriteAndDeduplicate(t *testing.T) {
	s, cfg := testsvc.Sink(t)
	ctx := context.Background()
	ts := time.Date(2026, 11, 20, 10, 30, 15, 250e6, time.UTC)
	ev := event.Event{
		Kind: event.KindTrack, Project: "shop", Name: "purchase", DistinctID: "p-1", InsertID: "ins-1",
		Time: ts, ReceivedAt: ts.Add(time.Second),
		Properties: event.PropertiesOf(map[string]any{"amount": json.Number("12.50"), "sku": "A-1"}),
		Geo:        event.Geo{CountryCode: "DE", Region: "Berlin", City: "Berlin"},
		Device:     event.Device{Browser: "Firefox", OS: "Linux", Lib: "web", LibVersion: "2.55.0"},
		Provenance: event.Provenance{PolicyVersion: 3, KeyEpoch: 1, Consent: []string{"gpc"}, Transforms: []string{"ip_dropped"}},
	}
	b := sink.NewBatch()
	// The same event twice, as a replay would write it, and one other.
	for _, id := range []string{"ins-1", "ins-1", "ins-2"} {
		e := ev
		e.InsertID = id
		if err := b.Append(&e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	conn := testsvc.Conn(t, cfg)
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Database+".events FINAL"); n != 2 {
		t.Fatalf("%d rows after FINAL, want 2 (the replayed row folded)", n)
	}
	var (
		country, props string
		ms             uint16
		tm             time.Time
		transforms     []string
		policy         uint32
	)
	row := conn.QueryRow(ctx, "SELECT country_code, properties, time_ms, time, transforms, policy_version FROM "+cfg.Database+".events WHERE insert_id = 'ins-2'")
	if err := row.Scan(&country, &props, &ms, &tm, &transforms, &policy); err != nil {
		t.Fatal(err)
	}
	if country != "DE" || props != `{"amount":12.50,"sku":"A-1"}` || ms != 250 || !tm.Equal(ts.Truncate(time.Second)) ||
		strings.Join(transforms, ",") != "ip_dropped" || policy != 3 {
		t.Fatalf("row read back wrong: %s %s %d %s %v %d", country, props, ms, tm, transforms, policy)
	}
}

func TestCapabilities(t *testing.T) {
	tests := []struct {
		major, minor uint64
		want         sink.Capabilities
	}{
		{18, 16, sink.Capabilities{Major: 18, Minor: 16}},
		{23, 8, sink.Capabilities{Major: 23, Minor: 8, LowCardinality: true, Codecs: true, TTL: true, InsertDedupToken: true, RBAC: true}},
		{21, 3, sink.Capabilities{Major: 21, Minor: 3, LowCardinality: true, Codecs: true, TTL: true, RBAC: true}},
	}
	for _, tt := range tests {
		if got := sink.CapabilitiesFor(tt.major, tt.minor); got != tt.want {
			t.Errorf("%d.%d: %+v, want %+v", tt.major, tt.minor, got, tt.want)
		}
	}
	ddl := strings.Join(sink.Migrations[0].Statements("veil", sink.CapabilitiesFor(23, 8)), "\n")
	if !strings.Contains(ddl, "LowCardinality(String)") || !strings.Contains(ddl, "CODEC(ZSTD(1))") {
		t.Errorf("modern DDL lacks LowCardinality or codecs:\n%s", ddl)
	}
	old := strings.Join(sink.Migrations[0].Statements("veil", sink.CapabilitiesFor(18, 16)), "\n")
	if strings.Contains(old, "LowCardinality") || strings.Contains(old, "CODEC") {
		t.Errorf("18.16 DDL uses features it lacks:\n%s", old)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*sink.Config)
		key    string
	}{
		{"database", func(c *sink.Config) { c.Database = "veil; DROP" }, "sink.database"},
		{"write timeout", func(c *sink.Config) { c.WriteTimeout = 0 }, "sink.write_timeout"},
		{"analyst user", func(c *sink.Config) { c.AnalystPassword = "x"; c.AnalystUser = "a`b" }, "sink.analyst_user"},
		{"retry", func(c *sink.Config) { c.RetryMax = c.RetryMin / 2 }, "sink.retry_min"},
		{"analyst time", func(c *sink.Config) { c.AnalystLimits.MaxExecutionTime = 0 }, "sink.analyst_limits.max_execution_time"},
		{"analyst time below a second", func(c *sink.Config) { c.AnalystLimits.MaxExecutionTime = time.Millisecond }, "sink.analyst_limits.max_execution_time"},
		{"analyst memory", func(c *sink.Config) { c.AnalystLimits.MaxMemoryUsage = 0 }, "sink.analyst_limits.max_memory_usage"},
		{"analyst rows", func(c *sink.Config) { c.AnalystLimits.MaxRowsToRead = -1 }, "sink.analyst_limits.max_rows_to_read"},
		{"analyst bytes", func(c *sink.Config) { c.AnalystLimits.MaxBytesToRead = 0 }, "sink.analyst_limits.max_bytes_to_read"},
		{"analyst concurrency", func(c *sink.Config) { c.AnalystLimits.MaxConcurrentQueries = 0 }, "sink.analyst_limits.max_concurrent_queries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := sink.DefaultConfig()
			tt.modify(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("got %v, want an error naming %s", err, tt.key)
			}
		})
	}
	if err := sink.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}
