package ingest

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

func TestCORS(t *testing.T) {
	for _, path := range []string{"/track/", "/engage/", "/groups/", "/import"} {
		t.Run("request "+path, func(t *testing.T) {
			c, _, _ := newTestCollector(t, nil)
			r := post(path+"?verbose=1", "application/x-www-form-urlencoded", formB64(evA))
			r.Header.Set("Origin", "https://shop.example")
			resp := do(t, c, r)
			h := resp.header
			if h.Get("Access-Control-Allow-Origin") != "https://shop.example" || h.Get("Access-Control-Allow-Credentials") != "true" {
				t.Fatalf("CORS headers %v", h)
			}
			if !slices.Contains(h.Values("Vary"), "Origin") {
				t.Fatalf("Vary %q lacks Origin", h.Values("Vary"))
			}
		})
	}
	t.Run("errors carry CORS headers too", func(t *testing.T) {
		c, _, _ := newTestCollector(t, nil)
		r := post("/import", "application/json", []byte("[]"))
		r.Header.Set("Origin", "https://shop.example")
		resp := do(t, c, r)
		if resp.status != 401 || resp.header.Get("Access-Control-Allow-Origin") != "https://shop.example" {
			t.Fatalf("got %d %v", resp.status, resp.header)
		}
	})
	t.Run("no origin, no CORS", func(t *testing.T) {
		c, _, _ := newTestCollector(t, nil)
		resp := do(t, c, get("/track", b64(evA)))
		if resp.header.Get("Access-Control-Allow-Origin") != "" || !slices.Contains(resp.header.Values("Vary"), "Origin") {
			t.Fatalf("headers %v", resp.header)
		}
	})
	t.Run("preflight", func(t *testing.T) {
		c, p, _ := newTestCollector(t, nil)
		r := httptest.NewRequest(http.MethodOptions, "/track/?verbose=1", nil)
		r.Header.Set("Origin", "https://shop.example")
		r.Header.Set("Access-Control-Request-Method", "POST")
		r.Header.Set("Access-Control-Request-Headers", "content-type, x-mp-custom")
		r.Header.Set("Access-Control-Request-Private-Network", "true")
		resp := do(t, c, r)
		want := map[string]string{
			"Access-Control-Allow-Origin":          "https://shop.example",
			"Access-Control-Allow-Credentials":     "true",
			"Access-Control-Allow-Methods":         "GET, POST, OPTIONS",
			"Access-Control-Allow-Headers":         "content-type, x-mp-custom",
			"Access-Control-Allow-Private-Network": "true",
			"Access-Control-Max-Age":               "86400",
		}
		if resp.status != 200 || resp.body != "" {
			t.Fatalf("got %d %q", resp.status, resp.body)
		}
		for k, v := range want {
			if got := resp.header.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if len(envelopes(t, p)) != 0 {
			t.Fatal("a preflight produced events")
		}
	})
	t.Run("preflight drops header names that are not tokens", func(t *testing.T) {
		c, _, _ := newTestCollector(t, nil)
		r := httptest.NewRequest(http.MethodOptions, "/engage/", nil)
		r.Header.Set("Origin", "null")
		r.Header.Set("Access-Control-Request-Headers", "x-ok, bad header, x:y")
		resp := do(t, c, r)
		if got := resp.header.Get("Access-Control-Allow-Headers"); got != "x-ok" {
			t.Fatalf("Allow-Headers %q", got)
		}
		if resp.header.Get("Access-Control-Allow-Origin") != "null" {
			t.Fatalf("origin not echoed: %v", resp.header)
		}
	})
	t.Run("never a wildcard", func(t *testing.T) {
		c, _, _ := newTestCollector(t, nil)
		r := get("/track", b64(evA))
		r.Header.Set("Origin", "https://a.example")
		if got := do(t, c, r).header.Get("Access-Control-Allow-Origin"); got == "*" || got != "https://a.example" {
			t.Fatalf("Allow-Origin %q", got)
		}
	})
}
