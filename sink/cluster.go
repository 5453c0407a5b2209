package sink

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"regexp"
	"strings"
)

// Veil on a replicated, sharded ClickHouse cluster (sink.cluster).
//
// Every table of the schema becomes two: a Replicated…MergeTree local table
// on every node (events_local, profile_ops_local, …), replicated within its
// shard through ZooKeeper, and a Distributed table under the name analysts
// already use (events, profile_ops, …), which reads every shard. Views are
// created on every node and read the Distributed tables, so they keep
// working. Migrations run ON CLUSTER from one node; schema_migrations is one
// table replicated to every node of the cluster.
//
// The sharding key is the pseudonymous user: halfMD5(distinct_id) modulo
// the number of shards (group tables: halfMD5(group_id)), so one user's
// events, profile operations and profile state are on one shard. The worker
// computes the same function (ShardOf) and writes each shard's rows straight
// to that shard's local table.
//
// ZooKeeper paths (see ZooKeeperPath):
//
//	/clickhouse/veil/tables/{shard}/<database>.<table>/m<migration>
//	/clickhouse/veil/tables/all/<database>.<table>/m<migration>   (tables on every node)
//
// {shard} and {replica} are the server's macros. The path holds no UUID: it
// is the same on every node, stable across restarts, and derived from the
// database, the table and the migration that created the table. A table
// whose definition changes is created by a new migration, under a new
// path, so a dropped and recreated table never meets its old metadata.
// DROP TABLE removes a replica's metadata from ZooKeeper, and the last
// replica's drop leaves only an empty table path, which the same CREATE
// reuses; a replica that was lost without DROP (a wiped disk) keeps its
// entry, which must go before it is created again (docs/operations.md).

// Layout is where the schema lives: one server, or every node of the
// cluster named by Cluster.
type Layout struct {
	Cluster string
}

// ZooKeeperRoot is the root of the ZooKeeper paths of Veil's tables.
const ZooKeeperRoot = "/clickhouse/veil/tables"

// LocalSuffix names a cluster's local tables: events_local under events.
const LocalSuffix = "_local"

// ZooKeeperPath is the path of a replicated table: shard is "{shard}" for a
// sharded table (the macro) or "all" for a table every node holds.
func ZooKeeperPath(shard, db, table string, migration uint32) string {
	return fmt.Sprintf("%s/%s/%s.%s/m%d", ZooKeeperRoot, shard, db, table, migration)
}

// ShardOf is the 0-based shard of a pseudonymous user (or group id) in a
// cluster of n shards: ClickHouse's halfMD5(id) % n, the Distributed
// tables' sharding key. halfMD5 is the first 8 bytes of the MD5 of the
// string, read big-endian.
func ShardOf(id string, n int) int {
	if n <= 1 {
		return 0
	}
	sum := md5.Sum([]byte(id))
	return int(binary.BigEndian.Uint64(sum[:8]) % uint64(n))
}

// shardKeyColumns lists, in order of preference, the columns whose value
// places a row: the user, else the group.
var shardKeyColumns = []string{"distinct_id", "group_id"}

var (
	reCreateDB    = regexp.MustCompile(`^CREATE DATABASE IF NOT EXISTS (\w+)$`)
	reCreateTable = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) \((.*)\) ENGINE = (\w*MergeTree)\(([^)]*)\)(.*)$`)
	reCreateView  = regexp.MustCompile(`(?s)^CREATE VIEW IF NOT EXISTS (\w+)\.(\w+) AS(.*)$`)
	reCreateRole  = regexp.MustCompile(`^CREATE ROLE IF NOT EXISTS (\w+)$`)
	reGrant       = regexp.MustCompile(`^GRANT (.*)$`)
	// An access entity's statement: the name, then what is set.
	reAccess = regexp.MustCompile("^((?:CREATE|ALTER) (?:SETTINGS PROFILE|ROLE|USER)(?: IF NOT EXISTS)? (?:\\w+|`[^`]+`))(.*)$")
	reColumn = regexp.MustCompile(`(?m)^\s*(\w+)\s`)
)

