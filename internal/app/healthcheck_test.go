package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			_, _ = w.Write([]byte("ok\n"))
		case "/readyz":
			http.Error(w, "not ready: starting: waiting for Kafka", http.StatusServiceUnavailable)
		case "/slow":
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	tests := []struct{ path, want string }{
		{"/healthz", ""},
		{"/readyz", "healthcheck: " + srv.URL + "/readyz answered 503: not ready: starting: waiting for Kafka"},
		{"/slow", "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			err := Healthcheck(context.Background(), srv.URL+tt.path, 200*time.Millisecond)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}
