package devstack

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/chserver"
)

func TestMain(m *testing.M) {
	if _, err := chserver.Find(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "skipping devstack tests:", err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type running struct {
	ep   Endpoints
	stop func() error
}

func start(t *testing.T, dir string) *running {
	t.Helper()
	return startWith(t, Options{Listen: "127.0.0.1:0", DataDir: dir}, 30*time.Second)
}

// startWith runs `veil dev` with opts and waits up to within for its
// endpoints.json.
func startWith(t *testing.T, opts Options, within time.Duration) *running {
	t.Helper()
	dir := opts.DataDir
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, opts, zaptest.NewLogger(t), app.NewRegistry())
	}()
	var ep Endpoints
	deadline := time.Now().Add(within)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "endpoints.json"))
		if err == nil && json.Unmarshal(b, &ep) == nil {
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("dev stopped before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("endpoints.json not written within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &running{ep: ep, stop: func() error { cancel(); return <-done }}
}

// query runs q over HTTP with the credentials endpoints.json names, as a
// tool would.
func query(t *testing.T, ep Endpoints, q string) string {
	t.Helper()
	pw, err := os.ReadFile(ep.ClickHousePasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	_, body := httpQuery(t, ep, ep.ClickHouseUser, strings.TrimSpace(string(pw)), q)
	return body
}

// httpQuery runs q over ClickHouse's HTTP interface as user (none when
// empty) and returns the status and body.
func httpQuery(t *testing.T, ep Endpoints, user, password, q string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ep.ClickHouseHTTP+"/", strings.NewReader(q))
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	// No keep-alive: an idle connection would hold up clickhouse-server's
	// shutdown at the end of the test.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestDevRunStopRestart: the stack comes up, takes an event, stops without
// leaving clickhouse-server behind, and the next run still has the row.
func TestDevRunStopRestart(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	for _, v := range []string{r.ep.Collector, r.ep.Metrics, r.ep.Kafka, r.ep.ClickHouseNative, r.ep.ClickHouseHTTP} {
		if v == "" {
			t.Fatalf("endpoints.json has an empty address: %+v", r.ep)
		}
	}
	project := readProject(t, dir)
	track := func(token string) string {
		data := base64.StdEncoding.EncodeToString([]byte(`{"event":"dev_check","properties":{"token":"` + token + `","distinct_id":"d1","$insert_id":"dev-1"}}`))
		resp, err := http.Get(r.ep.Collector + "/track?data=" + url.QueryEscape(data))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body)
	}
	// As in production, an event with another project's token is refused.
	if got := track("demo"); got != "0" {
		t.Fatalf("track with an unknown token answered %q, want 0", got)
	}
	if got := track(project.Token); got != "1" {
		t.Fatalf("track with the project's token answered %q", got)
	}
	sent := time.Now()
	for query(t, r.ep, "SELECT count() FROM veil.events WHERE event = 'dev_check'") != "1" {
		if time.Since(sent) > 10*time.Second {
			t.Fatal("row not queryable within 10 s")
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Logf("row queryable %s after the track call", time.Since(sent).Round(time.Millisecond))

	m, err := http.Get(r.ep.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(m.Body)
	m.Body.Close()
	if !strings.Contains(string(mb), `veil_collector_events_accepted_total{endpoint="track"} 1`) {
		t.Fatal("metrics do not count the accepted event")
	}

	// The analyst user reads the de-identified tables and writes nothing.
	pw, err := os.ReadFile(filepath.Join(dir, "analyst.password"))
	if err != nil {
		t.Fatal(err)
	}
	asAnalyst := func(q string) (int, string) { return httpQuery(t, r.ep, "analyst", strings.TrimSpace(string(pw)), q) }
	if code, body := asAnalyst("SELECT count() FROM veil.events"); code != 200 || body != "1" {
		t.Fatalf("analyst SELECT: %d %s", code, body)
	}
	if code, _ := asAnalyst("INSERT INTO veil.events (event) VALUES ('x')"); code == 200 {
		t.Fatal("the analyst user could INSERT")
	}

	pidBytes, err := os.ReadFile(filepath.Join(dir, "clickhouse", "clickhouse.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidBytes)))
	if err := r.stop(); err != nil {
		t.Fatalf("dev stopped with error: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("clickhouse-server (pid %d) still running after dev stopped", pid)
	}
	if _, err := os.Stat(filepath.Join(dir, "endpoints.json")); !os.IsNotExist(err) {
		t.Fatal("endpoints.json left behind")
	}

	r2 := start(t, dir)
	defer r2.stop()
	if got := query(t, r2.ep, "SELECT count() FROM veil.events WHERE event = 'dev_check'"); got != "1" {
		t.Fatalf("after restart: %s rows, want 1", got)
	}
	// The SDKs configured with the first run's credentials keep working.
	if again := readProject(t, dir); again != project {
		t.Fatalf("the project's credentials changed across a restart:\n%+v\n%+v", project, again)
	}
	if code, body := importOne(t, r2.ep, "?project_id="+project.ProjectID, project.ServiceAccount.Username, project.ServiceAccount.Secret, false); code != 200 {
		t.Fatalf("after restart, /import with the service account answered %d %s", code, body)
	}
}

// readProject reads DIR/project.json, which must be its owner's alone, and
// requires every credential in it.
func readProject(t *testing.T, dir string) Project {
	t.Helper()
	path := filepath.Join(dir, "project.json")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %o, want 600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Token          string `json:"token"`
		APISecret      string `json:"api_secret"`
		ProjectID      string `json:"project_id"`
		ServiceAccount struct {
			Username string `json:"username"`
			Secret   string `json:"secret"`
		} `json:"service_account"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{p.Token, p.APISecret, p.ProjectID, p.ServiceAccount.Username, p.ServiceAccount.Secret} {
		if v == "" {
			t.Fatalf("%s lacks a credential:\n%s", path, b)
		}
	}
	return Project{Token: p.Token, APISecret: p.APISecret, ProjectID: p.ProjectID,
		ServiceAccount: ServiceAccount{Username: p.ServiceAccount.Username, Secret: p.ServiceAccount.Secret}}
}

// importOne sends one event to /import with HTTP Basic user:pass (none
// when noAuth) and returns the answer.
func importOne(t *testing.T, ep Endpoints, query, user, pass string, noAuth bool) (int, string) {
	t.Helper()
	ev := fmt.Sprintf(`[{"event":"dev_import","properties":{"distinct_id":"d2","time":%d,"$insert_id":"imp-1"}}]`, time.Now().Unix())
	req, err := http.NewRequest(http.MethodPost, ep.Collector+"/import"+query, strings.NewReader(ev))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if !noAuth {
		req.SetBasicAuth(user, pass)
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDevImportCredentials: `veil dev` authenticates /import as production
// does, with the credentials of its project and no others.
func TestDevImportCredentials(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	defer r.stop()
	p := readProject(t, dir)
	const (
		ok      = `{"code":200,"num_records_imported":1,"status":"OK"}`
		invalid = `{"code":401,"error":"Invalid credentials","status":"Unauthorized"}`
		none    = `{"code":401,"error":"/import needs HTTP Basic credentials: a service account with project_id, or the project secret or token as user name","status":"Unauthorized"}`
	)
	for _, tt := range []struct {
		name, query, user, pass string
		noAuth                  bool
		status                  int
		body                    string
	}{
		{"API secret", "", p.APISecret, "", false, 200, ok},
		{"service account", "?project_id=" + p.ProjectID, p.ServiceAccount.Username, p.ServiceAccount.Secret, false, 200, ok},
		{"wrong secret", "", "0123456789abcdef0123456789abcdef", "", false, 401, invalid},
		{"service account, wrong secret", "?project_id=" + p.ProjectID, p.ServiceAccount.Username, p.APISecret, false, 401, invalid},
		{"service account, another project", "?project_id=1", p.ServiceAccount.Username, p.ServiceAccount.Secret, false, 401, invalid},
		{"no credentials", "", "", "", true, 401, none},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if code, body := importOne(t, r.ep, tt.query, tt.user, tt.pass, tt.noAuth); code != tt.status || body != tt.body {
				t.Fatalf("answered %d %s, want %d %s", code, body, tt.status, tt.body)
			}
		})
	}
}

// TestDevAtRestAndAccess: what veil dev writes (the raw topic, ClickHouse's
// data, the secrets) is its owner's alone, also after a run of an earlier
// version left it readable by all; ClickHouse refuses connections without
// credentials; the analyst cannot read the privacy tables; and the
// pipeline still carries an event end to end as Veil's own user.
func TestDevAtRestAndAccess(t *testing.T) {
	dir := t.TempDir()
	open := func() {
		// What earlier versions left: 0755 directories, 0644 files.
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return os.Chmod(p, 0o755)
			}
			return os.Chmod(p, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	private := func(when string) {
		t.Helper()
		var n int
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) { // removed while walking
					return nil
				}
				return err
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			n++
			if info.Mode().Type()&os.ModeSymlink == 0 && info.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: %s is %v", when, strings.TrimPrefix(p, dir), info.Mode().Perm())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d files and directories checked", when, n)
	}
	// A geolocation database copied in by `make run` before veil dev ran.
	if err := os.MkdirAll(filepath.Join(dir, "geoip"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "geoip", "LICENSE"), []byte("CC BY 4.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	open()

	for run, name := range []string{"first run", "after an earlier version's run"} {
		if run == 1 {
			open()
		}
		r := start(t, dir)
		insertID := fmt.Sprintf("at-rest-%d", run)
		token := readProject(t, dir).Token
		data := base64.StdEncoding.EncodeToString([]byte(`{"event":"at_rest","properties":{"token":"` + token + `","distinct_id":"d1","$insert_id":"` + insertID + `"}}`))
		resp, err := http.Get(r.ep.Collector + "/track?ip=1&data=" + url.QueryEscape(data))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := strconv.Itoa(run + 1)
		testDeadline := time.Now().Add(15 * time.Second)
		for query(t, r.ep, "SELECT count() FROM veil.events WHERE event = 'at_rest'") != want {
			if time.Now().After(testDeadline) {
				t.Fatalf("%s: the event was not stored within 15 s", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		private(name + ", running")

		if run == 0 {
			checkClickHouseAccess(t, dir, r.ep)
		}
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		private(name + ", stopped")
	}
}

// checkClickHouseAccess: no passwordless user, over either protocol; the
// analyst reads veil and not veil_privacy; Veil's own user reads both.
func checkClickHouseAccess(t *testing.T, dir string, ep Endpoints) {
	t.Helper()
	own, err := os.ReadFile(filepath.Join(dir, "clickhouse.password"))
	if err != nil {
		t.Fatal(err)
	}
	analyst, err := os.ReadFile(filepath.Join(dir, "analyst.password"))
	if err != nil {
		t.Fatal(err)
	}
	native := func(user, password, q string) (uint64, error) {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{ep.ClickHouseNative}, Auth: clickhouse.Auth{Username: user, Password: password}, DialTimeout: 5 * time.Second})
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		var n uint64
		err = conn.QueryRow(context.Background(), q).Scan(&n)
		return n, err
	}
	const optouts = "SELECT count() FROM veil_privacy.optout_registry"
	tests := []struct {
		name, user, password, query string
		ok                          bool
	}{
		{"no user", "", "", "SELECT count() FROM veil.events", false},
		{"default without password", "default", "", "SELECT count() FROM veil.events", false},
		{"default reading the privacy tables", "default", "", optouts, false},
		{"veil without password", "veil", "", "SELECT count() FROM veil.events", false},
		{"analyst reading the privacy tables", "analyst", strings.TrimSpace(string(analyst)), optouts, false},
		{"analyst reading events", "analyst", strings.TrimSpace(string(analyst)), "SELECT count() FROM veil.events", true},
		{"veil reading the privacy tables", "veil", strings.TrimSpace(string(own)), optouts, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := tt.user
			if user == "" {
				user = "default" // what the native driver sends for no user
			}
			_, nerr := native(user, tt.password, tt.query)
			code, body := httpQuery(t, ep, tt.user, tt.password, tt.query)
			if tt.ok {
				if nerr != nil || code != http.StatusOK {
					t.Fatalf("refused: native %v; HTTP %d %s", nerr, code, body)
				}
				return
			}
			if nerr == nil {
				t.Error("native protocol: answered")
			}
			if code == http.StatusOK {
				t.Errorf("HTTP: answered %q", body)
			}
		})
	}
}

// TestDevCluster: `veil dev --clickhouse-shards 2 --clickhouse-replicas 2`
// runs ZooKeeper and four clickhouse-servers, lists them in endpoints.json,
// stores an event on both replicas of one shard, answers a Distributed
// query on clickhouse_http, and leaves no process behind when it stops.
func TestDevCluster(t *testing.T) {
	dir := t.TempDir()
	r := startWith(t, Options{Listen: "127.0.0.1:0", DataDir: dir, ClickHouseShards: 2, ClickHouseReplicas: 2}, 90*time.Second)
	stopped := false
	defer func() {
		if !stopped {
			_ = r.stop()
		}
	}()
	if len(r.ep.ClickHouseNodes) != 4 || r.ep.ZooKeeper == "" {
		t.Fatalf("endpoints.json: %+v", r.ep)
	}
	pids := map[int]bool{}
	places := map[string]bool{}
	for _, n := range r.ep.ClickHouseNodes {
		if n.Pid <= 0 || n.Native == "" || n.HTTP == "" {
			t.Fatalf("node %+v", n)
		}
		pids[n.Pid] = true
		places[fmt.Sprintf("%d/%d", n.Shard, n.Replica)] = true
	}
	if len(pids) != 4 || len(places) != 4 || !places["1/1"] || !places["2/2"] {
		t.Fatalf("nodes %+v", r.ep.ClickHouseNodes)
	}
	zk, err := os.ReadFile(filepath.Join(dir, "clickhouse-cluster", "zookeeper", "zookeeper.pid"))
	if err != nil {
		t.Fatal(err)
	}
	zkPid, _ := strconv.Atoi(strings.TrimSpace(string(zk)))
	pids[zkPid] = true

	project := readProject(t, dir)
	data := base64.StdEncoding.EncodeToString([]byte(`{"event":"dev_check","properties":{"token":"` + project.Token + `","distinct_id":"d1","$insert_id":"dev-1"}}`))
	resp, err := http.Get(r.ep.Collector + "/track?data=" + url.QueryEscape(data))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "1" {
		t.Fatalf("track answered %q", body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for query(t, r.ep, "SELECT count() FROM veil.events WHERE event = 'dev_check'") != "1" {
		if time.Now().After(deadline) {
			t.Fatal("row not queryable through the Distributed table within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One shard holds the row, on both of its replicas.
	perShard := map[int]int{}
	deadline = time.Now().Add(30 * time.Second)
	for {
		clear(perShard)
		for _, n := range r.ep.ClickHouseNodes {
			got, _ := strconv.Atoi(query(t, Endpoints{ClickHouseHTTP: n.HTTP, ClickHouseUser: r.ep.ClickHouseUser, ClickHousePasswordFile: r.ep.ClickHousePasswordFile}, "SELECT count() FROM veil.events_local"))
			perShard[n.Shard] += got
		}
		if perShard[1]+perShard[2] == 2 && (perShard[1] == 2 || perShard[2] == 2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows per shard (both replicas summed): %v, want 2 on one shard", perShard)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := r.stop(); err != nil {
		t.Fatalf("dev stopped with error: %v", err)
	}
	stopped = true
	for pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d still runs after dev stopped", pid)
		}
	}
}

// TestDevFailingToComeUpStopsTheCollector: when `veil dev` cannot write
// endpoints.json (here a directory stands in its place), Run returns the
// error once it has stopped what it started: the collector no longer runs
// nor takes connections on its address. (Before Run waited for the
// collector, what stopped it was closing its admin listener on the way out.)
func TestDevFailingToComeUpStopsTheCollector(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "endpoints.json", "in-the-way"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = Run(ctx, Options{Listen: addr, DataDir: dir}, zaptest.NewLogger(t), app.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), "endpoints.json") {
		t.Fatalf("Run returned %v, want the error writing endpoints.json", err)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "veil/internal/app.ServeCollector(") {
		t.Fatal("the collector still runs after Run returned")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("the collector still takes connections on %s after Run returned", addr)
	}
}
