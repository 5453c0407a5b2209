package sink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/view"
)

// The tables a batch writes, in the order a flush writes them: the logs
// first, then the state derived from them.
const (
	tableEvents       = "events"
	tableProfileOps   = "profile_ops"
	tableGroupOps     = "group_ops"
	tableProfileState = "profile_state"
	tableGroupState   = "group_state"
)

var tables = []string{tableEvents, tableProfileOps, tableGroupOps, tableProfileState, tableGroupState}

var eventColumns = []string{
	"project", "time", "time_ms", "event", "distinct_id", "insert_id", "received_at",
	"country_code", "region", "city", "browser", "browser_version", "os", "device", "lib", "lib_version",
	"properties", "policy_version", "key_epoch", "consent", "transforms",
}

// eventRows are track events, column by column.
type eventRows struct {
	project, event, distinctID, insertID             []string
	time, receivedAt                                 []time.Time
	timeMs                                           []uint16
	country, region, city                            []string
	browser, browserVersion, os, device, lib, libVer []string
	properties                                       []string
	policyVersion, keyEpoch                          []uint32
	consent, transforms                              [][]string
}

func (r *eventRows) reset() {
	*r = eventRows{
		project: r.project[:0], event: r.event[:0], distinctID: r.distinctID[:0], insertID: r.insertID[:0],
		time: r.time[:0], receivedAt: r.receivedAt[:0], timeMs: r.timeMs[:0],
		country: r.country[:0], region: r.region[:0], city: r.city[:0],
		browser: r.browser[:0], browserVersion: r.browserVersion[:0], os: r.os[:0], device: r.device[:0],
		lib: r.lib[:0], libVer: r.libVer[:0], properties: r.properties[:0],
		policyVersion: r.policyVersion[:0], keyEpoch: r.keyEpoch[:0], consent: r.consent[:0], transforms: r.transforms[:0],
	}
}

func (r *eventRows) columns() []any {
	return []any{
		r.project, r.time, r.timeMs, r.event, r.distinctID, r.insertID, r.receivedAt,
		r.country, r.region, r.city, r.browser, r.browserVersion, r.os, r.device, r.lib, r.libVer,
		r.properties, r.policyVersion, r.keyEpoch, r.consent, r.transforms,
	}
}

// opRows are profile or group operations, column by column. People use
// distinctID; groups use groupKey and groupID.
type opRows struct {
	groups                               bool
	project, distinctID, groupKey, group []string
	time, receivedAt                     []time.Time
	timeMs                               []uint16
	op, operand, modifiers, insertID     []string
	partition                            []uint32
	offset                               []uint64
	policyVersion, keyEpoch              []uint32
	consent, transforms                  [][]string
	// touched lists, per profile or group, the properties the batch's
	// operations name; a flush recomputes the state of exactly those.
	touched map[entity]*touch
}

// entity identifies one profile (key empty) or one group.
type entity struct{ project, key, id string }

// touch is what a batch's operations on one entity name.
type touch struct {
	props map[string]bool
	all   bool // a $delete: every property the entity ever had
}

func (r *opRows) len() int { return len(r.project) }

func (r *opRows) reset() {
	*r = opRows{
		groups:  r.groups,
		project: r.project[:0], distinctID: r.distinctID[:0], groupKey: r.groupKey[:0], group: r.group[:0],
		time: r.time[:0], receivedAt: r.receivedAt[:0], timeMs: r.timeMs[:0],
		op: r.op[:0], operand: r.operand[:0], modifiers: r.modifiers[:0], insertID: r.insertID[:0],
		partition: r.partition[:0], offset: r.offset[:0],
		policyVersion: r.policyVersion[:0], keyEpoch: r.keyEpoch[:0], consent: r.consent[:0], transforms: r.transforms[:0],
	}
}

func (r *opRows) table() string {
	if r.groups {
		return tableGroupOps
	}
	return tableProfileOps
}

func (r *opRows) columnNames() []string {
	ids := []string{"distinct_id"}
	if r.groups {
		ids = []string{"group_key", "group_id"}
	}
	return append(append([]string{"project"}, ids...),
		"time", "time_ms", "op", "operand", "modifiers", "insert_id", "received_at",
		"kafka_partition", "kafka_offset", "policy_version", "key_epoch", "consent", "transforms")
}

func (r *opRows) columns() []any {
	ids := []any{r.distinctID}
	if r.groups {
		ids = []any{r.groupKey, r.group}
	}
	return append(append([]any{r.project}, ids...),
		r.time, r.timeMs, r.op, r.operand, r.modifiers, r.insertID, r.receivedAt,
		r.partition, r.offset, r.policyVersion, r.keyEpoch, r.consent, r.transforms)
}

// offsetRange is the first and last offset of one partition a batch covers.
type offsetRange struct{ first, last int64 }

