package privacy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"

	"github.com/veilhq/veil/deidentify/pseudonym"
)

// Task kinds and statuses, in Mixpanel's GDPR API spelling.
const (
	KindDeletion  = "deletion"
	KindRetrieval = "retrieval"

	StatusPending = "PENDING"
	StatusStaging = "STAGING"
	StatusStarted = "STARTED"
	StatusSuccess = "SUCCESS"
	StatusFailure = "FAILURE"
	StatusRevoked = "REVOKED"
)

// Task is one privacy request.
type Task struct {
	ID             string
	Kind           string
	Project        string
	ComplianceType string
	Status         string
	Pseudonyms     []string
	IDCount        uint32
	RequestedAt    time.Time
	UpdatedAt      time.Time
	Result         string
	Error          string
}

// Tasks stores privacy requests and carries them out against the data
// database's tables.
type Tasks struct {
	conn   driver.Conn
	db     string // privacy database
	dataDB string // analysts' database, whose rows are deleted or retrieved
	keys   *pseudonym.Keyring
	cfg    Config
	log    *zap.Logger
	now    func() time.Time
	place  placement
}

// NewTasks builds the task store and runner.
func NewTasks(cfg Config, conn driver.Conn, dataDB string, keys *pseudonym.Keyring, log *zap.Logger) (*Tasks, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Tasks{conn: conn, db: cfg.Database, dataDB: dataDB, keys: keys, cfg: cfg, log: log, now: time.Now, place: placement{cluster: cfg.Cluster, user: cfg.ClusterUser, password: cfg.ClusterPassword}}, nil
}

func newTaskID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Create records a new request for ids of project. The raw ids are turned
// into their pseudonyms under every key held and not kept.
func (t *Tasks) Create(ctx context.Context, kind, project, compliance string, ids []string) (Task, error) {
	var ps []string
	seen := map[string]bool{}
	for _, id := range ids {
		for _, p := range t.keys.All(project, id) {
			if !seen[p.Value] {
				seen[p.Value] = true
				ps = append(ps, p.Value)
			}
		}
	}
	now := t.now().UTC().Truncate(time.Second)
	task := Task{ID: newTaskID(), Kind: kind, Project: project, ComplianceType: compliance, Status: StatusPending,
		Pseudonyms: ps, IDCount: uint32(len(ids)), RequestedAt: now, UpdatedAt: now}
	return task, t.save(ctx, task)
}

