//go:build chdb

package chdbtest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/schemadoc"
	"github.com/veilhq/veil/sink"
)

func migrate(t *testing.T, s *sink.Sink) {
	t.Helper()
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestAccessStatements runs every access-control statement Veil renders
// for a server with SQL-driven access control, the analyst role's
// migration and the analyst user's statements, and those docs/schema.md
// tells operators to run. chDB keeps users and roles
// in users.xml only, so none can take effect here; each must parse, pass
// the engine's checks of its settings and password hash, and be refused
// only for want of access storage (or of the role or user that storage
// would hold), never as a syntax, setting or argument error.
func TestAccessStatements(t *testing.T) {
	conn, err := engine.Conn()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	caps := modernCaps(t)
	var stmts []string
	for _, m := range sink.Migrations {
		if m.Requires != nil && !m.Requires(caps) {
			continue
		}
		for _, s := range m.Statements(schemadoc.Database, caps) {
			if isAccessStatement(s) {
				stmts = append(stmts, s)
			}
		}
	}
	sum := sha256.Sum256([]byte("an analyst's password"))
	stmts = append(stmts, sink.AnalystUserStatements("analyst", hex.EncodeToString(sum[:]), sink.DefaultAnalystLimits())...)
	// And those docs/schema.md gives operators to run.
	doc, err := os.ReadFile("../../docs/schema.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range inlineAccessStatement.FindAllStringSubmatch(string(doc), -1) {
		stmts = append(stmts, m[1])
	}
	if len(stmts) < 7 {
		t.Fatalf("only %d access statements rendered: %q", len(stmts), stmts)
	}
	for _, stmt := range stmts {
		t.Run(stmt, func(t *testing.T) {
			if !isAccessStatement(stmt) {
				t.Fatalf("not an access statement")
			}
			parsesAndIsRefused(t, conn, stmt, accessRefusals, "without access storage")
		})
	}
}

// parsesAndIsRefused runs stmt on the engine: it must parse (the engine's
// own parser and its formatting of what it parsed), and its execution must
// be refused with one of the codes of refusals, those of an engine that
// lacks what the statement needs (lacking: "without …" or "no …").
func parsesAndIsRefused(t *testing.T, conn driver.Conn, stmt string, refusals map[int]string, lacking string) {
	t.Helper()
	if _, err := engine.Query("SELECT formatQuery(" + quote(stmt) + ")"); err != nil {
		t.Fatalf("does not parse: %v", err)
	}
	err := conn.Exec(context.Background(), stmt)
	var ex *clickhouse.Exception
	switch {
	case err == nil:
		t.Fatalf("accepted by an engine %s", lacking)
	case !errors.As(err, &ex):
		t.Fatalf("not a server exception: %v", err)
	case refusals[int(ex.Code)] == "":
		t.Fatalf("refused with code %d, not for want of what an engine %s lacks: %v", ex.Code, lacking, err)
	}
}

// inlineAccessStatement finds an access statement quoted in a document's
// text.
var inlineAccessStatement = regexp.MustCompile("`((?:GRANT|REVOKE|CREATE (?:ROLE|USER|SETTINGS PROFILE)|ALTER (?:ROLE|USER|SETTINGS PROFILE)) [^`]+)`")

func quote(s string) string {
	return "'" + strings.NewReplacer("\\", "\\\\", "'", "\\'").Replace(s) + "'"
}

// TestDocExamples writes the examples' data through the sink and runs
// every example query of docs/schema.md on the engine, checking the exact
// result the 18.16 server gives (sink/docs_test.go). The rows go through
// the columns the sink's INSERTs name and are read back through the views.
func TestDocExamples(t *testing.T) {
	s := open(t, schemadoc.Database, nil)
	migrate(t, s)
	schemadoc.Write(t, s)
	for table, want := range map[string]string{
		"events": "11\n", "events_dedup": "10\n", "profile_ops": "12\n", "profiles": "8\n",
		"group_ops": "2\n", "groups": "2\n", "schema_migrations": "4\n",
	} {
		t.Run("count "+table, func(t *testing.T) {
			if got := query(t, "SELECT count() FROM veil."+table); got != want {
				t.Fatalf("%q rows, want %q", got, want)
			}
		})
	}
	for _, ex := range schemadoc.Examples(t, "../../docs/schema.md") {
		t.Run(ex.Name, func(t *testing.T) {
			got, err := engine.Query(ex.SQL)
			if err != nil {
				t.Fatalf("%v\n%s", err, ex.SQL)
			}
			if want := schemadoc.Results[ex.Name]; got != want {
				t.Fatalf("result\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// dedupBatch is n track events and n profile operations as the worker
// would batch them from offsets first … first+n-1 of partition 0.
func dedupBatch(t *testing.T, first int64, n int) *sink.Batch {
	t.Helper()
	b := sink.NewBatch()
	ts := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	for i := range n {
		b.Cover("veil.events.raw", 0, first+int64(2*i))
		if err := b.Append(&event.Event{Kind: event.KindTrack, Project: "shop", Name: "view_item", DistinctID: fmt.Sprintf("u%d", i),
			InsertID: fmt.Sprintf("ev-%d", i), Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(map[string]any{})}); err != nil {
			t.Fatal(err)
		}
		b.Cover("veil.events.raw", 0, first+int64(2*i+1))
		if err := b.Append(&event.Event{Kind: event.KindEngage, Project: "shop", Endpoint: "/engage", Name: "$set", DistinctID: fmt.Sprintf("u%d", i),
			Value: map[string]any{"plan": "free"}, InsertID: fmt.Sprintf("op-%d", i), Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(map[string]any{})}); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestInsertDedupToken: on a server with insert deduplication tokens, a
// flush retried after its answer was lost, or cut again from the same
// offsets after a crash, is skipped by the server itself, so even a
// count() without FINAL does not see it. The same rows from other offsets
// are a different insert; ReplacingMergeTree folds them.
func TestInsertDedupToken(t *testing.T) {
	const db = "veil_dedup"
	s := open(t, db, nil)
	migrate(t, s)
	ctx := context.Background()
	counts := func() string {
		return query(t, "SELECT (SELECT count() FROM "+db+".events), (SELECT count() FROM "+db+".profile_ops), "+
			"(SELECT count() FROM "+db+".events FINAL), (SELECT count() FROM "+db+".profile_ops FINAL)")
	}
	n := len(engine.Statements())
	if err := s.Write(ctx, dedupBatch(t, 100, 5)); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, st := range statementsSince(n) {
		if strings.HasPrefix(st.SQL, "INSERT INTO "+db+".") {
			table := strings.Fields(strings.TrimPrefix(st.SQL, "INSERT INTO "+db+"."))[0]
			tokens[table] = st.Settings["insert_deduplication_token"]
		}
	}
	wantTokens := map[string]string{
		"events":        "events@veil.events.raw:0:100-109",
		"profile_ops":   "profile_ops@veil.events.raw:0:100-109",
		"profile_state": "", // recomputed, exact without a token
	}
	if fmt.Sprint(tokens) != fmt.Sprint(wantTokens) {
		t.Fatalf("insert tokens %v, want %v", tokens, wantTokens)
	}
	if got := counts(); got != "5\t5\t5\t5\n" {
		t.Fatalf("after the first flush: %q", got)
	}
	if err := s.Write(ctx, dedupBatch(t, 100, 5)); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got != "5\t5\t5\t5\n" {
		t.Fatalf("the same offsets flushed again were stored: counts %q, want 5 rows everywhere", got)
	}
	if err := s.Write(ctx, dedupBatch(t, 200, 5)); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got != "10\t10\t5\t5\n" {
		t.Fatalf("the same rows from other offsets: counts %q, want 10 stored, 5 after FINAL", got)
	}
	if got := query(t, "SELECT count(), uniqExact(distinct_id) FROM "+db+".profiles WHERE property = 'plan' AND value = 'free'"); got != "5\t5\n" {
		t.Fatalf("profiles %q, want 5 users on the free plan", got)
	}
}

// TestRowsReadBack writes one event, profile operation and group operation
// with every column filled and reads each back, every column, through the
// table and the analysts' views: what the sink's INSERTs send is what
// analysts read on a current server.
func TestRowsReadBack(t *testing.T) {
	const db = "veil_rows"
	s := open(t, db, nil)
	migrate(t, s)
	at := time.Date(2026, 11, 2, 10, 0, 0, 250*int(time.Millisecond), time.UTC)
	received := time.Date(2026, 11, 2, 10, 0, 1, 0, time.UTC)
	prov := event.Provenance{PolicyVersion: 3, KeyEpoch: 2, Consent: []string{"dnt", "gpc"}, Transforms: []string{"ip_dropped", "pii_scrubbed"}}
	b := sink.NewBatch()
	b.Cover("veil.events.raw", 4, 41)
	if err := b.Append(&event.Event{Kind: event.KindTrack, Project: "shop", Name: "purchase", DistinctID: schemadoc.U1, InsertID: "ins-1",
		Time: at, ReceivedAt: received, Properties: event.PropertiesOf(map[string]any{"sku": "A-1", "price": 12.5, "name": "Zoë", "tags": []any{"a", "b"}}),
		Geo:        event.Geo{CountryCode: "DE", Region: "BE", City: "Berlin"},
		Device:     event.Device{Browser: "Chrome", BrowserVersion: "120", OS: "Mac OS X", Device: "Mac", Lib: "web", LibVersion: "2.83.0"},
		Provenance: prov}); err != nil {
		t.Fatal(err)
	}
	b.Cover("veil.events.raw", 4, 42)
	if err := b.Append(&event.Event{Kind: event.KindEngage, Project: "shop", Endpoint: "/engage", Name: "$set", DistinctID: schemadoc.U1,
		Value: map[string]any{"plan": "pro", "seats": 3}, InsertID: "ins-2", Time: at, ReceivedAt: received,
		Properties: event.PropertiesOf(map[string]any{"$ignore_time": true}), Provenance: prov}); err != nil {
		t.Fatal(err)
	}
	b.Cover("veil.events.raw", 4, 43)
	if err := b.Append(&event.Event{Kind: event.KindGroups, Project: "shop", Endpoint: "/groups", Name: "$set", GroupKey: "company", GroupID: schemadoc.Acme,
		Value: map[string]any{"industry": "retail"}, InsertID: "ins-3", Time: at, ReceivedAt: received, Properties: event.PropertiesOf(map[string]any{}), Provenance: prov}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		query, want string
	}{
		{"SELECT * FROM " + db + ".events_dedup",
			"shop\t2026-11-02 10:00:00\t250\tpurchase\t" + schemadoc.U1 + "\tins-1\t2026-11-02 10:00:01\tDE\tBE\tBerlin\tChrome\t120\tMac OS X\tMac\tweb\t2.83.0\t" +
				`{"name":"Zoë","price":12.5,"sku":"A-1","tags":["a","b"]}` + "\t3\t2\t['dnt','gpc']\t['ip_dropped','pii_scrubbed']\n"},
		{"SELECT * FROM " + db + ".profile_ops FINAL",
			"shop\t" + schemadoc.U1 + "\t2026-11-02 10:00:00\t250\t$set\t" + `{"plan":"pro","seats":3}` + "\t" + `{"$ignore_time":true}` +
				"\tins-2\t2026-11-02 10:00:01\t4\t42\t3\t2\t['dnt','gpc']\t['ip_dropped','pii_scrubbed']\n"},
		{"SELECT * FROM " + db + ".group_ops FINAL",
			"shop\tcompany\t" + schemadoc.Acme + "\t2026-11-02 10:00:00\t250\t$set\t" + `{"industry":"retail"}` + "\t{}" +
				"\tins-3\t2026-11-02 10:00:01\t4\t43\t3\t2\t['dnt','gpc']\t['ip_dropped','pii_scrubbed']\n"},
		// $ignore_time: no $last_seen.
		{"SELECT * FROM " + db + ".profiles ORDER BY property",
			"shop\t" + schemadoc.U1 + "\tplan\tpro\t\"pro\"\tstring\t2026-11-02 10:00:00\t1\n" +
				"shop\t" + schemadoc.U1 + "\tseats\t3\t3\tnumber\t2026-11-02 10:00:00\t1\n"},
		{"SELECT * FROM " + db + ".groups",
			"shop\tcompany\t" + schemadoc.Acme + "\tindustry\tretail\t\"retail\"\tstring\t2026-11-02 10:00:00\t1\n"},
		{"SELECT project, distinct_id, property, value, value_json, value_type, deleted, set_at, version, policy_version, key_epoch FROM " + db + ".profile_state ORDER BY property",
			"shop\t" + schemadoc.U1 + "\tplan\tpro\t\"pro\"\tstring\t0\t2026-11-02 10:00:00\t1\t3\t2\n" +
				"shop\t" + schemadoc.U1 + "\tseats\t3\t3\tnumber\t0\t2026-11-02 10:00:00\t1\t3\t2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			if got := query(t, tt.query); got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
