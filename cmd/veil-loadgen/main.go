// Command veil-loadgen drives a collector on this machine with
// mixpanel-browser's requests and reports throughput, latency and
// end-to-end lag, or measures a ceiling (--ceiling) beside it. It is a
// tool for measuring Veil, built apart from the veil binary so that what
// users deploy carries no load generator (make bench builds and runs it).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/veilhq/veil/loadgen"
)

// cli is the load generator's flags, and a hidden command that serves a
// ceiling for --ceiling-own-process in the process it starts
// (`veil-loadgen ceiling KIND --token TOKEN`, which takes --token from the
// flags).
type cli struct {
	loadgenFlags `embed:""`
	Drive        struct{} `cmd:"" default:"1" hidden:"" help:"Drive a collector (what veil-loadgen does without a command)."`
	Serve        struct {
		Kind string `arg:"" enum:"http,collector" help:"http or collector."`
	} `cmd:"" name:"ceiling" hidden:"" help:"Serve a load generator's ceiling for veil-loadgen in another process."`
}

type loadgenFlags struct {
	Target            string        `default:"http://127.0.0.1:8080" help:"Collector base URL; loopback addresses only."`
	Endpoints         string        `placeholder:"FILE" help:"endpoints.json of a running veil dev (e.g. .veil/endpoints.json): the collector and clickhouse_http come from it."`
	Ceiling           string        `placeholder:"KIND" help:"Start a server in this process and drive it instead: http (a trivial handler answering 1), collector (the collector and an embedded broker, no worker), collector-sealed (the same, sealing its envelopes as veil dev does) or kafka (the collector's producer alone, writing the collector's messages for each request into an embedded broker, no HTTP)."`
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

// parse reads the command line args into a cli.
func parse(args []string) (*cli, string, error) {
	var c cli
	parser, err := kong.New(&c, kong.Name("veil-loadgen"),
		kong.Description("Veil's load generator: mixpanel-browser's requests against a collector on this machine, or against a ceiling beside it."),
		kong.UsageOnError())
	if err != nil {
		return nil, "", err
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		return nil, "", err
	}
	return &c, kctx.Command(), nil
}

func main() {
	c, cmd, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "veil-loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "ceiling <kind>":
		token := c.Token
		if token == "" {
			token = loadgen.DefaultConfig().Token
		}
		err = loadgen.ServeCeiling(ctx, c.Serve.Kind, token, os.Stdin, os.Stdout)
	default:
		_, err = loadgen.Run(ctx, c.config(), loadgen.Deps{Stdout: os.Stdout, Stderr: os.Stderr})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "veil-loadgen:", err)
		os.Exit(1)
	}
}
