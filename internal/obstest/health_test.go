package obstest

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCollectorHealth: a load balancer's probes of the collector listener,
// and an operator's of the collector's admin listener, answer 200 while
// the stack is up.
func TestCollectorHealth(t *testing.T) {
	s := sharedStack(t)
	for _, url := range []string{s.ep.Collector + "/healthz", s.ep.Collector + "/readyz", s.ep.CollectorAdmin + "/healthz", s.ep.CollectorAdmin + "/readyz"} {
		t.Run(url, func(t *testing.T) {
			a := get(t, url)
			if a.status != http.StatusOK || a.body != "ok\n" {
				t.Fatalf("GET %s: %d %q, want 200 \"ok\\n\"", url, a.status, a.body)
			}
		})
	}
}

// TestWorkerReadyzFollowsClickHouse: the worker's admin listener (the one
// `veil worker` serves on admin.listen) is ready while ClickHouse answers,
// answers 503 while it does not, and is ready again once it is back. The
// server is frozen (SIGSTOP) rather than stopped: connections still open,
// nothing answers, the harshest form of unreachable, and it resumes where
// it was, so the shared stack carries on.
func TestWorkerReadyzFollowsClickHouse(t *testing.T) {
	s := sharedStack(t)
	readyz := s.ep.Admin + "/readyz"
	if a := get(t, s.ep.Admin+"/healthz"); a.status != http.StatusOK {
		t.Fatalf("worker /healthz: %d %q", a.status, a.body)
	}
	waitStatus(t, readyz, http.StatusOK, 10*time.Second)

	b, err := os.ReadFile(filepath.Join(s.dir, "clickhouse", "clickhouse.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("clickhouse.pid holds %q", b)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)

	start := time.Now()
	a := waitStatus(t, readyz, http.StatusServiceUnavailable, 10*time.Second)
	t.Logf("worker /readyz answered 503 %s after ClickHouse froze: %q", time.Since(start).Round(time.Millisecond), strings.TrimSpace(a.body))
	if !strings.HasPrefix(a.body, "not ready") {
		t.Errorf("503 body %q, want it to start with \"not ready\"", a.body)
	}
	// Liveness is not readiness: a worker waiting for ClickHouse must not
	// be restarted for it.
	if a := get(t, s.ep.Admin+"/healthz"); a.status != http.StatusOK {
		t.Errorf("worker /healthz while ClickHouse is frozen: %d %q, want 200", a.status, a.body)
	}
	// The collector does not depend on ClickHouse.
	if a := get(t, s.ep.Collector+"/readyz"); a.status != http.StatusOK {
		t.Errorf("collector /readyz while ClickHouse is frozen: %d %q, want 200", a.status, a.body)
	}

	resume()
	waitStatus(t, readyz, http.StatusOK, 15*time.Second)
}

// waitStatus polls url until it answers status, and returns that answer.
func waitStatus(t *testing.T, url string, status int, timeout time.Duration) answer {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last answer
	for {
		resp, err := client.Get(url)
		if err == nil {
			last = answer{status: resp.StatusCode, body: readBody(resp)}
			if resp.StatusCode == status {
				return last
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: still %d %q (err %v) after %s, want %d", url, last.status, last.body, err, timeout, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readBody(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
