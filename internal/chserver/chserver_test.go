package chserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/sink"
)

func TestMain(m *testing.M) {
	if _, err := chserver.Find(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "skipping chserver tests:", err)
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const analystPassword = "analyst-pw"

func start(t *testing.T, cfg chserver.Config) *chserver.Server {
	t.Helper()
	cfg.Dir = t.TempDir()
	s, err := chserver.Start(context.Background(), cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

func connect(t *testing.T, s *chserver.Server, user, password string) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{s.NativeAddr()}, Auth: clickhouse.Auth{Username: user, Password: password}, DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// httpQuery runs q over HTTP as user (none when empty), with the URL
// parameters params, and returns the status and body.
func httpQuery(t *testing.T, s *chserver.Server, user, password string, params url.Values, q string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.HTTPAddr()+"/?"+params.Encode(), strings.NewReader(q))
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	req.Close = true
	// Bounded: without limits, a runaway query would never answer.
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func code(err error) int32 {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return ex.Code
	}
	return 0
}

// ClickHouse's error codes the tests expect.
const (
	tooManyRows      = 158 // TOO_MANY_ROWS
	timeoutExceeded  = 159 // TIMEOUT_EXCEEDED
	readonly         = 164 // READONLY
	databaseDenied   = 291 // DATABASE_ACCESS_DENIED
	queryWasCanceled = 394 // QUERY_WAS_CANCELLED
)

// TestAnalystLimits: a runaway query of the analyst ends by itself within
// the configured time, and the analyst cannot lift its limits, whichever way
// it asks.
func TestAnalystLimits(t *testing.T) {
	limits := sink.DefaultAnalystLimits()
	limits.MaxExecutionTime = 2 * time.Second
	s := start(t, chserver.Config{AnalystPassword: analystPassword, AnalystLimits: limits})
	analyst := connect(t, s, "analyst", analystPassword)

	t.Run("limits in force", func(t *testing.T) {
		for _, set := range sink.AnalystSettings(limits) {
			var v string
			if err := analyst.QueryRow(context.Background(), "SELECT value FROM system.settings WHERE name = ?", set.Name).Scan(&v); err != nil {
				t.Fatalf("%s: %v", set.Name, err)
			}
			if v != set.Value {
				t.Errorf("%s = %s, want %s", set.Name, v, set.Value)
			}
		}
	})

	runaway := []struct {
		name     string
		settings clickhouse.Settings
	}{
		{"runaway query", nil},
		{"runaway query asking for no limits", clickhouse.Settings{"max_execution_time": 0, "max_rows_to_read": 0, "readonly": 0}},
	}
	for _, tt := range runaway {
		t.Run(tt.name, func(t *testing.T) {
			// Without limits the query would run for ever; the test gives up
			// long before.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if tt.settings != nil {
				ctx = clickhouse.Context(ctx, clickhouse.WithSettings(tt.settings))
			}
			began := time.Now()
			var n uint64
			err := analyst.QueryRow(ctx, "SELECT count() FROM system.numbers").Scan(&n)
			t.Logf("ended after %s: %v", time.Since(began).Round(time.Millisecond), err)
			switch code(err) {
			case timeoutExceeded, tooManyRows, readonly:
			default:
				t.Fatalf("got %v, want ClickHouse's TIMEOUT_EXCEEDED or TOO_MANY_ROWS (or READONLY)", err)
			}
		})
	}

	t.Run("SET max_execution_time = 0", func(t *testing.T) {
		if err := analyst.Exec(context.Background(), "SET max_execution_time = 0"); code(err) != readonly {
			t.Fatalf("got %v, want READONLY", err)
		}
	})
	t.Run("HTTP max_execution_time=0", func(t *testing.T) {
		status, body := httpQuery(t, s, "analyst", analystPassword, url.Values{"max_execution_time": {"0"}}, "SELECT count() FROM system.numbers")
		if status == http.StatusOK || !strings.Contains(body, fmt.Sprintf("Code: %d", readonly)) {
			t.Fatalf("HTTP %d %s, want READONLY", status, body)
		}
	})
}

// TestNoPasswordlessUser: ClickHouse answers nobody without a password, on
// either protocol; Veil's user reads everything, the analyst only `veil`.
func TestNoPasswordlessUser(t *testing.T) {
	s := start(t, chserver.Config{AnalystPassword: analystPassword})
	own := connect(t, s, s.User(), s.Password())
	ctx := context.Background()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS veil", "CREATE TABLE IF NOT EXISTS veil.events (x UInt8) ENGINE = Memory",
		"CREATE DATABASE IF NOT EXISTS veil_privacy", "CREATE TABLE IF NOT EXISTS veil_privacy.optout_registry (x UInt8) ENGINE = Memory",
	} {
		if err := own.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	tests := []struct {
		name, user, password, query string
		ok                          bool
	}{
		{"no user", "", "", "SELECT count() FROM veil.events", false},
		{"default", "default", "", "SELECT count() FROM veil_privacy.optout_registry", false},
		{"veil without its password", s.User(), "", "SELECT 1", false},
		{"veil with another password", s.User(), "guess", "SELECT 1", false},
		{"veil", s.User(), s.Password(), "SELECT count() FROM veil_privacy.optout_registry", true},
		{"analyst reading veil", "analyst", analystPassword, "SELECT count() FROM veil.events", true},
		{"analyst reading veil_privacy", "analyst", analystPassword, "SELECT count() FROM veil_privacy.optout_registry", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := tt.user
			if user == "" {
				user = "default" // what the native driver sends for no user
			}
			conn := connect(t, s, user, tt.password)
			var n uint64
			nerr := conn.QueryRow(ctx, tt.query).Scan(&n)
			status, body := httpQuery(t, s, tt.user, tt.password, nil, tt.query)
			if tt.ok {
				if nerr != nil || status != http.StatusOK || body != "0" && body != "1" {
					t.Fatalf("refused: native %v; HTTP %d %s", nerr, status, body)
				}
				return
			}
			if nerr == nil {
				t.Errorf("native protocol answered %d", n)
			}
			if status == http.StatusOK {
				t.Errorf("HTTP answered %q", body)
			}
		})
	}
	if err := connect(t, s, "analyst", analystPassword).Exec(ctx, "SELECT count() FROM veil_privacy.optout_registry"); code(err) != databaseDenied {
		t.Errorf("the analyst reading veil_privacy: %v, want DATABASE_ACCESS_DENIED", err)
	}

	// The server's files are its owner's alone.
	err := filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Type()&fs.ModeSymlink == 0 && info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is %v", strings.TrimPrefix(p, s.Dir()), info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStopCancelsRunningQueries: a query without limits (Veil's own user
// has none) does not hold up Stop; it is cancelled, and the server is gone
// when Stop returns.
func TestStopCancelsRunningQueries(t *testing.T) {
	s := start(t, chserver.Config{})
	pid := s.Pid()
	own := connect(t, s, s.User(), s.Password())
	queryErr := make(chan error, 1)
	go func() {
		var n uint64
		queryErr <- own.QueryRow(context.Background(), "SELECT count() FROM system.numbers").Scan(&n)
	}()
	watcher := connect(t, s, s.User(), s.Password())
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n uint64
		if err := watcher.QueryRow(context.Background(), "SELECT count() FROM system.processes WHERE query LIKE '%system.numbers%' AND query NOT LIKE '%system.processes%'").Scan(&n); err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the long query is not running after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	watcher.Close()

	began := time.Now()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop returned after %s", time.Since(began).Round(time.Millisecond))
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("clickhouse-server (pid %d) still there after Stop: %v", pid, err)
	}
	select {
	case err := <-queryErr:
		if code(err) != queryWasCanceled {
			t.Fatalf("the running query ended with %v, want QUERY_WAS_CANCELLED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the running query had not returned 10 s after Stop")
	}
}

// TestStopKillsAStuckServer: a server that does not answer (stopped here
// with SIGSTOP) is killed once StopTimeout has passed.
func TestStopKillsAStuckServer(t *testing.T) {
	s := start(t, chserver.Config{StopTimeout: 2 * time.Second})
	pid := s.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- s.Stop(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-done
		t.Fatal("Stop had not returned 60 s after it was called")
	}
	t.Logf("Stop returned after %s", time.Since(began).Round(time.Millisecond))
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("clickhouse-server (pid %d) still there after Stop: %v", pid, err)
	}
}
