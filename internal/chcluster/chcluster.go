// Package chcluster runs a replicated, sharded ClickHouse cluster on one
// machine: one ZooKeeper and shards × replicas clickhouse-server child
// processes on loopback, each with its own ports and directory. It is the
// cluster of `veil dev --clickhouse-shards N --clickhouse-replicas M` and of
// the cluster tests.
//
// Each server is an internal/chserver server (the same config.xml and
// users.xml, the read-only analyst user included) plus a config.d/cluster.xml
// that ClickHouse merges into it: the ZooKeeper address, the {shard} and
// {replica} macros, the cluster in <remote_servers> and the distributed DDL
// queue. Nothing depends on /etc/clickhouse-server.
package chcluster

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"text/template"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/veilhq/veil/internal/chserver"
)

// DefaultName is the cluster's name in <remote_servers>, which
// `sink.cluster` names.
const DefaultName = "veil"

// Config is the shape of the cluster and where it keeps its data.
type Config struct {
	Dir      string // ZooKeeper in Dir/zookeeper, node s-r in Dir/s<s>r<r>
	Name     string // the cluster's name; DefaultName when empty
	Shards   int
	Replicas int
	// Password is the password of Veil's own user (chserver.User), the
	// same on every node, and the one the nodes use for one another
	// (<remote_servers>: Distributed tables, cluster(), ON CLUSTER).
	// Empty: a random one, chosen at Start (Cluster.Password tells it).
	Password string
	// AnalystPassword, when set, creates the read-only `analyst` user on
	// every node (users.xml: 18.16 has no SQL-driven access control).
	AnalystPassword string
	StartTimeout    time.Duration
}

// Node is one clickhouse-server of the cluster.
type Node struct {
	Shard, Replica int    // 1-based
	Name           string // the {replica} macro: s<shard>r<replica>
	cfg            chserver.Config
	log            *zap.Logger

	mu  sync.Mutex
	srv *chserver.Server // nil while stopped
}

// Cluster is a running ZooKeeper and its clickhouse-servers.
type Cluster struct {
	cfg   Config
	ZK    *ZooKeeper
	Nodes []*Node // shard by shard, replica by replica
	log   *zap.Logger
}

// Start starts ZooKeeper, then every node (in parallel), and waits until
// each answers and sees ZooKeeper. On error everything started is stopped.
func Start(ctx context.Context, cfg Config, log *zap.Logger) (c *Cluster, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	switch {
	case cfg.Dir == "":
		return nil, errors.New("chcluster: dir must be set")
	case cfg.Shards < 1 || cfg.Replicas < 1:
		return nil, errors.New("chcluster: shards and replicas must be at least 1")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 90 * time.Second
	}
	if _, err := chserver.Find(); err != nil {
		return nil, err
	}
	if _, _, err := FindZooKeeper(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if cfg.Password == "" {
		var b [24]byte
		if _, err := crand.Read(b[:]); err != nil {
			return nil, err
		}
		cfg.Password = hex.EncodeToString(b[:])
	}
	c = &Cluster{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			c.Stop(context.Background())
		}
	}()
	if c.ZK, err = StartZooKeeper(ctx, filepath.Join(dir, "zookeeper"), 0, log.Named("zookeeper")); err != nil {
		return c, err
	}
	for s := 1; s <= cfg.Shards; s++ {
		for r := 1; r <= cfg.Replicas; r++ {
			n := &Node{Shard: s, Replica: r, Name: fmt.Sprintf("s%dr%d", s, r), log: log.Named(fmt.Sprintf("clickhouse-s%dr%d", s, r))}
			n.cfg = chserver.Config{Dir: filepath.Join(dir, n.Name), Password: cfg.Password, AnalystPassword: cfg.AnalystPassword, StartTimeout: cfg.StartTimeout}
			c.Nodes = append(c.Nodes, n)
		}
	}
	// Every node's ports are fixed up front: each config lists all of
	// them in <remote_servers>, and a restarted node keeps its own. A port
	// found free may be taken by another process before the server binds
	// it; then the whole set is picked again.
	for attempt := 1; ; attempt++ {
		if err = c.startNodes(ctx); err == nil || attempt == 3 || !errors.Is(err, errPortTaken) {
			break
		}
		log.Warn("a port was taken while the cluster started; starting again on other ports", zap.Error(err))
	}
	if err != nil {
		return c, err
	}
	log.Info("ClickHouse cluster started", zap.String("cluster", cfg.Name), zap.Int("shards", cfg.Shards), zap.Int("replicas", cfg.Replicas))
	return c, nil
}

