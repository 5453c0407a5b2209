// Package testsvc starts the real services Veil's integration tests run
// against: Kafka and a private clickhouse-server child process on free
// ports.
//
// Kafka is chosen by VEIL_TEST_KAFKA: "embedded" (the default) is one kfake
// broker in the test binary, spoken to over TCP exactly like a real
// cluster; "apache" is a cluster of three Apache Kafka brokers
// (internal/kafkacluster), so any integration package can be run against
// real Kafka:
//
//	VEIL_TEST_KAFKA=apache go test ./worker/
//
// Each service starts at most once per test binary, on first use, and is
// stopped by Main after the package's tests. Tests isolate themselves with
// their own topic, consumer group and database names (see Unique).
package testsvc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/kafkacluster"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/sink"
)

// KafkaEnv names the environment variable that chooses the Kafka of the
// integration tests: KafkaEmbedded (the default) or KafkaApache.
const KafkaEnv = "VEIL_TEST_KAFKA"

// The values of KafkaEnv.
const (
	KafkaEmbedded = "embedded"
	KafkaApache   = "apache"
)

// ApacheNodes is the size of the Apache Kafka cluster: enough for three
// copies of each partition with two in sync while one broker is down.
const ApacheNodes = 3

var (
	mu        sync.Mutex
	broker    *kfake.Cluster
	apache    *kafkacluster.Cluster
	apacheDir string
	chs       *chserver.Server
	chDir     string
	counter   atomic.Int64
)

// Main runs a package's tests and then stops the services they started.
// Call it from TestMain: os.Exit(testsvc.Main(m)). When a test failed, the
// end of each Apache Kafka node's log is printed (the logs themselves are
// files, kept out of the test output).
func Main(m *testing.M) int {
	code := m.Run()
	if code != 0 {
		mu.Lock()
		if apache != nil {
			fmt.Fprint(os.Stderr, apache.LogTail(40))
		}
		mu.Unlock()
	}
	Stop()
	return code
}

// MainNoLeaks is Main, and then fails the binary when goroutines started by
// the tests outlive them: os.Exit(testsvc.MainNoLeaks(m)).
func MainNoLeaks(m *testing.M) int {
	code := Main(m)
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	return code
}

// Stop stops the services, if they were started.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if broker != nil {
		broker.Close()
		broker = nil
	}
	if apache != nil {
		// Killed rather than shut down: the data is thrown away, and
		// a controlled shutdown of three nodes takes seconds.
		apache.Close()
		apache = nil
		_ = os.RemoveAll(apacheDir)
	}
	if chs != nil {
		_ = chs.Stop(context.Background())
		chs = nil
		_ = os.RemoveAll(chDir)
	}
}

// KafkaKind returns the Kafka VEIL_TEST_KAFKA selects, failing the test
// on an unknown value.
func KafkaKind(t testing.TB) string {
	t.Helper()
	switch k := os.Getenv(KafkaEnv); k {
	case "", KafkaEmbedded:
		return KafkaEmbedded
	case KafkaApache:
		return KafkaApache
	default:
		t.Fatalf("testsvc: %s=%q: want %q or %q", KafkaEnv, k, KafkaEmbedded, KafkaApache)
		return ""
	}
}

// Kafka returns the bootstrap addresses of the shared Kafka that
// VEIL_TEST_KAFKA selects.
func Kafka(t testing.TB) []string {
	t.Helper()
	if KafkaKind(t) == KafkaApache {
		return Apache(t).Brokers()
	}
	return embedded(t)
}

// KafkaConfig returns Veil's Kafka configuration for the shared Kafka:
// its brokers, and the replication it allows: one copy on the embedded
// broker; three, two of them in sync, on the Apache cluster, as in
// production. The topic names are the defaults: a test sets its own.
func KafkaConfig(t testing.TB) kafkax.Config {
	t.Helper()
	cfg := kafkax.DefaultConfig()
	cfg.Brokers = Kafka(t)
	cfg.ReplicationFactor, cfg.MinInsyncReplicas = 1, 1
	if KafkaKind(t) == KafkaApache {
		cfg.ReplicationFactor, cfg.MinInsyncReplicas = ApacheNodes, 2
	}
	return cfg
}

// Apache returns the shared cluster of ApacheNodes Apache Kafka brokers,
// whatever VEIL_TEST_KAFKA says: the packages that prove Veil on real
// Kafka use it directly. Where the broker's jars or Java are missing the
// test fails under CI and is skipped elsewhere, with what to install.
func Apache(t testing.TB) *kafkacluster.Cluster {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if apache != nil {
		return apache
	}
	if _, err := kafkacluster.FindLibs(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("testsvc: %v", err)
		}
		t.Skipf("testsvc: %v", err)
	}
	dir, err := os.MkdirTemp("", "veil-kafka-")
	if err != nil {
		t.Fatalf("testsvc: %v", err)
	}
	cfg := kafkacluster.DefaultConfig()
	cfg.Dir, cfg.Nodes = dir, ApacheNodes
	c, err := kafkacluster.Start(context.Background(), cfg, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("testsvc: %v", err)
	}
	apache, apacheDir = c, dir
	return apache
}

