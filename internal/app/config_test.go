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
}

func TestLoadRejects(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "sink:\n  max_rowz: 5\n", "max_rowz"},
		{"invalid value", "collector:\n  projects: [{name: a, token: t}]\nsink:\n  max_rows: 0\n", "sink.max_rows must be positive"},
		{"no projects", "log:\n  level: info\n", "collector.projects"},
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
