// Package kafkacluster runs a cluster of Apache Kafka brokers as child
// processes on loopback: the real Kafka of the integration tests that must
// hold on one, and of `veil dev --kafka apache`.
//
// Nodes run in KRaft mode. The first three (or all, when fewer) are
// combined broker and controller nodes and form the controller quorum;
// further nodes are brokers only. Each node keeps its configuration, data
// and log under Config.Dir/node-<id>, so a cluster started again on the same
// directory finds its topics and offsets. The broker's jars come from Maven
// Central through internal/kafkacluster/pom.xml (scripts/install-deps.sh
// puts them in .cache/kafka/<Version>/libs); nothing else is needed but a
// Java runtime.
//
// Every process is started with Pdeathsig, so it dies with the process
// that started it, and Stop or Close waits until each has exited. For the
// fault tests, single nodes can be killed, paused, resumed and restarted.
package kafkacluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Version is the Apache Kafka release Veil runs; pom.xml's kafka.version
// names the same one.
const Version = "4.4.0"

// LibsEnv names the environment variable that points at a directory of
// Kafka's jars, instead of .cache/kafka/<Version>/libs.
const LibsEnv = "VEIL_KAFKA_LIBS"

// InstallHint tells a person how to get the broker's jars.
const InstallHint = "run `make deps` (scripts/install-deps.sh), which resolves Apache Kafka " + Version +
	" from Maven Central with Maven into .cache/kafka/" + Version + "/libs, or point " + LibsEnv + " at a directory holding kafka_2.13-" + Version + ".jar and its dependencies"

// ErrNotInstalled is returned by FindLibs when the jars are nowhere to be
// found.
var ErrNotInstalled = errors.New("Apache Kafka " + Version + "'s jars not found; " + InstallHint)

// maxVoters is the size of the controller quorum: three voters survive the
// loss of one.
const maxVoters = 3

// Config says how many nodes to run, where, and with what.
type Config struct {
	// Dir holds every node's configuration, data and log.
	Dir string
	// Nodes is the number of brokers.
	Nodes int
	// Libs is the directory of Kafka's jars; empty: FindLibs.
	Libs string
	// Java is the java binary; empty: java on PATH.
	Java string
	// HeapMB bounds each node's Java heap. The machines Veil is developed
	// on run several clusters at once, and a broker with a handful of
	// topics needs little: 320 MiB leaves room for the log cleaner's
	// buffer, set small below.
	HeapMB int
	// StartTimeout bounds Start (formatting included) and StartNode.
	StartTimeout time.Duration
	// StopTimeout bounds a node's controlled shutdown in Stop and
	// StopNode; then it is killed.
	StopTimeout time.Duration
	// Broker holds further server.properties settings, set on every node
	// after Veil's own, e.g. for a fault test's shorter timeouts.
	Broker map[string]string
	// JVMOptions are further java options of every node, after Veil's.
	JVMOptions []string
}

// DefaultConfig returns a three-node cluster's settings; Dir must be set.
func DefaultConfig() Config {
	return Config{Nodes: 3, HeapMB: 320, StartTimeout: 120 * time.Second, StopTimeout: 15 * time.Second}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("kafkacluster: dir must be set")
	case c.Nodes < 1 || c.Nodes > 9:
		return errors.New("kafkacluster: nodes must be between 1 and 9")
	case c.HeapMB < 128:
		return errors.New("kafkacluster: heap must be at least 128 MiB")
	case c.StartTimeout <= 0 || c.StopTimeout <= 0:
		return errors.New("kafkacluster: start and stop timeouts must be positive")
	}
	return nil
}

