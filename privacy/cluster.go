package privacy

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/veilhq/veil/sink"
)

// placement says where the data database's tables are: on one server, or
// on every node of a cluster (sink.cluster), where each table the analysts
// query is a Distributed table over replicated local tables (sink.Layout).
type placement struct {
	cluster string
	// user and password are the credentials remote() passes to every node
	// (the connection's own, sink.username and sink.password): ClickHouse
	// has no user without a password for it to fall back on.
	user, password string
	shards         ShardRunner
}

// ShardRunner runs fn once on every shard of the data (on one replica of
// each; on one server, on the server): sink.Sink.EachShard.
type ShardRunner func(ctx context.Context, fn func(ctx context.Context, conn driver.Conn) error) error

// alterEachShard runs ALTER TABLE table action, a change a shard's
// replicas share by themselves (a mutation, a dropped partition), on every
// shard: through the ShardRunner when there is one, else ON CLUSTER, else
// on the server.
func (p placement) alterEachShard(ctx context.Context, conn driver.Conn, table, action string, args ...any) error {
	if p.cluster != "" && p.shards != nil {
		return p.shards(ctx, func(ctx context.Context, c driver.Conn) error {
			return c.Exec(ctx, "ALTER TABLE "+table+" "+action, args...)
		})
	}
	return conn.Exec(ctx, "ALTER TABLE "+table+p.onCluster()+" "+action, args...)
}

// local is the table holding a shard's rows: the table itself on one
// server, its local table on a cluster.
func (p placement) local(table string) string {
	if p.cluster == "" {
		return table
	}
	return table + sink.LocalSuffix
}

// public is the analysts' name of a table listed by its local name.
func (p placement) public(table string) string {
	if p.cluster == "" {
		return table
	}
	return strings.TrimSuffix(table, sink.LocalSuffix)
}

// onCluster is the ON CLUSTER clause of a statement that every shard must
// run ("" on one server).
func (p placement) onCluster() string {
	if p.cluster == "" {
		return ""
	}
	return " ON CLUSTER " + p.cluster
}

// everyNode gives a table expression that reads system table sys of every
// node: system.<sys> on one server, remote() over every node of the
// cluster on a cluster (each node its own shard of the query, so a node
// that does not answer fails the read instead of being skipped).
func (p placement) everyNode(ctx context.Context, conn driver.Conn, sys string) (string, error) {
	if p.cluster == "" {
		return "system." + sys, nil
	}
	rows, err := conn.Query(ctx, "SELECT host_address, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", p.cluster)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var addrs []string
	for rows.Next() {
		var host string
		var port uint16
		if err := rows.Scan(&host, &port); err != nil {
			return "", err
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("cluster %s not in system.clusters", p.cluster)
	}
	for _, a := range addrs {
		if strings.ContainsAny(a, "'\\, ") {
			return "", fmt.Errorf("cluster %s: an address ClickHouse cannot be sent", p.cluster)
		}
	}
	return fmt.Sprintf("remote('%s', system, %s, %s, %s)", strings.Join(addrs, ","), sys, quote(p.user), quote(p.password)), nil
}

// quote is s as a ClickHouse string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
