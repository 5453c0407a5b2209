// Package rules is what Veil requires of an event, in one place: the
// collector holds every event it receives to these rules before it writes
// the event to Kafka, and the worker holds every message it reads from the
// raw topic to the same rules again before it stores anything, because the
// raw topic is a boundary of its own: whatever can produce to it (a
// collector of another version, a replay tool, an operator's script) is
// judged by the rules, not trusted.
//
// The rules follow Mixpanel's ingestion API where Mixpanel documents one
// (limits, the time window of each endpoint, the $insert_id syntax, the
// placeholder ids it refuses) and keep whatever leaves Veil valid,
// portable JSON and text where Mixpanel says nothing (finite numbers,
// property and event names without control characters).
//
// Every violation names a fixed reason, usable as a metric label, and a
// field; its message never quotes a value.
package rules

import (
	"errors"
	"fmt"
	"time"
)

// Reasons an event breaks the rules: a fixed set, used as metric labels
// and in the collector's answers.
const (
	ReasonMalformed       = "malformed"
	ReasonMissingEvent    = "missing_event"
	ReasonInvalidName     = "invalid_name"
	ReasonInvalidNumber   = "invalid_number"
	ReasonTooOld          = "too_old"
	ReasonTooNew          = "too_new"
	ReasonTooManyProps    = "too_many_properties"
	ReasonTooDeep         = "too_deep"
	ReasonArrayTooLong    = "array_too_long"
	ReasonTooLarge        = "too_large"
	ReasonInvalidInsertID = "invalid_insert_id"
	ReasonInvalidID       = "invalid_distinct_id"
	ReasonMissingID       = "missing_id"
)

// Reasons lists every reason of this package, for pre-creating metric
// series.
var Reasons = []string{
	ReasonMalformed, ReasonMissingEvent, ReasonInvalidName, ReasonInvalidNumber, ReasonTooOld, ReasonTooNew,
	ReasonTooManyProps, ReasonTooDeep, ReasonArrayTooLong, ReasonTooLarge, ReasonInvalidInsertID, ReasonInvalidID,
	ReasonMissingID,
}

// Violation says which rule an event breaks. Field names the offending
// field ("properties.time", "event"); Msg says what is wrong with it and
// never quotes a value.
type Violation struct {
	Field  string
	Reason string
	Msg    string
}

func (v *Violation) Error() string {
	if v.Field == "" {
		return v.Reason + ": " + v.Msg
	}
	return v.Reason + ": " + v.Field + ": " + v.Msg
}

