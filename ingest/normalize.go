package ingest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"

	"github.com/veilhq/veil/event/rules"
)

// Rejection reasons: a fixed set, used as a metric label and in answers.
// Those of an event's content are the rules' (event/rules), which the
// worker holds every message to as well; the others are the collector's
// own, about requests and credentials.
const (
	reasonMalformed        = rules.ReasonMalformed
	reasonMissingEvent     = rules.ReasonMissingEvent
	reasonInvalidName      = rules.ReasonInvalidName
	reasonInvalidNumber    = rules.ReasonInvalidNumber
	reasonTooOld           = rules.ReasonTooOld
	reasonTooNew           = rules.ReasonTooNew
	reasonTooManyProps     = rules.ReasonTooManyProps
	reasonTooDeep          = rules.ReasonTooDeep
	reasonArrayTooLong     = rules.ReasonArrayTooLong
	reasonTooLarge         = rules.ReasonTooLarge
	reasonInvalidInsertID  = rules.ReasonInvalidInsertID
	reasonInvalidID        = rules.ReasonInvalidID
	reasonMissingID        = rules.ReasonMissingID
	reasonUnknownToken     = "unknown_token"
	reasonUnauthorized     = "unauthorized"
	reasonInvalidOperation = "invalid_operation"
	reasonTooManyEvents    = "too_many_events"
	reasonRateLimited      = "rate_limited"
	reasonInvalidParameter = "invalid_parameter"
	// reasonOverloaded is a request refused because the bodies in flight
	// hold all the memory collector.limits.max_inflight_bytes allows.
	reasonOverloaded = "overloaded"
)

var rejectReasons = append(slices.Clone(rules.Reasons),
	reasonUnknownToken, reasonUnauthorized, reasonInvalidOperation, reasonTooManyEvents, reasonRateLimited, reasonInvalidParameter, reasonOverloaded)

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

// spliceInsertID inserts "$insert_id":id, the id ids gives record idx and
// operation op, as the first property of an object written by
// encodeEvent, at propsAt. It saves encoding the properties a second
// time.
func spliceInsertID(b []byte, at int, ids *insertIDs, idx int, op byte) []byte {
	var id [32]byte
	ids.put(id[:], idx, op)
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
	if f > rules.MaxMillis {
		return 0, true, errTimeOutOfRange
	}
	return int64(f), true, nil
}

// violationError makes a rule's violation one record's error.
func violationError(idx int, insertID string, v *rules.Violation) *EventError {
	return &EventError{Index: idx, InsertID: insertID, Field: v.Field, Reason: v.Reason, Msg: v.Msg}
}

// insertIDs makes the $insert_id of the records of one request that came
// without one: 12 random bytes drawn once per request, then the record's
// index and, for profile updates, the operation's (of 8), as 32 hexadecimal
// digits. Ids of different records differ, within a request by their
// index and across requests by the random part (96 bits), so two events
// never fold into one row unless they are one message read twice.
type insertIDs struct {
	seed  [12]byte
	drawn bool
}

// reset forgets the seed: the next id starts a new request.
func (s *insertIDs) reset() { s.drawn = false }

// put writes the id of record idx (and operation op) into dst, 32 bytes.
func (s *insertIDs) put(dst []byte, idx int, op byte) {
	if !s.drawn {
		_, _ = rand.Read(s.seed[:])
		s.drawn = true
	}
	var id [16]byte
	copy(id[:], s.seed[:])
	binary.BigEndian.PutUint32(id[12:], uint32(idx)<<3|uint32(op&7))
	hex.Encode(dst[:32], id[:])
}
