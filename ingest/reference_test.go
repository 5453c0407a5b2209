package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/event/rules"
)

// trackEvent is the wire shape of a Mixpanel event.
type trackEvent struct {
	Event      *string        `json:"event"`
	Properties map[string]any `json:"properties"`
}

// referenceNormalizeEvent is the straightforward way to normalise an event:
// decode it into maps, check, encode again. normalizeEvent does the same
// on the event's bytes; FuzzNormalizeEvent holds the two to the same
// answers.
func (c *Collector) referenceNormalizeEvent(raw []byte, idx int, now time.Time, importProject string) (normalized, *EventError) {
	isImport := importProject != ""
	insertID := ""
	fail := func(field, reason, format string, args ...any) (normalized, *EventError) {
		return normalized{}, &EventError{Index: idx, InsertID: insertID, Field: field, Reason: reason, Msg: fmt.Sprintf(format, args...)}
	}
	lim := c.cfg.Limits
	violated := func(v *rules.Violation) (normalized, *EventError) {
		return normalized{}, violationError(idx, insertID, v)
	}
	if v := lim.EventSize(len(raw), false); v != nil {
		return violated(v)
	}
	var te trackEvent
	if err := decodeJSON(raw, &te); err != nil {
		return fail("", reasonMalformed, "not a JSON object with an event name and properties")
	}
	props := te.Properties
	if props == nil {
		props = map[string]any{}
	}
	if id, ok := props[event.PropInsertID].(string); ok && rules.ValidInsertID(id) {
		insertID = id
	}
	if te.Event == nil {
		return fail("event", reasonMissingEvent, "event name is missing")
	}
	if v := rules.EventName(*te.Event); v != nil {
		return violated(v)
	}

	project := importProject
	if !isImport {
		tok, _ := props[event.PropToken].(string)
		p, ok := c.projectFor(tok)
		if !ok {
			return fail("properties.token", reasonUnknownToken, "unknown project token")
		}
		project = p
	}
	delete(props, event.PropToken)
	if v := lim.PropertyCount(len(props)); v != nil {
		return violated(v)
	}

	rawID, hasDistinctID := props[event.PropDistinctID]
	if isImport && !hasDistinctID {
		return fail("properties.distinct_id", reasonMissingID, "distinct_id is required by /import (use \"\" for events of no user)")
	}
	distinctID, ok := idString(rawID)
	if !ok {
		return fail("properties.distinct_id", reasonInvalidID, "distinct_id must be a string or a number")
	}
	if v := rules.DistinctID("properties.distinct_id", distinctID); v != nil {
		return violated(v)
	}
	if hasDistinctID && rawID != nil {
		props[event.PropDistinctID] = distinctID // a null stays null, as the collector writes it
	}

	ms, present, err := eventMillis(props[event.PropTime])
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
			return violated(v)
		}
	}
	props[event.PropTime] = json.Number(strconv.FormatInt(ms, 10))

	for k, v := range props {
		if e := lim.Property(k, v); e != nil {
			return violated(e)
		}
	}

	id, isString := props[event.PropInsertID].(string)
	if _, present := props[event.PropInsertID]; present && !isString {
		return fail("properties.$insert_id", reasonInvalidInsertID, "$insert_id must be a string")
	}
	if isString {
		if v := rules.InsertID(id); v != nil {
			return violated(v)
		}
	}

	b, propsAt, err := encodeEvent(*te.Event, props, nil, false)
	if err != nil {
		return fail("properties", reasonMalformed, "properties are not encodable")
	}
	if !isString {
		b = spliceInsertID(b, propsAt, new(insertIDs), idx, 0)
	}
	return normalized{project: project, key: event.Key(project, distinctID), object: b}, nil
}

