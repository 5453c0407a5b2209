package sink_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veilhq/veil/sink"
)

// renderAll renders every migration a server of caps runs, for layout l.
func renderAll(t *testing.T, caps sink.Capabilities, l sink.Layout) string {
	t.Helper()
	var b strings.Builder
	for _, m := range sink.Migrations {
		if m.Requires != nil && !m.Requires(caps) {
			continue
		}
		stmts, err := sink.Render(m, "veil", caps, l)
		if err != nil {
			t.Fatalf("migration %d: %v", m.Version, err)
		}
		b.WriteString("-- " + m.Name + "\n" + strings.Join(stmts, ";\n") + ";\n")
	}
	return b.String()
}

// TestSingleNodeRenderingUnchanged holds the default layout (one server) to
// the DDL Veil rendered before clusters existed, for the server in the
// tests and a modern one: a cluster is opt-in and changes nothing else.
func TestSingleNodeRenderingUnchanged(t *testing.T) {
	for _, tt := range []struct {
		golden string
		caps   sink.Capabilities
	}{
		{"single-node-18.16.sql", sink.CapabilitiesFor(18, 16)},
		{"single-node-23.8.sql", sink.CapabilitiesFor(23, 8)},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", tt.golden))
			if err != nil {
				t.Fatal(err)
			}
			if got := renderAll(t, tt.caps, sink.Layout{}); got != string(want) {
				t.Fatalf("single-node DDL changed:\n%s", got)
			}
		})
	}
}

// TestClusterRendering: on a cluster every table is a replicated local
// table under a stable ZooKeeper path plus a Distributed table under the
// analysts' name, sharded by the user; views, databases and access control
// go ON CLUSTER; no statement of any migration is left for one node only.
func TestClusterRendering(t *testing.T) {
	l := sink.Layout{Cluster: "prod"}
	for _, caps := range []sink.Capabilities{sink.CapabilitiesFor(18, 16), sink.CapabilitiesFor(23, 8)} {
		ddl := renderAll(t, caps, l)
		for _, want := range []string{
			"CREATE TABLE IF NOT EXISTS veil.events_local ON CLUSTER prod (",
			"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/veil/tables/{shard}/veil.events/m1', '{replica}')\nPARTITION BY toYYYYMM(time)",
			"CREATE TABLE IF NOT EXISTS veil.events ON CLUSTER prod AS veil.events_local\nENGINE = Distributed(prod, veil, events_local, halfMD5(distinct_id))",
			"CREATE VIEW IF NOT EXISTS veil.events_dedup ON CLUSTER prod AS SELECT * FROM veil.events FINAL",
			"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/veil/tables/{shard}/veil.profile_ops/m3', '{replica}')",
			"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/veil/tables/{shard}/veil.profile_state/m3', '{replica}', version)",
			"ENGINE = Distributed(prod, veil, profile_state_local, halfMD5(distinct_id))",
			"ENGINE = Distributed(prod, veil, group_ops_local, halfMD5(group_id))",
			"CREATE VIEW IF NOT EXISTS veil.profiles ON CLUSTER prod AS\nSELECT",
			"FROM veil.profile_state\n",
		} {
			if !strings.Contains(ddl, want) {
				t.Errorf("%d.%d cluster DDL lacks %q", caps.Major, caps.Minor, want)
			}
		}
		for _, stmt := range strings.Split(ddl, ";\n") {
			if strings.HasPrefix(stmt, "CREATE") || strings.HasPrefix(stmt, "GRANT") {
				if !strings.Contains(stmt, " ON CLUSTER prod") {
					t.Errorf("not ON CLUSTER: %s", stmt)
				}
			}
			if strings.Contains(stmt, "ENGINE = ReplacingMergeTree") || strings.Contains(stmt, "ENGINE = MergeTree") {
				t.Errorf("an unreplicated table on a cluster: %s", stmt)
			}
		}
		if caps.RBAC && !strings.Contains(ddl, "CREATE ROLE IF NOT EXISTS veil_analyst ON CLUSTER prod") {
			t.Errorf("the analyst role is not created on every node")
		}
	}
	// A statement the cluster layout does not know, or a table with no
	// user column, is refused rather than created on one node.
	for _, stmt := range []string{
		"ALTER TABLE veil.events ADD COLUMN x String",
		"CREATE TABLE IF NOT EXISTS veil.counters (\n    project String\n) ENGINE = MergeTree()\nORDER BY project",
	} {
		m := sink.Migration{Version: 99, Name: "new", Statements: func(string, sink.Capabilities) []string { return []string{stmt} }}
		if _, err := sink.Render(m, "veil", sink.CapabilitiesFor(18, 16), l); err == nil {
			t.Errorf("rendered on a cluster: %s", stmt)
		}
		if got, err := sink.Render(m, "veil", sink.CapabilitiesFor(18, 16), sink.Layout{}); err != nil || got[0] != stmt {
			t.Errorf("single node: %v %v", got, err)
		}
	}
}

