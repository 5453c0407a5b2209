package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseBench(t *testing.T) {
	out := `goos: linux
BenchmarkWorkerPass/events=50/all-2   	 600	 529380 ns/op	 10588 ns/event	 57.95 allocs/event	 144343 B/op	 2897 allocs/op
BenchmarkWorkerPass/events=50/all-2   	 600	 529999 ns/op	 10600 ns/event	 57.95 allocs/event	 144343 B/op	 2897 allocs/op
BenchmarkWorkerPass/events=50/all-2   	 600	 400000 ns/op	 8000 ns/event	 57.95 allocs/event	 144343 B/op	 2897 allocs/op
BenchmarkGeoLookup/dbip-lite-2
    geo_test.go:88: no real DB-IP Lite database
--- SKIP: BenchmarkGeoLookup/dbip-lite
BenchmarkPolicy/keep-2   	99193531	        11.31 ns/op	       0 B/op	       0 allocs/op
PASS
`
	got := parseBench(strings.NewReader(out))
	if len(got) != 2 {
		t.Fatalf("parsed %d benchmarks, want 2: %v", len(got), got)
	}
	pass := got["WorkerPass/events=50/all"]
	if pass["ns/op"] != 529380 || pass["ns/event"] != 10588 || pass["allocs/event"] != 57.95 || pass["B/op"] != 144343 {
		t.Fatalf("medians %v", pass)
	}
	if p := got["Policy/keep"]; p["ns/op"] != 11.31 || p["allocs/op"] != 0 || len(p) != 3 {
		t.Fatalf("policy %v", p)
	}
}

func TestBoundingRole(t *testing.T) {
	for _, tc := range []struct {
		name  string
		roles []Role
		want  string
	}{
		{"none", nil, ""},
		{"brokers", []Role{{Role: roleCollector, CoreMicros: 25}, {Role: roleBrokers, CoreMicros: 162}, {Role: roleWorker, CoreMicros: 27}}, roleBrokers},
		{"worker", []Role{{Role: roleCollector, CoreMicros: 3}, {Role: roleBrokers, CoreMicros: 9}, {Role: roleWorker, CoreMicros: 9.5}, {Role: roleClickHouse, CoreMicros: 4}}, roleWorker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := boundingRole(tc.roles); got != tc.want {
				t.Fatalf("boundingRole = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestProcCPU: a process's own CPU time grows with the work it does, and
// a process that does not exist has none.
func TestProcCPU(t *testing.T) {
	pid := os.Getpid()
	before := procCPU(pid)
	// Work until the kernel has counted 50 ms more; on a busy machine that
	// takes longer, and only a count that never grows fails.
	deadline := time.Now().Add(time.Minute)
	x := 0
	for procCPU(pid) < before+0.05 {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU still %.2f s after a minute of work (%d)", procCPU(pid), x)
		}
	}
	if got := procCPU(1 << 30); got != 0 {
		t.Fatalf("procCPU of no process = %v", got)
	}
}
