package forwarded_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/veilhq/veil/internal/forwarded"
)

func TestNew(t *testing.T) {
	if _, err := forwarded.New([]string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "::ffff:198.51.100.1"}); err != nil {
		t.Fatal(err)
	}
	_, err := forwarded.New([]string{"10.0.0.0/8", "proxy.internal"})
	if err == nil || err.Error() != "trusted proxy entry 1 is not an address or CIDR prefix" {
		t.Fatalf("error %v", err)
	}
}

// TestWhatTheClientUsed: the scheme, host and origin the client addressed,
// and its address, come from X-Forwarded-* only when the peer is a
// trusted proxy.
func TestWhatTheClientUsed(t *testing.T) {
	p, err := forwarded.New([]string{"10.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, remote string
		tls          bool
		header       http.Header
		scheme, host string
		origin       string
		ip           string
	}{
		{name: "plain", remote: "198.51.100.7:1", scheme: "http", host: "example.com", origin: "http://example.com", ip: "198.51.100.7"},
		{name: "tls", remote: "198.51.100.7:1", tls: true, scheme: "https", host: "example.com", origin: "https://example.com", ip: "198.51.100.7"},
		{name: "untrusted peer's headers ignored", remote: "198.51.100.7:1",
			header: http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"evil.example"}, "X-Forwarded-For": {"203.0.113.9"}},
			scheme: "http", host: "example.com", origin: "http://example.com", ip: "198.51.100.7"},
		{name: "untrusted peer cannot downgrade tls", remote: "198.51.100.7:1", tls: true,
			header: http.Header{"X-Forwarded-Proto": {"http"}}, scheme: "https", host: "example.com", origin: "https://example.com", ip: "198.51.100.7"},
		{name: "trusted proxy", remote: "10.1.2.3:1",
			header: http.Header{"X-Forwarded-Proto": {"HTTPS"}, "X-Forwarded-Host": {"Veil.Example.org"}, "X-Forwarded-For": {"203.0.113.9"}},
			scheme: "https", host: "Veil.Example.org", origin: "https://veil.example.org", ip: "203.0.113.9"},
		{name: "trusted IPv6 proxy", remote: "[::1]:1",
			header: http.Header{"X-Forwarded-Proto": {"https"}}, scheme: "https", host: "example.com", origin: "https://example.com", ip: "::1"},
		{name: "trusted proxy appends to the client's claim", remote: "10.1.2.3:1",
			header: http.Header{"X-Forwarded-Proto": {"https, http"}, "X-Forwarded-Host": {"evil.example, example.com"}},
			scheme: "http", host: "example.com", origin: "http://example.com", ip: "10.1.2.3"},
		{name: "the last header line counts", remote: "10.1.2.3:1",
			header: http.Header{"X-Forwarded-Proto": {"http", "https"}}, scheme: "https", host: "example.com", origin: "https://example.com", ip: "10.1.2.3"},
		{name: "malformed forwarded host", remote: "10.1.2.3:1",
			header: http.Header{"X-Forwarded-Host": {"evil.example/path"}}, scheme: "http", host: "example.com", origin: "http://example.com", ip: "10.1.2.3"},
		{name: "RFC 7239 Forwarded is not read", remote: "10.1.2.3:1",
			header: http.Header{"Forwarded": {"for=203.0.113.9;proto=https;host=evil.example"}}, scheme: "http", host: "example.com", origin: "http://example.com", ip: "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/optout", nil)
			r.RemoteAddr = tt.remote
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			for k, v := range tt.header {
				r.Header[k] = v
			}
			if got := p.Scheme(r); got != tt.scheme {
				t.Errorf("Scheme %q, want %q", got, tt.scheme)
			}
			if got := p.Secure(r); got != (tt.scheme == "https") {
				t.Errorf("Secure %v", got)
			}
			if got := p.Host(r); got != tt.host {
				t.Errorf("Host %q, want %q", got, tt.host)
			}
			if got := p.Origin(r); got != tt.origin {
				t.Errorf("Origin %q, want %q", got, tt.origin)
			}
			if got := p.ClientIP(r).String(); got != tt.ip {
				t.Errorf("ClientIP %s, want %s", got, tt.ip)
			}
		})
	}
}

func TestNilTrustsNoOne(t *testing.T) {
	var p *forwarded.Proxies
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "10.1.2.3:1"
	r.Header.Set("X-Forwarded-Proto", "https")
	r.Header.Set("X-Forwarded-For", "203.0.113.9")
	if p.Secure(r) || p.ClientIP(r).String() != "10.1.2.3" {
		t.Fatalf("a nil Proxies believed the headers")
	}
}

func TestSameOrigin(t *testing.T) {
	p, _ := forwarded.New(nil)
	r := httptest.NewRequest(http.MethodPost, "/optin", nil)
	r.Host = "veil.example:8443"
	r.TLS = &tls.ConnectionState{}
	tests := []struct {
		u    string
		want bool
	}{
		{"https://veil.example:8443", true},
		{"https://VEIL.example:8443", true},
		{"https://veil.example:8443/optin?x=1", true},
		{"https://veil.example", false},
		{"http://veil.example:8443", false},
		{"https://shop.example", false},
		{"https://a.veil.example:8443", false},
		{"https://user@veil.example:8443", false},
		{"null", false},
		{"", false},
		{"veil.example:8443", false},
		{"//veil.example:8443", false},
	}
	for _, tt := range tests {
		if got := p.SameOrigin(r, tt.u); got != tt.want {
			t.Errorf("SameOrigin(%q) = %v, want %v", tt.u, got, tt.want)
		}
	}
}
