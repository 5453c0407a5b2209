package httpserve

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs a Server named "test" with cfg on l until the test ends. It
// answers "ok", except on /hold, which it holds until the client leaves,
// counting the requests it holds in holding.
func serve(t *testing.T, cfg Config, l net.Listener, log *zap.Logger) (reg *prometheus.Registry, holding *atomic.Int32) {
	t.Helper()
	reg, holding = prometheus.NewRegistry(), new(atomic.Int32)
	s, err := New(Options{Name: "test", Key: "test.server", Config: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			holding.Add(1)
			defer holding.Add(-1)
			<-r.Context().Done()
			return
		}
		_, _ = io.WriteString(w, "ok")
	})}, Deps{Logger: log, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return reg, holding
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const request = "GET / HTTP/1.1\r\nHost: veil\r\n\r\n"

// roundTrip sends one request on c and reads its answer.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// closedByServer reports whether the server closes c within wait, reading
// (and discarding) whatever it sends first.
func closedByServer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func series(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func testConfig() Config {
	return Config{
		ReadHeaderTimeout: 200 * time.Millisecond,
		ReadTimeout:       time.Second,
		WriteTimeout:      time.Second,
		IdleTimeout:       300 * time.Millisecond,
		MaxHeaderBytes:    2 << 10,
		MaxConnections:    16,
	}
}

// TestClientsCannotHoldConnections: whatever a client does or fails to
// do, the server ends the connection within its timeouts, and refuses
// headers over the limit.
func TestClientsCannotHoldConnections(t *testing.T) {
	l := listen(t)
	serve(t, testConfig(), l, zap.NewNop())
	addr := l.Addr().String()
	for _, tt := range []struct {
		name string
		// act does what the client does before it waits.
		act func(t *testing.T, c net.Conn)
	}{
		{"connects and sends nothing", func(t *testing.T, c net.Conn) {}},
		{"idles after a request", func(t *testing.T, c net.Conn) {
			if resp := roundTrip(t, c, bufio.NewReader(c)); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}},
		{"sends half its headers", func(t *testing.T, c net.Conn) {
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: veil\r\n")
		}},
		{"sends a byte of its headers now and then", func(t *testing.T, c net.Conn) {
			go func() {
				for _, b := range []byte("GET / HTTP/1.1\r\nHost: veil\r\nX-Slow: 1") {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}},
		{"trickles its body", func(t *testing.T, c net.Conn) {
			_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 1000\r\n\r\nab")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			tt.act(t, c)
			if !closedByServer(c, 5*time.Second) {
				t.Fatal("the connection is still open 5 s later")
			}
		})
	}

	t.Run("oversize headers", func(t *testing.T) {
		c := dial(t, addr)
		big := "GET / HTTP/1.1\r\nHost: veil\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\n\r\n"
		_, _ = io.WriteString(c, big)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
	})
}

// TestConnectionCap: with a cap of 4, a fifth client is not served while
// the four are busy, and is as soon as one leaves; idle clients are
// closed to make room for it at once. The metrics say so.
func TestConnectionCap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 4
	// Neither timeout frees a slot during the test.
	cfg.IdleTimeout, cfg.ReadHeaderTimeout, cfg.ReadTimeout = time.Minute, time.Minute, time.Minute
	listener := map[string]string{"listener": "test"}

	// open starts a server and four clients that send req: busy ones are
	// held, idle ones answered 200 and kept alive.
	open := func(t *testing.T, busy bool) (*prometheus.Registry, string, []net.Conn) {
		l := listen(t)
		reg, holding := serve(t, cfg, l, zap.NewNop())
		var conns []net.Conn
		for range 4 {
			c := dial(t, l.Addr().String())
			if busy {
				if _, err := io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: veil\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
			} else if resp := roundTrip(t, c, bufio.NewReader(c)); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			conns = append(conns, c)
		}
		if busy {
			eventually(t, "four requests to be held", func() bool { return holding.Load() == 4 })
		}
		if open := series(t, reg, "veil_http_connections_open", listener); open != 4 {
			t.Fatalf("open connections %v, want 4", open)
		}
		if limit := series(t, reg, "veil_http_connections_limit", listener); limit != 4 {
			t.Fatalf("connection limit %v, want 4", limit)
		}
		return reg, l.Addr().String(), conns
	}
	// fifth connects and sends a request once the four are open.
	fifth := func(t *testing.T, reg *prometheus.Registry, addr string) net.Conn {
		c := dial(t, addr)
		if _, err := io.WriteString(c, request); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the fifth connection to be counted as waiting", func() bool {
			return series(t, reg, "veil_http_connections_waited_total", listener) == 1
		})
		return c
	}
	answered := func(t *testing.T, c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("the fifth connection: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}

	t.Run("four busy", func(t *testing.T) {
		reg, addr, busy := open(t, true)
		c := fifth(t, reg, addr)
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
			t.Fatalf("the fifth connection was answered (%d bytes, %v) while four were busy", n, err)
		}
		busy[0].Close()
		answered(t, c)
		if open := series(t, reg, "veil_http_connections_open", listener); open != 4 {
			t.Fatalf("open connections %v, want 4", open)
		}
		for _, b := range busy[1:] {
			b.Close()
		}
		c.Close()
		eventually(t, "every slot to be given back", func() bool {
			return series(t, reg, "veil_http_connections_open", listener) == 0
		})
	})

	t.Run("four idle", func(t *testing.T) {
		reg, addr, idle := open(t, false)
		c := fifth(t, reg, addr)
		answered(t, c) // long before the idle timeout
		// The fifth was served in a slot an idle connection left; one
		// that became idle only after it got its slot may stay.
		closed := 0
		for _, b := range idle {
			if closedByServer(b, 200*time.Millisecond) {
				closed++
			}
		}
		if closed == 0 {
			t.Fatal("no idle connection was closed, yet the fifth was served")
		}
		if open := series(t, reg, "veil_http_connections_open", listener); open != float64(4-closed+1) {
			t.Fatalf("open connections %v with %d of 4 idle ones closed, want %d", open, closed, 4-closed+1)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// failingListener fails its first accepts the way a process out of file
// descriptors does, then accepts for real.
type failingListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptErrorsAreCountedAndLogged: a full descriptor table is
// counted by class and logged, once per interval, without an address, and
// the server keeps serving once descriptors are free again.
func TestAcceptErrorsAreCountedAndLogged(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	fl := &failingListener{Listener: listen(t)}
	fl.failures.Store(3)
	reg, _ := serve(t, testConfig(), fl, zap.New(core))

	c := dial(t, fl.Addr().String())
	if resp := roundTrip(t, c, bufio.NewReader(c)); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, class := range acceptErrorClasses {
		want := 0.0
		if class == classDescriptors {
			want = 3
		}
		if got := series(t, reg, "veil_http_accept_errors_total", map[string]string{"listener": "test", "class": class}); got != want {
			t.Errorf("accept errors of class %s: %v, want %v", class, got, want)
		}
	}
	lines := logs.FilterMessage("accepting a connection failed; retrying").All()
	if len(lines) != 1 {
		t.Fatalf("%d log lines for 3 failures within %s, want 1", len(lines), acceptLogInterval)
	}
	fields := lines[0].ContextMap()
	want := map[string]any{"listener": "test", "class": "descriptors", "errno": "too many open files", "errors": int64(1)}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("log field %s = %v, want %v", k, fields[k], v)
		}
	}
	host, port, _ := net.SplitHostPort(fl.Addr().String())
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if s, ok := v.(string); ok && (strings.Contains(s, host) || strings.Contains(s, port)) {
				t.Errorf("log line %q field %s carries an address: %q", e.Message, k, s)
			}
		}
	}
	if got := testutil.CollectAndCount(reg, "veil_http_accept_errors_total"); got != len(acceptErrorClasses) {
		t.Errorf("%d accept error series, want the %d fixed classes", got, len(acceptErrorClasses))
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	for _, tt := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.ReadHeaderTimeout = 0 }, "admin.server.read_header_timeout must be positive"},
		{func(c *Config) { c.ReadTimeout = 0 }, "admin.server.read_timeout must be positive"},
		{func(c *Config) { c.ReadHeaderTimeout = 2 * c.ReadTimeout }, "admin.server.read_header_timeout must not exceed admin.server.read_timeout"},
		{func(c *Config) { c.WriteTimeout = 0 }, "admin.server.write_timeout must be positive"},
		{func(c *Config) { c.IdleTimeout = -1 }, "admin.server.idle_timeout must be positive"},
		{func(c *Config) { c.MaxHeaderBytes = 100 }, "admin.server.max_header_bytes must be at least 1024"},
		{func(c *Config) { c.MaxConnections = 0 }, "admin.server.max_connections must be positive"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			if err := c.Validate("admin.server"); err == nil || err.Error() != tt.want {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	if err := DefaultConfig().Validate("admin.server"); err != nil {
		t.Fatal(err)
	}
}
