package obstest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chserver"
	"github.com/veilhq/veil/internal/devstack"
	"github.com/veilhq/veil/internal/testsvc"
)

// logBuffer is the sink of a logger whose output the tests read back.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) Sync() error { return nil }

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newCaptureLogger logs everything, debug included, as JSON into buf: what
// a production deployment with log.level=debug would write.
func newCaptureLogger(buf *logBuffer) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, buf, zapcore.DebugLevel))
}

// stack is a running `veil dev` pipeline whose log is captured.
type stack struct {
	ep devstack.Endpoints
	// project holds the credentials of the dev project, the only ones the
	// collector takes.
	project devstack.Project
	logs    *logBuffer
	log     *zap.Logger
	dir     string
	stop    func() error
}

// The tests of this package share one pipeline: starting one costs a
// clickhouse-server start, and every test's traffic then also goes through
// the log privacy check.
var shared struct {
	mu sync.Mutex
	s  *stack
	// err is set when the start failed; later tests fail with it at once.
	err error
}

// sharedStack returns the package's pipeline, started on first use, on the
// Kafka VEIL_TEST_KAFKA selects (three Apache Kafka brokers under `make
// test`). Where clickhouse-server is missing the test fails with install
// instructions under CI, and is skipped elsewhere.
func sharedStack(t *testing.T) *stack {
	t.Helper()
	if _, err := chserver.Find(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	kafka := testsvc.KafkaKind(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.s == nil && shared.err == nil {
		shared.s, shared.err = startStack(kafka)
	}
	if shared.err != nil {
		t.Fatalf("starting the pipeline: %v", shared.err)
	}
	return shared.s
}

func stopSharedStack() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.s == nil {
		return nil
	}
	err := shared.s.stop()
	_ = os.RemoveAll(shared.s.dir)
	shared.s = nil
	return err
}

// startStack runs devstack.Run on loopback with a fresh data directory and
// waits for endpoints.json. kafka is testsvc.KafkaEmbedded or
// testsvc.KafkaApache: `veil dev` itself, or `veil dev --kafka apache
// --kafka-brokers 3`.
func startStack(kafka string) (*stack, error) {
	dir, err := os.MkdirTemp("", "veil-obstest-")
	if err != nil {
		return nil, err
	}
	opts := devstack.Options{Listen: "127.0.0.1:0", DataDir: dir}
	// Three brokers on a busy two-core machine take up to a minute to
	// start (docs/performance.md), on top of ClickHouse.
	wait := 60 * time.Second
	if kafka == testsvc.KafkaApache {
		opts.Kafka, opts.KafkaBrokers = devstack.KafkaApache, testsvc.ApacheNodes
		wait = 4 * time.Minute
	}
	logs := &logBuffer{}
	log := newCaptureLogger(logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- devstack.Run(ctx, opts, log, app.NewRegistry())
	}()
	deadline := time.Now().Add(wait)
	for {
		var ep devstack.Endpoints
		b, err := os.ReadFile(filepath.Join(dir, "endpoints.json"))
		if err == nil && json.Unmarshal(b, &ep) == nil {
			s := &stack{ep: ep, logs: logs, log: log, dir: dir, stop: func() error { cancel(); return <-done }}
			if s.project, err = devstack.ReadProject(dir); err != nil {
				_ = s.stop()
				_ = os.RemoveAll(dir)
				return nil, err
			}
			return s, nil
		}
		select {
		case err := <-done:
			cancel()
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("veil dev stopped before it was ready: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("endpoints.json not written within %s", wait)
		}
	}
}

// client talks to the stack without keep-alive: an idle connection would
// hold up clickhouse-server's and the collector's shutdown.
// ExpectContinueTimeout lets a request that says "Expect: 100-continue"
// (as curl does for large bodies) hear a 413 before it sends the body,
// instead of having its write cut by the collector closing the connection.
var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 5 * time.Second}}

// answer is what one request got back.
type answer struct {
	status    int
	body      string
	requestID string
}

func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: string(b), requestID: resp.Header.Get("X-Request-Id")}
}

// trackForm is a /track POST body: data= base64 of the JSON payload.
func trackForm(payload string) string {
	return url.Values{"data": {base64.StdEncoding.EncodeToString([]byte(payload))}}.Encode()
}

func get(t *testing.T, u string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// scrape returns the value of every sample of a /metrics page, keyed by
// the sample's line up to its value: `name{label="v"}`.
func scrape(t *testing.T, metricsURL string) map[string]float64 {
	t.Helper()
	a := get(t, metricsURL)
	if a.status != http.StatusOK {
		t.Fatalf("GET %s: %d", metricsURL, a.status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(a.body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// hasMetric reports whether a /metrics page holds any sample of name.
func hasMetric(samples map[string]float64, name string) bool {
	for k := range samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			return true
		}
	}
	return false
}
