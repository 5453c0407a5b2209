package deidentify

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/policy"
)

// TestPassMemo runs a stream of messages through one Decoder and one
// Stage, as a worker does, and each message again through a Stage of its
// own, which starts with an empty memo: the memo of the events before must change
// nothing. The stream repeats names, values and ids (which the memo
// answers), switches project (whose policy drops a name the other keeps
// and strips a query parameter the other keeps, or which shares the
// other's policy but not its pseudonyms) and repeats personal data in a
// known property, an event name and a property name (which must be
// scrubbed every time and never remembered).
func TestPassMemo(t *testing.T) {
	b := policy.Default()
	b.PIIDeny = []string{"plan"}
	b.URLQueryAllow = []string{"utm_medium"}
	e := newEngine(t, policy.Set{Default: policy.Default(), Projects: map[string]policy.Policy{"b": b}})

	msg := func(project, name, os, extra string) string {
		return `{"v":1,"kind":1,"project":"` + project + `","received_at":1795348800123,"event":{"event":"` + name + `","properties":{` +
			`"time":1795348800123,"distinct_id":"u1","$os":"` + os + `","$current_url":"https://shop.example/p?utm_source=news",` +
			`"$device_id":"d1","plan":"gold","cart_size":3` + extra + `}}}`
	}
	const canary = "jane@example.com"
	stream := []string{
		msg("a", "Viewed", "Linux", ""),
		msg("a", "Viewed", "Linux", ""),
		msg("b", "Viewed", "Linux", ""),
		msg("b", "Viewed", "Linux", ""),
		msg("a", "Viewed", "Linux", ""),
		msg("a", "Viewed", canary, ""),
		msg("a", "Viewed", canary, ""),
		msg("a", "mail "+canary, "Linux", ""),
		msg("a", "mail "+canary, "Linux", ""),
		msg("a", "Viewed", "Linux", `,"note `+canary+`":1`),
		msg("a", "Viewed", "Linux", `,"note `+canary+`":1`),
		msg("a", "Viewed", "Linux", ""),
		// A project without a policy of its own shares the default's
		// rules, not the pseudonyms of its ids.
		msg("c", "Viewed", "Linux", ""),
	}
	reused := newPass(e)
	outs := stageStream(t, e, stream, reused, canary, func(i int) {
		mem := fmt.Sprintf("%q", any(reused.s.memo)) // the memo as text, its bytes quoted
		if strings.Contains(mem, "jane") {
			t.Fatalf("message %d: the memo holds personal data: %s", i, mem)
		}
	})
	// The projects' policies differ where the test says they do.
	if !strings.Contains(outs[0], `"plan":"gold"`) || strings.Contains(outs[2], `"plan"`) {
		t.Fatalf("plan: project a stored %s, project b %s", outs[0], outs[2])
	}
	if !strings.Contains(outs[0], "utm_source=news") || strings.Contains(outs[2], "utm_source=news") {
		t.Fatalf("the query parameter: project a stored %s, project b %s", outs[0], outs[2])
	}
	if outs[4] != outs[0] || outs[11] != outs[0] {
		t.Fatalf("the same message gave\n%s\n%s\n%s", outs[0], outs[4], outs[11])
	}

	if outs[12] == outs[11] {
		t.Fatalf("projects a and c stored the same: %s", outs[12])
	}

	// What the memo holds after the stream: the default rules' verdicts
	// on the names and values the stream repeats.
	m := reused.s.memo.under(e.rulesFor("c"))
	if v := m.values[event.LookupKnown("$os")]; !v.ok || string(v.text) != "Linux" {
		t.Fatalf("the memo holds %q for $os", v.text)
	}
	if s := m.names[nameHash("plan", nameSlots)]; !s.ok || string(s.name) != "plan" || s.rule&nameClean == 0 {
		t.Fatalf("the memo holds %q for plan", s.name)
	}
}

