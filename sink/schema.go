package sink

import (
	"context"
	"fmt"
	"time"

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
	// non-replicated MergeTree (22.2+).
	InsertDedupToken bool
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
	}
}

// Migration is one versioned schema change. Statements are rendered for the
// server's capabilities and must be idempotent (IF NOT EXISTS), because two
// workers starting together may both run them.
type Migration struct {
	Version    uint32
	Name       string
	Statements func(db string, c Capabilities) []string
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
    received_at     DateTime,
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
    policy_version  UInt32,
    key_epoch       UInt32,
    consent         Array(String),
    transforms      Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, toDate(time), event, distinct_id, time, insert_id)`, db, lc(c), codec(c, "ZSTD(1)"))}
		},
	},
}

// Migrate creates the database and applies every migration not yet recorded
// in db.schema_migrations. It is safe to run concurrently and repeatedly.
func Migrate(ctx context.Context, conn driver.Conn, db string, caps Capabilities, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		return fmt.Errorf("sink: create database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version`, db)); err != nil {
		return fmt.Errorf("sink: create schema_migrations: %w", err)
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
		for _, stmt := range m.Statements(db, caps) {
			if err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("sink: migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		if err := recordMigration(ctx, conn, db, m); err != nil {
			return fmt.Errorf("sink: record migration %d: %w", m.Version, err)
		}
		log.Info("migration applied", zap.Uint32("version", m.Version), zap.String("name", m.Name))
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