// Render gives the statements of m for layout l. On one server they are
// m's statements as they are. On a cluster each is rewritten: databases,
// views, roles and grants ON CLUSTER; a MergeTree table into a replicated
// local table and a Distributed table under its name. A statement of a
// shape the rewrite does not know is an error, so that no migration
// silently creates a table on one node only.
func Render(m Migration, db string, c Capabilities, l Layout) ([]string, error) {
	stmts := m.Statements(db, c)
	if l.Cluster == "" {
		return stmts, nil
	}
	var out []string
	for _, s := range stmts {
		r, err := l.rewrite(s, "{shard}", m.Version)
		if err != nil {
			return nil, fmt.Errorf("sink: migration %d (%s): %w", m.Version, m.Name, err)
		}
		out = append(out, r...)
	}
	return out, nil
}

// Everywhere renders statements for tables that every node holds in full
// (schema_migrations, the privacy database): on a cluster, databases ON
// CLUSTER and each MergeTree table replicated to every node, with no
// Distributed table. On one server they are returned as they are.
func (l Layout) Everywhere(stmts []string, migration uint32) ([]string, error) {
	if l.Cluster == "" {
		return stmts, nil
	}
	var out []string
	for _, s := range stmts {
		r, err := l.rewrite(s, "all", migration)
		if err != nil {
			return nil, err
		}
		out = append(out, r...)
	}
	return out, nil
}

// Access renders access-control statements (the analyst's settings
// profile, role, user and grants) for layout l: on a cluster each runs ON
// CLUSTER, so that the analyst exists with the same limits on every node,
// whichever node a query reaches. (Servers whose access entities live in a
// replicated user directory accept ON CLUSTER too.) On one server they are
// returned as they are.
func (l Layout) Access(stmts []string) ([]string, error) {
	if l.Cluster == "" {
		return stmts, nil
	}
	out := make([]string, 0, len(stmts))
	for _, s := range stmts {
		if !reAccess.MatchString(s) && !reGrant.MatchString(s) {
			return nil, fmt.Errorf("sink: an access statement the cluster layout cannot place: %.40q", s)
		}
		r, err := l.rewrite(s, "all", 0)
		if err != nil {
			return nil, err
		}
		out = append(out, r...)
	}
	return out, nil
}

func (l Layout) rewrite(s, shard string, migration uint32) ([]string, error) {
	on := " ON CLUSTER " + l.Cluster
	if m := reCreateDB.FindStringSubmatch(s); m != nil {
		return []string{s + on}, nil
	}
	if m := reCreateView.FindStringSubmatch(s); m != nil {
		return []string{fmt.Sprintf("CREATE VIEW IF NOT EXISTS %s.%s%s AS%s", m[1], m[2], on, m[3])}, nil
	}
	if m := reCreateRole.FindStringSubmatch(s); m != nil {
		return []string{s + on}, nil
	}
	if m := reGrant.FindStringSubmatch(s); m != nil {
		return []string{"GRANT" + on + " " + m[1]}, nil
	}
	if m := reAccess.FindStringSubmatch(s); m != nil {
		return []string{m[1] + on + m[2]}, nil
	}
	m := reCreateTable.FindStringSubmatch(s)
	if m == nil {
		return nil, fmt.Errorf("a statement the cluster layout cannot place: %.60q", s)
	}
	db, table, cols, engine, args, rest := m[1], m[2], m[3], m[4], m[5], m[6]
	params := fmt.Sprintf("'%s', '{replica}'", ZooKeeperPath(shard, db, table, migration))
	if args != "" {
		params += ", " + args
	}
	if shard == "all" {
		return []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s%s (%s) ENGINE = Replicated%s(%s)%s",
			db, table, on, cols, engine, params, rest)}, nil
	}
	key := ""
	have := map[string]bool{}
	for _, c := range reColumn.FindAllStringSubmatch(cols, -1) {
		have[c[1]] = true
	}
	for _, k := range shardKeyColumns {
		if have[k] {
			key = k
			break
		}
	}
	if key == "" {
		return nil, fmt.Errorf("table %s has no column to shard by (one of %s)", table, strings.Join(shardKeyColumns, ", "))
	}
	local := table + LocalSuffix
	return []string{
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s%s (%s) ENGINE = Replicated%s(%s)%s", db, local, on, cols, engine, params, rest),
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s%s AS %s.%s\nENGINE = Distributed(%s, %s, %s, halfMD5(%s))", db, table, on, db, local, l.Cluster, db, local, key),
	}, nil
}
