package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/ingest/spool"
	"github.com/veilhq/veil/internal/forwarded"
	"github.com/veilhq/veil/internal/httpserve"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/privacy"
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
// given, is used instead of cfg.Collector.Listen. It serves no admin
// listener: ServeCollector does.
func RunCollector(ctx context.Context, cfg Config, deps Deps, l net.Listener) error {
	return ServeCollector(ctx, cfg, deps, l, nil)
}

// CollectorRole is `veil collector`: the collector on collector.listen and
// its admin endpoints on admin.collector_listen, when set.
func CollectorRole(ctx context.Context, cfg Config, deps Deps) error {
	var admin net.Listener
	if cfg.Admin.CollectorListen != "" {
		var err error
		if admin, err = net.Listen("tcp", cfg.Admin.CollectorListen); err != nil {
			return fmt.Errorf("admin.collector_listen: %w", err)
		}
	}
	return ServeCollector(ctx, cfg, deps, nil, admin)
}

// ServeCollector is RunCollector with the collector's admin endpoints
// (/metrics, /healthz, and /readyz with the reason) on admin, when it is
// not nil.
func ServeCollector(ctx context.Context, cfg Config, deps Deps, l, admin net.Listener) error {
	if admin != nil {
		defer admin.Close() // when the collector fails before serving it
	}
	log := deps.Logger.Named("collector")
	keys, stopKeys, err := sealKeys(ctx, cfg.Seal, log)
	if err != nil {
		return err
	}
	defer stopKeys()
	w := kafkax.NewProducer(cfg.Kafka.Brokers, cfg.Kafka.RawTopic, cfg.Collector.Producer.ForEnvelopes(keys != nil), log)
	defer w.Close()
	// The collector serves from the start; until Kafka has the topics,
	// /readyz says so and events are answered 503, which SDKs retry.
	// A reachable Kafka is checked before serving, so a healthy start is
	// ready at once; an unreachable one is waited for in the background.
	// The wait ends with the collector, also when it fails to start.
	var topicsReady atomic.Bool
	topicsDone := make(chan struct{})
	topicsCtx, stopTopics := context.WithCancel(ctx)
	first, cancelFirst := context.WithTimeout(ctx, 2*time.Second)
	if err := kafkax.EnsureTopics(first, cfg.Kafka); err == nil {
		topicsReady.Store(true)
		close(topicsDone)
	} else {
		go func() {
			defer close(topicsDone)
			if err := ensureTopics(topicsCtx, cfg.Kafka, log); err == nil {
				topicsReady.Store(true)
			}
		}()
	}
	cancelFirst()
	defer func() {
		stopTopics()
		<-topicsDone
	}()
	proxies, err := forwarded.New(cfg.Collector.TrustedProxies)
	if err != nil {
		return fmt.Errorf("collector.trusted_proxies: %w", err)
	}
	pages, err := privacy.NewPages(cfg.Collector.OptOutCookie, privacy.PagesDeps{Logger: log.Named("optout"), Metrics: deps.Registry, Proxies: proxies})
	if err != nil {
		return err
	}
	var producer ingest.Producer = w
	ready := func(ctx context.Context) error {
		if !topicsReady.Load() {
			return errors.New("starting: waiting for Kafka")
		}
		return kafkaReachable(ctx, cfg.Kafka.Brokers)
	}
	var sp *spool.Spool
	if cfg.Collector.Spool.Enabled() {
		if sp, err = spool.Open(cfg.Collector.Spool, w, cfg.Collector.ProduceTimeout, spool.Deps{Logger: log, Metrics: deps.Registry}); err != nil {
			return err
		}
		// Closed once the collector has answered its last request and
		// the replayer has stopped; what is left is replayed at the
		// next start.
		defer sp.Close()
		producer = sp
		// With a spool the collector takes events while Kafka is away:
		// it is ready while the spool has room, so that a load balancer
		// keeps sending pixels and beacons here rather than nowhere.
		ready = func(ctx context.Context) error { return sp.Room() }
	}
	// Sealing comes first: the spool, like Kafka, holds sealed envelopes.
	if keys != nil {
		producer = &seal.Producer{Keys: keys, Next: producer}
	}
	c, err := ingest.New(cfg.Collector, cfg.Kafka.RawTopic, ingest.Deps{
		Logger:   log,
		Metrics:  deps.Registry,
		Gatherer: deps.Registry,
		Producer: producer,
		Ready:    ready,
		Routes:   pages.Routes,
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
	var srv *httpserve.Server
	if admin != nil {
		if srv, err = newAdminServer("collector_admin", cfg.Admin.Server, deps.Registry, c.Ready, func(*http.ServeMux) {}, log); err != nil {
			l.Close()
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	if sp != nil {
		g.Go(func() error { return sp.Run(gctx) })
	}
	g.Go(func() error { return c.Serve(gctx, l) })
	if admin == nil {
		return g.Wait()
	}
	g.Go(func() error {
		log.Info("admin endpoints listening", zap.String("addr", admin.Addr().String()))
		return srv.Serve(gctx, admin)
	})
	return g.Wait()
}

// RunWorker consumes until ctx ends. It waits for ClickHouse to be
// reachable, applies migrations, loads the opt-out registry, and, when admin
// is not nil, serves /metrics, /healthz, /readyz and the privacy API on it.
func RunWorker(ctx context.Context, cfg Config, deps Deps, admin net.Listener) error {
	log := deps.Logger.Named("worker")
	keys, err := pseudonym.LoadKeyring(cfg.Deidentify.KeySource())
	if err != nil {
		return err
	}
	// The admin endpoints answer from the start: /healthz says the process
	// lives, /readyz says what it still waits for, so probes and Prometheus
	// see a worker that waits for its dependencies rather than a hung one.
	st := &adminState{}
	st.waiting.Store("starting: waiting for Kafka")
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	defer stopAdmin()
	adminDone := make(chan error, 1)
	if admin != nil {
		srv, err := newAdminServer("admin", cfg.Admin.Server, deps.Registry, func(rctx context.Context) error {
			if w := st.waiting.Load().(string); w != "" {
				return errors.New(w)
			}
			if err := kafkaReachable(rctx, cfg.Kafka.Brokers); err != nil {
				return err
			}
			return st.sink.Load().Ping(rctx)
		}, st.routes, log)
		if err != nil {
			return err
		}
		log.Info("admin endpoints listening", zap.String("addr", admin.Addr().String()))
		go func() { adminDone <- srv.Serve(adminCtx, admin) }()
	} else {
		adminDone <- nil
	}
	defer func() {
		stopAdmin()
		if err := <-adminDone; err != nil {
			log.Warn("admin endpoints", zap.Error(err))
		}
	}()

	if err := ensureTopics(ctx, cfg.Kafka, log); err != nil {
		return err
	}
	st.waiting.Store("starting: waiting for ClickHouse")
	s, err := openSink(ctx, cfg.Sink, sink.Deps{Logger: log.Named("sink"), Metrics: deps.Registry})
	if err != nil {
		return err
	}
	defer s.Close()
	st.sink.Store(s)
	st.waiting.Store("starting: applying migrations")
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	if err := privacy.MigrateCluster(ctx, s.Conn(), cfg.Privacy.Database, cfg.Sink.Cluster); err != nil {
		return err
	}
	registry, err := privacy.NewRegistry(privacyConfig(cfg), s.Conn(), keys, log.Named("privacy"))
	if err != nil {
		return err
	}
	// The registry is loaded before the first event is judged.
	st.waiting.Store("starting: loading the opt-out registry")
	if err := registry.Load(ctx); err != nil {
		return fmt.Errorf("loading the opt-out registry: %w", err)
	}
	p, err := NewPipeline(cfg, keys, registry, deps)
	if err != nil {
		return err
	}
	defer p.Close()
	// The worker holds every message to the collector's own limits: one
	// set of rules at both ends of the raw topic.
	limits := cfg.Collector.Limits.Limits
	sealed, stopSealKeys, err := sealKeys(ctx, cfg.Seal, log)
	if err != nil {
		return err
	}
	defer stopSealKeys()
	w, err := worker.New(cfg.Worker, cfg.Kafka, worker.Deps{Logger: log, Metrics: deps.Registry, Sink: s, Rules: &limits, Stages: p.NewStages(),
		Seal: sealed, AcceptPlain: cfg.Seal.AcceptPlain})
	if err != nil {
		return err
	}
	var tasks *privacy.Tasks
	if admin != nil {
		var api *privacy.API
		if tasks, api, err = privacyAPI(cfg, s, keys, registry, log); err != nil {
			return err
		}
		st.api.Store(api)
	}
	st.waiting.Store("")

	// The worker's own context outlives ctx by the drain; the helpers stop
	// when the worker has.
	helpers, stopHelpers := context.WithCancel(context.Background())
	defer stopHelpers()
	var g errgroup.Group
	g.Go(func() error { defer stopHelpers(); return w.Run(ctx) })
	g.Go(func() error { return registry.Run(helpers) })
	g.Go(func() error { return p.Run(helpers) })
	if tasks != nil {
		g.Go(func() error { return runPrivacyTasks(helpers, cfg, deps, tasks, retention(cfg, s, log), log) })
	}
	return g.Wait()
}

// runPrivacyTasks runs the privacy task runner and retention while this
// process is the one elected among the workers (and RunPrivacy processes) of the
// deployment: the member of the group worker.group_id + ".privacy" that
// Kafka gives the one partition of kafka.privacy_topic. A runner that dies
// mid-task is replaced after worker.session_timeout, and the next one
// carries on from the task's last status.
func runPrivacyTasks(ctx context.Context, cfg Config, deps Deps, tasks *privacy.Tasks, ret *privacy.Retention, log *zap.Logger) error {
	elected := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "veil_privacy_task_runner",
		Help: "1 while this process is the elected runner of privacy tasks and retention, 0 otherwise.",
	})
	if deps.Registry != nil {
		deps.Registry.MustRegister(elected)
	}
	e := kafkax.Election{
		Brokers: cfg.Kafka.Brokers, Topic: cfg.Kafka.PrivacyTopic, Group: cfg.Worker.GroupID + ".privacy",
		SessionTimeout: cfg.Worker.SessionTimeout, RebalanceTimeout: cfg.Worker.RebalanceTimeout, Heartbeat: cfg.Worker.Heartbeat,
		OnChange: func(on bool) {
			if on {
				elected.Set(1)
			} else {
				elected.Set(0)
			}
		},
		Logger: log.Named("privacy.election"),
	}
	return e.Run(ctx, func(ctx context.Context) {
		var g errgroup.Group
		g.Go(func() error { return tasks.Run(ctx) })
		g.Go(func() error { return ret.Run(ctx) })
		if err := g.Wait(); err != nil {
			log.Warn("privacy tasks stopped", zap.Error(err))
		}
	})
}

// adminState is what the admin endpoints know of a starting worker.
type adminState struct {
	waiting atomic.Value // string: what start-up waits for; "" once running
	sink    atomic.Pointer[sink.Sink]
	api     atomic.Pointer[privacy.API]
}

// routes sends the privacy API's paths to the API once it exists.
func (st *adminState) routes(mux *http.ServeMux) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api := st.api.Load()
		if api == nil {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		api.ServeHTTP(w, r)
	})
	mux.Handle("/api/", h)
}

