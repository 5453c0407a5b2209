package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Deps are where the load generator writes.
type Deps struct {
	Stdout io.Writer // the report
	Stderr io.Writer // the live progress line (and the text report with JSON)
	// CeilingCommand makes the command of a ceiling in a process of its
	// own, which must run ServeCeiling; nil runs this executable's hidden
	// `ceiling KIND --token TOKEN` command.
	CeilingCommand func(kind, token string) (*exec.Cmd, error)
}

// Report is a run's figures. Rates and latencies cover the measured part of
// the run (after the warmup).
type Report struct {
	Target  string `json:"target"`
	Ceiling string `json:"ceiling,omitempty"`
	// CeilingProcess is where the ceiling ran: "own, nice N" or "shared".
	CeilingProcess string  `json:"ceiling_process,omitempty"`
	Mode           string  `json:"mode"` // "flat-out" or "rate"
	Batch          int     `json:"batch"`
	Concurrency    int     `json:"concurrency"`
	OfferedRate    float64 `json:"offered_events_per_sec,omitempty"`
	// Seconds is the measured time: from the end of the warmup to the last
	// answer.
	Seconds  float64 `json:"seconds"`
	Requests int64   `json:"requests"`
	// Events are the events of requests answered with success.
	Events         int64            `json:"events"`
	Errors         int64            `json:"errors"`
	ErrorClasses   map[string]int64 `json:"error_classes"`
	EventsPerSec   float64          `json:"events_per_sec"`
	RequestsPerSec float64          `json:"requests_per_sec"`
	// LatencyMs runs from when each request was due: at a fixed rate that
	// includes waiting for a free connection. ServiceMs runs from when it
	// was sent. Flat out the two are the same.
	LatencyMs Percentiles `json:"latency_ms"`
	ServiceMs Percentiles `json:"service_ms"`
	EndToEnd  *EndToEnd   `json:"end_to_end,omitempty"`
}

// Run drives the target as cfg says, prints the report and returns it.
func Run(ctx context.Context, cfg Config, deps Deps) (*Report, error) {
	if deps.Stdout == nil {
		deps.Stdout = os.Stdout
	}
	if deps.Stderr == nil {
		deps.Stderr = os.Stderr
	}
	cfg, err := cfg.resolveEndpoints()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var limit int64
	rest := 0
	if cfg.Events > 0 {
		limit = (cfg.Events + int64(cfg.Batch) - 1) / int64(cfg.Batch)
		rest = int(cfg.Events % int64(cfg.Batch))
	}
	gen := newGenerator(cfg.Seed, cfg.Templates, cfg.Batch, rest, cfg.Token, time.Now())

	var srv *server
	if cfg.Ceiling != "" {
		if cfg.CeilingOwnProcess {
			// The ceiling's process writes to Stderr beside this one's
			// progress line.
			deps.Stderr = &lockedWriter{w: deps.Stderr}
			srv, err = spawnCeiling(cfg.Ceiling, cfg.Token, cfg.CeilingNice, deps.CeilingCommand, deps.Stderr)
		} else {
			srv, err = startCeiling(ctx, cfg.Ceiling, cfg.Token, gen)
		}
		if err != nil {
			return nil, err
		}
		cfg.Target = srv.target
	}
	// The ceiling is stopped before the report is written: a ceiling in a
	// process of its own writes to the same Stderr until it has exited.
	stopServer := func() {
		if srv == nil {
			return
		}
		if serr := srv.stop(); serr != nil {
			fmt.Fprintln(deps.Stderr, "loadgen: stopping the", cfg.Ceiling, "server:", serr)
		}
		srv = nil
	}
	defer stopServer()

	var w *watcher
	if cfg.ClickHouseHTTP != "" {
		c := newCounter(cfg.ClickHouseHTTP, cfg.Table, cfg.ClickHouseUser, cfg.ClickHousePassword)
		defer c.close()
		base, err := c.count(ctx)
		if err != nil {
			return nil, err
		}
		w = &watcher{c: c, baseline: base, interval: cfg.WatchInterval}
	}

	r := &runner{cfg: cfg, gen: gen, limit: limit, rest: rest, srv: srv}
	rep, err := r.run(ctx, w, deps)
	stopServer()
	if err != nil {
		return nil, err
	}
	if err := writeReport(cfg, rep, deps); err != nil {
		return nil, err
	}
	return rep, nil
}

