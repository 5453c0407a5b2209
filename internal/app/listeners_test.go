package app_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/testsvc"
)

// TestAdminListenerIsHardened: the worker's admin listener (the privacy
// API, metrics, health) ends connections a client leaves idle, before or
// after a request, within admin.server's timeouts, and answers headers
// over admin.server.max_header_bytes with 431.
func TestAdminListenerIsHardened(t *testing.T) {
	cfg := app.DefaultConfig()
	cfg.Kafka.Brokers = testsvc.Kafka(t)
	cfg.Kafka.RawTopic = testsvc.Unique(t, "raw")
	cfg.Kafka.DLQTopic = testsvc.Unique(t, "dlq")
	cfg.Kafka.Partitions = 1
	cfg.Kafka.ReplicationFactor = 1
	cfg.Collector.Projects = []ingest.Project{{Name: "shop", Token: "tok-shop"}}
	cfg.Deidentify.PseudonymKeyEnv = ""
	cfg.Deidentify.PseudonymKeyFile = testsvc.KeyFile(t)
	cfg.Seal.KeyFile = testsvc.SealKeyFile(t)
	port, err := chserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sink.Addr = []string{"127.0.0.1:" + strconv.Itoa(port)} // the worker waits for it; its admin listener serves meanwhile
	cfg.Admin.Server.ReadHeaderTimeout = 300 * time.Millisecond
	cfg.Admin.Server.ReadTimeout = time.Second
	cfg.Admin.Server.IdleTimeout = 300 * time.Millisecond
	cfg.Admin.Server.MaxHeaderBytes = 4 << 10
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	l := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.RunWorker(ctx, cfg, app.Deps{Logger: zaptest.NewLogger(t), Registry: app.NewRegistry()}, l)
	}()
	defer func() {
		cancel()
		select {
		case <-done: // an error is expected: it never reached ClickHouse
		case <-time.After(10 * time.Second):
			t.Error("the worker did not stop")
		}
	}()
	addr := l.Addr().String()
	testsvc.Eventually(t, 10*time.Second, "the admin listener to answer", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	dial := func(t *testing.T) net.Conn {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for _, tt := range []struct {
		name string
		act  func(t *testing.T, c net.Conn)
	}{
		{"connects and sends nothing", func(t *testing.T, c net.Conn) {}},
		{"idles after a request", func(t *testing.T, c net.Conn) {
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Close {
				t.Fatalf("status %d, close %v: want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t)
			tt.act(t, c)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the admin listener still holds the connection 5 s later")
			}
		})
	}
	t.Run("oversize headers", func(t *testing.T) {
		c := dial(t)
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
	})
}

// TestCollectorReadinessReasonStaysOnAdmin: when Kafka goes away, the
// collector's public /readyz says "not ready" and nothing more; its admin
// listener says why, broker address included.
func TestCollectorReadinessReasonStaysOnAdmin(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			cluster.Close()
		}
	}()
	broker := cluster.ListenAddrs()[0]
	cfg := app.DefaultConfig()
	cfg.Kafka.Brokers = []string{broker}
	cfg.Kafka.Partitions = 1
	cfg.Kafka.ReplicationFactor = 1
	cfg.Collector.Projects = []ingest.Project{{Name: "shop", Token: "tok-shop"}}
	public, admin := listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.ServeCollector(ctx, cfg, app.Deps{Logger: zaptest.NewLogger(t), Registry: app.NewRegistry()}, public, admin)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector: %v", err)
		}
	}()
	get := func(base net.Listener) (int, string) {
		resp, err := http.Get("http://" + base.Addr().String() + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testsvc.Eventually(t, 10*time.Second, "the collector to be ready", func() bool {
		code, _ := get(public)
		return code == http.StatusOK
	})
	if code, body := get(admin); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("admin /readyz with Kafka up: %d %q", code, body)
	}

	cluster.Close()
	closed = true
	testsvc.Eventually(t, 10*time.Second, "the admin listener to say Kafka is unreachable", func() bool {
		code, body := get(admin)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no Kafka broker reachable") && strings.Contains(body, broker)
	})
	code, body := get(public)
	if code != http.StatusServiceUnavailable || body != "not ready\n" {
		t.Fatalf("public /readyz with Kafka down: %d %q, want 503 \"not ready\\n\"", code, body)
	}
	_, port, _ := net.SplitHostPort(broker)
	if strings.Contains(body, port) {
		t.Fatalf("public /readyz names the broker: %q", body)
	}
}

// TestCollectorFailingToStartStopsWaitingForKafka: a collector that fails
// to start (here, collector.trusted_proxies is not an address) while Kafka
// is unreachable returns its error; the goroutine waiting for Kafka's
// topics in the background is stopped with it, instead of holding the
// return until the process is signalled.
func TestCollectorFailingToStartStopsWaitingForKafka(t *testing.T) {
	gone := listen(t)
	unreachable := gone.Addr().String()
	gone.Close()
	cfg := app.DefaultConfig()
	cfg.Kafka.Brokers = []string{unreachable}
	cfg.Collector.Projects = []ingest.Project{{Name: "shop", Token: "tok-shop"}}
	cfg.Collector.TrustedProxies = []string{"not-an-address"}
	public := listen(t)
	defer public.Close()
	// The context never ends: only the collector's own failure may stop it.
	done := make(chan error, 1)
	go func() {
		done <- app.ServeCollector(context.Background(), cfg, app.Deps{Logger: zaptest.NewLogger(t), Registry: app.NewRegistry()}, public, nil)
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "collector.trusted_proxies") {
			t.Fatalf("ServeCollector returned %v, want the collector.trusted_proxies error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("ServeCollector still waits for Kafka 60s after failing to start")
	}
}
