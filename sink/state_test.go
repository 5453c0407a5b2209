package sink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/sink"
)

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// profileOp is one operation of a test sequence: at sec seconds after t0,
// with operand given as JSON. Unless lastSeen is set it carries
// $ignore_time, so the state holds exactly the properties the test names.
type profileOp struct {
	sec      int
	op       string
	operand  string
	lastSeen bool
}

func decodeOperand(t *testing.T, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("operand %s: %v", s, err)
	}
	return v
}

func (o profileOp) event(t *testing.T, kind event.Kind, id string, n int) event.Event {
	mods := map[string]any{}
	if !o.lastSeen {
		mods["$ignore_time"] = true
	}
	ev := event.Event{
		Kind: kind, Project: "shop", Endpoint: "/engage", Name: o.op, DistinctID: id,
		Value: decodeOperand(t, o.operand), InsertID: fmt.Sprintf("%s-%d", id, n),
		Time: t0.Add(time.Duration(o.sec) * time.Second), ReceivedAt: t0, Properties: event.PropertiesOf(mods),
		Provenance: event.Provenance{PolicyVersion: 2, KeyEpoch: 1},
	}
	if kind == event.KindGroups {
		ev.DistinctID = ""
		ev.GroupKey, ev.GroupID = "company", id
	}
	return ev
}

// stateCase is an operation sequence and the exact state it must leave,
// as property → JSON value.
type stateCase struct {
	name string
	ops  []profileOp
	want map[string]string
}

var stateCases = []stateCase{
	{"set is last-write-wins", []profileOp{{1, "$set", `{"plan":"free","seats":1}`, false}, {2, "$set", `{"plan":"pro"}`, false}},
		map[string]string{"plan": `"pro"`, "seats": `1`}},
	{"set_once is first-write-wins", []profileOp{{1, "$set_once", `{"first_seen":"a"}`, false}, {2, "$set_once", `{"first_seen":"b"}`, false}},
		map[string]string{"first_seen": `"a"`}},
	{"set_once after set does nothing", []profileOp{{1, "$set", `{"a":1}`, false}, {2, "$set_once", `{"a":2}`, false}},
		map[string]string{"a": `1`}},
	{"set after set_once overwrites", []profileOp{{1, "$set_once", `{"a":1}`, false}, {2, "$set", `{"a":2}`, false}},
		map[string]string{"a": `2`}},
	{"add sums and creates", []profileOp{{1, "$add", `{"n":1}`, false}, {2, "$add", `{"n":2.5,"m":-4}`, false}, {3, "$add", `{"n":10}`, false}},
		map[string]string{"n": `13.5`, "m": `-4`}},
	{"add after set adds to the set value", []profileOp{{1, "$set", `{"n":10}`, false}, {2, "$add", `{"n":-3}`, false}},
		map[string]string{"n": `7`}},
	{"set after add resets", []profileOp{{1, "$add", `{"n":5}`, false}, {2, "$set", `{"n":1}`, false}, {3, "$add", `{"n":1}`, false}},
		map[string]string{"n": `2`}},
	{"add to a string is ignored", []profileOp{{1, "$set", `{"s":"x"}`, false}, {2, "$add", `{"s":1}`, false}},
		map[string]string{"s": `"x"`}},
	{"append appends", []profileOp{{1, "$append", `{"l":"a"}`, false}, {2, "$append", `{"l":"b"}`, false}, {3, "$append", `{"l":"a"}`, false}},
		map[string]string{"l": `["a","b","a"]`}},
	{"append to a set list", []profileOp{{1, "$set", `{"l":[1]}`, false}, {2, "$append", `{"l":{"k":2}}`, false}},
		map[string]string{"l": `[1,{"k":2}]`}},
	{"union is set union", []profileOp{{1, "$union", `{"l":["a","b","a"]}`, false}, {2, "$union", `{"l":["b","c"]}`, false}},
		map[string]string{"l": `["a","b","c"]`}},
	{"remove removes every occurrence", []profileOp{{1, "$append", `{"l":"a"}`, false}, {2, "$append", `{"l":"b"}`, false}, {3, "$append", `{"l":"a"}`, false}, {4, "$remove", `{"l":"a"}`, false}},
		map[string]string{"l": `["b"]`}},
	{"remove then append", []profileOp{{1, "$union", `{"l":["a","b"]}`, false}, {2, "$remove", `{"l":"a"}`, false}, {3, "$append", `{"l":"a"}`, false}},
		map[string]string{"l": `["b","a"]`}},
	{"unset removes the property", []profileOp{{1, "$set", `{"a":1,"b":2}`, false}, {2, "$unset", `["a"]`, false}},
		map[string]string{"b": `2`}},
	{"set_once after unset sets", []profileOp{{1, "$set", `{"a":1}`, false}, {2, "$unset", `["a"]`, false}, {3, "$set_once", `{"a":3}`, false}},
		map[string]string{"a": `3`}},
	{"delete removes everything before it", []profileOp{{1, "$set", `{"a":1}`, false}, {2, "$add", `{"n":1}`, false}, {3, "$delete", `""`, false}, {4, "$set", `{"c":true}`, false}},
		map[string]string{"c": `true`}},
	{"delete leaves nothing", []profileOp{{1, "$set", `{"a":1}`, false}, {2, "$union", `{"l":[1]}`, false}, {3, "$delete", `null`, false}},
		map[string]string{}},
	{"updates set $last_seen unless $ignore_time", []profileOp{{1, "$set", `{"a":1}`, true}, {5, "$add", `{"n":1}`, false}},
		map[string]string{"a": `1`, "n": `1`, "$last_seen": `"2026-11-20T10:00:01"`}},
	{"same time: arrival order decides", []profileOp{{1, "$set", `{"a":"first"}`, false}, {1, "$set", `{"a":"second"}`, false}},
		map[string]string{"a": `"second"`}},
}

