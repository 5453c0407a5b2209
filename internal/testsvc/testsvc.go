// Package testsvc starts the real services Veil's integration tests run
// against: an embedded Kafka broker (kfake, spoken to over TCP exactly like a
// real cluster) and a private clickhouse-server child process on free ports.
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
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/sink"
)

var (
	mu      sync.Mutex
	broker  *kfake.Cluster
	chs     *chserver.Server
	chDir   string
	counter atomic.Int64
)

// Main runs a package's tests and then stops the services they started.
// Call it from TestMain: os.Exit(testsvc.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
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
	if chs != nil {
		_ = chs.Stop(context.Background())
		chs = nil
		_ = os.RemoveAll(chDir)
	}
}

// Kafka returns the bootstrap addresses of the shared embedded broker.
func Kafka(t testing.TB) []string {
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

// KafkaCluster returns the shared broker itself, for fault injection.
func KafkaCluster(t testing.TB) *kfake.Cluster {
	Kafka(t)
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