// Batch accumulates rows column by column, so that a flush hands each column
// to the driver as one slice and a retried flush can resend the same rows.
// One batch holds every kind of event; a flush writes each table that has
// rows.
type Batch struct {
	events eventRows
	people opRows
	groups opRows
	bytes  int
	rows   int

	started time.Time
	// topic, ranges and cur record which Kafka messages the batch covers
	// (see Cover).
	topic  string
	ranges map[int]offsetRange
	cur    struct {
		partition int
		offset    int64
	}
	// done marks the steps of a flush already written, so that a retry
	// resumes where the failure happened.
	done map[string]bool
	// parts are the batch's rows split by shard, made at the first flush
	// on a cluster and kept for its retries (see shardParts).
	parts []*Batch

	// keys is appendEvent's scratch space for sorting the keys of the
	// objects a stage set. text and chunks are memory shared by the
	// batch's property strings. The chunks are kept across Reset and filled again
	// from the first, as the columns keep their capacity: a flushed
	// batch's strings are not read once its insert has returned (the
	// ClickHouse client copies every value into its own column buffers),
	// so the next batch may overwrite them, and the worker's pass
	// allocates nothing for them once its batches have grown.
	keys   []string
	text   []byte   // the chunk being filled
	chunks [][]byte // every chunk of textChunk bytes, filled in order
	used   int      // chunks[:used] hold this batch's strings
}

// textChunk is the size of the chunks batch strings are copied into.
const textChunk = 64 << 10

// keep copies b into the batch's text and returns it as a string.
func (b *Batch) keep(s []byte) string {
	if len(s) == 0 {
		return ""
	}
	if cap(b.text)-len(b.text) < len(s) {
		b.text = b.nextChunk(len(s))
	}
	n := len(b.text)
	b.text = append(b.text, s...)
	return view.String(b.text[n:])
}

// keepString is keep for a string.
func (b *Batch) keepString(s string) string {
	return b.keep(view.Bytes(s))
}

// nextChunk returns an empty chunk that holds at least n bytes: the next
// of the batch's chunks, or a new one. A string longer than a chunk gets a
// chunk of its own, which is not kept.
func (b *Batch) nextChunk(n int) []byte {
	if n > textChunk {
		return make([]byte, 0, n)
	}
	if b.used == len(b.chunks) {
		b.chunks = append(b.chunks, make([]byte, 0, textChunk))
	}
	b.used++
	return b.chunks[b.used-1][:0]
}

// NewBatch returns an empty batch.
func NewBatch() *Batch { return &Batch{groups: opRows{groups: true}} }

// Len is the number of rows in b.
func (b *Batch) Len() int { return b.rows }

// Bytes is an estimate of b's size on the wire.
func (b *Batch) Bytes() int { return b.bytes }

// Started is when the first row was appended.
func (b *Batch) Started() time.Time { return b.started }

// Reset empties b, keeping its capacity. The strings of b's rows are
// overwritten by the rows appended next: Reset a batch only once its
// write has returned.
func (b *Batch) Reset() {
	b.events.reset()
	b.people.reset()
	b.groups.reset()
	b.bytes, b.rows = 0, 0
	b.started = time.Time{}
	b.topic = ""
	clear(b.ranges)
	b.cur.partition, b.cur.offset = 0, 0
	clear(b.done)
	b.parts = nil
	b.text, b.used = nil, 0
}

// Cover records that b covers the Kafka message at partition and offset of
// topic, whether the message yields a row or not (dropped, dead-lettered).
// The covered offset ranges make the deduplication token of each insert, so
// a retried or replayed flush of the same messages is recognised. Rows
// appended after Cover are attributed to that message: its offset orders
// profile operations that carry the same time.
func (b *Batch) Cover(topic string, partition int, offset int64) {
	if b.ranges == nil {
		b.ranges = map[int]offsetRange{}
	}
	b.topic = topic
	r, ok := b.ranges[partition]
	if !ok {
		r = offsetRange{offset, offset}
	}
	r.first, r.last = min(r.first, offset), max(r.last, offset)
	b.ranges[partition] = r
	b.cur.partition, b.cur.offset = partition, offset
}