// errPortTaken marks a node that could not bind one of its ports.
var errPortTaken = errors.New("a port was taken")

// startNodes picks ports for every node, writes their configurations and
// starts them in parallel; on error it stops those that started.
func (c *Cluster) startNodes(ctx context.Context) error {
	for _, n := range c.Nodes {
		for _, p := range []*int{&n.cfg.TCPPort, &n.cfg.HTTPPort, &n.cfg.InterserverPort} {
			var err error
			if *p, err = pickPort(); err != nil {
				return err
			}
		}
	}
	for _, n := range c.Nodes {
		if err := c.writeClusterConfig(n); err != nil {
			return err
		}
	}
	var g errgroup.Group
	for _, n := range c.Nodes {
		g.Go(func() error {
			err := n.Start(ctx)
			if err != nil {
				if b, _ := os.ReadFile(filepath.Join(n.cfg.Dir, "clickhouse-server.err.log")); bytes.Contains(b, []byte("Address already in use")) {
					_ = os.Remove(filepath.Join(n.cfg.Dir, "clickhouse-server.err.log"))
					return fmt.Errorf("%w: %w", errPortTaken, err)
				}
			}
			return err
		})
	}
	err := g.Wait()
	if err != nil {
		for _, n := range c.Nodes {
			n.Stop(ctx)
		}
	}
	return err
}

// pickPort returns a free loopback port below Linux's ephemeral range
// (32768 and up), where the kernel does not hand out ports to outgoing
// connections: a port picked there stays free until the server binds it
// unless another process picks the same one.
func pickPort() (int, error) {
	for i := 0; i < 100; i++ {
		p := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			l.Close()
			return p, nil
		}
	}
	return chserver.FreePort()
}

var clusterTmpl = template.Must(template.New("cluster").Parse(`<?xml version="1.0"?>
<!-- Written by Veil: this node's place in the cluster {{.Name}}. -->
<yandex>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <zookeeper>
    <node><host>127.0.0.1</host><port>{{.ZKPort}}</port></node>
    <session_timeout_ms>15000</session_timeout_ms>
  </zookeeper>
  <macros>
    <shard>{{.Node.Shard}}</shard>
    <replica>{{.Node.Name}}</replica>
    <cluster>{{.Name}}</cluster>
  </macros>
  <remote_servers>
    <{{.Name}}>
{{- range .Shards}}
      <shard>
        <internal_replication>true</internal_replication>
{{- range .}}
        <replica><host>127.0.0.1</host><port>{{.}}</port><user>{{$.User}}</user><password>{{$.Password}}</password></replica>
{{- end}}
      </shard>
{{- end}}
    </{{.Name}}>
  </remote_servers>
  <distributed_ddl>
    <path>/clickhouse/task_queue/ddl</path>
  </distributed_ddl>
  <!-- After a lost ZooKeeper session a replicated table is read-only until
       its replica is active again, which waits for the old session's
       is_active node to expire; the default retries once a minute. -->
  <merge_tree>
    <zookeeper_session_expiration_check_period>5</zookeeper_session_expiration_check_period>
  </merge_tree>
</yandex>
`))

