package sdktest

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTapListener checks the request tap the browser test relies on: every
// request of a kept-alive connection is seen, including those after the
// server's idle read was cut short by its deadline.
func TestTapListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := newTapListener(l)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("1"))
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(tap) }()
	client := &http.Client{Transport: &http.Transport{}}
	bodies := []string{"data=a", "data=bb", "data=ccc"}
	for _, b := range bodies {
		resp, err := client.Post("http://"+l.Addr().String()+"/track/?ip=1&_=2", "text/plain;charset=UTF-8", strings.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(tap.requests()) < len(bodies) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	client.CloseIdleConnections()
	_ = srv.Close()
	<-done
	tap.wait()
	got := tap.requests()
	if len(got) != len(bodies) {
		t.Fatalf("tap saw %d requests, want %d: %v", len(got), len(bodies), got)
	}
	for i, r := range got {
		want := wireRequest{Method: "POST", Path: "/track/", Query: []string{"_", "ip"}, ContentType: "text/plain;charset=UTF-8", BodyBytes: int64(len(bodies[i]))}
		if r.String() != want.String() {
			t.Errorf("request %d: %s, want %s", i, r, want)
		}
	}
}