// dedupToken names the messages b covers, e.g. "veil.events.raw:0:100-199,3:7-42",
// or "" when nothing was recorded.
func (b *Batch) dedupToken() string {
	if len(b.ranges) == 0 {
		return ""
	}
	parts := make([]int, 0, len(b.ranges))
	for p := range b.ranges {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	var sb strings.Builder
	sb.WriteString(b.topic)
	for i, p := range parts {
		r := b.ranges[p]
		if i == 0 {
			sb.WriteByte(':')
		} else {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%d:%d-%d", p, r.first, r.last)
	}
	return sb.String()
}

// Append adds a de-identified event as a row of the table its kind goes to:
// track events to events, profile operations to profile_ops, group
// operations to group_ops. An error means the event can never be written
// (the worker dead-letters it); it never quotes the event's content.
func (b *Batch) Append(ev *event.Event) error {
	var err error
	switch ev.Kind {
	case event.KindTrack:
		err = b.appendEvent(ev)
	case event.KindEngage:
		err = b.appendOp(&b.people, ev)
	case event.KindGroups:
		err = b.appendOp(&b.groups, ev)
	default:
		err = fmt.Errorf("sink: unknown event kind %d", ev.Kind)
	}
	if err != nil {
		return err
	}
	if b.rows == 0 {
		b.started = time.Now()
	}
	b.rows++
	return nil
}

func (b *Batch) appendEvent(ev *event.Event) error {
	// The properties are written straight into the batch's text: a run
	// of them nothing changed is copied out of the message in one piece,
	// and what a stage set is written by event.AppendJSON, which writes
	// marshalJSON's exact bytes at a fraction of the cost; marshalJSON
	// stays for what it does not cover.
	var props string
	hint := ev.Properties.SizeHint()
	if cap(b.text)-len(b.text) < hint {
		b.text = b.nextChunk(hint)
	}
	n := len(b.text)
	buf, ok := ev.Properties.AppendJSON(b.text, &b.keys)
	switch {
	case !ok:
		m, _ := ev.Properties.Map()
		var err error
		if props, err = marshalJSON(m); err != nil {
			return errors.New("sink: properties are not JSON-encodable")
		}
	case cap(buf) == cap(b.text): // written in place
		b.text = buf
		props = view.String(buf[n:])
	default: // longer than the hint: the append moved it
		props = b.keep(buf[n:])
	}
	r := &b.events
	r.project = append(r.project, ev.Project)
	r.time = append(r.time, ev.Time)
	r.timeMs = append(r.timeMs, uint16(ev.Time.Nanosecond()/int(time.Millisecond)))
	r.event = append(r.event, ev.Name)
	r.distinctID = append(r.distinctID, ev.DistinctID)
	r.insertID = append(r.insertID, b.keepString(ev.InsertID)) // the Decoder's points into the message
	r.receivedAt = append(r.receivedAt, ev.ReceivedAt)
	r.country = append(r.country, ev.Geo.CountryCode)
	r.region = append(r.region, ev.Geo.Region)
	r.city = append(r.city, ev.Geo.City)
	d := &ev.Device
	r.browser = append(r.browser, d.Browser)
	r.browserVersion = append(r.browserVersion, d.BrowserVersion)
	r.os = append(r.os, d.OS)
	r.device = append(r.device, d.Device)
	r.lib = append(r.lib, d.Lib)
	r.libVer = append(r.libVer, d.LibVersion)
	r.properties = append(r.properties, props)
	r.policyVersion = append(r.policyVersion, ev.Provenance.PolicyVersion)
	r.keyEpoch = append(r.keyEpoch, ev.Provenance.KeyEpoch)
	r.consent = append(r.consent, nonNil(ev.Provenance.Consent))
	r.transforms = append(r.transforms, nonNil(ev.Provenance.Transforms))
	b.bytes += 64 + len(props) + len(ev.Project) + len(ev.Name) + len(ev.DistinctID) + len(ev.InsertID) +
		len(d.Browser) + len(d.OS) + len(d.Device) + len(d.Lib) + len(ev.Geo.City) + len(ev.Geo.Region)
	return nil
}

func (b *Batch) appendOp(r *opRows, ev *event.Event) error {
	ent := entity{project: ev.Project, id: ev.DistinctID}
	if r.groups {
		ent.key, ent.id = ev.GroupKey, ev.GroupID
		if ent.key == "" || ent.id == "" {
			return errors.New("sink: group operation without group_key and group_id")
		}
	} else if ent.id == "" {
		return errors.New("sink: profile operation without distinct_id")
	}
	names, all, err := operandProperties(ev.Name, ev.Value)
	if err != nil {
		return err
	}
	operand, err := marshalJSON(ev.Value)
	if err != nil {
		return errors.New("sink: " + ev.Name + " operand is not JSON-encodable")
	}
	mods, _ := ev.Properties.Map()
	modifiers, err := marshalJSON(mods)
	if err != nil {
		return errors.New("sink: profile update modifiers are not JSON-encodable")
	}
	if r.touched == nil {
		r.touched = map[entity]*touch{}
	}
	t := r.touched[ent]
	if t == nil {
		t = &touch{props: map[string]bool{}}
		r.touched[ent] = t
	}
	t.all = t.all || all
	for _, n := range names {
		t.props[n] = true
	}
	if !r.groups && ev.Name != opDelete && !ignoreTime(mods) {
		t.props[propLastSeen] = true
	}

	r.project = append(r.project, ev.Project)
	r.distinctID = append(r.distinctID, ev.DistinctID)
	r.groupKey = append(r.groupKey, ev.GroupKey)
	r.group = append(r.group, ev.GroupID)
	r.time = append(r.time, ev.Time)
	r.timeMs = append(r.timeMs, uint16(ev.Time.Nanosecond()/int(time.Millisecond)))
	r.op = append(r.op, ev.Name)
	r.operand = append(r.operand, operand)
	r.modifiers = append(r.modifiers, modifiers)
	r.insertID = append(r.insertID, ev.InsertID) // updates are decoded with the map: their own copy
	r.receivedAt = append(r.receivedAt, ev.ReceivedAt)
	r.partition = append(r.partition, uint32(b.cur.partition))
	r.offset = append(r.offset, uint64(max(0, b.cur.offset)))
	r.policyVersion = append(r.policyVersion, ev.Provenance.PolicyVersion)
	r.keyEpoch = append(r.keyEpoch, ev.Provenance.KeyEpoch)
	r.consent = append(r.consent, nonNil(ev.Provenance.Consent))
	r.transforms = append(r.transforms, nonNil(ev.Provenance.Transforms))
	b.bytes += 96 + len(operand) + len(modifiers) + len(ev.Project) + len(ev.DistinctID) + len(ev.GroupKey) + len(ev.GroupID) + len(ev.InsertID)
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// marshalJSON encodes v without HTML escaping, so that analysts see URLs
// with & and < as they were sent.
func marshalJSON(v any) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// Profile operations, in Mixpanel's spelling.
const (
	opSet     = "$set"
	opSetOnce = "$set_once"
	opAdd     = "$add"
	opAppend  = "$append"
	opUnion   = "$union"
	opRemove  = "$remove"
	opUnset   = "$unset"
	opDelete  = "$delete"

	// propLastSeen is the property Mixpanel updates on every profile update
	// that does not carry $ignore_time.
	propLastSeen = "$last_seen"
	modIgnore    = "$ignore_time"
)

// operandProperties checks that an operation's operand has the shape
// Mixpanel requires and returns the property names it touches; all is true
// for $delete, which touches every property.
func operandProperties(op string, v any) (names []string, all bool, err error) {
	switch op {
	case opDelete:
		return nil, true, nil
	case opUnset:
		list, ok := v.([]any)
		if !ok {
			if ss, ok2 := v.([]string); ok2 {
				return ss, false, nil
			}
			return nil, false, errors.New("sink: $unset operand is not a list of property names")
		}
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil, false, errors.New("sink: $unset operand is not a list of property names")
			}
			names = append(names, s)
		}
		return names, false, nil
	case opSet, opSetOnce, opAdd, opAppend, opUnion, opRemove:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false, errors.New("sink: " + op + " operand is not an object")
		}
		for k, x := range m {
			if op == opAdd {
				if _, ok := toNumber(x); !ok {
					return nil, false, errors.New("sink: $add operand has a value that is not a number")
				}
			}
			names = append(names, k)
		}
		return names, false, nil
	}
	return nil, false, errors.New("sink: unknown profile operation")
}

