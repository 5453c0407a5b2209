package ingest

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// TestPlaceholderIDs: the ids Mixpanel refuses ("null", "undefined", "0",
// the zero UUID, …) are refused as a distinct_id and as a $insert_id on
// every endpoint, in strict and non-strict answers alike, with the reason
// named; the empty distinct_id (an event of no user) and ids that merely
// contain such a word are not.
func TestPlaceholderIDs(t *testing.T) {
	placeholders := []string{
		"00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null", "n/a", "na",
		"undefined", "unknown", "<nil>", "0", "-1", "true", "false", "[]", "{}",
		"None", "NULL", "Undefined", // the same mistakes in other languages' spelling
	}
	track := func(props string) string {
		return `{"event":"e","properties":{"token":"tok-shop","time":1795348800` + props + `}}`
	}
	imp := func(props string) string {
		return `{"event":"e","properties":{"time":1795348800` + props + `}}`
	}
	type tcase struct {
		name   string
		path   string // with its parameters
		record string
		body   string // the whole answer; "" for "0"/verbose checks below
		reason string // "" when accepted
	}
	var tests []tcase
	for _, id := range placeholders {
		q, _ := json.Marshal(id)
		tests = append(tests,
			tcase{"track distinct_id " + id, "/track?verbose=1", track(`,"distinct_id":` + string(q)), "", reasonInvalidID},
			tcase{"import strict distinct_id " + id, "/import?strict=1", imp(`,"distinct_id":` + string(q) + `,"$insert_id":"i-1"`),
				`{"code":400,"error":"some data points in the request failed validation","failed_records":[{"index":0,"insert_id":"i-1","field":"properties.distinct_id","message":"distinct_id is a placeholder value Mixpanel refuses (such as null, undefined or 0); use \"\" for events of no user"}],"num_records_imported":0,"status":"Bad Request"}`, reasonInvalidID},
			tcase{"import not strict distinct_id " + id, "/import", imp(`,"distinct_id":` + string(q) + `,"$insert_id":"i-1"`),
				`{"code":200,"num_records_imported":0,"status":"OK"}`, reasonInvalidID},
			tcase{"engage $distinct_id " + id, "/engage?verbose=1", `{"$token":"tok-shop","$distinct_id":` + string(q) + `,"$set":{"a":1}}`, "", reasonInvalidID},
		)
		if strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == "" {
			// Only the ids of $insert_id's syntax: the others are refused
			// by it already.
			tests = append(tests,
				tcase{"track $insert_id " + id, "/track?verbose=1", track(`,"distinct_id":"u","$insert_id":` + string(q)), "", reasonInvalidInsertID},
				tcase{"import strict $insert_id " + id, "/import?strict=1", imp(`,"distinct_id":"u","$insert_id":` + string(q)),
					`{"code":400,"error":"some data points in the request failed validation","failed_records":[{"index":0,"insert_id":"","field":"properties.$insert_id","message":"$insert_id is a placeholder value Mixpanel refuses (such as null, undefined or 0)"}],"num_records_imported":0,"status":"Bad Request"}`, reasonInvalidInsertID},
			)
		}
	}
	tests = append(tests,
		tcase{"numeric distinct_id 0", "/track?verbose=1", track(`,"distinct_id":0`), "", reasonInvalidID},
		tcase{"numeric distinct_id -1", "/track?verbose=1", track(`,"distinct_id":-1`), "", reasonInvalidID},
		tcase{"empty distinct_id: an event of no user", "/import?strict=1", imp(`,"distinct_id":"","$insert_id":"i-1"`), `{"code":200,"num_records_imported":1,"status":"OK"}`, ""},
		tcase{"null distinct_id on /track", "/track?verbose=1", track(`,"distinct_id":null`), "", ""},
		tcase{"an id holding a placeholder word", "/track?verbose=1", track(`,"distinct_id":"null-island","$insert_id":"undefined-1"`), "", ""},
		tcase{"distinct_id 00", "/track?verbose=1", track(`,"distinct_id":"00"`), "", ""},
		tcase{"group id null: not an event's id", "/groups?verbose=1", `{"$token":"tok-shop","$group_key":"company","$group_id":"null","$set":{"a":1}}`, "", ""},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, nil)
			r := post(tt.path, "application/json", []byte("["+tt.record+"]"))
			if strings.HasPrefix(tt.path, "/import") {
				r.SetBasicAuth("sec-shop", "")
			}
			resp := do(t, c, r)
			switch {
			case tt.body != "":
				if resp.body != tt.body {
					t.Fatalf("answer\n%s\nwant\n%s", resp.body, tt.body)
				}
			case tt.reason == "":
				if resp.body != `{"status":1,"error":null}` {
					t.Fatalf("answer %s, want it accepted", resp.body)
				}
			default:
				var v struct {
					Status int     `json:"status"`
					Error  *string `json:"error"`
				}
				if err := json.Unmarshal([]byte(resp.body), &v); err != nil || v.Status != 0 || v.Error == nil ||
					!strings.Contains(*v.Error, "placeholder value Mixpanel refuses") {
					t.Fatalf("answer %s, want status 0 naming the placeholder", resp.body)
				}
			}
			produced := len(envelopes(t, p))
			if tt.reason == "" {
				if produced == 0 {
					t.Fatal("nothing produced")
				}
				return
			}
			if produced != 0 {
				t.Fatalf("%d messages produced, want none", produced)
			}
			if n := counter(t, reg, "veil_collector_events_rejected_total", tt.reason); n != 1 {
				t.Fatalf("%s counted %v, want 1", tt.reason, n)
			}
		})
	}
}

