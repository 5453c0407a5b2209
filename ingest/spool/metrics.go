package spool

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/internal/kafkax"
)

type metrics struct {
	spooled      *prometheus.CounterVec
	replayed     prometheus.Counter
	replayErrors *prometheus.CounterVec
	refused      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Spool) *metrics {
	m := &metrics{
		spooled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_collector_spool_spooled_events_total",
			Help: "Events written to the spool instead of Kafka and answered success, by why: deadline (Kafka too slow), kafka_error, behind (the spool held events they must not overtake).",
		}, []string{"reason"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veil_collector_spool_replayed_events_total", Help: "Spooled events Kafka has acknowledged since.",
		}),
		replayErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_collector_spool_replay_errors_total", Help: "Replays of the spool Kafka refused (retried), by why; corrupt counts entries that could not be read back.",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_collector_spool_refused_events_total",
			Help: "Events answered 503 because the spool could not take them, by why: full (max_bytes), too_old (max_age), write_failed, closed.",
		}, []string{"reason"}),
	}
	for _, r := range []string{ReasonDeadline, ReasonKafkaError, ReasonBehind} {
		m.spooled.WithLabelValues(r)
	}
	for _, r := range append(slices.Clone(kafkax.Reasons), ReasonCorrupt) {
		m.replayErrors.WithLabelValues(r)
	}
	for _, r := range []string{RefusedFull, RefusedTooOld, RefusedWriteFailed, RefusedClosed} {
		m.refused.WithLabelValues(r)
	}
	held := func(f func() float64) func() float64 {
		return func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return f()
		}
	}
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "veil_collector_spool_bytes", Help: "Bytes of events in the spool, not yet acknowledged by Kafka.",
		}, held(func() float64 { return float64(s.heldBytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "veil_collector_spool_events", Help: "Events in the spool, not yet acknowledged by Kafka.",
		}, held(func() float64 { return float64(s.heldEvents) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "veil_collector_spool_oldest_age_seconds", Help: "Age of the oldest event in the spool; 0 when it is empty.",
		}, held(func() float64 {
			if s.oldest.IsZero() {
				return 0
			}
			return max(0, s.now().Sub(s.oldest).Seconds())
		})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "veil_collector_spool_max_bytes", Help: "collector.spool.max_bytes: past it, requests are answered 503.",
		}, func() float64 { return float64(s.cfg.MaxBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "veil_collector_spool_max_age_seconds", Help: "collector.spool.max_age: past it, requests are answered 503.",
		}, func() float64 { return s.cfg.MaxAge.Seconds() }),
	}
	if reg != nil {
		reg.MustRegister(m.spooled, m.replayed, m.replayErrors, m.refused)
		reg.MustRegister(gauges...)
	}
	return m
}
