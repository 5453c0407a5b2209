package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/veilhq/veil/event"
)

// Rejection reasons: a fixed set, used as a metric label and in answers.
const (
	reasonMalformed       = "malformed"
	reasonMissingEvent    = "missing_event"
	reasonUnknownToken    = "unknown_token"
	reasonTooOld          = "too_old"
	reasonTooNew          = "too_new"
	reasonTooManyProps    = "too_many_properties"
	reasonTooDeep         = "too_deep"
	reasonArrayTooLong    = "array_too_long"
	reasonTooLarge        = "too_large"
	reasonInvalidInsertID = "invalid_insert_id"
	reasonInvalidID       = "invalid_distinct_id"
	reasonTooManyEvents   = "too_many_events"
)

var rejectReasons = []string{
	reasonMalformed, reasonMissingEvent, reasonUnknownToken, reasonTooOld, reasonTooNew, reasonTooManyProps,
	reasonTooDeep, reasonArrayTooLong, reasonTooLarge, reasonInvalidInsertID, reasonInvalidID, reasonTooManyEvents,
}

// EventError says why one event of a request was rejected. Field names the
// offending field; the message never quotes a value.
type EventError struct {
	Index    int
	InsertID string
	Field    string
	Reason   string
	Msg      string
}

func (e *EventError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("event %d: %s: %s", e.Index, e.Field, e.Msg)
	}
	return fmt.Sprintf("event %d: %s", e.Index, e.Msg)
}

// normalized is one valid event, ready to be wrapped in an envelope.
type normalized struct {
	project    string
	distinctID string
	object     []byte // {"event": ..., "properties": {...}}
}

// trackEvent is the wire shape of a Mixpanel event.
type trackEvent struct {
	Event      *string        `json:"event"`
	Properties map[string]any `json:"properties"`
}

// normalizeTrack validates one /track event and returns its normalised form:
// token resolved to a project and removed, distinct_id a string, time in
// Unix milliseconds, and a $insert_id always present.
func (c *Collector) normalizeTrack(raw json.RawMessage, idx int, now time.Time) (normalized, *EventError) {
	fail := func(field, reason, format string, args ...any) (normalized, *EventError) {
		return normalized{}, &EventError{Index: idx, Field: field, Reason: reason, Msg: fmt.Sprintf(format, args...)}
	}
	lim := c.cfg.Limits
	if len(raw) > lim.MaxEventBytes {
		return fail("", reasonTooLarge, "event exceeds %d bytes", lim.MaxEventBytes)
	}
	var te trackEvent
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&te); err != nil {
		return fail("", reasonMalformed, "not a JSON object with an event name and properties")
	}
	if te.Event == nil || *te.Event == "" {
		return fail("event", reasonMissingEvent, "event name is missing")
	}
	if len(*te.Event) > 255 {
		return fail("event", reasonMalformed, "event name exceeds 255 bytes")
	}
	props := te.Properties
	if props == nil {
		props = map[string]any{}
	}

	tok, _ := props[event.PropToken].(string)
	project, ok := c.projectFor(tok)
	if !ok {
		return fail("properties.token", reasonUnknownToken, "unknown project token")
	}
	delete(props, event.PropToken)

	distinctID := ""
	switch v := props[event.PropDistinctID].(type) {
	case nil:
	case string:
		distinctID = v
	case json.Number:
		distinctID = v.String()
	default:
		return fail("properties.distinct_id", reasonInvalidID, "distinct_id must be a string or a number")
	}
	if len(distinctID) > 255 {
		return fail("properties.distinct_id", reasonInvalidID, "distinct_id exceeds 255 bytes")
	}
	if distinctID != "" {
		props[event.PropDistinctID] = distinctID
	}

	ms, present, err := eventMillis(props[event.PropTime])
	if err != nil {
		return fail("properties.time", reasonMalformed, "%s", err.Error())
	}
	if !present {
		ms = now.UnixMilli()
	}
	t := time.UnixMilli(ms)
	if now.Sub(t) > lim.TrackMaxAge {
		return fail("properties.time", reasonTooOld, "older than %s; send historical events to /import", days(lim.TrackMaxAge))
	}
	if t.Sub(now) > lim.MaxFuture {
		return fail("properties.time", reasonTooNew, "more than %s in the future", lim.MaxFuture)
	}
	props[event.PropTime] = json.Number(fmt.Sprint(ms))

	if len(props) > lim.MaxProperties {
		return fail("properties", reasonTooManyProps, "more than %d properties", lim.MaxProperties)
	}
	for k, v := range props {
		if e := c.checkShape(v, 1); e != nil {
			return fail("properties."+safeKey(k), e.reason, "%s", e.msg)
		}
	}

	insertID, hasID := props[event.PropInsertID].(string)
	if _, present := props[event.PropInsertID]; present && !hasID {
		return fail("properties.$insert_id", reasonInvalidInsertID, "$insert_id must be a string")
	}
	if hasID && !validInsertID(insertID) {
		return fail("properties.$insert_id", reasonInvalidInsertID, "$insert_id must be 1 to 36 characters of A-Z, a-z, 0-9 and -")
	}

	obj := struct {
		Event      string         `json:"event"`
		Properties map[string]any `json:"properties"`
	}{*te.Event, props}
	if !hasID {
		// A deterministic id, derived from the event's content, makes a
		// retried request fold into the row its first attempt wrote.
		canon, err := json.Marshal(obj)
		if err != nil {
			return fail("properties", reasonMalformed, "properties are not encodable")
		}
		sum := sha256.Sum256(append([]byte(project+"\x00"), canon...))
		props[event.PropInsertID] = hex.EncodeToString(sum[:16])
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return fail("properties", reasonMalformed, "properties are not encodable")
	}
	return normalized{project: project, distinctID: distinctID, object: b}, nil
}

