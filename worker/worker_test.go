package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/keyfile"
	"github.com/veilhq/veil/internal/seal"
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
	return f.runWith(t, worker.Deps{Stages: stages})
}

// runWith runs a worker with deps, its logger, metrics and sink filled in.
func (f fixture) runWith(t *testing.T, deps worker.Deps) (stop func()) {
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
	deps.Logger, deps.Metrics, deps.Sink = zaptest.NewLogger(t), f.reg, s
	w, err := worker.New(wcfg, f.kcfg, deps)
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
		msgs = append(msgs, kafka.Message{Key: event.Key("shop", fmt.Sprint("u-", i)), Value: envelope(t, "e", fmt.Sprint("u-", i), fmt.Sprintf("i-%d", i))})
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
		{"the former decoder setting", func(c *worker.Config) { c.RemovedDecoder = "map" }, "worker.decoder"},
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

// rawEnvelope is an envelope as anything producing to the raw topic may
// write it, around the event object obj.
func rawEnvelope(endpoint string, obj string) []byte {
	return []byte(`{"v":1,"kind":1,"project":"shop","endpoint":"` + endpoint + `","received_at":` + fmt.Sprint(time.Now().UnixMilli()) +
		`,"signals":{},"event":` + obj + `}`)
}

// TestRawTopicIsHeldToTheRules: the raw topic is a boundary too. Messages
// produced straight to it, that no collector would have written, are
// dead-lettered with the rule they break and counted by its reason; none
// of them is stored, and the valid events beside them are.
func TestRawTopicIsHeldToTheRules(t *testing.T) {
	f := setup(t)
	now := time.Now().UnixMilli()
	obj := func(name, props string) string {
		return `{"event":` + name + `,"properties":{"distinct_id":"u1","time":` + fmt.Sprint(now) + `,"$insert_id":"ok-1"` + props + `}}`
	}
	bad := []struct {
		name, value, reason string
	}{
		{"time -1", `{"event":"e","properties":{"distinct_id":"u1","time":-1,"$insert_id":"t-1"}}`, "malformed: properties.time: time is out of range"},
		{"time 10 days ago on /track", `{"event":"e","properties":{"distinct_id":"u1","time":` + fmt.Sprint(now-10*86400000) + `,"$insert_id":"t-2"}}`, "too_old: properties.time: older than 5 days; send historical events to /import"},
		{"time 2 hours ahead", `{"event":"e","properties":{"distinct_id":"u1","time":` + fmt.Sprint(now+2*3600000) + `,"$insert_id":"t-3"}}`, "too_new: properties.time: more than 1h0m0s in the future"},
		{"malformed $insert_id", `{"event":"e","properties":{"distinct_id":"u1","time":` + fmt.Sprint(now) + `,"$insert_id":"has space"}}`, "invalid_insert_id: properties.$insert_id: $insert_id must be 1 to 36 characters of A-Z, a-z, 0-9 and -"},
		{"placeholder $insert_id", `{"event":"e","properties":{"distinct_id":"u1","time":` + fmt.Sprint(now) + `,"$insert_id":"null"}}`, "invalid_insert_id: properties.$insert_id: $insert_id is a placeholder value Mixpanel refuses (such as null, undefined or 0)"},
		{"no $insert_id", `{"event":"e","properties":{"distinct_id":"u1","time":` + fmt.Sprint(now) + `}}`, "invalid_insert_id: properties.$insert_id: $insert_id is missing"},
		{"placeholder distinct_id", `{"event":"e","properties":{"distinct_id":"undefined","time":` + fmt.Sprint(now) + `,"$insert_id":"d-1"}}`, `invalid_distinct_id: properties.distinct_id: distinct_id is a placeholder value Mixpanel refuses (such as null, undefined or 0); use "" for events of no user`},
		{"NUL in the event name", obj(`"Sign\u0000up"`, ``), "invalid_name: event: event name holds a control character"},
		{"NUL in a property name", obj(`"e"`, `,"a\u0000":1`), "invalid_name: properties: a property name holds a control character"},
		{"1e999", obj(`"e"`, `,"n":1e999`), "invalid_number: properties.n: a number is too large for a float64"},
		{"nested too deep", obj(`"e"`, `,"a":{"b":{"c":{"d":{"e":1}}}}`), "too_deep: properties.a: nested more than 3 levels deep"},
		{"event name of 256 bytes", obj(`"`+strings.Repeat("x", 256)+`"`, ``), "malformed: event: event name exceeds 255 bytes"},
	}
	key := event.Key("shop", "u1")
	msgs := []kafka.Message{{Key: key, Value: rawEnvelope("/track", obj(`"before"`, ``))}}
	for _, b := range bad {
		msgs = append(msgs, kafka.Message{Key: key, Value: rawEnvelope("/track", b.value)})
	}
	msgs = append(msgs,
		kafka.Message{Key: key, Value: rawEnvelope("/engage", obj(`"track event from /engage"`, ``))},
		kafka.Message{Key: key, Value: rawEnvelope("/import", `{"event":"imported","properties":{"distinct_id":"u1","time":86400000,"$insert_id":"imp-1"}}`)},
	)
	produce(t, f.kcfg, msgs...)
	stop := f.run(t)
	defer stop()

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: f.kcfg.Brokers, Topic: f.kcfg.DLQTopic, Partition: partitionOf(t, f.kcfg, key), MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var reasons []string
	for range len(bad) + 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		m, err := r.ReadMessage(ctx)
		cancel()
		if err != nil {
			t.Fatalf("dead-letter message %d: %v; so far %q", len(reasons), err, reasons)
		}
		for _, h := range m.Headers {
			if h.Key == "veil-reason" {
				reasons = append(reasons, string(h.Value))
			}
		}
	}
	for i, b := range bad {
		if reasons[i] != b.reason {
			t.Errorf("%s: dead-lettered as %q, want %q", b.name, reasons[i], b.reason)
		}
	}
	if got, want := reasons[len(bad)], "malformed: endpoint: a track event must come from /track or /import"; got != want {
		t.Errorf("track event from /engage: dead-lettered as %q, want %q", got, want)
	}
	if got, want := reasons[len(bad)+1], "too_old: properties.time: before 1971-01-01"; got != want {
		t.Errorf("import from 1970: dead-lettered as %q, want %q", got, want)
	}

	conn := testsvc.Conn(t, f.scfg)
	db := f.scfg.Database
	testsvc.Eventually(t, 20*time.Second, "the valid event stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events WHERE event = 'before'") == 1
	})
	time.Sleep(1500 * time.Millisecond) // past one flush
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+db+".events"); n != 1 {
		t.Fatalf("%d rows stored, want only the valid one", n)
	}
	for reason, want := range map[string]float64{"malformed": 3, "too_old": 2, "too_new": 1, "invalid_insert_id": 3, "invalid_distinct_id": 1, "invalid_name": 2, "invalid_number": 1, "too_deep": 1} {
		if got := deadLetteredBy(t, f.reg, reason); got != want {
			t.Errorf("dead-lettered %s: %v, want %v", reason, got, want)
		}
	}
}

