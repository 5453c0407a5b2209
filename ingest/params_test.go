package ingest

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestParamIP(t *testing.T) {
	tests := []struct {
		query string
		noGeo bool
	}{
		{"ip=0", true},
		{"ip=1", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			do(t, c, post("/track?"+tt.query, "application/x-www-form-urlencoded", formB64(evA)))
			envs := envelopes(t, p)
			if len(envs) != 1 || envs[0].Signals.NoGeo != tt.noGeo || envs[0].IP != "198.51.100.20" {
				t.Fatalf("envelopes %+v, want NoGeo=%v and the client address kept", envs, tt.noGeo)
			}
		})
	}
	t.Run("ip in a form body (Python library)", func(t *testing.T) {
		c, p, _ := newTestCollector(t, nil)
		do(t, c, post("/track", "application/x-www-form-urlencoded", []byte("data="+url.QueryEscape(evA)+"&ip=0")))
		if envs := envelopes(t, p); len(envs) != 1 || !envs[0].Signals.NoGeo {
			t.Fatalf("envelopes %+v", envs)
		}
	})
}

// TestParamImg: img=1 answers a 1×1 transparent GIF whatever happened.
func TestParamImg(t *testing.T) {
	tests := []struct {
		name   string
		req    *http.Request
		status int
	}{
		{"accepted", get("/track?img=1", b64(evA)), 200},
		{"rejected event", get("/track?img=1", b64(`{"event":"e","properties":{"token":"nope"}}`)), 200},
		{"malformed", get("/track?img=1&verbose=1", "%%%"), 200},
		{"too many events", get("/track?img=1", b64("["+strings.Repeat(evA+",", 2000)+evA+"]")), 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, _ := newTestCollector(t, nil)
			resp := do(t, c, tt.req)
			if resp.status != tt.status || resp.header.Get("Content-Type") != "image/gif" || !bytes.Equal([]byte(resp.body), transparentGIF) {
				t.Fatalf("got %d %s %q", resp.status, resp.header.Get("Content-Type"), resp.body)
			}
		})
	}
	// The GIF itself: GIF89a, 1×1.
	if g := transparentGIF; string(g[:6]) != "GIF89a" || g[6] != 1 || g[8] != 1 {
		t.Fatalf("not a 1x1 GIF: %x", g)
	}
}

