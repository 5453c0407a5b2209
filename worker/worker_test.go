package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/sink"
	"github.com/veilhq/veil/worker"
)

func TestMain(m *testing.M) { os.Exit(testsvc.Main(m)) }

func envelope(t *testing.T, name, id, insertID string) []byte {
	t.Helper()
	obj, _ := json.Marshal(map[string]any{"event": name, "properties": map[string]any{
		"distinct_id": id, "time": time.Now().UnixMilli(), "$insert_id": insertID,
	}})
	b, err := event.MarshalEnvelope(&event.Envelope{Version: event.EnvelopeVersion, Kind: event.KindTrack, Project: "shop",
		Endpoint: "/track", ReceivedAt: time.Now().UnixMilli(), Event: obj})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type fixture struct {
	group string
	kcfg  kafkax.Config
	scfg  sink.Config
	reg   *prometheus.Registry
}

func setup(t *testing.T) fixture {
	kcfg := testsvc.KafkaConfig(t)
	kcfg.RawTopic = testsvc.Unique(t, "raw")
	kcfg.DLQTopic = testsvc.Unique(t, "dlq")
	kcfg.Partitions = 2
	if err := kafkax.EnsureTopics(context.Background(), kcfg); err != nil {
		t.Fatal(err)
	}
	return fixture{group: testsvc.Unique(t, "group"), kcfg: kcfg, scfg: testsvc.SinkConfig(t), reg: prometheus.NewRegistry()}
}

func (f fixture) run(t *testing.T, stages ...worker.Stage) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := sink.Open(ctx, f.scfg, sink.Deps{Metrics: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	wcfg := worker.DefaultConfig()
	wcfg.GroupID = f.group
	w, err := worker.New(wcfg, f.kcfg, worker.Deps{Logger: zaptest.NewLogger(t), Metrics: f.reg, Sink: s, Stages: stages})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
		s.Close()
	}
}

func produce(t *testing.T, kcfg kafkax.Config, msgs ...kafka.Message) {
	t.Helper()
	w := kafkax.NewWriter(kcfg.Brokers, kcfg.RawTopic, kafkax.DefaultWriterConfig(), nil)
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// TestPoisonMessageIsDeadLettered: a message the worker cannot read goes to
// the dead-letter topic with its reason and the events after it in the same
// partition are still stored.
func TestPoisonMessageIsDeadLettered(t *testing.T) {
	f := setup(t)
	key := event.Key("shop", "u1")
	produce(t, f.kcfg,
		kafka.Message{Key: key, Value: envelope(t, "before", "u1", "i-1")},
		kafka.Message{Key: key, Value: []byte("\x00\x01 not an envelope")},
		kafka.Message{Key: key, Value: []byte(`{"v":99,"kind":1,"project":"shop","event":{}}`)},
		kafka.Message{Key: key, Value: envelope(t, "after", "u1", "i-2")},
	)
	stop := f.run(t)
	defer stop()

	conn := testsvc.Conn(t, f.scfg)
	q := "SELECT count() FROM " + f.scfg.Database + ".events"
	testsvc.Eventually(t, 20*time.Second, "both good events stored", func() bool { return testsvc.Count(t, conn, q) == 2 })

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: f.kcfg.Brokers, Topic: f.kcfg.DLQTopic, Partition: partitionOf(t, f.kcfg, key), MaxWait: 100 * time.Millisecond})
	defer r.Close()
	reasons := map[string]bool{}
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := r.ReadMessage(ctx)
		cancel()
		if err != nil {
			t.Fatalf("dead-letter message %d: %v", i, err)
		}
		for _, h := range m.Headers {
			if h.Key == "veil-reason" {
				reasons[string(h.Value)] = true
			}
		}
	}
	if !reasons["envelope: not a JSON envelope"] || !reasons["envelope: unknown envelope version 99"] {
		t.Fatalf("dead-letter reasons %v", reasons)
	}
	if n := testutil.ToFloat64(deadLettered(t, f.reg)); n != 2 {
		t.Fatalf("dead-lettered metric %v, want 2", n)
	}
}

// TestDroppedEventsAreCommitted: events a stage drops are counted by reason
// and acknowledged, so a restarted worker does not see them again.
func TestDroppedEventsAreCommitted(t *testing.T) {
	f := setup(t)
	var msgs []kafka.Message
	for i := 0; i < 10; i++ {
		msgs = append(msgs, kafka.Message{Key: event.Key("shop", fmt.Sprint(i)), Value: envelope(t, "e", fmt.Sprint(i), fmt.Sprintf("i-%d", i))})
	}
	produce(t, f.kcfg, msgs...)
	dropOdd := worker.StageFunc(func(ev *event.Event) event.DropReason {
		if ev.InsertID[len(ev.InsertID)-1]%2 == 1 {
			return event.DropDNT
		}
		return event.Keep
	})
	stop := f.run(t, dropOdd)
	conn := testsvc.Conn(t, f.scfg)
	q := "SELECT count() FROM " + f.scfg.Database + ".events"
	testsvc.Eventually(t, 20*time.Second, "kept events stored", func() bool { return testsvc.Count(t, conn, q) == 5 })
	mfs, _ := f.reg.Gather()
	var dropped float64
	for _, mf := range mfs {
		if mf.GetName() == "veil_worker_events_dropped_total" {
			for _, m := range mf.Metric {
				if m.Label[0].GetValue() == "dnt" {
					dropped = m.GetCounter().GetValue()
				}
			}
		}
	}
	if dropped != 5 {
		t.Fatalf("dnt drops %v, want 5", dropped)
	}
	time.Sleep(1500 * time.Millisecond) // past one flush: offsets committed
	stop()

	// A second worker of the same group starts after the last commit.
	f.reg = prometheus.NewRegistry()
	stop = f.run(t, dropOdd)
	time.Sleep(3 * time.Second)
	stop()
	if n := testsvc.Count(t, conn, q); n != 5 {
		t.Fatalf("%d rows after restart, want 5", n)
	}
	mfs, _ = f.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "veil_worker_events_consumed_total" && mf.Metric[0].GetCounter().GetValue() != 0 {
			t.Fatalf("restarted worker consumed %v events again", mf.Metric[0].GetCounter().GetValue())
		}
	}
}

