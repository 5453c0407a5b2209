package sdktest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/veilhq/veil/internal/testsvc"
)

// browserVersion is the mixpanel-browser package pinned in package.json.
const browserVersion = "2.83.0"

// browserUser is the id the page identifies its visitor with.
const browserUser = "user-browser-1"

// browserRequest is one request the page made, as Chromium saw it.
type browserRequest struct {
	Method      string
	URL         string
	Type        string // Chromium's resource type: XHR, Ping (sendBeacon), Image…
	ContentType string
	Status      int64
	MimeType    string // of the response
	Protocol    string // of the response: http/1.1, h2
	Failure     string // network or CORS failure, if any
	Canceled    bool
}

func (r browserRequest) String() string {
	u, _ := url.Parse(r.URL)
	var keys []string
	if u != nil {
		for k := range u.Query() {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	ct := r.ContentType
	if ct == "" {
		ct = "-"
	}
	s := fmt.Sprintf("%s %s %s?%s  Content-Type: %s  → %s %d %s", r.Type, r.Method, u.Path, strings.Join(keys, "&"), ct, r.Protocol, r.Status, r.MimeType)
	if r.Failure != "" {
		s += "  FAILED: " + r.Failure
	}
	return s
}

// browserLog collects what the page did, from the DevTools events.
type browserLog struct {
	mu       sync.Mutex
	reqs     map[network.RequestID]*browserRequest
	order    []network.RequestID
	problems []string // exceptions and console errors
}

func (b *browserLog) handle(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		r := &browserRequest{Method: e.Request.Method, URL: e.Request.URL, Type: string(e.Type)}
		for k, v := range e.Request.Headers {
			if strings.EqualFold(k, "Content-Type") {
				r.ContentType = fmt.Sprint(v)
			}
		}
		if _, ok := b.reqs[e.RequestID]; !ok {
			b.order = append(b.order, e.RequestID)
		}
		b.reqs[e.RequestID] = r
	case *network.EventResponseReceived:
		if r := b.reqs[e.RequestID]; r != nil && e.Response != nil {
			r.Status = e.Response.Status
			r.MimeType, r.Protocol = e.Response.MimeType, e.Response.Protocol
		}
	case *network.EventLoadingFailed:
		if r := b.reqs[e.RequestID]; r != nil {
			r.Failure, r.Canceled = e.ErrorText, e.Canceled
			if e.CorsErrorStatus != nil {
				r.Failure += fmt.Sprintf(" (CORS: %s)", e.CorsErrorStatus.CorsError)
			}
		}
	case *runtime.EventExceptionThrown:
		if e.ExceptionDetails != nil {
			b.problems = append(b.problems, "exception: "+e.ExceptionDetails.Text)
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError {
			var parts []string
			for _, a := range e.Args {
				if a.Value != nil {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			b.problems = append(b.problems, "console.error: "+strings.Join(parts, " "))
		}
	}
}

// requests returns the requests made to the collector.
func (b *browserLog) requests(collector string) []browserRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []browserRequest
	for _, id := range b.order {
		if r := b.reqs[id]; strings.HasPrefix(r.URL, collector) {
			out = append(out, *r)
		}
	}
	return out
}

func (b *browserLog) problemList() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// browser is headless Chromium with a tab on a page site that serves
// browser/page.html and the mixpanel-browser bundle.
type browser struct {
	t         *testing.T
	ctx       context.Context
	log       *browserLog
	site      string
	collector string
}

// startBrowser starts Chromium and the page site for a collector at
// collector (a URL). extra are additional Chromium flags.
func startBrowser(t *testing.T, chromium, collector string, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	// The page comes from another origin than the collector, as on a real
	// site, so the library's requests are cross-origin.
	page := http.NewServeMux()
	page.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, filepath.Join("browser", "page.html"))
	})
	page.HandleFunc("/mixpanel.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join("node_modules", "mixpanel-browser", "dist", "mixpanel.umd.js"))
	})
	site := httptest.NewServer(page)
	t.Cleanup(site.Close)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, extra...)...)
	t.Cleanup(cancelAlloc)
	log := &browserLog{reqs: map[network.RequestID]*browserRequest{}}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(log.handle))
	t.Cleanup(cancel)
	// The first call starts the browser, which lives as long as that call's
	// context: bound the start by cancelling, not by a deadline.
	startTimer := time.AfterFunc(30*time.Second, cancel)
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	startTimer.Stop()
	b := &browser{t: t, ctx: ctx, log: log, site: site.URL, collector: collector}
	t.Cleanup(func() {
		t.Logf("requests mixpanel-browser %s made to the collector, as Chromium saw them:", browserVersion)
		for _, r := range log.requests(collector) {
			t.Logf("  %s", r)
		}
	})
	return b
}

// run runs one action within timeout, failing the test on error.
func (b *browser) run(what string, timeout time.Duration, a chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, a); err != nil {
		b.t.Fatalf("%s: %v\npage problems: %v", what, err, b.log.problemList())
	}
}

