package ingest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// Rejection reasons: a fixed set, used as a metric label and in answers.
const (
	reasonMalformed        = "malformed"
	reasonMissingEvent     = "missing_event"
	reasonUnknownToken     = "unknown_token"
	reasonUnauthorized     = "unauthorized"
	reasonTooOld           = "too_old"
	reasonTooNew           = "too_new"
	reasonTooManyProps     = "too_many_properties"
	reasonTooDeep          = "too_deep"
	reasonArrayTooLong     = "array_too_long"
	reasonTooLarge         = "too_large"
	reasonInvalidInsertID  = "invalid_insert_id"
	reasonInvalidID        = "invalid_distinct_id"
	reasonMissingID        = "missing_id"
	reasonInvalidOperation = "invalid_operation"
	reasonTooManyEvents    = "too_many_events"
	reasonRateLimited      = "rate_limited"
	reasonInvalidParameter = "invalid_parameter"
	// reasonOverloaded is a request refused because the bodies in flight
	// hold all the memory collector.limits.max_inflight_bytes allows.
	reasonOverloaded = "overloaded"
)

var rejectReasons = []string{
	reasonMalformed, reasonMissingEvent, reasonUnknownToken, reasonUnauthorized, reasonTooOld, reasonTooNew,
	reasonTooManyProps, reasonTooDeep, reasonArrayTooLong, reasonTooLarge, reasonInvalidInsertID, reasonInvalidID,
	reasonMissingID, reasonInvalidOperation, reasonTooManyEvents, reasonRateLimited, reasonInvalidParameter,
	reasonOverloaded,
}

// EventError says why one record of a request (an event or a profile
// update) was rejected. Field names the offending field; the message never
// quotes a value.
type EventError struct {
	Index int
	// InsertID is the record's own $insert_id, when it had a valid one.
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

// normalized is one valid event or profile operation, ready to be wrapped
// in an envelope.
type normalized struct {
	project string
	key     []byte // Kafka message key
	object  []byte // envelope's event: {"event": ..., "properties": {...}[, "value": ...]}
	// ip overrides the connection's address (a profile update's $ip).
	ip    string
	noGeo bool // the record asked for no geolocation ($ip: 0, or an unusable $ip)
}

// importEpoch is the earliest time /import accepts, as Mixpanel does.
var importEpoch = time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC)

// decodeJSON decodes one JSON value, keeping numbers exact.
func decodeJSON(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// encodeEvent writes {"event":name,"properties":props} and, for profile
// operations, ,"value":value. propsAt is the offset just inside the
// properties object, where spliceInsertID adds the id.
func encodeEvent(name string, props map[string]any, value any, withValue bool) (b []byte, propsAt int, err error) {
	n, err := json.Marshal(name)
	if err != nil {
		return nil, 0, err
	}
	p, err := json.Marshal(props)
	if err != nil {
		return nil, 0, err
	}
	var v []byte
	if withValue {
		if v, err = json.Marshal(value); err != nil {
			return nil, 0, err
		}
	}
	b = make([]byte, 0, len(`{"event":,"properties":,"value":}`)+len(n)+len(p)+len(v)+len(`"$insert_id":"0123456789abcdef0123456789abcdef",`))
	b = append(b, `{"event":`...)
	b = append(b, n...)
	b = append(b, `,"properties":`...)
	propsAt = len(b) + 1
	b = append(b, p...)
	if withValue {
		b = append(b, `,"value":`...)
		b = append(b, v...)
	}
	return append(b, '}'), propsAt, nil
}

// spliceInsertID inserts "$insert_id":hex(sum[:16]) as the first property
// of an object written by encodeEvent, at propsAt. It saves encoding the
// properties a second time.
func spliceInsertID(b []byte, at int, sum []byte) []byte {
	var id [32]byte
	hex.Encode(id[:], sum[:16])
	ins := make([]byte, 0, len(b)+48)
	ins = append(ins, b[:at]...)
	ins = append(ins, `"$insert_id":"`...)
	ins = append(ins, id[:]...)
	ins = append(ins, '"')
	if b[at] != '}' {
		ins = append(ins, ',')
	}
	return append(ins, b[at:]...)
}

// idString reads a distinct_id or group id, which SDKs send as a string or
// a number. nil is the empty id.
func idString(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", true
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	}
	return "", false
}

// eventMillis reads a Mixpanel time: seconds (possibly fractional) or
// milliseconds, as a number or a numeric string. Values above 1e11 can only
// be milliseconds (1e11 seconds is the year 5138).
func eventMillis(v any) (ms int64, present bool, err error) {
	if v == nil {
		return 0, false, nil
	}
	var f float64
	switch x := v.(type) {
	case json.Number:
		f, err = x.Float64()
	case string:
		// Some clients send the number as a string.
		f, err = json.Number(x).Float64()
	default:
		return 0, true, errTimeNotNumber
	}
	if err != nil {
		return 0, true, errTimeNotNumber
	}
	return millis(f)
}

// rawEventMillis is eventMillis of a property's JSON text (nil when the
// property is absent), without decoding it first.
func rawEventMillis(v []byte) (ms int64, present bool, err error) {
	if len(v) == 0 || v[0] == 'n' {
		return 0, false, nil
	}
	var f float64
	switch first := v[0]; {
	case first == '"':
		text, _ := stringText(v)
		f, err = strconv.ParseFloat(string(text), 64)
	case first == '-' || first >= '0' && first <= '9':
		f, err = strconv.ParseFloat(string(v), 64)
	default:
		return 0, true, errTimeNotNumber
	}
	if err != nil {
		return 0, true, errTimeNotNumber
	}
	return millis(f)
}

var (
	errTimeNotNumber  = errors.New("time is not a number")
	errTimeOutOfRange = errors.New("time is out of range")
)

// millis reads seconds or milliseconds as milliseconds.
func millis(f float64) (ms int64, present bool, err error) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, true, errTimeOutOfRange
	}
	if f < 1e11 {
		f *= 1000
	}
	if f > 1e14 {
		return 0, true, errTimeOutOfRange
	}
	return int64(f), true, nil
}

func validInsertID[T string | []byte](s T) bool {
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

// checkShape enforces the nesting, key-count and list-length limits on a
// property value. depth counts the property itself as 1.
func (c *Collector) checkShape(v any, depth int) *shapeError {
	lim := c.cfg.Limits
	switch x := v.(type) {
	case map[string]any:
		if depth > lim.MaxDepth {
			return &shapeError{reasonTooDeep, fmt.Sprintf("nested more than %d levels deep", lim.MaxDepth)}
		}
		if len(x) >= lim.MaxProperties {
			return &shapeError{reasonTooManyProps, fmt.Sprintf("object has %d keys or more", lim.MaxProperties)}
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