// runner is one run in progress.
type runner struct {
	cfg   Config
	gen   *generator
	limit int64   // requests; 0: bounded by time only
	rest  int     // events of the last request, when smaller than Batch
	srv   *server // the ceiling driven, if any

	tgt    target
	dialer *net.Dialer
	rec    *recorder
	pacer  *pacer
	// stopped is set when the caller's context ends: answers that arrive
	// after it are not counted.
	stopped atomic.Bool
}

func (r *runner) run(ctx context.Context, w *watcher, deps Deps) (*Report, error) {
	cfg := r.cfg
	if r.srv == nil || r.srv.produce == nil {
		tgt, err := parseTarget(cfg.Target)
		if err != nil {
			return nil, err
		}
		r.tgt, r.dialer = tgt, loopbackDialer()
	}

	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	r.rec = newRecorder(start, measureFrom)
	r.pacer = newPacer(start, cfg.requestRate(), cfg.Duration, r.limit)

	// The watcher and the progress line run until the drain ends.
	aux, stopAux := context.WithCancel(ctx)
	defer stopAux()
	var auxWG sync.WaitGroup
	if w != nil {
		auxWG.Add(1)
		go func() { defer auxWG.Done(); w.run(aux) }()
	}
	if cfg.Progress > 0 {
		auxWG.Add(1)
		go func() { defer auxWG.Done(); r.progress(aux, w, deps.Stderr) }()
	}
	stopProfile, err := r.profile(ctx, measureFrom)
	if err != nil {
		stopAux()
		auxWG.Wait()
		return nil, err
	}

	stopWatch := context.AfterFunc(ctx, func() { r.stopped.Store(true) })
	defer stopWatch()
	var g errgroup.Group
	for range cfg.Concurrency {
		g.Go(func() error { r.work(ctx); return nil })
	}
	_ = g.Wait()
	sendEnd := time.Now()
	if perr := stopProfile(); perr != nil {
		fmt.Fprintln(deps.Stderr, "loadgen: cpu profile:", perr)
	}

	var e2e *EndToEnd
	if w != nil {
		e2e = r.drain(ctx, w, start, sendEnd)
	}
	stopAux()
	auxWG.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return r.report(e2e), nil
}

// profile starts a CPU profile at from, when one was asked for; the
// returned function stops it. A ceiling in a process of its own is
// profiled there: the profile is the server's, without the generator.
func (r *runner) profile(ctx context.Context, from time.Time) (func() error, error) {
	if r.cfg.CPUProfile == "" {
		return func() error { return nil }, nil
	}
	// The file is there, empty, even when the run ends before the
	// profile starts.
	f, err := os.Create(r.cfg.CPUProfile)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("loadgen.cpuprofile: %w", err)
	}
	var stopHere func() error
	start := func() (err error) {
		stopHere, err = startCPUProfile(r.cfg.CPUProfile)
		return err
	}
	stop := func() error { return stopHere() }
	if r.srv != nil && r.srv.profile != nil {
		path, err := filepath.Abs(r.cfg.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("loadgen.cpuprofile: %w", err)
		}
		start, stop = func() error { return r.srv.profile(path) }, r.srv.stopProfile
	}
	var mu sync.Mutex
	var started, stopped bool
	var startErr error
	t := time.AfterFunc(time.Until(from), func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			startErr = start()
			started = startErr == nil
		}
	})
	return func() error {
		t.Stop()
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if started {
			return stop()
		}
		return startErr
	}, nil
}

