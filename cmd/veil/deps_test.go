package main

import (
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// TestBinaryShipsOnlyTheRoles: the veil binary users deploy links no load
// generator, ceiling, benchmark runner, latency histogram or image
// builder; those are tools with a command of their own (cmd/veil-loadgen,
// bench/run, tools/imagebuild), and no package written for tests (the fake
// producer, the test services).
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
		name    string
		shipped func(pkg string) bool // false: the package must not be linked
	}{
		{"load generator", func(p string) bool { return !strings.Contains(p, "loadgen") }},
		{"benchmarks and their runner", func(p string) bool { return !strings.HasPrefix(p, "github.com/veilhq/veil/bench") }},
		{"histograms", func(p string) bool { return !strings.Contains(strings.ToLower(p), "histogram") }},
		// tools/imagebuild: go-containerregistry and the roots it embeds.
		{"image builder", func(p string) bool {
			return !strings.HasPrefix(p, "github.com/google/go-containerregistry") && !strings.HasPrefix(p, "golang.org/x/crypto/x509roots") && !strings.HasPrefix(p, "github.com/veilhq/veil/tools/")
		}},
		// Fakes and test services: kafkatest, testsvc, obstest, ...
		{"test helpers", func(p string) bool {
			last := path.Base(p)
			return !strings.HasPrefix(p, "github.com/veilhq/veil/") || !(strings.HasSuffix(last, "test") || strings.HasPrefix(last, "test"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range deps {
				if !tc.shipped(d) {
					t.Errorf("veil links %s", d)
				}
			}
		})
	}
}
