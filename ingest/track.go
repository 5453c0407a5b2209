package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/event/rules"
)

// The hot path: a /track or /import event is checked and copied through as
// bytes, with only token, distinct_id, time and $insert_id rewritten,
// rather than decoded into maps and encoded again. Property values keep
// their exact JSON text, numbers included.

// span is a piece of the event's bytes.
type span struct{ start, end int }

func (s span) of(b []byte) []byte { return b[s.start:s.end] }
func (s span) ok() bool           { return s.end > s.start }

// special marks the properties Veil rewrites.
type special uint8

const (
	propOther special = iota
	propToken
	propDistinctID
	propTime
	propInsertID
)

func specialOf(key []byte) special {
	switch string(key) {
	case event.PropToken:
		return propToken
	case event.PropDistinctID:
		return propDistinctID
	case event.PropTime:
		return propTime
	case event.PropInsertID:
		return propInsertID
	}
	return propOther
}

// member is one property: its quoted key and its value.
type member struct {
	key, value span
	kind       special
}

// scannedEvent is what one pass over an event finds.
type scannedEvent struct {
	name    span // the quoted event name; zero when missing or null
	members []member
	// last holds the last occurrence of each special property, as a JSON
	// object decoder would keep it.
	last [5]span
	// count is the number of properties other than token.
	count int
	// shape is the first property whose name or value broke a rule, with
	// its field named.
	shape *rules.Violation
}

// scanEvent reads a Mixpanel event object. ok is false when it is not
// valid JSON or not an object whose event is a string (or null) and whose
// properties are an object (or null).
func (c *Collector) scanEvent(b []byte, ev *scannedEvent) (ok bool) {
	lim := c.cfg.Limits.Shape()
	i := rules.SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = rules.SkipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return rules.SkipWS(b, i+1) == len(b)
	}
	for {
		kStart := i
		kEnd, err := rules.ScanString(b, i)
		if err != nil {
			return false
		}
		i = rules.SkipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = rules.SkipWS(b, i+1)
		vStart := i
		key := b[kStart+1 : kEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			key = []byte(unquoteKey(b[kStart:kEnd]))
		}
		switch string(key) {
		case "event":
			switch {
			case i < len(b) && b[i] == '"':
				if i, err = rules.ScanString(b, i); err != nil {
					return false
				}
				ev.name = span{vStart, i}
			case i < len(b) && b[i] == 'n':
				if i, err = rules.ScanLiteral(b, i, "null"); err != nil {
					return false
				}
				ev.name = span{}
			default:
				return false
			}
		case "properties":
			ev.members, ev.last, ev.count, ev.shape = ev.members[:0], [5]span{}, 0, nil
			switch {
			case i < len(b) && b[i] == '{':
				if i, ok = scanProperties(b, i, &lim, ev); !ok {
					return false
				}
			case i < len(b) && b[i] == 'n':
				if i, err = rules.ScanLiteral(b, i, "null"); err != nil {
					return false
				}
			default:
				return false
			}
		default:
			if i, err = rules.ScanValue(b, i, 1, &rules.AnyShape); err != nil {
				return false
			}
		}
		i = rules.SkipWS(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			return rules.SkipWS(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return false
		}
		i = rules.SkipWS(b, i+1)
	}
}

// scanProperties reads the properties object starting at b[i] == '{'.
func scanProperties(b []byte, i int, lim *rules.Shape, ev *scannedEvent) (int, bool) {
	i = rules.SkipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		kStart := i
		kEnd, err := rules.ScanString(b, i)
		if err != nil {
			return 0, false
		}
		i = rules.SkipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i = rules.SkipWS(b, i+1)
		vStart := i
		if ev.shape == nil && !rules.QuotedNameValid(b[kStart:kEnd]) {
			ev.shape = &rules.Violation{Field: "properties", Reason: reasonInvalidName, Msg: "a property name holds a control character"}
		}
		vEnd, serr := rules.ScanValue(b, i, 1, lim)
		if serr != nil {
			if serr.Rule == nil {
				return 0, false
			}
			if ev.shape == nil {
				v := *serr.Rule
				v.Field = "properties." + rules.SafeKey(unquoteKey(b[kStart:kEnd]))
				ev.shape = &v
			}
			// Over a limit; it must still be JSON.
			if vEnd, serr = rules.ScanValue(b, i, 1, &rules.AnyShape); serr != nil {
				return 0, false
			}
		}
		m := member{key: span{kStart, kEnd}, value: span{vStart, vEnd}}
		if k := b[kStart+1 : kEnd-1]; bytes.IndexByte(k, '\\') < 0 {
			m.kind = specialOf(k)
		} else {
			m.kind = specialOf([]byte(unquoteKey(b[kStart:kEnd])))
		}
		if m.kind != propOther {
			ev.last[m.kind] = m.value
		}
		if m.kind != propToken {
			ev.count++
		}
		ev.members = append(ev.members, m)
		i = rules.SkipWS(b, vEnd)
		if i >= len(b) {
			return 0, false
		}
		if b[i] == '}' {
			return i + 1, true
		}
		if b[i] != ',' {
			return 0, false
		}
		i = rules.SkipWS(b, i+1)
	}
}

