package sdktest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/testsvc"
)

func TestMain(m *testing.M) { os.Exit(testsvc.MainNoLeaks(m)) }

// The project every SDK in these tests sends to.
const (
	project = "sdk"
	// projectID is the project's id, numeric as Mixpanel's are: the Go
	// library takes it as an int.
	projectID = "2718281"
	token     = "tok-sdk-7f3a"
	secret    = "sec-sdk-91c2"
	// A service account that may import into the project (its id is its
	// name).
	saUser   = "veil-sdk-importer"
	saSecret = "sa-sdk-5d0e"
)

// missing fails the test under CI, where every tool must have been installed
// by scripts/install-deps.sh, and skips it elsewhere, saying how to install
// what is missing.
func missing(t *testing.T, what, install string) {
	t.Helper()
	msg := fmt.Sprintf("%s is missing; install it with %s", what, install)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// requireNode returns the node binary, after checking that the npm packages
// pinned in package.json are installed at exactly those versions.
func requireNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node", "`apt-get install nodejs npm`")
	}
	requirePackages(t)
	return node
}

// requirePackages checks node_modules against package.json.
func requirePackages(t *testing.T) {
	t.Helper()
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatalf("sdktest/package.json: %v", err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("sdktest/package.json: %v", err)
	}
	// The tests know what each pinned version sends; a new version is
	// reviewed, not picked up silently.
	for name, known := range map[string]string{"mixpanel": nodeVersion, "mixpanel-browser": browserVersion} {
		if pkg.Dependencies[name] != known {
			t.Fatalf("sdktest/package.json pins %s %q but the tests are written for %s: check what the new version sends, then update the constant", name, pkg.Dependencies[name], known)
		}
	}
	for name, want := range pkg.Dependencies {
		var got struct {
			Version string `json:"version"`
		}
		b, err := os.ReadFile(filepath.Join("node_modules", name, "package.json"))
		if err == nil {
			err = json.Unmarshal(b, &got)
		}
		if err != nil || got.Version != want {
			missing(t, fmt.Sprintf("npm package %s@%s (found %q)", name, want, got.Version),
				"scripts/install-deps.sh (it runs `npm ci --no-audit --no-fund` in sdktest/)")
		}
	}
}

// requireChromium returns Debian's chromium binary.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"chromium", "/usr/bin/chromium"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	missing(t, "chromium", "scripts/install-deps.sh (Debian's `chromium` package: `apt-get install chromium`)")
	return ""
}

// stack is a collector and a worker running in-process against the shared
// test services, with one project that has a token and an API secret.
type stack struct {
	cfg  app.Config
	addr string // the collector's host:port
	tap  *tapListener
	reg  *prometheus.Registry
	conn driver.Conn
	// cert is the PEM file of the collector's certificate when it serves
	// HTTPS, for the client to trust.
	cert string
}

type stackOptions struct {
	tls bool
}