// writeClusterConfig writes n's config.d/cluster.xml, which clickhouse-server
// merges into the config.xml chserver writes.
func (c *Cluster) writeClusterConfig(n *Node) error {
	shards := make([][]int, c.cfg.Shards)
	for _, m := range c.Nodes {
		shards[m.Shard-1] = append(shards[m.Shard-1], m.cfg.TCPPort)
	}
	var b bytes.Buffer
	if err := clusterTmpl.Execute(&b, struct {
		Name     string
		ZKPort   int
		Node     *Node
		Shards   [][]int
		User     string
		Password string
	}{c.cfg.Name, c.ZK.Port(), n, shards, chserver.User, xmlText(c.cfg.Password)}); err != nil {
		return err
	}
	d := filepath.Join(n.cfg.Dir, "config.d")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d, "cluster.xml"), b.Bytes(), 0o600)
}

// xmlText escapes s for an XML text node.
func xmlText(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// User is the user Veil connects to every node as; Password is its
// password, the same on every node.
func (c *Cluster) User() string     { return chserver.User }
func (c *Cluster) Password() string { return c.cfg.Password }

// Name is the cluster's name, for `sink.cluster`.
func (c *Cluster) Name() string { return c.cfg.Name }

// Dir is the cluster's directory.
func (c *Cluster) Dir() string { return c.cfg.Dir }

// Addrs are the native addresses of every node, for `sink.addr`.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.NativeAddr()
	}
	return out
}

// Shard returns the nodes of shard s (1-based).
func (c *Cluster) Shard(s int) []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Shard == s {
			out = append(out, n)
		}
	}
	return out
}

// Stop stops every node, then ZooKeeper, waiting for each process to exit
// (a node still running after ctx's deadline, or 20 s, is killed).
func (c *Cluster) Stop(ctx context.Context) {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Stop(ctx) }()
	}
	wg.Wait()
	if c.ZK != nil {
		c.ZK.Stop()
	}
}

// Start starts the node after Stop or Kill (or the first time), on its
// ports and data.
func (n *Node) Start(ctx context.Context) error {
	srv, err := chserver.Start(ctx, n.cfg, n.log)
	if err != nil {
		return fmt.Errorf("chcluster: node %s: %w", n.Name, err)
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	// clickhouse-server 18.16 answers /ping before its ZooKeeper session
	// exists, and crashes (a null session) when a distributed DDL query
	// comes first: the node is ready once it has read from ZooKeeper.
	if err := n.waitZooKeeper(ctx); err != nil {
		n.Kill()
		return fmt.Errorf("chcluster: node %s: %w", n.Name, err)
	}
	return nil
}

func (n *Node) waitZooKeeper(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.StartTimeout)
	defer cancel()
	u := "http://" + n.HTTPAddr() + "/?query=" + url.QueryEscape("SELECT count() FROM system.zookeeper WHERE path = '/'")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		req.SetBasicAuth(chserver.User, n.cfg.Password)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("no ZooKeeper session within the start timeout; see " + filepath.Join(n.cfg.Dir, "clickhouse-server.err.log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop shuts the node down cleanly.
func (n *Node) Stop(ctx context.Context) {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		_ = srv.Stop(ctx)
	}
}

// Kill stops the node with SIGKILL, as a crash or the OOM killer would.
func (n *Node) Kill() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Kill()
		_ = os.Remove(filepath.Join(n.cfg.Dir, "clickhouse.pid"))
	}
}

// Running reports whether the node's process runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil
}

// Server is the node's running server, or nil while it is stopped.
func (n *Node) Server() *chserver.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Pid is the node's process id, or 0 while it is stopped.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return 0
	}
	return n.srv.Pid()
}

// NativeAddr is host:port of the node's native protocol.
func (n *Node) NativeAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.cfg.TCPPort) }

// HTTPAddr is host:port of the node's HTTP interface.
func (n *Node) HTTPAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.cfg.HTTPPort) }

// Dir is the node's directory (data, logs, configuration).
func (n *Node) Dir() string { return n.cfg.Dir }
