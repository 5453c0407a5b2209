// Package ingest is Veil's collector: an HTTP server that speaks Mixpanel's
// ingestion API (/track, /engage, /groups, /import), validates and
// normalises each event and profile update, wraps it in an envelope and
// produces it to Kafka.
//
// A request is answered with success only after Kafka has acknowledged every
// valid record in it (acks=all). Invalid records are rejected with a reason
// and never hold back the valid ones beside them. When Kafka cannot take the
// write the answer is 503, which the SDKs retry.
package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
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
	// Routes, when set, registers further handlers on the collector's
	// listener: the opt-out pages, and in `veil dev` the privacy API.
	Routes func(mux *http.ServeMux)
}

// Collector handles Mixpanel ingestion requests.
type Collector struct {
	cfg      Config
	topic    string
	producer Producer
	tokens   map[string]string // token → project name
	creds    *credentials
	limiter  *rateLimiter
	trusted  []netip.Prefix
	log      *zap.Logger
	m        *metrics
	gatherer prometheus.Gatherer
	ready    func(ctx context.Context) error
	routes   func(mux *http.ServeMux)
	now      func() time.Time
	bodies   sync.Pool // *bytes.Buffer for request bodies
	buffers  sync.Pool // *payloadBuffers
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
		creds:    newCredentials(cfg),
		limiter:  newRateLimiter(cfg.Limits),
		log:      deps.Logger,
		m:        newMetrics(deps.Metrics),
		gatherer: deps.Gatherer,
		ready:    deps.Ready,
		routes:   deps.Routes,
		now:      time.Now,
	}
	c.bodies.New = func() any { return new(bytes.Buffer) }
	c.buffers.New = func() any { return new(payloadBuffers) }
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

// endpointKind says which Mixpanel endpoint a request came to.
type endpointKind uint8

const (
	kindTrack endpointKind = iota
	kindEngage
	kindGroups
	kindImport
)

type endpoint struct {
	name    string // metric label and log field
	path    string // Envelope.Endpoint
	kind    endpointKind
	envKind event.Kind
}

var endpoints = []endpoint{
	{"track", "/track", kindTrack, event.KindTrack},
	{"engage", "/engage", kindEngage, event.KindEngage},
	{"groups", "/groups", kindGroups, event.KindGroups},
	{"import", "/import", kindImport, event.KindTrack},
}

// Handler returns the collector's HTTP routes. Each ingestion endpoint
// answers with and without a trailing slash: mixpanel-browser calls
// /track/?…, the server libraries /track?….
func (c *Collector) Handler() http.Handler {
	mux := http.NewServeMux()
	for i := range endpoints {
		ep := &endpoints[i]
		h := c.instrument(ep.name, c.ingestHandler(ep))
		mux.Handle(ep.path, h)
		mux.Handle(ep.path+"/{$}", h)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", c.serveReady)
	if c.gatherer != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(c.gatherer, promhttp.HandlerOpts{}))
	}
	if c.routes != nil {
		c.routes(mux)
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
	case 200, 400, 401, 405, 413, 415, 429, 500, 503:
		return http.StatusText(code)
	}
	return "other"
}

