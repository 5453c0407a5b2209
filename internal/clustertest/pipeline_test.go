package clustertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/privacy"
	"github.com/veilhq/veil/sink"
)

// role runs one of Veil's roles in this process until the test ends.
func role(t *testing.T, name string, run func(ctx context.Context, deps app.Deps) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	deps := app.Deps{Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(name), Registry: app.NewRegistry()}
	done := make(chan error, 1)
	go func() { done <- run(ctx, deps) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// post sends a batch to a collector endpoint as the SDKs do and requires
// the answer 1.
func post(t *testing.T, collector, path string, batch []map[string]any) {
	t.Helper()
	b, _ := json.Marshal(batch)
	resp, err := http.PostForm(collector+path+"?verbose=1", url.Values{"data": {base64.StdEncoding.EncodeToString(b)}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(got), `"status":1`) {
		t.Fatalf("%s answered %d %s", path, resp.StatusCode, got)
	}
}

func adminCall(t *testing.T, admin, method, path string, body any) map[string]any {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, admin+path, r)
	req.Header.Set("Authorization", "Bearer fault-test-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, v)
	}
	return v
}

// TestPipelineOnCluster posts events and profile updates to a collector and
// follows them through a worker into the cluster: exactly the events sent
// through veil.events after FINAL, each user's events, profile operations
// and profile on exactly one shard (the one the sharding key names), the
// two replicas of every shard holding the same rows, the analyst reading
// and never writing on every node, and a deletion that reports SUCCESS
// only once the user's rows are gone from every replica of every shard.
func TestPipelineOnCluster(t *testing.T) {
	cfg := config(t)
	// The analyst user may read the database named veil (users.xml).
	cfg.Sink.Database, cfg.Privacy.Database = "veil", "veil_privacy"
	ctx := context.Background()
	if err := app.Migrate(ctx, cfg, app.Deps{Logger: zap.NewNop()}); err != nil {
		t.Fatal(err)
	}
	cl := listen(t)
	role(t, "collector", func(ctx context.Context, deps app.Deps) error { return app.RunCollector(ctx, cfg, deps, cl) })
	al := listen(t)
	role(t, "worker", func(ctx context.Context, deps app.Deps) error { return app.RunWorker(ctx, cfg, deps, al) })
	collector, admin := "http://"+cl.Addr().String(), "http://"+al.Addr().String()

	const users, perUser = 30, 20
	var batch []map[string]any
	for i := 0; i < users*perUser; i++ {
		u := fmt.Sprintf("user-%d", i%users)
		batch = append(batch, map[string]any{"event": "page_view", "properties": map[string]any{
			"token": "tok-shop", "distinct_id": u, "$insert_id": fmt.Sprintf("ins-%d", i), "time": time.Now().UnixMilli() - int64(i),
		}})
		if len(batch) == 50 {
			post(t, collector, "/track", batch)
			batch = nil
		}
	}
	var engage []map[string]any
	for u := 0; u < users; u++ {
		engage = append(engage, map[string]any{"$token": "tok-shop", "$distinct_id": fmt.Sprintf("user-%d", u), "$set": map[string]any{"plan": "pro"}})
	}
	post(t, collector, "/engage", engage)
	// Every event and one profile per user, through the Distributed tables.
	conn := testsvc.Conn(t, cfg.Sink)
	testsvc.Eventually(t, 60*time.Second, "every event and profile stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM veil.events FINAL") >= users*perUser &&
			testsvc.Count(t, conn, "SELECT uniqExact(distinct_id) FROM veil.profiles WHERE property = 'plan'") >= users
	})
	if n := testsvc.Count(t, conn, "SELECT count() FROM veil.events FINAL"); n != users*perUser {
		t.Fatalf("%d events after FINAL, want %d", n, users*perUser)
	}
	if n := testsvc.Count(t, conn, "SELECT count() FROM veil.events_dedup"); n != users*perUser {
		t.Fatalf("events_dedup: %d, want %d", n, users*perUser)
	}

	t.Run("each user on one shard", func(t *testing.T) {
		where := map[string]int{} // pseudonym → shard
		for s := 1; s <= shards; s++ {
			c := nodeConn(t, cluster.Shard(s)[0], "", "")
			for _, table := range []string{"events_local", "profile_ops_local", "profile_state_local"} {
				rows, err := c.Query(ctx, "SELECT DISTINCT distinct_id FROM veil."+table)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var id string
					if err := rows.Scan(&id); err != nil {
						t.Fatal(err)
					}
					if prev, ok := where[id]; ok && prev != s {
						t.Errorf("a user's rows on shards %d and %d (%s)", prev, s, table)
					}
					where[id] = s
					if want := sink.ShardOf(id, shards) + 1; want != s {
						t.Errorf("a user on shard %d, the sharding key says %d", s, want)
					}
				}
				rows.Close()
				// ClickHouse's own sharding key agrees with the worker's.
				if n := testsvc.Count(t, c, fmt.Sprintf("SELECT count() FROM veil.%s WHERE halfMD5(distinct_id) %% %d != %d", table, shards, s-1)); n != 0 {
					t.Errorf("%d rows of %s on shard %d that halfMD5 places elsewhere", n, table, s)
				}
			}
		}
		if len(where) != users {
			t.Fatalf("%d users found on the shards, want %d", len(where), users)
		}
		per := map[int]int{}
		for _, s := range where {
			per[s]++
		}
		t.Logf("users per shard: %v", per)
		if per[1] == 0 || per[2] == 0 {
			t.Errorf("every user on one shard: %v", per)
		}
	})

	t.Run("replicas hold the same rows", func(t *testing.T) {
		ev := replicasAgree(t, "veil", "events_local", "distinct_id, insert_id")
		ops := replicasAgree(t, "veil", "profile_ops_local", "distinct_id, insert_id, op")
		if ev[0].rows+ev[1].rows != users*perUser {
			t.Errorf("events on the shards: %d + %d, want %d", ev[0].rows, ev[1].rows, users*perUser)
		}
		if ops[0].rows+ops[1].rows != users {
			t.Errorf("profile operations on the shards: %d + %d, want %d", ops[0].rows, ops[1].rows, users)
		}
	})

	t.Run("analyst reads and cannot write on every node", func(t *testing.T) {
		for _, n := range cluster.Nodes {
			c := nodeConn(t, n, "analyst", testsvc.AnalystPassword)
			if got := testsvc.Count(t, c, "SELECT count() FROM veil.events FINAL"); got != users*perUser {
				t.Errorf("%s: the analyst reads %d events, want %d", n.Name, got, users*perUser)
			}
			for _, q := range []string{
				"CREATE TABLE veil.analyst_table (a String) ENGINE = Memory",
				"ALTER TABLE veil.events_local DELETE WHERE 1",
				"DROP TABLE veil.events",
				"SELECT count() FROM veil_privacy.deleted_users",
			} {
				if err := c.Exec(ctx, q); err == nil {
					t.Errorf("%s: the analyst ran %s", n.Name, q)
				}
			}
			b, err := c.PrepareBatch(ctx, "INSERT INTO veil.events_local (project, distinct_id)")
			if err == nil {
				_ = b.Append("shop", "x")
				err = b.Send()
			}
			if err == nil {
				t.Errorf("%s: the analyst inserted a row", n.Name)
			}
		}
	})

	t.Run("deletion on every replica of every shard", func(t *testing.T) {
		v := adminCall(t, admin, http.MethodPost, "/api/app/data-deletions/v3.0/?token=tok-shop",
			map[string]any{"distinct_ids": []string{"user-7"}, "compliance_type": "GDPR"})
		id := v["results"].(map[string]any)["task_id"].(string)
		deadline := time.Now().Add(90 * time.Second)
		for {
			r := adminCall(t, admin, http.MethodGet, "/api/app/data-deletions/v3.0/"+id+"?token=tok-shop", nil)["results"].(map[string]any)
			if r["status"] == "SUCCESS" {
				break
			}
			if r["status"] == "FAILURE" || time.Now().After(deadline) {
				for _, n := range cluster.Nodes {
					rows, err := nodeConn(t, n, "", "").Query(ctx, "SELECT table, mutation_id, is_done, toString(parts_to_do) FROM system.mutations WHERE database = 'veil' AND is_done = 0")
					if err != nil {
						t.Logf("%s: %v", n.Name, err)
						continue
					}
					for rows.Next() {
						var table, id, todo string
						var done uint8
						_ = rows.Scan(&table, &id, &done, &todo)
						t.Logf("%s: mutation %s of %s not done, %s parts to do", n.Name, id, table, todo)
					}
					rows.Close()
				}
				t.Fatalf("deletion: %v", r)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// At SUCCESS, every replica of every shard: the user's rows are gone,
		// everyone else's are there.
		var left, kept uint64
		for _, n := range cluster.Nodes {
			c := nodeConn(t, n, "", "")
			left += testsvc.Count(t, c, "SELECT count() FROM veil.events_local WHERE distinct_id IN (SELECT distinct_id FROM veil.events_local GROUP BY distinct_id HAVING count() != ?)", uint64(perUser))
			kept += testsvc.Count(t, c, "SELECT count() FROM veil.events_local")
		}
		if left != 0 {
			t.Errorf("%d rows of users with fewer than %d events left", left, perUser)
		}
		// Each row is on the two replicas of its shard.
		if want := uint64(2 * (users - 1) * perUser); kept != want {
			t.Errorf("at SUCCESS the replicas hold %d event rows, want %d (%d users left, twice)", kept, want, users-1)
		}
		if n := testsvc.Count(t, conn, "SELECT uniqExact(distinct_id) FROM veil.events"); n != users-1 {
			t.Errorf("%d users left, want %d", n, users-1)
		}
		for _, n := range cluster.Nodes {
			c := nodeConn(t, n, "", "")
			for _, table := range []string{"profile_ops_local", "profile_state_local"} {
				if got := testsvc.Count(t, c, "SELECT uniqExact(distinct_id) FROM veil."+table); got > users {
					t.Errorf("%s.%s: %d users", n.Name, table, got)
				}
			}
		}
		ops := testsvc.Count(t, conn, "SELECT uniqExact(distinct_id) FROM veil.profile_ops")
		if ops != users-1 {
			t.Errorf("profile operations of %d users left, want %d", ops, users-1)
		}
	})
}

// TestRetentionPerShard: retention drops a month past it on every replica
// of every shard, and removes the expired rows of the straddling month on
// each of them, leaving the rest.
func TestRetentionPerShard(t *testing.T) {
	cfg := config(t)
	ctx := context.Background()
	s := migratedSink(t, cfg)
	defer s.Close()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	b := sink.NewBatch()
	days := []time.Time{
		time.Date(2026, 6, 10, 0, 0, 0, 0, time.UTC),  // a month wholly past retention
		time.Date(2026, 8, 15, 0, 0, 0, 0, time.UTC),  // past retention, in the straddling month
		time.Date(2026, 8, 30, 0, 0, 0, 0, time.UTC),  // within retention, same month
		time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC), // recent
	}
	const users = 16 // on both shards
	for u := 0; u < users; u++ {
		for i, ts := range days {
			ev := event.Event{Kind: event.KindTrack, Project: "p", Name: "e", DistinctID: fmt.Sprintf("d%d", u),
				InsertID: fmt.Sprintf("%d-%d", u, i), Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(map[string]any{})}
			if err := b.Append(&ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	before := replicasAgree(t, cfg.Sink.Database, "events_local", "distinct_id, insert_id")
	if before[0].rows == 0 || before[1].rows == 0 {
		t.Fatalf("rows per shard %v: the test needs both shards", before)
	}
	r := privacy.NewRetention(s.Conn(), cfg.Sink.Database, map[string]int{"events": 90}, time.Hour, nil).OnCluster(cluster.Name(), cfg.Sink.Username, cfg.Sink.Password, s.EachShard)
	if err := r.ApplyAt(ctx, now); err != nil {
		t.Fatal(err)
	}
	for _, n := range cluster.Nodes {
		c := nodeConn(t, n, "", "")
		db := cfg.Sink.Database
		testsvc.Eventually(t, 30*time.Second, n.Name+": expired rows gone", func() bool {
			return testsvc.Count(t, c, "SELECT count() FROM "+db+".events_local WHERE time < toDateTime('2026-08-24 12:00:00')") == 0
		})
		onShard := before[n.Shard-1].rows / uint64(len(days))
		if got := testsvc.Count(t, c, "SELECT count() FROM "+db+".events_local"); got != 2*onShard {
			t.Errorf("%s: %d rows left, want %d", n.Name, got, 2*onShard)
		}
		if got := testsvc.Count(t, c, "SELECT count() FROM system.parts WHERE database = '"+db+"' AND table = 'events_local' AND active AND partition = '202606'"); got != 0 {
			t.Errorf("%s: the June partition is still there", n.Name)
		}
	}
}

// TestRecreateAfterDrop: a database dropped ON CLUSTER and migrated again
// gets its replicated tables back under the same ZooKeeper paths (DROP
// removes each replica's entry), and they take writes and replicate.
func TestRecreateAfterDrop(t *testing.T) {
	cfg := config(t)
	ctx := context.Background()
	write := func(first int) {
		s := migratedSink(t, cfg)
		defer s.Close()
		b := sink.NewBatch()
		for i := first; i < first+20; i++ {
			ev := event.Event{Kind: event.KindTrack, Project: "p", Name: "e", DistinctID: fmt.Sprintf("d%d", i),
				InsertID: fmt.Sprint(i), Time: time.Now(), ReceivedAt: time.Now(), Properties: event.PropertiesOf(map[string]any{})}
			if err := b.Append(&ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	conn := testsvc.Conn(t, cfg.Sink)
	path := sink.ZooKeeperPath("1", cfg.Sink.Database, "events", 1)
	if n := testsvc.Count(t, conn, "SELECT count() FROM system.zookeeper WHERE path = '"+path+"/replicas'"); n != replicas {
		t.Fatalf("%s/replicas lists %d replicas, want %d", path, n, replicas)
	}
	if err := conn.Exec(ctx, "DROP DATABASE "+cfg.Sink.Database+" ON CLUSTER "+cluster.Name()); err != nil {
		t.Fatal(err)
	}
	// The last replica's DROP removes the table's path altogether.
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM system.zookeeper WHERE path = '"+path+"/replicas'").Scan(&n)
	if err == nil && n != 0 || err != nil && !strings.Contains(err.Error(), "No node") {
		t.Fatalf("after DROP, %s/replicas: %d replicas (%v)", path, n, err)
	}
	write(100)
	st := replicasAgree(t, cfg.Sink.Database, "events_local", "distinct_id, insert_id")
	if st[0].rows+st[1].rows != 20 {
		t.Fatalf("after recreating: %d + %d rows, want the 20 written since", st[0].rows, st[1].rows)
	}
}

// TestRetriedFlushIsANoOp: a flush written again (its answer was lost, or
// the worker died before committing and the replay cut the same batch)
// sends each shard the same block, which the shard's replicas recognise by
// its hash in ZooKeeper: no row is stored twice, even before any merge.
func TestRetriedFlushIsANoOp(t *testing.T) {
	cfg := config(t)
	ctx := context.Background()
	s := migratedSink(t, cfg)
	defer s.Close()
	ts := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	flush := func() {
		b := sink.NewBatch()
		for i := 0; i < 200; i++ {
			b.Cover("raw", i%4, int64(i))
			ev := event.Event{Kind: event.KindTrack, Project: "p", Name: "e", DistinctID: fmt.Sprintf("d%d", i%37),
				InsertID: fmt.Sprint(i), Time: ts, ReceivedAt: ts, Properties: event.PropertiesOf(map[string]any{"i": i})}
			if err := b.Append(&ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	flush()
	st := replicasAgree(t, cfg.Sink.Database, "events_local", "distinct_id, insert_id")
	if st[0].rows+st[1].rows != 200 {
		t.Fatalf("%d + %d rows after the same flush twice, want 200", st[0].rows, st[1].rows)
	}
}

// TestDistributedInsertPlacesRowsLikeTheWorker: rows inserted through the
// Distributed table (an operator's backfill, a reshard) land on the shard
// the worker would have written them to.
func TestDistributedInsertPlacesRowsLikeTheWorker(t *testing.T) {
	cfg := config(t)
	ctx := context.Background()
	s := migratedSink(t, cfg)
	defer s.Close()
	sctx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
	b, err := s.Conn().PrepareBatch(sctx, "INSERT INTO "+cfg.Sink.Database+".events (project, distinct_id, insert_id)")
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	for i := 0; i < n; i++ {
		if err := b.Append("p", fmt.Sprintf("%064x", i*7919), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	// The insert went to one replica of each shard; the other gets it by
	// replication.
	replicasAgree(t, cfg.Sink.Database, "events_local", "distinct_id, insert_id")
	found := 0
	for sh := 1; sh <= shards; sh++ {
		c := nodeConn(t, cluster.Shard(sh)[0], "", "")
		rows, err := c.Query(ctx, "SELECT distinct_id FROM "+cfg.Sink.Database+".events_local")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			found++
			if want := sink.ShardOf(id, shards) + 1; want != sh {
				t.Errorf("a row on shard %d that the worker writes to shard %d", sh, want)
			}
		}
		rows.Close()
	}
	if found != n {
		t.Fatalf("%d rows on the shards, want %d", found, n)
	}
}

// migratedSink opens a sink on the cluster, as a worker does, and runs the
// migrations; the caller closes it.
func migratedSink(t *testing.T, cfg app.Config) *sink.Sink {
	t.Helper()
	ctx := context.Background()
	s, err := sink.Open(ctx, cfg.Sink, sink.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		t.Fatal(err)
	}
	return s
}
