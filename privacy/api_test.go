package privacy_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veilhq/veil/privacy"
)

// TestAPIBearer: the privacy API takes the admin token only under the
// Bearer scheme, whose name is case-insensitive. A request that passes
// reaches the endpoint, which answers GET with 405; one that does not is
// answered 401 with WWW-Authenticate: Bearer.
func TestAPIBearer(t *testing.T) {
	const tok = "adm-7f3a9c2e41d0"
	project := func(s string) (string, bool) { return "shop", s == "tok-shop" }
	tests := []struct {
		name   string
		header []string // Authorization lines; nil sends none
		want   int
	}{
		{"Bearer", []string{"Bearer " + tok}, http.StatusMethodNotAllowed},
		{"bearer", []string{"bearer " + tok}, http.StatusMethodNotAllowed},
		{"BEARER", []string{"BEARER " + tok}, http.StatusMethodNotAllowed},
		{"bare token", []string{tok}, http.StatusUnauthorized},
		{"Basic scheme", []string{"Basic " + tok}, http.StatusUnauthorized},
		{"wrong token after two spaces", []string{"Bearer  wrong"}, http.StatusUnauthorized},
		{"wrong token", []string{"Bearer " + tok + "x"}, http.StatusUnauthorized},
		{"prefix of the token", []string{"Bearer " + tok[:8]}, http.StatusUnauthorized},
		{"scheme without token", []string{"Bearer"}, http.StatusUnauthorized},
		{"scheme and spaces", []string{"Bearer   "}, http.StatusUnauthorized},
		{"scheme glued to token", []string{"Bearer" + tok}, http.StatusUnauthorized},
		{"empty", []string{""}, http.StatusUnauthorized},
		{"none", nil, http.StatusUnauthorized},
		{"two headers", []string{"Bearer " + tok, "Bearer " + tok}, http.StatusUnauthorized},
	}
	api := privacy.NewAPI(nil, nil, tok, project, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/veil/optouts?token=tok-shop", nil)
			if tt.header != nil {
				r.Header["Authorization"] = tt.header
			}
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body.String())
			}
			wantChallenge := ""
			if tt.want == http.StatusUnauthorized {
				wantChallenge = "Bearer"
				if !strings.Contains(rec.Body.String(), "a valid admin bearer token is required") {
					t.Errorf("body %q", rec.Body.String())
				}
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != wantChallenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, wantChallenge)
			}
		})
	}
}

// TestAPIClosedWithoutToken: with no admin token configured, nothing opens
// the API, not even an empty bearer token.
func TestAPIClosedWithoutToken(t *testing.T) {
	api := privacy.NewAPI(nil, nil, "", func(string) (string, bool) { return "shop", true }, nil)
	for _, h := range []string{"Bearer ", "Bearer", "", "bearer x"} {
		r := httptest.NewRequest(http.MethodGet, "/api/veil/optouts?token=tok-shop", nil)
		r.Header.Set("Authorization", h)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, r)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", h, rec.Code)
		}
	}
}
