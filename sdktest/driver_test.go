package sdktest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every SDK is driven the same way: a driver (node/run.js, python/run.py,
// java/…/Run.java, or the Go test itself) makes the library's documented
// calls one after the other and reports, as one JSON line each, every
// call's outcome
//
//	{"kind":"result","op":"people.set","error":null}
//
// and, where it can see them, the HTTP exchanges the library made
//
//	{"kind":"request","method":"POST","path":"/engage","query":["ip","verbose"],
//	 "content_type":"application/x-www-form-urlencoded","auth":"","status":200,"body":"1"}
//
// and first, where the library can say it, its version
//
//	{"kind":"version","version":"5.4.1"}
//
// Drivers never judge; the Go tests do.

// driverLine is one line a driver reports.
type driverLine struct {
	Kind  string  `json:"kind"`
	Op    string  `json:"op"`
	Error *string `json:"error"`
	// Version is the library's own idea of its version (kind "version").
	Version string `json:"version"`

	Method      string   `json:"method"`
	Path        string   `json:"path"`
	Query       []string `json:"query"`
	ContentType string   `json:"content_type"`
	Auth        string   `json:"auth"`
	Status      int      `json:"status"`
	Body        string   `json:"body"`
}

func (l driverLine) request() string {
	ct, auth := l.ContentType, l.Auth
	if ct == "" {
		ct = "-"
	}
	if auth == "" {
		auth = "-"
	}
	return fmt.Sprintf("%s %s?%s  Content-Type: %s  Authorization: %s  → %d %q",
		l.Method, l.Path, strings.Join(l.Query, "&"), ct, auth, l.Status, l.Body)
}

// sdkRun is what a driver reported: each call's outcome in call order, and
// the requests the library made.
type sdkRun struct {
	mu       sync.Mutex
	version  string // as the library reports it, where the driver can ask
	order    []string
	results  map[string]*string // op → the error the library reported, nil on success
	dup      []string
	requests []driverLine
}

func (r *sdkRun) add(l driverLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch l.Kind {
	case "result":
		if r.results == nil {
			r.results = map[string]*string{}
		}
		if _, dup := r.results[l.Op]; dup {
			r.dup = append(r.dup, l.Op)
		}
		r.results[l.Op] = l.Error
		r.order = append(r.order, l.Op)
	case "request":
		r.requests = append(r.requests, l)
	case "version":
		r.version = l.Version
	}
}

// result records the outcome of a call made in-process.
func (r *sdkRun) result(op string, err error) {
	l := driverLine{Kind: "result", Op: op}
	if err != nil {
		msg := err.Error()
		l.Error = &msg
	}
	r.add(l)
}

// runDriver runs a driver to its end and collects what it reported; a
// driver that fails, or prints anything but JSON lines, fails the test.
func runDriver(t *testing.T, cmd *exec.Cmd) *sdkRun {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	run := &sdkRun{}
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l driverLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s printed a line that is not JSON: %q\nstderr:\n%s", cmd.Args[len(cmd.Args)-1], sc.Text(), stderr.String())
		}
		run.add(l)
	}
	return run
}

// logRequests logs the requests the library made (go test -v).
func (r *sdkRun) logRequests(t *testing.T, who string) {
	t.Helper()
	t.Logf("requests %s made:", who)
	for _, l := range r.requests {
		t.Logf("  %s", l.request())
	}
}

// checkCalls requires every call of ops to have reported once, in that
// order, and to have succeeded, except those in refused, which must have
// failed with an error that begins as given: Veil must answer so that the
// library sees what Mixpanel's answer would have told it, and reports it as
// its own refusal, not as an answer it could not read.
func (r *sdkRun) checkCalls(t *testing.T, ops []string, refused map[string]string) {
	t.Helper()
	for _, op := range r.dup {
		t.Errorf("%s reported twice", op)
	}
	if strings.Join(r.order, ",") != strings.Join(ops, ",") {
		t.Fatalf("calls reported:\n  %s\nwant:\n  %s", strings.Join(r.order, ", "), strings.Join(ops, ", "))
	}
	for _, op := range ops {
		err := r.results[op]
		want, isRefused := refused[op]
		switch {
		case isRefused && err == nil:
			t.Errorf("%s: succeeded, want the library to report Veil's refusal", op)
		case isRefused && !strings.HasPrefix(*err, want):
			t.Errorf("%s: the library reported %q, want its own refusal, %q…", op, *err, want)
		case isRefused:
			t.Logf("%s: refused, as the library reports it: %s", op, *err)
		case err != nil:
			t.Errorf("%s: %s", op, *err)
		}
	}
}

// statuses counts the requests by the status they were answered with.
func (r *sdkRun) statuses() map[int]int {
	out := map[int]int{}
	for _, l := range r.requests {
		out[l.Status]++
	}
	return out
}

// endpoints counts the requests by collector endpoint, as the collector's
// veil_collector_requests_total does.
func endpoints[T any](reqs []T, path func(T) string) map[string]float64 {
	out := map[string]float64{}
	for _, r := range reqs {
		out[endpointOf(path(r))]++
	}
	return out
}

// recordingTransport reports each exchange an in-process library makes
// through it, as a driver would.
type recordingTransport struct {
	base http.RoundTripper
	run  *sdkRun
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	l := driverLine{Kind: "request", Method: req.Method, Path: req.URL.Path, ContentType: req.Header.Get("Content-Type")}
	for k := range req.URL.Query() {
		l.Query = append(l.Query, k)
	}
	sort.Strings(l.Query)
	if a := req.Header.Get("Authorization"); a != "" {
		l.Auth, _, _ = strings.Cut(a, " ")
	}
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		l.Body = "network error: " + err.Error()
		rt.run.add(l)
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	l.Status = resp.StatusCode
	l.Body = string(body)
	if len(l.Body) > 300 {
		l.Body = l.Body[:300] + "…"
	}
	rt.run.add(l)
	return resp, nil
}

// sdkSummary is what a passing SDK test proved, in counts.
type sdkSummary struct {
	sdk               string // name and version
	calls, requests   int
	tracked, imported map[string]int // rows expected per event name
	refused           int            // calls or records refused, as they must be
	people, groups    int            // profile and group operations sent
}

// logSummary logs the summary with the rows ClickHouse holds for the
// tracked and the imported events.
func (s *stack) logSummary(t *testing.T, sum sdkSummary) {
	t.Helper()
	got := countByEvent(s.events(t))
	count := func(want map[string]int) (w, g int) {
		for name, n := range want {
			w += n
			g += got[name]
		}
		return w, g
	}
	tw, tg := count(sum.tracked)
	iw, ig := count(sum.imported)
	t.Logf("figures: %s: %d calls, %d requests; %d events tracked, %d rows; %d imported, %d rows; %d refused as Mixpanel refuses them; %d people ops, profile state exact; %d group ops, group state exact",
		sum.sdk, sum.calls, sum.requests, tw, tg, iw, ig, sum.refused, sum.people, sum.groups)
}

// merge returns the counts of both maps.
func merge(a, b map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range a {
		out[k] += v
	}
	for k, v := range b {
		out[k] += v
	}
	return out
}

// driverContext bounds a driver's run.
func driverContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}