// TestReplayFolds: the same message read twice (a replay after a crash)
// is one row: its $insert_id, generated or not, travels in the message.
// Two messages of identical events with ids of their own are two rows.
func TestReplayFolds(t *testing.T) {
	f := setup(t)
	now := fmt.Sprint(time.Now().UnixMilli())
	one := rawEnvelope("/track", `{"event":"Tapped","properties":{"distinct_id":"u1","time":`+now+`,"$insert_id":"5e2a0c7d1f3b4a6e9c8d7b6a00000000"}}`)
	other := rawEnvelope("/track", `{"event":"Tapped","properties":{"distinct_id":"u1","time":`+now+`,"$insert_id":"5e2a0c7d1f3b4a6e9c8d7b6a00000008"}}`)
	key := event.Key("shop", "u1")
	produce(t, f.kcfg, kafka.Message{Key: key, Value: one}, kafka.Message{Key: key, Value: other}, kafka.Message{Key: key, Value: one})
	stop := f.run(t)
	defer stop()
	conn := testsvc.Conn(t, f.scfg)
	db := f.scfg.Database
	testsvc.Eventually(t, 20*time.Second, "all three messages written", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") == 3
	})
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+db+".events FINAL"); n != 2 {
		t.Fatalf("%d rows after FINAL, want 2: the replay folds, the other event does not", n)
	}
}

func deadLetteredBy(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	return counter(t, reg, "veil_worker_events_dead_lettered_total", reason)
}

