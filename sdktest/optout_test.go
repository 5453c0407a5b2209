package sdktest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// sentHeaders records, per request to the collector's opt-out pages and
// ingestion endpoints, the headers and cookies Chromium put on the wire.
type sentHeaders struct {
	mu      sync.Mutex
	url     map[network.RequestID]string
	method  map[network.RequestID]string
	headers map[network.RequestID]network.Headers
	cookies map[network.RequestID][]string // names of the cookies sent
	order   []network.RequestID
}

func newSentHeaders() *sentHeaders {
	return &sentHeaders{url: map[network.RequestID]string{}, method: map[network.RequestID]string{},
		headers: map[network.RequestID]network.Headers{}, cookies: map[network.RequestID][]string{}}
}

func (s *sentHeaders) handle(ev any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		if _, ok := s.url[e.RequestID]; !ok {
			s.order = append(s.order, e.RequestID)
		}
		s.url[e.RequestID], s.method[e.RequestID] = e.Request.URL, e.Request.Method
	case *network.EventRequestWillBeSentExtraInfo:
		s.headers[e.RequestID] = e.Headers
		var names []string
		for _, c := range e.AssociatedCookies {
			if c.Cookie == nil {
				continue
			}
			if len(c.BlockedReasons) == 0 {
				names = append(names, c.Cookie.Name)
			} else {
				names = append(names, fmt.Sprintf("%s(blocked: %v)", c.Cookie.Name, c.BlockedReasons))
			}
		}
		s.cookies[e.RequestID] = names
	}
}

// sentRequest is one request as Chromium sent it.
type sentRequest struct {
	Method, URL string
	Header      map[string]string // lower-case names
	Cookies     []string
}

// requests returns the requests whose URL starts with prefix.
func (s *sentHeaders) requests(prefix string) []sentRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sentRequest
	for _, id := range s.order {
		if !strings.HasPrefix(s.url[id], prefix) {
			continue
		}
		r := sentRequest{Method: s.method[id], URL: s.url[id], Header: map[string]string{}, Cookies: s.cookies[id]}
		for k, v := range s.headers[id] {
			r.Header[strings.ToLower(k)] = fmt.Sprint(v)
		}
		out = append(out, r)
	}
	return out
}