// embedded returns the bootstrap addresses of the shared kfake broker.
func embedded(t testing.TB) []string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if broker == nil {
		c, err := kfake.NewCluster(
			kfake.NumBrokers(1),
			kfake.AllowAutoTopicCreation(),
			kfake.DefaultNumPartitions(4),
			// Short group timeouts let rebalance tests finish in seconds.
			kfake.GroupMinSessionTimeout(500*time.Millisecond),
		)
		if err != nil {
			t.Fatalf("testsvc: start kfake: %v", err)
		}
		broker = c
	}
	return broker.ListenAddrs()
}

// KafkaCluster returns the shared embedded broker itself, for fault
// injection.
func KafkaCluster(t testing.TB) *kfake.Cluster {
	embedded(t)
	mu.Lock()
	defer mu.Unlock()
	return broker
}

// ClickHouse returns the shared clickhouse-server. Where the binary is
// missing the test fails with install instructions under CI, and is skipped
// elsewhere so that `go test` works on a laptop without it.
func ClickHouse(t testing.TB) *chserver.Server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if chs != nil {
		return chs
	}
	if _, err := chserver.Find(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("testsvc: %v", err)
		}
		t.Skipf("testsvc: %v", err)
	}
	dir, err := os.MkdirTemp("", "veil-clickhouse-")
	if err != nil {
		t.Fatalf("testsvc: %v", err)
	}
	s, err := chserver.Start(context.Background(), chserver.Config{Dir: dir, AnalystPassword: AnalystPassword}, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("testsvc: %v", err)
	}
	chs, chDir = s, dir
	return chs
}

// AnalystPassword is the password of the read-only analyst user of the test
// ClickHouse.
const AnalystPassword = "analyst-test-password"

// Unique returns a name unique within this test binary, usable as a topic,
// group or database name: prefix plus the sanitised test name and a counter.
func Unique(t testing.TB, prefix string) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return fmt.Sprintf("%s_%s_%d", prefix, name, counter.Add(1))
}

// SinkConfig returns a sink configuration for the shared ClickHouse with a
// fresh database, dropped when the test ends (and with it the database
// name + "_privacy", for the privacy tables).
func SinkConfig(t testing.TB) sink.Config {
	t.Helper()
	s := ClickHouse(t)
	cfg := sink.DefaultConfig()
	cfg.Addr = []string{s.NativeAddr()}
	cfg.Username, cfg.Password = s.User(), s.Password()
	cfg.Database = strings.ToLower(Unique(t, "veil"))
	cfg.MaxAge = 200 * time.Millisecond
	t.Cleanup(func() {
		conn, err := sink.Connect(cfg)
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database)
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database+"_privacy")
	})
	return cfg
}

// Conn opens a ClickHouse connection for assertions, closed at cleanup.
func Conn(t testing.TB, cfg sink.Config) driver.Conn {
	t.Helper()
	conn, err := sink.Connect(cfg)
	if err != nil {
		t.Fatalf("testsvc: connect ClickHouse: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Count returns the number of rows a query's count() gives, failing the test
// on error.
func Count(t testing.TB, conn driver.Conn, query string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("testsvc: %s: %v", query, err)
	}
	return n
}

// Eventually polls cond every 50 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("testsvc: %s: not true after %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// KeyFile writes a fresh pseudonymisation key file for the test and returns
// its path.
func KeyFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pseudonym.keys")
	if err := pseudonym.GenerateKeyFile(p); err != nil {
		t.Fatalf("testsvc: %v", err)
	}
	return p
}

// SealKeyFile writes a fresh seal key file for the test and returns its
// path.
func SealKeyFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "seal.keys")
	if err := seal.GenerateKeyFile(p); err != nil {
		t.Fatalf("testsvc: %v", err)
	}
	return p
}

// Sink opens a sink on a fresh database of the shared ClickHouse, with the
// schema applied; it is closed and the database dropped at cleanup.
func Sink(t testing.TB) (*sink.Sink, sink.Config) {
	t.Helper()
	cfg := SinkConfig(t)
	ctx := context.Background()
	s, err := sink.Open(ctx, cfg, sink.Deps{})
	if err != nil {
		t.Fatalf("testsvc: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("testsvc: %v", err)
	}
	return s, cfg
}

// Records reads every record of topic, from every partition, through
// broker (any broker of the cluster): what Kafka holds of the topic.
func Records(t testing.TB, broker, topic string) []kafka.Message {
	t.Helper()
	conn, err := kafka.Dial("tcp", broker)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for _, p := range parts {
		c, err := kafka.DialLeader(context.Background(), "tcp", broker, topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := c.ReadLastOffset()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Seek(0, kafka.SeekAbsolute); err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < last; off++ {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			m, err := c.ReadMessage(10 << 20)
			if err != nil {
				t.Fatalf("%s/%d offset %d: %v", topic, p.ID, off, err)
			}
			out = append(out, m)
		}
		c.Close()
	}
	return out
}

// Header is the value of m's header key, empty when it has none.
func Header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