// open loads the page for one phase (see browser/page.html).
func (b *browser) open(phase string) {
	b.t.Helper()
	q := url.Values{"phase": {phase}, "token": {token}, "api_host": {b.collector}, "user": {browserUser}}
	b.run("load the "+phase+" page", 20*time.Second, chromedp.Navigate(b.site+"/?"+q.Encode()))
}

// poll waits until the JavaScript expression is true.
func (b *browser) poll(what, expr string, timeout time.Duration) {
	b.t.Helper()
	b.run(what, timeout, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout))(ctx, tg)
		return chromedp.Void{}, err
	})
}

// checkErrors fails the test if the library reported errors on this page.
func (b *browser) checkErrors(phase string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	errs, err := chromedp.Run(ctx, chromedp.Evaluate[[]string]("window.veil.errors"))
	if err != nil {
		b.t.Fatalf("read the library's errors: %v", err)
	}
	if len(errs) > 0 {
		b.t.Errorf("%s phase: the library reported errors: %v", phase, errs)
	}
}

// xhrPhase runs the first phase: the library's timer flushes events and
// the profile update over XMLHttpRequest; the queues empty once Veil has
// answered.
func (b *browser) xhrPhase() {
	b.t.Helper()
	b.open("xhr")
	b.poll("xhr phase: queues flushed", `window.veil && window.veil.done && veil.queued("ev") === 0 && veil.queued("pp") === 0`, 20*time.Second)
	b.checkErrors("xhr")
}

