package spool

import (
	"errors"
	"time"
)

// Config is the collector's spool (`collector.spool`).
type Config struct {
	// Dir holds the spool's segment files. Empty turns the spool off: a
	// write Kafka cannot take is answered 503, as without one. `veil dev`
	// spools under its --data-dir; a production collector spools only
	// where it is given a directory on a disk of its own (a pod's
	// persistent volume), since a spool on an ephemeral disk is lost with
	// its pod.
	Dir string `yaml:"dir"`
	// Deadline is how long a request's write waits for Kafka before its
	// messages are spooled instead. 2 s is a hundred times a healthy
	// acks=all write on a LAN and well under the SDKs' own timeouts and
	// a load balancer's, yet shorter than Kafka takes to elect a new
	// leader after a broker dies (about 10 s with its default session
	// timeout): a failover then costs the clients a 2 s wait instead of
	// 503s and retries, and pixels and beacons, which never retry, are
	// kept. It must be shorter than collector.produce_timeout.
	Deadline time.Duration `yaml:"deadline"`
	// MaxBytes bounds the spool's data on disk: once a request's messages
	// would take it past this, the request is answered 503, as without a
	// spool. 1 GiB holds about a million typical browser events, an
	// hour of a busy collector's traffic.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxAge bounds how long Kafka may be away: once the oldest message
	// still spooled is older than this, new requests are answered 503
	// until the spool has drained below it. The raw topic's retention
	// (72 h by default) is how long raw events may exist anyway; an hour
	// keeps what the spool holds far inside it and tells the clients
	// that retry (the SDKs) to keep their queues rather than trust a
	// disk that is not draining.
	MaxAge time.Duration `yaml:"max_age"`
	// SegmentBytes is the size of one segment file. A segment is
	// rewritten when part of it has been replayed, so smaller segments
	// cost less to trim; 4 MiB keeps the rewrite under a few
	// milliseconds and the segments in memory (the one being written and
	// the one being replayed) small.
	SegmentBytes int `yaml:"segment_bytes"`
}

// DefaultConfig returns the spool's defaults, with no directory: off.
func DefaultConfig() Config {
	return Config{
		Deadline:     2 * time.Second,
		MaxBytes:     1 << 30,
		MaxAge:       time.Hour,
		SegmentBytes: 4 << 20,
	}
}

// Enabled reports whether a spool is configured.
func (c Config) Enabled() bool { return c.Dir != "" }

// Validate reports the first invalid setting, naming its key.
// produceTimeout is collector.produce_timeout, which the deadline must be
// shorter than.
func (c Config) Validate(produceTimeout time.Duration) error {
	if !c.Enabled() {
		return nil
	}
	switch {
	case c.Deadline <= 0:
		return errors.New("collector.spool.deadline must be positive")
	case c.Deadline >= produceTimeout:
		return errors.New("collector.spool.deadline must be shorter than collector.produce_timeout")
	case c.MaxBytes <= 0:
		return errors.New("collector.spool.max_bytes must be positive")
	case c.MaxAge <= 0:
		return errors.New("collector.spool.max_age must be positive")
	case c.SegmentBytes <= 0:
		return errors.New("collector.spool.segment_bytes must be positive")
	case int64(c.SegmentBytes) > c.MaxBytes:
		return errors.New("collector.spool.segment_bytes must not exceed collector.spool.max_bytes")
	}
	return nil
}
