// Package ingest is Veil's collector: an HTTP server that speaks Mixpanel's
// ingestion API (/track, /engage, /groups, /import), validates and
// normalises each event and profile update, wraps it in an envelope and
// produces it to Kafka.
//
// A request is answered with success only after Kafka has acknowledged every
// valid record in it (acks=all). Invalid records are rejected with a reason
// and never hold back the valid ones beside them. When Kafka cannot take the
// write the answer is 503, which the SDKs retry; with a spool
// (collector.spool, the spool package) the messages Kafka cannot take
// within the spool's deadline are kept on disk and replayed, and the
// answer is success.
package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/ingest/spool"
	"github.com/veilhq/veil/internal/forwarded"
	"github.com/veilhq/veil/internal/httpserve"
	"github.com/veilhq/veil/internal/kafkax"
)

// Producer is the part of a Kafka writer the collector uses. Veil's
// kafkax.Producer implements it, as does kafka-go's *kafka.Writer; tests
// substitute fakes that fail on demand.
//
// A producer that holds no reference to the messages of a WriteMessages
// call once it has returned nil may say so with a method
// ReleasesMessages() bool: the collector then reuses their keys' and
// values' memory for later requests. A synchronous *kafka.Writer is taken
// to say so.
type Producer = kafkax.MessageWriter

// Deps are the collector's collaborators.
type Deps struct {
	Logger   *zap.Logger
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer // served at /metrics; nil serves nothing there
	Producer Producer
	// Ready reports whether the collector's dependencies are reachable.
	// Nil means always ready. Its error may name brokers and addresses:
	// the public /readyz says only whether the collector is ready, and
	// Collector.Ready gives the reason to an admin listener.
	Ready func(ctx context.Context) error
	// Routes, when set, registers further handlers on the collector's
	// listener: the opt-out pages, and in `veil dev` the privacy API.
	Routes func(mux *http.ServeMux)
}

// Collector handles Mixpanel ingestion requests.
type Collector struct {
	cfg       Config
	topic     string
	producer  Producer
	tokens    map[string]string // token → project name
	creds     *credentials
	limiter   *rateLimiter
	proxies   *forwarded.Proxies // whose X-Forwarded-* headers are believed
	log       *zap.Logger
	reqLog    *zap.Logger // log, reporting the caller of requestLog's methods
	deadlines *produceDeadlines
	m         *metrics
	gatherer  prometheus.Gatherer
	ready     func(ctx context.Context) error
	routes    func(mux *http.ServeMux)
	server    *httpserve.Server
	now       func() time.Time
	scratch   sync.Pool // *requestScratch
	budget    *bodyBudget
	// reuseMessages says the producer holds no message once a write has
	// returned nil: their keys and values are then reused.
	reuseMessages bool
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
		gatherer: deps.Gatherer,
		ready:    deps.Ready,
		routes:   deps.Routes,
		now:      time.Now,
	}
	c.reqLog = c.log.WithOptions(zap.AddCallerSkip(1))
	// In front of a spool, a write gets the spool's deadline (it is
	// spooled after that), and the contexts that carry it are shared as
	// the produce timeout's are; the spool's replays keep the produce
	// timeout.
	writeTimeout := cfg.ProduceTimeout
	if sp, ok := deps.Producer.(*spool.Spool); ok {
		writeTimeout = min(writeTimeout, sp.Deadline())
	}
	c.deadlines = newProduceDeadlines(writeTimeout)
	// One byte over the largest body: a body is read until it is seen to
	// end or to exceed max_body_bytes.
	c.budget = &bodyBudget{max: max(cfg.Limits.MaxInflightBytes, cfg.Limits.MaxBodyBytes+1)}
	c.m = newMetrics(deps.Metrics, c.budget)
	c.scratch.New = func() any { return new(requestScratch) }
	c.reuseMessages = releasesMessages(deps.Producer)
	for _, p := range cfg.Projects {
		c.tokens[p.Token] = p.Name
	}
	var err error
	if c.proxies, err = forwarded.New(cfg.TrustedProxies); err != nil {
		return nil, err // validated above
	}
	srv, err := httpserve.New(httpserve.Options{
		Name:            "collector",
		Key:             "collector.server",
		Config:          cfg.Server,
		Handler:         c.Handler(),
		CertFile:        cfg.TLSCert,
		KeyFile:         cfg.TLSKey,
		ShutdownTimeout: cfg.ShutdownTimeout,
	}, httpserve.Deps{Logger: c.log, Metrics: deps.Metrics})
	if err != nil {
		return nil, err
	}
	c.server = srv
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

