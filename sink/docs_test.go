package sink_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/sink"
)

// The analyst user of the test ClickHouse may read the database named veil
// only (allow_databases), so these tests use that name.
const analystDB = "veil"

// veilDatabase migrates a fresh `veil` database on the test ClickHouse and
// returns a sink writing to it.
func veilDatabase(t *testing.T) (*sink.Sink, sink.Config) {
	t.Helper()
	cfg := testsvc.SinkConfig(t)
	cfg.Database = analystDB
	conn := testsvc.Conn(t, cfg)
	drop := func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+analystDB) }
	drop()
	t.Cleanup(drop)
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

// clickhouseClient runs the clickhouse-client binary.
func clickhouseClient(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"clickhouse-client", "/usr/bin/clickhouse-client"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("clickhouse-client not found; scripts/install-deps.sh installs it")
	}
	t.Skip("clickhouse-client not found; install it with `apt-get install clickhouse-client` or run `make test`")
	return ""
}

// asAnalyst runs query as the analyst user, the way docs/schema.md tells
// analysts to connect, and returns its TSV output.
func asAnalyst(t *testing.T, query string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(testsvc.ClickHouse(t).NativeAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, clickhouseClient(t), "--host", host, "--port", port,
		"--user", "analyst", "--password", testsvc.AnalystPassword, "--database", analystDB,
		"--format", "TSV", "--query", query)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Fixture users and group (pseudonyms, as the de-identification stage
// would write them).
const (
	u1    = "5f0c3a1e9b7d2c44"
	u2    = "8d2e6b0a4c1f9e73"
	u3    = "a3b4c5d6e7f80912"
	u4    = "f1e2d3c4b5a69788"
	acme  = "c0ffee00c0ffee00"
	dayOf = "2026-11-0"
)

func at(day, hm string) time.Time {
	ts, err := time.Parse("2006-01-02 15:04", dayOf+day+" "+hm)
	if err != nil {
		panic(err)
	}
	return ts
}

// writeFixture writes the examples' data: ten events (one of them
// replayed), three user profiles (one deleted) and one group.
func writeFixture(t *testing.T, s *sink.Sink) {
	t.Helper()
	type row struct {
		day, hm, name, id, country string
		props                      map[string]any
	}
	evs := []row{
		{"2", "10:00", "view_item", u1, "DE", nil},
		{"2", "10:05", "add_to_cart", u1, "DE", nil},
		{"2", "10:10", "purchase", u1, "DE", map[string]any{"sku": "A-1", "price": 12.5}},
		{"2", "11:00", "view_item", u2, "FR", nil},
		{"2", "12:00", "view_item", u3, "DE", nil},
		{"2", "12:01", "add_to_cart", u3, "DE", nil},
		{"3", "09:00", "view_item", u1, "DE", nil},
		{"3", "09:30", "add_to_cart", u2, "FR", nil},
		{"3", "09:40", "purchase", u2, "FR", map[string]any{"sku": "B-2", "price": 30}},
		{"3", "15:00", "view_item", u4, "US", nil},
	}
	type op struct {
		day, hm, id, op, operand string
	}
	people := []op{
		{"2", "10:00", u1, "$set", `{"plan":"free","company_size":"50"}`},
		{"2", "10:01", u1, "$set_once", `{"first_plan":"free"}`},
		{"2", "10:02", u1, "$add", `{"logins":1}`},
		{"2", "10:03", u1, "$union", `{"interests":["shoes","hats"]}`},
		{"2", "10:10", u1, "$set", `{"plan":"pro"}`},
		{"2", "11:00", u2, "$set", `{"plan":"free"}`},
		{"2", "11:00", u2, "$add", `{"logins":1}`},
		{"2", "12:00", u3, "$set", `{"plan":"free"}`},
		{"3", "09:00", u1, "$add", `{"logins":2}`},
		{"3", "09:00", u1, "$set_once", `{"first_plan":"pro"}`},
		{"3", "09:01", u1, "$unset", `["company_size"]`},
		{"3", "10:00", u3, "$delete", `""`},
	}
	groups := []op{
		{"2", "10:00", acme, "$set", `{"industry":"retail","seats":10}`},
		{"3", "10:00", acme, "$add", `{"seats":5}`},
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
			InsertID: fmt.Sprintf("ev-%d", i), Time: ts, ReceivedAt: ts, Properties: props,
			Geo: event.Geo{CountryCode: r.country}, Device: event.Device{Lib: "web"}})
	}
	for i, o := range append(people, groups...) {
		ev := event.Event{Kind: event.KindEngage, Project: "shop", Endpoint: "/engage", Name: o.op, DistinctID: o.id,
			Value: decodeOperand(t, o.operand), InsertID: fmt.Sprintf("op-%d", i), Time: at(o.day, o.hm), ReceivedAt: at(o.day, o.hm),
			Properties: map[string]any{}}
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
	if err := b.Append(&event.Event{Kind: event.KindTrack, Project: "shop", Name: "purchase", DistinctID: u1, InsertID: "ev-2",
		Time: ts, ReceivedAt: ts, Properties: evs[2].props, Geo: event.Geo{CountryCode: "DE"}, Device: event.Device{Lib: "web"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
}

// exampleResults are the exact TSV results of the examples in
// docs/schema.md on the fixture. A query added to the doc must be added
// here, and the other way round.
var exampleResults = map[string]string{
	"daily_active_users": "2026-11-02\t3\n2026-11-03\t3\n",
	"funnel":             "4\t3\t2\n",
	"top_countries":      "DE\t6\t2\nFR\t3\t1\nUS\t1\t1\n",
	"revenue_per_day":    "2026-11-02\t1\t12.5\n2026-11-03\t1\t30\n",
	"profile_lookup": "$last_seen\t2026-11-03T09:01:00\tstring\t2026-11-03 09:01:00\n" +
		"first_plan\tfree\tstring\t2026-11-02 10:01:00\n" +
		"interests\t[\"shoes\",\"hats\"]\tlist\t2026-11-02 10:03:00\n" +
		"logins\t3\tnumber\t2026-11-03 09:00:00\n" +
		"plan\tpro\tstring\t2026-11-02 10:10:00\n",
	"profiles_wide":     u1 + "\tpro\t3\n" + u2 + "\tfree\t1\n",
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

var exampleBlock = regexp.MustCompile("(?s)```sql\n(-- example: ([a-z_]+)\n.*?)```")

func docExamples(t *testing.T) map[string]string {
	t.Helper()
	doc, err := os.ReadFile("../docs/schema.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range exampleBlock.FindAllStringSubmatch(string(doc), -1) {
		if _, dup := out[m[2]]; dup {
			t.Fatalf("docs/schema.md: example %s appears twice", m[2])
		}
		out[m[2]] = m[1]
	}
	return out
}

// TestDocExamples runs every example query of docs/schema.md as the
// analyst, through clickhouse-client, and checks its exact result.
func TestDocExamples(t *testing.T) {
	s, _ := veilDatabase(t)
	writeFixture(t, s)
	examples := docExamples(t)
	for name := range exampleResults {
		if _, ok := examples[name]; !ok {
			t.Errorf("docs/schema.md lacks the example %s", name)
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range examples {
			if !yield(n) {
				return
			}
		}
	})
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			want, ok := exampleResults[name]
			if !ok {
				t.Fatalf("example %s has no expected result in exampleResults", name)
			}
			got, err := asAnalyst(t, examples[name])
			if err != nil {
				t.Fatalf("%v\n%s", err, examples[name])
			}
			if got != want {
				t.Fatalf("result\n%s\nwant\n%s", got, want)
			}
		})
	}
}

var docSection = regexp.MustCompile("(?m)^### (.+)$")

// TestDocCoversSchema: every table and view Veil creates, and every column
// of each, is described in docs/schema.md.
func TestDocCoversSchema(t *testing.T) {
	s, cfg := veilDatabase(t)
	doc, err := os.ReadFile("../docs/schema.md")
	if err != nil {
		t.Fatal(err)
	}
	// Sections: "### `veil.a` and `veil.b`" → the text up to the next one.
	sections := map[string]string{}
	locs := docSection.FindAllStringSubmatchIndex(string(doc), -1)
	for i, l := range locs {
		end := len(doc)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		heading := string(doc[l[2]:l[3]])
		for _, m := range regexp.MustCompile("`veil\\.([a-z_]+)`").FindAllStringSubmatch(heading, -1) {
			sections[m[1]] = string(doc[l[1]:end])
		}
	}
	rows, err := s.Conn().Query(context.Background(),
		"SELECT table, name FROM system.columns WHERE database = '"+cfg.Database+"' ORDER BY table, name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	tables := map[string]bool{}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		tables[table] = true
		sec, ok := sections[table]
		if !ok {
			continue
		}
		if table == "events_dedup" {
			continue // documented as "every column of veil.events"
		}
		if !strings.Contains(sec, "| `"+col+"` |") {
			t.Errorf("docs/schema.md: column %s.%s is not described", table, col)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for table := range tables {
		if _, ok := sections[table]; !ok {
			t.Errorf("docs/schema.md: no section for veil.%s", table)
		}
	}
	if len(tables) != 9 {
		t.Errorf("%d tables and views, want 9", len(tables))
	}
}

// TestAnalystIsReadOnly connects as the analyst, as docs/schema.md says,
// and checks that every table can be read and nothing can be changed.
func TestAnalystIsReadOnly(t *testing.T) {
	s, cfg := veilDatabase(t)
	writeFixture(t, s)
	conn := testsvc.Conn(t, cfg)
	const other = "veil_private_other"
	if err := conn.Exec(context.Background(), "CREATE DATABASE IF NOT EXISTS "+other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+other) })
	if err := conn.Exec(context.Background(), "CREATE TABLE IF NOT EXISTS "+other+".secrets (x UInt8) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}

	for table, want := range map[string]string{
		"events": "11\n", "events_dedup": "10\n", "profile_ops": "12\n", "profile_state": "", "profiles": "8\n",
		"group_ops": "2\n", "group_state": "", "groups": "2\n", "schema_migrations": "",
	} {
		t.Run("select "+table, func(t *testing.T) {
			got, err := asAnalyst(t, "SELECT count() FROM veil."+table)
			if err != nil {
				t.Fatal(err)
			}
			if want != "" && got != want {
				t.Fatalf("count %q, want %q", got, want)
			}
		})
	}

	refused := []struct {
		query, code string
	}{
		{"INSERT INTO veil.events (project, event) VALUES ('shop', 'forged')", "Code: 164"},
		{"INSERT INTO veil.profile_state (project, distinct_id, property) VALUES ('shop', 'x', 'y')", "Code: 164"},
		{"ALTER TABLE veil.events DELETE WHERE 1", "Code: 164"},
		{"ALTER TABLE veil.events ADD COLUMN forged UInt8", "Code: 164"},
		{"DROP TABLE veil.events", "Code: 164"},
		{"TRUNCATE TABLE veil.profile_ops", "Code: 164"},
		{"CREATE TABLE veil.mine (x UInt8) ENGINE = Memory", "Code: 164"},
		{"CREATE DATABASE mine", "Code: 164"},
		{"CREATE VIEW veil.mine AS SELECT 1", "Code: 164"},
		{"RENAME TABLE veil.events TO veil.events2", "Code: 164"},
		{"SET readonly = 0", "Code: 164"},
		{"SELECT count() FROM " + other + ".secrets", "Code: 291"},
	}
	for _, r := range refused {
		t.Run(r.query, func(t *testing.T) {
			out, err := asAnalyst(t, r.query)
			if err == nil {
				t.Fatalf("accepted; output %q", out)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !strings.Contains(err.Error(), r.code) {
				t.Fatalf("refused with %v, want %s", err, r.code)
			}
		})
	}
	// Nothing changed.
	if n := testsvc.Count(t, conn, "SELECT count() FROM veil.events"); n != 11 {
		t.Fatalf("%d event rows after the attempts, want 11", n)
	}
	if n := testsvc.Count(t, conn, "SELECT count() FROM system.tables WHERE database = 'veil'"); n != 9 {
		t.Fatalf("%d tables in veil after the attempts, want 9", n)
	}
	if n := testsvc.Count(t, conn, "SELECT count() FROM system.columns WHERE database = 'veil' AND table = 'events' AND name = 'forged'"); n != 0 {
		t.Fatal("the analyst added a column")
	}
}
