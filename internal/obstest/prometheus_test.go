package obstest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/veilhq/veil/internal/chserver"
)

const prometheusInstallHint = "install it with `sudo apt-get update && sudo apt-get install -y prometheus` (Debian; provides prometheus and promtool), or run `make test`, which does it for you"

// pending names the metrics the deploy files use that the pipeline does not
// export yet, or exports only once the first event of their kind happened.
// Queries over them must parse but need not return data. When one of them
// appears, the test says so: take it off the list then, so that its queries
// are held to returning data.
var pending = map[string]string{}

// findTool returns the path of a Prometheus binary. Where it is missing
// the test fails with the install hint under CI and is skipped elsewhere.
func findTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/" + name, "/usr/sbin/" + name} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found; %s", name, prometheusInstallHint)
	}
	t.Skipf("%s not found; %s", name, prometheusInstallHint)
	return ""
}

func runTool(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPromtoolChecksDeployFiles: the rule file and the configuration as
// shipped pass promtool, and the alerts fire on the series their unit tests
// describe (deploy/prometheus/alerts_test.yml).
func TestPromtoolChecksDeployFiles(t *testing.T) {
	promtool := findTool(t, "promtool")
	dir := filepath.Join(repoRoot(t), "deploy", "prometheus")
	runTool(t, dir, promtool, "check", "rules", "alerts.yml")
	runTool(t, dir, promtool, "check", "config", "prometheus.yml")
	runTool(t, dir, promtool, "test", "rules", "alerts_test.yml")

	// Every alert has a severity, a summary and a description, and is
	// covered by the unit tests.
	rf := loadRules(t, filepath.Join(dir, "alerts.yml"))
	tests, err := os.ReadFile(filepath.Join(dir, "alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			t.Run(r.Alert, func(t *testing.T) {
				switch r.Labels["severity"] {
				case "critical", "warning":
				default:
					t.Errorf("severity %q, want critical or warning", r.Labels["severity"])
				}
				if r.For == "" {
					t.Error("no `for`: a single bad scrape would page")
				}
				for _, a := range []string{"summary", "description"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Errorf("annotation %s is missing", a)
					}
				}
				if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
					t.Errorf("no unit test in alerts_test.yml fires %s", r.Alert)
				}
			})
		}
	}
}

// TestDashboardShape: the dashboard imports anywhere (every query uses the
// datasource variable) and its panels are well formed.
func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t, filepath.Join(repoRoot(t), "deploy", "grafana", "veil.json"))
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: Grafana 9+ dashboards are 36 and later", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("uid and title must be set")
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" && strings.Contains(string(v.Query), "prometheus") {
			hasDS = true
		}
		if v.Datasource != nil && v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s uses datasource %q, want ${datasource}", v.Name, v.Datasource.UID)
		}
	}
	if !hasDS {
		t.Error("no Prometheus datasource variable named datasource")
	}
	ids := map[int]string{}
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s has no expression", p.Title, tg.RefID)
			}
		}
	}
}

