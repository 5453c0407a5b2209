package loadgen

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer answers every request on every connection it accepts with
// answer, counting connections; close ends each connection after one
// answer.
func rawServer(t *testing.T, answer string, close bool) (addr string, conns *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conns = new(atomic.Int64)
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(nc, answer); err != nil || close {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), conns
}

func TestConnFraming(t *testing.T) {
	const verbose = `{"status":1,"error":null}`
	for _, tc := range []struct {
		name   string
		answer string
		close  bool
		status int
		body   string
		conns  int64 // connections two round trips use
		err    bool
	}{
		{"content_length", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n" + verbose, false, 200, verbose, 1, false},
		{"lower_case_headers", "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1", false, 200, "1", 1, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"sta\r\n14\r\ntus\":1,\"error\":null}\r\n0\r\n\r\n", false, 200, verbose, 1, false},
		{"chunked_trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n1\r\n0\r\nX-Trailer: a\r\n\r\n", false, 200, "1", 1, false},
		{"connection_close", "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 5\r\n\r\nretry", true, 503, "retry", 2, false},
		{"http_1_0_to_eof", "HTTP/1.0 200 OK\r\n\r\n1", true, 200, "1", 2, false},
		{"long_body_kept_short", "HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\n" + string(make([]byte, 100)), false, 400, string(make([]byte, maxAnswer)), 1, false},
		{"not_http", "SSH-2.0-OpenSSH\r\n\r\n", true, 0, "", 2, true},
		{"cut_short", "HTTP/1.1 200 OK\r\nContent-Length: 25\r\n\r\n{\"sta", true, 0, "", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, conns := rawServer(t, tc.answer, tc.close)
			c := &conn{dialer: loopbackDialer(), addr: addr, timeout: 2 * time.Second}
			defer c.close()
			c.req = []byte("POST /track/ HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 6\r\n\r\ndata=e")
			for i := range 2 {
				var answer [maxAnswer]byte
				status, body, err := c.roundTrip(context.Background(), time.Now(), &answer)
				if (err != nil) != tc.err {
					t.Fatalf("round trip %d: err %v, want error %v", i, err, tc.err)
				}
				if status != tc.status || string(body) != tc.body {
					t.Fatalf("round trip %d: %d %q, want %d %q", i, status, body, tc.status, tc.body)
				}
			}
			// The server counts a connection when it accepts it.
			deadline := time.Now().Add(2 * time.Second)
			for conns.Load() != tc.conns && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if n := conns.Load(); n != tc.conns {
				t.Fatalf("%d connections, want %d", n, tc.conns)
			}
		})
	}
}

// A request in flight ends when the run's context does, and the connection
// takes no more requests.
func TestConnAbort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		nc, err := l.Accept()
		if err == nil {
			defer nc.Close()
			_, _ = io.Copy(io.Discard, nc) // never answers
		}
	}()
	c := &conn{dialer: loopbackDialer(), addr: l.Addr().String(), timeout: time.Minute}
	c.req = []byte("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	time.AfterFunc(50*time.Millisecond, cancel)
	var answer [maxAnswer]byte
	start := time.Now()
	if _, _, err := c.roundTrip(ctx, start, &answer); err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("round trip: %v after %v, want an error soon after the cancel", err, time.Since(start))
	}
	if _, _, err := c.roundTrip(ctx, time.Now(), &answer); !errors.Is(err, errAborted) && !errors.Is(err, context.Canceled) {
		t.Fatalf("after the abort: %v, want %v", err, errAborted)
	}
}

// What the load generator puts on the wire is a request net/http reads
// whole: the exact Content-Length, the headers mixpanel-browser sends.
func TestRequestOnTheWire(t *testing.T) {
	got := make(chan *http.Request, 4)
	bodies := make(chan int, 4)
	srv := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- r
		bodies <- int(n)
		_, _ = io.WriteString(w, `{"status":1,"error":null}`)
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	cfg := quickConfig("http://" + l.Addr().String())
	cfg.Events = 3
	cfg.Batch = 1
	cfg.Concurrency = 1
	rep, _ := run(t, cfg)
	if rep.Requests != 3 || rep.Events != 3 || rep.Errors != 0 {
		t.Fatalf("requests %d events %d errors %d, want 3 3 0", rep.Requests, rep.Events, rep.Errors)
	}
	for range 3 {
		r, n := <-got, <-bodies
		if r.Method != http.MethodPost || r.URL.Path != "/track/" || r.URL.Query().Get("verbose") != "1" || r.URL.Query().Get("_") == "" {
			t.Fatalf("request line: %s %s", r.Method, r.URL)
		}
		if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.Header.Get("User-Agent") == "" ||
			r.Header.Get("X-Forwarded-For") == "" || r.Header.Get("Origin") != "https://shop.example.com" {
			t.Fatalf("headers: %v", r.Header)
		}
		if want := strconv.FormatInt(r.ContentLength, 10); n == 0 || strconv.Itoa(n) != want {
			t.Fatalf("body of %d bytes, Content-Length %s", n, want)
		}
	}
}
