package ingest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/event/rules"
)

// Top-level fields of a Mixpanel profile update (/engage, /groups) other
// than its operations.
const (
	updToken       = "$token"
	updDistinctID  = "$distinct_id"
	updTime        = "$time"
	updIP          = "$ip"
	updIgnoreTime  = "$ignore_time"
	updIgnoreAlias = "$ignore_alias"
)

// identityFields are the identity hints mixpanel-browser adds to profile
// updates; they travel on to the worker in the envelope's properties.
var identityFields = []string{"$device_id", "$user_id", "$had_persisted_distinct_id"}

// normalizeUpdate validates one /engage or /groups update and returns one
// normalised object per operation it carries, in event.ProfileOps order. An
// update with any invalid operation is rejected whole, so that a profile
// never receives half of an update.
//
// ids gives the update's operations their $insert_ids (nil: a fresh
// source).
func (c *Collector) normalizeUpdate(raw []byte, idx int, now time.Time, kind event.Kind, out []normalized, ids *insertIDs) ([]normalized, *EventError) {
	fail := func(field, reason, format string, args ...any) ([]normalized, *EventError) {
		return out, &EventError{Index: idx, Field: field, Reason: reason, Msg: fmt.Sprintf(format, args...)}
	}
	lim := c.cfg.Limits
	if len(raw) > lim.MaxEventBytes {
		return fail("", reasonTooLarge, "update exceeds %d bytes", lim.MaxEventBytes)
	}
	if ids == nil {
		ids = new(insertIDs)
	}
	var upd map[string]any
	if err := decodeJSON(raw, &upd); err != nil || upd == nil {
		return fail("", reasonMalformed, "not a JSON object")
	}

	tok, _ := upd[updToken].(string)
	project, ok := c.projectFor(tok)
	if !ok {
		return fail(updToken, reasonUnknownToken, "unknown project token")
	}

	props := make(map[string]any, 8)
	var key []byte
	if kind == event.KindGroups {
		gk, ok := upd[event.PropGroupKey].(string)
		if !ok || gk == "" {
			return fail(event.PropGroupKey, reasonMissingID, "$group_key must be a non-empty string")
		}
		gid, ok := idString(upd[event.PropGroupID])
		if !ok || gid == "" {
			return fail(event.PropGroupID, reasonMissingID, "$group_id must be a non-empty string or a number")
		}
		if len(gk) > rules.MaxIDLen || len(gid) > rules.MaxIDLen {
			return fail(event.PropGroupID, reasonInvalidID, "$group_key and $group_id must not exceed 255 bytes")
		}
		props[event.PropGroupKey] = gk
		props[event.PropGroupID] = gid
		key = event.Key(project, gk+"\x00"+gid)
	} else {
		id, ok := idString(upd[updDistinctID])
		switch {
		case !ok:
			return fail(updDistinctID, reasonInvalidID, "$distinct_id must be a string or a number")
		case id == "":
			return fail(updDistinctID, reasonMissingID, "$distinct_id is required")
		}
		if v := rules.DistinctID(updDistinctID, id); v != nil {
			return out, violationError(idx, "", v)
		}
		props[event.PropDistinctID] = id
		key = event.Key(project, id)
	}

	ms, present, err := eventMillis(upd[updTime])
	if err != nil {
		return fail(updTime, reasonMalformed, "%s", err.Error())
	}
	if !present {
		ms = now.UnixMilli()
	}
	endpoint := rules.EndpointEngage
	if kind == event.KindGroups {
		endpoint = rules.EndpointGroups
	}
	if v := lim.Time(endpoint, updTime, ms, now.UnixMilli()); v != nil {
		return out, violationError(idx, "", v)
	}
	props[event.PropTime] = json.Number(strconv.FormatInt(ms, 10))
	if truthy(upd[updIgnoreTime]) {
		props[updIgnoreTime] = true
	}
	if truthy(upd[updIgnoreAlias]) {
		props[updIgnoreAlias] = true
	}
	for _, f := range identityFields {
		if v, ok := upd[f]; ok && v != nil {
			if e := lim.CheckValue(v, 1); e != nil {
				return fail(f, e.Reason, "%s", e.Msg)
			}
			props[f] = v
		}
	}

	var n normalized
	n.project, n.key = project, key
	if v, ok := upd[updIP]; ok && v != nil {
		n.ip, n.noGeo = profileIP(v)
	}

	ops := 0
	for _, op := range event.ProfileOps {
		v, ok := upd[op]
		if !ok {
			continue
		}
		if e := c.checkOperand(op, v); e != nil {
			return fail(op+e.field, e.reason, "%s", e.msg)
		}
		ops++
	}
	if ops == 0 {
		return fail("", reasonInvalidOperation, "update has no operation ($set, $set_once, $add, $append, $union, $remove, $unset or $delete)")
	}

	// Each operation gets a $insert_id of its own, fixed here and carried
	// in its envelope: two identical increments stay two, and a replay of
	// the message folds into the row it wrote.
	first := len(out)
	for i, op := range event.ProfileOps {
		v, ok := upd[op]
		if !ok {
			continue
		}
		b, propsAt, err := encodeEvent(op, props, v, true)
		if err != nil {
			return out[:first], &EventError{Index: idx, Field: op, Reason: reasonMalformed, Msg: "operation is not encodable"}
		}
		m := n
		m.object = spliceInsertID(b, propsAt, ids, idx, byte(i))
		out = append(out, m)
	}
	return out, nil
}