func startStack(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Log.Format = "console"
	cfg.Kafka.Brokers = testsvc.Kafka(t)
	cfg.Kafka.RawTopic = testsvc.Unique(t, "raw")
	cfg.Kafka.DLQTopic = testsvc.Unique(t, "dlq")
	cfg.Kafka.Partitions = 4
	cfg.Kafka.ReplicationFactor = 1
	cfg.Worker.GroupID = testsvc.Unique(t, "group")
	cfg.Sink = testsvc.SinkConfig(t)
	cfg.Collector.Projects = []ingest.Project{{Name: project, ID: projectID, Token: token, Secret: secret}}
	cfg.Collector.ServiceAccounts = []ingest.ServiceAccount{{Username: saUser, Secret: saSecret, Projects: []string{projectID}}}
	// Pseudonymisation keys and the privacy database, as in production.
	cfg.Deidentify.PseudonymKeyEnv = ""
	cfg.Deidentify.PseudonymKeyFile = testsvc.KeyFile(t)
	cfg.Seal.KeyFile = testsvc.SealKeyFile(t)
	cfg.Privacy.Database = cfg.Sink.Database + "_privacy"
	cfg.Privacy.AdminTokenEnv = ""
	s := &stack{}
	if opts.tls {
		cfg.Collector.TLSCert, cfg.Collector.TLSKey = writeCertificate(t)
		s.cert = cfg.Collector.TLSCert
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.cfg, s.addr, s.reg = cfg, l.Addr().String(), app.NewRegistry()
	s.tap = newTapListener(l)
	if err := app.Migrate(context.Background(), cfg, app.Deps{Logger: zaptest.NewLogger(t).Named("migrate")}); err != nil {
		t.Fatal(err)
	}

	// Each role has its own registry, as in production where they are
	// separate processes; s.reg is the collector's.
	ctx, cancel := context.WithCancel(context.Background())
	collectorDeps := app.Deps{Logger: zaptest.NewLogger(t).Named("collector"), Registry: s.reg}
	workerDeps := app.Deps{Logger: zaptest.NewLogger(t).Named("worker"), Registry: app.NewRegistry()}
	done := make(chan error, 2)
	go func() { done <- app.RunCollector(ctx, cfg, collectorDeps, s.tap) }()
	go func() { done <- app.RunWorker(ctx, cfg, workerDeps, nil) }()
	t.Cleanup(func() {
		cancel()
		for i := 0; i < 2; i++ {
			if err := <-done; err != nil {
				t.Errorf("role stopped with error: %v", err)
			}
		}
		s.tap.wait()
	})
	s.conn = testsvc.Conn(t, cfg.Sink)
	return s
}

// writeCertificate makes a throwaway self-signed certificate for 127.0.0.1
// and localhost and returns the certificate and key files. The certificate
// is its own issuer, so a client trusts it by trusting that one file.
func writeCertificate(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "Veil SDK test collector"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "collector.crt"), filepath.Join(dir, "collector.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// wireRequest is one HTTP request as the collector received it.
type wireRequest struct {
	Method      string
	Path        string
	Query       []string // parameter names
	ContentType string
	BodyBytes   int64
}

func (r wireRequest) String() string {
	ct := r.ContentType
	if ct == "" {
		ct = "-"
	}
	return fmt.Sprintf("%s %s?%s  Content-Type: %s  body %d bytes", r.Method, r.Path, strings.Join(r.Query, "&"), ct, r.BodyBytes)
}

// tapListener reads a copy of every byte clients send to the collector and
// parses it as HTTP/1.1, so a test can see exactly which requests arrived
// (method, path, Content-Type) without changing the collector. It sees
// nothing useful of TLS connections.
type tapListener struct {
	net.Listener
	mu   sync.Mutex
	reqs []wireRequest
	wg   sync.WaitGroup
}

func newTapListener(l net.Listener) *tapListener { return &tapListener{Listener: l} }

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.parse(pr)
	}()
	return &tapConn{Conn: c, pw: pw}, nil
}

// parse records each request read from r; once r is not HTTP/1.1 it only
// drains, so that the connection never waits on the tap.
func (l *tapListener) parse(r *io.PipeReader) {
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			_, _ = io.Copy(io.Discard, br)
			return
		}
		n, _ := io.Copy(io.Discard, req.Body)
		var keys []string
		for k := range req.URL.Query() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		l.mu.Lock()
		l.reqs = append(l.reqs, wireRequest{
			Method: req.Method, Path: req.URL.Path, Query: keys,
			ContentType: req.Header.Get("Content-Type"), BodyBytes: n,
		})
		l.mu.Unlock()
	}
}

// requests returns what has arrived so far.
func (l *tapListener) requests() []wireRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]wireRequest(nil), l.reqs...)
}

func (l *tapListener) wait() { l.wg.Wait() }

type tapConn struct {
	net.Conn
	pw   *io.PipeWriter
	once sync.Once
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		_, _ = c.pw.Write(b[:n])
	}
	// net/http aborts its idle reads with a deadline; only the end of the
	// stream ends the tap.
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		c.closeTap()
	}
	return n, err
}

func (c *tapConn) Close() error {
	c.closeTap()
	return c.Conn.Close()
}

func (c *tapConn) closeTap() { c.once.Do(func() { _ = c.pw.Close() }) }

// eventRow is one row of veil.events, as an analyst reads it.
type eventRow struct {
	Event      string
	DistinctID string
	InsertID   string
	Time       time.Time
	TimeMs     uint16
	Lib        string
	LibVersion string
	// Browser, BrowserVersion and OS are the typed columns the SDK's
	// $browser, $browser_version and $os fill.
	Browser        string
	BrowserVersion string
	OS             string
	Properties     map[string]any
	RawProps       string
}

