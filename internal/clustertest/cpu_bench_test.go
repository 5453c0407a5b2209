package clustertest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/sink"
)

// cpuTicks is the CPU time (user + system, in clock ticks of 1/100 s)
// the processes have used, from /proc/<pid>/stat.
func cpuTicks(b *testing.B, pids []int) uint64 {
	b.Helper()
	var sum uint64
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// The command may hold spaces; the fields after it are fixed.
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		sum += ut + st
	}
	return sum
}

// benchBatch fills a batch with n track events of users distinct users,
// shaped like mixpanel-browser's, numbered from first.
func benchBatch(b *testing.B, batch *sink.Batch, first, n int) {
	b.Helper()
	ts := time.Now().UTC()
	for i := first; i < first+n; i++ {
		ev := event.Event{Kind: event.KindTrack, Project: "shop", Name: "page_view",
			DistinctID: fmt.Sprintf("%064x", i%5000), InsertID: fmt.Sprintf("bench-%d", i), Time: ts, ReceivedAt: ts,
			Properties: event.PropertiesOf(map[string]any{"$current_url": "https://shop.example/p/" + strconv.Itoa(i%97), "$browser": "Chrome", "$os": "Linux",
				"$screen_width": 1920, "$referrer": "https://search.example/", "mp_lib": "web", "plan": "pro"}),
			Device: event.Device{Browser: "Chrome", BrowserVersion: "120", OS: "Linux", Lib: "web", LibVersion: "2.55.0"}}
		if err := batch.Append(&ev); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSink opens a sink of cfg on a database of its own, with the schema,
// closed when the benchmark ends.
func benchSink(b *testing.B, cfg sink.Config, prefix string) (*sink.Sink, sink.Config) {
	b.Helper()
	ctx := context.Background()
	cfg.Database = strings.ToLower(testsvc.Unique(b, prefix))
	s, err := sink.Open(ctx, cfg, sink.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	return s, cfg
}

// clusterSinkConfig is a sink on the package's cluster, as Veil's own user.
func clusterSinkConfig() sink.Config {
	cfg := sink.DefaultConfig()
	cfg.Addr, cfg.Cluster = cluster.Addrs(), cluster.Name()
	cfg.Username, cfg.Password = cluster.User(), cluster.Password()
	return cfg
}

// clusterPids are the pids of the cluster's clickhouse-servers.
func clusterPids() []int {
	var p []int
	for _, n := range cluster.Nodes {
		p = append(p, n.Pid())
	}
	return p
}

// BenchmarkWritePaths writes batches of 10 000 events (b.N batches) and
// reports, besides the time per row, the CPU all clickhouse-server
// processes spent per stored row: on one server; on the 2×2 cluster the
// way the worker writes (each shard's rows straight into its local table
// through one replica, which the other replica then fetches); and through
// the Distributed table with insert_distributed_sync=1, which the worker
// does not do. Run: go test -run '^$' -bench WritePaths -benchtime 20x ./internal/clustertest/
func BenchmarkWritePaths(b *testing.B) {
	const rows = 10000
	ctx := context.Background()
	run := func(b *testing.B, pids []int, write func(i int) error) {
		b.Helper()
		before, start := cpuTicks(b, pids), time.Now()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := write(i); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		elapsed := time.Since(start)
		// Replication: the other replica fetches and stores each part too;
		// the figure counts it, so wait until the replicas have caught up.
		time.Sleep(2 * time.Second)
		used := float64(cpuTicks(b, pids)-before) / 100
		stored := float64(b.N * rows)
		b.Logf("figures: %s: %.0f rows stored, ClickHouse CPU %.1f µs per stored row (%d servers), %.0f rows/s", b.Name(), stored, used/stored*1e6, len(pids), stored/elapsed.Seconds())
		b.ReportMetric(used/stored*1e6, "ch-cpu-µs/row")
		b.ReportMetric(stored/elapsed.Seconds(), "rows/s")
		b.ReportMetric(0, "ns/op")
	}
	sinkWrite := func(b *testing.B, cfg sink.Config, pids []int) {
		s, _ := benchSink(b, cfg, "bench")
		batch := sink.NewBatch()
		run(b, pids, func(i int) error {
			batch.Reset()
			benchBatch(b, batch, i*rows, rows)
			return s.Write(ctx, batch)
		})
	}
	b.Run("single-server", func(b *testing.B) {
		cfg := testsvc.SinkConfig(b)
		sinkWrite(b, cfg, []int{testsvc.ClickHouse(b).Pid()})
	})
	b.Run("cluster-local-tables", func(b *testing.B) {
		sinkWrite(b, clusterSinkConfig(), clusterPids())
	})
	b.Run("cluster-distributed-sync", func(b *testing.B) {
		s, cfg := benchSink(b, clusterSinkConfig(), "bench")
		// The same rows, inserted through veil.events as an analyst's tool
		// would: the receiving node splits them by the sharding key and
		// forwards each shard's part before it answers.
		sctx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
		run(b, clusterPids(), func(i int) error {
			batch, err := s.Conn().PrepareBatch(sctx, "INSERT INTO "+cfg.Database+".events (project, time, event, distinct_id, insert_id, received_at, browser, os, lib, properties)")
			if err != nil {
				return err
			}
			ts := time.Now().UTC()
			for j := i * rows; j < (i+1)*rows; j++ {
				if err := batch.Append("shop", ts, "page_view", fmt.Sprintf("%064x", j%5000), fmt.Sprintf("bench-%d", j), ts, "Chrome", "Linux", "web",
					`{"$current_url":"https://shop.example/p/`+strconv.Itoa(j%97)+`","$browser":"Chrome","$os":"Linux","$screen_width":1920,"$referrer":"https://search.example/","mp_lib":"web","plan":"pro"}`); err != nil {
					return err
				}
			}
			return batch.Send()
		})
	})
}

// settle waits until no server of conns merges a part or has a replication
// task queued, for two polls in a row, so that the CPU read after it
// includes the background work the inserts caused.
func settle(b *testing.B, conns []driver.Conn) {
	b.Helper()
	ctx := context.Background()
	quiet := 0
	for deadline := time.Now().Add(2 * time.Minute); quiet < 2; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			b.Fatal("merges and replication did not settle within 2 minutes")
		}
		busy := uint64(0)
		for _, c := range conns {
			var m, q uint64
			if err := c.QueryRow(ctx, "SELECT count() FROM system.merges").Scan(&m); err != nil {
				b.Fatal(err)
			}
			if err := c.QueryRow(ctx, "SELECT count() FROM system.replication_queue").Scan(&q); err != nil {
				b.Fatal(err)
			}
			busy += m + q
		}
		if busy == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
}

// BenchmarkBatchSize writes the same 400 000 events in batches of
// different sizes and reports the CPU all clickhouse-server processes
// spent per stored row, the background merges and replica fetches the
// inserts caused included (the run waits for them to settle). It is what
// sink.max_rows and sink.max_age trade against the time to query: each
// flush makes one part per table and shard, which ClickHouse merges later.
// Run: go test -run '^$' -bench BatchSize -benchtime 1x ./internal/clustertest/
func BenchmarkBatchSize(b *testing.B) {
	const total = 400_000
	ctx := context.Background()
	type target struct {
		name string
		cfg  func() sink.Config
		pids func() []int
	}
	targets := []target{
		{"single-server", func() sink.Config { return testsvc.SinkConfig(b) }, func() []int { return []int{testsvc.ClickHouse(b).Pid()} }},
		{"cluster", clusterSinkConfig, clusterPids},
	}
	for _, tg := range targets {
		for _, rows := range []int{1000, 4000, 10000, 40000, 100000} {
			b.Run(fmt.Sprintf("%s/rows=%d", tg.name, rows), func(b *testing.B) {
				s, cfg := benchSink(b, tg.cfg(), "batch")
				var conns []driver.Conn
				if cfg.Cluster == "" {
					conns = []driver.Conn{s.Conn()}
				} else {
					for _, n := range cluster.Nodes {
						conns = append(conns, nodeConn(b, n, "", ""))
					}
				}
				settle(b, conns)
				pids := tg.pids()
				batch := sink.NewBatch()
				b.ResetTimer()
				for range b.N {
					before, start := cpuTicks(b, pids), time.Now()
					for i := 0; i < total; i += rows {
						batch.Reset()
						benchBatch(b, batch, i, rows)
						if err := s.Write(ctx, batch); err != nil {
							b.Fatal(err)
						}
					}
					written := time.Since(start)
					settle(b, conns)
					used := float64(cpuTicks(b, pids)-before) / 100
					b.Logf("figures: %s: %d rows in batches of %d, ClickHouse CPU %.2f µs per stored row, merges and replication included (%d servers), written in %.1f s",
						b.Name(), total, rows, used/total*1e6, len(pids), written.Seconds())
					b.ReportMetric(used/total*1e6, "ch-cpu-µs/row")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
