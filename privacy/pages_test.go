package privacy_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/internal/forwarded"
	"github.com/veilhq/veil/privacy"
)

// pagesServer is the opt-out pages on a mux, with their registry.
type pagesServer struct {
	mux *http.ServeMux
	reg *prometheus.Registry
}

func newPages(t *testing.T, trusted ...string) pagesServer {
	t.Helper()
	proxies, err := forwarded.New(trusted)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := privacy.NewPages("veil_optout", privacy.PagesDeps{Metrics: reg, Proxies: proxies})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.Routes(mux)
	return pagesServer{mux: mux, reg: reg}
}

func (s pagesServer) do(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, r)
	return rec
}

// refused returns veil_collector_optout_refused_total by reason, counting
// only the reasons that occurred.
func (s pagesServer) refused(t *testing.T) map[string]float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "veil_collector_optout_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				out[m.GetLabel()[0].GetValue()] = v
			}
		}
	}
	return out
}

// token is what a browser gets by loading the page: the token cookie's
// name and value, which the form also carries.
func (s pagesServer) token(t *testing.T, https bool) (name, value string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/optout", nil)
	if https {
		r.TLS = &tls.ConnectionState{}
	}
	rec := s.do(r)
	for _, c := range rec.Result().Cookies() {
		if strings.HasSuffix(c.Name, "_csrf") {
			if !strings.Contains(rec.Body.String(), `name="veil_csrf" value="`+c.Value+`"`) {
				t.Fatalf("the form does not carry the token cookie's value:\n%s", rec.Body.String())
			}
			return c.Name, c.Value
		}
	}
	t.Fatalf("the page set no token cookie: %v", rec.Header()["Set-Cookie"])
	return "", ""
}

// choiceCookie is the Set-Cookie of the opt-out cookie, "" for none.
func choiceCookie(rec *httptest.ResponseRecorder) string {
	for _, v := range rec.Header().Values("Set-Cookie") {
		if strings.HasPrefix(v, "veil_optout=") {
			return v
		}
	}
	return ""
}

// post is a form post to path with the browser's headers; form "" sends
// no body.
func post(path, form string, header map[string]string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form))
	if form != "" {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	return r
}

// sameOrigin is what Chromium sends with the page's own form post: the page
// sets Referrer-Policy: no-referrer, so Origin is opaque and no Referer goes.
var sameOrigin = map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "null"}

func TestPages(t *testing.T) {
	tests := []struct {
		name, method, path string
		https, cookie      bool
		wantSet            string // the opt-out cookie's Set-Cookie, "" for none
		wantBody           string
	}{
		{"page", http.MethodGet, "/optout", false, false, "", "This browser is not opted out."},
		{"page when opted out", http.MethodGet, "/optout", false, true, "", "This browser is opted out"},
		{"opt-in page never clears", http.MethodGet, "/optin", true, true, "", "This browser is opted out"},
		{"opt out over http", http.MethodPost, "/optout", false, false, "veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; SameSite=Lax", "is opted out"},
		{"opt out over https", http.MethodPost, "/optout", true, false, "veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; Secure; SameSite=None", "is opted out"},
		{"opt in clears", http.MethodPost, "/optin", true, true, "veil_optout=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=None", "not opted out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newPages(t)
			name, tok := s.token(t, tt.https)
			r := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.method == http.MethodPost {
				r = post(tt.path, "veil_csrf="+tok, sameOrigin)
			}
			r.AddCookie(&http.Cookie{Name: name, Value: tok})
			if tt.https {
				r.TLS = &tls.ConnectionState{}
			}
			if tt.cookie {
				r.AddCookie(&http.Cookie{Name: "veil_optout", Value: "1"})
			}
			rec := s.do(r)
			if rec.Code != 200 {
				t.Fatalf("status %d:\n%s", rec.Code, rec.Body.String())
			}
			if got := choiceCookie(rec); got != tt.wantSet {
				t.Fatalf("Set-Cookie %q, want %q", got, tt.wantSet)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) || !strings.Contains(rec.Body.String(), "<button") {
				t.Fatalf("body lacks %q:\n%s", tt.wantBody, rec.Body.String())
			}
			if got := s.refused(t); len(got) != 0 {
				t.Errorf("refused %v, want none", got)
			}
		})
	}
}