// FuzzNormalizeEvent holds normalizeEvent, which works on bytes, to
// referenceNormalizeEvent, which decodes into maps: the same events are
// accepted, with the same content, and the same rejected for the same reason.
func FuzzNormalizeEvent(f *testing.F) {
	for _, s := range []string{
		evA, evB, evImport,
		`{"event":"e","properties":{"token":"tok-shop","time":"1795348800","distinct_id":null,"a":{"b":[1,{"c":null}]}}}`,
		`{"event":"e","properties":{"token":"tok-shop","$insert_id":7}}`,
		`{"event":"e","properties":{"token":"tok-shop","time":true}}`,
		`{"event":"e","properties":{"token":"tok-shop","a":[[[[1]]]]}}`,
		`{"event":"e","extra":[1],"properties":{"to\u006ben":"tok-shop","d\"q":"\ud83d\ude00"}}`,
		`{"event":null,"properties":null}`,
		`{"properties":{"token":"tok-shop"},"event":"late"}`,
		`{"event":"e","properties":{"token":"tok-shop","distinct_id":1e3,"time":1795348800000.5}}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	c, _, _ := newTestCollector(f, func(c *Config) {
		c.Limits.MaxProperties = 6
		c.Limits.MaxArrayLen = 4
		c.Limits.MaxDepth = 2
	})
	f.Fuzz(func(t *testing.T, raw []byte, isImport bool) {
		raw = repairUTF8(raw) // as the handler does before splitting
		if ambiguous(raw) {
			return
		}
		project := ""
		if isImport {
			project = "shop"
		}
		got, gotErr := c.normalizeEvent(raw, 3, fixedNow, project, nil)
		want, wantErr := c.referenceNormalizeEvent(raw, 3, fixedNow, project)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("%q: normalizeEvent error %v, reference error %v", raw, gotErr, wantErr)
		}
		if gotErr != nil {
			shape := func(r string) bool {
				return r == reasonTooDeep || r == reasonTooManyProps || r == reasonArrayTooLong || r == reasonInvalidName || r == reasonInvalidNumber
			}
			count := func(e *EventError) bool { return e.Reason == reasonTooManyProps && e.Field == "properties" }
			if shape(gotErr.Reason) && shape(wantErr.Reason) && !count(gotErr) && !count(wantErr) {
				return // several limits broken: which is named first may differ
			}
			if *gotErr != *wantErr {
				t.Fatalf("%q: normalizeEvent %+v, reference %+v", raw, *gotErr, *wantErr)
			}
			return
		}
		if got.project != want.project || string(got.key) != string(want.key) {
			t.Fatalf("%q: project/key %s %q, reference %s %q", raw, got.project, got.key, want.project, want.key)
		}
		var g, w map[string]any
		if err := decodeJSON(got.object, &g); err != nil {
			t.Fatalf("%q: output %q is not JSON: %v", raw, got.object, err)
		}
		if err := decodeJSON(want.object, &w); err != nil {
			t.Fatal(err)
		}
		gp, wp := g["properties"].(map[string]any), w["properties"].(map[string]any)
		if id, _ := gp[event.PropInsertID].(string); !rules.ValidInsertID(id) {
			t.Fatalf("%q: insert id %q", raw, id)
		}
		var in struct {
			Properties map[string]any `json:"properties"`
		}
		_ = json.Unmarshal(raw, &in)
		if _, sent := in.Properties[event.PropInsertID]; !sent {
			delete(gp, event.PropInsertID) // generated: random
			delete(wp, event.PropInsertID)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%q:\n got %s\nwant %s", raw, got.object, want.object)
		}
	})
}

// ambiguous reports JSON that a map decoder reads differently from a
// scanner for reasons neither gets wrong: duplicate keys, top-level keys
// matched case-insensitively by encoding/json's struct decoding, and null.
func ambiguous(raw []byte) bool {
	if string(bytes.TrimSpace(raw)) == "null" {
		return true // an event of null: the map decoder sees no name, the scanner no object
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		keys   map[string]bool
		object bool
		expect bool // next token in an object is a key
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].expect {
			top := &stack[len(stack)-1]
			if k, ok := tok.(string); ok {
				if top.keys[k] {
					return true
				}
				top.keys[k] = true
				if len(stack) == 1 && k != "event" && k != "properties" && (strings.EqualFold(k, "event") || strings.EqualFold(k, "properties")) {
					return true
				}
				top.expect = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]bool{}, object: true, expect: true})
			continue
		case json.Delim('['):
			stack = append(stack, frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 {
			return false
		}
		if top := &stack[len(stack)-1]; top.object {
			top.expect = true
		}
	}
}
