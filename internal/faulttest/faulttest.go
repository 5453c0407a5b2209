// Package faulttest drives Veil's fault tests: real `veil worker`
// processes, built from this tree, against the test services, killed and
// restarted while a known load flows, followed by an exact accounting of
// where every message went.
//
// The accounting is: every message produced to the raw topic is stored
// (exactly once after deduplication), dropped by policy, or dead-lettered,
// and each of the three numbers is checked against what the load holds.
package faulttest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/segmentio/kafka-go"
	yaml "go.yaml.in/yaml/v3"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/sink"
	"github.com/veilhq/veil/worker"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Veil builds bin/veil from this tree once per test binary and returns its
// path. Cleanup removes it when the package's tests end (see Main).
func Veil(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "veil-faulttest-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "veil")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/veilhq/veil/cmd/veil")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Main runs the tests, then stops the services and removes the binary.
func Main(m *testing.M) int {
	code := testsvc.Main(m)
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	return code
}

// Config returns a worker configuration for the test services, writing to
// ch as Veil's own user, with a topic, group and database of its own and
// timings short enough for a test: a 3 s session timeout so that a killed
// member's partitions move quickly, and backoff capped at 1 s so that a
// recovered ClickHouse is retried soon.
func Config(t *testing.T, ch *chserver.Server) app.Config {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Log.Level = "info"
	// The brokers and the replication they allow: three copies, two in
	// sync, on the Apache Kafka brokers of `make test`.
	cfg.Kafka = testsvc.KafkaConfig(t)
	cfg.Kafka.RawTopic = testsvc.Unique(t, "raw")
	cfg.Kafka.DLQTopic = testsvc.Unique(t, "dlq")
	cfg.Kafka.Partitions = 4
	cfg.Collector.Projects = []ingest.Project{{Name: "shop", Token: "tok-shop"}}
	cfg.Worker.GroupID = testsvc.Unique(t, "group")
	cfg.Worker.FetchMaxWait = 100 * time.Millisecond
	cfg.Worker.SessionTimeout = 3 * time.Second
	cfg.Worker.RebalanceTimeout = 3 * time.Second
	cfg.Worker.Heartbeat = 300 * time.Millisecond
	cfg.Worker.DrainTimeout = 5 * time.Second
	cfg.Worker.LagInterval = time.Second
	cfg.Sink.Addr = []string{ch.NativeAddr()}
	cfg.Sink.Username, cfg.Sink.Password = ch.User(), ch.Password()
	cfg.Sink.Database = strings.ToLower(testsvc.Unique(t, "veil"))
	cfg.Sink.MaxRows = 500
	cfg.Sink.MaxAge = 200 * time.Millisecond
	cfg.Sink.RetryMin = 50 * time.Millisecond
	cfg.Sink.RetryMax = time.Second
	cfg.Sink.WriteTimeout = 10 * time.Second
	cfg.Deidentify.PseudonymKeyEnv = ""
	cfg.Deidentify.PseudonymKeyFile = testsvc.KeyFile(t)
	cfg.Seal.KeyFile = testsvc.SealKeyFile(t)
	// The collectors seal; the loads of NewLoad are written straight to the
	// raw topic unsealed, as by collectors not yet given keys, which the
	// workers take as they do while keys are being rolled out.
	cfg.Seal.AcceptPlain = true
	cfg.Privacy.Database = cfg.Sink.Database + "_privacy"
	cfg.Privacy.AdminTokenEnv = ""
	cfg.Privacy.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(cfg.Privacy.AdminTokenFile, []byte("fault-test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := sink.Connect(cfg.Sink)
		if err != nil {
			return
		}
		defer conn.Close()
		for _, db := range []string{cfg.Sink.Database, cfg.Privacy.Database} {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		}
	})
	return cfg
}

// WriteConfig writes cfg as a YAML file the way an operator would, checks
// that Veil reads it back, and creates the topics.
func WriteConfig(t *testing.T, cfg app.Config) string {
	t.Helper()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "veil.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Load(path); err != nil {
		t.Fatalf("the written configuration does not load: %v", err)
	}
	if err := kafkax.EnsureTopics(context.Background(), cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	return path
}