// TestPagesTokenCookie: the token cookie is Strict, HttpOnly, and over
// HTTPS has the __Host- prefix that no other host of the site can set.
func TestPagesTokenCookie(t *testing.T) {
	for _, https := range []bool{false, true} {
		s := newPages(t)
		r := httptest.NewRequest(http.MethodGet, "/optout", nil)
		want := "veil_optout_csrf=%s; Path=/; HttpOnly; SameSite=Strict"
		if https {
			r.TLS = &tls.ConnectionState{}
			want = "__Host-veil_optout_csrf=%s; Path=/; HttpOnly; Secure; SameSite=Strict"
		}
		rec := s.do(r)
		set := rec.Header().Values("Set-Cookie")
		if len(set) != 1 {
			t.Fatalf("https %v: Set-Cookie %q, want one token cookie", https, set)
		}
		tok := rec.Result().Cookies()[0].Value
		if len(tok) != 43 || strings.Replace(want, "%s", tok, 1) != set[0] {
			t.Errorf("https %v: Set-Cookie %q, want %q with a 43-character token", https, set[0], want)
		}
		// A browser that has a token keeps it: two tabs of the page post
		// the same one.
		r = httptest.NewRequest(http.MethodGet, "/optin", nil)
		if https {
			r.TLS = &tls.ConnectionState{}
		}
		r.AddCookie(rec.Result().Cookies()[0])
		if rec := s.do(r); len(rec.Header().Values("Set-Cookie")) != 0 || !strings.Contains(rec.Body.String(), tok) {
			t.Errorf("https %v: a second page load set %q instead of keeping the token", https, rec.Header().Values("Set-Cookie"))
		}
	}
}

