package main

import (
	"testing"
	"time"
)

// TestParse: veil-loadgen takes the load generator's flags with no command
// (as `veil loadgen` took them), and the hidden ceiling command that
// --ceiling-own-process starts takes the token from --token.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		cmd     string
		check   func(c *cli) bool
		explain string
	}{
		{"defaults", nil, "drive", func(c *cli) bool {
			cfg := c.config()
			return cfg.Target == "http://127.0.0.1:8080" && cfg.Batch == 50 && cfg.Concurrency == 16 && cfg.Duration == 10*time.Second && cfg.Token == "loadgen"
		}, "want the collector on 127.0.0.1:8080, batches of 50, 16 connections, 10s, token loadgen"},
		{"flags", []string{"--ceiling", "collector", "--ceiling-own-process", "--batch", "1", "--rate", "2000", "--events", "500", "--json", "--clickhouse-http", "http://127.0.0.1:8123"}, "drive", func(c *cli) bool {
			cfg := c.config()
			return cfg.Ceiling == "collector" && cfg.CeilingOwnProcess && cfg.Batch == 1 && cfg.Rate == 2000 && cfg.Events == 500 && cfg.Duration == 0 && cfg.JSON && cfg.ClickHouseHTTP == "http://127.0.0.1:8123"
		}, "want each flag in the config, no duration with --events"},
		{"endpoints leave the token to project.json", []string{"--endpoints", ".veil/endpoints.json"}, "drive", func(c *cli) bool {
			return c.config().Token == "" && c.config().Endpoints == ".veil/endpoints.json"
		}, "want no token"},
		{"ceiling", []string{"ceiling", "collector", "--token", "tok"}, "ceiling <kind>", func(c *cli) bool {
			return c.Serve.Kind == "collector" && c.Token == "tok"
		}, "want kind collector, token tok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, cmd, err := parse(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if cmd != tc.cmd {
				t.Fatalf("command %q, want %q", cmd, tc.cmd)
			}
			if !tc.check(c) {
				t.Fatalf("%+v: %s", c.loadgenFlags, tc.explain)
			}
		})
	}
	if _, _, err := parse([]string{"ceiling", "kafka"}); err == nil {
		t.Fatal("ceiling kafka (which runs in the load generator's process only) was taken")
	}
}
