package bench

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/event/rules"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/internal/keyfile"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/policy"
	"github.com/veilhq/veil/sink"
	"github.com/veilhq/veil/worker"
)

func benchKeyring(tb testing.TB) *pseudonym.Keyring {
	tb.Helper()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	kr, err := pseudonym.NewKeyring(map[uint32][]byte{1: key})
	if err != nil {
		tb.Fatal(err)
	}
	return kr
}

// benchPipeline builds the worker's stages as `veil worker` does
// (app.NewPipeline: default policy, geolocation on a database that covers
// every address the events come from, no opt-out registry), for one
// goroutine.
func benchPipeline(tb testing.TB) []worker.Stage { return benchPipelineOf(tb).NewStages() }

// benchPipelineOf is the pipeline benchPipeline takes its stages from.
func benchPipelineOf(tb testing.TB) *app.Pipeline {
	tb.Helper()
	cfg := app.DefaultConfig()
	cfg.Enrich.Geo.Paths = []string{docGeoDB(tb)}
	p, err := app.NewPipeline(cfg, benchKeyring(tb), nil, app.Deps{Logger: zap.NewNop(), Registry: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// flat lists the messages of reqs in order.
func flat(reqs [][]kafka.Message) []kafka.Message {
	var out []kafka.Message
	for _, r := range reqs {
		out = append(out, r...)
	}
	return out
}

// Pass steps, cumulative: each sub-benchmark does every step up to its
// own, so a step's cost is the difference between it and the one before.
var passSteps = []string{"decode", "policy", "enrich", "deidentify", "append"}

// BenchmarkWorkerPass measures what the worker does with each message
// between fetching it and flushing the batch: event.Decode, the rules
// (rules.Limits.Event, in every sub-benchmark as part of decode), the stages
// app.NewPipeline builds (policy, enrichment with geolocation and
// user-agent parsing, de-identification with pseudonyms and scrubbing),
// and sink.Batch.Append. The batch is reset at sink.max_rows, as a flush
// does, so its growth is paid for as in production.
//
//   - events=1/all: one message per operation.
//   - events=50/all: 50 messages (one mixpanel-browser request) per
//     operation; ns/event and allocs/event are the per-event figures.
//   - events=50/upto=STEP: the pass cut after STEP, to attribute the cost.
//   - events=50/reference: the whole pass with event.Decode, the reference
//     reader (encoding/json), instead of the worker's event.Decoder, which
//     leaves the properties as JSON text for the stages to rewrite.
//   - events=50/sealed: the whole pass on sealed envelopes (seal.key_file):
//     each request is one frame, as the collector seals it, first copied
//     aside and opened in place, as the worker does.
func BenchmarkWorkerPass(b *testing.B) {
	maxRows := sink.DefaultConfig().MaxRows
	limits := rules.DefaultLimits()
	for _, n := range benchSizes {
		msgs := flat(envelopes(b, 2048/n, n))
		steps := []string{"all"}
		if n == 50 {
			steps = append(steps, passSteps...)
			steps = append(steps, "reference", "sealed")
		}
		for _, step := range steps {
			name := fmt.Sprintf("events=%d/%s", n, step)
			if step != "all" && step != "reference" && step != "sealed" {
				name = fmt.Sprintf("events=%d/upto=%s", n, step)
			}
			last := len(passSteps) - 1
			for i, s := range passSteps {
				if s == step {
					last = i
				}
			}
			b.Run(name, func(b *testing.B) {
				// One worker's decoder and stages, as its processing
				// goroutine has them.
				stages := benchPipeline(b)
				decode := event.NewDecoder().Decode
				if step == "reference" {
					decode = event.Decode
				}
				// Sealed, each request is the frames seal.Producer makes
				// of it, as the collector writes them.
				var frames [][]kafka.Message
				var open seal.Opener
				if step == "sealed" {
					open.Keys = benchSealKeys(b)
					for _, req := range envelopes(b, 2048/n, n) {
						next := &kafkatest.Producer{Copy: true, Releases: true}
						if err := (&seal.Producer{Keys: open.Keys, Next: next}).WriteMessages(context.Background(), req...); err != nil {
							b.Fatal(err)
						}
						frames = append(frames, next.Messages())
					}
				}
				var aside, work []byte
				batch := sink.NewBatch()
				var ev event.Event
				pass := func(value []byte) {
					if err := decode(value, &ev); err != nil {
						b.Fatal(err)
					}
					if v := limits.Event(&ev); v != nil {
						b.Fatal(v)
					}
					for s := 1; s <= min(last, len(stages)); s++ {
						if stages[s-1].Apply(&ev) != event.Keep {
							return
						}
					}
					if last < 4 {
						return
					}
					if err := batch.Append(&ev); err != nil {
						b.Fatal(err)
					}
					if batch.Len() >= maxRows {
						batch.Reset()
					}
				}
				i := 0
				pe := startPerEvent(b, n)
				for b.Loop() {
					if frames != nil {
						for _, m := range frames[i%len(frames)] {
							// kafka-go gives each message memory of its
							// own; work stands for it.
							work = append(work[:0], m.Value...)
							aside = append(aside[:0], work...)
							envs, err := open.Open(work)
							if err != nil {
								b.Fatal(err)
							}
							for env, ok := envs.Next(); ok; env, ok = envs.Next() {
								pass(env)
							}
						}
						i++
						continue
					}
					for range n {
						pass(msgs[i%len(msgs)].Value)
						i++
					}
				}
				pe.report()
			})
		}
	}
}

// benchSealKeys are seal keys of one epoch, as a key file gives them.
func benchSealKeys(tb testing.TB) *seal.Keys {
	tb.Helper()
	r, err := seal.NewRing([]keyfile.Key{{Epoch: 1, Secret: make([]byte, seal.MinKeyLen)}})
	if err != nil {
		tb.Fatal(err)
	}
	k, err := seal.FromRing(r, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// decoded returns the events of n messages, decoded by event.Decode and,
// when stages are given, passed through them.
func decoded(tb testing.TB, msgs []kafka.Message, stages []worker.Stage) []event.Event {
	return decodedBy(tb, func() func([]byte, *event.Event) error { return event.Decode }, msgs, stages)
}

// decodedBy is decoded with another reader: a func that returns the
// reader of the next message (each event keeps what its reader owns).
func decodedBy(tb testing.TB, reader func() func([]byte, *event.Event) error, msgs []kafka.Message, stages []worker.Stage) []event.Event {
	tb.Helper()
	out := make([]event.Event, 0, len(msgs))
	for _, m := range msgs {
		var ev event.Event
		if err := reader()(m.Value, &ev); err != nil {
			tb.Fatal(err)
		}
		for _, st := range stages {
			if st.Apply(&ev) != event.Keep {
				tb.Fatal("the benchmark's events must all be kept")
			}
		}
		out = append(out, ev)
	}
	return out
}

// BenchmarkPolicy measures the policy stage alone (policy.Stage with
// the default policy and no opt-out registry), per event:
//
//   - keep: no privacy signal, the common case.
//   - dnt: Do-Not-Track, which the default policy drops.
//   - gpc_anonymize: Global Privacy Control under a policy that keeps the
//     event without identifiers.
func BenchmarkPolicy(b *testing.B) {
	evs := decoded(b, flat(envelopes(b, 20, 50)), nil)
	anon := policy.Default()
	anon.GPC = policy.Anonymize
	for _, tc := range []struct {
		name    string
		set     policy.Set
		signals event.Signals
		want    event.DropReason
	}{
		{"keep", policy.DefaultSet(), event.Signals{}, event.Keep},
		{"dnt", policy.DefaultSet(), event.Signals{DNT: true}, event.DropDNT},
		{"gpc_anonymize", policy.Set{Default: anon}, event.Signals{GPC: true}, event.Keep},
	} {
		b.Run(tc.name, func(b *testing.B) {
			stage, err := policy.NewStage(tc.set, policy.Deps{Keyring: benchKeyring(b)})
			if err != nil {
				b.Fatal(err)
			}
			for i := range evs {
				evs[i].Signals = tc.signals
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ev := &evs[i%len(evs)]
				ev.Anonymized = false
				if got := stage.Apply(ev); got != tc.want {
					b.Fatalf("outcome %q, want %q", got, tc.want)
				}
				i++
			}
		})
	}
}

// BenchmarkBatchAppend measures sink.Batch.Append of de-identified events
// (writing the properties as JSON and adding each column's value), with a
// reset at sink.max_rows as a flush does. events=50 appends one request's
// events per operation; events=50/reference appends events read by the
// reference reader (event.Decode), whose properties are all written by
// the encoder rather than copied as they came.
func BenchmarkBatchAppend(b *testing.B) {
	msgs := flat(envelopes(b, 20, 50))
	fast := decodedBy(b, func() func([]byte, *event.Event) error { return event.NewDecoder().Decode }, msgs, benchPipeline(b))
	ref := decoded(b, msgs, benchPipeline(b))
	maxRows := sink.DefaultConfig().MaxRows
	for _, name := range []string{"events=1", "events=50", "events=50/reference"} {
		n, evs := 50, fast
		switch name {
		case "events=1":
			n = 1
		case "events=50/reference":
			evs = ref
		}
		b.Run(name, func(b *testing.B) {
			batch := sink.NewBatch()
			i := 0
			pe := startPerEvent(b, n)
			for b.Loop() {
				for range n {
					if err := batch.Append(&evs[i%len(evs)]); err != nil {
						b.Fatal(err)
					}
					i++
					if batch.Len() >= maxRows {
						batch.Reset()
					}
				}
			}
			pe.report()
		})
	}
}

// TestWorkerPassPathsAgree runs the load generator's messages through the
// stages twice: read by the reference reader into a fresh event with
// fresh stages, and by one Decoder with one set of stages, as a worker
// does. The Decoder must read every message itself (the benchmark
// measures that path) and store the same properties and columns.
// internal/app's FuzzDecodersAgree covers the awkward inputs.
func TestWorkerPassPathsAgree(t *testing.T) {
	pl := benchPipelineOf(t)
	stages := pl.NewStages()
	dec := event.NewDecoder()
	var fast event.Event
	for i, m := range flat(envelopes(t, 8, 50)) {
		var ref event.Event
		errRef := event.Decode(m.Value, &ref)
		errFast := dec.Decode(m.Value, &fast)
		if errRef != nil || errFast != nil {
			t.Fatalf("message %d: decode errors %v, %v", i, errRef, errFast)
		}
		if !dec.Fast() {
			t.Fatalf("message %d left the fast reader", i)
		}
		refStages := pl.NewStages()
		for s, st := range stages {
			if a, b := refStages[s].Apply(&ref), st.Apply(&fast); a != b {
				t.Fatalf("message %d stage %d: %q vs %q", i, s, a, b)
			}
		}
		text, _ := fast.Properties.AppendJSON(nil, new([]string))
		got, _ := event.DecodeJSONValue(text)
		want, _ := ref.Properties.Map()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("message %d: properties %s, want %#v", i, text, want)
		}
		if fast.Name != ref.Name || fast.DistinctID != ref.DistinctID || fast.InsertID != ref.InsertID ||
			!fast.Time.Equal(ref.Time) || fast.Geo != ref.Geo || fast.Device != ref.Device || fast.IPPrefix != ref.IPPrefix ||
			!reflect.DeepEqual(fast.Provenance, ref.Provenance) {
			t.Fatalf("message %d: columns differ\n%#v\n%#v", i, fast, ref)
		}
	}
}

// BenchmarkRules measures the worker's check of each message against the
// rules the collector applies (rules.Limits.Event) where the worker runs
// it, right after its event.Decoder read the message: decode alone,
// then decode and the check; the difference is the check's cost, per
// mixpanel-browser event.
func BenchmarkRules(b *testing.B) {
	limits := rules.DefaultLimits()
	msgs := flat(envelopes(b, 2048/50, 50))
	for _, check := range []bool{false, true} {
		name := "decode"
		if check {
			name = "decode+rules"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var ev event.Event
			dec := event.NewDecoder()
			i := 0
			for b.Loop() {
				if err := dec.Decode(msgs[i%len(msgs)].Value, &ev); err != nil {
					b.Fatal(err)
				}
				i++
				if check {
					if v := limits.Event(&ev); v != nil {
						b.Fatal(v)
					}
				}
			}
		})
	}
}
