package sink

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Profile and group state.
//
// The ops tables are the truth: an append-only log of every operation,
// deduplicated like events. The state tables hold, per property, the value
// that Mixpanel's semantics give after every operation in the log, applied
// in time order. The worker maintains them: after a flush has written the
// operations, it reads back the whole log of every profile or group the
// batch touched, folds it, and writes the properties the batch named. The
// result depends only on the deduplicated log, never on arrival order or
// on how often a message was replayed, so replays and out-of-order imports
// are exact. Each written row carries the number of distinct operations
// folded as its version: a later computation has seen at least as many, and
// ReplacingMergeTree(version) keeps it.

// storedOp is one operation read back from an ops table.
type storedOp struct {
	ms            int64 // time, Unix milliseconds
	partition     uint32
	offset        uint64
	insertID      string
	op            string
	operand       string
	modifiers     string
	policyVersion uint32
	keyEpoch      uint32
}

// opRank orders the operations of one update that share time and position.
var opRank = map[string]int{opSet: 0, opSetOnce: 1, opAdd: 2, opAppend: 3, opUnion: 4, opRemove: 5, opUnset: 6, opDelete: 7}

// compareOps is the order operations apply in: time, then arrival (the Kafka
// position: one profile's updates share a partition), then $insert_id and
// the operation, so that the order is total and every fold is the same.
func compareOps(a, b storedOp) int {
	return cmp.Or(
		cmp.Compare(a.ms, b.ms),
		cmp.Compare(a.partition, b.partition),
		cmp.Compare(a.offset, b.offset),
		strings.Compare(a.insertID, b.insertID),
		cmp.Compare(opRank[a.op], opRank[b.op]),
	)
}

// propState is one property after a fold. A property that was named by some
// operation but does not exist now has present false.
type propState struct {
	value   any
	present bool
	setAt   int64 // ms of the operation that last changed it
}

// folded is the state of one profile or group.
type folded struct {
	props   map[string]*propState
	version uint64
	// provenance of the newest operation
	policyVersion, keyEpoch uint32
}

// fold applies ops with Mixpanel's semantics. lastSeen maintains
// $last_seen, as Mixpanel does for user profiles (not for groups).
// Operands that do not fit the property's current type are ignored, as
// Mixpanel ignores an $add to a string.
func fold(ops []storedOp, lastSeen bool) folded {
	// Deduplicate on the ops table's key, as FINAL would.
	type key struct {
		sec          int64
		insertID, op string
	}
	seen := make(map[key]bool, len(ops))
	uniq := make([]storedOp, 0, len(ops))
	slices.SortStableFunc(ops, compareOps)
	for _, o := range ops {
		k := key{o.ms / 1000, o.insertID, o.op}
		if seen[k] {
			continue
		}
		seen[k] = true
		uniq = append(uniq, o)
	}

	st := map[string]*propState{}
	prop := func(name string) *propState {
		p := st[name]
		if p == nil {
			p = &propState{}
			st[name] = p
		}
		return p
	}
	set := func(p *propState, v any, ms int64) { p.value, p.present, p.setAt = v, true, ms }
	out := folded{version: uint64(len(uniq))}
	for _, o := range uniq {
		out.policyVersion, out.keyEpoch = o.policyVersion, o.keyEpoch
		v, _ := decodeJSON(o.operand)
		obj, _ := v.(map[string]any)
		switch o.op {
		case opSet:
			for k, x := range obj {
				set(prop(k), x, o.ms)
			}
		case opSetOnce:
			for k, x := range obj {
				if p := prop(k); !p.present {
					set(p, x, o.ms)
				}
			}
		case opAdd:
			for k, x := range obj {
				n, ok := toNumber(x)
				if !ok {
					continue
				}
				p := prop(k)
				if !p.present {
					set(p, n.json(), o.ms)
				} else if cur, ok := toNumber(p.value); ok {
					set(p, cur.add(n).json(), o.ms)
				}
			}
		case opAppend:
			for k, x := range obj {
				p := prop(k)
				if !p.present {
					set(p, []any{x}, o.ms)
				} else if l, ok := p.value.([]any); ok {
					set(p, append(slices.Clip(l), x), o.ms)
				}
			}
		case opUnion:
			for k, x := range obj {
				vals, ok := x.([]any)
				if !ok {
					vals = []any{x}
				}
				p := prop(k)
				var l []any
				if p.present {
					if l, ok = p.value.([]any); !ok {
						continue
					}
				}
				l = slices.Clip(l)
				for _, e := range vals {
					if !containsJSON(l, e) {
						l = append(l, e)
					}
				}
				set(p, l, o.ms)
			}
		case opRemove:
			for k, x := range obj {
				p := prop(k)
				if l, ok := p.value.([]any); ok && p.present {
					kept := make([]any, 0, len(l))
					for _, e := range l {
						if !equalJSON(e, x) {
							kept = append(kept, e)
						}
					}
					set(p, kept, o.ms)
				}
			}
		case opUnset:
			names, _ := v.([]any)
			for _, n := range names {
				if s, ok := n.(string); ok {
					p := prop(s)
					p.value, p.present, p.setAt = nil, false, o.ms
				}
			}
		case opDelete:
			// Everything before the deletion is gone; later operations
			// build a new profile.
			for _, p := range st {
				p.value, p.present, p.setAt = nil, false, o.ms
			}
		}
		if lastSeen && o.op != opDelete {
			mods, _ := decodeJSON(o.modifiers)
			m, _ := mods.(map[string]any)
			if !ignoreTime(m) {
				set(prop(propLastSeen), time.UnixMilli(o.ms).UTC().Format("2006-01-02T15:04:05"), o.ms)
			}
		}
	}
	out.props = st
	return out
}

