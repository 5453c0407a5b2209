package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"
)

// Capabilities are the schema features the connected server supports. The
// same migrations run on Debian's ClickHouse 18.16 and on current releases;
// what differs is switched on here, by server version.
type Capabilities struct {
	Major, Minor uint64
	// LowCardinality dictionary-encodes repetitive strings (19.x+; 18.16 has
	// it only behind an experimental setting, so it is left off there).
	LowCardinality bool
	// Codecs allows per-column compression codecs (19.x+).
	Codecs bool
	// TTL allows table TTL for retention (19.6+).
	TTL bool
	// InsertDedupToken makes a retried insert of the same batch a no-op on a
	// non-replicated MergeTree (22.2+): the insert_deduplication_token
	// setting, with the table setting non_replicated_deduplication_window.
	InsertDedupToken bool
	// RBAC is SQL-driven access control: CREATE ROLE, CREATE USER, GRANT
	// (20.4+). Older servers only know users.xml.
	RBAC bool
}

// CapabilitiesFor derives the capabilities of a server version.
func CapabilitiesFor(major, minor uint64) Capabilities {
	atLeast := func(ma, mi uint64) bool { return major > ma || (major == ma && minor >= mi) }
	return Capabilities{
		Major:            major,
		Minor:            minor,
		LowCardinality:   atLeast(19, 9),
		Codecs:           atLeast(19, 9),
		TTL:              atLeast(19, 9),
		InsertDedupToken: atLeast(22, 2),
		RBAC:             atLeast(20, 4),
	}
}

// Migration is one versioned schema change. Statements are rendered for the
// server's capabilities and must be idempotent (IF NOT EXISTS), because two
// workers starting together may both run them.
type Migration struct {
	Version    uint32
	Name       string
	Statements func(db string, c Capabilities) []string
	// Requires, when set, gates the migration on a server feature. A
	// migration the server cannot run is skipped and not recorded, so it
	// runs after the server is upgraded.
	Requires func(c Capabilities) bool
	// Optional migrations may be refused by the server (typically: the
	// migrating user may not manage access). The refusal is logged, the
	// migration is not recorded, and the next start tries again.
	Optional bool
}

// lc wraps a String column type in LowCardinality where the server has it.
func lc(c Capabilities) string {
	if c.LowCardinality {
		return "LowCardinality(String)"
	}
	return "String"
}

// codec adds a compression codec where the server supports codecs.
func codec(c Capabilities, spec string) string {
	if c.Codecs {
		return " CODEC(" + spec + ")"
	}
	return ""
}

// DedupWindow is how many recent insert blocks a table remembers to
// recognise a retried insert by its deduplication token. At about one insert
// a second per table and worker, 1000 blocks cover the retries of the last
// several minutes; older replays are folded by ReplacingMergeTree instead.
const DedupWindow = 1000

// tableSettings renders the SETTINGS clause of a MergeTree table.
func tableSettings(c Capabilities) string {
	if c.InsertDedupToken {
		return fmt.Sprintf("\nSETTINGS non_replicated_deduplication_window = %d", DedupWindow)
	}
	return ""
}

// provenanceColumns are on every row written from an event: which policy
// applied, which pseudonymisation key epoch produced the ids, which consent
// signals the request carried and which transforms fired.
const provenanceColumns = `    policy_version  UInt32,
    key_epoch       UInt32,
    consent         Array(String),
    transforms      Array(String)`

