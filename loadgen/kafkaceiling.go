package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/devstack"
	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/seal"
)

// startBroker starts the embedded broker `veil dev` runs, persisted to a
// new temporary directory, and creates Veil's topics on it. It returns the
// configuration `veil dev` gives the roles for it, with a project whose
// token is token, and a function that stops the broker and removes the
// directory.
func startBroker(ctx context.Context, token string, sealed bool) (app.Config, func(), error) {
	dir, err := os.MkdirTemp("", "veil-loadgen-")
	if err != nil {
		return app.Config{}, nil, err
	}
	broker, err := devstack.NewBroker(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return app.Config{}, nil, fmt.Errorf("loadgen: embedded Kafka: %w", err)
	}
	stop := func() {
		broker.Close()
		_ = os.RemoveAll(dir)
	}
	cfg := devstack.Config(broker.ListenAddrs()[0], "127.0.0.1:9000", dir, devstack.Project{Token: token})
	// Sealed, the collector seals what it produces, as under veil dev.
	if !sealed {
		cfg.Seal.KeyFile = ""
	} else if err := seal.GenerateKeyFile(cfg.Seal.KeyFile); err != nil {
		stop()
		return app.Config{}, nil, err
	}
	if err := kafkax.EnsureTopics(ctx, cfg.Kafka); err != nil {
		stop()
		return app.Config{}, nil, err
	}
	return cfg, stop, nil
}

// kafkaCeiling is the produce path of the collector alone: its producer,
// configured as `veil dev` configures the collector's, writing the very
// messages the collector produces for each of the generator's requests
// into the embedded broker, with no HTTP and no decoding. Driven at the
// collector's rate with the same pacing and concurrency, it measures what
// the broker's acknowledgement alone costs the collector's latency on
// this machine.
type kafkaCeiling struct {
	producer *kafkax.Producer
	msgs     map[*template][]kafka.Message
}

// startKafkaCeiling starts the broker and the producer, and has the
// collector's handler turn one request of each of gen's templates into
// the messages it would produce.
func startKafkaCeiling(ctx context.Context, token string, gen *generator) (_ *server, err error) {
	cfg, stopBroker, err := startBroker(ctx, token, false)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			stopBroker()
		}
	}()
	msgs, err := collectorMessages(cfg, gen)
	if err != nil {
		return nil, err
	}
	k := &kafkaCeiling{
		producer: kafkax.NewProducer(cfg.Kafka.Brokers, cfg.Kafka.RawTopic, cfg.Collector.Producer, nil),
		msgs:     msgs,
	}
	// The first write reads the topic's metadata, which the collector
	// has read before it is ready.
	if err = k.producer.WriteMessages(ctx, msgs[gen.full[0]]...); err != nil {
		_ = k.producer.Close()
		return nil, fmt.Errorf("loadgen: producing to the embedded broker: %w", err)
	}
	return &server{
		produce: k.produce,
		stop: func() error {
			err := k.producer.Close()
			stopBroker()
			return err
		},
	}, nil
}

// produce writes the messages of a request of t, as the collector's
// handler does, and waits for the broker's acknowledgement.
func (k *kafkaCeiling) produce(ctx context.Context, t *template) error {
	return k.producer.WriteMessages(ctx, k.msgs[t]...)
}

// collectorMessages returns, for each of gen's templates, the messages
// the collector configured by cfg produces for one request of it sent as
// the load generator sends it.
func collectorMessages(cfg app.Config, gen *generator) (map[*template][]kafka.Message, error) {
	// A fake producer that keeps the messages as given: the collector,
	// told nothing of their release, reuses none of their memory.
	capture := &kafkatest.Producer{}
	c, err := ingest.New(cfg.Collector, cfg.Kafka.RawTopic, ingest.Deps{Producer: capture, Metrics: prometheus.NewRegistry()})
	if err != nil {
		return nil, err
	}
	h := c.Handler()
	templates := gen.full
	if gen.rest != nil {
		templates = append(templates[:len(templates):len(templates)], gen.rest)
	}
	out := make(map[*template][]kafka.Message, len(templates))
	for _, t := range templates {
		body := t.appendBody(nil, &gen.run, gen.take(t.events))
		req := httptest.NewRequest(http.MethodPost, "/track/?verbose=1&ip=1&_="+strconv.FormatInt(time.Now().UnixMilli(), 10), bytes.NewReader(body))
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("User-Agent", t.ua)
		req.Header.Set("X-Forwarded-For", t.xff)
		req.Header.Set("Origin", "https://shop.example.com")
		w := httptest.NewRecorder()
		before := capture.Len()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK || !responseOK(w.Code, w.Body.Bytes()) {
			return nil, fmt.Errorf("loadgen: the collector answered %d to a generated request", w.Code)
		}
		msgs := capture.Messages()
		out[t] = msgs[before:len(msgs):len(msgs)]
	}
	return out, nil
}
