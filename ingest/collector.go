// Package ingest is Veil's collector: an HTTP server that speaks Mixpanel's
// ingestion API, validates and normalises each event, wraps it in an
// envelope and produces it to Kafka.
//
// A request is answered with success only after Kafka has acknowledged every
// valid event in it (acks=all). Invalid events are rejected with a reason and
// never hold back the valid ones beside them. When Kafka cannot take the
// write the answer is 503, which the SDKs retry.
package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/veilhq/veil/event"
)

// Producer is the part of a Kafka writer the collector uses. *kafka.Writer
// implements it; tests substitute fakes that fail on demand.
type Producer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Deps are the collector's collaborators.
type Deps struct {
	Logger   *zap.Logger
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer // served at /metrics; nil serves nothing there
	Producer Producer
	// Ready reports whether the collector's dependencies are reachable, for
	// /readyz. Nil means always ready.
	Ready func(ctx context.Context) error
}

// Collector handles Mixpanel ingestion requests.
type Collector struct {
	cfg      Config
	topic    string
	producer Producer
	tokens   map[string]string // token → project name
	trusted  []netip.Prefix
	log      *zap.Logger
	m        *metrics
	gatherer prometheus.Gatherer
	ready    func(ctx context.Context) error
	now      func() time.Time
}

// New validates cfg and builds a collector that produces to topic.
func New(cfg Config, topic string, deps Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Producer == nil {
		return nil, errors.New("ingest: a producer is required")
	}
	if topic == "" {
		return nil, errors.New("ingest: a topic is required")
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	c := &Collector{
		cfg:      cfg,
		topic:    topic,
		producer: deps.Producer,
		tokens:   make(map[string]string, len(cfg.Projects)),
		log:      deps.Logger,
		m:        newMetrics(deps.Metrics),
		gatherer: deps.Gatherer,
		ready:    deps.Ready,
		now:      time.Now,
	}
	for _, p := range cfg.Projects {
		c.tokens[p.Token] = p.Name
	}
	for _, s := range cfg.TrustedProxies {
		p, _ := parsePrefix(s) // validated above
		c.trusted = append(c.trusted, p)
	}
	return c, nil
}

func (c *Collector) projectFor(token string) (string, bool) {
	if p, ok := c.tokens[token]; ok {
		return p, true
	}
	if c.cfg.AcceptAnyToken {
		return c.cfg.DefaultProject, true
	}
	return "", false
}

// Handler returns the collector's HTTP routes.
func (c *Collector) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, path := range []string{"/track", "/track/"} {
		mux.Handle(path, c.instrument("track", http.HandlerFunc(c.serveTrack)))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", c.serveReady)
	if c.gatherer != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(c.gatherer, promhttp.HandlerOpts{}))
	}
	return mux
}

func (c *Collector) serveReady(w http.ResponseWriter, r *http.Request) {
	if c.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := c.ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}

type ctxKey int

const requestIDKey ctxKey = 0

// statusWriter records the status code for the request metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// instrument gives each request an id and records its metrics.
func (c *Collector) instrument(endpoint string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c.m.inFlight.Inc()
		defer c.m.inFlight.Dec()
		id := newRequestID()
		w.Header().Set("X-Request-Id", id)
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		c.m.requests.WithLabelValues(endpoint, statusClass(sw.status)).Inc()
		c.m.duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	})
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func statusClass(code int) string {
	switch code {
	case 200, 400, 401, 413, 429, 500, 503:
		return http.StatusText(code)
	}
	return "other"
}

