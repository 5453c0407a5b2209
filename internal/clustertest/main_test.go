// Package clustertest proves Veil on a replicated, sharded ClickHouse: one
// ZooKeeper and 2 shards × 2 replicas of clickhouse-server, started once for
// the package. Events posted to a collector, profile state, deletions,
// retention and the analyst user are checked on every replica of every
// shard; the fault tests kill a replica, stop ZooKeeper and kill a worker
// under load, and account for every message exactly.
package clustertest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chcluster"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/faulttest"
	"github.com/veilhq/veil/internal/testsvc"
)

// cluster is the package's cluster: shards 1 and 2, replicas s1r1, s1r2,
// s2r1, s2r2.
var cluster *chcluster.Cluster

const shards, replicas = 2, 2

func TestMain(m *testing.M) {
	_, errCH := chserver.Find()
	_, _, errZK := chcluster.FindZooKeeper()
	if errCH != nil || errZK != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "clustertest:", errCH, errZK)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "skipping the cluster tests:", errCH, errZK)
		os.Exit(0)
	}
	// VEIL_CLUSTER_KEEP keeps the cluster's directory (logs, data) for a
	// closer look after a run.
	keep := os.Getenv("VEIL_CLUSTER_KEEP")
	dir, err := os.MkdirTemp(keep, "veil-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	cluster, err = chcluster.Start(context.Background(), chcluster.Config{
		Dir: dir, Shards: shards, Replicas: replicas, AnalystPassword: testsvc.AnalystPassword,
	}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "clustertest:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "clustertest: ZooKeeper and %d×%d clickhouse-servers started in %s\n", shards, replicas, time.Since(start).Round(100*time.Millisecond))
	code := faulttest.Main(m)
	cluster.Stop(context.Background())
	if keep == "" {
		_ = os.RemoveAll(dir)
	}
	os.Exit(code)
}

// config is a worker configuration on the cluster with a database of its
// own (faulttest.Config: short timings, its own topics and group).
func config(t *testing.T) app.Config {
	t.Helper()
	cfg := faulttest.Config(t, cluster.Nodes[0].Server())
	cfg.Sink.Addr = cluster.Addrs()
	cfg.Sink.Username, cfg.Sink.Password = cluster.User(), cluster.Password()
	cfg.Sink.Cluster = cluster.Name()
	// A deletion settles for twice this; the registry is re-read as often.
	cfg.Privacy.Refresh = 500 * time.Millisecond
	cfg.Privacy.Settle = time.Second
	return cfg
}

// nodeConn opens a connection to one node (as Veil's own user, or as user,
// whose session starts in the database veil: the analyst may use no other).
func nodeConn(t testing.TB, n *chcluster.Node, user, password string) driver.Conn {
	t.Helper()
	auth := clickhouse.Auth{Database: "default", Username: cluster.User(), Password: cluster.Password()}
	if user != "" {
		auth.Database, auth.Username, auth.Password = "veil", user, password
	}
	c, err := clickhouse.Open(&clickhouse.Options{Addr: []string{n.NativeAddr()}, Auth: auth, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// replicaState is what one replica holds of a table: its rows and a
// checksum of their identity, equal on two replicas holding the same rows.
type replicaState struct {
	rows uint64
	sum  uint64
}

func readReplica(t *testing.T, c driver.Conn, table, idCols string) replicaState {
	t.Helper()
	var s replicaState
	q := fmt.Sprintf("SELECT count(), sum(cityHash64(%s)) FROM %s", idCols, table)
	if err := c.QueryRow(context.Background(), q).Scan(&s.rows, &s.sum); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

// replicasAgree waits until the two replicas of every shard hold the same
// rows of table (local name), and returns each shard's state.
func replicasAgree(t *testing.T, db, table, idCols string) []replicaState {
	t.Helper()
	out := make([]replicaState, shards)
	for s := 1; s <= shards; s++ {
		nodes := cluster.Shard(s)
		conns := make([]driver.Conn, len(nodes))
		for i, n := range nodes {
			conns[i] = nodeConn(t, n, "", "")
		}
		var states []replicaState
		testsvc.Eventually(t, 60*time.Second, fmt.Sprintf("the replicas of shard %d agree on %s", s, table), func() bool {
			states = states[:0]
			for _, c := range conns {
				states = append(states, readReplica(t, c, db+"."+table, idCols))
			}
			for _, st := range states[1:] {
				if st != states[0] {
					return false
				}
			}
			return true
		})
		out[s-1] = states[0]
	}
	return out
}
