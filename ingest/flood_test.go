package ingest

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestStalledBodiesHoldLittleMemory floods the collector, on loopback,
// with requests that declare a 10 MiB body, send 5 bytes of it and stall:
// a few hundred such connections cost their sender ~150 bytes each, and
// must not cost the collector memory on the word of their Content-Length.
func TestStalledBodiesHoldLittleMemory(t *testing.T) {
	const (
		conns    = 300
		declared = 10 << 20
		bound    = 32 << 20
	)
	c, _, reg := newTestCollector(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, l) }()
	var clients []net.Conn
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	before := liveHeap()
	head := fmt.Sprintf("POST /track HTTP/1.1\r\nHost: veil\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n[{\"ev", declared)
	for range conns {
		cl, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl)
		if _, err := io.WriteString(cl, head); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for n := gauge(t, reg, "veil_collector_requests_in_flight"); n != conns; n = gauge(t, reg, "veil_collector_requests_in_flight") {
		if time.Now().After(deadline) {
			t.Fatalf("%v requests in flight after 20 s, want %d", n, conns)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Every request is reading its body now; let the last ones reach
	// their first read, and take the largest of a few measures.
	var during uint64
	for range 5 {
		time.Sleep(50 * time.Millisecond)
		during = max(during, liveHeap())
	}
	grew := int64(during) - int64(before)
	t.Logf("figures: %d stalled requests declaring %d MiB: heap grew %.1f MiB, bound %d MiB", conns, declared>>20, float64(grew)/(1<<20), bound>>20)
	if grew > bound {
		t.Fatalf("heap grew %.1f MiB, more than %d MiB", float64(grew)/(1<<20), bound>>20)
	}
}

// gauge reads a gauge without labels.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
