package sink

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

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

	mu     sync.Mutex
	cur    int
	recent recentOps // operations lately written to this shard
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
	}
}

// recentWindow is how long a shard remembers the operations written
// through it, and recentMax how many at most: ClickHouse replicates a part
// within seconds, and a replica lost before its peer fetched its last parts
// takes those operations with it until it is back (see recentOps).
const (
	recentWindow = 2 * time.Minute
	recentMax    = 200000
)

// recentOps are the profile and group operations a worker wrote to one
// shard lately, by entity. The state of an entity is folded from its
// operations as the replica written through reads them back plus these: a
// replica that has just become the shard's write target may not yet have
// fetched the parts written through the one before, and one written
// through a replica that then died may even be recognised as a block
// already written, and reach it only by replication.
type recentOps struct {
	byEntity map[entity][]storedOp
	order    []recentEntry
}

type recentEntry struct {
	at time.Time
	e  entity
}

func (r *recentOps) add(now time.Time, ops *opRows) {
	if r.byEntity == nil {
		r.byEntity = map[entity][]storedOp{}
	}
	for i := range ops.project {
		e := ops.entityAt(i)
		r.byEntity[e] = append(r.byEntity[e], ops.storedAt(i))
		r.order = append(r.order, recentEntry{now, e})
	}
	n := 0
	for n < len(r.order) && (len(r.order)-n > recentMax || now.Sub(r.order[n].at) > recentWindow) {
		e := r.order[n].e
		if l := r.byEntity[e]; len(l) > 1 {
			r.byEntity[e] = l[1:]
		} else {
			delete(r.byEntity, e)
		}
		n++
	}
	r.order = append(r.order[:0], r.order[n:]...)
}

// rememberOps records ops written to shard t.
func (s *Sink) rememberOps(t target, ops *opRows) {
	if t.shard < 0 {
		return
	}
	sh := s.shards[t.shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.recent.add(time.Now(), ops)
}

// addRecent adds to logs the operations lately written to shard t on the
// entities ents that logs lacks (by $insert_id and operation).
func (s *Sink) addRecent(t target, logs map[string][]storedOp, ents []entity) {
	if t.shard < 0 {
		return
	}
	sh := s.shards[t.shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, e := range ents {
		for _, o := range sh.recent.byEntity[e] {
			if !slices.ContainsFunc(logs[e.id], func(x storedOp) bool { return x.insertID == o.insertID && x.op == o.op }) {
				logs[e.id] = append(logs[e.id], o)
			}
		}
	}
}

// EachShard runs fn once on every shard of the cluster, on the replica the
// shard's writes go to, moving to its next replica when fn fails there, as
// writes do; on one server it runs fn on the server. Statements that
// replicate within a shard by themselves (ALTER … DELETE, DROP PARTITION
// on a replicated table) go this way rather than ON CLUSTER, so they need
// neither the distributed DDL queue nor every node to be up: a replica
// that is down takes the change from ZooKeeper when it is back.
func (s *Sink) EachShard(ctx context.Context, fn func(ctx context.Context, conn driver.Conn) error) error {
	if s.shards == nil {
		return fn(ctx, s.conn)
	}
	for i, sh := range s.shards {
		var err error
		for range sh.conns {
			t := s.target(i)
			if err = fn(ctx, t.conn); err == nil || ctx.Err() != nil {
				break
			}
			s.failover(i, t)
		}
		if err != nil {
			return fmt.Errorf("shard %d: %w", sh.num, err)
		}
	}
	return nil
}
