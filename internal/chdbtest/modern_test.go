//go:build chdb

package chdbtest_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/veilhq/veil/internal/chdbtest"
	"github.com/veilhq/veil/sink"
)

// engine is the package's one chDB session: a process may hold only one.
var engine *chdbtest.Engine

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "veil-chdb-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	engine, err = chdbtest.Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if err := engine.Close(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "closing chDB:", err)
		code = 1
	}
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// open builds a sink writing to a fresh database db on the engine, through
// clickhouse-go, and drops the database when the test ends. configure, if
// given, changes the sink's configuration first.
func open(t *testing.T, db string, log *zap.Logger, configure ...func(*sink.Config)) *sink.Sink {
	t.Helper()
	query(t, "DROP DATABASE IF EXISTS "+db+" SYNC")
	conn, err := engine.Conn()
	if err != nil {
		t.Fatal(err)
	}
	cfg := sink.DefaultConfig()
	cfg.Addr = []string{engine.Addr()}
	cfg.Database = db
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	for _, c := range configure {
		c(&cfg)
	}
	s, err := sink.New(cfg, conn, sink.Deps{Logger: log})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		_, _ = engine.Query("DROP DATABASE IF EXISTS " + db + " SYNC")
	})
	return s
}

// query runs sql on the engine and returns its TSV output.
func query(t *testing.T, sql string) string {
	t.Helper()
	out, err := engine.Query(sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// statementsSince returns what the engine ran for clients after the n-th
// statement.
func statementsSince(n int) []chdbtest.Statement { return engine.Statements()[n:] }

// modernCaps are the capabilities of the engine's own version.
func modernCaps(t *testing.T) sink.Capabilities {
	t.Helper()
	parts := strings.SplitN(engine.Version(), ".", 3)
	if len(parts) < 2 {
		t.Fatalf("engine version %q", engine.Version())
	}
	major, err1 := strconv.ParseUint(parts[0], 10, 64)
	minor, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("engine version %q", engine.Version())
	}
	return sink.CapabilitiesFor(major, minor)
}

// TestCapabilities: the sink learns the engine's version from the server,
// as it does in production, and every feature Veil switches on by version
// is on, so that the tests below execute every modern rendering.
func TestCapabilities(t *testing.T) {
	s := open(t, "veil_caps", nil)
	got, want := s.Capabilities(), modernCaps(t)
	if got != want {
		t.Fatalf("sink capabilities %+v, want those of %s: %+v", got, engine.Version(), want)
	}
	if got.Major < 23 {
		t.Fatalf("engine %s is older than the servers users run (23.8+)", engine.Version())
	}
	if !got.LowCardinality || !got.Codecs || !got.TTL || !got.InsertDedupToken || !got.RBAC {
		t.Fatalf("a modern feature is off on %s: %+v", engine.Version(), got)
	}
}

// accessRefusals are the answers of an engine without writable access
// storage to statements that parsed and passed the privilege check:
// chDB keeps users and roles only in users.xml (clickhouse-local's
// LocalServer::setupUsers installs no other access storage), so CREATE
// ROLE, USER and SETTINGS PROFILE end at "no writeable access storage", and
// the GRANT and ALTER that follow them at the role or user they would have
// made.
var accessRefusals = map[int]string{
	514: "ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND",
	511: "UNKNOWN_ROLE",
	192: "UNKNOWN_USER",
	180: "THERE_IS_NO_PROFILE",
}

// isAccessStatement reports whether sql manages users, roles, profiles or
// grants.
func isAccessStatement(sql string) bool {
	for _, p := range []string{"CREATE ROLE", "CREATE USER", "CREATE SETTINGS PROFILE", "ALTER ROLE", "ALTER USER",
		"ALTER SETTINGS PROFILE", "GRANT ", "REVOKE ", "DROP ROLE", "DROP USER", "DROP SETTINGS PROFILE"} {
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(sql)), p) {
			return true
		}
	}
	return false
}