// FindLibs returns the directory of Kafka's jars: LibsEnv when set, else
// .cache/kafka/<Version>/libs in the working directory or the nearest
// directory above it (or above the executable) that has one.
func FindLibs() (string, error) {
	if d := os.Getenv(LibsEnv); d != "" {
		if !hasBroker(d) {
			return "", fmt.Errorf("%s=%s holds no kafka_2.13-%s.jar; %s", LibsEnv, d, Version, InstallHint)
		}
		return d, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for {
			d := filepath.Join(dir, ".cache", "kafka", Version, "libs")
			if hasBroker(d) {
				return d, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", ErrNotInstalled
}

func hasBroker(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, "kafka_2.13-"+Version+".jar"))
	return err == nil && !st.IsDir()
}

// NodeInfo is one node as tools see it (endpoints.json's kafka_nodes).
type NodeInfo struct {
	ID      int    `json:"id"`
	Address string `json:"address"`
	// Pid is the node's process id, 0 while it is not running.
	Pid int `json:"pid"`
}

// Cluster is a running set of nodes.
type Cluster struct {
	cfg   Config
	java  string
	id    string // the cluster id all nodes are formatted with
	nodes []*node
	log   *zap.Logger
}

// node is one Kafka process and its directory.
type node struct {
	id             int
	dir            string
	brokerPort     int
	controllerPort int // 0 for a broker-only node

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// state is what Config.Dir remembers between runs: the cluster id the nodes
// were formatted with and the ports they last had.
type state struct {
	ClusterID string      `json:"cluster_id"`
	Nodes     []nodeState `json:"nodes"`
}

type nodeState struct {
	ID             int `json:"id"`
	BrokerPort     int `json:"broker_port"`
	ControllerPort int `json:"controller_port,omitempty"`
}

// Start formats the nodes' storage where it is new, starts every node and
// waits until each broker's metadata lists all of them with a controller
// and the group coordinator answers. A node left running by a crashed run
// on the same directory is killed first.
func Start(ctx context.Context, cfg Config, log *zap.Logger) (*Cluster, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Libs == "" {
		libs, err := FindLibs()
		if err != nil {
			return nil, err
		}
		cfg.Libs = libs
	}
	java := cfg.Java
	if java == "" {
		p, err := exec.LookPath("java")
		if err != nil {
			return nil, errors.New("kafkacluster: java not found on PATH; install a Java 17 runtime (Debian: `apt-get install -y openjdk-17-jre-headless`, which `make deps` does)")
		}
		java = p
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	st, err := loadState(dir, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, java: java, id: st.ClusterID, log: log}
	for _, ns := range st.Nodes {
		n := &node{id: ns.ID, dir: filepath.Join(dir, fmt.Sprintf("node-%d", ns.ID)), brokerPort: ns.BrokerPort, controllerPort: ns.ControllerPort}
		killStale(n, log)
		c.nodes = append(c.nodes, n)
	}
	if err := c.choosePorts(); err != nil {
		return nil, err
	}
	if err := c.writeConfigs(); err != nil {
		return nil, err
	}
	if err := c.saveState(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	began := time.Now()
	if n, err := c.format(ctx); err != nil {
		return nil, err
	} else if n > 0 {
		log.Info("kafka storage formatted", zap.Int("nodes", n), zap.Duration("took", time.Since(began).Round(time.Millisecond)))
	}
	for _, n := range c.nodes {
		if err := c.startProcess(n); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.waitReady(ctx, nil); err != nil {
		tail := c.LogTail(30)
		c.Close()
		return nil, fmt.Errorf("%w\n%s", err, tail)
	}
	log.Info("kafka cluster started", zap.Int("nodes", len(c.nodes)), zap.Strings("brokers", c.Brokers()),
		zap.Duration("took", time.Since(began).Round(time.Millisecond)))
	return c, nil
}

// loadState reads Dir's state, or makes a new one for n nodes.
func loadState(dir string, n int) (state, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &st); err != nil {
			return st, fmt.Errorf("kafkacluster: %s/cluster.json: %w", dir, err)
		}
		if len(st.Nodes) != n {
			return st, fmt.Errorf("kafkacluster: %s holds a cluster of %d nodes, not %d: use another directory or remove this one", dir, len(st.Nodes), n)
		}
		return st, nil
	case !errors.Is(err, os.ErrNotExist):
		return st, err
	}
	// A cluster id is 16 random bytes in unpadded URL-safe base64, as
	// `kafka-storage random-uuid` makes them; like Kafka's own, never one
	// that starts with '-', which the storage tool's argument parser would
	// take for an option (one id in 64).
	for st.ClusterID == "" || st.ClusterID[0] == '-' {
		var id [16]byte
		if _, err := rand.Read(id[:]); err != nil {
			return st, err
		}
		st.ClusterID = base64.RawURLEncoding.EncodeToString(id[:])
	}
	for i := 1; i <= n; i++ {
		st.Nodes = append(st.Nodes, nodeState{ID: i})
	}
	return st, nil
}

func (c *Cluster) saveState() error {
	st := state{ClusterID: c.id}
	for _, n := range c.nodes {
		st.Nodes = append(st.Nodes, nodeState{ID: n.id, BrokerPort: n.brokerPort, ControllerPort: n.controllerPort})
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.cfg.Dir, "cluster.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.cfg.Dir, "cluster.json"))
}

// voter reports whether node i (0-based) is a controller.
func voter(i int) bool { return i < maxVoters }

// choosePorts keeps each node's ports from the last run where they are
// free and picks free ones for the rest. All listeners stay open until
// every port is chosen, so no two nodes get the same one.
func (c *Cluster) choosePorts() error {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	take := func(port int) (int, error) {
		if port != 0 {
			if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				held = append(held, l)
				return port, nil
			}
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		held = append(held, l)
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	var err error
	for i, n := range c.nodes {
		if n.brokerPort, err = take(n.brokerPort); err != nil {
			return err
		}
		if !voter(i) {
			n.controllerPort = 0
			continue
		}
		if n.controllerPort, err = take(n.controllerPort); err != nil {
			return err
		}
	}
	return nil
}

// writeConfigs writes each node's server.properties and the log
// configuration they share.
func (c *Cluster) writeConfigs() error {
	var voters []string
	for i, n := range c.nodes {
		if voter(i) {
			voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", n.id, n.controllerPort))
		}
	}
	// Internal topics are replicated like Veil's own (up to three copies,
	// two in sync), and created with few partitions: the defaults of 50
	// would make the first consumer group wait for 150 replicas.
	rf := min(len(c.nodes), 3)
	isr := min(len(c.nodes), 2)
	for i, n := range c.nodes {
		if err := os.MkdirAll(filepath.Join(n.dir, "data"), 0o755); err != nil {
			return err
		}
		roles, listeners := "broker", fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", n.brokerPort)
		if voter(i) {
			roles += ",controller"
			listeners += fmt.Sprintf(",CONTROLLER://127.0.0.1:%d", n.controllerPort)
		}
		props := [][2]string{
			{"node.id", strconv.Itoa(n.id)},
			{"process.roles", roles},
			{"listeners", listeners},
			{"advertised.listeners", fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", n.brokerPort)},
			{"listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"},
			{"inter.broker.listener.name", "PLAINTEXT"},
			{"controller.listener.names", "CONTROLLER"},
			{"controller.quorum.voters", strings.Join(voters, ",")},
			{"log.dirs", filepath.Join(n.dir, "data")},
			{"default.replication.factor", strconv.Itoa(rf)},
			{"offsets.topic.replication.factor", strconv.Itoa(rf)},
			{"offsets.topic.num.partitions", "4"},
			{"transaction.state.log.replication.factor", strconv.Itoa(rf)},
			{"transaction.state.log.min.isr", strconv.Itoa(isr)},
			{"transaction.state.log.num.partitions", "4"},
			{"share.coordinator.state.topic.replication.factor", strconv.Itoa(rf)},
			{"share.coordinator.state.topic.min.isr", strconv.Itoa(isr)},
			{"share.coordinator.state.topic.num.partitions", "4"},
			// A consumer group forms at once, and the tests' short
			// sessions are allowed, as on the embedded broker.
			{"group.initial.rebalance.delay.ms", "0"},
			{"group.min.session.timeout.ms", "500"},
			// Few threads: several brokers share two cores.
			{"num.network.threads", "2"},
			{"num.io.threads", "2"},
			{"background.threads", "2"},
			{"num.replica.fetchers", "1"},
			{"num.recovery.threads.per.data.dir", "1"},
			{"log.cleaner.threads", "1"},
			// The cleaner's map is on the heap: 128 MiB by default.
			{"log.cleaner.dedupe.buffer.size", strconv.Itoa(8 << 20)},
		}
		var b strings.Builder
		b.WriteString("# Written by Veil (internal/kafkacluster) at every start.\n")
		for _, kv := range props {
			fmt.Fprintf(&b, "%s=%s\n", kv[0], kv[1])
		}
		for k, v := range c.cfg.Broker {
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		}
		if err := os.WriteFile(filepath.Join(n.dir, "server.properties"), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(c.cfg.Dir, "log4j2.properties"), []byte(log4jConfig), 0o644)
}

// log4jConfig sends the broker's log to standard output (a file per node)
// without the configuration dumps of every start and client.
const log4jConfig = `rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
`

// jvmArgs are the Java options of every process: a bounded heap, the
// serial collector (one GC thread) and one processor's worth of JVM
// threads, since several brokers share the machine, and the quick
// compiler alone: three brokers then took 9.5-11 s of CPU to be ready
// instead of 16-21 s, and 11-14 s instead of 23-41 s on a busy two-core
// machine. A benchmark that wants the optimising compiler back passes
// -XX:TieredStopAtLevel=4 in Config.JVMOptions.
func (c *Cluster) jvmArgs(heapMB int) []string {
	return []string{
		"-Xms64m", fmt.Sprintf("-Xmx%dm", heapMB),
		"-XX:+UseSerialGC", "-XX:ActiveProcessorCount=1", "-XX:+ExitOnOutOfMemoryError",
		"-XX:TieredStopAtLevel=1",
		// No hsperfdata file in /tmp: nothing is left behind.
		"-XX:-UsePerfData",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + filepath.Join(c.cfg.Dir, "log4j2.properties"),
		"-cp", filepath.Join(c.cfg.Libs, "*"),
	}
}

// format writes each new node's storage metadata (kafka-storage format),
// all nodes at once, and returns how many it formatted. Nodes formatted
// before are left as they are.
func (c *Cluster) format(ctx context.Context) (formatted int, err error) {
	var g errgroup.Group
	for _, n := range c.nodes {
		if _, err := os.Stat(filepath.Join(n.dir, "data", "meta.properties")); err == nil {
			continue
		}
		formatted++
		g.Go(func() error {
			args := append(c.jvmArgs(128), "kafka.tools.StorageTool", "format", "--ignore-formatted",
				"--cluster-id", c.id, "--config", filepath.Join(n.dir, "server.properties"))
			cmd := exec.CommandContext(ctx, c.java, args...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			out, err := cmd.CombinedOutput()
			_ = os.WriteFile(filepath.Join(n.dir, "format.log"), out, 0o644)
			if err != nil {
				return fmt.Errorf("kafkacluster: formatting node %d: %v\n%s", n.id, err, lastLines(out, 20))
			}
			return nil
		})
	}
	return formatted, g.Wait()
}

// startProcess starts n's broker process; its output goes to n's
// server.log.
func (c *Cluster) startProcess(n *node) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running() {
		return nil
	}
	args := append(c.jvmArgs(c.cfg.HeapMB), c.cfg.JVMOptions...)
	args = append(args, "kafka.Kafka", filepath.Join(n.dir, "server.properties"))
	cmd := exec.Command(c.java, args...)
	cmd.Dir = n.dir
	out, err := os.OpenFile(n.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: a node dies with the process that started it, even when
	// that one is killed. Setpgid keeps a terminal's Ctrl-C from reaching
	// the brokers before Veil has drained into them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kafkacluster: start node %d: %w", n.id, err)
	}
	_ = os.WriteFile(n.pidPath(), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return nil
}

func (n *node) logPath() string { return filepath.Join(n.dir, "server.log") }
func (n *node) pidPath() string { return filepath.Join(n.dir, "kafka.pid") }
func (n *node) addr() string    { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.brokerPort)) }

// running reports whether n's process is alive; n.mu is held.
func (n *node) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// waitReady waits until every running node's broker answers metadata
// listing every running node, with a controller, and the group coordinator
// is available. With only set, only that node's answer is awaited.
func (c *Cluster) waitReady(ctx context.Context, only *node) error {
	transport := &kafka.Transport{ClientID: "veil-kafkacluster"}
	defer transport.CloseIdleConnections()
	var want []*node
	for _, n := range c.nodes {
		n.mu.Lock()
		if n.running() {
			want = append(want, n)
		}
		n.mu.Unlock()
	}
	ask := want
	if only != nil {
		ask = []*node{only}
	}
	var last error
	for {
		last = c.ready(ctx, transport, want, ask)
		if last == nil {
			return nil
		}
		for _, n := range ask {
			n.mu.Lock()
			exited := !n.running()
			n.mu.Unlock()
			if exited {
				return fmt.Errorf("kafkacluster: node %d exited while starting; see %s", n.id, n.logPath())
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkacluster: not ready: %v (%w)", last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) ready(ctx context.Context, transport *kafka.Transport, want, ask []*node) error {
	// Metadata comes from a connection of its own: kafka-go's transport
	// would answer from a cache refreshed every six seconds.
	dialer := &kafka.Dialer{ClientID: "veil-kafkacluster", Timeout: 2 * time.Second}
	for _, n := range ask {
		conn, err := dialer.DialContext(ctx, "tcp", n.addr())
		if err != nil {
			return fmt.Errorf("node %d: %w", n.id, err)
		}
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		brokers, err := conn.Brokers()
		var controller kafka.Broker
		if err == nil {
			controller, err = conn.Controller()
		}
		conn.Close()
		if err != nil {
			return fmt.Errorf("node %d: %w", n.id, err)
		}
		seen := map[int]bool{}
		for _, b := range brokers {
			seen[b.ID] = true
		}
		for _, w := range want {
			if !seen[w.id] {
				return fmt.Errorf("node %d does not list broker %d yet", n.id, w.id)
			}
		}
		if controller.Host == "" {
			return fmt.Errorf("node %d knows no controller yet", n.id)
		}
		// The first consumer group would otherwise wait for the offsets
		// topic to be created.
		client := &kafka.Client{Addr: kafka.TCP(n.addr()), Timeout: 2 * time.Second, Transport: transport}
		fc, err := client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: "veil-ready", KeyType: kafka.CoordinatorKeyTypeConsumer})
		if err == nil {
			err = fc.Error
		}
		if err != nil {
			return fmt.Errorf("node %d: group coordinator: %w", n.id, err)
		}
	}
	return nil
}

// Brokers returns every node's broker address, running or not, in node
// order: a client's bootstrap list.
func (c *Cluster) Brokers() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.addr()
	}
	return out
}

// Nodes returns each node's id, address and pid.
func (c *Cluster) Nodes() []NodeInfo {
	out := make([]NodeInfo, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = NodeInfo{ID: n.id, Address: n.addr()}
		n.mu.Lock()
		if n.running() {
			out[i].Pid = n.cmd.Process.Pid
		}
		n.mu.Unlock()
	}
	return out
}

// Dir is the cluster's directory.
func (c *Cluster) Dir() string { return c.cfg.Dir }

func (c *Cluster) node(id int) (*node, error) {
	for _, n := range c.nodes {
		if n.id == id {
			return n, nil
		}
	}
	return nil, fmt.Errorf("kafkacluster: no node %d", id)
}

// signal sends sig to node id's process.
func (c *Cluster) signal(id int, sig syscall.Signal) (*node, chan struct{}, error) {
	n, err := c.node(id)
	if err != nil {
		return nil, nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running() {
		return n, nil, fmt.Errorf("kafkacluster: node %d is not running", id)
	}
	return n, n.done, n.cmd.Process.Signal(sig)
}

// Kill kills node id with SIGKILL and waits until it has exited.
func (c *Cluster) Kill(id int) error {
	_, _, _ = c.signal(id, syscall.SIGCONT) // a paused process dies as well, but says so sooner
	_, done, err := c.signal(id, syscall.SIGKILL)
	if err != nil {
		return err
	}
	<-done
	return nil
}

// Pause stops node id with SIGSTOP and returns once the kernel has
// stopped it: it holds its connections and answers nothing, like a broker
// in a long GC pause or behind a partition.
func (c *Cluster) Pause(id int) error {
	n, _, err := c.signal(id, syscall.SIGSTOP)
	if err != nil {
		return err
	}
	return c.awaitState(n, true)
}

// Resume continues node id after Pause, and returns once it runs again.
func (c *Cluster) Resume(id int) error {
	n, _, err := c.signal(id, syscall.SIGCONT)
	if err != nil {
		return err
	}
	return c.awaitState(n, false)
}

// awaitState waits until n's process is stopped (or no longer is): a
// signal is delivered asynchronously.
func (c *Cluster) awaitState(n *node, stopped bool) error {
	n.mu.Lock()
	pid := n.cmd.Process.Pid
	n.mu.Unlock()
	for i := 0; i < 500; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return fmt.Errorf("kafkacluster: node %d: %w", n.id, err)
		}
		// "pid (comm) state ...": the state follows the last ')'.
		st := b[bytes.LastIndexByte(b, ')')+2]
		if (st == 'T') == stopped {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("kafkacluster: node %d did not change state within 5 s", n.id)
}

// StopNode shuts node id down in a controlled way (SIGTERM), killing it
// after StopTimeout or when ctx ends.
func (c *Cluster) StopNode(ctx context.Context, id int) error {
	_, _, _ = c.signal(id, syscall.SIGCONT)
	_, done, err := c.signal(id, syscall.SIGTERM)
	if err != nil {
		return err
	}
	t := time.NewTimer(c.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	c.log.Warn("kafka node did not stop in time; killing it", zap.Int("node", id))
	return c.Kill(id)
}

// StartNode starts node id again after Kill or StopNode, on its old ports
// and data, and waits until its broker lists every running node.
func (c *Cluster) StartNode(ctx context.Context, id int) error {
	n, err := c.node(id)
	if err != nil {
		return err
	}
	if err := c.startProcess(n); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	if err := c.waitReady(ctx, n); err != nil {
		return fmt.Errorf("%w\n%s", err, c.LogTail(30))
	}
	return nil
}

// Restart stops node id (SIGTERM) and starts it again.
func (c *Cluster) Restart(ctx context.Context, id int) error {
	if err := c.StopNode(ctx, id); err != nil {
		return err
	}
	return c.StartNode(ctx, id)
}

// Stop shuts every node down at once (SIGTERM), waits up to StopTimeout
// or until ctx ends, kills what is left and waits for it: no process
// remains when it returns.
func (c *Cluster) Stop(ctx context.Context) error {
	var dones []chan struct{}
	for _, n := range c.nodes {
		if _, done, err := c.signal(n.id, syscall.SIGCONT); err == nil {
			_, _, _ = c.signal(n.id, syscall.SIGTERM)
			dones = append(dones, done)
		}
	}
	t := time.NewTimer(c.cfg.StopTimeout)
	defer t.Stop()
	for _, done := range dones {
		select {
		case <-done:
		case <-t.C:
			c.log.Warn("kafka nodes did not stop in time; killing them")
			c.Close()
			return nil
		case <-ctx.Done():
			c.Close()
			return nil
		}
	}
	c.removePids()
	return nil
}

// Close kills every node (SIGKILL) and waits until each has exited.
func (c *Cluster) Close() {
	for _, n := range c.nodes {
		_ = c.Kill(n.id)
	}
	c.removePids()
}

func (c *Cluster) removePids() {
	for _, n := range c.nodes {
		_ = os.Remove(n.pidPath())
	}
}

// LogTail returns the last lines of every node's log, headed by its path:
// what a failed test prints.
func (c *Cluster) LogTail(lines int) string {
	var b strings.Builder
	for _, n := range c.nodes {
		out, _ := os.ReadFile(n.logPath())
		fmt.Fprintf(&b, "--- kafka node %d: %s (last %d lines, each cut at 400 bytes)\n", n.id, n.logPath(), lines)
		for _, line := range strings.Split(lastLines(out, lines), "\n") {
			if len(line) > 400 {
				line = line[:400] + " …"
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func lastLines(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}

// killStale kills a node process left by an earlier run on the same
// directory: its pid file names a live java process started with the
// node's server.properties.
func killStale(n *node, log *zap.Logger) {
	b, err := os.ReadFile(n.pidPath())
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return
	}
	if !isNode(pid, filepath.Join(n.dir, "server.properties")) {
		return
	}
	log.Warn("killing a Kafka node left over from an earlier run", zap.Int("node", n.id), zap.Int("pid", pid))
	p, _ := os.FindProcess(pid)
	_ = p.Signal(syscall.SIGKILL)
	for i := 0; i < 100 && isNode(pid, filepath.Join(n.dir, "server.properties")); i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

// isNode reports whether pid is a live process whose command line names
// props.
func isNode(pid int, props string) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		arg, err := r.ReadString(0)
		if strings.TrimRight(arg, "\x00") == props {
			return true
		}
		if err == io.EOF || err != nil {
			return false
		}
	}
}
