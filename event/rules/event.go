package rules

import (
	"github.com/veilhq/veil/event"
)

// Event holds an event the worker decoded from the raw topic to the rules
// the collector held it to: its name, ids, time (in the window of the
// endpoint its envelope records, as of the time the collector received
// it), the size of its JSON, and every property's name and value. A
// message that no collector wrote (produced straight to the topic, or by
// a collector with other rules) is judged the same way; the worker
// dead-letters what breaks a rule.
//
// The worker calls it on every message, before the stages: it reads the
// properties the Decoder left as JSON text without decoding them, scanning only
// objects and lists, and allocates nothing for a valid event.
//
// What the collector itself added (time, $insert_id) is held to the rules
// too; the property count excludes distinct_id, time and $insert_id, which
// the collector may have added to an event that had fewer than the limit.
func (l Limits) Event(ev *event.Event) *Violation {
	if ev.EventBytes > 0 {
		if v := l.EventSize(ev.EventBytes, true); v != nil {
			return v
		}
	}
	switch ev.Kind {
	case event.KindTrack:
		if ev.Endpoint != EndpointTrack && ev.Endpoint != EndpointImport {
			return violation("endpoint", ReasonMalformed, "a track event must come from /track or /import")
		}
		if v := EventName(ev.Name); v != nil {
			return v
		}
		if v := DistinctID("properties.distinct_id", ev.DistinctID); v != nil {
			return v
		}
	case event.KindEngage:
		if v := DistinctID("$distinct_id", ev.DistinctID); v != nil {
			return v
		}
		if ev.DistinctID == "" {
			return violation("$distinct_id", ReasonMissingID, "$distinct_id is required")
		}
	case event.KindGroups:
		if len(ev.GroupKey) > MaxIDLen || len(ev.GroupID) > MaxIDLen {
			return violation("$group_id", ReasonInvalidID, "$group_key and $group_id must not exceed %d bytes", MaxIDLen)
		}
	}
	if ev.InsertID == "" {
		return violation("properties.$insert_id", ReasonInvalidInsertID, "$insert_id is missing")
	}
	if v := InsertID(ev.InsertID); v != nil {
		return v
	}
	if v := l.Time(ev.Endpoint, "properties.time", ev.Time.UnixMilli(), ev.ReceivedAt.UnixMilli()); v != nil {
		return v
	}
	if v := l.props(&ev.Properties); v != nil {
		return v
	}
	if ev.Kind != event.KindTrack {
		return l.operand(ev.Name, ev.Value)
	}
	return nil
}

// props checks the properties as Property checks a decoded value, but
// without decoding what the message holds as text: a number by its text,
// an object or list by scanning its text. The properties Veil takes out of
// the event (distinct_id, time, $insert_id) are not among them, nor
// counted.
func (l Limits) props(props *event.Properties) *Violation {
	n := 0
	var shape Shape
	for _, pr := range props.All() {
		n++
		if pr.Known() == 0 && !ValidName(pr.Name()) {
			return violation("properties", ReasonInvalidName, "a property name holds a control character")
		}
		switch pr.Kind() {
		case event.PropNumber:
			if !FiniteNumber(pr.Text()) {
				return violation("properties."+SafeKey(pr.Name()), ReasonInvalidNumber, "a number is too large for a float64")
			}
		case event.PropObject, event.PropArray:
			text, ok := pr.JSON()
			if !ok {
				v, _ := pr.Value()
				if err := l.CheckValue(v, 1); err != nil {
					err.Field = "properties." + SafeKey(pr.Name())
					return err
				}
				continue
			}
			if shape.MaxDepth == 0 {
				shape = l.Shape()
			}
			if _, err := ScanValue(text, 0, 1, &shape); err != nil {
				if err.Rule == nil {
					return violation("properties."+SafeKey(pr.Name()), ReasonMalformed, "not JSON")
				}
				v := *err.Rule
				v.Field = "properties." + SafeKey(pr.Name())
				return &v
			}
		}
	}
	return l.PropertyCount(n)
}

// operand checks a profile operation's operand: the names it sets and
// their values, or the names it unsets.
func (l Limits) operand(op string, v any) *Violation {
	switch x := v.(type) {
	case map[string]any:
		if len(x) >= l.MaxProperties {
			return violation(op, ReasonTooManyProps, "has %d properties or more", l.MaxProperties)
		}
		for k, e := range x {
			if !ValidName(k) {
				return violation(op, ReasonInvalidName, "a property name holds a control character")
			}
			if err := l.CheckValue(e, 1); err != nil {
				err.Field = op + "." + SafeKey(k)
				return err
			}
		}
	case []any:
		if op != "$unset" {
			return l.CheckValue(x, 1)
		}
		if len(x) >= l.MaxArrayLen {
			return violation(op, ReasonArrayTooLong, "list has %d items or more", l.MaxArrayLen)
		}
		for _, e := range x {
			if s, ok := e.(string); ok && !ValidName(s) {
				return violation(op, ReasonInvalidName, "a property name holds a control character")
			}
		}
	default:
		return l.CheckValue(x, 1)
	}
	return nil
}
