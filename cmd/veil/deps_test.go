package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBinaryShipsOnlyTheRoles: the veil binary users deploy links no load
// generator, ceiling, benchmark runner or latency histogram; those are
// tools with a command of their own (cmd/veil-loadgen, bench/run).
func TestBinaryShipsOnlyTheRoles(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/veil: %v", err)
	}
	deps := strings.Fields(string(out))
	// What the binary is made of: if these are missing, go list did not
	// list the binary and the checks below would pass on nothing.
	for _, want := range []string{"github.com/veilhq/veil/internal/app", "github.com/veilhq/veil/ingest", "github.com/veilhq/veil/worker"} {
		if !slices.Contains(deps, want) {
			t.Fatalf("go list -deps ./cmd/veil does not list %s: %d packages", want, len(deps))
		}
	}
	for _, tc := range []struct {
		name string
		part string // a package whose import path holds this is not shipped
	}{
		{"load generator", "/loadgen"},
		{"load generator's command", "/cmd/veil-loadgen"},
		{"benchmarks and their runner", "github.com/veilhq/veil/bench"},
		{"histograms", "histogram"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range deps {
				if strings.Contains(strings.ToLower(d), tc.part) {
					t.Errorf("veil links %s", d)
				}
			}
		})
	}
}