// startCPUProfile starts a CPU profile of this process into the file at
// path; the returned function ends it and closes the file.
func startCPUProfile(path string) (func() error, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// work sends requests until the pacer says the run is over.
func (r *runner) work(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	c := &conn{dialer: r.dialer, addr: r.tgt.addr, timeout: r.cfg.Timeout, req: make([]byte, 0, 1024+r.gen.full[0].size), body: make([]byte, 0, r.gen.full[0].size)}
	defer c.close()
	kafka := r.srv != nil && r.srv.produce != nil
	// A request in flight when the caller's context ends ends with it.
	stop := context.AfterFunc(ctx, func() { c.abort() })
	defer stop()
	for ctx.Err() == nil {
		i, due, ok := r.pacer.next(time.Now())
		if !ok {
			return
		}
		t := r.gen.full[int(i%int64(len(r.gen.full)))]
		if r.rest > 0 && i == r.limit-1 {
			t = r.gen.rest
		}
		// The request is built while it waits for its time: building it
		// is the generator's work, not the server's, and is kept out of
		// the latency measured.
		if !kafka {
			r.build(c, t, due)
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		sent := time.Now()
		if r.pacer.rate == 0 {
			due = sent // flat out, a request is due when it is sent
		}
		var class string
		if kafka {
			class = r.produce(ctx, t)
		} else {
			class = r.send(ctx, c, sent)
		}
		end := time.Now()
		if r.stopped.Load() {
			return
		}
		r.rec.record(due, sent, end, t.events, class)
	}
}

// build writes into c.req a request of t's events, due at due.
func (r *runner) build(c *conn, t *template, due time.Time) {
	c.body = t.appendBody(c.body[:0], &r.gen.run, r.gen.take(t.events))
	b := append(c.req[:0], "POST "...)
	b = append(b, r.tgt.path...)
	// mixpanel-browser's cache buster: the time of sending in milliseconds.
	b = strconv.AppendInt(b, due.UnixMilli(), 10)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, r.tgt.host...)
	b = append(b, "\r\nContent-Type: application/x-www-form-urlencoded\r\nUser-Agent: "...)
	b = append(b, t.ua...)
	b = append(b, "\r\nX-Forwarded-For: "...)
	b = append(b, t.xff...)
	b = append(b, "\r\nOrigin: https://shop.example.com\r\nAccept: */*\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(c.body)), 10)
	b = append(b, "\r\n\r\n"...)
	c.req = append(b, c.body...)
}

// send posts the request built in c.req and classifies the answer (""
// for success).
func (r *runner) send(ctx context.Context, c *conn, sent time.Time) string {
	var answer [maxAnswer]byte
	status, text, err := c.roundTrip(ctx, sent, &answer)
	if err != nil {
		if ctx.Err() != nil {
			return classTimeout
		}
		return errorClass(err)
	}
	if status != http.StatusOK {
		return statusClass(status)
	}
	if !responseOK(status, text) {
		return classRejected
	}
	return ""
}

// produce has the Kafka ceiling write the messages of a request of t and
// classifies the outcome ("" for success).
func (r *runner) produce(ctx context.Context, t *template) string {
	pctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if err := r.srv.produce(pctx, t); err != nil {
		if pctx.Err() != nil {
			return classTimeout
		}
		return classIO
	}
	return ""
}

// progress prints one line a second: what the last second did.
func (r *runner) progress(ctx context.Context, w *watcher, out io.Writer) {
	t := time.NewTicker(r.cfg.Progress)
	defer t.Stop()
	last := time.Now()
	var lastRows int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			tk := r.rec.takeTick()
			secs := now.Sub(last).Seconds()
			last = now
			p := percentiles(tk.lat)
			line := fmt.Sprintf("%7.1fs %10.0f ev/s %8.0f req/s  errors %d  p50 %.2fms  p99 %.2fms",
				now.Sub(r.rec.start).Seconds(), float64(tk.events)/secs, float64(tk.requests)/secs, tk.errors, p.P50, p.P99)
			if w != nil {
				if s, ok := w.last(); ok {
					line += fmt.Sprintf("  queryable %d (+%.0f/s)", s.rows, float64(s.rows-lastRows)/secs)
					lastRows = s.rows
					if at, ok := r.rec.acceptedAt(s.rows + 1); ok {
						line += fmt.Sprintf("  oldest unqueryable %.1fs", s.at.Sub(at).Seconds())
					}
				}
			}
			fmt.Fprintln(out, line)
		}
	}
}

// drain waits, up to Drain, for the table's count to reach what was
// accepted, then matches the samples to the acceptances.
func (r *runner) drain(ctx context.Context, w *watcher, start, sendEnd time.Time) *EndToEnd {
	accepted, lastAccept := r.rec.acceptedSoFar()
	deadline := sendEnd.Add(r.cfg.Drain)
	caughtUp := false
	var caughtAt time.Time
	for ctx.Err() == nil {
		if s, ok := w.sample(ctx); ok && s.rows >= accepted {
			caughtUp, caughtAt = true, s.at
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(r.cfg.WatchInterval):
		}
	}
	samples, countErrors := w.snapshot()
	e := &EndToEnd{
		Table:       r.cfg.Table,
		Baseline:    w.baseline,
		Accepted:    accepted,
		CaughtUp:    caughtUp,
		Samples:     len(samples),
		CountErrors: countErrors,
		Method:      lagMethod,
	}
	end := time.Now()
	if caughtUp {
		end = caughtAt
	}
	var duringSend int64
	for _, s := range samples {
		e.Queryable = max(e.Queryable, s.rows)
		if !s.at.After(sendEnd) {
			duringSend = max(duringSend, s.rows)
		}
	}
	if !lastAccept.IsZero() {
		e.DrainSeconds = end.Sub(lastAccept).Seconds()
	}
	if d := end.Sub(start).Seconds(); d > 0 {
		e.EventsPerSec = float64(min(e.Queryable, accepted)) / d
	}
	if d := sendEnd.Sub(start).Seconds(); d > 0 {
		e.DuringSendPerSec = float64(duringSend) / d
	}
	r.rec.mu.Lock()
	acc := slices.Clone(r.rec.accepted)
	r.rec.mu.Unlock()
	h := newLagHist()
	e.Matched = matchLags(start, acc, samples, h)
	e.LagMs = lagPercentiles(h)
	return e
}

