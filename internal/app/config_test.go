package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadExampleConfig(t *testing.T) {
	for _, v := range []string{"VEIL_SHOP_TOKEN", "VEIL_SHOP_SECRET", "VEIL_IMPORTER_SECRET", "VEIL_CLICKHOUSE_PASSWORD"} {
		t.Setenv(v, "example-"+v)
	}
	cfg, err := Load(filepath.Join("..", "..", "deploy", "veil.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Collector.Projects[0].Name != "shop" || cfg.Sink.MaxAge != time.Second || cfg.Collector.Producer.MaxBatch != 1000 ||
		cfg.Collector.Projects[0].Token != "example-VEIL_SHOP_TOKEN" || cfg.Sink.Password != "example-VEIL_CLICKHOUSE_PASSWORD" {
		t.Fatalf("example config not read as written: %+v", cfg)
	}
	if cfg.Collector.Limits.MaxInflightBytes != 256<<20 || cfg.Collector.Server.MaxConnections != 4096 || cfg.Admin.Server.MaxConnections != 256 || cfg.Admin.CollectorListen != "127.0.0.1:9465" {
		t.Fatalf("example config's listener settings not read as written: %+v %+v", cfg.Collector.Server, cfg.Admin)
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "sink:\n  max_rowz: 5\n", "max_rowz"},
		{"invalid value", "collector:\n  projects: [{name: a, token: t}]\nsink:\n  max_rows: 0\n", "sink.max_rows must be positive"},
		{"no projects", "log:\n  level: info\n", "collector.projects"},
		{"an event limit", "collector:\n  projects: [{name: a, token: t}]\n  limits:\n    max_depth: 0\n", "collector.limits.max_depth must be positive"},
		{"admin without a connection cap", "collector:\n  projects: [{name: a, token: t}]\nadmin:\n  server:\n    max_connections: 0\n", "admin.server.max_connections must be positive"},
		{"the former worker.decoder", "collector:\n  projects: [{name: a, token: t}]\nworker:\n  decoder: raw\n", "worker.decoder is no longer a setting"},
		{"collector without a read timeout", "collector:\n  projects: [{name: a, token: t}]\n  server:\n    read_timeout: 0s\n", "collector.server.read_timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "veil.yaml")
			if err := os.WriteFile(p, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// TestLoggerSamples: a flood of one warning, as a flood of bad requests
// makes, writes a bounded number of lines, in veil dev's console format
// and in the production roles' JSON.
func TestLoggerSamples(t *testing.T) {
	const n = 10000
	for _, format := range []string{"console", "json"} {
		t.Run(format, func(t *testing.T) {
			zc, err := loggerConfig(LogConfig{Level: "info", Format: format})
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "log")
			zc.OutputPaths, zc.ErrorOutputPaths = []string{out}, []string{out}
			log, err := zc.Build()
			if err != nil {
				t.Fatal(err)
			}
			for range n {
				log.Warn("request rejected")
			}
			_ = log.Sync()
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Count(string(b), "\n")
			// Within one second, initial + (n-initial)/thereafter lines; the
			// flood may straddle a second, which at most doubles that.
			bound := 2 * (logSampleInitial + n/logSampleThereafter)
			t.Logf("%d identical warnings wrote %d lines (%d bytes); at most %d allowed", n, lines, len(b), bound)
			if lines == 0 || lines > bound {
				t.Fatalf("%d lines for %d identical warnings, want 1 to %d", lines, n, bound)
			}
		})
	}
}

// TestLimitsAreOneSection: the event limits (event/rules) are read from
// collector.limits beside the collector's own, one section that the
// collector and the worker both use.
func TestLimitsAreOneSection(t *testing.T) {
	p := filepath.Join(t.TempDir(), "veil.yaml")
	y := "collector:\n  projects: [{name: a, token: t}]\n  limits:\n    max_depth: 5\n    track_max_age: 48h\n    max_events_per_request: 100\n"
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Collector.Limits
	if l.MaxDepth != 5 || l.TrackMaxAge != 48*time.Hour || l.MaxEventsPerRequest != 100 || l.MaxProperties != 255 {
		t.Fatalf("limits read as %+v", l)
	}
}