// opsTable renders an append-only log of profile operations, keyed by the
// columns in idCols (distinct_id for people, group_key and group_id for
// groups).
func opsTable(db, name, idCols, idKey string, c Capabilities) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s.%[2]s (
    project         %[3]s,
%[4]s
    time            DateTime,
    time_ms         UInt16,
    op              %[3]s,
    operand         String%[5]s,
    modifiers       String%[5]s,
    insert_id       String,
    received_at     DateTime%[6]s,
    kafka_partition UInt32,
    kafka_offset    UInt64,
%[7]s
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, %[8]s, time, insert_id, op)%[9]s`,
		db, name, lc(c), idCols, codec(c, "ZSTD(1)"), codec(c, "Delta, ZSTD(1)"), provenanceColumns, idKey, tableSettings(c))
}

// stateTable renders the current-state table of profiles or groups: one row
// per property, rewritten by the worker whenever an operation touches it.
// ReplacingMergeTree(version) keeps the row of the newest computation.
func stateTable(db, name, idCols, idKey string, c Capabilities) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s.%[2]s (
    project         %[3]s,
%[4]s
    property        String,
    value           String%[5]s,
    value_json      String%[5]s,
    value_type      %[3]s,
    deleted         UInt8,
    set_at          DateTime,
    version         UInt64,
    policy_version  UInt32,
    key_epoch       UInt32,
    updated_at      DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (project, %[6]s, property)`,
		db, name, lc(c), idCols, codec(c, "ZSTD(1)"), idKey)
}

// stateView renders the analysts' view of current state: for each property
// the row of the highest version, unless that row is a deletion. argMax over
// a GROUP BY is exact whether or not the background merges have run.
func stateView(db, view, table, idKey string) string {
	return fmt.Sprintf(`CREATE VIEW IF NOT EXISTS %[1]s.%[2]s AS
SELECT project, %[4]s, property,
    s.1 AS value, s.2 AS value_json, s.3 AS value_type, s.4 AS set_at, s.6 AS version
FROM (
    SELECT project, %[4]s, property,
        argMax(tuple(value, value_json, value_type, set_at, deleted, version), version) AS s
    FROM %[1]s.%[3]s
    GROUP BY project, %[4]s, property
)
WHERE s.5 = 0`, db, view, table, idKey)
}

// AnalystRole is the role that may read the de-identified tables, on servers
// with SQL-driven access control.
const AnalystRole = "veil_analyst"

