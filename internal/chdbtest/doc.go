// Package chdbtest proves Veil's ClickHouse schema on a current ClickHouse
// engine. The tests' other ClickHouse is Debian's 18.16 server, which lacks
// most of what sink.Capabilities switches on for the servers users run
// (23.8 and later): LowCardinality, codecs, insert deduplication tokens,
// SQL-driven access control. Here those renderings are executed, not only
// read as strings.
//
// The engine is chDB's libchdb.so (ClickHouse 26.x as a shared library, from
// the npm package @chdb/lib-linux-x64-gnu that scripts/install-deps.sh
// installs into this directory), loaded in-process by the Go binding
// github.com/chdb-io/chdb-go. Engine puts a loopback HTTP endpoint in front
// of it that speaks the part of ClickHouse's HTTP interface clickhouse-go
// uses, so Veil's own code (sink.Migrate, sink.Sink.Write, privacy's
// retention and deletion) sends its statements to it through the same
// client library as in production, and the capabilities come from the
// engine's own SELECT version().
//
// The binding loads libchdb.so when the test binary starts and panics if it
// is missing, so the code that uses it is built only with the build tag
// chdb, which `make test` sets together with CHDB_LIB_PATH. Without the tag
// the package's one test fails under CI and otherwise skips, saying how to
// run it. Nothing in Veil's binary imports this package.
package chdbtest