// TestPrometheusQueries runs a real Prometheus with deploy/prometheus's
// configuration (targets pointed at a running pipeline, 1 s scrapes) and
// its alert rules, sends traffic, and checks every query of the dashboard
// and of the alerts against what Prometheus scraped.
func TestPrometheusQueries(t *testing.T) {
	prom := findTool(t, "prometheus")
	promtool := findTool(t, "promtool")
	root := repoRoot(t)
	s := sharedStack(t)

	collector, err := url.Parse(s.ep.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	worker, err := url.Parse(s.ep.Admin)
	if err != nil || worker.Host == "" {
		t.Fatalf("endpoints.json has no worker admin address: %q", s.ep.Admin)
	}
	dir := t.TempDir()
	cfgPath := writeTestConfig(t, root, dir, map[string]string{"veil-collector": collector.Host, "veil-worker": worker.Host})
	runTool(t, dir, promtool, "check", "config", cfgPath)

	before := scrape(t, s.ep.Metrics)
	tr := startTraffic(t, s.ep.Collector, s.project.Token)
	p := startPrometheus(t, prom, dir, cfgPath)

	// Rates need two samples with traffic between them; five scrapes of
	// each role leave room for that.
	p.waitFor(t, 60*time.Second, "five scrapes of each role", func() bool {
		v, ok := p.scalar(t, `min(count_over_time(up{job=~"veil-collector|veil-worker"}[5m]))`)
		n, _ := p.scalar(t, `count(count by (role) (up{job=~"veil-collector|veil-worker"}))`)
		return ok && v >= 5 && n == 2
	})
	// Storing an event takes a flush (sink.max_age); wait for the first.
	p.waitFor(t, 30*time.Second, "rows written to ClickHouse to be scraped", func() bool {
		v, ok := p.scalar(t, `sum(veil_sink_rows_written_total{role="worker"})`)
		return ok && v > 0
	})

	t.Run("roles", func(t *testing.T) {
		for _, role := range []string{"collector", "worker"} {
			v, ok := p.scalar(t, fmt.Sprintf(`max(up{role=%q})`, role))
			if !ok || v != 1 {
				t.Errorf("up{role=%q} = %v (present %v), want 1", role, v, ok)
			}
		}
		// Every Veil series carries a role, whatever the job.
		if n := p.count(t, `{__name__=~"veil_.+", role=""}`); n != 0 {
			t.Errorf("%d veil_ series without a role label", n)
		}
	})

	t.Run("pending metrics", func(t *testing.T) {
		now := scrape(t, s.ep.Metrics)
		for name, why := range pending {
			if hasMetric(now, name) {
				t.Errorf("%s is exported now (it was pending: %s): remove it from `pending` in internal/obstest so that its queries must return data", name, why)
			} else {
				t.Logf("not exported yet, queries checked for syntax only: %s (%s)", name, why)
			}
		}
	})

	d := loadDashboard(t, filepath.Join(root, "deploy", "grafana", "veil.json"))
	rules := loadRules(t, filepath.Join(root, "deploy", "prometheus", "alerts.yml"))
	var qs []query
	for _, q := range dashboardQueries(t, d) {
		e, err := expandGrafana(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		qs = append(qs, query{where: q.where, expr: e})
	}
	qs = append(qs, alertQueries(rules)...)

	for _, q := range qs {
		t.Run(q.where, func(t *testing.T) {
			res := p.query(t, q.expr)
			if res.Status != "success" {
				t.Fatalf("%s: query %q failed: %s: %s", q.where, q.expr, res.ErrorType, res.Error)
			}
			var waiting []string
			for _, m := range metricNames(q.expr) {
				if _, ok := pending[m]; ok {
					waiting = append(waiting, m)
					continue
				}
				if p.count(t, fmt.Sprintf(`{__name__=%q}`, m)) == 0 {
					t.Errorf("%s: %q reads %s, which Prometheus has no series of", q.where, q.expr, m)
				}
			}
			if len(waiting) > 0 {
				t.Logf("%s: parses; not required to return data until %v exist", q.where, waiting)
				return
			}
			// An alert's threshold is legitimately not crossed while the
			// pipeline is healthy: each side of its `and` without the
			// comparison must return data.
			for _, part := range splitAnd(q.expr) {
				bare := stripThreshold(part)
				res := p.query(t, bare)
				if res.Status != "success" {
					t.Errorf("%s: %q failed: %s: %s", q.where, bare, res.ErrorType, res.Error)
				} else if res.n == 0 {
					t.Errorf("%s: %q returned no data", q.where, bare)
				}
			}
		})
	}

	// The numbers are the real ones: once traffic stops, what Prometheus
	// holds is what the collector counted, and the collector counted what
	// was sent.
	sent := tr.stop(t)
	after := scrape(t, s.ep.Metrics)
	for _, c := range []struct {
		series string
		promQL string
		sent   int
	}{
		{`veil_collector_events_accepted_total{endpoint="track"}`, `sum(veil_collector_events_accepted_total{role="collector", endpoint="track"})`, sent.accepted},
		{`veil_collector_events_rejected_total{reason="missing_event"}`, `sum(veil_collector_events_rejected_total{role="collector", reason="missing_event"})`, sent.missingEvent},
		{`veil_collector_events_rejected_total{reason="malformed"}`, `sum(veil_collector_events_rejected_total{role="collector", reason="malformed"})`, sent.malformed},
	} {
		if got := after[c.series] - before[c.series]; got != float64(c.sent) {
			t.Errorf("%s grew by %v during the test, %d were sent", c.series, got, c.sent)
		}
		want := after[c.series]
		p.waitFor(t, 10*time.Second, c.promQL+" to reach "+strconv.FormatFloat(want, 'f', -1, 64), func() bool {
			v, ok := p.scalar(t, c.promQL)
			return ok && v == want
		})
	}

	t.Run("rules evaluate", func(t *testing.T) {
		want := 0
		for _, g := range rules.Groups {
			want += len(g.Rules)
		}
		p.waitFor(t, 20*time.Second, "every rule evaluated without error", func() bool {
			ok, total, bad := p.ruleHealth(t)
			if total != want {
				return false
			}
			if len(bad) > 0 {
				t.Fatalf("rules failing to evaluate: %v", bad)
			}
			return ok
		})
	})
	t.Logf("checked %d queries against Prometheus; traffic: %+v", len(qs), sent)
}

// writeTestConfig writes deploy/prometheus/prometheus.yml with each job's
// targets replaced by the address given for it, 1 s scrapes and
// evaluations, the rule file by its absolute path, and no Alertmanager.
func writeTestConfig(t *testing.T, root, dir string, targets map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		global = map[string]any{}
		cfg["global"] = global
	}
	global["scrape_interval"] = "1s"
	global["scrape_timeout"] = "1s"
	global["evaluation_interval"] = "1s"
	delete(cfg, "alerting")
	rules, _ := cfg["rule_files"].([]any)
	if len(rules) != 1 || rules[0] != "alerts.yml" {
		t.Fatalf("prometheus.yml: rule_files = %v, want [alerts.yml]", cfg["rule_files"])
	}
	cfg["rule_files"] = []any{filepath.Join(root, "deploy", "prometheus", "alerts.yml")}
	jobs, _ := cfg["scrape_configs"].([]any)
	seen := map[string]bool{}
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		name, _ := job["job_name"].(string)
		sc, _ := job["static_configs"].([]any)
		if len(sc) == 0 {
			t.Fatalf("prometheus.yml: job %s has no static_configs to point at the test pipeline", name)
		}
		addr, ok := targets[name]
		if !ok {
			t.Fatalf("prometheus.yml: job %s is not one the test knows", name)
		}
		job["static_configs"] = []any{map[string]any{"targets": []any{addr}}}
		seen[name] = true
	}
	for name := range targets {
		if !seen[name] {
			t.Fatalf("prometheus.yml: no job %s", name)
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// promServer is a running Prometheus.
type promServer struct {
	base string
	log  string
}

func startPrometheus(t *testing.T, bin, dir, cfgPath string) *promServer {
	t.Helper()
	port, err := chserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Killed with the test binary, even by SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	p := &promServer{base: "http://" + addr, log: logPath}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited at start:\n%s", b)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus not ready within 30 s:\n%s", b)
		}
	}
}