// Migrate runs `veil migrate --config`: the topics and the schema exist
// before the load starts.
func Migrate(t *testing.T, bin string, cfg app.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "migrate", "--config", WriteConfig(t, cfg)).CombinedOutput()
	if err != nil {
		t.Fatalf("veil migrate: %v\n%s", err, out)
	}
}

// Proc is a running `veil worker` or `veil collector` process.
type Proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	admin string // the address of its /metrics
	// URL is a collector's base URL (http://host:port); empty for a worker.
	URL  string
	log  string
	done chan struct{}
	err  error
}

// StartWorker runs `veil worker --config cfgPath` with its admin endpoints
// on a free port. Its output goes to a log file that is printed if the test
// fails. The process is killed at cleanup if it still runs.
func StartWorker(t *testing.T, bin string, cfg app.Config, name string) *Proc {
	t.Helper()
	port, err := chserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return start(t, bin, cfg, "worker", name, cfg.Admin.Listen)
}

// StartCollector runs `veil collector --config cfgPath` on a free port and
// waits until its /readyz answers 200 (the topics exist). Its /metrics is
// on the same listener.
func StartCollector(t *testing.T, bin string, cfg app.Config, name string) *Proc {
	t.Helper()
	port, err := chserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Collector.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Its admin listener (the reasons behind /readyz) gets a port of its
	// own too, so that several collectors run side by side.
	adminPort, err := chserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.CollectorListen = net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	p := start(t, bin, cfg, "collector", name, cfg.Collector.Listen)
	p.URL = "http://" + cfg.Collector.Listen
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s not ready within 30 s (exited: %v)", name, p.Exited())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// start runs `veil role --config FILE` for cfg.
func start(t *testing.T, bin string, cfg app.Config, role, name, admin string) *Proc {
	t.Helper()
	cfgPath := WriteConfig(t, cfg)
	// VEIL_FAULTTEST_LOGS keeps the processes' logs in a directory of
	// one's choice for a closer look.
	logDir := os.Getenv("VEIL_FAULTTEST_LOGS")
	if logDir == "" {
		logDir = t.TempDir()
	}
	logPath := filepath.Join(logDir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, role, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: a process never outlives a test binary that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{t: t, name: name, cmd: cmd, admin: admin, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log (last 8 KiB, without kafka-go's fetch timeouts) ---\n%s", name, tail(withoutNoise(b), 8<<10))
		}
	})
	return p
}

// Admin is the address of the process's admin endpoints (a collector's
// listener).
func (p *Proc) Admin() string { return p.admin }

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// withoutNoise drops kafka-go's routine "no messages received" lines.
func withoutNoise(b []byte) []byte {
	var out []byte
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if !strings.Contains(line, "no messages received from kafka") {
			out = append(out, line...)
		}
	}
	return out
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Kill sends SIGKILL, as a crash or the OOM killer would, and waits.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM and waits for the process to exit; it fails the test
// if the worker does not exit cleanly within timeout.
func (p *Proc) Stop(timeout time.Duration) {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("%s exited with %v", p.name, p.err)
		}
	case <-time.After(timeout):
		p.t.Errorf("%s did not stop within %s of SIGTERM", p.name, timeout)
		p.Kill()
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Metrics scrapes the worker's /metrics and returns every sample as
// "name{labels}" → value, plus "name" → sum over its series. A worker that
// is not answering yet gives nil.
func (p *Proc) Metrics() map[string]float64 {
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for name, mf := range families {
		for _, m := range mf.Metric {
			var v float64
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			default:
				continue
			}
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[name+"{"+strings.Join(labels, ",")+"}"] = v
			out[name] += v
		}
	}
	return out
}