// TestMigrations runs `veil migrate`'s code on the engine: every migration
// as rendered for the engine's version is executed, the modern types,
// codecs and table settings are in the tables it made, and only the
// statements that need writable access storage are refused.
func TestMigrations(t *testing.T) {
	const db = "veil_migrate"
	core, logs := observer.New(zap.InfoLevel)
	// With an analyst password, migrate also tries to create the analyst.
	s := open(t, db, zap.New(core), func(c *sink.Config) { c.AnalystPassword = "an analyst's password" })
	caps := s.Capabilities()
	n := len(engine.Statements())
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	ran := statementsSince(n)

	// Every statement of every migration the server qualifies for was sent,
	// and all but the access-control ones succeeded.
	byText := map[string]chdbtest.Statement{}
	for _, st := range ran {
		byText[st.SQL] = st
	}
	for _, m := range sink.Migrations {
		if m.Requires != nil && !m.Requires(caps) {
			t.Errorf("migration %d (%s) is switched off on %s", m.Version, m.Name, engine.Version())
			continue
		}
		t.Run(m.Name, func(t *testing.T) {
			for i, stmt := range m.Statements(db, caps) {
				st, ok := byText[stmt]
				switch {
				case isAccessStatement(stmt) && i == 0:
					// The first refusal ends the migration; the rest are
					// run by TestAccessStatements.
					if !ok || accessRefusals[st.Code] == "" {
						t.Errorf("%s: sent %v, answer %d %s; want an access-storage refusal", stmt, ok, st.Code, st.Err)
					}
				case isAccessStatement(stmt):
				case !ok:
					t.Errorf("not sent:\n%s", stmt)
				case st.Code != 0:
					t.Errorf("refused by %s:\n%s\n%s", engine.Version(), stmt, st.Err)
				}
			}
		})
	}
	users := 0
	for _, st := range ran {
		if st.Code != 0 && !(isAccessStatement(st.SQL) && accessRefusals[st.Code] != "") {
			t.Errorf("refused by %s:\n%s\n%s", engine.Version(), st.SQL, st.Err)
		}
		// The analyst's profile comes first: its refusal ends the attempt
		// to create the profile, the role's settings and the user.
		if strings.HasPrefix(st.SQL, "CREATE SETTINGS PROFILE") {
			users++
		}
	}
	// The refusal of the analyst profile and user is logged, not fatal:
	// Veil runs without them.
	if users != 1 {
		t.Errorf("%d attempts to create the analyst's profile and user, want 1", users)
	}

	// The migrations the engine could run are recorded, the access one is
	// not, so that a server with access storage runs it at its next start.
	if got := query(t, "SELECT groupArray(version) FROM (SELECT version FROM "+db+".schema_migrations FINAL ORDER BY version)"); got != "[1,2,3,4]\n" {
		t.Errorf("recorded migrations %q, want [1,2,3,4]", got)
	}
	if n := logs.FilterMessage("optional migration refused by the server; it will be retried at the next start").Len(); n != 1 {
		t.Errorf("%d warnings of a refused optional migration, want 1", n)
	}

	// The modern renderings took effect.
	cols := query(t, "SELECT table, name, type, compression_codec FROM system.columns WHERE database = '"+db+
		"' AND table IN ('events', 'profile_ops', 'group_state') AND name IN ('project', 'event', 'group_key', 'op', 'properties', 'operand', 'received_at', 'value_json') ORDER BY table, name")
	wantCols := "events\tevent\tLowCardinality(String)\t\n" +
		"events\tproject\tLowCardinality(String)\t\n" +
		"events\tproperties\tString\tCODEC(ZSTD(1))\n" +
		"events\treceived_at\tDateTime\tCODEC(Delta(4), ZSTD(1))\n" +
		"group_state\tgroup_key\tLowCardinality(String)\t\n" +
		"group_state\tproject\tLowCardinality(String)\t\n" +
		"group_state\tvalue_json\tString\tCODEC(ZSTD(1))\n" +
		"profile_ops\top\tLowCardinality(String)\t\n" +
		"profile_ops\toperand\tString\tCODEC(ZSTD(1))\n" +
		"profile_ops\tproject\tLowCardinality(String)\t\n" +
		"profile_ops\treceived_at\tDateTime\tCODEC(Delta(4), ZSTD(1))\n"
	if cols != wantCols {
		t.Errorf("columns\n%s\nwant\n%s", cols, wantCols)
	}
	window := fmt.Sprintf("non_replicated_deduplication_window = %d", sink.DedupWindow)
	for _, table := range []string{"events", "profile_ops", "group_ops"} {
		if ddl := query(t, "SELECT create_table_query FROM system.tables WHERE database = '"+db+"' AND name = '"+table+"'"); !strings.Contains(ddl, window) {
			t.Errorf("%s lacks %s:\n%s", table, window, ddl)
		}
	}

	// A second migrate (every worker runs one at start) changes nothing and
	// fails nothing but the access statements again.
	n = len(engine.Statements())
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	for _, st := range statementsSince(n) {
		if st.Code != 0 && !(isAccessStatement(st.SQL) && accessRefusals[st.Code] != "") {
			t.Errorf("second migrate: refused:\n%s\n%s", st.SQL, st.Err)
		}
	}
	if got := query(t, "SELECT count() FROM system.tables WHERE database = '"+db+"'"); got != "9\n" {
		t.Errorf("%s tables and views after two migrations, want 9", strings.TrimSpace(got))
	}
}