// ingestHandler serves one ingestion endpoint: GET or POST, the records in
// a data parameter (base64 or JSON, in the query or a form body) or in a
// JSON, newline-delimited JSON or gzip-encoded body.
func (c *Collector) ingestHandler(ep *endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cors(w, r)
		if r.Method == http.MethodOptions {
			preflight(w, r)
			return
		}
		reqID, _ := r.Context().Value(requestIDKey).(string)
		log := c.log.With(zap.String("request_id", reqID), zap.String("endpoint", ep.name))
		query := r.URL.Query()
		// Until the body is read, guess how the events come: a form or a
		// data parameter is how the SDKs that read 1/0 answers send them.
		st := styleFor(ep, query, query, query.Has("data") || isFormType(r.Header.Get("Content-Type")))
		reject := func(st answerStyle, re *RequestError, events int) {
			c.m.rejected.WithLabelValues(re.Reason).Add(float64(max(events, 1)))
			log.Info("request rejected", zap.String("reason", re.Reason), zap.Int("status", re.Status))
			c.answerError(w, st, re)
		}
		if st.callback != "" && !validCallback(st.callback) {
			st.callback = ""
			if st.shape == shapePlain {
				st.shape = shapeVerbose // a bare 0 would not say what is wrong
			}
			re := badRequest(reasonInvalidParameter, "callback must be a JavaScript identifier path such as mp.callbacks.cb_1")
			c.m.rejected.WithLabelValues(re.Reason).Inc()
			st.img = false
			_, body := errorBody(st, re)
			c.write(w, st, http.StatusBadRequest, body)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST, OPTIONS")
			reject(st, &RequestError{Status: http.StatusMethodNotAllowed, Reason: reasonMalformed, Msg: "method not allowed; use GET or POST"}, 1)
			return
		}
		var importProject string
		if ep.kind == kindImport {
			p, re := c.importProject(r, query)
			if re != nil {
				w.Header().Set("WWW-Authenticate", `Basic realm="veil", charset="UTF-8"`)
				reject(st, re, 1)
				return
			}
			importProject = p
		}

		buf := c.bodies.Get().(*bytes.Buffer)
		defer c.putBody(buf)
		wire, err := readBody(r, buf, c.cfg.Limits.MaxBodyBytes)
		c.m.bytes.Add(float64(wire + int64(len(r.URL.RawQuery))))
		if err != nil {
			reject(st, asRequestError(err), 1)
			return
		}
		pb := c.buffers.Get().(*payloadBuffers)
		defer c.putBuffers(pb)
		p, err := extractPayload(r, buf.Bytes(), query, pb)
		st = styleFor(ep, query, p.params, p.fromParam)
		if err != nil {
			reject(st, asRequestError(err), 1)
			return
		}
		recs, total, err := splitRecords(repairUTF8(p.data), p.ndjson, c.cfg.Limits.MaxEventsPerRequest)
		if err != nil {
			reject(st, asRequestError(err), 1)
			return
		}
		if total > c.cfg.Limits.MaxEventsPerRequest {
			reject(st, &RequestError{Status: http.StatusRequestEntityTooLarge, Reason: reasonTooManyEvents,
				Msg: "request has more than " + strconv.Itoa(c.cfg.Limits.MaxEventsPerRequest) + " events"}, total)
			return
		}

		now := c.now()
		env := event.Envelope{
			Version:    event.EnvelopeVersion,
			Kind:       ep.envKind,
			Endpoint:   ep.path,
			ReceivedAt: now.UnixMilli(),
			UserAgent:  r.UserAgent(),
			Signals:    c.signals(r, p.params),
			RequestID:  reqID,
		}
		// An import comes from a server replaying history: its address
		// says nothing about where the events happened, unless the client
		// asks for it with ip=1 (the Node library's geolocate option).
		if ep.kind != kindImport || p.params.Get("ip") == "1" {
			if ip := c.clientIP(r); ip.IsValid() {
				env.IP = ip.String()
			}
		}

		norm, res := c.normalizeRecords(ep, recs, now, importProject)

		if len(norm) > 0 {
			if ok, wait := c.limiter.admit(projectCounts(norm), now); !ok {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				reject(st, &RequestError{Status: http.StatusTooManyRequests, Reason: reasonRateLimited,
					Msg: "project exceeded its rate limit; retry with exponential backoff"}, len(norm))
				return
			}
			msgs := make([]kafka.Message, 0, len(norm))
			envs := newEnvelopeWriter(&env)
			for i := range norm {
				msgs = append(msgs, kafka.Message{Key: norm[i].key, Value: envs.write(&norm[i])})
			}
			if err := c.produce(r.Context(), msgs); err != nil {
				// Nothing reaches the log but the error class: kafka-go's
				// errors name brokers and partitions, not message contents.
				log.Warn("produce failed; answering 503", zap.Int("messages", len(msgs)), zap.Error(err))
				w.Header().Set("Retry-After", "1")
				c.answerError(w, st, &RequestError{Status: http.StatusServiceUnavailable, Reason: "", Msg: "temporarily unable to accept events; retry"})
				return
			}
			c.m.accepted.WithLabelValues(ep.name).Add(float64(len(msgs)))
		}
		if len(res.errs) > 0 {
			log.Info("records rejected", zap.Int("rejected", len(res.errs)), zap.Int("accepted", res.accepted), zap.String("first_reason", res.errs[0].Reason))
		}
		c.answerResult(w, st, res)
	}
}

// normalizeRecords validates and normalises a request's records one by
// one, counting each rejection by its reason.
func (c *Collector) normalizeRecords(ep *endpoint, recs [][]byte, now time.Time, importProject string) ([]normalized, result) {
	var res result
	norm := make([]normalized, 0, len(recs))
	var scratch scannedEvent
	for i, raw := range recs {
		var e *EventError
		switch ep.kind {
		case kindTrack, kindImport:
			var n normalized
			if n, e = c.normalizeEvent(raw, i, now, importProject, &scratch); e == nil {
				norm = append(norm, n)
			}
		case kindEngage:
			norm, e = c.normalizeUpdate(raw, i, now, event.KindEngage, norm)
		case kindGroups:
			norm, e = c.normalizeUpdate(raw, i, now, event.KindGroups, norm)
		}
		if e != nil {
			c.m.rejected.WithLabelValues(e.Reason).Inc()
			res.errs = append(res.errs, e)
			continue
		}
		res.accepted++
	}
	return norm, res
}

func isFormType(contentType string) bool {
	ct, _, _ := mime.ParseMediaType(contentType)
	return ct == "application/x-www-form-urlencoded" || ct == "text/plain"
}

func asRequestError(err error) *RequestError {
	var re *RequestError
	if errors.As(err, &re) {
		return re
	}
	return badRequest(reasonMalformed, "malformed request")
}

// maxPooledBody bounds the buffers kept for reuse, so that one huge
// request does not pin its memory for good.
const maxPooledBody = 1 << 20

func (c *Collector) putBody(b *bytes.Buffer) {
	if b.Cap() > maxPooledBody {
		return
	}
	b.Reset()
	c.bodies.Put(b)
}

func (c *Collector) putBuffers(b *payloadBuffers) {
	if cap(b.form) > maxPooledBody || cap(b.data) > maxPooledBody {
		return
	}
	c.buffers.Put(b)
}

// projectCounts counts the messages of each project, for the rate limiter.
func projectCounts(norm []normalized) []projectCount {
	var out []projectCount
next:
	for _, n := range norm {
		for i := range out {
			if out[i].project == n.project {
				out[i].n++
				continue next
			}
		}
		out = append(out, projectCount{n.project, 1})
	}
	return out
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
