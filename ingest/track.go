package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/veilhq/veil/event"
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
	// shapeKey and shape are the first property whose value broke a limit.
	shapeKey span
	shape    *shapeError
}

// scanEvent reads a Mixpanel event object. ok is false when it is not
// valid JSON or not an object whose event is a string (or null) and whose
// properties are an object (or null).
func (c *Collector) scanEvent(b []byte, ev *scannedEvent) (ok bool) {
	lim := shapeLimits{maxDepth: c.cfg.Limits.MaxDepth, maxKeys: c.cfg.Limits.MaxProperties, maxItems: c.cfg.Limits.MaxArrayLen}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipWS(b, i+1) == len(b)
	}
	for {
		kStart := i
		kEnd, err := scanString(b, i)
		if err != nil {
			return false
		}
		i = skipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		vStart := i
		key := b[kStart+1 : kEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			key = []byte(unquoteKey(b[kStart:kEnd]))
		}
		switch string(key) {
		case "event":
			switch {
			case i < len(b) && b[i] == '"':
				if i, err = scanString(b, i); err != nil {
					return false
				}
				ev.name = span{vStart, i}
			case i < len(b) && b[i] == 'n':
				if i, err = scanLiteral(b, i, "null"); err != nil {
					return false
				}
				ev.name = span{}
			default:
				return false
			}
		case "properties":
			ev.members, ev.last, ev.count, ev.shapeKey, ev.shape = ev.members[:0], [5]span{}, 0, span{}, nil
			switch {
			case i < len(b) && b[i] == '{':
				if i, ok = scanProperties(b, i, &lim, ev); !ok {
					return false
				}
			case i < len(b) && b[i] == 'n':
				if i, err = scanLiteral(b, i, "null"); err != nil {
					return false
				}
			default:
				return false
			}
		default:
			if i, err = scanValue(b, i, 1, &anyShape); err != nil {
				return false
			}
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			return skipWS(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return false
		}
		i = skipWS(b, i+1)
	}
}

