package privacy_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veilhq/veil/privacy"
)

func TestPages(t *testing.T) {
	mux := http.NewServeMux()
	privacy.Pages{Cookie: "veil_optout"}.Routes(mux)
	tests := []struct {
		name, method, path string
		https, cookie      bool
		wantSet            string // substring of Set-Cookie, "" for none
		wantBody           string
	}{
		{"page", http.MethodGet, "/optout", false, false, "", "This browser is not opted out."},
		{"page when opted out", http.MethodGet, "/optout", false, true, "", "This browser is opted out"},
		{"opt out over http", http.MethodPost, "/optout", false, false, "veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; SameSite=Lax", "is opted out"},
		{"opt out over https", http.MethodPost, "/optout", true, false, "veil_optout=1; Path=/; Max-Age=315360000; HttpOnly; Secure; SameSite=None", "is opted out"},
		{"opt in clears", http.MethodPost, "/optin", true, true, "veil_optout=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=None", "not opted out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.https {
				r.TLS = &tls.ConnectionState{}
			}
			if tt.cookie {
				r.AddCookie(&http.Cookie{Name: "veil_optout", Value: "1"})
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, r)
			if rec.Code != 200 {
				t.Fatalf("status %d", rec.Code)
			}
			got := rec.Header().Get("Set-Cookie")
			if got != tt.wantSet {
				t.Fatalf("Set-Cookie %q, want %q", got, tt.wantSet)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) || !strings.Contains(rec.Body.String(), "<button") {
				t.Fatalf("body lacks %q:\n%s", tt.wantBody, rec.Body.String())
			}
		})
	}
}
