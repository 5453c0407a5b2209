// Command veil is Veil's single binary: `veil dev` runs the whole pipeline on
// one machine; `veil collector`, `veil worker` and `veil migrate` are the
// production roles, each configured from one file.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"go.uber.org/zap"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/devstack"
	"github.com/veilhq/veil/loadgen"
)

type roleFlags struct {
	Config string `required:"" type:"existingfile" help:"Configuration file (YAML)."`
}

type cli struct {
	Version kong.VersionFlag `help:"Print the version and exit."`
	Dev     struct {
		Listen       string `default:"127.0.0.1:8080" help:"Collector address."`
		DataDir      string `default:"./.veil" help:"Where Kafka and ClickHouse keep their data between runs."`
		Kafka        string `default:"embedded" enum:"embedded,apache" help:"embedded: one Kafka-protocol broker inside veil (kfake); apache: Apache Kafka brokers as child processes (needs Java and the jars of make deps)."`
		KafkaBrokers int    `default:"3" help:"With --kafka apache: how many brokers."`
		// A replicated, sharded ClickHouse instead of one server.
		ClickhouseShards   int `placeholder:"N" help:"Run a ClickHouse cluster of N shards (with ZooKeeper) instead of one server."`
		ClickhouseReplicas int `placeholder:"M" help:"Replicas of each shard of the ClickHouse cluster."`
	} `cmd:"" help:"Run the whole pipeline on this machine: embedded Kafka, ClickHouse, collector and worker."`
	Collector   roleFlags    `cmd:"" help:"Run the HTTP collector."`
	Worker      roleFlags    `cmd:"" help:"Run a worker of the consumer group."`
	Migrate     roleFlags    `cmd:"" help:"Create the Kafka topics and apply the ClickHouse schema."`
	Loadgen     loadgenFlags `cmd:"" help:"Drive a collector on this machine with mixpanel-browser's requests and report throughput, latency and end-to-end lag."`
	Healthcheck struct {
		URL     string        `arg:"" help:"URL to GET, e.g. http://127.0.0.1:8080/readyz."`
		Timeout time.Duration `default:"3s" help:"How long to wait for the answer."`
	} `cmd:"" help:"Exit 0 when URL answers 200: a container health check for an image without a shell."`
	Ceiling struct {
		Kind  string `arg:"" enum:"http,collector" help:"http or collector."`
		Token string `default:"loadgen" help:"Project token of the load generator's events, the collector's one project."`
	} `cmd:"" hidden:"" help:"Serve a load generator's ceiling for veil loadgen in another process."`
}

type loadgenFlags struct {
	Target            string        `default:"http://127.0.0.1:8080" help:"Collector base URL; loopback addresses only."`
	Endpoints         string        `placeholder:"FILE" help:"endpoints.json of a running veil dev (e.g. .veil/endpoints.json): the collector and clickhouse_http come from it."`
	Ceiling           string        `placeholder:"KIND" help:"Start a server in this process and drive it instead: http (a trivial handler answering 1), collector (the collector and an embedded broker, no worker) or kafka (the collector's producer alone, writing the collector's messages for each request into an embedded broker, no HTTP)."`
	CeilingOwnProcess bool          `help:"Run the ceiling in a process of its own, at a lower priority than the load generator, instead of sharing this process's Go scheduler."`
	CeilingNice       int           `default:"10" help:"With --ceiling-own-process: how much lower the ceiling's priority is (niceness added, 0-19)."`
	Batch             int           `default:"50" help:"Events per request (1 for single-event requests)."`
	Rate              float64       `placeholder:"N" help:"Fixed rate in --rate-unit per second; 0 sends flat out."`
	RateUnit          string        `default:"events" enum:"events,requests" help:"Unit of --rate: events or requests."`
	Concurrency       int           `default:"16" help:"Requests in flight at most (connections)."`
	Duration          time.Duration `help:"Stop after this long (default 10s when --events is not given either)."`
	Events            int64         `placeholder:"N" help:"Stop after this many events."`
	Warmup            time.Duration `help:"Leave the first part of the run out of the figures."`
	Timeout           time.Duration `default:"30s" help:"Timeout of one request."`
	ClickhouseHTTP    string        `name:"clickhouse-http" placeholder:"URL" help:"ClickHouse HTTP address, with user:password@ when it needs them: watch the events table grow and report end-to-end throughput and lag."`
	Table             string        `default:"veil.events" help:"Table whose count() is watched."`
	WatchInterval     time.Duration `default:"100ms" help:"How often the table's count is sampled."`
	Drain             time.Duration `default:"60s" help:"How long to wait after the last request for the table to catch up."`
	Token             string        `placeholder:"TOKEN" help:"Project token the events carry (default: with --endpoints, the token in project.json beside it; otherwise loadgen, which the ceilings' collectors take)."`
	Seed              uint64        `default:"1" help:"Seed of the generated events."`
	Templates         int           `default:"64" help:"Distinct request bodies generated up front."`
	Progress          time.Duration `default:"1s" help:"Interval of the progress line on stderr; 0 for none."`
	JSON              bool          `name:"json" help:"Print the report as JSON on stdout (the text report goes to stderr)."`
	CPUProfile        string        `name:"cpuprofile" placeholder:"FILE" help:"With --ceiling, write a CPU profile of the server over the measured part (of this whole process when the ceiling shares it)."`
}