// eventMillis reads a Mixpanel time: seconds (possibly fractional) or
// milliseconds. Values above 1e11 can only be milliseconds (1e11 seconds is
// the year 5138).
func eventMillis(v any) (ms int64, present bool, err error) {
	if v == nil {
		return 0, false, nil
	}
	var f float64
	switch x := v.(type) {
	case json.Number:
		f, err = x.Float64()
		if err != nil {
			return 0, true, fmt.Errorf("time is not a number")
		}
	case string:
		// Some clients send the number as a string.
		if f, err = json.Number(x).Float64(); err != nil {
			return 0, true, fmt.Errorf("time is not a number")
		}
	default:
		return 0, true, fmt.Errorf("time is not a number")
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, true, fmt.Errorf("time is out of range")
	}
	if f < 1e11 {
		f *= 1000
	}
	if f > 1e14 {
		return 0, true, fmt.Errorf("time is out of range")
	}
	return int64(f), true, nil
}

func validInsertID(s string) bool {
	if len(s) == 0 || len(s) > 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

type shapeError struct{ reason, msg string }

// checkShape enforces the nesting and array limits on a property value.
// depth counts the property itself as 1.
func (c *Collector) checkShape(v any, depth int) *shapeError {
	lim := c.cfg.Limits
	switch x := v.(type) {
	case map[string]any:
		if depth > lim.MaxDepth {
			return &shapeError{reasonTooDeep, fmt.Sprintf("nested more than %d levels deep", lim.MaxDepth)}
		}
		if len(x) > lim.MaxProperties {
			return &shapeError{reasonTooManyProps, fmt.Sprintf("object has more than %d keys", lim.MaxProperties)}
		}
		for _, e := range x {
			if err := c.checkShape(e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		if depth > lim.MaxDepth {
			return &shapeError{reasonTooDeep, fmt.Sprintf("nested more than %d levels deep", lim.MaxDepth)}
		}
		if len(x) >= lim.MaxArrayLen {
			return &shapeError{reasonArrayTooLong, fmt.Sprintf("list has %d items or more", lim.MaxArrayLen)}
		}
		for _, e := range x {
			if err := c.checkShape(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// safeKey shortens a property name for an error message. Property names are
// chosen by developers, not end users, but are still cut to keep answers small.
func safeKey(k string) string {
	if len(k) > 64 {
		return k[:64] + "…"
	}
	return k
}

// days spells a duration the way people state these limits.
func days(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		if n := int(d / (24 * time.Hour)); n != 1 {
			return fmt.Sprintf("%d days", n)
		}
		return "1 day"
	}
	return d.String()
}
