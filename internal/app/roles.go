package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/sink"
	"github.com/veilhq/veil/worker"
)

// Deps are what every role gets from main.
type Deps struct {
	Logger   *zap.Logger
	Registry *prometheus.Registry
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// RunCollector serves the collector until ctx ends. The listener, when
// given, is used instead of cfg.Collector.Listen.
func RunCollector(ctx context.Context, cfg Config, deps Deps, l net.Listener) error {
	log := deps.Logger.Named("collector")
	if err := ensureTopics(ctx, cfg.Kafka, log); err != nil {
		return err
	}
	w := kafkax.NewWriter(cfg.Kafka.Brokers, cfg.Kafka.RawTopic, cfg.Collector.Producer, log)
	defer w.Close()
	c, err := ingest.New(cfg.Collector, cfg.Kafka.RawTopic, ingest.Deps{
		Logger:   log,
		Metrics:  deps.Registry,
		Gatherer: deps.Registry,
		Producer: w,
		Ready:    func(ctx context.Context) error { return kafkaReachable(ctx, cfg.Kafka.Brokers) },
	})
	if err != nil {
		return err
	}
	if l == nil {
		if l, err = net.Listen("tcp", cfg.Collector.Listen); err != nil {
			return fmt.Errorf("collector.listen: %w", err)
		}
	}
	log.Info("collector listening", zap.String("addr", l.Addr().String()))
	return c.Serve(ctx, l)
}

// RunWorker consumes until ctx ends. It waits for ClickHouse to be
// reachable, applies migrations, and serves the admin endpoints.
func RunWorker(ctx context.Context, cfg Config, deps Deps, serveAdmin bool) error {
	log := deps.Logger.Named("worker")
	if err := ensureTopics(ctx, cfg.Kafka, log); err != nil {
		return err
	}
	s, err := openSink(ctx, cfg.Sink, sink.Deps{Logger: log.Named("sink"), Metrics: deps.Registry})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	stages, err := Stages(cfg, log)
	if err != nil {
		return err
	}
	w, err := worker.New(cfg.Worker, cfg.Kafka, worker.Deps{Logger: log, Metrics: deps.Registry, Sink: s, Stages: stages})
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.Go(func() error { return w.Run(ctx) })
	if serveAdmin {
		g.Go(func() error {
			return serveAdminHTTP(ctx, cfg.Admin.Listen, deps.Registry, func(ctx context.Context) error {
				if err := kafkaReachable(ctx, cfg.Kafka.Brokers); err != nil {
					return err
				}
				return s.Ping(ctx)
			}, log)
		})
	}
	return g.Wait()
}

// Migrate applies the ClickHouse schema and creates the Kafka topics.
func Migrate(ctx context.Context, cfg Config, deps Deps) error {
	log := deps.Logger.Named("migrate")
	if err := kafkax.EnsureTopics(ctx, cfg.Kafka); err != nil {
		return err
	}
	s, err := sink.Open(ctx, cfg.Sink, sink.Deps{Logger: log})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Migrate(ctx)
}

// openSink connects to ClickHouse, waiting with backoff while it is down so
// that a worker started before its database simply waits.
func openSink(ctx context.Context, cfg sink.Config, deps sink.Deps) (*sink.Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	delay := 250 * time.Millisecond
	for {
		s, err := sink.Open(ctx, cfg, deps)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		deps.Logger.Warn("ClickHouse not reachable yet; retrying", zap.Duration("backoff", delay), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

func ensureTopics(ctx context.Context, cfg kafkax.Config, log *zap.Logger) error {
	delay := 250 * time.Millisecond
	for {
		err := kafkax.EnsureTopics(ctx, cfg)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		log.Warn("Kafka not reachable yet; retrying", zap.Duration("backoff", delay), zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// kafkaReachable reports whether any broker accepts a connection.
func kafkaReachable(ctx context.Context, brokers []string) error {
	var d net.Dialer
	var last error
	for _, b := range brokers {
		c, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			c.Close()
			return nil
		}
		last = err
	}
	return fmt.Errorf("no Kafka broker reachable: %w", last)
}

func serveAdminHTTP(ctx context.Context, addr string, reg *prometheus.Registry, ready func(context.Context) error, log *zap.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(rctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("admin endpoints listening", zap.String("addr", l.Addr().String()))
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