// promResult is an answer of Prometheus' HTTP API; n is the number of
// series (or 1 for a scalar).
type promResult struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
	n int
}

func (p *promServer) query(t *testing.T, expr string) promResult {
	t.Helper()
	resp, err := client.PostForm(p.base+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		t.Fatalf("query %q: %v", expr, err)
	}
	defer resp.Body.Close()
	var r promResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("query %q: answer: %v", expr, err)
	}
	if r.Status == "success" {
		switch r.Data.ResultType {
		case "vector", "matrix":
			var series []json.RawMessage
			if err := json.Unmarshal(r.Data.Result, &series); err != nil {
				t.Fatalf("query %q: result: %v", expr, err)
			}
			r.n = len(series)
		default:
			r.n = 1
		}
	}
	return r
}

// count is the number of series expr returns.
func (p *promServer) count(t *testing.T, expr string) int {
	t.Helper()
	r := p.query(t, expr)
	if r.Status != "success" {
		t.Fatalf("query %q: %s", expr, r.Error)
	}
	return r.n
}

// scalar is the value of a one-series query; ok is false when it returned
// no series.
func (p *promServer) scalar(t *testing.T, expr string) (float64, bool) {
	t.Helper()
	r := p.query(t, expr)
	if r.Status != "success" {
		t.Fatalf("query %q: %s", expr, r.Error)
	}
	if r.Data.ResultType != "vector" || r.n != 1 {
		return math.NaN(), false
	}
	var series []struct {
		Value [2]any `json:"value"`
	}
	if err := json.Unmarshal(r.Data.Result, &series); err != nil {
		t.Fatal(err)
	}
	s, _ := series[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN(), false
	}
	return v, true
}

