// The tests of this package always run on Apache Kafka: a cluster of three
// brokers, started once for the test binary by testsvc.Apache.
package kafkacluster_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/internal/kafkacluster"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/testsvc"
)

var (
	pidsMu sync.Mutex
	pids   = map[int]bool{} // every node process the tests saw
)

func TestMain(m *testing.M) {
	code := testsvc.MainNoLeaks(m)
	// Nothing may outlive the tests: every node the cluster ran is gone.
	pidsMu.Lock()
	for pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			fmt.Fprintf(os.Stderr, "kafka node process %d still running after the tests\n", pid)
			code = 1
		}
	}
	pidsMu.Unlock()
	os.Exit(code)
}

// cluster returns the shared cluster and records its nodes' pids.
func cluster(t testing.TB) *kafkacluster.Cluster {
	t.Helper()
	c := testsvc.Apache(t)
	remember(c)
	return c
}

func remember(c *kafkacluster.Cluster) {
	pidsMu.Lock()
	defer pidsMu.Unlock()
	for _, n := range c.Nodes() {
		if n.Pid > 0 {
			pids[n.Pid] = true
		}
	}
}

// TestPomPinsVersion: the jars install-deps.sh fetches are the release
// the package looks for.
func TestPomPinsVersion(t *testing.T) {
	b, err := os.ReadFile("pom.xml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<kafka.version>([^<]+)</kafka.version>`).FindSubmatch(b)
	if m == nil || string(m[1]) != kafkacluster.Version {
		t.Fatalf("pom.xml pins kafka.version %q, kafkacluster.Version is %q", m, kafkacluster.Version)
	}
}

// metadata asks the broker at addr itself which brokers the cluster has.
func brokerIDs(t *testing.T, addr string) []int {
	t.Helper()
	conn, err := kafka.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bs, err := conn.Brokers()
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	sort.Ints(ids)
	return ids
}

// processState returns the state letter of pid in /proc (R, S, T, …).
func processState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "gone"
	}
	// pid (comm) state …: comm may hold spaces, the state follows the last ')'.
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

// TestClusterHasThreeBrokers: every node is a running java process of
// Kafka's broker, and each broker lists all three.
func TestClusterHasThreeBrokers(t *testing.T) {
	c := cluster(t)
	nodes := c.Nodes()
	if len(nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes))
	}
	for i, n := range nodes {
		if n.ID != i+1 || n.Address != c.Brokers()[i] || n.Pid <= 0 {
			t.Fatalf("node %d: %+v", i, n)
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n.Pid))
		if err != nil || !strings.Contains(string(cmdline), "kafka.Kafka") {
			t.Fatalf("node %d: pid %d is not a Kafka broker: %q", n.ID, n.Pid, cmdline)
		}
		if got := fmt.Sprint(brokerIDs(t, n.Address)); got != "[1 2 3]" {
			t.Fatalf("broker %d lists brokers %s, want [1 2 3]", n.ID, got)
		}
	}
}

// TestNodeFaults: a node killed with SIGKILL is gone and the others stop
// listing it, and the collector's producer goes on writing with two
// copies in sync, to the leaders that replaced it; started again it
// rejoins on its old address; a paused node is stopped in the kernel's
// eyes until resumed. The cluster is whole again afterwards, for the
// other tests.
func TestNodeFaults(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	victim := c.Nodes()[2]
	kcfg := kafkaConfig(t)
	p := kafkax.NewProducer(kcfg.Brokers, kcfg.RawTopic, kafkax.DefaultProducerConfig(), nil)
	defer p.Close()
	write := func(round string) {
		t.Helper()
		for i := range 40 {
			key := []byte(fmt.Sprintf("user-%d", i))
			if err := p.WriteMessages(ctx, kafka.Message{Key: key, Value: []byte(round)}); err != nil {
				t.Fatalf("%s: write %d: %v", round, i, err)
			}
		}
	}
	write("before")

	if err := c.Pause(victim.ID); err != nil {
		t.Fatal(err)
	}
	if got := processState(t, victim.Pid); got != "T" {
		t.Errorf("paused node's state %s, want T (stopped)", got)
	}
	if err := c.Resume(victim.ID); err != nil {
		t.Fatal(err)
	}
	if got := processState(t, victim.Pid); got == "T" || got == "gone" {
		t.Errorf("resumed node's state %s", got)
	}

	if err := c.Kill(victim.ID); err != nil {
		t.Fatal(err)
	}
	if got := processState(t, victim.Pid); got != "gone" {
		t.Fatalf("killed node's process is %s, want gone", got)
	}
	if got := c.Nodes()[2].Pid; got != 0 {
		t.Fatalf("killed node reports pid %d", got)
	}
	testsvc.Eventually(t, 30*time.Second, "the others drop the killed broker", func() bool {
		return fmt.Sprint(brokerIDs(t, c.Brokers()[0])) == "[1 2]"
	})
	// Its partitions have new leaders and two copies in sync: writes
	// with acks=all go on, through the producer's connections to the
	// dead leader being replaced.
	write("while one node is down")
	if got := storedMessages(t, kcfg); got != 80 {
		t.Fatalf("%d messages stored, want 80", got)
	}

	began := time.Now()
	if err := c.StartNode(ctx, victim.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d rejoined in %s", victim.ID, time.Since(began).Round(time.Millisecond))
	remember(c)
	again := c.Nodes()[2]
	if again.Pid <= 0 || again.Pid == victim.Pid || again.Address != victim.Address {
		t.Fatalf("restarted node %+v, was %+v", again, victim)
	}
	for _, addr := range c.Brokers() {
		testsvc.Eventually(t, 30*time.Second, "every broker lists all three", func() bool {
			return fmt.Sprint(brokerIDs(t, addr)) == "[1 2 3]"
		})
	}
}

// storedMessages returns the number of messages in the raw topic: the sum
// of its partitions' high-water marks, from the surviving brokers.
func storedMessages(t *testing.T, kcfg kafkax.Config) int64 {
	t.Helper()
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	// The first node is never the one killed.
	c := &kafka.Client{Addr: kafka.TCP(kcfg.Brokers[0]), Transport: transport, Timeout: 10 * time.Second}
	var reqs []kafka.OffsetRequest
	for p := range kcfg.Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	res, err := c.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{kcfg.RawTopic: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range res.Topics[kcfg.RawTopic] {
		if p.Error != nil {
			t.Fatalf("partition %d: %v", p.Partition, p.Error)
		}
		n += p.LastOffset
	}
	return n
}
