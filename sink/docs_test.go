package sink_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/schemadoc"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/sink"
)

// The analyst user of the test ClickHouse may read the database named veil
// only (allow_databases), so these tests use that name, which is also the
// one the examples of docs/schema.md name.
const analystDB = schemadoc.Database

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

// TestDocExamples runs every example query of docs/schema.md as the
// analyst, through clickhouse-client, on the examples' data, and checks
// its exact result.
func TestDocExamples(t *testing.T) {
	s, _ := veilDatabase(t)
	schemadoc.Write(t, s)
	for _, ex := range schemadoc.Examples(t, "../docs/schema.md") {
		t.Run(ex.Name, func(t *testing.T) {
			got, err := asAnalyst(t, ex.SQL)
			if err != nil {
				t.Fatalf("%v\n%s", err, ex.SQL)
			}
			if want := schemadoc.Results[ex.Name]; got != want {
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
	schemadoc.Write(t, s)
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
