package deidentify

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/veilhq/veil/deidentify/policy"
	"github.com/veilhq/veil/event"
)

// TestPassMemo runs a stream of messages through one reused Event, as a
// worker does, and each message again through an Event of its own, which
// starts with an empty memo: the memo of the events before must change
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
	e := newEngine(t, policy.Set{Default: policy.Default(), Projects: map[string]policy.Policy{"b": b}}, nil)

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
	var reused event.Event
	outs := stageStream(t, e, stream, &reused, canary, func(i int) {
		mem := fmt.Sprintf("%q", *reused.StageMemo(stageMemoSlot))
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
	m := memoFor(&reused, e.rulesFor("c"))
	if v := m.values[event.KnownProp("$os")]; !v.ok || string(v.text) != "Linux" {
		t.Fatalf("the memo holds %q for $os", v.text)
	}
	if s := m.names[nameHash("plan", nameSlots)]; !s.ok || string(s.name) != "plan" || s.rule&nameClean == 0 {
		t.Fatalf("the memo holds %q for plan", s.name)
	}
}

// TestObjectsCheckedWhileRead runs messages with objects and arrays
// through one reused Event, whose decoder checks them with the scrubber of
// the project before (event.Event.SetCleaner), and through an Event of
// their own: the rows must be the same, with the project switching
// between two that disagree on a URL's query and PII inside an object.
func TestObjectsCheckedWhileRead(t *testing.T) {
	b := policy.Default()
	b.URLQueryAllow = []string{"utm_medium"}
	e := newEngine(t, policy.Set{Default: policy.Default(), Projects: map[string]policy.Policy{"b": b}}, nil)
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
	var reused event.Event
	outs := stageStream(t, e, stream, &reused, canary, nil)
	if !strings.Contains(outs[1], `"page":{"url":"https://shop.example/p?utm_source=news","n":2}`) ||
		strings.Contains(outs[3], "utm_source=news") || !strings.Contains(outs[3], `"page":{`) {
		t.Fatalf("page: project a stored %s, project b %s", outs[1], outs[3])
	}
	if outs[4] != outs[0] || outs[9] != outs[0] {
		t.Fatalf("the same message gave\n%s\n%s\n%s", outs[0], outs[4], outs[9])
	}

	// The reused Event's decoder did the check: the objects of a message
	// after one of the same project are marked clean by its scrubber, and
	// only by it.
	if err := event.DecodeRaw([]byte(stream[5]), &reused); err != nil {
		t.Fatal(err)
	}
	sa, sb := e.rulesFor("a").scrubber, e.rulesFor("b").scrubber
	for _, c := range []struct {
		key     string
		cleaned bool
	}{{"page", true}, {"tags", true}, {"who", false}} {
		pr := &reused.Props[reused.PropIndex(c.key)]
		if got := pr.CleanedBy(&reused, sa); got != c.cleaned {
			t.Errorf("%s: CleanedBy the scrubber of a = %v, want %v", c.key, got, c.cleaned)
		}
		if pr.CleanedBy(&reused, sb) {
			t.Errorf("%s: CleanedBy the scrubber of b", c.key)
		}
	}
}

// stageStream runs each message of stream through reused, which keeps
// what the messages before it left, and through an Event of its own: the
// rows must be the same, and none may hold canary. after, if not nil, is
// called after each message. It returns the rows.
func stageStream(t *testing.T, e *Engine, stream []string, reused *event.Event, canary string, after func(i int)) []string {
	t.Helper()
	var outs []string
	for i, m := range stream {
		var fresh event.Event
		got, want := stage(t, e, m, reused), stage(t, e, m, &fresh)
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

// stage decodes m into ev, runs Stage and returns what a row would
// store: the event name and the properties, or the drop reason.
func stage(t *testing.T, e *Engine, m string, ev *event.Event) string {
	t.Helper()
	if err := event.DecodeRaw([]byte(m), ev); err != nil {
		t.Fatal(err)
	}
	if r := e.Stage(ev); r != event.Keep {
		return "dropped: " + string(r)
	}
	props, ok := ev.AppendProperties(nil)
	if !ok {
		t.Fatal("AppendProperties failed")
	}
	return ev.Name + " " + string(props) + " " + strings.Join(ev.Provenance.Transforms, ",")
}

// TestScrubbedCounted checks veil_deidentify_scrubbed_total: one count
// per kind of personal data an event held, for a raw event and for one
// with the map.
func TestScrubbedCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := New(policy.DefaultSet(), Deps{Keyring: keyring(t), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	const m = `{"v":1,"kind":1,"project":"a","received_at":1795348800123,"event":{"event":"mail jane@example.com","properties":{` +
		`"time":1795348800123,"note":"call +44 20 7946 0958 or x@example.org","card":"4111 1111 1111 1111"}}}`
	for _, decode := range []func([]byte, *event.Event) error{event.DecodeRaw, event.Decode} {
		var ev event.Event
		if err := decode([]byte(m), &ev); err != nil {
			t.Fatal(err)
		}
		if r := e.Stage(&ev); r != event.Keep {
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