// TestNamesAndNumbers: what leaves Veil is portable JSON and text. A
// number no float64 holds (1e999) and a control character in an event or
// property name (a NUL, an escape) are refused with their reason, at any
// depth; big integers, tiny numbers and control characters inside
// property values are valid JSON and kept.
func TestNamesAndNumbers(t *testing.T) {
	ev := func(name, props string) string {
		return `{"event":` + name + `,"properties":{"token":"tok-shop","distinct_id":"u"` + props + `}}`
	}
	tests := []struct {
		name, record string
		err          string // the verbose error; "" for accepted
		reason       string
	}{
		{"NUL in the event name", ev(`"Sign\u0000up"`, ``), "event 0: event: event name holds a control character", reasonInvalidName},
		{"escape in the event name", ev(`"\u001b[31mred"`, ``), "event 0: event: event name holds a control character", reasonInvalidName},
		{"DEL in the event name", ev("\"a\x7fb\"", ``), "event 0: event: event name holds a control character", reasonInvalidName},
		{"C1 control in the event name", ev(`"a\u0085b"`, ``), "event 0: event: event name holds a control character", reasonInvalidName},
		{"NUL in a property name", ev(`"e"`, `,"pl\u0000an":"pro"`), "event 0: properties: a property name holds a control character", reasonInvalidName},
		{"newline in a nested key", ev(`"e"`, `,"cart":{"a\nb":1}`), "event 0: properties.cart: a key holds a control character", reasonInvalidName},
		{"1e999", ev(`"e"`, `,"n":1e999`), "event 0: properties.n: a number is too large for a float64", reasonInvalidNumber},
		{"-1E400 in a list", ev(`"e"`, `,"l":[1,-1E400]`), "event 0: properties.l: a number is too large for a float64", reasonInvalidNumber},
		{"a 400-digit integer in an object", ev(`"e"`, `,"o":{"n":1`+strings.Repeat("0", 400)+`}`), "event 0: properties.o: a number is too large for a float64", reasonInvalidNumber},
		{"largest float64", ev(`"e"`, `,"n":1.7976931348623157e308`), "", ""},
		{"big integer kept exactly", ev(`"e"`, `,"n":12345678901234567890123`), "", ""},
		{"tiny number", ev(`"e"`, `,"n":1e-400`), "", ""},
		{"control characters in a value", ev(`"e"`, `,"note":"a\u0000b\tc"`), "", ""},
		{"accents and emoji in names", ev(`"Café ☕"`, `,"größe 😀":1`), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, nil)
			resp := do(t, c, form("/track?verbose=1", "data="+url.QueryEscape(b64(tt.record))))
			if tt.err == "" {
				if resp.body != `{"status":1,"error":null}` || len(envelopes(t, p)) != 1 {
					t.Fatalf("answer %s, want it accepted", resp.body)
				}
				return
			}
			want := verboseError(tt.err)
			if resp.body != want {
				t.Fatalf("answer %s, want %s", resp.body, want)
			}
			if len(envelopes(t, p)) != 0 {
				t.Fatal("produced")
			}
			if n := counter(t, reg, "veil_collector_events_rejected_total", tt.reason); n != 1 {
				t.Fatalf("%s counted %v, want 1", tt.reason, n)
			}
		})
	}

	updates := []struct{ name, update, err string }{
		{"NUL in a $set name", `{"$set":{"a\u0000":1}}`, "event 0: $set: a property name holds a control character"},
		{"1e999 in $set", `{"$set":{"n":1e999}}`, "event 0: $set.n: a number is too large for a float64"},
		{"1e999 in $add", `{"$add":{"n":1e999}}`, "event 0: $add.n: $add values must be finite numbers"},
		{"NUL in an $unset name", `{"$unset":["a\u0000"]}`, "event 0: $unset: a property name holds a control character"},
	}
	for _, tt := range updates {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			upd := `{"$token":"tok-shop","$distinct_id":"u",` + tt.update[1:]
			resp := do(t, c, post("/engage?verbose=1", "application/json", []byte(upd)))
			want := verboseError(tt.err)
			if resp.body != want || len(envelopes(t, p)) != 0 {
				t.Fatalf("answer %s, want %s and nothing produced", resp.body, want)
			}
		})
	}
}

// verboseError is the verbose answer naming err, as Mixpanel spells it.
func verboseError(err string) string {
	b, _ := json.Marshal(verboseBody{Status: 0, Error: &err})
	return string(b)
}
