package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/devstack"
)

func TestMain(m *testing.M) {
	// The test binary stands for `veil-loadgen ceiling KIND` when run as a
	// ceiling's process (ceilingHelper).
	if kind := os.Getenv("VEIL_TEST_CEILING"); kind != "" {
		if err := ServeCeiling(context.Background(), kind, os.Getenv("VEIL_TEST_CEILING_TOKEN"), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv("VEIL_TEST_PRINT_NICE") != "" {
		stat, err := os.ReadFile("/proc/self/stat")
		if err != nil {
			os.Exit(1)
		}
		// The fields after the command's closing parenthesis; the
		// niceness is the 19th field of the line.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		fmt.Println("nice", f[16])
		os.Exit(0)
	}
	// kafkax.EnsureTopics, which the collector and Kafka ceilings call,
	// goes through kafka-go's shared transport, which keeps its pooled
	// connection to a broker by design (and so sees the topics it
	// created): those goroutines are kafka-go's, not the load generator's.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/segmentio/kafka-go.(*connPool).discover"),
		goleak.IgnoreTopFunction("github.com/segmentio/kafka-go.(*conn).run"),
	)
}

// ceilingHelper runs this test binary as a ceiling's process.
func ceilingHelper(kind, token string) (*exec.Cmd, error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "VEIL_TEST_CEILING="+kind, "VEIL_TEST_CEILING_TOKEN="+token)
	return cmd, nil
}

func quickConfig(target string) Config {
	cfg := DefaultConfig()
	cfg.Target = target
	cfg.Duration = 0
	cfg.Progress = 0
	cfg.Templates = 4
	cfg.Concurrency = 4
	return cfg
}

func run(t *testing.T, cfg Config) (*Report, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	rep, err := Run(context.Background(), cfg, Deps{Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, errOut.String())
	}
	return rep, out.String()
}

// An events-bounded run against the real collector handler sends exactly
// the events asked for, the last request carrying the remainder, and the
// collector produces exactly those.
func TestRunAgainstCollector(t *testing.T) {
	c, p := newTestCollector(t, "loadgen")
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	cfg := quickConfig(srv.URL)
	cfg.Events = 120
	rep, out := run(t, cfg)
	if rep.Requests != 3 || rep.Events != 120 || rep.Errors != 0 || p.Len() != 120 {
		t.Fatalf("requests %d events %d errors %d produced %d; want 3, 120, 0, 120", rep.Requests, rep.Events, rep.Errors, p.Len())
	}
	if rep.EventsPerSec <= 0 || rep.LatencyMs.P50 <= 0 || rep.LatencyMs.P99 < rep.LatencyMs.P50 {
		t.Fatalf("figures missing: %+v", rep)
	}
	if !strings.Contains(out, "3 requests, 120 events accepted, 0 errors") {
		t.Fatalf("text report:\n%s", out)
	}
}

// At a fixed rate the run sends exactly rate × duration requests.
func TestRunFixedRate(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"status":1,"error":null}`)
	}))
	defer srv.Close()
	cfg := quickConfig(srv.URL)
	cfg.Batch = 1
	cfg.Rate = 500
	cfg.RateUnit = UnitRequests
	cfg.Duration = 200 * time.Millisecond
	rep, _ := run(t, cfg)
	if rep.Requests != 100 || n.Load() != 100 || rep.Mode != "rate" || rep.OfferedRate != 500 {
		t.Fatalf("requests %d (server saw %d), mode %s, offered %v; want 100 at 500/s", rep.Requests, n.Load(), rep.Mode, rep.OfferedRate)
	}
	// 100 requests due over 198 ms: at least that long.
	if rep.Seconds < 0.198 {
		t.Fatalf("measured %.3fs, want at least 0.198s", rep.Seconds)
	}
}

func TestRunErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		class   string
	}{
		{"unavailable", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"status":0,"error":"retry"}`, http.StatusServiceUnavailable)
		}, classStatus503},
		{"rate_limited", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) }, classStatus429},
		{"bad_request", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadRequest) }, classStatus400},
		{"partly_rejected", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, `{"status":0,"error":"event 3: too_old"}`)
		}, classRejected},
		{"server_error", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }, classStatus5xx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			cfg := quickConfig(srv.URL)
			cfg.Events = 500
			rep, out := run(t, cfg)
			if rep.Requests != 10 || rep.Events != 0 || rep.Errors != 10 || rep.ErrorClasses[tc.class] != 10 || len(rep.ErrorClasses) != 1 {
				t.Fatalf("requests %d events %d errors %v; want 10 requests, 0 events, 10 %s", rep.Requests, rep.Events, rep.ErrorClasses, tc.class)
			}
			if !strings.Contains(out, tc.class) {
				t.Fatalf("text report does not name %s:\n%s", tc.class, out)
			}
		})
	}
}

func TestRunConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := quickConfig("http://" + addr)
	cfg.Events = 150
	rep, _ := run(t, cfg)
	if rep.Errors != 3 || rep.ErrorClasses[classConnect] != 3 {
		t.Fatalf("errors %v, want 3 connect", rep.ErrorClasses)
	}
}

func TestRunTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	cfg := quickConfig(srv.URL)
	cfg.Events = 50
	cfg.Timeout = 50 * time.Millisecond
	rep, _ := run(t, cfg)
	if rep.ErrorClasses[classTimeout] != 1 {
		t.Fatalf("errors %v, want 1 timeout", rep.ErrorClasses)
	}
}

// The end-to-end watch matches what became queryable to what was accepted.
// The fake ClickHouse answers the count as the collector's producer has it,
// over a baseline of rows from before the run.
//
// The endpoints file is `veil dev`'s, with its project.json beside it: the
// events carry the project's token, which the collector requires.
func TestRunEndToEnd(t *testing.T) {
	c, p := newTestCollector(t, "tok-dev-5e1f")
	collector := httptest.NewServer(c.Handler())
	defer collector.Close()
	var queries atomic.Int64
	ch := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As ClickHouse under veil dev: nobody without the credentials
		// endpoints.json names.
		if u, pw, ok := r.BasicAuth(); !ok || u != "analyst" || pw != "analyst-secret" {
			http.Error(w, "Code: 516. Authentication failed", http.StatusUnauthorized)
			return
		}
		q, _ := io.ReadAll(r.Body)
		if string(q) != "SELECT count() FROM veil.events" {
			http.Error(w, "unexpected query", http.StatusBadRequest)
			return
		}
		queries.Add(1)
		fmt.Fprintf(w, "%d\n", 1000+p.Len())
	}))
	defer ch.Close()

	dir := t.TempDir()
	pw := filepath.Join(dir, "analyst.password")
	if err := os.WriteFile(pw, []byte("analyst-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ep := filepath.Join(dir, "endpoints.json")
	if err := os.WriteFile(ep, fmt.Appendf(nil, `{"collector":%q,"clickhouse_http":%q,"kafka":"127.0.0.1:1","clickhouse_user":"analyst","clickhouse_password_file":%q}`, collector.URL, ch.URL, pw), 0o644); err != nil {
		t.Fatal(err)
	}
	project := `{"token":"tok-dev-5e1f","api_secret":"s","project_id":"1","service_account":{"username":"u","secret":"s2"}}`
	if err := os.WriteFile(filepath.Join(dir, "project.json"), []byte(project), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := quickConfig("")
	cfg.Endpoints = ep
	cfg.Token = ""
	cfg.Events = 1000
	cfg.Rate = 20000
	cfg.WatchInterval = 10 * time.Millisecond
	rep, out := run(t, cfg)
	e := rep.EndToEnd
	if e == nil {
		t.Fatal("no end-to-end figures")
	}
	if e.Baseline != 1000 || e.Accepted != 1000 || e.Queryable != 1000 || !e.CaughtUp || e.Matched != 1000 {
		t.Fatalf("end to end %+v; want baseline 1000, 1000 accepted, queryable and matched, caught up", e)
	}
	if e.EventsPerSec <= 0 || e.Samples < 2 || int64(e.Samples) > queries.Load() {
		t.Fatalf("end to end %+v after %d count queries", e, queries.Load())
	}
	if !strings.Contains(out, "1000 of 1000 accepted events queryable in veil.events") {
		t.Fatalf("text report:\n%s", out)
	}
}

// The HTTP ceiling, in the load generator's process and in one of its
// own: every request answered, and the report saying where the server
// ran. In its own process the server is profiled there.
func TestRunHTTPCeiling(t *testing.T) {
	for _, own := range []bool{false, true} {
		t.Run(fmt.Sprintf("own_process=%v", own), func(t *testing.T) {
			cfg := quickConfig("")
			cfg.Ceiling = CeilingHTTP
			cfg.CeilingOwnProcess = own
			cfg.Events = 200
			cfg.Batch = 10
			cfg.JSON = true
			cfg.CPUProfile = filepath.Join(t.TempDir(), "cpu.prof")
			var out, errOut bytes.Buffer
			rep, err := Run(context.Background(), cfg, Deps{Stdout: &out, Stderr: &errOut, CeilingCommand: ceilingHelper})
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			process := "shared"
			if own {
				process = "own, nice 10"
			}
			if rep.Requests != 20 || rep.Events != 200 || rep.Errors != 0 || rep.Ceiling != CeilingHTTP || rep.CeilingProcess != process {
				t.Fatalf("report %+v", rep)
			}
			if !bytes.HasPrefix(out.Bytes(), []byte("{\n")) || !strings.Contains(out.String(), `"events": 200`) ||
				!strings.Contains(errOut.String(), "http ceiling (process: "+process+") at") {
				t.Fatalf("stdout should be the JSON report, stderr the text one:\n%s\n---\n%s", out.String(), errOut.String())
			}
			prof, err := os.ReadFile(cfg.CPUProfile)
			if err != nil || !bytes.HasPrefix(prof, []byte{0x1f, 0x8b}) {
				t.Fatalf("cpu profile: %d bytes, %v; want a gzipped profile", len(prof), err)
			}
		})
	}
}

// The collector's ceiling, in the load generator's process and in one of
// its own, takes the events of the token the load generator sends, and
// only those: every request is answered 1.
func TestRunCollectorCeiling(t *testing.T) {
	for _, tc := range []struct {
		kind string
		own  bool
	}{{CeilingCollector, false}, {CeilingCollector, true}, {CeilingCollectorSealed, false}} {
		kind, own := tc.kind, tc.own
		t.Run(fmt.Sprintf("%s/own_process=%v", kind, own), func(t *testing.T) {
			cfg := quickConfig("")
			cfg.Ceiling = kind
			cfg.CeilingOwnProcess = own
			cfg.Token = "tok-ceiling-91a"
			cfg.Events = 100
			cfg.Batch = 10
			var out, errOut bytes.Buffer
			rep, err := Run(context.Background(), cfg, Deps{Stdout: &out, Stderr: &errOut, CeilingCommand: ceilingHelper})
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			if rep.Requests != 10 || rep.Events != 100 || rep.Errors != 0 || rep.Ceiling != kind {
				t.Fatalf("report %+v\n%s", rep, errOut.String())
			}
		})
	}
}

// The Kafka ceiling is driven like the others: an events-bounded run
// writes exactly the requests asked for, the last one carrying the
// remainder, and the broker acknowledges every write.
func TestRunKafkaCeiling(t *testing.T) {
	cfg := quickConfig("")
	cfg.Ceiling = CeilingKafka
	cfg.Events = 205
	cfg.Batch = 10
	var out, errOut bytes.Buffer
	rep, err := Run(context.Background(), cfg, Deps{Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if rep.Requests != 21 || rep.Events != 205 || rep.Errors != 0 || rep.Ceiling != CeilingKafka {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(out.String(), "kafka ceiling (process: shared), flat-out, 10 events per request, 4 writes at once") {
		t.Fatalf("text report:\n%s", out.String())
	}
}

// What the Kafka ceiling writes for a request is what the collector
// ceiling produces for it: one envelope per event, each decoding to an
// event of the request's browser, from the loopback address the request
// came from (`veil dev` trusts no proxy's X-Forwarded-For).
func TestCollectorMessages(t *testing.T) {
	gen := newGenerator(1, 3, 10, 5, "loadgen", time.Now())
	cfg := devstack.Config("127.0.0.1:9092", "127.0.0.1:9000", t.TempDir(), devstack.Project{Token: "loadgen"})
	msgs, err := collectorMessages(cfg, gen)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 {
		t.Fatalf("messages for %d templates, want 4 (3 and the remainder's)", len(msgs))
	}
	for _, tp := range append(gen.full, gen.rest) {
		if len(msgs[tp]) != tp.events {
			t.Fatalf("%d messages for a request of %d events", len(msgs[tp]), tp.events)
		}
		for _, m := range msgs[tp] {
			var ev event.Event
			if err := event.Decode(m.Value, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.UserAgent != tp.ua || ev.IP.String() != "127.0.0.1" || len(m.Key) == 0 {
				t.Fatalf("event from %q at %s (key %d bytes); want %q at 127.0.0.1", ev.UserAgent, ev.IP, len(m.Key), tp.ua)
			}
		}
	}
}

// A ceiling in its own process runs at the niceness asked for: every
// thread of the new process inherits it.
func TestStartNiced(t *testing.T) {
	for _, nice := range []int{0, 7} {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "VEIL_TEST_PRINT_NICE=1")
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := startNiced(cmd, nice); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(out.String()), fmt.Sprintf("nice %d", nice); got != want {
			t.Errorf("child printed %q, want %q", got, want)
		}
	}
}

// A ceiling that cannot start is an error, not a hang, and leaves no
// process behind.
func TestCeilingProcessFails(t *testing.T) {
	cfg := quickConfig("")
	cfg.Ceiling = CeilingHTTP
	cfg.CeilingOwnProcess = true
	cfg.Events = 10
	var out, errOut bytes.Buffer
	_, err := Run(context.Background(), cfg, Deps{Stdout: &out, Stderr: &errOut, CeilingCommand: func(string, string) (*exec.Cmd, error) {
		return exec.Command(os.Args[0], "-test.run=^$"), nil // not a ceiling: runs no test and exits
	}})
	if err == nil || !strings.Contains(err.Error(), "the http ceiling did not start") {
		t.Fatalf("err %v, want the ceiling's failure to start", err)
	}
}

func TestValidate(t *testing.T) {
	ok := quickConfig("http://127.0.0.1:8080")
	ok.Duration = time.Second
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string // "" for valid
	}{
		{"default", func(c *Config) {}, ""},
		{"ipv6_loopback", func(c *Config) { c.Target = "http://[::1]:8080" }, ""},
		{"localhost", func(c *Config) { c.Target = "http://localhost:8080" }, ""},
		{"loopback_range", func(c *Config) { c.Target = "http://127.3.2.1:80" }, ""},
		{"private_address", func(c *Config) { c.Target = "http://10.0.0.5:8080" }, "loadgen.target must be a loopback address"},
		{"public_name", func(c *Config) { c.Target = "http://collector.example.com" }, "loadgen.target must be a loopback address"},
		{"https", func(c *Config) { c.Target = "https://127.0.0.1" }, "loadgen.target must be an http:// URL"},
		{"clickhouse_elsewhere", func(c *Config) { c.ClickHouseHTTP = "http://192.0.2.7:8123" }, "loadgen.clickhouse_http must be a loopback address"},
		{"unbounded", func(c *Config) { c.Duration, c.Events = 0, 0 }, "loadgen.duration or loadgen.events must bound the run"},
		{"batch_too_big", func(c *Config) { c.Batch = 2001 }, "loadgen.batch must be between 1 and 2000"},
		{"zero_concurrency", func(c *Config) { c.Concurrency = 0 }, "loadgen.concurrency must be positive"},
		{"unit", func(c *Config) { c.RateUnit = "bytes" }, "loadgen.rate_unit must be events or requests"},
		{"ceiling", func(c *Config) { c.Ceiling = "broker" }, "loadgen.ceiling must be http, collector or kafka"},
		{"kafka_own_process", func(c *Config) { c.Ceiling = CeilingKafka; c.CeilingOwnProcess = true }, "loadgen.ceiling kafka runs in the load generator's process"},
		{"profile_without_ceiling", func(c *Config) { c.CPUProfile = "cpu.out" }, "loadgen.cpuprofile profiles the server it starts"},
		{"ceiling_nice", func(c *Config) { c.Ceiling = CeilingHTTP; c.CeilingNice = 20 }, "loadgen.ceiling_nice must be between 0 and 19"},
		{"warmup", func(c *Config) { c.Warmup = time.Second }, "loadgen.warmup must be shorter than loadgen.duration"},
		{"table", func(c *Config) { c.ClickHouseHTTP = "http://127.0.0.1:8123"; c.Table = "veil.events; DROP TABLE x" }, "loadgen.table must be a plain table name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// A non-loopback target is refused before anything is sent, and the
// transport itself refuses to dial one even if a URL got through.
func TestRefusesNonLoopback(t *testing.T) {
	cfg := quickConfig("http://198.51.100.10:8080")
	cfg.Events = 1
	if _, err := Run(context.Background(), cfg, Deps{Stdout: io.Discard, Stderr: io.Discard}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Run: %v, want a loopback refusal", err)
	}
	client := &http.Client{Transport: loopbackTransport(1), Timeout: time.Second}
	_, err := client.Get("http://198.51.100.10:8080/")
	if err == nil || !strings.Contains(err.Error(), "non-loopback") {
		t.Fatalf("dial: %v, want a refusal", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || errorClass(err) != classConnect {
		t.Fatalf("a refused dial should count as %s, got %s", classConnect, errorClass(err))
	}
}

func TestEndpointsFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"missing", "", "loadgen.endpoints: open"},
		{"not_json", "collector=x", "is not an endpoints file"},
		{"no_collector", `{"clickhouse_http":"http://127.0.0.1:1"}`, "names no collector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".json")
			if tc.content != "" {
				if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cfg := quickConfig("")
			cfg.Endpoints = p
			cfg.Events = 1
			_, err := Run(context.Background(), cfg, Deps{Stdout: io.Discard, Stderr: io.Discard})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// With --endpoints and no --token, the token is the project's beside the
// endpoints file; without that file the run says so instead of sending
// events `veil dev` would refuse.
func TestEndpointsToken(t *testing.T) {
	dir := t.TempDir()
	ep := filepath.Join(dir, "endpoints.json")
	if err := os.WriteFile(ep, []byte(`{"collector":"http://127.0.0.1:1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, project, token, want, wantErr string
	}{
		{"from the project file", `{"token":"tok-file","api_secret":"s","project_id":"1","service_account":{"username":"u","secret":"s2"}}`, "", "tok-file", ""},
		{"given, over the project file", `{"token":"tok-file","api_secret":"s","project_id":"1","service_account":{"username":"u","secret":"s2"}}`, "tok-flag", "tok-flag", ""},
		{"no project file", "", "", "", "loadgen.token: not given, and not read beside loadgen.endpoints"},
		{"project file without a token", `{"api_secret":"s","project_id":"1","service_account":{"username":"u","secret":"s2"}}`, "", "", "project.json: token must be set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pf := filepath.Join(dir, "project.json")
			_ = os.Remove(pf)
			if tc.project != "" {
				if err := os.WriteFile(pf, []byte(tc.project), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg := quickConfig("")
			cfg.Endpoints, cfg.Token = ep, tc.token
			got, err := cfg.resolveEndpoints()
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Fatal(err)
			case got.Token != tc.want:
				t.Fatalf("token %q, want %q", got.Token, tc.want)
			}
		})
	}
}