func privacyAPI(cfg Config, s *sink.Sink, keys *pseudonym.Keyring, registry *privacy.Registry, log *zap.Logger) (*privacy.Tasks, *privacy.API, error) {
	tasks, err := privacy.NewTasks(privacyConfig(cfg), s.Conn(), cfg.Sink.Database, keys, log.Named("privacy"))
	if err != nil {
		return nil, nil, err
	}
	tasks.OnShards(s.EachShard)
	token, err := privacy.LoadAdminToken(cfg.Privacy)
	if err != nil {
		return nil, nil, err
	}
	if token == "" {
		log.Warn("no admin token (privacy.admin_token_env / privacy.admin_token_file): the privacy API is closed")
	}
	return tasks, privacy.NewAPI(tasks, registry, token, ProjectResolver(cfg.Collector), log.Named("privacy")), nil
}

func retention(cfg Config, s *sink.Sink, log *zap.Logger) *privacy.Retention {
	return privacy.NewRetention(s.Conn(), cfg.Sink.Database, cfg.Privacy.RetentionDays, cfg.Privacy.RetentionEvery, log.Named("retention")).
		OnCluster(cfg.Sink.Cluster, cfg.Sink.Username, cfg.Sink.Password, s.EachShard)
}

// privacyConfig is the privacy section with the cluster the data lives on.
func privacyConfig(cfg Config) privacy.Config {
	p := cfg.Privacy
	p.Cluster = cfg.Sink.Cluster
	p.ClusterUser, p.ClusterPassword = cfg.Sink.Username, cfg.Sink.Password
	return p
}