// serveTrack handles /track: GET or POST, `data=` as base64 or JSON, one
// event or an array of them.
func (c *Collector) serveTrack(w http.ResponseWriter, r *http.Request) {
	reqID, _ := r.Context().Value(requestIDKey).(string)
	log := c.log.With(zap.String("request_id", reqID), zap.String("endpoint", "track"))
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		c.answer(w, r.URL.Query(), http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	body, err := readBody(r, c.cfg.Limits.MaxBodyBytes)
	if err != nil {
		c.reject(w, r.URL.Query(), log, err)
		return
	}
	c.m.bytes.Add(float64(len(body) + len(r.URL.RawQuery)))
	data, params, err := payload(r, body)
	if err != nil {
		c.reject(w, params, log, err)
		return
	}
	raws, err := splitEvents(data)
	if err != nil {
		c.reject(w, params, log, err)
		return
	}
	if len(raws) > c.cfg.Limits.MaxEventsPerRequest {
		c.m.rejected.WithLabelValues(reasonTooManyEvents).Add(float64(len(raws)))
		c.answer(w, params, http.StatusRequestEntityTooLarge, "request has more than "+strconv.Itoa(c.cfg.Limits.MaxEventsPerRequest)+" events")
		return
	}

	now := c.now()
	env := event.Envelope{
		Version:    event.EnvelopeVersion,
		Kind:       event.KindTrack,
		Endpoint:   "/track",
		ReceivedAt: now.UnixMilli(),
		UserAgent:  r.UserAgent(),
		Signals:    c.signals(r, params),
		RequestID:  reqID,
	}
	if ip := c.clientIP(r); ip.IsValid() {
		env.IP = ip.String()
	}

	msgs := make([]kafka.Message, 0, len(raws))
	var errs []*EventError
	for i, raw := range raws {
		n, e := c.normalizeTrack(raw, i, now)
		if e != nil {
			c.m.rejected.WithLabelValues(e.Reason).Inc()
			errs = append(errs, e)
			continue
		}
		env.Project = n.project
		env.Event = n.object
		value, err := event.MarshalEnvelope(&env)
		if err != nil {
			c.m.rejected.WithLabelValues(reasonMalformed).Inc()
			errs = append(errs, &EventError{Index: i, Reason: reasonMalformed, Msg: "could not be encoded"})
			continue
		}
		msgs = append(msgs, kafka.Message{Key: event.Key(n.project, n.distinctID), Value: value})
	}

	if len(msgs) > 0 {
		if err := c.produce(r.Context(), msgs); err != nil {
			// Nothing reaches the log but the error class: kafka-go's errors
			// name brokers and partitions, not message contents.
			log.Warn("produce failed; answering 503", zap.Int("events", len(msgs)), zap.Error(err))
			w.Header().Set("Retry-After", "1")
			c.answer(w, params, http.StatusServiceUnavailable, "temporarily unable to accept events; retry")
			return
		}
		c.m.accepted.WithLabelValues("track").Add(float64(len(msgs)))
	}
	if len(errs) > 0 {
		log.Info("events rejected", zap.Int("rejected", len(errs)), zap.Int("accepted", len(msgs)), zap.String("first_reason", errs[0].Reason))
		c.answer(w, params, http.StatusOK, joinErrors(errs))
		return
	}
	c.answer(w, params, http.StatusOK, "")
}

func (c *Collector) produce(ctx context.Context, msgs []kafka.Message) error {
	// The client's disconnect must not abandon a write Kafka may already
	// have taken half of; the produce timeout bounds it instead.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ProduceTimeout)
	defer cancel()
	start := time.Now()
	err := c.producer.WriteMessages(ctx, msgs...)
	c.m.produceDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		c.m.produceErrors.Inc()
	}
	return err
}

// signals reads the privacy signals of a request.
func (c *Collector) signals(r *http.Request, params map[string][]string) event.Signals {
	s := event.Signals{
		DNT: r.Header.Get("DNT") == "1",
		GPC: r.Header.Get("Sec-GPC") == "1",
	}
	if ck, err := r.Cookie(c.cfg.OptOutCookie); err == nil && ck.Value != "" && ck.Value != "0" {
		s.OptOut = true
	}
	if ip := params["ip"]; len(ip) > 0 && ip[0] == "0" {
		s.NoGeo = true
	}
	return s
}

// clientIP is the connection's peer, or, when the peer is a trusted proxy,
// the right-most X-Forwarded-For address that is not a trusted proxy.
func (c *Collector) clientIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	peer = peer.Unmap()
	if !c.isTrusted(peer) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return peer // a malformed hop: trust nothing before it
			}
			a = a.Unmap()
			if !c.isTrusted(a) {
				return a
			}
		}
	}
	return peer
}

func (c *Collector) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// reject answers a request-level error.
func (c *Collector) reject(w http.ResponseWriter, params map[string][]string, log *zap.Logger, err error) {
	var re *RequestError
	if !errors.As(err, &re) {
		re = &RequestError{Status: http.StatusBadRequest, Reason: reasonMalformed, Msg: "malformed request"}
	}
	c.m.rejected.WithLabelValues(re.Reason).Inc()
	log.Info("request rejected", zap.String("reason", re.Reason))
	status := re.Status
	if status == http.StatusBadRequest {
		// Mixpanel answers a bad /track payload with 200 and body 0; SDKs
		// treat anything else as retryable, and retrying cannot fix it.
		status = http.StatusOK
	}
	c.answer(w, params, status, re.Msg)
}

// answer writes Mixpanel's response: `1` or `0`, or with verbose=1
// {"status":1,"error":null} / {"status":0,"error":"..."}.
func (c *Collector) answer(w http.ResponseWriter, params map[string][]string, status int, errMsg string) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache, no-store")
	if v := params["verbose"]; len(v) > 0 && v[0] == "1" {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(status)
		resp := struct {
			Status int     `json:"status"`
			Error  *string `json:"error"`
		}{Status: 1}
		if errMsg != "" {
			resp.Status = 0
			resp.Error = &errMsg
		}
		_ = json.NewEncoder(w).Encode(resp)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	if errMsg != "" || status != http.StatusOK {
		_, _ = w.Write([]byte("0"))
		return
	}
	_, _ = w.Write([]byte("1"))
}

func joinErrors(errs []*EventError) string {
	const show = 5
	var b strings.Builder
	for i, e := range errs {
		if i == show {
			b.WriteString("; and " + strconv.Itoa(len(errs)-show) + " more")
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}
