package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadExampleConfig(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "..", "deploy", "veil.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Collector.Projects[0].Name != "shop" || cfg.Sink.MaxAge != time.Second || cfg.Collector.Producer.MaxBatch != 1000 {
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
		{"admin without a connection cap", "collector:\n  projects: [{name: a, token: t}]\nadmin:\n  server:\n    max_connections: 0\n", "admin.server.max_connections must be positive"},
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