func TestParamCallback(t *testing.T) {
	tests := []struct {
		name, query string
		status      int
		body        string
		ctype       string
	}{
		{"plain", "callback=mp.callbacks.cb_1", 200, "mp.callbacks.cb_1(1)", "text/javascript; charset=utf-8"},
		{"verbose", "callback=jQuery123_456&verbose=1", 200, `jQuery123_456({"status":1,"error":null})`, "text/javascript; charset=utf-8"},
		{"mixpanel-browser's own", "callback=" + url.QueryEscape("mixpanel._jsc[84213]"), 200, "mixpanel._jsc[84213](1)", "text/javascript; charset=utf-8"},
		{"mixpanel-browser's no-op", "verbose=1&callback=" + url.QueryEscape("(function(){})"), 200, `(function(){})({"status":1,"error":null})`, "text/javascript; charset=utf-8"},
		{"dollar sign", "callback=$cb", 200, "$cb(1)", "text/javascript; charset=utf-8"},
		{"script injection", "callback=" + url.QueryEscape("alert(document.cookie);cb"), 400, `{"status":0,"error":"callback must be a JavaScript identifier path such as mp.callbacks.cb_1"}`, "application/json"},
		{"markup", "callback=" + url.QueryEscape("<script>"), 400, `{"status":0,"error":"callback must be a JavaScript identifier path such as mp.callbacks.cb_1"}`, "application/json"},
		{"leading digit", "callback=1cb", 400, `{"status":0,"error":"callback must be a JavaScript identifier path such as mp.callbacks.cb_1"}`, "application/json"},
		{"empty segment", "callback=a..b", 400, `{"status":0,"error":"callback must be a JavaScript identifier path such as mp.callbacks.cb_1"}`, "application/json"},
		{"non-numeric index", "callback=" + url.QueryEscape("a[b]"), 400, `{"status":0,"error":"callback must be a JavaScript identifier path such as mp.callbacks.cb_1"}`, "application/json"},
		{"too long", "callback=" + strings.Repeat("a", 129), 400, `{"status":0,"error":"callback must be a JavaScript identifier path such as mp.callbacks.cb_1"}`, "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, nil)
			resp := do(t, c, get("/track?"+tt.query, b64(evA)))
			if resp.status != tt.status || resp.body != tt.body || resp.header.Get("Content-Type") != tt.ctype {
				t.Fatalf("got %d %q %q, want %d %q %q", resp.status, resp.body, resp.header.Get("Content-Type"), tt.status, tt.body, tt.ctype)
			}
			if resp.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("no X-Content-Type-Options: nosniff")
			}
			wantEvents, wantRejected := 1, 0.0
			if tt.status == 400 {
				wantEvents, wantRejected = 0, 1
			}
			if n := len(envelopes(t, p)); n != wantEvents {
				t.Fatalf("produced %d, want %d", n, wantEvents)
			}
			if n := counter(t, reg, "veil_collector_events_rejected_total", reasonInvalidParameter); n != wantRejected {
				t.Fatalf("invalid_parameter counted %v, want %v", n, wantRejected)
			}
		})
	}
	t.Run("a failed request still calls back, with 0", func(t *testing.T) {
		c, _, _ := newTestCollector(t, nil)
		resp := do(t, c, get("/track?callback=cb&verbose=1", "%%%"))
		if resp.status != 200 || resp.body != `cb({"status":0,"error":"data is neither JSON nor valid base64"})` {
			t.Fatalf("got %d %q", resp.status, resp.body)
		}
	})
	t.Run("a callback in a form body cannot make a script", func(t *testing.T) {
		c, _, _ := newTestCollector(t, nil)
		resp := do(t, c, post("/track", "application/x-www-form-urlencoded", append(formB64(evA), "&callback=alert(1)"...)))
		if resp.status != 200 || resp.body != "1" || resp.header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("got %d %q %s", resp.status, resp.body, resp.header.Get("Content-Type"))
		}
	})
}

func TestParamVerbose(t *testing.T) {
	tests := []struct {
		name, query, data string
		body              string
	}{
		{"accepted", "verbose=1", evA, `{"status":1,"error":null}`},
		{"all rejected", "verbose=1", `{"event":"e","properties":{"token":"nope"}}`, `{"status":0,"error":"event 0: properties.token: unknown project token"}`},
		{"not verbose, accepted", "verbose=0", evA, "1"},
		{"not verbose, all rejected", "", `{"event":"e","properties":{"token":"nope"}}`, "0"},
		{"not verbose, some rejected", "", `[` + evA + `,{"event":"e","properties":{"token":"nope"}}]`, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, _ := newTestCollector(t, nil)
			resp := do(t, c, get("/track?"+tt.query, b64(tt.data)))
			if resp.status != 200 || resp.body != tt.body {
				t.Fatalf("got %d %q, want %q", resp.status, resp.body, tt.body)
			}
		})
	}
}

// TestParamsIgnored: test=1 and the cache-buster _ change nothing, and
// api_key (the Node library's legacy parameter) is not a credential.
func TestParamsIgnored(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	resp := do(t, c, get("/track?test=1&_=1732270000000&api_key=whatever", b64(evA)))
	if resp.status != 200 || resp.body != "1" || len(envelopes(t, p)) != 1 {
		t.Fatalf("got %d %q", resp.status, resp.body)
	}
}

// TestParamStrictOnTrack: strict=1 answers in /import's shape on any endpoint.
func TestParamStrictOnTrack(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	resp := do(t, c, get("/track?strict=1", b64(`[`+evA+`,{"event":"e","properties":{"token":"tok-shop","$insert_id":"bad id"}}]`)))
	want := `{"code":400,"error":"some data points in the request failed validation","failed_records":[{"index":1,"insert_id":"","field":"properties.$insert_id","message":"$insert_id must be 1 to 36 characters of A-Z, a-z, 0-9 and -"}],"num_records_imported":1,"status":"Bad Request"}`
	if resp.status != 400 || resp.body != want {
		t.Fatalf("got %d %q\nwant %q", resp.status, resp.body, want)
	}
	if n := len(envelopes(t, p)); n != 1 {
		t.Fatalf("produced %d, want the valid 1", n)
	}
}

