package sink_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/sink"
)

func render(c sink.Capabilities) map[string]string {
	out := map[string]string{}
	for _, m := range sink.Migrations {
		if m.Requires != nil && !m.Requires(c) {
			continue
		}
		out[m.Name] = strings.Join(m.Statements("veil", c), ";\n")
	}
	return out
}

// TestModernDDL checks what only servers newer than the one the tests run
// against get: LowCardinality, codecs, the deduplication window, and the
// analyst role.
func TestModernDDL(t *testing.T) {
	modern := render(sink.CapabilitiesFor(23, 8))
	old := render(sink.CapabilitiesFor(18, 16))
	window := fmt.Sprintf("SETTINGS non_replicated_deduplication_window = %d", sink.DedupWindow)
	tests := []struct {
		migration string
		modern    []string // substrings of the 23.8 rendering, absent from 18.16's
	}{
		{"events", []string{"project         LowCardinality(String)", "event           LowCardinality(String)", "properties      String CODEC(ZSTD(1))",
			"received_at     DateTime CODEC(Delta, ZSTD(1))", window}},
		{"profiles", []string{"op              LowCardinality(String)", "operand         String CODEC(ZSTD(1))", window,
			"value_json      String CODEC(ZSTD(1))"}},
		{"groups", []string{"group_key       LowCardinality(String)", window}},
		{"analyst role", []string{"CREATE ROLE IF NOT EXISTS veil_analyst", "GRANT SELECT ON veil.* TO veil_analyst"}},
	}
	for _, tt := range tests {
		t.Run(tt.migration, func(t *testing.T) {
			ddl, ok := modern[tt.migration]
			if !ok {
				t.Fatalf("no migration %q for 23.8", tt.migration)
			}
			for _, want := range tt.modern {
				if !strings.Contains(ddl, want) {
					t.Errorf("23.8 DDL lacks %q:\n%s", want, ddl)
				}
				if strings.Contains(old[tt.migration], want) {
					t.Errorf("18.16 DDL has %q", want)
				}
			}
		})
	}
	for name, ddl := range old {
		for _, bad := range []string{"LowCardinality", "CODEC", "SETTINGS", "ROLE", "GRANT"} {
			if strings.Contains(ddl, bad) {
				t.Errorf("18.16 DDL of %s uses %s, which 18.16 lacks", name, bad)
			}
		}
	}
	if _, ok := old["analyst role"]; ok {
		t.Error("the analyst role migration would run on 18.16")
	}
	// The deduplication window exists where tokens do; servers between RBAC
	// and tokens get the role but not the window.
	mid := render(sink.CapabilitiesFor(21, 8))
	if strings.Contains(mid["events"], "non_replicated_deduplication_window") || mid["analyst role"] == "" {
		t.Errorf("21.8 rendering: events %q, role %q", mid["events"], mid["analyst role"])
	}
}

func TestInsertSettings(t *testing.T) {
	if s := sink.InsertSettings(sink.CapabilitiesFor(18, 16), "events", "raw:0:1-9"); s != nil {
		t.Fatalf("18.16 gets settings %v", s)
	}
	if s := sink.InsertSettings(sink.CapabilitiesFor(23, 8), "events", ""); s != nil {
		t.Fatalf("an untracked batch gets settings %v", s)
	}
	s := sink.InsertSettings(sink.CapabilitiesFor(23, 8), "profile_ops", "veil.events.raw:0:100-199,3:7-42")
	if len(s) != 1 || s["insert_deduplication_token"] != "profile_ops@veil.events.raw:0:100-199,3:7-42" {
		t.Fatalf("settings %v", s)
	}
}

func TestAnalystUserStatements(t *testing.T) {
	sum := sha256.Sum256([]byte("pw"))
	h := hex.EncodeToString(sum[:])
	got := sink.AnalystUserStatements("analyst", h, sink.DefaultAnalystLimits())
	want := []string{
		"CREATE SETTINGS PROFILE IF NOT EXISTS veil_analyst_limits",
		"ALTER SETTINGS PROFILE veil_analyst_limits SETTINGS readonly = 1, max_execution_time = 60 READONLY, " +
			"max_memory_usage = 4294967296 READONLY, max_rows_to_read = 10000000000 READONLY, " +
			"max_bytes_to_read = 1099511627776 READONLY, max_concurrent_queries_for_user = 16 READONLY",
		"ALTER ROLE veil_analyst SETTINGS PROFILE 'veil_analyst_limits'",
		"CREATE USER IF NOT EXISTS `analyst` IDENTIFIED WITH sha256_hash BY '" + h + "' SETTINGS PROFILE 'veil_analyst_limits', readonly = 1",
		"GRANT veil_analyst TO `analyst`",
		"ALTER USER `analyst` IDENTIFIED WITH sha256_hash BY '" + h + "' DEFAULT ROLE veil_analyst SETTINGS PROFILE 'veil_analyst_limits', readonly = 1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range got {
		if strings.Contains(s, "'pw'") {
			t.Fatalf("clear password in %s", s)
		}
	}
}

// TestAnalystLimitsRendered: configured limits reach the statements a
// modern server runs, each one a READONLY constraint.
func TestAnalystLimitsRendered(t *testing.T) {
	l := sink.AnalystLimits{
		MaxExecutionTime:     1500 * time.Millisecond, // whole seconds, rounded up
		MaxMemoryUsage:       123,
		MaxRowsToRead:        456,
		MaxBytesToRead:       789,
		MaxConcurrentQueries: 3,
	}
	sql := strings.Join(sink.AnalystProfileStatements(l), "\n")
	for _, want := range []string{"readonly = 1", "max_execution_time = 2 READONLY", "max_memory_usage = 123 READONLY",
		"max_rows_to_read = 456 READONLY", "max_bytes_to_read = 789 READONLY", "max_concurrent_queries_for_user = 3 READONLY"} {
		if !strings.Contains(sql, want) {
			t.Errorf("profile statements lack %q:\n%s", want, sql)
		}
	}
	// users.xml (18.16) and the profile render one list.
	if got := len(sink.AnalystSettings(l)); got != 6 {
		t.Errorf("%d analyst settings, want 6", got)
	}
}
