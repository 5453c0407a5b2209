package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/veilhq/veil/internal/app"
)

// loopbackTransport is an HTTP/1.1 transport that keeps up to conns
// connections and can only dial loopback addresses, whatever a name
// resolves to and whatever the proxy environment says.
func loopbackTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         loopbackDialer().DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		// The collector answers a few bytes; browsers ask for gzip, but
		// nothing here would be compressed.
		DisableCompression: true,
	}
}

// loopbackDialer can only dial loopback addresses.
func loopbackDialer() *net.Dialer {
	return &net.Dialer{
		Timeout: 5 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil || !isLoopbackHost(host) {
				return errors.New("loadgen: refusing to connect to a non-loopback address")
			}
			return nil
		},
	}
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// server is a ceiling started by the load generator.
type server struct {
	target string
	// produce, set instead of target by the Kafka ceiling, writes the
	// messages of a request of t.
	produce func(ctx context.Context, t *template) error
	stop    func() error
	// profile and stopProfile, when set, profile the server's own process
	// (a ceiling in a process of its own).
	profile     func(path string) error
	stopProfile func() error
}

// startCeiling starts the server cfg.Ceiling names on a loopback port,
// or the Kafka ceiling for gen's requests. A collector takes the events
// of the project whose token is token, and no others.
func startCeiling(ctx context.Context, kind, token string, gen *generator) (*server, error) {
	switch kind {
	case CeilingHTTP:
		return startTrivial()
	case CeilingCollector:
		return startCollector(ctx, token, false)
	case CeilingCollectorSealed:
		return startCollector(ctx, token, true)
	case CeilingKafka:
		if gen == nil {
			return nil, errors.New("loadgen: the kafka ceiling runs in the load generator's process")
		}
		return startKafkaCeiling(ctx, token, gen)
	}
	return nil, fmt.Errorf("loadgen: unknown ceiling %q", kind)
}

// startTrivial serves the least an ingestion endpoint can do: read the body
// and answer as the collector does, with nothing in between. What it
// reaches is the ceiling of net/http and the load generator together on
// this machine.
func startTrivial() (*server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if strings.Contains(r.URL.RawQuery, "verbose=1") {
				_, _ = io.WriteString(w, `{"status":1,"error":null}`)
				return
			}
			_, _ = io.WriteString(w, "1")
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	return &server{
		target: "http://" + l.Addr().String(),
		stop: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			if err := <-done; !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}, nil
}

// startCollector runs Veil's collector as `veil dev` configures it, with
// its embedded broker persisted to a temporary directory as `veil dev`
// does, but without the worker and ClickHouse: what it reaches is the
// collector's own ceiling on this machine. Unless sealed, it produces its
// envelopes unsealed, as before sealing existed, so that its figures stay
// comparable from run to run.
func startCollector(ctx context.Context, token string, sealed bool) (*server, error) {
	cfg, stopBroker, err := startBroker(ctx, token, sealed)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopBroker()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.RunCollector(runCtx, cfg, app.Deps{Logger: zap.NewNop(), Registry: app.NewRegistry()}, l)
	}()
	s := &server{
		target: "http://" + l.Addr().String(),
		stop: func() error {
			cancel()
			err := <-done
			stopBroker()
			return err
		},
	}
	if err := waitReady(ctx, s.target+"/readyz"); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls url until it answers 200, for up to 30 seconds.
func waitReady(ctx context.Context, url string) error {
	client := &http.Client{Transport: loopbackTransport(1), Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("loadgen: the collector did not become ready within 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