// Load is a stream of messages for the raw topic and what must become of
// each of them.
type Load struct {
	Messages []kafka.Message
	// Kept are the $insert_ids of the track events that must be stored.
	Kept map[string]bool
	// Dropped counts the events the policy must drop (opt-out cookie).
	Dropped int
	// Poison counts the messages that must be dead-lettered.
	Poison int
	// Ops counts the profile operations that must be stored; OpsPerUser is
	// the number of `$add {"n": 1}` each user got, so each user's profile
	// must end with n equal to it.
	Ops        int
	OpsPerUser map[string]int
	// GroupOps and OpsPerGroup are the same for group profiles.
	GroupOps    int
	OpsPerGroup map[string]int
}

// Total is the number of messages in the load.
func (l *Load) Total() int { return len(l.Messages) }

func envelope(t *testing.T, kind event.Kind, obj map[string]any, optout bool) []byte {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := map[event.Kind]string{event.KindTrack: "/track", event.KindEngage: "/engage", event.KindGroups: "/groups"}[kind]
	b, err := event.MarshalEnvelope(&event.Envelope{Version: event.EnvelopeVersion, Kind: kind, Project: "shop",
		Endpoint: endpoint, ReceivedAt: time.Now().UnixMilli(), Signals: event.Signals{OptOut: optout}, Event: raw})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// NewLoad builds a load of track events from users users (every 20th with
// the opt-out cookie), interleaved with profile operations (user i gets
// i%7+1 of them), group operations and, every 500 messages, a poison
// message that cannot be decoded.
func NewLoad(t *testing.T, track, users int) *Load {
	t.Helper()
	l := &Load{Kept: map[string]bool{}, OpsPerUser: map[string]int{}, OpsPerGroup: map[string]int{}}
	ms := time.Now().UnixMilli()
	add := func(key []byte, value []byte) {
		l.Messages = append(l.Messages, kafka.Message{Key: key, Value: value})
		if len(l.Messages)%500 == 0 {
			l.Messages = append(l.Messages, kafka.Message{Key: key, Value: []byte("poison: not an envelope")})
			l.Poison++
		}
	}
	opsLeft := map[string]int{}
	for u := 0; u < users; u++ {
		opsLeft[fmt.Sprintf("user-%d", u)] = u%7 + 1
	}
	for i := 0; i < track; i++ {
		user := fmt.Sprintf("user-%d", i%users)
		id := fmt.Sprintf("ev-%d", i)
		optout := i%20 == 7
		add(event.Key("shop", user), envelope(t, event.KindTrack, map[string]any{"event": "page_view", "properties": map[string]any{
			"distinct_id": user, "time": ms + int64(i), "$insert_id": id, "page": "/p/" + strconv.Itoa(i%13),
		}}, optout))
		if optout {
			l.Dropped++
		} else {
			l.Kept[id] = true
		}
		if i%3 == 0 && opsLeft[user] > 0 {
			opsLeft[user]--
			add(event.Key("shop", user), envelope(t, event.KindEngage, map[string]any{"event": "$add",
				"properties": map[string]any{"distinct_id": user, "time": ms + int64(i), "$insert_id": "op-" + id, "$ignore_time": true},
				"value":      map[string]any{"n": 1}}, false))
			l.Ops++
			l.OpsPerUser[user]++
		}
		if i%50 == 0 {
			group := fmt.Sprintf("company-%d", i%4)
			add(event.Key("shop", "company\x00"+group), envelope(t, event.KindGroups, map[string]any{"event": "$add",
				"properties": map[string]any{"$group_key": "company", "$group_id": group, "time": ms + int64(i), "$insert_id": "g-" + id},
				"value":      map[string]any{"n": 1}}, false))
			l.GroupOps++
			l.OpsPerGroup[group]++
		}
	}
	return l
}

// Produce writes the load to the raw topic in chunks of chunk messages,
// pausing every between chunks, and returns when all are acknowledged. It is
// meant to run in a goroutine while workers are started and killed.
func Produce(ctx context.Context, brokers []string, topic string, msgs []kafka.Message, chunk int, every time.Duration) error {
	w := kafkax.NewWriter(brokers, topic, kafkax.DefaultWriterConfig(), nil)
	defer w.Close()
	for i := 0; i < len(msgs); i += chunk {
		if err := w.WriteMessages(ctx, msgs[i:min(i+chunk, len(msgs))]...); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return nil
}

// Lag is the consumer group's total lag on topic: the sum over partitions
// of the high-water mark minus the committed offset (or minus the first
// offset when nothing is committed). It is -1 when the broker cannot say.
func Lag(brokers []string, group, topic string, partitions int) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	var reqs []kafka.OffsetRequest
	var ps []int
	for p := 0; p < partitions; p++ {
		reqs = append(reqs, kafka.LastOffsetOf(p), kafka.FirstOffsetOf(p))
		ps = append(ps, p)
	}
	lo, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return -1
	}
	of, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	if err != nil || of.Error != nil {
		return -1
	}
	committed := map[int]int64{}
	for _, p := range of.Topics[topic] {
		committed[p.Partition] = p.CommittedOffset
	}
	var lag int64
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			return -1
		}
		c := committed[p.Partition]
		if c < 0 {
			c = p.FirstOffset
		}
		lag += p.LastOffset - c
	}
	return lag
}