// RunPrivacy serves the privacy API and carries out privacy tasks on l
// without consuming events, for deployments that keep privacy requests on
// a host of their own.
func RunPrivacy(ctx context.Context, cfg Config, deps Deps, l net.Listener) error {
	log := deps.Logger.Named("privacy")
	keys, err := pseudonym.LoadKeyring(cfg.Deidentify.KeySource())
	if err != nil {
		return err
	}
	s, err := openSink(ctx, cfg.Sink, sink.Deps{Logger: log})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := privacy.MigrateCluster(ctx, s.Conn(), cfg.Privacy.Database, cfg.Sink.Cluster); err != nil {
		return err
	}
	registry, err := privacy.NewRegistry(privacyConfig(cfg), s.Conn(), keys, log)
	if err != nil {
		return err
	}
	tasks, api, err := privacyAPI(cfg, s, keys, registry, log)
	if err != nil {
		return err
	}
	srv, err := newAdminServer("admin", cfg.Admin.Server, deps.Registry, s.Ping, func(mux *http.ServeMux) { mux.Handle("/api/", api) }, log)
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.Go(func() error { return runPrivacyTasks(ctx, cfg, deps, tasks, retention(cfg, s, log), log) })
	g.Go(func() error {
		log.Info("admin endpoints listening", zap.String("addr", l.Addr().String()))
		return srv.Serve(ctx, l)
	})
	return g.Wait()
}

