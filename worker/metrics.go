package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/event"
)

type metrics struct {
	fetched      prometheus.Counter
	pending      prometheus.Gauge
	consumed     prometheus.Counter
	stored       prometheus.Counter
	dropped      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	commitErrors prometheus.Counter
	lag          *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veil_worker_events_fetched_total", Help: "Raw events fetched from Kafka into the processing queue.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "veil_worker_uncommitted_messages", Help: "Messages handled since the last offset commit (the batch being built or written).",
		}),
		consumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veil_worker_events_consumed_total", Help: "Raw events read from Kafka.",
		}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veil_worker_events_stored_total", Help: "Events and profile or group operations written to ClickHouse.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_worker_events_dropped_total", Help: "Events dropped on purpose, by reason.",
		}, []string{"reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_worker_events_dead_lettered_total", Help: "Events sent to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veil_worker_commit_errors_total", Help: "Failed offset commits (the batch was written and may be replayed).",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "veil_worker_consumer_lag_messages", Help: "Messages between the group's committed offset and the partition's high-water mark, measured at the broker every worker.lag_interval.",
		}, []string{"partition"}),
	}
	// Pre-create every reason so that rate() sees a zero before the first drop.
	for _, r := range event.DropReasons {
		m.dropped.WithLabelValues(string(r))
	}
	for _, r := range DeadLetterReasons() {
		m.deadLettered.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.fetched, m.pending, m.consumed, m.stored, m.dropped, m.deadLettered, m.commitErrors, m.lag)
	}
	return m
}
