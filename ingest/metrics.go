package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/internal/kafkax"
)

type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	inFlight        prometheus.Gauge
	bytes           prometheus.Counter
	accepted        *prometheus.CounterVec
	rejected        *prometheus.CounterVec
	produceDuration prometheus.Histogram
	produceErrors   *prometheus.CounterVec
	bodyBytes       prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, budget *bodyBudget) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_collector_requests_total", Help: "HTTP requests by endpoint and status.",
		}, []string{"endpoint", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "veil_collector_request_duration_seconds", Help: "Time to answer a request, Kafka acknowledgement included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"endpoint"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "veil_collector_requests_in_flight", Help: "Requests being handled.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veil_collector_received_bytes_total", Help: "Request bytes received (body and query).",
		}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_collector_events_accepted_total", Help: "Events acknowledged by Kafka, by endpoint.",
		}, []string{"endpoint"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_collector_events_rejected_total", Help: "Events or requests rejected, by reason.",
		}, []string{"reason"}),
		produceDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "veil_collector_produce_duration_seconds", Help: "Time for Kafka to acknowledge one request's events.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		produceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_collector_produce_errors_total", Help: "Kafka writes that failed (answered 503), by why Kafka refused them.",
		}, []string{"reason"}),
		bodyBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "veil_collector_body_bytes_in_flight", Help: "Memory the bodies of requests in flight hold, out of collector.limits.max_inflight_bytes.",
		}, func() float64 { return float64(budget.held.Load()) }),
	}
	for _, r := range kafkax.Reasons {
		m.produceErrors.WithLabelValues(r)
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.inFlight, m.bytes, m.accepted, m.rejected, m.produceDuration, m.produceErrors, m.bodyBytes)
	}
	return m
}