// ProjectResolver maps a project token to its project, as the collector
// does, for the privacy API.
func ProjectResolver(c ingest.Config) func(string) (string, bool) {
	tokens := map[string]string{}
	for _, p := range c.Projects {
		tokens[p.Token] = p.Name
	}
	return func(tok string) (string, bool) {
		if p, ok := tokens[tok]; ok {
			return p, true
		}
		if c.AcceptAnyToken {
			return c.DefaultProject, true
		}
		return "", false
	}
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
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	return privacy.MigrateCluster(ctx, s.Conn(), cfg.Privacy.Database, cfg.Sink.Cluster)
}

// openSink connects to ClickHouse, waiting with backoff while it is down so
// that a worker started before its database simply waits.
func openSink(ctx context.Context, cfg sink.Config, deps sink.Deps) (*sink.Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var s *sink.Sink
	err := untilReachable(ctx, deps.Logger, "ClickHouse", func() (err error) {
		s, err = sink.Open(ctx, cfg, deps)
		return err
	})
	return s, err
}

func ensureTopics(ctx context.Context, cfg kafkax.Config, log *zap.Logger) error {
	return untilReachable(ctx, log, "Kafka", func() error { return kafkax.EnsureTopics(ctx, cfg) })
}

// untilReachable calls try until it succeeds, backing off from 250 ms to
// 10 s between attempts, or until ctx ends.
func untilReachable(ctx context.Context, log *zap.Logger, what string, try func() error) error {
	delay := 250 * time.Millisecond
	for {
		err := try()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		log.Warn(what+" not reachable yet; retrying", zap.Duration("backoff", delay), zap.Error(err))
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

// newAdminServer builds an operations listener: /metrics, /healthz, and
// /readyz with the reason when not ready, and what routes adds, served
// with the admin.server settings. name tells its metrics apart from the
// other listeners' of the process (veil dev runs them all in one).
func newAdminServer(name string, cfg httpserve.Config, reg *prometheus.Registry, ready func(context.Context) error, routes func(*http.ServeMux), log *zap.Logger) (*httpserve.Server, error) {
	mux := http.NewServeMux()
	routes(mux)
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
	return httpserve.New(httpserve.Options{
		Name:            name,
		Key:             "admin.server",
		Config:          cfg,
		Handler:         mux,
		ShutdownTimeout: 5 * time.Second,
	}, httpserve.Deps{Logger: log, Metrics: reg})
}

// WorkerRole is `veil worker`: RunWorker with the admin endpoints on
// admin.listen.
func WorkerRole(ctx context.Context, cfg Config, deps Deps) error {
	l, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	return RunWorker(ctx, cfg, deps, l)
}

// sealKeys loads the keys that seal the raw and dead-letter topics'
// envelopes and re-reads them every seal.reload until the returned stop is
// called (which waits for the reader). Without keys it returns nil and
// says, once, that Kafka will hold envelopes in the clear.
func sealKeys(ctx context.Context, cfg seal.Config, log *zap.Logger) (*seal.Keys, func(), error) {
	if !cfg.Enabled() {
		log.Warn("seal.key_file and seal.key_env are unset: envelopes are written to Kafka unsealed, personal data in the clear")
		return nil, func() {}, nil
	}
	keys, err := seal.Load(cfg.Source(), cfg.ActivationDelay)
	if err != nil {
		return nil, nil, err
	}
	log.Info("seal keys loaded", zap.Uint32s("epochs", keys.Ring().Epochs()))
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); keys.Watch(wctx, cfg.Reload, log) }()
	return keys, func() { cancel(); <-done }, nil
}
