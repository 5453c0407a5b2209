package devstack

import (
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
	"syscall"
	"testing"
	"time"

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

func start(t *testing.T, dir string) *running { return startWith(t, dir, Options{}) }

// startWith runs `veil dev` with opts on dir and a free collector port.
func startWith(t *testing.T, dir string, opts Options) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts.Listen, opts.DataDir = "127.0.0.1:0", dir
	go func() {
		done <- Run(ctx, opts, zaptest.NewLogger(t), app.NewRegistry())
	}()
	var ep Endpoints
	deadline := time.Now().Add(90 * time.Second)
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
			t.Fatal("endpoints.json not written within 90 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &running{ep: ep, stop: func() error { cancel(); return <-done }}
}

func query(t *testing.T, ep Endpoints, q string) string {
	t.Helper()
	// No keep-alive: an idle connection would hold up clickhouse-server's
	// shutdown at the end of the test.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(ep.ClickHouseHTTP + "/?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
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
	data := base64.StdEncoding.EncodeToString([]byte(`{"event":"dev_check","properties":{"token":"any","distinct_id":"d1","$insert_id":"dev-1"}}`))
	resp, err := http.Get(r.ep.Collector + "/track?data=" + url.QueryEscape(data))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "1" {
		t.Fatalf("track answered %q", body)
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
	asAnalyst := func(q string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, r.ep.ClickHouseHTTP+"/", strings.NewReader(q))
		req.SetBasicAuth("analyst", strings.TrimSpace(string(pw)))
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
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
}

// TestDevCluster: `veil dev --clickhouse-shards 2 --clickhouse-replicas 2`
// runs ZooKeeper and four clickhouse-servers, lists them in endpoints.json,
// stores an event on both replicas of one shard, answers a Distributed
// query on clickhouse_http, and leaves no process behind when it stops.
func TestDevCluster(t *testing.T) {
	dir := t.TempDir()
	r := startWith(t, dir, Options{ClickHouseShards: 2, ClickHouseReplicas: 2})
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

	data := base64.StdEncoding.EncodeToString([]byte(`{"event":"dev_check","properties":{"token":"any","distinct_id":"d1","$insert_id":"dev-1"}}`))
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
			got, _ := strconv.Atoi(query(t, Endpoints{ClickHouseHTTP: n.HTTP}, "SELECT count() FROM veil.events_local"))
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