// TestObjectsAcrossProjects runs messages with objects and arrays through
// one Decoder and Stage, and through a Stage of their own: the rows must
// be the same, with the project switching between two that disagree on a
// URL's query and PII inside an object.
func TestObjectsAcrossProjects(t *testing.T) {
	b := policy.Default()
	b.URLQueryAllow = []string{"utm_medium"}
	e := newEngine(t, policy.Set{Default: policy.Default(), Projects: map[string]policy.Policy{"b": b}})
	const canary = "jane@example.com"
	msg := func(project, extra string) string {
		return `{"v":1,"kind":1,"project":"` + project + `","received_at":1795348800123,"event":{"event":"Viewed","properties":{` +
			`"time":1795348800123,"distinct_id":"u1","page":{"url":"https://shop.example/p?utm_source=news","n":2},` +
			`"tags":["sale",{"k":"v"}]` + extra + `}}}`
	}
	stream := []string{
		msg("a", ""),
		msg("a", ""),
		msg("b", ""),
		msg("b", ""),
		msg("a", ""),
		msg("a", `,"who":{"by":"`+canary+`"}`),
		msg("a", `,"who":{"by":"`+canary+`"}`),
		msg("a", `,"who":["`+canary+`"]`),
		msg("a", `,"dup":{"k":1,"k":2}`),
		msg("a", ""),
	}
	outs := stageStream(t, e, stream, newPass(e), canary, nil)
	if !strings.Contains(outs[1], `"page":{"url":"https://shop.example/p?utm_source=news","n":2}`) ||
		strings.Contains(outs[3], "utm_source=news") || !strings.Contains(outs[3], `"page":{`) {
		t.Fatalf("page: project a stored %s, project b %s", outs[1], outs[3])
	}
	if outs[4] != outs[0] || outs[9] != outs[0] {
		t.Fatalf("the same message gave\n%s\n%s\n%s", outs[0], outs[4], outs[9])
	}
}

// workerPass is what a worker reads and de-identifies messages with.
type workerPass struct {
	d *event.Decoder
	s *Stage
}

func newPass(e *Engine) *workerPass { return &workerPass{d: event.NewDecoder(), s: e.NewStage()} }

// stageStream runs each message of stream through reused, which keeps
// what the messages before it left, and through a pass of its own: the
// rows must be the same, and none may hold canary. after, if not nil, is
// called after each message. It returns the rows.
func stageStream(t *testing.T, e *Engine, stream []string, reused *workerPass, canary string, after func(i int)) []string {
	t.Helper()
	var outs []string
	for i, m := range stream {
		got, want := stage(t, reused, m), stage(t, newPass(e), m)
		if got != want {
			t.Fatalf("message %d: after the messages before\n%s\nalone\n%s", i, got, want)
		}
		if strings.Contains(got, canary) {
			t.Fatalf("message %d: %q stored: %s", i, canary, got)
		}
		outs = append(outs, got)
		if after != nil {
			after(i)
		}
	}
	return outs
}

// stage decodes m, runs the Stage and returns what a row would store: the
// event name and the properties, or the drop reason.
func stage(t *testing.T, w *workerPass, m string) string {
	t.Helper()
	var ev event.Event
	if err := w.d.Decode([]byte(m), &ev); err != nil {
		t.Fatal(err)
	}
	if r := w.s.Apply(&ev); r != event.Keep {
		return "dropped: " + string(r)
	}
	props, ok := ev.Properties.AppendJSON(nil, new([]string))
	if !ok {
		t.Fatal("AppendJSON failed")
	}
	return ev.Name + " " + string(props) + " " + strings.Join(ev.Provenance.Transforms, ",")
}

// TestScrubbedCounted checks veil_deidentify_scrubbed_total: one count
// per kind of personal data an event held, read by the Decoder and by
// the reference reader.
func TestScrubbedCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := New(policy.DefaultSet(), Deps{Keyring: keyring(t), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	const m = `{"v":1,"kind":1,"project":"a","received_at":1795348800123,"event":{"event":"mail jane@example.com","properties":{` +
		`"time":1795348800123,"note":"call +44 20 7946 0958 or x@example.org","card":"4111 1111 1111 1111"}}}`
	for _, decode := range []func([]byte, *event.Event) error{event.NewDecoder().Decode, event.Decode} {
		var ev event.Event
		if err := decode([]byte(m), &ev); err != nil {
			t.Fatal(err)
		}
		if r := e.NewStage().Apply(&ev); r != event.Keep {
			t.Fatalf("Stage = %q", r)
		}
	}
	want := map[string]float64{"email": 2, "phone": 2, "card": 2}
	for _, kind := range []string{"email", "phone", "card", "iban", "national_id", "ip", "token", "url"} {
		got := testutil.ToFloat64(e.m.scrubbed.WithLabelValues(kind))
		if got != want[kind] {
			t.Errorf("veil_deidentify_scrubbed_total{kind=%q} = %v, want %v", kind, got, want[kind])
		}
	}
}
