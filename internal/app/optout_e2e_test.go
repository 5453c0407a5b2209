package app_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/internal/app"
)

// pageAnswer is what a browser would see of an answer of the opt-out pages.
type pageAnswer struct {
	status int
	header http.Header
	body   string
}

// optOutCookie is the opt-out cookie's Set-Cookie in a, "" for none.
func (a pageAnswer) optOutCookie() string {
	for _, v := range a.header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "veil_optout=") {
			return v
		}
	}
	return ""
}

func pageCall(t *testing.T, method, u, form string, header map[string]string, cookies ...*http.Cookie) pageAnswer {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	if form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return pageAnswer{resp.StatusCode, resp.Header, string(b)}
}

// pageToken loads the opt-out page and returns its token cookie.
func pageToken(t *testing.T, collector string, header map[string]string) *http.Cookie {
	t.Helper()
	a := pageCall(t, http.MethodGet, collector+"/optout", "", header)
	resp := http.Response{Header: a.header}
	for _, c := range resp.Cookies() {
		if strings.HasSuffix(c.Name, "_csrf") {
			return c
		}
	}
	t.Errorf("the page set no token cookie: %q", a.header.Values("Set-Cookie"))
	return &http.Cookie{Name: "veil_optout_csrf", Value: "none"}
}

func refusedCount(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "veil_collector_optout_refused_total" {
			for _, m := range mf.Metric {
				if v := m.GetCounter().GetValue(); v != 0 {
					out[m.Label[0].GetValue()] = v
				}
			}
		}
	}
	return out
}

// TestOptOutPages drives /optout and /optin on a collector as `veil
// collector` runs it: another site cannot change the choice, the page
// itself can, every answer forbids framing, and only a trusted proxy may
// say the client used HTTPS.
func TestOptOutPages(t *testing.T) {
	s := newStack(t, nil)
	reg := s.startCollector()
	optedOut := &http.Cookie{Name: "veil_optout", Value: "1"}
	tok := pageToken(t, s.collector, nil)

	t.Run("another site cannot opt the browser back in", func(t *testing.T) {
		for _, h := range []map[string]string{
			{"Origin": "https://shop.example"},
			{"Origin": "https://shop.example", "Sec-Fetch-Site": "cross-site"},
			{"Sec-Fetch-Site": "cross-site"},
		} {
			// Even with the browser's token cookie and the token itself.
			a := pageCall(t, http.MethodPost, s.collector+"/optin", "veil_csrf="+url.QueryEscape(tok.Value), h, optedOut, tok)
			if a.status != http.StatusForbidden || a.optOutCookie() != "" {
				t.Errorf("%v: %d, Set-Cookie %q: want 403 and the cookie left alone", h, a.status, a.optOutCookie())
			}
		}
		a := pageCall(t, http.MethodPost, s.collector+"/optout", "veil_csrf="+url.QueryEscape(tok.Value), map[string]string{"Origin": "https://shop.example"}, tok)
		if a.status != http.StatusForbidden || a.optOutCookie() != "" {
			t.Errorf("cross-site opt-out: %d, Set-Cookie %q: want 403", a.status, a.optOutCookie())
		}
		if got := refusedCount(t, reg); len(got) != 1 || got["cross_site"] != 4 {
			t.Errorf("veil_collector_optout_refused_total %v, want cross_site: 4", got)
		}
	})

	t.Run("the page itself can", func(t *testing.T) {
		same := map[string]string{"Origin": s.collector}
		if a := pageCall(t, http.MethodPost, s.collector+"/optout", "", same, tok); a.status != http.StatusForbidden || a.optOutCookie() != "" {
			t.Errorf("without the form's token: %d, Set-Cookie %q: want 403", a.status, a.optOutCookie())
		}
		a := pageCall(t, http.MethodPost, s.collector+"/optout", "veil_csrf="+url.QueryEscape(tok.Value), same, tok)
		if want := "veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; SameSite=Lax"; a.status != 200 || a.optOutCookie() != want {
			t.Errorf("opt out: %d, Set-Cookie %q, want 200 and %q", a.status, a.optOutCookie(), want)
		}
		a = pageCall(t, http.MethodPost, s.collector+"/optin", "veil_csrf="+url.QueryEscape(tok.Value), same, tok, optedOut)
		if a.status != 200 || !strings.HasPrefix(a.optOutCookie(), "veil_optout=; Path=/; Max-Age=0") {
			t.Errorf("opt in: %d, Set-Cookie %q", a.status, a.optOutCookie())
		}
		if a := pageCall(t, http.MethodGet, s.collector+"/optin", "", nil, optedOut, tok); a.status != 200 || a.optOutCookie() != "" {
			t.Errorf("GET /optin: %d, Set-Cookie %q: a GET must not change the choice", a.status, a.optOutCookie())
		}
	})

	t.Run("no answer can be framed", func(t *testing.T) {
		for _, a := range []pageAnswer{
			pageCall(t, http.MethodGet, s.collector+"/optout", "", nil),
			pageCall(t, http.MethodGet, s.collector+"/optin", "", nil),
			pageCall(t, http.MethodPost, s.collector+"/optin", "", map[string]string{"Origin": "https://shop.example"}),
			pageCall(t, http.MethodPut, s.collector+"/optout", "", nil),
		} {
			if a.header.Get("X-Frame-Options") != "DENY" || !strings.Contains(a.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
				a.header.Get("Referrer-Policy") != "no-referrer" || a.header.Get("X-Content-Type-Options") != "nosniff" || a.header.Get("Cache-Control") != "no-store" {
				t.Errorf("answer %d lacks the page's protections: %v", a.status, a.header)
			}
		}
	})

	t.Run("X-Forwarded-Proto only from a trusted proxy", func(t *testing.T) {
		// The collector above trusts no proxy: a client's claim of HTTPS
		// is ignored.
		xfp := map[string]string{"X-Forwarded-Proto": "https", "Origin": s.collector}
		a := pageCall(t, http.MethodPost, s.collector+"/optout", "veil_csrf="+url.QueryEscape(tok.Value), xfp, tok)
		if want := "veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; SameSite=Lax"; a.optOutCookie() != want {
			t.Errorf("untrusted peer: %d, Set-Cookie %q, want %q", a.status, a.optOutCookie(), want)
		}
		// A collector behind a proxy on loopback believes it.
		cfg := s.cfg
		cfg.Collector.TrustedProxies = []string{"127.0.0.1/32"}
		l := listen(t)
		behind := "http://" + l.Addr().String()
		s.run("collector-behind-proxy", func(ctx context.Context, deps app.Deps) error { return app.RunCollector(ctx, cfg, deps, l) })
		proxied := map[string]string{"X-Forwarded-Proto": "https", "Origin": "https://" + l.Addr().String()}
		ptok := pageToken(t, behind, proxied)
		a = pageCall(t, http.MethodPost, behind+"/optout", "veil_csrf="+url.QueryEscape(ptok.Value), proxied, ptok)
		if want := "veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; Secure; SameSite=None"; a.optOutCookie() != want {
			t.Errorf("trusted proxy: %d, Set-Cookie %q, want %q", a.status, a.optOutCookie(), want)
		}
	})
}