// number is a JSON number kept exact while it is an integer.
type number struct {
	i     int64
	f     float64
	isInt bool
}

func toNumber(v any) (number, bool) {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return number{i: i, isInt: true}, true
		}
		f, err := x.Float64()
		return number{f: f}, err == nil
	case float64:
		if x < 1<<53 && x > -(1<<53) && x == math.Trunc(x) {
			return number{i: int64(x), isInt: true}, true
		}
		return number{f: x}, true
	case int:
		return number{i: int64(x), isInt: true}, true
	case int64:
		return number{i: x, isInt: true}, true
	}
	return number{}, false
}

func (n number) float() float64 {
	if n.isInt {
		return float64(n.i)
	}
	return n.f
}

func (n number) add(m number) number {
	if n.isInt && m.isInt {
		s := n.i + m.i
		// Overflow flips the sign only when both operands share one.
		if (n.i >= 0) == (m.i >= 0) && (s >= 0) != (n.i >= 0) {
			return number{f: n.float() + m.float()}
		}
		return number{i: s, isInt: true}
	}
	return number{f: n.float() + m.float()}
}

func (n number) json() json.Number {
	if n.isInt {
		return json.Number(strconv.FormatInt(n.i, 10))
	}
	return json.Number(strconv.FormatFloat(n.f, 'g', -1, 64))
}

func ignoreTime(mods map[string]any) bool {
	switch v := mods[modIgnore].(type) {
	case bool:
		return v
	case string:
		return v == "true" || v == "1"
	case json.Number:
		return v.String() != "0"
	}
	return false
}
