package app_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/testsvc"
)

// TestWorkerAdminWhileStarting: a worker whose ClickHouse is unreachable
// serves /healthz at once and says in /readyz what it waits for.
func TestWorkerAdminWhileStarting(t *testing.T) {
	s := newStack(t, nil)
	port, err := chserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.cfg
	cfg.Sink.Addr = []string{"127.0.0.1:" + strconv.Itoa(port)} // nothing listens there
	l := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.RunWorker(ctx, cfg, app.Deps{Logger: zaptest.NewLogger(t), Registry: app.NewRegistry()}, l)
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + l.Addr().String() + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testsvc.Eventually(t, 10*time.Second, "readyz names ClickHouse", func() bool {
		code, body := get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "waiting for ClickHouse")
	})
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, _ := get("/api/veil/optouts"); code != http.StatusServiceUnavailable {
		t.Fatalf("the privacy API before start-up finished: %d, want 503", code)
	}
	cancel()
	select {
	case <-done: // an error is expected: it never reached ClickHouse
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not stop while waiting for ClickHouse")
	}
}
