//go:build chdb

package chdbtest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/veilhq/veil/privacy"
	"github.com/veilhq/veil/sink"
)

// clusterRefusals are the answers of an engine that is no node of a
// cluster (chDB runs no distributed DDL and has no ZooKeeper) to a
// statement that parsed and was then to be run ON CLUSTER, and to the
// statements that follow one: those naming the database, role or profile
// a refused ON CLUSTER statement would have made.
var clusterRefusals = map[int]string{
	81:  "UNKNOWN_DATABASE",
	180: "THERE_IS_NO_PROFILE",
	225: "NO_ZOOKEEPER",
	392: "QUERY_IS_PROHIBITED", // "Replicated DDL queries are disabled"
	511: "UNKNOWN_ROLE",
	701: "CLUSTER_DOESNT_EXIST",
}

// TestClusterRenderings: every statement Veil sends a cluster (sink.cluster)
// as rendered for a current server — the schema's migrations, the privacy
// database, the analyst's profile, user and grants — parses on the current
// engine and is refused only for want of a cluster, never as a syntax,
// engine or setting error. What ON CLUSTER runs on each node is the same
// statement without the clause, and the tables' and views' bodies are those
// TestMigrations executes; the cluster itself runs on 18.16 in
// internal/clustertest.
func TestClusterRenderings(t *testing.T) {
	conn, err := engine.Conn()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	caps := modernCaps(t)
	l := sink.Layout{Cluster: "veil"}
	var stmts []string
	for _, m := range sink.Migrations {
		if m.Requires != nil && !m.Requires(caps) {
			continue
		}
		r, err := sink.Render(m, "veil_cluster", caps, l)
		if err != nil {
			t.Fatal(err)
		}
		stmts = append(stmts, r...)
	}
	p, err := privacy.MigrationStatements("veil_cluster_privacy", l.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	stmts = append(stmts, p...)
	sum := sha256.Sum256([]byte("an analyst's password"))
	a, err := l.Access(sink.AnalystUserStatements("analyst", hex.EncodeToString(sum[:]), sink.DefaultAnalystLimits()))
	if err != nil {
		t.Fatal(err)
	}
	stmts = append(stmts, a...)
	if len(stmts) < 20 {
		t.Fatalf("only %d statements rendered for a cluster", len(stmts))
	}
	for _, stmt := range stmts {
		t.Run(stmt, func(t *testing.T) {
			parsesAndIsRefused(t, conn, stmt, clusterRefusals, "no node of a cluster")
		})
	}
}