// Migrations is the schema, oldest first. Never edit a released migration:
// add a new one.
var Migrations = []Migration{
	{
		Version: 1,
		Name:    "events",
		Statements: func(db string, c Capabilities) []string {
			// ORDER BY starts with what every analyst query filters on (project,
			// then day and event name) and ends with the dedup key Mixpanel uses
			// (event, distinct_id, time, $insert_id): ReplacingMergeTree folds
			// replayed rows, which are identical, into one. Monthly partitions
			// keep the part count low even for historical /import data.
			return []string{fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s.events (
    project         %[2]s,
    time            DateTime,
    time_ms         UInt16,
    event           %[2]s,
    distinct_id     String,
    insert_id       String,
    received_at     DateTime%[4]s,
    country_code    %[2]s,
    region          %[2]s,
    city            %[2]s,
    browser         %[2]s,
    browser_version %[2]s,
    os              %[2]s,
    device          %[2]s,
    lib             %[2]s,
    lib_version     %[2]s,
    properties      String%[3]s,
%[5]s
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, toDate(time), event, distinct_id, time, insert_id)%[6]s`,
				db, lc(c), codec(c, "ZSTD(1)"), codec(c, "Delta, ZSTD(1)"), provenanceColumns, tableSettings(c))}
		},
	},
	{
		Version: 2,
		Name:    "events_dedup view",
		Statements: func(db string, c Capabilities) []string {
			// Replayed rows are identical, so filtering before or after FINAL
			// gives the same answer: a plain FINAL view is exact.
			return []string{fmt.Sprintf("CREATE VIEW IF NOT EXISTS %[1]s.events_dedup AS SELECT * FROM %[1]s.events FINAL", db)}
		},
	},
	{
		Version: 3,
		Name:    "profiles",
		Statements: func(db string, c Capabilities) []string {
			return []string{
				opsTable(db, "profile_ops", "    distinct_id     String,", "distinct_id", c),
				stateTable(db, "profile_state", "    distinct_id     String,", "distinct_id", c),
				stateView(db, "profiles", "profile_state", "distinct_id"),
			}
		},
	},
	{
		Version: 4,
		Name:    "groups",
		Statements: func(db string, c Capabilities) []string {
			ids := fmt.Sprintf("    group_key       %s,\n    group_id        String,", lc(c))
			return []string{
				opsTable(db, "group_ops", ids, "group_key, group_id", c),
				stateTable(db, "group_state", ids, "group_key, group_id", c),
				stateView(db, "groups", "group_state", "group_key, group_id"),
			}
		},
	},
	{
		Version:  5,
		Name:     "analyst role",
		Requires: func(c Capabilities) bool { return c.RBAC },
		Optional: true,
		Statements: func(db string, c Capabilities) []string {
			// Everything in the database is de-identified by construction, so
			// the role reads the whole database; a grant per table would miss
			// the tables later migrations add.
			return []string{
				"CREATE ROLE IF NOT EXISTS " + AnalystRole,
				fmt.Sprintf("GRANT SELECT ON %s.* TO %s", db, AnalystRole),
			}
		},
	},
}

// Migrate creates the database and applies every migration not yet recorded
// in db.schema_migrations. It is safe to run concurrently and repeatedly.
func Migrate(ctx context.Context, conn driver.Conn, db string, caps Capabilities, log *zap.Logger) error {
	return MigrateLayout(ctx, conn, db, caps, Layout{}, log)
}

// MigrateLayout is Migrate for layout l: on a cluster every statement runs
// ON CLUSTER (see cluster.go).
func MigrateLayout(ctx context.Context, conn driver.Conn, db string, caps Capabilities, l Layout, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	// schema_migrations is held in full by every node of a cluster; its
	// ZooKeeper path carries migration number 0.
	base, err := l.Everywhere([]string{"CREATE DATABASE IF NOT EXISTS " + db, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version`, db)}, 0)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	// On a cluster DDL goes through ZooKeeper: a worker that starts while
	// ZooKeeper is down, with the schema in place, must not need it.
	exists := false
	if l.Cluster != "" {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'", db).Scan(&n); err != nil {
			return fmt.Errorf("sink: read system.tables: %w", err)
		}
		exists = n > 0
	}
	if !exists {
		if err := conn.Exec(ctx, base[0]); err != nil {
			return fmt.Errorf("sink: create database %s: %w", db, err)
		}
		if err := conn.Exec(ctx, base[1]); err != nil {
			return fmt.Errorf("sink: create schema_migrations: %w", err)
		}
	}
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM "+db+".schema_migrations")
	if err != nil {
		return fmt.Errorf("sink: read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range Migrations {
		if applied[m.Version] {
			continue
		}
		if m.Requires != nil && !m.Requires(caps) {
			log.Info("migration skipped: the server lacks the feature", zap.Uint32("version", m.Version), zap.String("name", m.Name))
			continue
		}
		if err := applyMigration(ctx, conn, db, caps, l, m); err != nil {
			var ex *clickhouse.Exception
			if m.Optional && errors.As(err, &ex) {
				log.Warn("optional migration refused by the server; it will be retried at the next start",
					zap.Uint32("version", m.Version), zap.String("name", m.Name), zap.Error(err))
				continue
			}
			return err
		}
		log.Info("migration applied", zap.Uint32("version", m.Version), zap.String("name", m.Name))
	}
	return nil
}

func applyMigration(ctx context.Context, conn driver.Conn, db string, caps Capabilities, l Layout, m Migration) error {
	stmts, err := Render(m, db, caps, l)
	if err != nil {
		return err
	}
	for _, stmt := range stmts {
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("sink: migration %d (%s): %w", m.Version, m.Name, err)
		}
	}
	if err := recordMigration(ctx, conn, db, m); err != nil {
		return fmt.Errorf("sink: record migration %d: %w", m.Version, err)
	}
	return nil
}

// recordMigration inserts m's row through a native batch: an INSERT … VALUES
// sent with Exec is not answered by 18.16 over the native protocol.
func recordMigration(ctx context.Context, conn driver.Conn, db string, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Append(m.Version, m.Name, time.Now()); err != nil {
		return err
	}
	return b.Send()
}

// quoteIdent quotes a ClickHouse identifier with backticks.
func quoteIdent(s string) string {
	return "`" + strings.NewReplacer("\\", "\\\\", "`", "\\`").Replace(s) + "`"
}

// quoteString quotes a ClickHouse string literal.
func quoteString(s string) string {
	return "'" + strings.NewReplacer("\\", "\\\\", "'", "\\'").Replace(s) + "'"
}