// TestShardOf: the worker places a user where ClickHouse's halfMD5 sharding
// key does (values from clickhouse-server 18.16's halfMD5), and spreads
// users over the shards.
func TestShardOf(t *testing.T) {
	// SELECT halfMD5('abc') = 10376663631224000432
	const abc = uint64(10376663631224000432)
	for _, n := range []int{1, 2, 3, 5} {
		if got := sink.ShardOf("abc", n); got != int(abc%uint64(n)) {
			t.Errorf("ShardOf(abc, %d) = %d, want %d", n, got, abc%uint64(n))
		}
	}
	counts := make([]int, 3)
	for i := 0; i < 3000; i++ {
		counts[sink.ShardOf(strings.Repeat("x", i%7)+string(rune('a'+i%26))+strings.Repeat("y", i), 3)]++
	}
	for s, c := range counts {
		if c < 800 {
			t.Errorf("shard %d got %d of 3000 users", s, c)
		}
	}
}

func TestClusterConfigValidate(t *testing.T) {
	c := sink.DefaultConfig()
	c.Cluster = "prod cluster"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sink.cluster") {
		t.Fatalf("err %v", err)
	}
	c.Cluster = "prod_1"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestClusterAccessStatements: on a cluster the analyst's profile, user and
// grants are created ON CLUSTER, so the analyst exists with its limits on
// every node; on one server the statements are unchanged.
func TestClusterAccessStatements(t *testing.T) {
	const h = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	stmts := sink.AnalystUserStatements("an analyst", h, sink.DefaultAnalystLimits())
	single, err := sink.Layout{}.Access(stmts)
	if err != nil || strings.Join(single, "\n") != strings.Join(stmts, "\n") {
		t.Fatalf("single node: %v\n%s", err, strings.Join(single, "\n"))
	}
	got, err := sink.Layout{Cluster: "veil"}.Access(stmts)
	if err != nil {
		t.Fatal(err)
	}
	limits := "readonly = 1, max_execution_time = 60 READONLY, max_memory_usage = 4294967296 READONLY, " +
		"max_rows_to_read = 10000000000 READONLY, max_bytes_to_read = 1099511627776 READONLY, " +
		"max_concurrent_queries_for_user = 16 READONLY"
	want := []string{
		"CREATE SETTINGS PROFILE IF NOT EXISTS veil_analyst_limits ON CLUSTER veil",
		"ALTER SETTINGS PROFILE veil_analyst_limits ON CLUSTER veil SETTINGS " + limits,
		"ALTER ROLE veil_analyst ON CLUSTER veil SETTINGS PROFILE 'veil_analyst_limits'",
		"CREATE USER IF NOT EXISTS `an analyst` ON CLUSTER veil IDENTIFIED WITH sha256_hash BY '" + h + "' SETTINGS PROFILE 'veil_analyst_limits', readonly = 1",
		"GRANT ON CLUSTER veil veil_analyst TO `an analyst`",
		"ALTER USER `an analyst` ON CLUSTER veil IDENTIFIED WITH sha256_hash BY '" + h + "' DEFAULT ROLE veil_analyst SETTINGS PROFILE 'veil_analyst_limits', readonly = 1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := (sink.Layout{Cluster: "veil"}).Access([]string{"DROP USER analyst"}); err == nil {
		t.Fatal("a statement of unknown shape was placed")
	}
}