func (r *runner) report(e2e *EndToEnd) *Report {
	cfg := r.cfg
	rec := r.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rep := &Report{
		Target:       cfg.Target,
		Ceiling:      cfg.Ceiling,
		Mode:         "flat-out",
		Batch:        cfg.Batch,
		Concurrency:  cfg.Concurrency,
		Requests:     rec.requests,
		Events:       rec.events,
		ErrorClasses: map[string]int64{},
		LatencyMs:    percentiles(rec.lat),
		ServiceMs:    percentiles(rec.service),
		EndToEnd:     e2e,
	}
	switch {
	case cfg.Ceiling != "" && cfg.CeilingOwnProcess:
		rep.CeilingProcess = fmt.Sprintf("own, nice %d", cfg.CeilingNice)
	case cfg.Ceiling != "":
		rep.CeilingProcess = "shared"
	}
	if cfg.Rate > 0 {
		rep.Mode = "rate"
		rep.OfferedRate = cfg.requestRate() * float64(cfg.Batch)
	}
	for _, c := range errorClasses {
		if n := rec.errors[c]; n > 0 {
			rep.ErrorClasses[c] = n
			rep.Errors += n
		}
	}
	if secs := rec.lastEnd.Sub(rec.measureFrom).Seconds(); secs > 0 {
		rep.Seconds = secs
		rep.EventsPerSec = float64(rec.events) / secs
		rep.RequestsPerSec = float64(rec.requests) / secs
	}
	return rep
}

func writeReport(cfg Config, rep *Report, deps Deps) error {
	text := deps.Stdout
	if cfg.JSON {
		text = deps.Stderr
		enc := json.NewEncoder(deps.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
	writeText(text, rep)
	return nil
}

func writeText(out io.Writer, rep *Report) {
	target, conns := rep.Target, "connections"
	switch {
	case rep.Ceiling == CeilingKafka:
		// No HTTP: each of the senders writes a request's messages.
		target, conns = rep.Ceiling+" ceiling (process: "+rep.CeilingProcess+")", "writes at once"
	case rep.Ceiling != "":
		target = rep.Ceiling + " ceiling (process: " + rep.CeilingProcess + ") at " + target
	}
	fmt.Fprintf(out, "\n%s, %s, %d events per request, %d %s", target, rep.Mode, rep.Batch, rep.Concurrency, conns)
	if rep.OfferedRate > 0 {
		fmt.Fprintf(out, ", offered %.0f events/s", rep.OfferedRate)
	}
	fmt.Fprintf(out, "\n  measured      %.1fs: %d requests, %d events accepted, %d errors\n", rep.Seconds, rep.Requests, rep.Events, rep.Errors)
	fmt.Fprintf(out, "  throughput    %.0f events/s, %.0f requests/s\n", rep.EventsPerSec, rep.RequestsPerSec)
	l := rep.LatencyMs
	fmt.Fprintf(out, "  latency (ms)  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", l.P50, l.P90, l.P99, l.P999, l.Max)
	if rep.Mode == "rate" {
		s := rep.ServiceMs
		fmt.Fprintf(out, "  service (ms)  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", s.P50, s.P90, s.P99, s.P999, s.Max)
	}
	for _, c := range errorClasses {
		if n := rep.ErrorClasses[c]; n > 0 {
			fmt.Fprintf(out, "  errors        %-12s %d\n", c, n)
		}
	}
	if e := rep.EndToEnd; e != nil {
		fmt.Fprintf(out, "  end to end    %d of %d accepted events queryable in %s (caught up: %v, %.1fs after the last acceptance)\n",
			e.Queryable, e.Accepted, e.Table, e.CaughtUp, e.DrainSeconds)
		fmt.Fprintf(out, "                %.0f events/s overall, %.0f events/s while sending\n", e.EventsPerSec, e.DuringSendPerSec)
		fmt.Fprintf(out, "  lag (ms)      p50 %.0f  p90 %.0f  p99 %.0f  max %.0f  (%d events matched, %d samples)\n",
			e.LagMs.P50, e.LagMs.P90, e.LagMs.P99, e.LagMs.Max, e.Matched, e.Samples)
	}
}