func partitionOf(t *testing.T, kcfg kafkax.Config, key []byte) int {
	t.Helper()
	// kafka.Hash is what the writer uses; ask it where key lands.
	return (&kafka.Hash{}).Balance(kafka.Message{Key: key}, 0, 1)
}

func deadLettered(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() == "veil_worker_events_dead_lettered_total" {
			for _, m := range mf.Metric {
				total += m.GetCounter().GetValue()
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	c.Add(total)
	return c
}

func opEnvelope(t *testing.T, kind event.Kind, op string, props map[string]any, value any) []byte {
	t.Helper()
	props["time"] = time.Now().UnixMilli()
	obj, _ := json.Marshal(map[string]any{"event": op, "properties": props, "value": value})
	b, err := event.MarshalEnvelope(&event.Envelope{Version: event.EnvelopeVersion, Kind: kind, Project: "shop",
		Endpoint: "/engage", ReceivedAt: time.Now().UnixMilli(), Event: obj})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProfileOperationsAreRouted: engage and groups envelopes go to their
// operation logs and the current state follows, in the same flush as track
// events; a malformed operand is dead-lettered.
func TestProfileOperationsAreRouted(t *testing.T) {
	f := setup(t)
	key := event.Key("shop", "u1")
	p := func(id string) map[string]any {
		return map[string]any{"distinct_id": "u1", "$insert_id": id, "$ignore_time": true}
	}
	g := func(id string) map[string]any {
		return map[string]any{"$group_key": "company", "$group_id": "acme", "$insert_id": id}
	}
	produce(t, f.kcfg,
		kafka.Message{Key: key, Value: envelope(t, "signup", "u1", "e-1")},
		kafka.Message{Key: key, Value: opEnvelope(t, event.KindEngage, "$set", p("o-1"), map[string]any{"plan": "free", "seats": 1})},
		kafka.Message{Key: key, Value: opEnvelope(t, event.KindEngage, "$add", p("o-2"), map[string]any{"seats": 2})},
		kafka.Message{Key: key, Value: opEnvelope(t, event.KindEngage, "$set", p("o-3"), map[string]any{"plan": "pro"})},
		kafka.Message{Key: key, Value: opEnvelope(t, event.KindEngage, "$add", p("o-4"), map[string]any{"seats": "many"})},
		kafka.Message{Key: key, Value: opEnvelope(t, event.KindGroups, "$set", g("g-1"), map[string]any{"industry": "retail"})},
	)
	stop := f.run(t)
	defer stop()
	conn := testsvc.Conn(t, f.scfg)
	db := f.scfg.Database
	testsvc.Eventually(t, 20*time.Second, "state written", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".profiles") == 2 && testsvc.Count(t, conn, "SELECT count() FROM "+db+".groups") == 1
	})
	for q, want := range map[string]uint64{
		"SELECT count() FROM " + db + ".events":                                              1,
		"SELECT count() FROM " + db + ".profile_ops":                                         3,
		"SELECT count() FROM " + db + ".group_ops":                                           1,
		"SELECT count() FROM " + db + ".profiles WHERE property = 'plan' AND value = 'pro'":  1,
		"SELECT count() FROM " + db + ".profiles WHERE property = 'seats' AND value = '3'":   1,
		"SELECT count() FROM " + db + ".groups WHERE group_id = 'acme' AND value = 'retail'": 1,
	} {
		if n := testsvc.Count(t, conn, q); n != want {
			t.Errorf("%s: %d, want %d", q, n, want)
		}
	}
	testsvc.Eventually(t, 10*time.Second, "malformed $add dead-lettered", func() bool {
		return testutil.ToFloat64(deadLettered(t, f.reg)) == 1
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*worker.Config)
		key    string
	}{
		{"group", func(c *worker.Config) { c.GroupID = "" }, "worker.group_id"},
		{"queue", func(c *worker.Config) { c.QueueCapacity = 0 }, "worker.queue_capacity"},
		{"lag interval", func(c *worker.Config) { c.LagInterval = 0 }, "worker.lag_interval"},
		{"heartbeat", func(c *worker.Config) { c.Heartbeat = c.SessionTimeout }, "worker.heartbeat_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := worker.DefaultConfig()
			tt.modify(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("got %v, want an error naming %s", err, tt.key)
			}
		})
	}
	if err := worker.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}
