package sink

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

var plainIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// shard is one shard of the cluster as the worker writes to it: a pool per
// replica, and the replica writes go to. Every worker prefers the replicas
// in the cluster's order, so in steady state all write through the same
// replica of a shard and read back what they wrote.
type shard struct {
	num   int      // shard_num in system.clusters (1-based)
	addrs []string // its replicas listed in sink.addr, in the cluster's order
	conns []driver.Conn

	mu  sync.Mutex
	cur int
	// synced holds the ops tables the current replica has been brought up
	// to date on (SYSTEM SYNC REPLICA) since it became current.
	synced map[string]bool
}

// openShards learns the cluster's shards from system.clusters on the first
// node of sink.addr that answers, and opens a pool to every replica listed
// in sink.addr. Every shard needs at least one; an address that is not a
// node of the cluster is a configuration error.
func openShards(ctx context.Context, cfg Config) ([]*shard, error) {
	type node struct {
		shard int
		addrs []string
	}
	var nodes []node
	var lastErr error
	for _, a := range cfg.Addr {
		c := cfg
		c.Addr = []string{a}
		conn, err := Connect(c)
		if err != nil {
			lastErr = err
			continue
		}
		rows, err := conn.Query(ctx, "SELECT shard_num, host_name, host_address, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", cfg.Cluster)
		if err != nil {
			conn.Close()
			lastErr = err
			continue
		}
		for rows.Next() {
			var num uint32
			var name, addr string
			var port uint16
			if err = rows.Scan(&num, &name, &addr, &port); err != nil {
				break
			}
			p := strconv.Itoa(int(port))
			nodes = append(nodes, node{int(num), []string{net.JoinHostPort(name, p), net.JoinHostPort(addr, p)}})
		}
		rows.Close()
		conn.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			nodes, lastErr = nil, err
			continue
		}
		break
	}
	if nodes == nil {
		if lastErr != nil {
			return nil, fmt.Errorf("sink: reading cluster %s from sink.addr: %w", cfg.Cluster, lastErr)
		}
		return nil, fmt.Errorf("sink.cluster: no cluster %q in system.clusters of the servers in sink.addr", cfg.Cluster)
	}
	listed := map[string]bool{}
	for _, a := range cfg.Addr {
		listed[a] = true
	}
	used := map[string]bool{}
	var out []*shard
	for _, n := range nodes {
		if len(out) == 0 || out[len(out)-1].num != n.shard {
			out = append(out, &shard{num: n.shard})
		}
		sh := out[len(out)-1]
		for _, a := range n.addrs {
			if listed[a] {
				sh.addrs = append(sh.addrs, a)
				used[a] = true
				break
			}
		}
	}
	for _, a := range cfg.Addr {
		if !used[a] {
			return nil, fmt.Errorf("sink.addr: %s is not a node of cluster %s", a, cfg.Cluster)
		}
	}
	for _, sh := range out {
		if len(sh.addrs) == 0 {
			return nil, fmt.Errorf("sink.addr lists no replica of shard %d of cluster %s", sh.num, cfg.Cluster)
		}
		for _, a := range sh.addrs {
			c := cfg
			c.Addr = []string{a}
			conn, err := Connect(c)
			if err != nil {
				return nil, err
			}
			sh.conns = append(sh.conns, conn)
		}
	}
	return out, nil
}

// target is where shard i's next write goes (the server's tables when i
// is -1).
func (s *Sink) target(i int) target {
	if i < 0 {
		return target{conn: s.conn, shard: -1}
	}
	sh := s.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return target{conn: sh.conns[sh.cur], suffix: LocalSuffix, shard: i, replica: sh.cur}
}

// failover moves shard i's writes to its next replica after a write
// through t failed, unless another write has moved them already.
func (s *Sink) failover(i int, t target) {
	sh := s.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.cur == t.replica && len(sh.conns) > 1 {
		sh.cur = (sh.cur + 1) % len(sh.conns)
		sh.synced = nil
	}
}

// syncReplica brings t's replica up to date on opsTable before the state
// of its entities is read back from it: a replica that has just become a
// shard's write target may not yet have fetched the operations written
// through the one before. It waits while that replica is unreachable,
// which shows as a retried write and consumer lag, never as a state
// computed from part of the log. A replica that has been the target all
// along needs nothing.
func (s *Sink) syncReplica(ctx context.Context, t target, opsTable string) error {
	if t.shard < 0 {
		return nil
	}
	sh := s.shards[t.shard]
	sh.mu.Lock()
	done := sh.cur == t.replica && sh.synced[opsTable]
	sh.mu.Unlock()
	if done {
		return nil
	}
	if err := t.conn.Exec(ctx, "SYSTEM SYNC REPLICA "+s.cfg.Database+"."+opsTable+LocalSuffix); err != nil {
		return err
	}
	sh.mu.Lock()
	if sh.cur == t.replica {
		if sh.synced == nil {
			sh.synced = map[string]bool{}
		}
		sh.synced[opsTable] = true
	}
	sh.mu.Unlock()
	return nil
}
