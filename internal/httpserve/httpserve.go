// Package httpserve serves Veil's HTTP listeners, the collector's and the
// admin endpoints', with one set of defences against hostile clients:
// a deadline for every phase of a connection (headers, the whole request,
// the answer, the wait between requests), a bound on request headers, a cap
// on concurrent connections, and accept errors (a full file-descriptor
// table) counted and logged rather than dropped.
//
// Both listeners take their settings from a Config of this package, under
// their own key (collector.server, admin.server), with the same defaults:
// they differ only where the configuration says so.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Config is how one listener treats its clients.
type Config struct {
	// ReadHeaderTimeout bounds the time from a connection's first byte (or
	// from the end of the previous answer) to the end of a request's
	// headers; a new connection that sends nothing is closed after it.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included: a client
	// that trickles its body is cut off.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds the time from the end of the request's headers
	// to the end of the answer, Kafka's acknowledgement included.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's line and headers; beyond it the
	// answer is 431. (net/http reads up to 4 KiB more before it decides.)
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxConnections caps the connections served at once. A connection
	// over the cap first makes the server close its idle connections, then
	// waits, accepted, until one closes; the ones after it wait in the
	// kernel's queue, costing the process no file descriptor.
	MaxConnections int `yaml:"max_connections"`
}

// DefaultConfig returns the settings both listeners start from.
//
// The timeouts leave a mobile client on a slow network time to send a
// request and read the answer, and no more: SDK requests are a few
// kilobytes, and SDKs retry. Headers of 64 KiB hold any cookie a browser
// sends (browsers cap a cookie at 4 KiB and a domain's cookies at about
// 180 of them only in theory; real ones are a few KiB).
//
// 4096 connections per listener: each costs a file descriptor and, idle,
// about 10-40 KiB (goroutine stack, read and write buffers, TLS state), so
// the cap bounds an idle flood at ~160 MiB per listener. Go raises a
// process's soft descriptor limit to its hard limit at start; common hard
// limits are 4096 upwards (systemd gives 524288), and the collector and
// admin listeners together (8192) plus Kafka's and ClickHouse's
// connections stay well inside 20000. SDK traffic mostly arrives through
// load balancers that pool connections, and browsers send their beacons
// over few (one with HTTP/2). Raise it with the process's LimitNOFILE.
func DefaultConfig() Config {
	return Config{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		MaxConnections:    4096,
	}
}

// Validate reports the first invalid setting, naming it under key (the
// section the listener's settings are read from, e.g. collector.server).
func (c Config) Validate(key string) error {
	switch {
	case c.ReadHeaderTimeout <= 0:
		return fmt.Errorf("%s.read_header_timeout must be positive", key)
	case c.ReadTimeout <= 0:
		return fmt.Errorf("%s.read_timeout must be positive", key)
	case c.ReadHeaderTimeout > c.ReadTimeout:
		return fmt.Errorf("%s.read_header_timeout must not exceed %s.read_timeout", key, key)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("%s.write_timeout must be positive", key)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("%s.idle_timeout must be positive", key)
	case c.MaxHeaderBytes < 1<<10:
		return fmt.Errorf("%s.max_header_bytes must be at least 1024", key)
	case c.MaxConnections <= 0:
		return fmt.Errorf("%s.max_connections must be positive", key)
	}
	return nil
}

// Options are what a listener serves and how it stops.
type Options struct {
	// Name says which listener this is in metrics and logs: a fixed word
	// such as collector or admin, unique within a registry.
	Name string
	// Key is the configuration section Config was read from, named in
	// errors: collector.server, admin.server.
	Key     string
	Config  Config
	Handler http.Handler
	// CertFile and KeyFile, when set, serve HTTPS (HTTP/2 and HTTP/1.1).
	CertFile, KeyFile string
	// ShutdownTimeout bounds how long requests in flight may take to
	// finish once the server is asked to stop.
	ShutdownTimeout time.Duration
}

// Deps are the server's collaborators.
type Deps struct {
	Logger  *zap.Logger
	Metrics prometheus.Registerer
}

// Server serves one listener with its Options.
type Server struct {
	opts Options
	log  *zap.Logger
	m    *metrics
}

// New validates the options and registers the listener's metrics.
func New(opts Options, deps Deps) (*Server, error) {
	if opts.Name == "" {
		return nil, errors.New("httpserve: a listener name is required")
	}
	if opts.Handler == nil {
		return nil, errors.New("httpserve: a handler is required")
	}
	if err := opts.Config.Validate(opts.Key); err != nil {
		return nil, err
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	m, err := newMetrics(opts.Name, opts.Config.MaxConnections, deps.Metrics)
	if err != nil {
		return nil, err
	}
	return &Server{opts: opts, log: deps.Logger, m: m}, nil
}

// Serve answers requests on l until ctx ends, then stops accepting
// connections and lets requests in flight finish within ShutdownTimeout.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	cfg := s.opts.Config
	s.checkDescriptorLimit()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true) // takes effect over TLS
	srv := &http.Server{
		Protocols:         &protocols,
		Handler:           s.opts.Handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		// net/http's own log lines can carry client addresses (TLS
		// handshake errors name the peer): they are dropped. What an
		// operator needs from them, accept errors, the listener below
		// counts and logs itself.
		ErrorLog: zap.NewStdLog(s.log.Named("http").WithOptions(zap.IncreaseLevel(zap.ErrorLevel))),
	}
	// net/http closes its idle connections when keep-alives are turned
	// off; turned on again at once, they serve the next requests as before.
	closeIdle := func() {
		srv.SetKeepAlivesEnabled(false)
		srv.SetKeepAlivesEnabled(true)
	}
	capped := newListener(l, cfg.MaxConnections, s.m, s.log, s.opts.Name, closeIdle)
	errc := make(chan error, 1)
	go func() {
		if s.opts.CertFile != "" {
			errc <- srv.ServeTLS(capped, s.opts.CertFile, s.opts.KeyFile)
			return
		}
		errc <- srv.Serve(capped)
	}()
	select {
	case err := <-errc:
		capped.Close()
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		s.log.Warn("requests still in flight at shutdown deadline", zap.String("listener", s.opts.Name), zap.Error(err))
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// descriptorReserve is what a process keeps for everything but its
// listeners' clients: Kafka and ClickHouse connections, files, the other
// listener's scrapes.
const descriptorReserve = 512

// checkDescriptorLimit warns when the cap lets clients take the file
// descriptors the rest of the process needs.
func (s *Server) checkDescriptorLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if uint64(s.opts.Config.MaxConnections)+descriptorReserve > lim.Cur {
		s.log.Warn("the connection cap leaves too few file descriptors for the rest of the process; lower max_connections or raise the descriptor limit",
			zap.String("listener", s.opts.Name), zap.Int("max_connections", s.opts.Config.MaxConnections), zap.Uint64("descriptor_limit", lim.Cur))
	}
}