// projectForBytes is projectFor of a token's bytes, without making a
// string of them.
func (c *Collector) projectForBytes(token []byte) (string, bool) {
	if p, ok := c.tokens[string(token)]; ok {
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
		h := c.ingestHandler(ep)
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

// readyTimeout bounds a readiness check: probes time out after a few
// seconds themselves.
const readyTimeout = 2 * time.Second

// Ready reports whether the collector can take events, and when it
// cannot, why: the error may name brokers and their addresses, for an
// admin listener, never for the public one.
func (c *Collector) Ready(ctx context.Context) error {
	if c.ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return c.ready(ctx)
}

// serveReady is the public /readyz: a load balancer needs to know only
// whether to send traffic, and anyone on the Internet may ask.
func (c *Collector) serveReady(w http.ResponseWriter, r *http.Request) {
	if err := c.Ready(r.Context()); err != nil {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// ingestHandler serves one ingestion endpoint, giving each request an id
// and recording its metrics.
func (c *Collector) ingestHandler(ep *endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c.m.inFlight.Inc()
		defer c.m.inFlight.Dec()
		id := newRequestID()
		w.Header().Set("X-Request-Id", id)
		status := c.serveIngest(w, r, ep, id)
		c.m.requests.WithLabelValues(ep.name, statusClass(status)).Inc()
		c.m.duration.WithLabelValues(ep.name).Observe(time.Since(start).Seconds())
	}
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

// requestLog is a request's logger, made only when something is logged:
// most requests log nothing.
type requestLog struct {
	c     *Collector
	reqID string
	ep    *endpoint
}

func (l requestLog) Info(msg string, fields ...zap.Field) {
	if ce := l.c.reqLog.Check(zap.InfoLevel, msg); ce != nil {
		ce.Write(l.fields(fields)...)
	}
}

func (l requestLog) Warn(msg string, fields ...zap.Field) {
	if ce := l.c.reqLog.Check(zap.WarnLevel, msg); ce != nil {
		ce.Write(l.fields(fields)...)
	}
}

// fields puts the request's fields first, as a child logger would.
func (l requestLog) fields(fields []zap.Field) []zap.Field {
	return append([]zap.Field{zap.String("request_id", l.reqID), zap.String("endpoint", l.ep.name)}, fields...)
}

// serveIngest serves one ingestion request: GET or POST, the records in a
// data parameter (base64 or JSON, in the query or a form body) or in a
// JSON, newline-delimited JSON or gzip-encoded body. It returns the status
// answered.
func (c *Collector) serveIngest(w http.ResponseWriter, r *http.Request, ep *endpoint, reqID string) int {
	cors(w, r)
	if r.Method == http.MethodOptions {
		preflight(w, r)
		return http.StatusOK
	}
	log := requestLog{c, reqID, ep}
	q := parseQuery(r.URL.RawQuery)
	queryOnly := params{query: &q}
	// Until the body is read, guess how the events come: a form or a
	// data parameter is how the SDKs that read 1/0 answers send them.
	st := styleFor(ep, &queryOnly, q.has[qData] || isFormType(r.Header.Get("Content-Type")))
	reject := func(st answerStyle, re *RequestError, events int) int {
		c.m.rejected.WithLabelValues(re.Reason).Add(float64(max(events, 1)))
		log.Info("request rejected", zap.String("reason", re.Reason), zap.Int("status", re.Status))
		return c.answerError(w, st, re)
	}
	if re := c.badWrapper(&st); re != nil {
		c.m.rejected.WithLabelValues(re.Reason).Inc()
		_, body := errorBody(st, re)
		return c.write(w, st, http.StatusBadRequest, body)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST, OPTIONS")
		return reject(st, &RequestError{Status: http.StatusMethodNotAllowed, Reason: reasonMalformed, Msg: "method not allowed; use GET or POST"}, 1)
	}
	var importProject string
	if ep.kind == kindImport {
		p, re := c.importProject(r, &queryOnly)
		if re != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="veil", charset="UTF-8"`)
			// Credentials are checked before the body is read, and
			// Mixpanel answers them in one shape however the records
			// come; every library reports its error text from it.
			ast := st
			ast.shape = shapeImport
			return reject(ast, re, 1)
		}
		importProject = p
	}

	s := c.scratch.Get().(*requestScratch)
	keep := true // whether s may serve another request
	defer func() {
		if keep {
			c.putScratch(s)
		}
	}()
	// The body's memory is given back when the answer is written, whether
	// or not the scratch serves another request.
	defer s.body.release(c.budget)
	wire, err := readBody(r, &s.body, c.cfg.Limits.MaxBodyBytes, &s.counted, c.budget)
	c.m.bytes.Add(float64(wire + int64(len(r.URL.RawQuery))))
	if err != nil {
		re := asRequestError(err)
		if re.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		return reject(st, re, 1)
	}
	p, err := extractPayload(r, s.body.buf, &q, &s.payload)
	// Form fields (verbose, ip, ...) count as parameters too; the Python
	// library sends them there.
	reqParams := params{query: &q, form: p.form}
	st = styleFor(ep, &reqParams, p.fromParam)
	if err != nil {
		return reject(st, asRequestError(err), 1)
	}
	recs, total, err := appendRecords(s.recs[:0], repairUTF8(p.data), p.ndjson, c.cfg.Limits.MaxEventsPerRequest)
	if err != nil {
		return reject(st, asRequestError(err), 1)
	}
	if total > c.cfg.Limits.MaxEventsPerRequest {
		return reject(st, &RequestError{Status: http.StatusRequestEntityTooLarge, Reason: reasonTooManyEvents,
			Msg: "request has more than " + strconv.Itoa(c.cfg.Limits.MaxEventsPerRequest) + " events"}, total)
	}

	now := c.now()
	env := event.Envelope{
		Version:    event.EnvelopeVersion,
		Kind:       ep.envKind,
		Endpoint:   ep.path,
		ReceivedAt: now.UnixMilli(),
		UserAgent:  r.UserAgent(),
		Signals:    c.signals(r, &reqParams),
		RequestID:  reqID,
	}
	// An import comes from a server replaying history: its address
	// says nothing about where the events happened, unless the client
	// asks for it with ip=1 (the Node library's geolocate option).
	if ep.kind != kindImport || reqParams.get(qIP) == "1" {
		if ip := c.clientIP(r); ip.IsValid() {
			env.IP = ip.String()
		}
	}

	s.recs = recs
	norm, res := c.normalizeRecords(ep, recs, now, importProject, s)

	if len(norm) > 0 {
		if c.limiter != nil {
			s.counts = projectCounts(s.counts[:0], norm)
			if ok, wait := c.limiter.admit(s.counts, now); !ok {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				return reject(st, &RequestError{Status: http.StatusTooManyRequests, Reason: reasonRateLimited,
					Msg: "Project exceeded rate limits. Please retry the request with exponential backoff."}, len(norm))
			}
		}
		s.envelopes.reset(&env)
		values := s.values[:0]
		if !c.reuseMessages {
			values = nil // the producer may hold on to them
		}
		values = slices.Grow(values, s.envelopes.sizeAll(norm))
		msgs := s.msgs[:0]
		for i := range norm {
			from := len(values)
			values = s.envelopes.append(values, &norm[i])
			msgs = append(msgs, kafka.Message{Key: norm[i].key, Value: values[from:len(values):len(values)]})
		}
		s.values, s.msgs = values, msgs
		err := c.produce(msgs)
		if err != nil {
			// The producer may still hold the messages (kafka-go does
			// when the write timed out): their memory is not reused.
			keep = false
		}
		if errors.Is(err, spool.ErrSpooled) {
			// Kafka did not take them in time; the spool has them on
			// disk and will replay them: the request is answered as if
			// Kafka had.
			err = nil
		}
		if err != nil {
			// Nothing reaches the log but the error class: kafka-go's
			// errors name brokers and partitions, not message contents.
			log.Warn("produce failed; answering 503", zap.Int("messages", len(msgs)), zap.Error(err))
			w.Header().Set("Retry-After", "1")
			return c.answerError(w, st, &RequestError{Status: http.StatusServiceUnavailable, Reason: "", Msg: "temporarily unable to accept events; retry"})
		}
		c.m.accepted.WithLabelValues(ep.name).Add(float64(len(msgs)))
	}
	if len(res.errs) > 0 {
		log.Info("records rejected", zap.Int("rejected", len(res.errs)), zap.Int("accepted", res.accepted), zap.String("first_reason", res.errs[0].Reason))
	}
	return c.answerResult(w, st, res)
}

// normalizeRecords validates and normalises a request's records one by
// one, counting each rejection by its reason.
func (c *Collector) normalizeRecords(ep *endpoint, recs [][]byte, now time.Time, importProject string, s *requestScratch) ([]normalized, result) {
	var res result
	norm := slices.Grow(s.norm[:0], len(recs))
	scratch := &s.events
	scratch.objects = scratch.objects[:0]
	scratch.ids.reset()
	if c.reuseMessages {
		scratch.keys = scratch.keys[:0]
	} else {
		scratch.keys = make([]byte, 0, len(recs)*64) // the producer may hold on to them
	}
	for i, raw := range recs {
		var e *EventError
		switch ep.kind {
		case kindTrack, kindImport:
			var n normalized
			if n, e = c.normalizeEvent(raw, i, now, importProject, scratch); e == nil {
				norm = append(norm, n)
			}
		case kindEngage:
			norm, e = c.normalizeUpdate(raw, i, now, event.KindEngage, norm, &scratch.ids)
		case kindGroups:
			norm, e = c.normalizeUpdate(raw, i, now, event.KindGroups, norm, &scratch.ids)
		}
		if e != nil {
			c.m.rejected.WithLabelValues(e.Reason).Inc()
			res.errs = append(res.errs, e)
			continue
		}
		res.accepted++
	}
	s.norm = norm
	return norm, res
}

func isFormType(contentType string) bool {
	ct := mediaType(contentType)
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

// maxPooledRecords bounds the record slices kept for reuse likewise.
const maxPooledRecords = 4096

// requestScratch is the memory an ingestion request works in. Requests
// take it from a pool and give it back, so that a request allocates little
// beyond what net/http does and what it hands to others.
type requestScratch struct {
	body      requestBody
	counted   countingReader
	payload   payloadBuffers
	recs      [][]byte
	events    eventScratch
	norm      []normalized
	counts    []projectCount
	envelopes envelopeWriter
	// values holds the messages' envelopes back to back. Like
	// events.keys, it is only reused when the producer is done with a
	// write's messages once it returns (reuseMessages).
	values []byte
	msgs   []kafka.Message
}

func (c *Collector) putScratch(s *requestScratch) {
	if cap(s.body.buf) > maxPooledBody || cap(s.payload.form) > maxPooledBody || cap(s.payload.data) > maxPooledBody ||
		cap(s.events.objects) > maxPooledBody || cap(s.events.keys) > maxPooledBody || cap(s.values) > maxPooledBody ||
		cap(s.recs) > maxPooledRecords || cap(s.norm) > maxPooledRecords || cap(s.msgs) > maxPooledRecords {
		return
	}
	s.body.buf = s.body.buf[:0]
	s.counted = countingReader{}
	// Drop what points elsewhere: the request's body, its strings.
	clear(s.recs)
	clear(s.norm)
	clear(s.msgs)
	s.recs, s.norm, s.msgs, s.counts = s.recs[:0], s.norm[:0], s.msgs[:0], s.counts[:0]
	if !c.reuseMessages {
		s.events.keys, s.values = nil, nil
	}
	c.scratch.Put(s)
}

// releasesMessages reports whether p is done with the messages of a
// WriteMessages call once it has returned nil, so that their memory can
// serve later requests (kafkax.ReleasesMessages).
func releasesMessages(p Producer) bool { return kafkax.ReleasesMessages(p) }

// projectCounts appends the count of messages of each project to out, for
// the rate limiter.
func projectCounts(out []projectCount, norm []normalized) []projectCount {
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

func (c *Collector) produce(msgs []kafka.Message) error {
	// The client's disconnect must not abandon a write Kafka may already
	// have taken half of; the produce timeout bounds it instead.
	ctx := c.deadlines.context()
	start := time.Now()
	err := c.producer.WriteMessages(ctx, msgs...)
	c.m.produceDuration.Observe(time.Since(start).Seconds())
	// A refusal of the spool's that did not try Kafka (it held messages
	// the request must not overtake) is no Kafka error; the spool counts
	// it.
	var refused *spool.RefusedError
	if err != nil && (!errors.As(err, &refused) || refused.Cause != nil) {
		c.m.produceErrors.WithLabelValues(kafkax.ErrorReason(err)).Inc()
	}
	return err
}

// signals reads the privacy signals of a request.
func (c *Collector) signals(r *http.Request, params *params) event.Signals {
	// Indexed by their canonical form: Header.Get would canonicalise
	// "DNT" and "Sec-GPC" into new strings on every request.
	s := event.Signals{
		DNT: headerValue(r.Header, "Dnt") == "1",
		GPC: headerValue(r.Header, "Sec-Gpc") == "1",
	}
	if len(r.Header["Cookie"]) > 0 {
		if ck, err := r.Cookie(c.cfg.OptOutCookie); err == nil && ck.Value != "" && ck.Value != "0" {
			s.OptOut = true
		}
	}
	if params.get(qIP) == "0" {
		s.NoGeo = true
	}
	return s
}

// headerValue is h.Get(key) for a key already in canonical form.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// clientIP is the client's address as seen through the trusted proxies.
func (c *Collector) clientIP(r *http.Request) netip.Addr { return c.proxies.ClientIP(r) }
