package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/testsvc"
)

func TestMain(m *testing.M) { os.Exit(testsvc.MainNoLeaks(m)) }

// stack runs Veil's roles against the test services. Each role is started
// on demand and stopped at cleanup (or earlier by its stop function).
type stack struct {
	t          *testing.T
	cfg        app.Config
	collector  string
	admin      string
	adminToken string
}

func newStack(t *testing.T, mutate func(*app.Config)) *stack {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Kafka = testsvc.KafkaConfig(t)
	cfg.Kafka.RawTopic = testsvc.Unique(t, "raw")
	cfg.Kafka.DLQTopic = testsvc.Unique(t, "dlq")
	cfg.Kafka.Partitions = 4
	cfg.Worker.GroupID = testsvc.Unique(t, "group")
	cfg.Sink = testsvc.SinkConfig(t)
	cfg.Collector.Projects = []ingest.Project{{Name: "shop", Token: "tok-shop"}}
	cfg.Deidentify.PseudonymKeyEnv = ""
	cfg.Deidentify.PseudonymKeyFile = testsvc.KeyFile(t)
	cfg.Seal.KeyFile = testsvc.SealKeyFile(t)
	cfg.Privacy.Database = cfg.Sink.Database + "_privacy"
	cfg.Privacy.AdminTokenEnv = ""
	cfg.Privacy.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(cfg.Privacy.AdminTokenFile, []byte("test-admin-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := app.Migrate(context.Background(), cfg, app.Deps{Logger: zaptest.NewLogger(t)}); err != nil {
		t.Fatal(err)
	}
	return &stack{t: t, cfg: cfg, adminToken: "test-admin-token"}
}

// run starts one role and returns its stop function, also registered as a
// cleanup. Every role gets its own metrics registry.
func (s *stack) run(name string, role func(ctx context.Context, deps app.Deps) error) (stop func(), reg *prometheus.Registry) {
	t := s.t
	ctx, cancel := context.WithCancel(context.Background())
	reg = app.NewRegistry()
	deps := app.Deps{Logger: zaptest.NewLogger(t).Named(name), Registry: reg}
	done := make(chan error, 1)
	go func() { done <- role(ctx, deps) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s stopped with error: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop, reg
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (s *stack) startCollector() *prometheus.Registry {
	l := listen(s.t)
	s.collector = "http://" + l.Addr().String()
	_, reg := s.run("collector", func(ctx context.Context, deps app.Deps) error { return app.RunCollector(ctx, s.cfg, deps, l) })
	return reg
}

// startWorker runs a worker; with admin it also serves the privacy API.
func (s *stack) startWorker(admin bool) (func(), *prometheus.Registry) {
	var l net.Listener
	if admin {
		l = listen(s.t)
		s.admin = "http://" + l.Addr().String()
	}
	stop, reg := s.run("worker", func(ctx context.Context, deps app.Deps) error { return app.RunWorker(ctx, s.cfg, deps, l) })
	if admin {
		s.waitReady()
	}
	return stop, reg
}

// waitReady waits until the admin listener's /readyz answers 200.
func (s *stack) waitReady() {
	testsvc.Eventually(s.t, 30*time.Second, "admin /readyz", func() bool {
		resp, err := http.Get(s.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (s *stack) startPrivacy() {
	l := listen(s.t)
	s.admin = "http://" + l.Addr().String()
	s.run("privacy", func(ctx context.Context, deps app.Deps) error { return app.RunPrivacy(ctx, s.cfg, deps, l) })
	s.waitReady()
}

// startStack runs a collector and a worker.
func startStack(t *testing.T) *stack {
	s := newStack(t, nil)
	s.startCollector()
	s.startWorker(false)
	return s
}

func post(t *testing.T, collector string, events []map[string]any) string {
	t.Helper()
	b, _ := json.Marshal(events)
	resp, err := http.PostForm(collector+"/track?verbose=1", url.Values{"data": {base64.StdEncoding.EncodeToString(b)}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Status int     `json:"status"`
		Error  *string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if v.Error != nil {
		return *v.Error
	}
	return ""
}

// TestEndToEnd posts N events over HTTP and reads exactly N rows back.
func TestEndToEnd(t *testing.T) {
	s := startStack(t)
	const batches, perBatch = 10, 50
	now := time.Now().Unix()
	for b := 0; b < batches; b++ {
		events := make([]map[string]any, 0, perBatch)
		for i := 0; i < perBatch; i++ {
			events = append(events, map[string]any{
				"event": "page_view",
				"properties": map[string]any{
					"token":       "tok-shop",
					"distinct_id": fmt.Sprintf("user-%d", i%7),
					"time":        now,
					"$insert_id":  fmt.Sprintf("b%d-i%d", b, i),
					"path":        "/p/" + fmt.Sprint(i),
				},
			})
		}
		if e := post(t, s.collector, events); e != "" {
			t.Fatalf("batch %d rejected: %s", b, e)
		}
	}
	conn := testsvc.Conn(t, s.cfg.Sink)
	q := "SELECT count() FROM " + s.cfg.Sink.Database + ".events"
	testsvc.Eventually(t, 30*time.Second, "all rows stored", func() bool { return testsvc.Count(t, conn, q) >= batches*perBatch })
	// Let any stray duplicate land before counting exactly.
	time.Sleep(500 * time.Millisecond)
	if n := testsvc.Count(t, conn, q); n != batches*perBatch {
		t.Fatalf("%d rows, want exactly %d", n, batches*perBatch)
	}
	if n := testsvc.Count(t, conn, "SELECT uniqExact(distinct_id) FROM "+s.cfg.Sink.Database+".events WHERE project = 'shop' AND event = 'page_view'"); n != 7 {
		t.Fatalf("%d distinct users, want 7", n)
	}
	var props string
	if err := conn.QueryRow(context.Background(), "SELECT properties FROM "+s.cfg.Sink.Database+".events WHERE insert_id = 'b3-i4'").Scan(&props); err != nil {
		t.Fatal(err)
	}
	if props != `{"path":"/p/4"}` {
		t.Fatalf("properties %s", props)
	}
}

// TestValidEventsBesideInvalidOnesAreKept checks that a malformed event does
// not cost the valid ones in the same request.
func TestValidEventsBesideInvalidOnesAreKept(t *testing.T) {
	s := startStack(t)
	now := time.Now().Unix()
	events := []map[string]any{
		{"event": "ok", "properties": map[string]any{"token": "tok-shop", "distinct_id": "a", "time": now, "$insert_id": "ok-1"}},
		{"properties": map[string]any{"token": "tok-shop"}},
		{"event": "ok", "properties": map[string]any{"token": "wrong-token", "distinct_id": "b", "time": now}},
		{"event": "ok", "properties": map[string]any{"token": "tok-shop", "distinct_id": "c", "time": now, "$insert_id": "ok-2"}},
	}
	e := post(t, s.collector, events)
	if !strings.Contains(e, "event 1: event: event name is missing") || !strings.Contains(e, "event 2: properties.token: unknown project token") {
		t.Fatalf("error %q does not name both bad events", e)
	}
	conn := testsvc.Conn(t, s.cfg.Sink)
	q := "SELECT count() FROM " + s.cfg.Sink.Database + ".events"
	testsvc.Eventually(t, 30*time.Second, "valid rows stored", func() bool { return testsvc.Count(t, conn, q) >= 2 })
	time.Sleep(500 * time.Millisecond)
	if n := testsvc.Count(t, conn, q); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

// TestIdenticalEventsWithoutInsertIDAreTwo: Mixpanel deduplicates only on
// a $insert_id the client sent. Two identical events without one, sent in
// one request, with or without a time, are two rows, even after FINAL.
func TestIdenticalEventsWithoutInsertIDAreTwo(t *testing.T) {
	s := startStack(t)
	tap := map[string]any{"event": "Tapped", "properties": map[string]any{"token": "tok-shop", "distinct_id": "u-1"}}
	timed := map[string]any{"event": "Scrolled", "properties": map[string]any{"token": "tok-shop", "distinct_id": "u-1", "time": time.Now().Unix()}}
	if e := post(t, s.collector, []map[string]any{tap, tap, timed, timed}); e != "" {
		t.Fatalf("rejected: %s", e)
	}
	conn := testsvc.Conn(t, s.cfg.Sink)
	db := s.cfg.Sink.Database
	testsvc.Eventually(t, 30*time.Second, "rows stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") >= 4
	})
	for _, name := range []string{"Tapped", "Scrolled"} {
		if n := testsvc.Count(t, conn, "SELECT count() FROM "+db+".events FINAL WHERE event = '"+name+"'"); n != 2 {
			t.Errorf("%s: %d rows after FINAL, want 2", name, n)
		}
	}
}