func violation(field, reason, format string, args ...any) *Violation {
	return &Violation{Field: field, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// MaxNameLen bounds an event name, and MaxIDLen a distinct_id, group key
// or group id, in bytes, as Mixpanel does.
const (
	MaxNameLen = 255
	MaxIDLen   = 255
)

// ImportEpoch is the earliest time /import accepts, as Mixpanel does.
var ImportEpoch = time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC)

// Limits bound one event. The defaults are Mixpanel's. The collector reads
// them from collector.limits, and the worker is given the same.
type Limits struct {
	// MaxEventBytes bounds one event's JSON.
	MaxEventBytes int `yaml:"max_event_bytes"`
	// MaxProperties bounds the properties of an event and the keys of any
	// object inside it: Mixpanel wants fewer than 255, so 255 is rejected.
	MaxProperties int `yaml:"max_properties"`
	// MaxDepth bounds the nesting of objects and lists in a property value.
	MaxDepth int `yaml:"max_depth"`
	// MaxArrayLen bounds list properties: Mixpanel wants fewer than 255 items.
	MaxArrayLen int `yaml:"max_array_len"`
	// TrackMaxAge is how old a /track event may be; older ones belong on /import.
	TrackMaxAge time.Duration `yaml:"track_max_age"`
	// MaxFuture is how far ahead of the collector's clock an event may be.
	MaxFuture time.Duration `yaml:"max_future"`
}

// DefaultLimits returns Mixpanel's documented limits.
func DefaultLimits() Limits {
	return Limits{
		MaxEventBytes: 1 << 20,
		MaxProperties: 255,
		MaxDepth:      3,
		MaxArrayLen:   255,
		TrackMaxAge:   5 * 24 * time.Hour,
		MaxFuture:     time.Hour,
	}
}

// Validate reports the first invalid limit, naming its key under prefix
// (collector.limits).
func (l Limits) Validate(prefix string) error {
	switch {
	case l.MaxEventBytes <= 0:
		return errors.New(prefix + ".max_event_bytes must be positive")
	case l.MaxProperties <= 0:
		return errors.New(prefix + ".max_properties must be positive")
	case l.MaxDepth <= 0:
		return errors.New(prefix + ".max_depth must be positive")
	case l.MaxArrayLen <= 0:
		return errors.New(prefix + ".max_array_len must be positive")
	case l.TrackMaxAge <= 0:
		return errors.New(prefix + ".track_max_age must be positive")
	case l.MaxFuture < 0:
		return errors.New(prefix + ".max_future must not be negative")
	}
	return nil
}

// Shape is the bound the limits put on one property value, for ScanValue.
func (l Limits) Shape() Shape {
	return Shape{MaxDepth: l.MaxDepth, MaxKeys: l.MaxProperties, MaxItems: l.MaxArrayLen, Strict: true}
}

// NormalizeSlack is what the collector's normalisation may add to an
// event's JSON: a generated $insert_id (47 bytes), time in milliseconds, a
// numeric distinct_id quoted, an absent properties object written. The
// worker allows an envelope's event max_event_bytes plus this much.
const NormalizeSlack = 128

// EventSize checks the size of an event's JSON: n bytes as received
// (normalized false) or as the collector wrote it to the raw topic.
func (l Limits) EventSize(n int, normalized bool) *Violation {
	max := l.MaxEventBytes
	if normalized {
		max += NormalizeSlack
	}
	if n > max {
		return violation("", ReasonTooLarge, "event exceeds %d bytes", l.MaxEventBytes)
	}
	return nil
}

// PropertyCount checks the number of an event's properties.
func (l Limits) PropertyCount(n int) *Violation {
	if n >= l.MaxProperties {
		return violation("properties", ReasonTooManyProps, "has %d properties or more", l.MaxProperties)
	}
	return nil
}

// The endpoints an envelope records, and so the time window that applies.
const (
	EndpointTrack  = "/track"
	EndpointImport = "/import"
	EndpointEngage = "/engage"
	EndpointGroups = "/groups"
)

// Time checks an event's time, ms in Unix milliseconds, against the
// window of the endpoint it came to, as of receivedAt (Unix milliseconds,
// the collector's clock when it received the event): /track takes the
// last track_max_age, /import anything from 1971-01-01, and every
// endpoint at most max_future ahead. field names the time in the answer.
func (l Limits) Time(endpoint, field string, ms, receivedAt int64) *Violation {
	if ms < 0 || ms > MaxMillis {
		return violation(field, ReasonMalformed, "time is out of range")
	}
	switch endpoint {
	case EndpointImport:
		if ms < ImportEpoch.UnixMilli() {
			return violation(field, ReasonTooOld, "before 1971-01-01")
		}
	case EndpointTrack:
		if receivedAt-ms > l.TrackMaxAge.Milliseconds() {
			return violation(field, ReasonTooOld, "older than %s; send historical events to /import", days(l.TrackMaxAge))
		}
	}
	if ms-receivedAt > l.MaxFuture.Milliseconds() {
		return violation(field, ReasonTooNew, "more than %s in the future", l.MaxFuture)
	}
	return nil
}

// MaxMillis is the latest time an event may carry at all, in Unix
// milliseconds (the year 5138); the window of its endpoint is narrower.
const MaxMillis = 1e14

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
