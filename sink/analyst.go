package sink

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// AnalystLimits bound what one analyst query may take from the server, so
// that a forgotten `SELECT count() FROM system.numbers` or a cross join
// cannot hold a core or the server's memory until someone restarts it.
// They are the analyst profile's settings on every server: users.xml on
// 18.16, a settings profile on servers with SQL-driven access control. The
// analyst user is readonly = 1 there, so it cannot change them.
type AnalystLimits struct {
	// MaxExecutionTime ends a query that runs longer (ClickHouse's
	// max_execution_time, whole seconds). An analyst's query on the
	// de-identified tables answers in seconds; a minute leaves room for a
	// scan of a large month and frees the core of an abandoned one soon.
	MaxExecutionTime time.Duration `yaml:"max_execution_time"`
	// MaxMemoryUsage is the memory one query may use, in bytes
	// (max_memory_usage). 4 GiB holds a GROUP BY or uniqExact over tens of
	// millions of pseudonyms and leaves the rest of the server to the
	// writer and the other analysts.
	MaxMemoryUsage int64 `yaml:"max_memory_usage"`
	// MaxRowsToRead and MaxBytesToRead (uncompressed) bound what one query
	// reads (max_rows_to_read, max_bytes_to_read). They are set far above
	// what an analyst query reads within MaxExecutionTime, so they never
	// stop a legitimate one; on MergeTree tables ClickHouse checks them
	// against its estimate before reading, so a query that would scan
	// more than that is refused at once instead of after a minute.
	MaxRowsToRead  int64 `yaml:"max_rows_to_read"`
	MaxBytesToRead int64 `yaml:"max_bytes_to_read"`
	// MaxConcurrentQueries is how many queries the analyst user may run at
	// once (max_concurrent_queries_for_user). Dashboards send a dozen
	// panels' queries together; 16 lets them through and keeps most of the
	// server's slots (100 by default) for Veil's own inserts.
	MaxConcurrentQueries int64 `yaml:"max_concurrent_queries"`
}

// DefaultAnalystLimits returns the limits described on AnalystLimits.
func DefaultAnalystLimits() AnalystLimits {
	return AnalystLimits{
		MaxExecutionTime:     time.Minute,
		MaxMemoryUsage:       4 << 30,
		MaxRowsToRead:        10_000_000_000,
		MaxBytesToRead:       1 << 40,
		MaxConcurrentQueries: 16,
	}
}

// Validate reports the first limit that is not one, naming its key. Zero is
// refused: to ClickHouse it means "unlimited", which is the defect these
// settings exist to prevent.
func (l AnalystLimits) Validate() error {
	switch {
	case l.MaxExecutionTime < time.Second:
		return errors.New("sink.analyst_limits.max_execution_time must be at least 1s")
	case l.MaxMemoryUsage <= 0:
		return errors.New("sink.analyst_limits.max_memory_usage must be positive")
	case l.MaxRowsToRead <= 0:
		return errors.New("sink.analyst_limits.max_rows_to_read must be positive")
	case l.MaxBytesToRead <= 0:
		return errors.New("sink.analyst_limits.max_bytes_to_read must be positive")
	case l.MaxConcurrentQueries <= 0:
		return errors.New("sink.analyst_limits.max_concurrent_queries must be positive")
	}
	return nil
}

// Setting is one ClickHouse setting of a profile, its value as ClickHouse
// reads it.
type Setting struct {
	Name, Value string
}

// AnalystSettings are the analyst profile's settings: readonly = 1 and the
// limits. users.xml on 18.16 (internal/chserver) and the settings profile
// on newer servers (AnalystUserStatements) are both rendered from this
// one list.
func AnalystSettings(l AnalystLimits) []Setting {
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	return []Setting{
		{"readonly", "1"},
		{"max_execution_time", i(int64(math.Ceil(l.MaxExecutionTime.Seconds())))},
		{"max_memory_usage", i(l.MaxMemoryUsage)},
		{"max_rows_to_read", i(l.MaxRowsToRead)},
		{"max_bytes_to_read", i(l.MaxBytesToRead)},
		{"max_concurrent_queries_for_user", i(l.MaxConcurrentQueries)},
	}
}

// AnalystProfile is the settings profile that holds the analyst limits on
// servers with SQL-driven access control.
const AnalystProfile = "veil_analyst_limits"

// AnalystProfileStatements render the SQL that creates (or updates) the
// analyst settings profile and attaches it to the analyst role, so that
// every user granted the role, not only the one Veil creates, gets the
// limits. Each limit is READONLY: a user cannot change it even where
// readonly = 1 were lifted.
func AnalystProfileStatements(l AnalystLimits) []string {
	var s []string
	for _, set := range AnalystSettings(l) {
		if set.Name == "readonly" {
			s = append(s, set.Name+" = "+set.Value)
			continue
		}
		s = append(s, set.Name+" = "+set.Value+" READONLY")
	}
	// CREATE … IF NOT EXISTS then ALTER: the profile keeps its identity
	// (users and roles refer to it) while its values follow the
	// configuration at every migrate.
	return []string{
		"CREATE SETTINGS PROFILE IF NOT EXISTS " + AnalystProfile,
		"ALTER SETTINGS PROFILE " + AnalystProfile + " SETTINGS " + strings.Join(s, ", "),
		fmt.Sprintf("ALTER ROLE %s SETTINGS PROFILE '%s'", AnalystRole, AnalystProfile),
	}
}

// AnalystUserStatements renders the SQL that creates (or updates) the
// read-only analyst user on a server with SQL-driven access control: first
// the analyst profile (AnalystProfileStatements), then the user, which gets
// the analyst role and nothing else, the profile's limits, and readonly = 1,
// which forbids any write, DDL or settings change even if a grant were
// added by mistake. The password travels as a SHA-256 hash, so it never
// appears in clear in the server's query log.
func AnalystUserStatements(user, passwordSHA256Hex string, l AnalystLimits) []string {
	u := quoteIdent(user)
	auth := fmt.Sprintf("IDENTIFIED WITH sha256_hash BY '%s'", passwordSHA256Hex)
	settings := fmt.Sprintf("SETTINGS PROFILE '%s', readonly = 1", AnalystProfile)
	// The role is granted before it is made the default: a default role
	// must already be granted.
	return append(AnalystProfileStatements(l),
		fmt.Sprintf("CREATE USER IF NOT EXISTS %s %s %s", u, auth, settings),
		fmt.Sprintf("GRANT %s TO %s", AnalystRole, u),
		fmt.Sprintf("ALTER USER %s %s DEFAULT ROLE %s %s", u, auth, AnalystRole, settings),
	)
}