// TestPagesRefuseForeignRequests: a request to change the choice that does
// not come from the page itself is refused with 403, the cookie is left as
// it is, the page says why, and the refusal is counted by reason.
func TestPagesRefuseForeignRequests(t *testing.T) {
	const own = "https://example.com" // httptest's Host, over TLS
	tests := []struct {
		name, path string
		header     map[string]string
		form       string // "" means the valid token
		cookie     string // the token cookie's name; "" means the right one
		noToken    bool   // no token cookie at all
		wantReason string // "" means allowed
	}{
		{name: "same origin by Sec-Fetch-Site", path: "/optin", header: sameOrigin},
		{name: "same origin by Origin", path: "/optin", header: map[string]string{"Origin": own}},
		{name: "same origin by Origin with the default port", path: "/optin", header: map[string]string{"Origin": "https://EXAMPLE.com:443"}},
		{name: "same origin by Referer", path: "/optout", header: map[string]string{"Referer": own + "/optout"}},
		{name: "typed by the user", path: "/optout", header: map[string]string{"Sec-Fetch-Site": "none"}},

		{name: "foreign Origin opts in", path: "/optin", header: map[string]string{"Origin": "https://shop.example"}, wantReason: privacy.RefusedCrossSite},
		{name: "foreign Origin opts out", path: "/optout", header: map[string]string{"Origin": "https://shop.example"}, wantReason: privacy.RefusedCrossSite},
		{name: "Sec-Fetch-Site cross-site", path: "/optin", header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": own}, wantReason: privacy.RefusedCrossSite},
		{name: "Sec-Fetch-Site same-site", path: "/optin", header: map[string]string{"Sec-Fetch-Site": "same-site"}, wantReason: privacy.RefusedCrossSite},
		{name: "subdomain Origin", path: "/optin", header: map[string]string{"Origin": "https://blog.example.com"}, wantReason: privacy.RefusedCrossSite},
		{name: "other port", path: "/optin", header: map[string]string{"Origin": own + ":8443"}, wantReason: privacy.RefusedCrossSite},
		{name: "other scheme", path: "/optin", header: map[string]string{"Origin": "http://example.com"}, wantReason: privacy.RefusedCrossSite},
		{name: "foreign Referer without Origin", path: "/optin", header: map[string]string{"Referer": "https://shop.example/cart"}, wantReason: privacy.RefusedCrossSite},
		{name: "opaque Origin with a foreign Referer", path: "/optin", header: map[string]string{"Origin": "null", "Referer": "https://shop.example/"}, wantReason: privacy.RefusedCrossSite},
		{name: "opaque Origin alone (sandboxed frame)", path: "/optin", header: map[string]string{"Origin": "null"}, wantReason: privacy.RefusedNoOrigin},
		{name: "no origin at all", path: "/optin", header: nil, wantReason: privacy.RefusedNoOrigin},

		{name: "missing token", path: "/optin", header: sameOrigin, form: "x=1", wantReason: privacy.RefusedToken},
		{name: "wrong token", path: "/optin", header: sameOrigin, form: "veil_csrf=" + strings.Repeat("A", 43), wantReason: privacy.RefusedToken},
		{name: "no token cookie", path: "/optin", header: sameOrigin, noToken: true, wantReason: privacy.RefusedToken},
		{name: "token cookie without the __Host- prefix", path: "/optin", header: sameOrigin, cookie: "veil_optout_csrf", wantReason: privacy.RefusedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newPages(t)
			name, tok := s.token(t, true)
			form := tt.form
			if form == "" {
				form = "veil_csrf=" + tok
			}
			r := post(tt.path, form, tt.header)
			r.TLS = &tls.ConnectionState{}
			if tt.cookie != "" {
				name = tt.cookie
			}
			if !tt.noToken {
				r.AddCookie(&http.Cookie{Name: name, Value: tok})
			}
			r.AddCookie(&http.Cookie{Name: "veil_optout", Value: "1"})
			rec := s.do(r)
			if tt.wantReason == "" {
				if rec.Code != 200 || choiceCookie(rec) == "" {
					t.Fatalf("status %d, Set-Cookie %q: want 200 and the choice changed\n%s", rec.Code, choiceCookie(rec), rec.Body.String())
				}
				return
			}
			if rec.Code != http.StatusForbidden {
				t.Fatalf("status %d, want 403", rec.Code)
			}
			if got := choiceCookie(rec); got != "" {
				t.Errorf("the opt-out cookie was changed: %q", got)
			}
			if !strings.Contains(rec.Body.String(), "Your choice was not changed") || !strings.Contains(rec.Body.String(), "This browser is opted out") {
				t.Errorf("the page does not say the choice was kept:\n%s", rec.Body.String())
			}
			if got := s.refused(t); len(got) != 1 || got[tt.wantReason] != 1 {
				t.Errorf("refused %v, want %s: 1", got, tt.wantReason)
			}
		})
	}
}

// TestPagesQueryToken: the token counts only in the form's body, never in
// the URL, where another page could have put it into a link.
func TestPagesQueryToken(t *testing.T) {
	s := newPages(t)
	name, tok := s.token(t, false)
	r := post("/optin?veil_csrf="+url.QueryEscape(tok), "", map[string]string{"Origin": "http://example.com"})
	r.AddCookie(&http.Cookie{Name: name, Value: tok})
	r.AddCookie(&http.Cookie{Name: "veil_optout", Value: "1"})
	if rec := s.do(r); rec.Code != http.StatusForbidden || choiceCookie(rec) != "" {
		t.Fatalf("status %d, Set-Cookie %q: want 403 and no change", rec.Code, choiceCookie(rec))
	}
}