func (t *Tasks) save(ctx context.Context, task Task) error {
	b, err := t.conn.PrepareBatch(ctx, "INSERT INTO "+t.db+".tasks (task_id, kind, project, compliance_type, status, pseudonyms, id_count, requested_at, updated_at, result, error, version)")
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Append(task.ID, task.Kind, task.Project, task.ComplianceType, task.Status, nonNil(task.Pseudonyms), task.IDCount,
		task.RequestedAt, task.UpdatedAt, task.Result, task.Error, uint64(time.Now().UnixNano())); err != nil {
		return err
	}
	return b.Send()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// OnShards makes t run its deletions on every shard through shards
// (sink.Sink.EachShard) instead of ON CLUSTER.
func (t *Tasks) OnShards(shards ShardRunner) *Tasks {
	t.place.shards = shards
	return t
}

// ErrNotFound is returned for an unknown task id.
var ErrNotFound = errors.New("no such task")

// Get reads one task.
func (t *Tasks) Get(ctx context.Context, kind, id string) (Task, error) {
	tasks, err := t.query(ctx, "WHERE task_id = ? AND kind = ?", id, kind)
	if err != nil {
		return Task{}, err
	}
	if len(tasks) == 0 {
		return Task{}, ErrNotFound
	}
	return tasks[0], nil
}

func (t *Tasks) query(ctx context.Context, where string, args ...any) ([]Task, error) {
	rows, err := t.conn.Query(ctx, "SELECT task_id, kind, project, compliance_type, status, pseudonyms, id_count, requested_at, updated_at, result, error FROM "+t.db+".tasks FINAL "+where+" ORDER BY requested_at", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Task
	for rows.Next() {
		var k Task
		if err := rows.Scan(&k.ID, &k.Kind, &k.Project, &k.ComplianceType, &k.Status, &k.Pseudonyms, &k.IDCount, &k.RequestedAt, &k.UpdatedAt, &k.Result, &k.Error); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// ErrTooLate is returned when cancelling a task that has started.
var ErrTooLate = errors.New("the task has started and can no longer be cancelled")

// Cancel revokes a task that has not started. A deletion in STAGING has
// written its tombstones: they are withdrawn.
func (t *Tasks) Cancel(ctx context.Context, kind, id string) (Task, error) {
	task, err := t.Get(ctx, kind, id)
	if err != nil {
		return task, err
	}
	if task.Status != StatusPending && task.Status != StatusStaging {
		return task, ErrTooLate
	}
	if task.Status == StatusStaging {
		if err := t.writeTombstones(ctx, task, time.Unix(0, 0)); err != nil {
			return task, err
		}
	}
	return t.setStatus(ctx, task, StatusRevoked, "")
}

func (t *Tasks) setStatus(ctx context.Context, task Task, status, errMsg string) (Task, error) {
	task.Status = status
	task.Error = errMsg
	task.UpdatedAt = t.now().UTC()
	return task, t.save(ctx, task)
}

func (t *Tasks) writeTombstones(ctx context.Context, task Task, before time.Time) error {
	b, err := t.conn.PrepareBatch(ctx, "INSERT INTO "+t.db+".deleted_users (project, pseudonym, deleted_before, task_id, version)")
	if err != nil {
		return err
	}
	defer b.Close()
	v := uint64(time.Now().UnixNano())
	for _, p := range task.Pseudonyms {
		if err := b.Append(task.Project, p, before, task.ID, v); err != nil {
			return err
		}
	}
	return b.Send()
}

// Run carries out pending tasks, one at a time, until ctx ends.
func (t *Tasks) Run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.TaskPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		tasks, err := t.query(ctx, "WHERE status IN ('PENDING', 'STAGING', 'STARTED')")
		if err != nil {
			if ctx.Err() == nil {
				t.log.Warn("reading privacy tasks failed", zap.Error(err))
			}
			continue
		}
		for _, task := range tasks {
			if err := t.carryOut(ctx, task); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				t.log.Warn("privacy task failed", zap.String("task_id", task.ID), zap.String("kind", task.Kind), zap.Error(err))
				_, _ = t.setStatus(ctx, task, StatusFailure, "internal error; see the worker log for this task id")
			}
		}
	}
}

func (t *Tasks) carryOut(ctx context.Context, task Task) error {
	log := t.log.With(zap.String("task_id", task.ID), zap.String("kind", task.Kind))
	switch task.Kind {
	case KindDeletion:
		if task.Status == StatusPending {
			// Tombstones first: from here on no worker stores an event this
			// user sent before the request, including those still in Kafka.
			// RequestedAt has whole seconds; the tombstone covers the whole
			// second of the request, so nothing received before it escapes.
			if err := t.writeTombstones(ctx, task, task.RequestedAt.Add(time.Second)); err != nil {
				return err
			}
			var err error
			if task, err = t.setStatus(ctx, task, StatusStaging, ""); err != nil {
				return err
			}
			log.Info("deletion staged", zap.Int("pseudonyms", len(task.Pseudonyms)))
		}
		if task.Status == StatusStaging {
			if err := sleep(ctx, t.cfg.Settle); err != nil {
				return err
			}
			// A cancellation may have come in while the tombstones settled.
			cur, err := t.Get(ctx, task.Kind, task.ID)
			if err != nil {
				return err
			}
			if cur.Status != StatusStaging {
				return nil
			}
			if task, err = t.setStatus(ctx, task, StatusStarted, ""); err != nil {
				return err
			}
		}
		// Twice: the second pass removes rows a worker had already batched
		// when the tombstones reached it.
		for pass := 0; pass < 2; pass++ {
			if err := t.deleteRows(ctx, task); err != nil {
				return err
			}
			if pass == 0 {
				if err := sleep(ctx, t.cfg.Settle); err != nil {
					return err
				}
			}
		}
		_, err := t.setStatus(ctx, task, StatusSuccess, "")
		log.Info("deletion done")
		return err
	case KindRetrieval:
		var err error
		if task, err = t.setStatus(ctx, task, StatusStarted, ""); err != nil {
			return err
		}
		res, err := t.retrieve(ctx, task)
		if err != nil {
			return err
		}
		task.Result = res
		_, err = t.setStatus(ctx, task, StatusSuccess, "")
		log.Info("retrieval done")
		return err
	}
	return fmt.Errorf("unknown task kind %q", task.Kind)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// userTables lists the data database's tables and the column that holds
// the user's pseudonym in each: every table with distinct_id, and group
// tables by group_id. On a cluster these are the local tables, which hold
// the rows (the Distributed tables are not MergeTree).
func (t *Tasks) userTables(ctx context.Context) (map[string]string, error) {
	rows, err := t.conn.Query(ctx, `SELECT table, name FROM system.columns
WHERE database = ? AND name IN ('distinct_id', 'group_id')
  AND table IN (SELECT name FROM system.tables WHERE database = ? AND engine LIKE '%MergeTree')`, t.dataDB, t.dataDB)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			return nil, err
		}
		if _, ok := out[table]; !ok || col == "distinct_id" {
			out[table] = col
		}
	}
	return out, rows.Err()
}