// DeadLettered reads cfg's whole dead-letter topic and returns the
// distinct source positions (a replay may dead-letter a message twice)
// whose value is a poison message, opened with cfg's seal keys, and the
// number of other messages found there.
func DeadLettered(t *testing.T, cfg app.Config) (sources map[string]bool, other int) {
	t.Helper()
	var keys *seal.Keys
	if cfg.Seal.Enabled() {
		var err error
		if keys, err = seal.Load(cfg.Seal.Source(), cfg.Seal.ActivationDelay); err != nil {
			t.Fatal(err)
		}
	}
	sources = map[string]bool{}
	err := worker.ScanDeadLetters(context.Background(), cfg.Kafka, func(d worker.DeadLetter) error {
		src := ""
		for _, h := range d.Record.Headers {
			if h.Key == worker.HeaderSource {
				src = string(h.Value)
			}
		}
		value := d.Record.Value
		if keys != nil {
			// The dead-letter topic is sealed: an event dead-lettered
			// from its frame is sealed alone.
			var err error
			if value, err = keys.Open(nil, d.Record.Value); err != nil {
				return fmt.Errorf("dead-letter partition %d: %w", d.Partition, err)
			}
		}
		if strings.HasPrefix(string(value), "poison") && src != "" {
			sources[src] = true
		} else {
			other++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sources, other
}

// Stored is what ClickHouse holds after a run.
type Stored struct {
	InsertIDs   map[string]bool // distinct $insert_ids in events
	Rows        uint64          // rows in events, replays included
	RowsFinal   uint64          // rows in events FINAL
	Ops         uint64          // rows in profile_ops FINAL
	GroupOps    uint64          // rows in group_ops FINAL
	ProfileNs   []int           // every profile's n, sorted
	GroupNs     []int           // every group's n, sorted
	OpsRowsRaw  uint64          // rows in profile_ops, replays included
	StateRowRaw uint64          // rows in profile_state, every computation
}

// ReadStored reads the tables of db.
func ReadStored(t *testing.T, conn driver.Conn, db string) Stored {
	t.Helper()
	ctx := context.Background()
	s := Stored{InsertIDs: map[string]bool{}}
	rows, err := conn.Query(ctx, "SELECT DISTINCT insert_id FROM "+db+".events")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		s.InsertIDs[id] = true
	}
	rows.Close()
	s.Rows = testsvc.Count(t, conn, "SELECT count() FROM "+db+".events")
	s.RowsFinal = testsvc.Count(t, conn, "SELECT count() FROM "+db+".events FINAL")
	s.Ops = testsvc.Count(t, conn, "SELECT count() FROM "+db+".profile_ops FINAL")
	s.OpsRowsRaw = testsvc.Count(t, conn, "SELECT count() FROM "+db+".profile_ops")
	s.StateRowRaw = testsvc.Count(t, conn, "SELECT count() FROM "+db+".profile_state")
	s.GroupOps = testsvc.Count(t, conn, "SELECT count() FROM "+db+".group_ops FINAL")
	s.ProfileNs = ints(t, conn, "SELECT toInt64(value) FROM "+db+".profiles WHERE property = 'n'")
	s.GroupNs = ints(t, conn, "SELECT toInt64(value) FROM "+db+".groups WHERE property = 'n'")
	return s
}

func ints(t *testing.T, conn driver.Conn, q string) []int {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, int(v))
	}
	slices.Sort(out)
	return out
}

