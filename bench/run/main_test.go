package main

import (
	"strings"
	"testing"
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