func (f loadgenFlags) config() loadgen.Config {
	c := loadgen.Config{
		Target: f.Target, Endpoints: f.Endpoints,
		Ceiling: f.Ceiling, CeilingOwnProcess: f.CeilingOwnProcess, CeilingNice: f.CeilingNice,
		Batch: f.Batch, Rate: f.Rate, RateUnit: f.RateUnit, Concurrency: f.Concurrency,
		Duration: f.Duration, Events: f.Events, Warmup: f.Warmup, Timeout: f.Timeout,
		ClickHouseHTTP: f.ClickhouseHTTP, Table: f.Table, WatchInterval: f.WatchInterval, Drain: f.Drain,
		Token: f.Token, Seed: f.Seed, Templates: f.Templates, Progress: f.Progress,
		JSON: f.JSON, CPUProfile: f.CPUProfile,
	}
	if c.Duration == 0 && c.Events == 0 {
		c.Duration = loadgen.DefaultConfig().Duration
	}
	if c.Token == "" && c.Endpoints == "" {
		c.Token = loadgen.DefaultConfig().Token
	}
	return c
}

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("veil"), kong.Description("Privacy-first event ingestion: Mixpanel's API in, de-identified ClickHouse tables out."), kong.UsageOnError(), kong.Vars{"version": versionLine()})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch kctx.Command() {
	case "loadgen":
		_, err = loadgen.Run(ctx, c.Loadgen.config(), loadgen.Deps{Stdout: os.Stdout, Stderr: os.Stderr})
	case "healthcheck <url>":
		err = app.Healthcheck(ctx, c.Healthcheck.URL, c.Healthcheck.Timeout)
	case "ceiling <kind>":
		err = loadgen.ServeCeiling(ctx, c.Ceiling.Kind, c.Ceiling.Token, os.Stdin, os.Stdout)
	default:
		err = run(ctx, kctx.Command(), &c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "veil:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, c *cli) error {
	var cfg app.Config
	if cmd == "dev" {
		cfg = app.DefaultConfig()
		cfg.Log.Format = "console"
	} else {
		var err error
		if cfg, err = app.Load(roleConfig(cmd, c)); err != nil {
			return err
		}
	}
	log, err := app.NewLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	deps := app.Deps{Logger: log, Registry: app.NewRegistry()}
	switch cmd {
	case "dev":
		return devstack.Run(ctx, devstack.Options{Listen: c.Dev.Listen, DataDir: c.Dev.DataDir, Out: os.Stdout,
			Kafka: c.Dev.Kafka, KafkaBrokers: c.Dev.KafkaBrokers,
			ClickHouseShards: c.Dev.ClickhouseShards, ClickHouseReplicas: c.Dev.ClickhouseReplicas}, log, deps.Registry)
	case "collector":
		return app.CollectorRole(ctx, cfg, deps)
	case "worker":
		return app.WorkerRole(ctx, cfg, deps)
	case "migrate":
		if err := app.Migrate(ctx, cfg, deps); err != nil {
			return err
		}
		log.Info("migrations applied", zap.String("database", cfg.Sink.Database))
		return nil
	}
	return fmt.Errorf("unknown command %q", cmd)
}

func roleConfig(cmd string, c *cli) string {
	switch cmd {
	case "collector":
		return c.Collector.Config
	case "worker":
		return c.Worker.Config
	}
	return c.Migrate.Config
}
