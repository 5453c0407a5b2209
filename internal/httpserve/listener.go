package httpserve

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Accept error classes: a fixed set, used as a metric label and in logs.
const (
	classDescriptors = "descriptors" // EMFILE, ENFILE: the process or the system is out of file descriptors
	classMemory      = "memory"      // ENOBUFS, ENOMEM
	classAborted     = "aborted"     // the client left before the connection was accepted
	classTimeout     = "timeout"
	classOther       = "other"
)

var acceptErrorClasses = []string{classDescriptors, classMemory, classAborted, classTimeout, classOther}

// acceptLogInterval spaces the log lines of failing accepts: a full
// descriptor table fails every accept net/http retries, up to one a
// millisecond.
const acceptLogInterval = 10 * time.Second

// listener caps the connections served at once and makes accept errors
// visible. golang.org/x/net/netutil.LimitListener caps too, but says
// nothing of the connections it holds back; this one counts them.
//
// A connection is accepted first and then waits for a slot, so that only
// connections that really waited are counted; while it waits the accept
// loop does too, and later clients wait in the kernel's queue, holding no
// descriptor of the process. While it waits, the server closes its idle
// connections (kept alive between requests, or silent for 5 s since they
// connected) as they become idle: a slot is not held by a client doing
// nothing while another waits, and a flood of idle connections cannot lock
// clients out for the idle timeout. (HTTP/2 connections are closed by
// their idle timeout only: net/http does not close them on demand.)
type listener struct {
	net.Listener
	name  string
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
	m     *metrics
	log   *zap.Logger
	// closeIdle closes the server's idle connections, freeing their slots.
	closeIdle func()

	logEvery rate.Sometimes
	unlogged atomic.Int64 // accept errors since the last log line
}

func newListener(l net.Listener, max int, m *metrics, log *zap.Logger, name string, closeIdle func()) *listener {
	return &listener{
		Listener:  l,
		name:      name,
		slots:     make(chan struct{}, max),
		done:      make(chan struct{}),
		m:         m,
		log:       log,
		closeIdle: closeIdle,
		logEvery:  rate.Sometimes{First: 1, Interval: acceptLogInterval},
	}
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			l.acceptFailed(err)
		}
		return nil, err
	}
	if !l.waitForSlot() {
		c.Close()
		return nil, net.ErrClosed
	}
	l.m.open.Inc()
	return &conn{Conn: c, l: l}, nil
}

// idleCloseInterval is how often a waiting connection has the server
// close the connections that have become idle since it last asked.
const idleCloseInterval = 100 * time.Millisecond

// waitForSlot takes a slot, waiting for one when the listener is at its
// cap, and reports false when the listener is closed meanwhile.
func (l *listener) waitForSlot() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	l.m.waited.Inc()
	tick := time.NewTicker(idleCloseInterval)
	defer tick.Stop()
	for {
		l.closeIdle()
		select {
		case l.slots <- struct{}{}:
			return true
		case <-l.done:
			return false
		case <-tick.C:
		}
	}
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// acceptFailed counts an accept error by class and logs it, at most once
// per acceptLogInterval, with the class and the system's word for it:
// never the error's text, which names addresses.
func (l *listener) acceptFailed(err error) {
	class, errno := acceptErrorClass(err)
	l.m.acceptErrors.WithLabelValues(class).Inc()
	l.unlogged.Add(1)
	l.logEvery.Do(func() {
		fields := []zap.Field{zap.String("listener", l.name), zap.String("class", class), zap.Int64("errors", l.unlogged.Swap(0))}
		if errno != 0 {
			fields = append(fields, zap.String("errno", errno.Error()))
		}
		l.log.Warn("accepting a connection failed; retrying", fields...)
	})
}

func acceptErrorClass(err error) (string, syscall.Errno) {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EMFILE, syscall.ENFILE:
			return classDescriptors, errno
		case syscall.ENOBUFS, syscall.ENOMEM:
			return classMemory, errno
		case syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO:
			return classAborted, errno
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return classTimeout, errno
	}
	return classOther, errno
}

// conn gives its slot back when closed.
type conn struct {
	net.Conn
	l      *listener
	closed atomic.Bool
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		<-c.l.slots
		c.l.m.open.Dec()
	}
	return err
}

// CloseWrite lets net/http half-close the connection after an error
// answer (413, 431), so that the client reads the answer before the
// connection is reset.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type metrics struct {
	open         prometheus.Gauge
	limit        prometheus.Gauge
	waited       prometheus.Counter
	acceptErrors *prometheus.CounterVec
}

func newMetrics(name string, max int, reg prometheus.Registerer) (*metrics, error) {
	labels := prometheus.Labels{"listener": name}
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "veil_http_connections_open", Help: "Connections being served, by listener.", ConstLabels: labels,
		}),
		limit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "veil_http_connections_limit", Help: "The listener's cap on connections served at once (server.max_connections).", ConstLabels: labels,
		}),
		waited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veil_http_connections_waited_total", Help: "Connections that had to wait for a slot because the listener was at its cap.", ConstLabels: labels,
		}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_http_accept_errors_total", Help: "Failed accepts by class (descriptors: out of file descriptors).", ConstLabels: labels,
		}, []string{"class"}),
	}
	m.limit.Set(float64(max))
	for _, c := range acceptErrorClasses {
		m.acceptErrors.WithLabelValues(c)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.open, m.limit, m.waited, m.acceptErrors} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