// TestBrowserOptOut is the opt-out as a visitor lives it, in headless
// Chromium against a collector serving HTTPS, with the shop's page on
// another site:
//
//   - the visitor opts out by pressing the button on the collector's
//     /optout page; Chromium posts the form from the page's own origin;
//   - the shop's page then tries to opt the visitor back in, with a
//     background fetch and with a form it submits itself: both are refused
//     and the cookie stays;
//   - mixpanel-browser on the shop's page sends events cross-site; the
//     opt-out cookie travels with them (SameSite=None; Secure) and the
//     workers drop them;
//   - the visitor opts back in on /optin, and the next events are stored.
func TestBrowserOptOut(t *testing.T) {
	requirePackages(t)
	chromium := requireChromium(t)
	s := startStack(t, stackOptions{tls: true})
	collector := "https://" + s.addr
	// Chromium's default for most people lets third-party cookies travel;
	// this build restricts them by the profile's preference, which a fresh
	// profile is given here. The opt-out cookie then reaches the collector
	// with the shop's requests. Browsers that block or partition
	// third-party cookies never send it cross-site, whatever its
	// attributes; docs/privacy.md says what covers them.
	profile := t.TempDir()
	if err := os.MkdirAll(filepath.Join(profile, "Default"), 0o700); err != nil {
		t.Fatal(err)
	}
	prefs := `{"profile":{"cookie_controls_mode":0,"block_third_party_cookies":false}}`
	if err := os.WriteFile(filepath.Join(profile, "Default", "Preferences"), []byte(prefs), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBrowser(t, chromium, collector, chromedp.Flag("ignore-certificate-errors", true), chromedp.UserDataDir(profile))
	// The shop's page is on another site than the collector: localhost,
	// where the collector is 127.0.0.1.
	b.site = strings.Replace(b.site, "127.0.0.1", "localhost", 1)
	sent := newSentHeaders()
	if err := chromedp.Listen(b.ctx, sent.handle); err != nil {
		t.Fatal(err)
	}

	// status waits until the page shows want. It asks again after each
	// navigation, which ends a poll running in the page it left.
	status := func(what, want string) {
		t.Helper()
		expr := fmt.Sprintf(`document.readyState === "complete" && document.body !== null && document.body.innerText.includes(%q)`, want)
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
			cancel()
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the page does not show %q (last error: %v)", what, want, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	press := func(page, wantStatus string) {
		t.Helper()
		b.run("load "+page, 10*time.Second, chromedp.Navigate(collector+page))
		status(page+" loaded", "This browser is")
		b.run("press the button on "+page, 10*time.Second, chromedp.Click(chromedp.CSS("button")))
		status(page+": the choice is made", wantStatus)
	}

	press("/optout", "This browser is opted out")
	posts := 0
	for _, r := range sent.requests(collector + "/optout") {
		if r.Method != "POST" {
			continue
		}
		posts++
		// The page sets Referrer-Policy: no-referrer, so its own form post
		// carries an opaque Origin and no Referer; Sec-Fetch-Site vouches
		// for it.
		t.Logf("the page's own form post: Origin %q, Sec-Fetch-Site %q, Referer %q", r.Header["origin"], r.Header["sec-fetch-site"], r.Header["referer"])
		if r.Header["sec-fetch-site"] != "same-origin" {
			t.Errorf("the page's own form post: Sec-Fetch-Site %q, want same-origin", r.Header["sec-fetch-site"])
		}
	}
	if posts != 1 {
		t.Fatalf("%d form posts to /optout, want 1", posts)
	}

	// The shop's page tries to opt the visitor back in: a fetch in the
	// background, then a form it submits itself (a top-level navigation,
	// which carries SameSite=Lax and None cookies).
	// Any document of the shop's origin will do: its 404 page.
	b.run("load the shop's page", 10*time.Second, chromedp.Navigate(b.site+"/elsewhere"))
	b.run("background opt-in", 10*time.Second, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`fetch(%q, {method: "POST", mode: "no-cors", credentials: "include", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "veil_csrf=x"}).then(() => true, () => true)`,
		collector+"/optin"), chromedp.EvalAwaitPromise))
	b.run("form opt-in", 10*time.Second, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`(function () { var f = document.createElement("form"); f.method = "POST"; f.action = %q; document.body.appendChild(f); f.submit(); })()`,
		collector+"/optin")))
	status("the refusal is shown", "Your choice was not changed")
	refused := s.counters(t, "veil_collector_optout_refused_total", "reason")
	if fmt.Sprint(refused) != fmt.Sprint(map[string]float64{"cross_site": 2}) {
		t.Errorf("veil_collector_optout_refused_total by reason: %v, want cross_site: 2", refused)
	}
	b.run("reload /optout", 10*time.Second, chromedp.Navigate(collector+"/optout"))
	status("still opted out", "This browser is opted out")

	// mixpanel-browser on the shop's page: its cross-site requests carry
	// the opt-out cookie, and the workers drop their events.
	b.xhrPhase()
	ingest := 0
	for _, r := range sent.requests(collector + "/") {
		u, _ := url.Parse(r.URL)
		if u == nil || strings.HasPrefix(u.Path, "/opt") {
			continue
		}
		ingest++
		if !contains(r.Cookies, "veil_optout") {
			t.Errorf("%s %s from the shop's page did not carry the opt-out cookie (cookies sent: %v)", r.Method, u.Path, r.Cookies)
		}
	}
	if ingest == 0 {
		t.Fatal("the shop's page sent nothing to the collector")
	}

	// Opting back in on the collector's own page works, and the next
	// events are stored; the opted-out ones never are.
	press("/optin", "This browser is not opted out")
	b.xhrPhase()
	rows := s.waitEvents(t, 3)
	if got := countByEvent(rows); got["browser batch"] != 3 || got["browser emoji"] != 1 {
		t.Errorf("rows per event %v: want the second visit's 3 batch events and 1 emoji event, and none of the opted-out visit's", got)
	}
	if p := b.log.problemList(); len(p) > 0 {
		// The refused form post is shown as the page says, not as an error.
		t.Logf("page problems: %v", p)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