func sortedCounts(m map[string]int) []int {
	out := make([]int, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// Account waits until the group has consumed and committed the whole topic
// (lag 0) and ClickHouse holds what the load must leave, then checks every
// number exactly: sent = stored + dropped by policy + dead-lettered, no
// event lost, none stored twice after deduplication, every profile's and
// group's state exact. It returns what was stored, for the test's log.
func Account(t *testing.T, cfg app.Config, l *Load, timeout time.Duration) Stored {
	t.Helper()
	conn := testsvc.Conn(t, cfg.Sink)
	db := cfg.Sink.Database
	waitDrained(t, cfg, conn, len(l.Kept), timeout)
	st := ReadStored(t, conn, db)
	lost, extra := 0, 0
	for id := range l.Kept {
		if !st.InsertIDs[id] {
			lost++
		}
	}
	for id := range st.InsertIDs {
		if !l.Kept[id] {
			extra++ // an opted-out event stored, or one never sent
		}
	}
	dlq, otherDLQ := DeadLettered(t, cfg)
	stored := int(st.RowsFinal) + int(st.Ops) + int(st.GroupOps)
	dropped := l.Total() - stored - len(dlq)
	t.Logf("figures: accounting: sent %d = stored %d (%d events, %d profile ops, %d group ops) + dropped by policy %d + dead-lettered %d; "+
		"%d event rows and %d profile-op rows before deduplication (replays not yet merged away)",
		l.Total(), stored, st.RowsFinal, st.Ops, st.GroupOps, dropped, len(dlq), st.Rows, st.OpsRowsRaw)
	if lost != 0 || extra != 0 {
		t.Errorf("events: %d lost, %d stored that must not be", lost, extra)
	}
	if st.RowsFinal != uint64(len(l.Kept)) || len(st.InsertIDs) != len(l.Kept) {
		t.Errorf("events: %d rows after FINAL, %d distinct insert_ids; want %d", st.RowsFinal, len(st.InsertIDs), len(l.Kept))
	}
	if st.Ops != uint64(l.Ops) || st.GroupOps != uint64(l.GroupOps) {
		t.Errorf("operations: %d profile, %d group after FINAL; want %d, %d", st.Ops, st.GroupOps, l.Ops, l.GroupOps)
	}
	if want := sortedCounts(l.OpsPerUser); !slices.Equal(st.ProfileNs, want) {
		t.Errorf("profile state n: %v, want %v (a replayed $add counted twice, or one lost)", st.ProfileNs, want)
	}
	if want := sortedCounts(l.OpsPerGroup); !slices.Equal(st.GroupNs, want) {
		t.Errorf("group state n: %v, want %v", st.GroupNs, want)
	}
	if len(dlq) != l.Poison || otherDLQ != 0 {
		t.Errorf("dead-lettered: %d poison messages and %d others, want %d and 0", len(dlq), otherDLQ, l.Poison)
	}
	if dropped != l.Dropped {
		t.Errorf("dropped by policy: %d, want %d", dropped, l.Dropped)
	}
	return st
}

// waitDrained waits until the group has committed the whole raw topic
// (lag 0) and ClickHouse holds at least kept distinct events, failing the
// test after timeout.
func waitDrained(t *testing.T, cfg app.Config, conn driver.Conn, kept int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lag := Lag(cfg.Kafka.Brokers, cfg.Worker.GroupID, cfg.Kafka.RawTopic, cfg.Kafka.Partitions)
		n := testsvc.Count(t, conn, "SELECT uniqExact(insert_id) FROM "+cfg.Sink.Database+".events")
		if lag == 0 && n >= uint64(kept) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: lag %d, %d of %d events stored", timeout, lag, n, kept)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