// TestPagesHeaders: every answer of the pages, whatever the method and the
// outcome, forbids framing, caching, sniffing and referrers, and its
// Content-Security-Policy allows the inline style by its hash and nothing
// else.
func TestPagesHeaders(t *testing.T) {
	s := newPages(t)
	name, tok := s.token(t, false)
	withToken := func(r *http.Request) *http.Request {
		r.AddCookie(&http.Cookie{Name: name, Value: tok})
		return r
	}
	requests := map[string]*http.Request{
		"GET /optout":          httptest.NewRequest(http.MethodGet, "/optout", nil),
		"GET /optin":           httptest.NewRequest(http.MethodGet, "/optin", nil),
		"HEAD /optout":         httptest.NewRequest(http.MethodHead, "/optout", nil),
		"POST /optout":         withToken(post("/optout", "veil_csrf="+tok, sameOrigin)),
		"POST /optin":          withToken(post("/optin", "veil_csrf="+tok, sameOrigin)),
		"POST /optin refused":  post("/optin", "", map[string]string{"Origin": "https://shop.example"}),
		"PUT /optout":          httptest.NewRequest(http.MethodPut, "/optout", nil),
		"DELETE /optin":        httptest.NewRequest(http.MethodDelete, "/optin", nil),
		"OPTIONS /optout":      httptest.NewRequest(http.MethodOptions, "/optout", nil),
		"POST /optout no form": post("/optout", "", sameOrigin),
	}
	want := map[string]string{
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "no-referrer",
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-store",
	}
	for name, r := range requests {
		t.Run(name, func(t *testing.T) {
			rec := s.do(r)
			for k, v := range want {
				if got := rec.Header().Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			csp := rec.Header().Get("Content-Security-Policy")
			for _, d := range []string{"default-src 'none'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"} {
				if !strings.Contains(csp, d) {
					t.Errorf("Content-Security-Policy %q lacks %q", csp, d)
				}
			}
			if strings.Contains(csp, "unsafe-inline") {
				t.Errorf("Content-Security-Policy %q allows inline code", csp)
			}
			body := rec.Body.String()
			if strings.Contains(body, "<script") || strings.Contains(body, " style=") {
				t.Errorf("the page has script or a style attribute the policy would block:\n%s", body)
			}
			if i, j := strings.Index(body, "<style>"), strings.Index(body, "</style>"); i >= 0 && j > i {
				sum := sha256.Sum256([]byte(body[i+len("<style>") : j]))
				if h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, "style-src "+h) {
					t.Errorf("Content-Security-Policy %q does not allow the page's style (%s)", csp, h)
				}
			}
		})
	}
}

// TestPagesForwardedProto: only a trusted proxy may say the client used
// HTTPS (which makes the opt-out cookie Secure and SameSite=None) or which
// host it asked for (which the origin check compares with).
func TestPagesForwardedProto(t *testing.T) {
	tests := []struct {
		name, remote string
		header       map[string]string
		wantSet      string
	}{
		{"untrusted peer claims https", "198.51.100.7:5000",
			map[string]string{"X-Forwarded-Proto": "https", "Origin": "http://example.com"},
			"veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; SameSite=Lax"},
		{"trusted proxy says https", "10.1.2.3:5000",
			map[string]string{"X-Forwarded-Proto": "https", "Origin": "https://example.com"},
			"veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; Secure; SameSite=None"},
		{"trusted proxy names the host", "10.1.2.3:5000",
			map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "veil.example.org", "Origin": "https://veil.example.org"},
			"veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; Secure; SameSite=None"},
		{"untrusted peer names the host", "198.51.100.7:5000",
			map[string]string{"X-Forwarded-Host": "veil.example.org", "Origin": "http://veil.example.org"},
			""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newPages(t, "10.0.0.0/8")
			// Load the page as the browser would, through the same peer.
			g := httptest.NewRequest(http.MethodGet, "/optout", nil)
			g.RemoteAddr = tt.remote
			for k, v := range tt.header {
				g.Header.Set(k, v)
			}
			ck := s.do(g).Result().Cookies()
			if len(ck) != 1 {
				t.Fatalf("page set %d cookies", len(ck))
			}
			r := post("/optout", "veil_csrf="+ck[0].Value, tt.header)
			r.RemoteAddr = tt.remote
			r.AddCookie(ck[0])
			rec := s.do(r)
			if got := choiceCookie(rec); got != tt.wantSet {
				t.Fatalf("status %d, Set-Cookie %q, want %q", rec.Code, got, tt.wantSet)
			}
		})
	}
}