// scanProperties reads the properties object starting at b[i] == '{'.
func scanProperties(b []byte, i int, lim *shapeLimits, ev *scannedEvent) (int, bool) {
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		kStart := i
		kEnd, err := scanString(b, i)
		if err != nil {
			return 0, false
		}
		i = skipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipWS(b, i+1)
		vStart := i
		vEnd, serr := scanValue(b, i, 1, lim)
		if serr != nil {
			if serr.shape == nil {
				return 0, false
			}
			if ev.shape == nil {
				ev.shape, ev.shapeKey = serr.shape, span{kStart, kEnd}
			}
			// Over a limit; it must still be JSON.
			if vEnd, serr = scanValue(b, i, 1, &anyShape); serr != nil {
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
		i = skipWS(b, vEnd)
		if i >= len(b) {
			return 0, false
		}
		if b[i] == '}' {
			return i + 1, true
		}
		if b[i] != ',' {
			return 0, false
		}
		i = skipWS(b, i+1)
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

// jsonValue turns a checked scalar's bytes into what encoding/json with
// UseNumber would decode: string, json.Number, bool or nil. Objects and
// lists come back as their raw bytes, which no caller accepts.
func jsonValue(v []byte) any {
	switch v[0] {
	case '"':
		return unquoteKey(v)
	case 't':
		return true
	case 'f':
		return false
	case 'n':
		return nil
	case '{', '[':
		return v
	}
	return json.Number(v)
}

// normalizeEvent validates one /track or /import event and returns its
// normalised form: token resolved to a project and removed, distinct_id a
// string, time in Unix milliseconds, and a $insert_id always present.
//
// For /track the project comes from properties.token and time defaults to
// now; for /import the project is the authenticated one (importProject) and
// time and distinct_id are required.
//
// scratch, when not nil, is reused between the events of a request.
func (c *Collector) normalizeEvent(raw []byte, idx int, now time.Time, importProject string, scratch *scannedEvent) (normalized, *EventError) {
	isImport := importProject != ""
	insertID := ""
	fail := func(field, reason, format string, args ...any) (normalized, *EventError) {
		return normalized{}, &EventError{Index: idx, InsertID: insertID, Field: field, Reason: reason, Msg: fmt.Sprintf(format, args...)}
	}
	lim := c.cfg.Limits
	if len(raw) > lim.MaxEventBytes {
		return fail("", reasonTooLarge, "event exceeds %d bytes", lim.MaxEventBytes)
	}
	if scratch == nil {
		scratch = &scannedEvent{}
	}
	ev := scratch
	*ev = scannedEvent{members: ev.members[:0]}
	if !c.scanEvent(raw, ev) {
		return fail("", reasonMalformed, "not a JSON object with an event name and properties")
	}
	value := func(k special) (any, bool) {
		if s := ev.last[k]; s.ok() {
			return jsonValue(s.of(raw)), true
		}
		return nil, false
	}
	if v, _ := value(propInsertID); v != nil {
		if id, ok := v.(string); ok && validInsertID(id) {
			insertID = id
		}
	}
	if !ev.name.ok() {
		return fail("event", reasonMissingEvent, "event name is missing")
	}
	name := unquoteKey(ev.name.of(raw))
	if name == "" {
		return fail("event", reasonMissingEvent, "event name is missing")
	}
	if len(name) > 255 {
		return fail("event", reasonMalformed, "event name exceeds 255 bytes")
	}

	project := importProject
	if !isImport {
		v, _ := value(propToken)
		tok, _ := v.(string)
		p, ok := c.projectFor(tok)
		if !ok {
			return fail("properties.token", reasonUnknownToken, "unknown project token")
		}
		project = p
	}
	if ev.count >= lim.MaxProperties {
		return fail("properties", reasonTooManyProps, "has %d properties or more", lim.MaxProperties)
	}

	rawID, hasDistinctID := value(propDistinctID)
	if isImport && !hasDistinctID {
		return fail("properties.distinct_id", reasonMissingID, "distinct_id is required by /import (use \"\" for events of no user)")
	}
	distinctID, ok := idString(rawID)
	if !ok {
		return fail("properties.distinct_id", reasonInvalidID, "distinct_id must be a string or a number")
	}
	if len(distinctID) > 255 {
		return fail("properties.distinct_id", reasonInvalidID, "distinct_id exceeds 255 bytes")
	}

	rawTime, _ := value(propTime)
	ms, present, err := eventMillis(rawTime)
	if err != nil {
		return fail("properties.time", reasonMalformed, "%s", err.Error())
	}
	t := time.UnixMilli(ms)
	switch {
	case !present && isImport:
		return fail("properties.time", reasonMalformed, "time is required by /import")
	case !present:
		ms = now.UnixMilli()
	case isImport && t.Before(importEpoch):
		return fail("properties.time", reasonTooOld, "before 1971-01-01")
	case !isImport && now.Sub(t) > lim.TrackMaxAge:
		return fail("properties.time", reasonTooOld, "older than %s; send historical events to /import", days(lim.TrackMaxAge))
	case t.Sub(now) > lim.MaxFuture:
		return fail("properties.time", reasonTooNew, "more than %s in the future", lim.MaxFuture)
	}

	if ev.shape != nil {
		return fail("properties."+safeKey(unquoteKey(ev.shapeKey.of(raw))), ev.shape.reason, "%s", ev.shape.msg)
	}
	idValue, hasInsertID := value(propInsertID)
	if hasInsertID {
		id, isString := idValue.(string)
		if !isString {
			return fail("properties.$insert_id", reasonInvalidInsertID, "$insert_id must be a string")
		}
		if !validInsertID(id) {
			return fail("properties.$insert_id", reasonInvalidInsertID, "$insert_id must be 1 to 36 characters of A-Z, a-z, 0-9 and -")
		}
	}

	out := make([]byte, 0, len(raw)+96)
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
		switch v := ev.last[propDistinctID].of(raw); v[0] {
		case '"', 'n':
			out = append(out, v...) // a JSON string, or null, as sent
		default:
			out = strconv.AppendQuote(out, distinctID) // a number, as text
		}
	}
	comma()
	out = append(out, `"time":`...)
	out = strconv.AppendInt(out, ms, 10)
	if hasInsertID {
		out = append(out, `,"$insert_id":`...)
		out = append(out, ev.last[propInsertID].of(raw)...)
	}
	out = append(out, "}}"...)

	if placeholder >= 0 {
		// A deterministic id, derived from the event's content, makes a
		// retried request fold into the row its first attempt wrote.
		end := placeholder + len(idKey) + 33
		h := sha256.New()
		h.Write([]byte(project))
		h.Write([]byte{0})
		h.Write(out[:placeholder])
		h.Write(out[end:])
		var sum [sha256.Size]byte
		hex.Encode(out[placeholder+len(idKey):end-1], h.Sum(sum[:0])[:16])
	}
	return normalized{project: project, key: event.Key(project, distinctID), object: out}, nil
}