// TestParamRedirect: redirect=URL answers 302 to it whatever became of the
// event, for links in e-mails and notifications; only to an http or https
// URL, and only to the hosts collector.redirect_hosts allows when it lists
// any.
func TestParamRedirect(t *testing.T) {
	const dest = "https://shop.example.com/sale?id=3&utm_source=mail"
	rejected := `{"event":"e","properties":{"token":"nope"}}`
	tests := []struct {
		name     string
		hosts    []string
		redirect string
		data     string
		kafka    error
		status   int
		body     string
		produced int
	}{
		{"accepted", nil, dest, evA, nil, 302, "", 1},
		{"rejected event", nil, dest, rejected, nil, 302, "", 0},
		{"malformed data", nil, dest, "%%%", nil, 302, "", 0},
		{"Kafka down", nil, dest, evA, errors.New("kafka: leader not available"), 302, "", 0},
		{"plain http", nil, "http://shop.example.com/", evA, nil, 302, "", 1},
		{"allowed host", []string{"shop.example.com"}, dest, evA, nil, 302, "", 1},
		{"allowed host, other case", []string{"Shop.Example.com"}, "https://SHOP.example.com/", evA, nil, 302, "", 1},
		{"allowed subdomain", []string{"*.example.org"}, "https://mail.news.example.org/a", evA, nil, 302, "", 1},
		{"javascript URL", nil, "javascript:alert(1)", evA, nil, 400, badRedirect, 0},
		{"scheme-relative", nil, "//evil.example/", evA, nil, 400, badRedirect, 0},
		{"user info hiding the host", nil, "https://shop.example.com@evil.example/", evA, nil, 400, badRedirect, 0},
		{"ftp", nil, "ftp://shop.example.com/", evA, nil, 400, badRedirect, 0},
		{"no host", nil, "https:///path", evA, nil, 400, badRedirect, 0},
		{"too long", nil, "https://shop.example.com/" + strings.Repeat("a", 2048), evA, nil, 400, badRedirect, 0},
		{"host not allowed", []string{"shop.example.com"}, "https://evil.example/", evA, nil, 400, badRedirect, 0},
		{"suffix is not a subdomain", []string{"*.example.org"}, "https://badexample.org/", evA, nil, 400, badRedirect, 0},
		{"the domain itself is not a subdomain", []string{"*.example.org"}, "https://example.org/", evA, nil, 400, badRedirect, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, func(c *Config) { c.RedirectHosts = tt.hosts })
			p.Fail(tt.kafka)
			r := httptest.NewRequest(http.MethodGet, "/track?img=1&callback=cb&redirect="+url.QueryEscape(tt.redirect)+"&data="+url.QueryEscape(b64(tt.data)), nil)
			if tt.data == "%%%" {
				r = httptest.NewRequest(http.MethodGet, "/track?redirect="+url.QueryEscape(tt.redirect)+"&data=%25%25%25", nil)
			}
			resp := do(t, c, r)
			if resp.status != tt.status || resp.body != tt.body {
				t.Fatalf("got %d %q, want %d %q", resp.status, resp.body, tt.status, tt.body)
			}
			wantLocation := ""
			if tt.status == 302 {
				wantLocation = tt.redirect
			}
			if loc := resp.header.Get("Location"); loc != wantLocation {
				t.Fatalf("Location %q, want %q", loc, wantLocation)
			}
			if n := p.Len(); n != tt.produced {
				t.Fatalf("produced %d, want %d", n, tt.produced)
			}
			wantRefused := 0.0
			if tt.status == 400 {
				wantRefused = 1
			}
			if n := counter(t, reg, "veil_collector_events_rejected_total", reasonInvalidParameter); n != wantRefused {
				t.Fatalf("invalid_parameter counted %v, want %v", n, wantRefused)
			}
		})
	}
}

const badRedirect = `{"status":0,"error":"redirect must be an http or https URL to a host collector.redirect_hosts allows"}`