func decodeJSON(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// equalJSON compares two decoded JSON values by their canonical encoding
// (encoding/json sorts object keys).
func equalJSON(a, b any) bool {
	x, err1 := marshalJSON(a)
	y, err2 := marshalJSON(b)
	return err1 == nil && err2 == nil && x == y
}

func containsJSON(l []any, v any) bool {
	return slices.ContainsFunc(l, func(e any) bool { return equalJSON(e, v) })
}

// renderValue gives a property's text form (strings unquoted, everything
// else as JSON), its JSON and its type name.
func renderValue(v any) (text, js, typ string) {
	js, _ = marshalJSON(v)
	switch x := v.(type) {
	case string:
		return x, js, "string"
	case json.Number:
		return x.String(), js, "number"
	case bool:
		return js, js, "boolean"
	case []any:
		return js, js, "list"
	case map[string]any:
		return js, js, "object"
	case nil:
		return "", "null", "null"
	}
	return js, js, "other"
}

// stateRows are rows of a state table, column by column.
type stateRows struct {
	project, distinctID, groupKey, groupID []string
	property, value, valueJSON, valueType  []string
	deleted                                []uint8
	setAt, updatedAt                       []time.Time
	version                                []uint64
	policyVersion, keyEpoch                []uint32
}

func (r *stateRows) len() int { return len(r.property) }

func (r *stateRows) add(e entity, name string, p *propState, f *folded, now time.Time) {
	r.project = append(r.project, e.project)
	r.distinctID = append(r.distinctID, e.id)
	r.groupKey = append(r.groupKey, e.key)
	r.groupID = append(r.groupID, e.id)
	r.property = append(r.property, name)
	var text, js, typ string
	var deleted uint8 = 1
	if p.present {
		text, js, typ = renderValue(p.value)
		deleted = 0
	}
	r.value = append(r.value, text)
	r.valueJSON = append(r.valueJSON, js)
	r.valueType = append(r.valueType, typ)
	r.deleted = append(r.deleted, deleted)
	r.setAt = append(r.setAt, time.UnixMilli(p.setAt).UTC())
	r.version = append(r.version, f.version)
	r.policyVersion = append(r.policyVersion, f.policyVersion)
	r.keyEpoch = append(r.keyEpoch, f.keyEpoch)
	r.updatedAt = append(r.updatedAt, now)
}

func (r *stateRows) columns(groups bool) ([]string, []any) {
	names := []string{"project", "distinct_id"}
	cols := []any{r.project, r.distinctID}
	if groups {
		names = []string{"project", "group_key", "group_id"}
		cols = []any{r.project, r.groupKey, r.groupID}
	}
	names = append(names, "property", "value", "value_json", "value_type", "deleted", "set_at", "version", "policy_version", "key_epoch", "updated_at")
	cols = append(cols, r.property, r.value, r.valueJSON, r.valueType, r.deleted, r.setAt, r.version, r.policyVersion, r.keyEpoch, r.updatedAt)
	return names, cols
}

// maxLookupBytes bounds the id list of one read-back query, well inside the
// server's max_query_size (256 KiB by default).
const maxLookupBytes = 64 << 10

// computeState reads back the full log of every entity r touched and
// returns the state rows of the properties r's operations named.
func (s *Sink) computeState(ctx context.Context, t target, r *opRows) (*stateRows, error) {
	// Entities grouped by project and group key: one query per chunk.
	type scope struct{ project, key string }
	byScope := map[scope][]entity{}
	for e := range r.touched {
		sc := scope{e.project, e.key}
		byScope[sc] = append(byScope[sc], e)
	}
	out := &stateRows{}
	now := time.Now().UTC()
	for sc, ents := range byScope {
		slices.SortFunc(ents, func(a, b entity) int { return strings.Compare(a.id, b.id) })
		for len(ents) > 0 {
			var list bytes.Buffer
			n := 0
			for n < len(ents) && (n == 0 || list.Len() < maxLookupBytes) {
				if n > 0 {
					list.WriteString(", ")
				}
				list.WriteString(quoteString(ents[n].id))
				n++
			}
			chunk := ents[:n]
			ents = ents[n:]
			logs, err := s.readOps(ctx, t, r.groups, sc.project, sc.key, list.String())
			if err != nil {
				return nil, err
			}
			// On a cluster, with what was written through this shard's
			// other replicas and may not be here yet (see recentOps).
			s.addRecent(t, logs, chunk)
			for _, e := range chunk {
				t := r.touched[e]
				f := fold(logs[e.id], !r.groups)
				names := make([]string, 0, len(t.props))
				if t.all {
					for name := range f.props {
						names = append(names, name)
					}
				} else {
					for name := range t.props {
						if f.props[name] != nil {
							names = append(names, name)
						}
					}
				}
				slices.Sort(names)
				for _, name := range names {
					out.add(e, name, f.props[name], &f, now)
				}
			}
		}
	}
	return out, nil
}

// entityAt is the profile or group of r's row i.
func (r *opRows) entityAt(i int) entity {
	if r.groups {
		return entity{project: r.project[i], key: r.groupKey[i], id: r.group[i]}
	}
	return entity{project: r.project[i], id: r.distinctID[i]}
}

// storedAt is r's row i as readOps reads it back.
func (r *opRows) storedAt(i int) storedOp {
	return storedOp{
		ms:        r.time[i].Truncate(time.Second).UnixMilli() + int64(r.timeMs[i]),
		partition: r.partition[i], offset: r.offset[i], insertID: r.insertID[i],
		op: r.op[i], operand: r.operand[i], modifiers: r.modifiers[i],
		policyVersion: r.policyVersion[i], keyEpoch: r.keyEpoch[i],
	}
}

// readOps reads the operations of the entities in idList (quoted, comma
// separated) of one project (and group key), by entity id.
func (s *Sink) readOps(ctx context.Context, t target, groups bool, project, key, idList string) (map[string][]storedOp, error) {
	db := s.cfg.Database
	var q string
	if groups {
		q = fmt.Sprintf(`SELECT group_id, toUInt64(time) * 1000 + time_ms, kafka_partition, kafka_offset, insert_id, op, operand, modifiers, policy_version, key_epoch
FROM %s.%s WHERE project = %s AND group_key = %s AND group_id IN (%s)`, db, tableGroupOps+t.suffix, quoteString(project), quoteString(key), idList)
	} else {
		q = fmt.Sprintf(`SELECT distinct_id, toUInt64(time) * 1000 + time_ms, kafka_partition, kafka_offset, insert_id, op, operand, modifiers, policy_version, key_epoch
FROM %s.%s WHERE project = %s AND distinct_id IN (%s)`, db, tableProfileOps+t.suffix, quoteString(project), idList)
	}
	rows, err := t.conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]storedOp{}
	for rows.Next() {
		var (
			id string
			ms uint64
			o  storedOp
		)
		if err := rows.Scan(&id, &ms, &o.partition, &o.offset, &o.insertID, &o.op, &o.operand, &o.modifiers, &o.policyVersion, &o.keyEpoch); err != nil {
			return nil, err
		}
		o.ms = int64(ms)
		out[id] = append(out[id], o)
	}
	return out, rows.Err()
}