// events returns the project's deduplicated rows (FINAL: replays and SDK
// retries fold into one row, as they do for an analyst).
func (s *stack) events(t *testing.T) []eventRow {
	t.Helper()
	q := fmt.Sprintf(`SELECT event, distinct_id, insert_id, time, time_ms, lib, lib_version, browser, browser_version, os, properties
FROM %s.events FINAL WHERE project = '%s' ORDER BY event, insert_id`, s.cfg.Sink.Database, project)
	rows, err := s.conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []eventRow
	for rows.Next() {
		var r eventRow
		if err := rows.Scan(&r.Event, &r.DistinctID, &r.InsertID, &r.Time, &r.TimeMs, &r.Lib, &r.LibVersion, &r.Browser, &r.BrowserVersion, &r.OS, &r.RawProps); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(r.RawProps), &r.Properties); err != nil {
			t.Fatalf("event %q: properties are not JSON: %v", r.Event, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitEvents waits until the project has at least want rows, lets any
// stray duplicate land, and returns the rows.
func (s *stack) waitEvents(t *testing.T, want int) []eventRow {
	t.Helper()
	// FINAL, as events reads them: a request the browser sent again (a
	// beacon retried) holds rows that fold into one, and must not count
	// for an event still on its way.
	q := fmt.Sprintf("SELECT count() FROM %s.events FINAL WHERE project = '%s'", s.cfg.Sink.Database, project)
	deadline := time.Now().Add(30 * time.Second)
	for testsvc.Count(t, s.conn, q) < uint64(want) {
		if time.Now().After(deadline) {
			rows := s.events(t)
			t.Fatalf("%d rows after 30 s, want %d; have %v", len(rows), want, countByEvent(rows))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	return s.events(t)
}

func countByEvent(rows []eventRow) map[string]int {
	m := map[string]int{}
	for _, r := range rows {
		m[r.Event]++
	}
	return m
}

// waitRowsPerEvent waits for as many rows as want counts in all, and
// requires exactly want's count of rows for each event name, none of
// another; it returns the rows.
func (s *stack) waitRowsPerEvent(t *testing.T, want map[string]int) []eventRow {
	t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	rows := s.waitEvents(t, total)
	if got := countByEvent(rows); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows per event:\n  got  %v\n  want %v", got, want)
	}
	return rows
}

// checkTime checks a row's time to the millisecond.
func checkTime(t *testing.T, r eventRow, ms int64) {
	t.Helper()
	if r.Time.Unix() != ms/1000 || int64(r.TimeMs) != ms%1000 {
		t.Errorf("%s %s: time %d.%03d, want %d.%03d", r.Event, r.InsertID, r.Time.Unix(), r.TimeMs, ms/1000, ms%1000)
	}
}

// byEvent returns the rows of one event name.
func byEvent(rows []eventRow, name string) []eventRow {
	var out []eventRow
	for _, r := range rows {
		if r.Event == name {
			out = append(out, r)
		}
	}
	return out
}

// counters sums a counter of the collector's registry by the value of one
// label: veil_collector_requests_total by "endpoint", say.
func (s *stack) counters(t *testing.T, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && m.GetCounter().GetValue() != 0 {
					out[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// checkCounters compares the collector's own request and rejection counts
// with what the clients saw, allowing 5 s for requests still in flight.
func (s *stack) checkCounters(t *testing.T, requests, rejected map[string]float64) {
	t.Helper()
	var gotReq, gotRej map[string]float64
	deadline := time.Now().Add(5 * time.Second)
	for {
		gotReq = s.counters(t, "veil_collector_requests_total", "endpoint")
		gotRej = s.counters(t, "veil_collector_events_rejected_total", "reason")
		if fmt.Sprint(gotReq, gotRej) == fmt.Sprint(requests, rejected) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fmt.Sprint(gotReq) != fmt.Sprint(requests) {
		t.Errorf("veil_collector_requests_total by endpoint:\n  got  %v\n  want %v", gotReq, requests)
	}
	if fmt.Sprint(gotRej) != fmt.Sprint(rejected) {
		t.Errorf("veil_collector_events_rejected_total by reason:\n  got  %v\n  want %v", gotRej, rejected)
	}
}

// endpointOf names the collector endpoint of a request path, as its metrics
// do: "/track/" and "/track" are both "track".
func endpointOf(path string) string {
	return strings.Trim(path, "/")
}