// opError names the part of an operand that is wrong.
type opError struct {
	field, reason, msg string
}

// checkOperand validates a profile operation's operand the way Mixpanel
// defines each operation.
func (c *Collector) checkOperand(op string, v any) *opError {
	lim := c.cfg.Limits
	if op == "$delete" {
		return nil // the operand is ignored; SDKs send "" or the distinct_id
	}
	if op == "$unset" {
		list, ok := v.([]any)
		if !ok {
			return &opError{"", reasonInvalidOperation, "$unset takes a list of property names"}
		}
		if len(list) >= lim.MaxArrayLen {
			return &opError{"", reasonArrayTooLong, fmt.Sprintf("list has %d items or more", lim.MaxArrayLen)}
		}
		for _, e := range list {
			name, ok := e.(string)
			if !ok {
				return &opError{"", reasonInvalidOperation, "$unset takes a list of property names"}
			}
			if !rules.ValidName(name) {
				return &opError{"", reasonInvalidName, "a property name holds a control character"}
			}
		}
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return &opError{"", reasonInvalidOperation, op + " takes an object of property names and values"}
	}
	if len(obj) >= lim.MaxProperties {
		return &opError{"", reasonTooManyProps, fmt.Sprintf("has %d properties or more", lim.MaxProperties)}
	}
	for k, e := range obj {
		if !rules.ValidName(k) {
			return &opError{"", reasonInvalidName, "a property name holds a control character"}
		}
		field := "." + rules.SafeKey(k)
		switch op {
		case "$add":
			n, ok := e.(json.Number)
			if !ok {
				return &opError{field, reasonInvalidOperation, "$add values must be numbers"}
			}
			if _, err := n.Float64(); err != nil {
				return &opError{field, reasonInvalidOperation, "$add values must be finite numbers"}
			}
			continue
		case "$union":
			if _, ok := e.([]any); !ok {
				return &opError{field, reasonInvalidOperation, "$union values must be lists"}
			}
		}
		if se := lim.CheckValue(e, 1); se != nil {
			return &opError{field, se.Reason, se.Msg}
		}
	}
	return nil
}

// profileIP reads an update's $ip: an address overrides the connection's
// for geolocation; 0 (or "0") asks for none. An unusable value also turns
// geolocation off rather than locating the profile by the wrong address.
func profileIP(v any) (ip string, noGeo bool) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = x.String()
	default:
		return "", true
	}
	if s == "0" || s == "" {
		return "", true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", true
	}
	return a.Unmap().String(), false
}

// truthy reads a modifier flag the way SDKs spell it.
func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case string:
		return x == "true" || x == "1"
	case json.Number:
		return x.String() != "0"
	}
	return false
}