// TestBrowserSDK loads a page with mixpanel-browser in headless Chromium:
// batched events flushed over XMLHttpRequest, identify, a profile update,
// an emoji property, a queue flushed with navigator.sendBeacon when the
// page is hidden, and an <img> pixel. It checks what reached veil.events
// and the profile, and that the beacon and pixel paths were taken.
func TestBrowserSDK(t *testing.T) {
	requirePackages(t)
	chromium := requireChromium(t)
	s := startStack(t, stackOptions{})
	b := startBrowser(t, chromium, "http://"+s.addr)
	t.Cleanup(func() {
		t.Logf("requests the collector received:")
		for _, r := range s.tap.requests() {
			t.Logf("  %s", r)
		}
	})

	b.xhrPhase()

	// Phase 2: events stay queued until the page is hidden; then the library
	// sends them with navigator.sendBeacon.
	before := len(s.tap.requests())
	b.open("beacon")
	b.poll("beacon phase: events queued", `window.veil && window.veil.done && veil.queued("ev") === 2`, 10*time.Second)
	b.run("hide the page", 5*time.Second, chromedp.Evaluate[chromedp.Void]("window.veil.hide()"))
	waitFor := func(what string, match func(wireRequest) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			for _, r := range s.tap.requests()[before:] {
				if match(r) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s reached the collector within 10 s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("sendBeacon request (POST /track/ with Content-Type text/plain)", func(r wireRequest) bool {
		return r.Method == http.MethodPost && r.Path == "/track/" && strings.HasPrefix(r.ContentType, "text/plain")
	})
	b.checkErrors("beacon")

	// Phase 3: an event sent as an <img> pixel.
	before = len(s.tap.requests())
	b.open("img")
	waitFor("pixel request (GET /track/ with img=1)", func(r wireRequest) bool {
		return r.Method == http.MethodGet && r.Path == "/track/" && slices.Contains(r.Query, "img")
	})
	b.poll("img phase: pixel answered with an image", `(function (img) { return !!img && img.complete && img.naturalWidth > 0; })(document.querySelector("img"))`, 10*time.Second)
	b.checkErrors("img")
	log := b.log
	collector := b.collector

	t.Run("requests", func(t *testing.T) {
		types := map[string]int{}
		for _, r := range log.requests(collector) {
			types[r.Type]++
			// Beacons the page sends as it unloads may be reported as
			// cancelled by the page that is going away; the collector's side
			// is checked above.
			if r.Type == "Ping" && r.Canceled {
				continue
			}
			if r.Failure != "" || (r.Type != "Ping" && r.Status != 200) {
				t.Errorf("%s", r)
			}
			if r.Type == "Image" && !strings.HasPrefix(r.MimeType, "image/") {
				t.Errorf("%s: the pixel's answer is not an image", r)
			}
		}
		for _, typ := range []string{"XHR", "Ping", "Image"} {
			if types[typ] == 0 {
				t.Errorf("no %s request to the collector", typ)
			}
		}
		if p := log.problemList(); len(p) > 0 {
			t.Errorf("the page reported problems: %v", p)
		}
	})

	t.Run("collector metrics", func(t *testing.T) {
		want := map[string]float64{}
		for _, r := range s.tap.requests() {
			want[endpointOf(r.Path)]++
		}
		s.checkCounters(t, want, map[string]float64{})
	})

	t.Run("events", func(t *testing.T) {
		want := map[string]int{"browser batch": 3, "$identify": 1, "browser emoji": 1, "browser beacon": 2, "browser img": 1}
		rows := s.waitEvents(t, 8)
		if got := countByEvent(rows); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("rows per event:\n  got  %v\n  want %v", got, want)
		}
		for _, r := range rows {
			if r.Lib != "web" || r.LibVersion != browserVersion {
				t.Errorf("%s: lib %q %q, want web %s", r.Event, r.Lib, r.LibVersion, browserVersion)
			}
			if !utf8.ValidString(r.RawProps) || !json.Valid([]byte(r.RawProps)) {
				t.Errorf("%s: properties are not valid UTF-8 JSON", r.Event)
			}
		}
		// The emoji is stored as UTF-8, not as \u escapes, so that an
		// analyst's LIKE finds it.
		q := fmt.Sprintf("SELECT count() FROM %s.events FINAL WHERE project = '%s' AND position(properties, 'party 🎉') > 0", s.cfg.Sink.Database, project)
		if n := testsvc.Count(t, s.conn, q); n != 4 {
			t.Errorf("%d rows hold the bytes of %q in properties, want 4", n, "party 🎉")
		}
		for _, name := range []string{"browser emoji", "browser beacon", "browser img"} {
			for _, r := range byEvent(rows, name) {
				if r.Properties["label"] != "party 🎉" {
					t.Errorf("%s: label %q, want %q (properties %s)", name, r.Properties["label"], "party 🎉", r.RawProps)
				}
			}
		}
		// Before identify the visitor is an anonymous device; after it, the
		// identified user. The stored ids may be pseudonyms, so compare them
		// with each other rather than with the raw values.
		anon := byEvent(rows, "browser batch")
		var ident []eventRow
		for _, name := range []string{"$identify", "browser emoji", "browser beacon", "browser img"} {
			ident = append(ident, byEvent(rows, name)...)
		}
		for _, r := range anon[1:] {
			if r.DistinctID != anon[0].DistinctID {
				t.Errorf("browser batch: the anonymous visitor's events have different distinct_ids")
			}
		}
		for _, r := range ident[1:] {
			if r.DistinctID != ident[0].DistinctID {
				t.Errorf("%s: the identified user's events have different distinct_ids", r.Event)
			}
		}
		if anon[0].DistinctID == ident[0].DistinctID {
			t.Errorf("the events before and after identify share a distinct_id")
		}
		// The library sends the device's id with every event, and the user's
		// id with every identified one. Pseudonyms of one id are equal, so
		// the relation holds whether ids are stored raw or pseudonymised.
		if device, ok := anon[0].Properties["$device_id"].(string); ok {
			for _, r := range append(anon, ident...) {
				if r.Properties["$device_id"] != device {
					t.Errorf("%s: $device_id differs from the anonymous events'", r.Event)
				}
			}
		}
		for _, r := range ident {
			if u, ok := r.Properties["$user_id"]; ok && u != r.DistinctID {
				t.Errorf("%s: $user_id is not the event's distinct_id", r.Event)
			}
		}
		// While ids are still stored raw, check them against what the page
		// sent.
		if ident[0].DistinctID == browserUser {
			device, _ := anon[0].Properties["$device_id"].(string)
			if anon[0].DistinctID != "$device:"+device {
				t.Errorf("browser batch: distinct_id %q is not $device: + $device_id %q", anon[0].DistinctID, device)
			}
			for _, r := range ident {
				if r.Properties["$user_id"] != browserUser || r.Properties["$device_id"] != device {
					t.Errorf("%s: $user_id %v $device_id %v, want %s and the anonymous device", r.Event, r.Properties["$user_id"], r.Properties["$device_id"], browserUser)
				}
			}
		}
	})

	t.Run("profiles", func(t *testing.T) {
		checkBrowserProfile(t, s)
	})
}

// TestBrowserSDKOverHTTPS runs the first phase against a collector that
// serves HTTPS, as production collectors do: Chromium negotiates HTTP/2, and
// the cross-origin requests must still be answered and stored.
func TestBrowserSDKOverHTTPS(t *testing.T) {
	requirePackages(t)
	chromium := requireChromium(t)
	s := startStack(t, stackOptions{tls: true})
	// The certificate is throwaway; Chromium is told to accept it rather
	// than given a trust store.
	b := startBrowser(t, chromium, "https://"+s.addr, chromedp.Flag("ignore-certificate-errors", true))
	b.xhrPhase()

	reqs := b.log.requests(b.collector)
	if len(reqs) == 0 {
		t.Fatal("no request reached the collector")
	}
	for _, r := range reqs {
		if r.Failure != "" || r.Status != 200 || r.Protocol != "h2" {
			t.Errorf("%s: want 200 over h2", r)
		}
	}
	want := map[string]int{"browser batch": 3, "$identify": 1, "browser emoji": 1}
	if got := countByEvent(s.waitEvents(t, 5)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rows per event:\n  got  %v\n  want %v", got, want)
	}
}
