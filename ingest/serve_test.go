package ingest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/kafkatest"
)

// selfSigned writes a throwaway certificate for 127.0.0.1 and its key, and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "veil test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeHTTP2 serves over TLS and checks that a client speaking HTTP/2
// gets HTTP/2, and that HTTP/1.1 still works.
func TestServeHTTP2(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	c, p, _ := newTestCollector(t, func(c *Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	target := "https://" + l.Addr().String() + "/track/?data=" + url.QueryEscape(b64(evA))
	for _, tt := range []struct {
		name  string
		http2 bool
		major int
	}{{"HTTP/2", true, 2}, {"HTTP/1.1", false, 1}} {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: tt.http2}
			if !tt.http2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(target)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != tt.major || resp.StatusCode != 200 {
				t.Fatalf("got %s %d, want HTTP/%d 200", resp.Proto, resp.StatusCode, tt.major)
			}
			if body := readAll(t, resp.Body); body != "1" {
				t.Fatalf("body %q", body)
			}
		})
	}
	if n := len(envelopes(t, p)); n != 2 {
		t.Fatalf("produced %d, want 2", n)
	}
}

// TestPublicReadyzSaysOnlyWhether: the collector's /readyz is public; it
// says whether the collector is ready and nothing of why not (the broker
// addresses a dial error names), which Ready gives to an admin listener.
func TestPublicReadyzSaysOnlyWhether(t *testing.T) {
	dialErr := errors.New("no Kafka broker reachable: dial tcp 10.20.30.40:9092: connect: connection refused")
	for _, tt := range []struct {
		name   string
		ready  error
		status int
		body   string
	}{
		{"ready", nil, http.StatusOK, "ok\n"},
		{"broker unreachable", dialErr, http.StatusServiceUnavailable, "not ready\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Projects = []Project{{Name: "shop", Token: "tok-shop"}}
			c, err := New(cfg, "raw", Deps{Producer: &kafkatest.Producer{}, Ready: func(context.Context) error { return tt.ready }})
			if err != nil {
				t.Fatal(err)
			}
			resp := do(t, c, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if resp.status != tt.status || resp.body != tt.body {
				t.Fatalf("GET /readyz: %d %q, want %d %q", resp.status, resp.body, tt.status, tt.body)
			}
			if err := c.Ready(context.Background()); err != tt.ready {
				t.Fatalf("Ready: %v, want %v", err, tt.ready)
			}
		})
	}
}