// ruleHealth reports whether every rule has been evaluated without error,
// how many rules Prometheus loaded, and the failing ones.
func (p *promServer) ruleHealth(t *testing.T) (allOK bool, total int, bad []string) {
	t.Helper()
	resp, err := client.Get(p.base + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	allOK = true
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			total++
			switch rule.Health {
			case "ok":
			case "err":
				bad = append(bad, rule.Name+": "+rule.LastError)
			default:
				allOK = false
			}
		}
	}
	return allOK, total, bad
}

func (p *promServer) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("waited %s for %s; prometheus log:\n%s", timeout, what, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sentCounts is what the traffic generator sent, by expected outcome.
type sentCounts struct {
	requests     int
	accepted     int // valid events
	missingEvent int // events without a name
	malformed    int // requests whose data is neither JSON nor base64
}

type traffic struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	sent  sentCounts
	errs  []string
	// stopOnce closes stopc, once.
	stopOnce func()
}

// startTraffic sends, every 100 ms until stopped (and for two minutes at
// most), three requests to /track: three valid events (one with an email
// address in free text, for the scrubber); one valid event and one without
// a name; data that is neither JSON nor base64. Every answer is
// checked. A round is never cut short, so that what was sent is exactly
// what the collector saw.
func startTraffic(t *testing.T, collector, token string) *traffic {
	t.Helper()
	tr := &traffic{stopc: make(chan struct{})}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(tr.stopc) }); tr.wg.Wait() })
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		deadline := time.After(2 * time.Minute)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			now := time.Now().UnixMilli()
			valid := fmt.Sprintf(`[{"event":"page_view","properties":{"token":%[3]q,"distinct_id":"u%[1]d","time":%[2]d}},`+
				`{"event":"signup","properties":{"token":%[3]q,"distinct_id":"u%[1]d","time":%[2]d,"plan":"pro","note":"reach me at jane.doe@example.com"}},`+
				`{"event":"purchase","properties":{"token":%[3]q,"distinct_id":"u%[1]d","time":%[2]d,"amount":3}}]`, i, now, token)
			mixed := fmt.Sprintf(`[{"event":"page_view","properties":{"token":%[2]q,"distinct_id":"v%[1]d"}},{"properties":{"token":%[2]q,"distinct_id":"v%[1]d"}}]`, i, token)
			for _, r := range []struct {
				form, want string
				count      func(*sentCounts)
			}{
				{trackForm(valid), "1", func(c *sentCounts) { c.accepted += 3 }},
				{trackForm(mixed), "1", func(c *sentCounts) { c.accepted++; c.missingEvent++ }},
				{"data=%25%25not-base64%25%25", "0", func(c *sentCounts) { c.malformed++ }},
			} {
				status, body, err := postTrack(collector, r.form)
				tr.mu.Lock()
				switch {
				case err != nil:
					tr.errs = append(tr.errs, err.Error())
				case status != http.StatusOK || body != r.want:
					tr.errs = append(tr.errs, fmt.Sprintf("answer %d %q, want 200 %q", status, body, r.want))
				default:
					tr.sent.requests++
					r.count(&tr.sent)
				}
				tr.mu.Unlock()
			}
			select {
			case <-tr.stopc:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
		}
	}()
	tr.stopOnce = func() { once.Do(func() { close(tr.stopc) }) }
	return tr
}

func postTrack(collector, form string) (int, string, error) {
	resp, err := client.Post(collector+"/track", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// stop ends the traffic and returns what was sent; answers other than the
// expected ones fail the test.
func (tr *traffic) stop(t *testing.T) sentCounts {
	t.Helper()
	tr.stopOnce()
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, e := range tr.errs {
		t.Errorf("traffic: %s", e)
	}
	if tr.sent.requests == 0 {
		t.Fatal("traffic: no request was answered")
	}
	return tr.sent
}
