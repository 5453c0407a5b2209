package chcluster_test

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/veilhq/veil/internal/chcluster"
	"github.com/veilhq/veil/internal/chserver"
)

func TestMain(m *testing.M) {
	if _, err := chserver.Find(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "skipping chcluster tests:", err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// open connects to addr as Veil's own user with password.
func open(t *testing.T, addr, password string) driver.Conn {
	t.Helper()
	c, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: 2 * time.Second,
		Auth: clickhouse.Auth{Database: "default", Username: chserver.User, Password: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func count(t *testing.T, c driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := c.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// TestCluster starts one ZooKeeper and a shard of two replicas, and checks
// what the cluster tests rely on: the cluster as ClickHouse sees it,
// replication of an insert to the other replica, a replica killed and
// restarted catching up, ZooKeeper stopped and started again, and no
// process left once the cluster is stopped.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	c, err := chcluster.Start(ctx, chcluster.Config{Dir: dbgDir(t), Shards: 1, Replicas: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{c.ZK.Pid()}
	for _, n := range c.Nodes {
		pids = append(pids, n.Pid())
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.Stop(ctx)
		}
	})
	if len(c.Nodes) != 2 || len(c.Shard(1)) != 2 || c.Nodes[1].Name != "s1r2" {
		t.Fatalf("nodes %+v", c.Nodes)
	}
	a, b := open(t, c.Nodes[0].NativeAddr(), c.Password()), open(t, c.Nodes[1].NativeAddr(), c.Password())
	if n := count(t, a, "SELECT count() FROM system.clusters WHERE cluster = '"+c.Name()+"'"); n != 2 {
		t.Fatalf("system.clusters lists %d replicas, want 2", n)
	}
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS t ON CLUSTER " + c.Name(),
		"CREATE TABLE IF NOT EXISTS t.x ON CLUSTER " + c.Name() + " (a UInt32) ENGINE = ReplicatedMergeTree('/clickhouse/test/{shard}/t.x', '{replica}') ORDER BY a",
	} {
		if err := a.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	insert := func(conn driver.Conn, from, n int) error {
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO t.x (a)")
		if err != nil {
			return err
		}
		for i := from; i < from+n; i++ {
			if err := batch.Append(uint32(i)); err != nil {
				return err
			}
		}
		return batch.Send()
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not true after 60 s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := insert(a, 0, 100); err != nil {
		t.Fatal(err)
	}
	eventually("the other replica has the 100 rows", func() bool { return count(t, b, "SELECT count() FROM t.x") == 100 })
	// The nodes query one another as Veil's user with the password every
	// node shares (<remote_servers>): there is no passwordless default.
	for _, conn := range []driver.Conn{a, b} {
		if n := count(t, conn, "SELECT count() FROM cluster('"+c.Name()+"', t, x) SETTINGS prefer_localhost_replica = 0"); n != 100 {
			t.Fatalf("through the cluster: %d rows, want 100", n)
		}
	}

	t.Run("replica killed and restarted", func(t *testing.T) {
		pid := c.Nodes[1].Pid()
		c.Nodes[1].Kill()
		if alive(pid) || c.Nodes[1].Running() {
			t.Fatal("the killed node still runs")
		}
		if err := insert(a, 100, 50); err != nil {
			t.Fatalf("insert with one replica down: %v", err)
		}
		if err := c.Nodes[1].Start(ctx); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, c.Nodes[1].Pid())
		b := open(t, c.Nodes[1].NativeAddr(), c.Password())
		eventually("the restarted replica caught up", func() bool { return count(t, b, "SELECT count() FROM t.x") == 150 })
	})

	t.Run("ZooKeeper stopped and started", func(t *testing.T) {
		c.ZK.Stop()
		if c.ZK.Pid() != 0 {
			t.Fatal("ZooKeeper still runs")
		}
		if err := insert(a, 150, 10); err == nil {
			t.Fatal("an insert into a replicated table succeeded without ZooKeeper")
		}
		if err := c.ZK.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, c.ZK.Pid())
		eventually("inserts accepted again", func() bool { return insert(a, 150, 10) == nil })
		eventually("both replicas have 160 rows", func() bool {
			return count(t, a, "SELECT count() FROM t.x") == 160 && count(t, b, "SELECT count() FROM t.x") == 160
		})
	})

	c.Stop(ctx)
	stopped = true
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still runs after Stop", pid)
		}
	}
}

func dbgDir(t *testing.T) string {
	if d := os.Getenv("VEIL_CLUSTER_KEEP"); d != "" {
		os.RemoveAll(d)
		return d
	}
	return t.TempDir()
}