func sealKeys(t *testing.T, b byte) *seal.Keys {
	t.Helper()
	r, err := seal.NewRing([]keyfile.Key{{Epoch: 1, Secret: bytes.Repeat([]byte{b}, seal.MinKeyLen)}})
	if err != nil {
		t.Fatal(err)
	}
	k, err := seal.FromRing(r, 0)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSealedFrames: the collector's frames, one per user of a request, are
// read event by event. An event of a frame that breaks a rule is
// dead-lettered alone, sealed, with its index, and the events beside it are
// stored; a frame sealed with another key is dead-lettered whole and its
// events counted; every event is accounted for.
func TestSealedFrames(t *testing.T) {
	f := setup(t)
	keys := sealKeys(t, 1)
	raw := kafkax.NewWriter(f.kcfg.Brokers, f.kcfg.RawTopic, kafkax.DefaultWriterConfig(), nil)
	defer raw.Close()
	now := time.Now().UnixMilli()
	noInsertID := rawEnvelope("/track", `{"event":"e","properties":{"distinct_id":"u1","time":`+fmt.Sprint(now)+`}}`)
	request := []kafka.Message{
		{Key: event.Key("shop", "u1"), Value: envelope(t, "a", "u1", "f-1")},
		{Key: event.Key("shop", "u2"), Value: envelope(t, "b", "u2", "f-2")},
		{Key: event.Key("shop", "u1"), Value: envelope(t, "c", "u1", "f-3")},
		{Key: event.Key("shop", "u1"), Value: noInsertID},
		{Key: event.Key("shop", "u1"), Value: envelope(t, "d", "u1", "f-4")},
		{Key: event.Key("shop", "u2"), Value: envelope(t, "e", "u2", "f-5")},
	}
	if err := (&seal.Producer{Keys: keys, Next: raw}).WriteMessages(context.Background(), request...); err != nil {
		t.Fatal(err)
	}
	foreign := []kafka.Message{
		{Key: event.Key("shop", "u3"), Value: envelope(t, "x", "u3", "g-1")},
		{Key: event.Key("shop", "u3"), Value: envelope(t, "y", "u3", "g-2")},
		{Key: event.Key("shop", "u3"), Value: envelope(t, "z", "u3", "g-3")},
	}
	if err := (&seal.Producer{Keys: sealKeys(t, 2), Next: raw}).WriteMessages(context.Background(), foreign...); err != nil {
		t.Fatal(err)
	}
	if recs := testsvc.Records(t, f.kcfg.Brokers[0], f.kcfg.RawTopic); len(recs) != 3 {
		t.Fatalf("%d raw records, want 3 frames", len(recs))
	}
	stop := f.runWith(t, worker.Deps{Seal: keys})
	defer stop()

	conn := testsvc.Conn(t, f.scfg)
	db := f.scfg.Database
	testsvc.Eventually(t, 20*time.Second, "the five valid events stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") == 5
	})
	var dead []kafka.Message
	testsvc.Eventually(t, 20*time.Second, "two dead-letter records", func() bool {
		dead = testsvc.Records(t, f.kcfg.Brokers[0], f.kcfg.DLQTopic)
		return len(dead) >= 2
	})
	time.Sleep(1500 * time.Millisecond) // past one flush
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+db+".events"); n != 5 {
		t.Fatalf("%d rows stored, want 5", n)
	}
	if got := testsvc.Count(t, conn, "SELECT count() FROM "+db+".events WHERE event IN ('a','b','c','d','e')"); got != 5 {
		t.Fatalf("%d of the valid events stored, want all 5", got)
	}
	byReason := map[string]kafka.Message{}
	for _, m := range testsvc.Records(t, f.kcfg.Brokers[0], f.kcfg.DLQTopic) {
		byReason[testsvc.Header(m, "veil-reason")] = m
	}
	if len(byReason) != 2 {
		t.Fatalf("dead-letter reasons %v, want invalid_insert_id and seal_open_failed", slices.Collect(maps.Keys(byReason)))
	}
	one := byReason["invalid_insert_id"]
	if env, err := keys.Open(nil, one.Value); err != nil || !bytes.Equal(env, noInsertID) {
		t.Fatalf("the event dead-lettered from its frame opens to %q, %v", env, err)
	}
	if idx := testsvc.Header(one, "veil-index"); idx != "2" {
		t.Fatalf("veil-index %q, want 2 (the third of u1's frame)", idx)
	}
	whole := byReason["seal_open_failed"]
	if seal.Count(whole.Value) != 3 {
		t.Fatalf("the foreign frame was dead-lettered with %d events, want 3", seal.Count(whole.Value))
	}
	for reason, want := range map[string]float64{"invalid_insert_id": 1, "seal_open_failed": 3} {
		if got := deadLetteredBy(t, f.reg, reason); got != want {
			t.Errorf("dead-lettered %s: %v, want %v", reason, got, want)
		}
	}
	if got := counter(t, f.reg, "veil_worker_events_consumed_total", ""); got != 9 {
		t.Errorf("consumed %v events, want 9", got)
	}
	if got := counter(t, f.reg, "veil_worker_events_fetched_total", ""); got != 9 {
		t.Errorf("fetched %v events, want 9", got)
	}
}

// counter is the value of the counter name in reg, of its series whose
// one label is label ("" for a counter without labels); -1 when there is
// none.
func counter(t *testing.T, reg *prometheus.Registry, name string, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if label == "" || (len(m.Label) > 0 && m.Label[0].GetValue() == label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}