func (t *Tasks) deleteRows(ctx context.Context, task Task) error {
	if len(task.Pseudonyms) == 0 {
		return nil
	}
	tables, err := t.userTables(ctx)
	if err != nil {
		return err
	}
	for table, col := range tables {
		// On a cluster the mutation goes to one replica of every shard;
		// the shard's replicas share it through ZooKeeper.
		action := fmt.Sprintf("DELETE WHERE project = ? AND %s IN %s", col, inList(task.Pseudonyms))
		for {
			err := t.place.alterEachShard(ctx, t.conn, t.dataDB+"."+table, action, task.Project)
			if err == nil {
				break
			}
			// On a cluster the statement fails while ZooKeeper or every
			// replica of a shard is unreachable; a deletion repeated
			// deletes nothing more, so it is tried again until every
			// shard has it.
			if t.place.cluster == "" || ctx.Err() != nil {
				return fmt.Errorf("delete from %s: %w", table, err)
			}
			t.log.Warn("deletion not yet taken by every shard; retrying", zap.String("table", table), zap.Error(err))
			if err := sleep(ctx, 5*time.Second); err != nil {
				return err
			}
		}
	}
	return t.waitMutations(ctx)
}

// waitMutations waits until ClickHouse has finished every mutation of the
// data database: on a cluster, on every replica of every shard. A node that
// does not answer is waited for (a deletion is not done while a replica
// still holds the rows), and the wait is logged.
func (t *Tasks) waitMutations(ctx context.Context) error {
	for {
		from, err := t.place.everyNode(ctx, t.conn, "mutations")
		var n uint64
		if err == nil {
			err = t.conn.QueryRow(ctx, "SELECT count() FROM "+from+" WHERE database = ? AND is_done = 0", t.dataDB).Scan(&n)
		}
		if err != nil {
			if t.place.cluster == "" || ctx.Err() != nil {
				return err
			}
			t.log.Warn("waiting for every replica to report its mutations", zap.Error(err))
			n = 1
		}
		if n == 0 {
			return nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// retrieve gathers every stored row of the task's users, table by table, as
// one JSON document.
func (t *Tasks) retrieve(ctx context.Context, task Task) (string, error) {
	tables, err := t.userTables(ctx)
	if err != nil {
		return "", err
	}
	doc := struct {
		TaskID      string                      `json:"task_id"`
		Project     string                      `json:"project"`
		GeneratedAt time.Time                   `json:"generated_at"`
		Tables      map[string][]map[string]any `json:"tables"`
	}{task.ID, task.Project, t.now().UTC(), map[string][]map[string]any{}}
	for local, col := range tables {
		// On a cluster the Distributed table reads every shard.
		table := t.place.public(local)
		rows := []map[string]any{}
		if len(task.Pseudonyms) > 0 {
			if rows, err = t.selectRows(ctx, fmt.Sprintf("SELECT * FROM %s.%s WHERE project = ? AND %s IN %s", t.dataDB, table, col, inList(task.Pseudonyms)), task.Project); err != nil {
				return "", fmt.Errorf("retrieve from %s: %w", table, err)
			}
		}
		doc.Tables[table] = rows
	}
	b, err := json.Marshal(doc)
	return string(b), err
}

func (t *Tasks) selectRows(ctx context.Context, q string, args ...any) ([]map[string]any, error) {
	rows, err := t.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := rows.ColumnTypes()
	out := []map[string]any{}
	for rows.Next() {
		vals := make([]any, len(cols))
		for i, c := range cols {
			vals[i] = reflect.New(c.ScanType()).Interface()
		}
		if err := rows.Scan(vals...); err != nil {
			return nil, err
		}
		row := make(map[string]any, len(cols))
		for i, c := range cols {
			v := reflect.ValueOf(vals[i]).Elem().Interface()
			// properties and operands are JSON text: embed them as JSON.
			if s, ok := v.(string); ok && (strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[")) && json.Valid([]byte(s)) {
				v = json.RawMessage(s)
			}
			row[c.Name()] = v
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// inList renders pseudonyms as an SQL tuple. Pseudonyms are lower-case hex
// (Create makes them), so they need no escaping; anything else is left out.
func inList(ps []string) string {
	var b strings.Builder
	b.WriteByte('(')
	n := 0
	for _, p := range ps {
		if strings.Trim(p, "0123456789abcdef") != "" || p == "" {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString("'" + p + "'")
		n++
	}
	if n == 0 {
		b.WriteString("''")
	}
	b.WriteByte(')')
	return b.String()
}