// unquoteKey returns a quoted JSON string's text; keys rarely hold escapes.
func unquoteKey(q []byte) string {
	if bytes.IndexByte(q, '\\') < 0 {
		return string(q[1 : len(q)-1])
	}
	var s string
	_ = json.Unmarshal(q, &s) // q is a checked JSON string
	return s
}

// eventScratch is the memory normalizeEvent works in, reused between the
// events of a request and between requests.
type eventScratch struct {
	scan scannedEvent
	// objects holds the normalised events back to back; each event's
	// object is a slice of it.
	objects []byte
	// keys holds their Kafka message keys, likewise.
	keys []byte
	// ids gives the request's records without a $insert_id theirs.
	ids insertIDs
}

// stringText returns the text of the JSON string v (quoted, checked):
// its bytes as they are when it holds no escape, unescaped otherwise.
// isString is false when v is not a string.
func stringText(v []byte) (text []byte, isString bool) {
	if len(v) == 0 || v[0] != '"' {
		return nil, false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1], true
	}
	return []byte(unquoteKey(v)), true
}

// normalizeEvent validates one /track or /import event and returns its
// normalised form: token resolved to a project and removed, distinct_id a
// string, time in Unix milliseconds, and a $insert_id always present.
//
// For /track the project comes from properties.token and time defaults to
// now; for /import the project is the authenticated one (importProject) and
// time and distinct_id are required.
//
// The special properties are read as they are in the event's bytes, as
// encoding/json with UseNumber would decode them, but without making
// strings and interface values of them; only an escape in one calls for a
// copy.
//
// scratch, when not nil, is reused between events; the object and key
// returned live in it.
func (c *Collector) normalizeEvent(raw []byte, idx int, now time.Time, importProject string, scratch *eventScratch) (normalized, *EventError) {
	isImport := importProject != ""
	var insertID []byte // the event's own valid $insert_id, for errors
	fail := func(field, reason, format string, args ...any) (normalized, *EventError) {
		return normalized{}, &EventError{Index: idx, InsertID: string(insertID), Field: field, Reason: reason, Msg: fmt.Sprintf(format, args...)}
	}
	lim := c.cfg.Limits
	if v := lim.EventSize(len(raw), false); v != nil {
		return normalized{}, violationError(idx, "", v)
	}
	if scratch == nil {
		scratch = &eventScratch{}
	}
	ev := &scratch.scan
	*ev = scannedEvent{members: ev.members[:0]}
	if !c.scanEvent(raw, ev) {
		return fail("", reasonMalformed, "not a JSON object with an event name and properties")
	}
	// value returns the raw JSON of a special property; nil when absent.
	value := func(k special) []byte {
		if s := ev.last[k]; s.ok() {
			return s.of(raw)
		}
		return nil
	}
	idValue := value(propInsertID)
	hasInsertID := idValue != nil
	idText, idIsString := stringText(idValue)
	if idIsString && rules.ValidInsertID(idText) {
		insertID = idText
	}
	if !ev.name.ok() {
		return fail("event", reasonMissingEvent, "event name is missing")
	}
	name, _ := stringText(ev.name.of(raw))
	if v := rules.EventName(name); v != nil {
		return normalized{}, violationError(idx, string(insertID), v)
	}

	project := importProject
	if !isImport {
		tok, _ := stringText(value(propToken))
		p, ok := c.projectForBytes(tok)
		if !ok {
			return fail("properties.token", reasonUnknownToken, "unknown project token")
		}
		project = p
	}
	if v := lim.PropertyCount(ev.count); v != nil {
		return normalized{}, violationError(idx, string(insertID), v)
	}

	// distinct_id as idString reads it: a string, a number's text, or
	// null for none.
	rawID := value(propDistinctID)
	hasDistinctID := rawID != nil
	if isImport && !hasDistinctID {
		return fail("properties.distinct_id", reasonMissingID, "distinct_id is required by /import (use \"\" for events of no user)")
	}
	var distinctID []byte
	if hasDistinctID {
		switch first := rawID[0]; {
		case first == '"':
			distinctID, _ = stringText(rawID)
		case first == 'n':
		case first == '-' || first >= '0' && first <= '9':
			distinctID = rawID
		default:
			return fail("properties.distinct_id", reasonInvalidID, "distinct_id must be a string or a number")
		}
	}
	if v := rules.DistinctID("properties.distinct_id", distinctID); v != nil {
		return normalized{}, violationError(idx, string(insertID), v)
	}

	ms, present, err := rawEventMillis(value(propTime))
	if err != nil {
		return fail("properties.time", reasonMalformed, "%s", err.Error())
	}
	endpoint := rules.EndpointTrack
	if isImport {
		endpoint = rules.EndpointImport
	}
	switch {
	case !present && isImport:
		return fail("properties.time", reasonMalformed, "time is required by /import")
	case !present:
		ms = now.UnixMilli()
	default:
		if v := lim.Time(endpoint, "properties.time", ms, now.UnixMilli()); v != nil {
			return normalized{}, violationError(idx, string(insertID), v)
		}
	}

	if ev.shape != nil {
		return normalized{}, violationError(idx, string(insertID), ev.shape)
	}
	if hasInsertID {
		if !idIsString {
			return fail("properties.$insert_id", reasonInvalidInsertID, "$insert_id must be a string")
		}
		if v := rules.InsertID(idText); v != nil {
			return normalized{}, violationError(idx, string(insertID), v)
		}
	}

	out := slices.Grow(scratch.objects, len(raw)+96)
	start := len(out)
	out = append(out, `{"event":`...)
	out = append(out, ev.name.of(raw)...)
	out = append(out, `,"properties":{`...)
	const idKey = `"$insert_id":"`
	placeholder := -1
	if !hasInsertID {
		placeholder = len(out)
		out = append(out, idKey+`00000000000000000000000000000000"`...)
	}
	comma := func() {
		if out[len(out)-1] != '{' {
			out = append(out, ',')
		}
	}
	for _, m := range ev.members {
		if m.kind != propOther {
			continue
		}
		comma()
		out = append(out, m.key.of(raw)...)
		out = append(out, ':')
		out = append(out, m.value.of(raw)...)
	}
	if hasDistinctID {
		comma()
		out = append(out, `"distinct_id":`...)
		switch rawID[0] {
		case '"', 'n':
			out = append(out, rawID...) // a JSON string, or null, as sent
		default:
			// A number, as text: strconv.Quote of its characters, none
			// of which needs escaping.
			out = append(out, '"')
			out = append(out, rawID...)
			out = append(out, '"')
		}
	}
	comma()
	out = append(out, `"time":`...)
	out = strconv.AppendInt(out, ms, 10)
	if hasInsertID {
		out = append(out, `,"$insert_id":`...)
		out = append(out, idValue...)
	}
	out = append(out, "}}"...)

	if placeholder >= 0 {
		// An event without a $insert_id is one of its own, as Mixpanel
		// counts it: two identical ones are two rows. Its id is fixed
		// here, once, and travels in the envelope, so a replay of the
		// message folds into the row it wrote.
		scratch.ids.put(out[placeholder+len(idKey):placeholder+len(idKey)+32], idx, 0)
	}
	scratch.objects = out
	keyStart := len(scratch.keys)
	scratch.keys = event.AppendKey(scratch.keys, project, distinctID)
	return normalized{
		project: project,
		key:     scratch.keys[keyStart:len(scratch.keys):len(scratch.keys)],
		object:  out[start:len(out):len(out)],
	}, nil
}
