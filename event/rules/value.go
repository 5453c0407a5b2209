package rules

import (
	"encoding/json"
	"unicode/utf8"
)

// CheckValue holds a decoded property value (as encoding/json decodes into
// an any with UseNumber) to the rules ScanValue holds its JSON text to
// with l.Shape(): nesting, keys and items within the limits, every key a
// valid name, every number a finite float64. depth counts the property
// itself as 1. FuzzShapeAgree holds the two equal.
func (l Limits) CheckValue(v any, depth int) *Violation {
	switch x := v.(type) {
	case json.Number:
		if !FiniteNumber(string(x)) {
			return violation("", ReasonInvalidNumber, "a number is too large for a float64")
		}
	case float64:
		// Not what decoding gives, but finite by construction of JSON
		// that decoded.
	case map[string]any:
		if depth > l.MaxDepth {
			return violation("", ReasonTooDeep, "nested more than %d levels deep", l.MaxDepth)
		}
		if len(x) >= l.MaxProperties {
			return violation("", ReasonTooManyProps, "object has %d keys or more", l.MaxProperties)
		}
		for k, e := range x {
			if !ValidName(k) {
				return violation("", ReasonInvalidName, "a key holds a control character")
			}
			if err := l.CheckValue(e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		if depth > l.MaxDepth {
			return violation("", ReasonTooDeep, "nested more than %d levels deep", l.MaxDepth)
		}
		if len(x) >= l.MaxArrayLen {
			return violation("", ReasonArrayTooLong, "list has %d items or more", l.MaxArrayLen)
		}
		for _, e := range x {
			if err := l.CheckValue(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Property checks one top-level property of an event: its name and its
// value.
func (l Limits) Property(name string, v any) *Violation {
	if !ValidName(name) {
		return violation("properties", ReasonInvalidName, "a property name holds a control character")
	}
	if err := l.CheckValue(v, 1); err != nil {
		err.Field = "properties." + SafeKey(name)
		return err
	}
	return nil
}

// SafeKey shortens a property name for an error message. Property names are
// chosen by developers, not end users, but are still cut to keep answers
// small, at a character boundary.
func SafeKey(k string) string {
	if len(k) <= 64 {
		return k
	}
	n := 64
	for n > 0 && !utf8.RuneStart(k[n]) {
		n--
	}
	return k[:n] + "…"
}