// sequence is one operation sequence to write for one entity: the
// operations, and the order they arrive in (indexes into ops).
type sequence struct {
	id      string
	ops     []profileOp
	arrival []int
}

func inOrder(n int) []int {
	a := make([]int, n)
	for i := range a {
		a[i] = i
	}
	return a
}

// writeSequences writes the sequences as a worker would: sequence k's
// messages are partition k of the raw topic, at offsets in arrival order.
// A batch takes the next split messages of every sequence (0: everything in
// one batch), so that many sequences share few flushes.
func writeSequences(t *testing.T, s *sink.Sink, kind event.Kind, seqs []sequence, split int) {
	t.Helper()
	ctx := context.Background()
	longest := 0
	for _, q := range seqs {
		longest = max(longest, len(q.arrival))
	}
	if split == 0 {
		split = longest
	}
	for from := 0; from < longest; from += split {
		b := sink.NewBatch()
		for k, q := range seqs {
			for i := from; i < min(from+split, len(q.arrival)); i++ {
				idx := q.arrival[i]
				ev := q.ops[idx].event(t, kind, q.id, idx)
				b.Cover("raw", k, int64(i))
				if err := b.Append(&ev); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
}

// readState reads every live property of project shop from a state view,
// by entity id.
func readState(t *testing.T, s *sink.Sink, db, view, idCol string) map[string]map[string]string {
	t.Helper()
	rows, err := s.Conn().Query(context.Background(), fmt.Sprintf("SELECT %s, property, value_json FROM %s.%s WHERE project = 'shop'", idCol, db, view))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		var id, prop, v string
		if err := rows.Scan(&id, &prop, &v); err != nil {
			t.Fatal(err)
		}
		if out[id] == nil {
			out[id] = map[string]string{}
		}
		out[id][prop] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func openSink(t *testing.T) (*sink.Sink, sink.Config) {
	t.Helper()
	cfg := testsvc.SinkConfig(t)
	s, err := sink.Open(context.Background(), cfg, sink.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

// TestProfileState applies each operation sequence against ClickHouse in
// four ways (one batch; one batch per operation; every message delivered
// twice, as a crash replay would; arrival order reversed, one batch per
// operation) and reads the exact state back from the profiles view.
func TestProfileState(t *testing.T) {
	s, cfg := openSink(t)
	id := func(ci int, v string) string { return fmt.Sprintf("c%d-%s", ci, strings.ReplaceAll(v, " ", "_")) }
	reversible := func(c stateCase) bool { return c.ops[0].sec != c.ops[len(c.ops)-1].sec }
	var oneBatch, perOp, reversed []sequence
	for ci, c := range stateCases {
		oneBatch = append(oneBatch, sequence{id(ci, "one batch"), c.ops, inOrder(len(c.ops))})
		perOp = append(perOp, sequence{id(ci, "batch per op"), c.ops, inOrder(len(c.ops))})
		if reversible(c) {
			// Among equal times arrival order decides: nothing to reverse.
			r := inOrder(len(c.ops))
			slices.Reverse(r)
			reversed = append(reversed, sequence{id(ci, "reversed arrival"), c.ops, r})
		}
	}
	writeSequences(t, s, event.KindEngage, oneBatch, 0)
	writeSequences(t, s, event.KindEngage, perOp, 1)
	writeSequences(t, s, event.KindEngage, reversed, 1)
	// A replay: the same messages again, flushed at other boundaries.
	writeSequences(t, s, event.KindEngage, oneBatch, 2)

	got := readState(t, s, cfg.Database, "profiles", "distinct_id")
	for ci, c := range stateCases {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range []string{"one batch", "batch per op", "reversed arrival"} {
				if v == "reversed arrival" && !reversible(c) {
					continue
				}
				st := got[id(ci, v)]
				if st == nil {
					st = map[string]string{}
				}
				if !maps.Equal(st, c.want) {
					t.Errorf("%s: state %v, want %v", v, st, c.want)
				}
			}
		})
	}
}

// TestGroupState runs the same sequences through group operations, which
// have no $last_seen.
func TestGroupState(t *testing.T) {
	s, cfg := openSink(t)
	var seqs []sequence
	for ci, c := range stateCases {
		seqs = append(seqs, sequence{fmt.Sprintf("g%d", ci), c.ops, inOrder(len(c.ops))})
	}
	writeSequences(t, s, event.KindGroups, seqs, 2)
	got := readState(t, s, cfg.Database, "groups", "group_id")
	for ci, c := range stateCases {
		t.Run(c.name, func(t *testing.T) {
			want := maps.Clone(c.want)
			delete(want, "$last_seen")
			st := got[fmt.Sprintf("g%d", ci)]
			if st == nil {
				st = map[string]string{}
			}
			if !maps.Equal(st, want) {
				t.Errorf("state %v, want %v", st, want)
			}
		})
	}
	conn := s.Conn()
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+cfg.Database+".groups WHERE group_key != 'company'"); n != 0 {
		t.Fatalf("%d group rows with another group_key", n)
	}
}

// TestProfileStateColumns checks the typed columns of a state row and that
// the operation log keeps every operation with its provenance.
func TestProfileStateColumns(t *testing.T) {
	s, cfg := openSink(t)
	ops := []profileOp{
		{1, "$set", `{"plan":"pro","seats":3,"beta":true,"tags":["a"],"addr":{"city":"Berlin"},"none":null}`, false},
		{2, "$add", `{"seats":2}`, false},
	}
	writeSequences(t, s, event.KindEngage, []sequence{{"u1", ops, inOrder(2)}}, 0)
	rows, err := s.Conn().Query(context.Background(),
		"SELECT property, value, value_json, value_type, set_at, version FROM "+cfg.Database+".profiles WHERE distinct_id = 'u1' ORDER BY property")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var prop, v, js, typ string
		var at time.Time
		var version uint64
		if err := rows.Scan(&prop, &v, &js, &typ, &at, &version); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s|%s|%s|%s|%d|%d", prop, v, js, typ, at.Sub(t0)/time.Second, version))
	}
	want := []string{
		`addr|{"city":"Berlin"}|{"city":"Berlin"}|object|1|2`,
		`beta|true|true|boolean|1|2`,
		`none||null|null|1|2`,
		`plan|pro|"pro"|string|1|2`,
		`seats|5|5|number|2|2`,
		`tags|["a"]|["a"]|list|1|2`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("state rows\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var op, operand, mods string
	var policy, epoch uint32
	if err := s.Conn().QueryRow(context.Background(),
		"SELECT op, operand, modifiers, policy_version, key_epoch FROM "+cfg.Database+".profile_ops WHERE insert_id = 'u1-1'").Scan(&op, &operand, &mods, &policy, &epoch); err != nil {
		t.Fatal(err)
	}
	if op != "$add" || operand != `{"seats":2}` || mods != `{"$ignore_time":true}` || policy != 2 || epoch != 1 {
		t.Fatalf("ops row: %s %s %s %d %d", op, operand, mods, policy, epoch)
	}
}

// TestMalformedOperationsAreRefused: operands Mixpanel would reject cannot
// be appended (the worker dead-letters them), and the error does not quote
// the operand.
func TestMalformedOperationsAreRefused(t *testing.T) {
	tests := []struct {
		op, operand string
	}{
		{"$set", `["secret@example.com"]`},
		{"$add", `{"n":"secret@example.com"}`},
		{"$unset", `{"a":"secret@example.com"}`},
		{"$unset", `["a",{"secret@example.com":1}]`},
		{"$union", `"secret@example.com"`},
		{"$bogus", `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.op+" "+tt.operand, func(t *testing.T) {
			ev := profileOp{1, tt.op, tt.operand, false}.event(t, event.KindEngage, "u", 0)
			b := sink.NewBatch()
			err := b.Append(&ev)
			if err == nil {
				t.Fatal("appended")
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error quotes the operand: %v", err)
			}
			if b.Len() != 0 {
				t.Fatalf("batch has %d rows", b.Len())
			}
		})
	}
	ev := profileOp{1, "$set", `{"a":1}`, false}.event(t, event.KindEngage, "", 0)
	if err := sink.NewBatch().Append(&ev); err == nil {
		t.Fatal("profile operation without distinct_id appended")
	}
}
