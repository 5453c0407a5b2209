// Command veil is Veil's single binary: `veil dev` runs the whole pipeline on
// one machine; `veil collector`, `veil worker` and `veil migrate` are the
// production roles, each configured from one file, and `veil dlq` reads and
// replays the dead-letter topic. It carries only what
// users run: the load generator is a tool of its own (cmd/veil-loadgen).
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
	Collector roleFlags `cmd:"" help:"Run the HTTP collector."`
	Worker    roleFlags `cmd:"" help:"Run a worker of the consumer group."`
	Migrate   roleFlags `cmd:"" help:"Create the Kafka topics and apply the ClickHouse schema."`
	Dlq       struct {
		List   roleFlags `cmd:"" help:"Count the dead-letter topic's records and events by reason (headers only, never contents)."`
		Replay struct {
			roleFlags
			Reason []string `required:"" placeholder:"REASON" help:"Replay the records dead-lettered with this reason (repeatable), e.g. seal_unknown_epoch once the workers have the key."`
			DryRun bool     `help:"Count what would be replayed; write nothing."`
		} `cmd:"" help:"Write dead-lettered records of the given reasons back to the raw topic, as they are, for the workers to take again."`
	} `cmd:"" name:"dlq" help:"Read and replay the dead-letter topic."`
	Healthcheck struct {
		URL     string        `arg:"" help:"URL to GET, e.g. http://127.0.0.1:8080/readyz."`
		Timeout time.Duration `default:"3s" help:"How long to wait for the answer."`
	} `cmd:"" help:"Exit 0 when URL answers 200: a container health check for an image without a shell."`
}

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("veil"), kong.Description("Privacy-first event ingestion: Mixpanel's API in, de-identified ClickHouse tables out."), kong.UsageOnError(), kong.Vars{"version": versionLine()})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch kctx.Command() {
	case "healthcheck <url>":
		err = app.Healthcheck(ctx, c.Healthcheck.URL, c.Healthcheck.Timeout)
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
	case "dlq list":
		return app.DeadLetters(ctx, cfg, os.Stdout)
	case "dlq replay":
		return app.ReplayDeadLetters(ctx, cfg, c.Dlq.Replay.Reason, c.Dlq.Replay.DryRun, os.Stdout)
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
	case "dlq list":
		return c.Dlq.List.Config
	case "dlq replay":
		return c.Dlq.Replay.Config
	}
	return c.Migrate.Config
}
