// Package schemadoc holds the example queries of docs/schema.md to account:
// it reads them out of the document, writes the small data set they run
// on, and knows each one's exact result. The same data and the same results
// judge every ClickHouse the schema is proven on: Debian's 18.16 server
// (sink/docs_test.go) and the current engine chDB embeds
// (internal/chdbtest). Only tests import it.
package schemadoc

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/sink"
)

// Database is the database the examples name (veil.events …).
const Database = "veil"

// Fixture users and group (pseudonyms, as the de-identification stage
// would write them).
const (
	U1    = "5f0c3a1e9b7d2c44"
	U2    = "8d2e6b0a4c1f9e73"
	U3    = "a3b4c5d6e7f80912"
	U4    = "f1e2d3c4b5a69788"
	Acme  = "c0ffee00c0ffee00"
	dayOf = "2026-11-0"
)

func at(day, hm string) time.Time {
	ts, err := time.Parse("2006-01-02 15:04", dayOf+day+" "+hm)
	if err != nil {
		panic(err)
	}
	return ts
}

func decodeOperand(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("operand %s: %v", s, err)
	}
	return v
}

// Write writes the examples' data through s: ten events (one of them
// replayed by a second write of the same offset, as after a crash), three
// user profiles (one deleted) and one group. The tables then hold 11 event
// rows, 12 profile operations and 2 group operations.
func Write(t testing.TB, s *sink.Sink) {
	t.Helper()
	type row struct {
		day, hm, name, id, country string
		props                      map[string]any
	}
	evs := []row{
		{"2", "10:00", "view_item", U1, "DE", nil},
		{"2", "10:05", "add_to_cart", U1, "DE", nil},
		{"2", "10:10", "purchase", U1, "DE", map[string]any{"sku": "A-1", "price": 12.5}},
		{"2", "11:00", "view_item", U2, "FR", nil},
		{"2", "12:00", "view_item", U3, "DE", nil},
		{"2", "12:01", "add_to_cart", U3, "DE", nil},
		{"3", "09:00", "view_item", U1, "DE", nil},
		{"3", "09:30", "add_to_cart", U2, "FR", nil},
		{"3", "09:40", "purchase", U2, "FR", map[string]any{"sku": "B-2", "price": 30}},
		{"3", "15:00", "view_item", U4, "US", nil},
	}
	type op struct {
		day, hm, id, op, operand string
	}
	people := []op{
		{"2", "10:00", U1, "$set", `{"plan":"free","company_size":"50"}`},
		{"2", "10:01", U1, "$set_once", `{"first_plan":"free"}`},
		{"2", "10:02", U1, "$add", `{"logins":1}`},
		{"2", "10:03", U1, "$union", `{"interests":["shoes","hats"]}`},
		{"2", "10:10", U1, "$set", `{"plan":"pro"}`},
		{"2", "11:00", U2, "$set", `{"plan":"free"}`},
		{"2", "11:00", U2, "$add", `{"logins":1}`},
		{"2", "12:00", U3, "$set", `{"plan":"free"}`},
		{"3", "09:00", U1, "$add", `{"logins":2}`},
		{"3", "09:00", U1, "$set_once", `{"first_plan":"pro"}`},
		{"3", "09:01", U1, "$unset", `["company_size"]`},
		{"3", "10:00", U3, "$delete", `""`},
	}
	groups := []op{
		{"2", "10:00", Acme, "$set", `{"industry":"retail","seats":10}`},
		{"3", "10:00", Acme, "$add", `{"seats":5}`},
	}
	b := sink.NewBatch()
	offset := int64(0)
	appendEv := func(ev *event.Event) {
		b.Cover("veil.events.raw", 0, offset)
		offset++
		if err := b.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range evs {
		props := r.props
		if props == nil {
			props = map[string]any{}
		}
		ts := at(r.day, r.hm)
		appendEv(&event.Event{Kind: event.KindTrack, Project: "shop", Name: r.name, DistinctID: r.id,
			InsertID: fmt.Sprintf("ev-%d", i), Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(props),
			Geo: event.Geo{CountryCode: r.country}, Device: event.Device{Lib: "web"}})
	}
	for i, o := range append(people, groups...) {
		ev := event.Event{Kind: event.KindEngage, Project: "shop", Endpoint: "/engage", Name: o.op, DistinctID: o.id,
			Value: decodeOperand(t, o.operand), InsertID: fmt.Sprintf("op-%d", i), Time: at(o.day, o.hm), ReceivedAt: at(o.day, o.hm),
			Properties: event.PropertiesOf(nil)}
		if i >= len(people) {
			ev.Kind, ev.Endpoint, ev.DistinctID, ev.GroupKey, ev.GroupID = event.KindGroups, "/groups", "", "company", o.id
		}
		appendEv(&ev)
	}
	ctx := context.Background()
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	// A crash replay of the first purchase: the same row again.
	b.Reset()
	b.Cover("veil.events.raw", 0, 2)
	ts := at(evs[2].day, evs[2].hm)
	if err := b.Append(&event.Event{Kind: event.KindTrack, Project: "shop", Name: "purchase", DistinctID: U1, InsertID: "ev-2",
		Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(evs[2].props), Geo: event.Geo{CountryCode: "DE"}, Device: event.Device{Lib: "web"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
}

// Results are the exact TSV results of the examples in docs/schema.md on
// the data Write writes. A query added to the document must be added here,
// and the other way round.
var Results = map[string]string{
	"daily_active_users": "2026-11-02\t3\n2026-11-03\t3\n",
	"funnel":             "4\t3\t2\n",
	"top_countries":      "DE\t6\t2\nFR\t3\t1\nUS\t1\t1\n",
	"revenue_per_day":    "2026-11-02\t1\t12.5\n2026-11-03\t1\t30\n",
	"profile_lookup": "$last_seen\t2026-11-03T09:01:00\tstring\t2026-11-03 09:01:00\n" +
		"first_plan\tfree\tstring\t2026-11-02 10:01:00\n" +
		"interests\t[\"shoes\",\"hats\"]\tlist\t2026-11-02 10:03:00\n" +
		"logins\t3\tnumber\t2026-11-03 09:00:00\n" +
		"plan\tpro\tstring\t2026-11-02 10:10:00\n",
	"profiles_wide":     U1 + "\tpro\t3\n" + U2 + "\tfree\t1\n",
	"purchases_by_plan": "free\t1\npro\t1\n",
	"profile_history": "2026-11-02 10:00:00\t$set\t{\"company_size\":\"50\",\"plan\":\"free\"}\n" +
		"2026-11-02 10:01:00\t$set_once\t{\"first_plan\":\"free\"}\n" +
		"2026-11-02 10:02:00\t$add\t{\"logins\":1}\n" +
		"2026-11-02 10:03:00\t$union\t{\"interests\":[\"shoes\",\"hats\"]}\n" +
		"2026-11-02 10:10:00\t$set\t{\"plan\":\"pro\"}\n" +
		"2026-11-03 09:00:00\t$add\t{\"logins\":2}\n" +
		"2026-11-03 09:00:00\t$set_once\t{\"first_plan\":\"pro\"}\n" +
		"2026-11-03 09:01:00\t$unset\t[\"company_size\"]\n",
	"group_lookup": "industry\tretail\nseats\t15\n",
}

// Example is one example query of the document.
type Example struct {
	Name, SQL string
}

var exampleBlock = regexp.MustCompile("(?s)```sql\n(-- example: ([a-z_]+)\n.*?)```")

// Examples reads the example queries out of the document at path (every
// ```sql block, which must start with "-- example: name"), sorted by name.
// A sql block without a name, a name used twice, an example without a
// result in Results and a result without its example all fail t.
func Examples(t testing.TB, path string) []Example {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := exampleBlock.FindAllStringSubmatch(string(doc), -1)
	if n := strings.Count(string(doc), "```sql\n"); n != len(blocks) {
		t.Errorf("%s: %d sql blocks, %d of them examples: every sql block must start with \"-- example: name\", so that it is run", path, n, len(blocks))
	}
	seen := map[string]bool{}
	var out []Example
	for _, m := range blocks {
		if seen[m[2]] {
			t.Fatalf("%s: example %s appears twice", path, m[2])
		}
		seen[m[2]] = true
		if _, ok := Results[m[2]]; !ok {
			t.Errorf("%s: example %s has no expected result in schemadoc.Results", path, m[2])
		}
		out = append(out, Example{Name: m[2], SQL: m[1]})
	}
	for name := range Results {
		if !seen[name] {
			t.Errorf("%s lacks the example %s", path, name)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
