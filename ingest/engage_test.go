package ingest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/veilhq/veil/event"
)

// TestEngageOperations sends each profile operation the way the SDKs
// spell it and checks what the worker will decode.
func TestEngageOperations(t *testing.T) {
	tests := []struct {
		name   string
		update string
		op     string
		value  string // the operand, as JSON
	}{
		{"$set", `{"$token":"tok-shop","$distinct_id":"u-1","$set":{"plan":"pro","n":{"a":[1,2]}}}`, "$set", `{"n":{"a":[1,2]},"plan":"pro"}`},
		{"$set_once", `{"$token":"tok-shop","$distinct_id":"u-1","$set_once":{"first_seen":"2026-11-01T00:00:00"}}`, "$set_once", `{"first_seen":"2026-11-01T00:00:00"}`},
		{"$add", `{"$token":"tok-shop","$distinct_id":"u-1","$add":{"logins":1,"credit":-2.5}}`, "$add", `{"credit":-2.5,"logins":1}`},
		{"$append", `{"$token":"tok-shop","$distinct_id":"u-1","$append":{"pages":"home","$transactions":{"$amount":9.99}}}`, "$append", `{"$transactions":{"$amount":9.99},"pages":"home"}`},
		{"$union", `{"$token":"tok-shop","$distinct_id":"u-1","$union":{"tags":["a","b"]}}`, "$union", `{"tags":["a","b"]}`},
		{"$remove", `{"$token":"tok-shop","$distinct_id":"u-1","$remove":{"tags":"a"}}`, "$remove", `{"tags":"a"}`},
		{"$unset", `{"$token":"tok-shop","$distinct_id":"u-1","$unset":["plan","n"]}`, "$unset", `["plan","n"]`},
		{"$delete (mixpanel-browser)", `{"$token":"tok-shop","$distinct_id":"u-1","$delete":"u-1"}`, "$delete", `"u-1"`},
		{"$delete (Node library)", `{"$token":"tok-shop","$distinct_id":"u-1","$delete":""}`, "$delete", `""`},
		{"numeric distinct_id", `{"$token":"tok-shop","$distinct_id":12345678901234567890,"$set":{"a":1}}`, "$set", `{"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			resp := do(t, c, post("/engage/?verbose=1", "application/x-www-form-urlencoded", formB64(tt.update)))
			if resp.body != `{"status":1,"error":null}` {
				t.Fatalf("answer %q", resp.body)
			}
			evs := decodeAll(t, p)
			if len(evs) != 1 {
				t.Fatalf("%d events", len(evs))
			}
			ev := evs[0]
			value, _ := json.Marshal(ev.Value)
			if ev.Kind != event.KindEngage || ev.Name != tt.op || string(value) != tt.value {
				t.Fatalf("decoded %s %s %s, want %s %s", ev.Kind, ev.Name, value, tt.op, tt.value)
			}
			wantID := "u-1"
			if strings.Contains(tt.update, "12345678901234567890") {
				wantID = "12345678901234567890"
			}
			if ev.DistinctID != wantID || ev.Time.UnixMilli() != fixedNow.UnixMilli() || len(ev.InsertID) != 32 || ev.Endpoint != "/engage" {
				t.Fatalf("decoded %+v", ev)
			}
			if got := string(p.Messages()[0].Key); got != "shop\x00"+wantID {
				t.Fatalf("key %q", got)
			}
		})
	}
}

// TestEngageUpdateFields covers the update's other fields: time, modifiers,
// identity hints, and several operations in one update.
func TestEngageUpdateFields(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	upd := `{"$token":"tok-shop","$distinct_id":"u-1","$time":1795348800123,"$ignore_time":true,"$ignore_alias":"true",` +
		`"$device_id":"dev-1","$user_id":"u-1","$had_persisted_distinct_id":true,` +
		`"$unset":["old"],"$set":{"plan":"pro"},"$add":{"n":1}}`
	resp := do(t, c, post("/engage", "application/json", []byte(upd)))
	if resp.body != "1" {
		t.Fatalf("answer %q", resp.body)
	}
	evs := decodeAll(t, p)
	var ops []string
	ids := map[string]bool{}
	for _, ev := range evs {
		ops = append(ops, ev.Name)
		ids[ev.InsertID] = true
		if ev.Time.UnixMilli() != 1795348800123 || propOf(&ev.Properties, "$ignore_time") != true || propOf(&ev.Properties, "$ignore_alias") != true ||
			propOf(&ev.Properties, "$device_id") != "dev-1" || propOf(&ev.Properties, "$user_id") != "u-1" || propOf(&ev.Properties, "$had_persisted_distinct_id") != true {
			t.Fatalf("decoded %+v", ev)
		}
		if _, ok := ev.Properties.Get("$token"); ok {
			t.Fatal("the token reached the envelope")
		}
	}
	if want := []string{"$set", "$add", "$unset"}; !slices.Equal(ops, want) {
		t.Fatalf("operations %v, want %v (ProfileOps order)", ops, want)
	}
	if len(ids) != 3 {
		t.Fatalf("insert ids not distinct per operation: %v", ids)
	}

	// The same request again is another update (Mixpanel does not
	// deduplicate profile updates): new ids. A replay of the messages
	// themselves keeps theirs.
	do(t, c, post("/engage", "application/json", []byte(upd)))
	for _, ev := range decodeAll(t, p)[3:] {
		if ids[ev.InsertID] {
			t.Fatalf("the update sent again reused insert id %s", ev.InsertID)
		}
	}
}

// TestEngageRepeatedIncrements: two identical increments in one request are
// two increments, not a duplicate.
func TestEngageRepeatedIncrements(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	inc := `{"$token":"tok-shop","$distinct_id":"u-1","$add":{"n":1}}`
	do(t, c, post("/engage/", "application/x-www-form-urlencoded", formB64("["+inc+","+inc+"]")))
	evs := decodeAll(t, p)
	if len(evs) != 2 || evs[0].InsertID == evs[1].InsertID {
		t.Fatalf("events %+v", evs)
	}
}

func TestEngageIP(t *testing.T) {
	tests := []struct {
		name, ipField, query string
		ip                   string
		noGeo                bool
	}{
		{"connection address", "", "", "198.51.100.20", false},
		{"$ip overrides", `"$ip":"203.0.113.7",`, "", "203.0.113.7", false},
		{"$ip IPv6", `"$ip":"2001:db8::7",`, "", "2001:db8::7", false},
		{"$ip string 0", `"$ip":"0",`, "", "198.51.100.20", true},
		{"$ip number 0", `"$ip":0,`, "", "198.51.100.20", true},
		{"$ip unusable", `"$ip":"not an address",`, "", "198.51.100.20", true},
		{"$ip null, as if absent", `"$ip":null,`, "", "198.51.100.20", false},
		{"ip=0 in the query", "", "?ip=0", "198.51.100.20", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			upd := `{` + tt.ipField + `"$token":"tok-shop","$distinct_id":"u-1","$set":{"a":1}}`
			do(t, c, post("/engage"+tt.query, "application/x-www-form-urlencoded", formB64(upd)))
			envs := envelopes(t, p)
			if len(envs) != 1 || envs[0].IP != tt.ip || envs[0].Signals.NoGeo != tt.noGeo {
				t.Fatalf("envelopes %+v, want ip %s nogeo %v", envs, tt.ip, tt.noGeo)
			}
		})
	}
}

func TestGroups(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	batch := `[{"$token":"tok-shop","$group_key":"company","$group_id":"acme","$set":{"size":10}},` +
		`{"$token":"tok-shop","$group_key":"company","$group_id":42,"$union":{"regions":["eu"]},"$remove":{"regions":"us"}}]`
	resp := do(t, c, post("/groups/?verbose=1", "application/x-www-form-urlencoded", formB64(batch)))
	if resp.body != `{"status":1,"error":null}` {
		t.Fatalf("answer %q", resp.body)
	}
	evs := decodeAll(t, p)
	type got struct{ op, key, id string }
	var gs []got
	for _, ev := range evs {
		if ev.Kind != event.KindGroups || ev.DistinctID != "" || ev.Endpoint != "/groups" {
			t.Fatalf("decoded %+v", ev)
		}
		gs = append(gs, got{ev.Name, ev.GroupKey, ev.GroupID})
	}
	want := []got{{"$set", "company", "acme"}, {"$union", "company", "42"}, {"$remove", "company", "42"}}
	if !slices.Equal(gs, want) {
		t.Fatalf("groups %v, want %v", gs, want)
	}
	if k := string(p.Messages()[0].Key); k != "shop\x00company\x00acme" {
		t.Fatalf("key %q", k)
	}
}

func TestProfileUpdateRejects(t *testing.T) {
	tests := []struct {
		name, path, update string
		reason, msg        string
	}{
		{"unknown token", "/engage", `{"$token":"nope","$distinct_id":"u","$set":{"a":1}}`, reasonUnknownToken, "event 0: $token: unknown project token"},
		{"missing token", "/engage", `{"$distinct_id":"u","$set":{"a":1}}`, reasonUnknownToken, "event 0: $token: unknown project token"},
		{"missing distinct_id", "/engage", `{"$token":"tok-shop","$set":{"a":1}}`, reasonMissingID, "event 0: $distinct_id: $distinct_id is required"},
		{"distinct_id an object", "/engage", `{"$token":"tok-shop","$distinct_id":{},"$set":{"a":1}}`, reasonInvalidID, "event 0: $distinct_id: $distinct_id must be a string or a number"},
		{"no operation", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$sett":{"a":1}}`, reasonInvalidOperation, "event 0: update has no operation ($set, $set_once, $add, $append, $union, $remove, $unset or $delete)"},
		{"$set not an object", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$set":["a"]}`, reasonInvalidOperation, "event 0: $set: $set takes an object of property names and values"},
		{"$add a string", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$add":{"n":"1"}}`, reasonInvalidOperation, "event 0: $add.n: $add values must be numbers"},
		{"$union not a list", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$union":{"tags":"a"}}`, reasonInvalidOperation, "event 0: $union.tags: $union values must be lists"},
		{"$unset not a list", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$unset":"a"}`, reasonInvalidOperation, "event 0: $unset: $unset takes a list of property names"},
		{"$unset of numbers", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$unset":[1]}`, reasonInvalidOperation, "event 0: $unset: $unset takes a list of property names"},
		{"one bad operation rejects the update", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$set":{"a":1},"$add":{"n":true}}`, reasonInvalidOperation, "event 0: $add.n: $add values must be numbers"},
		{"$set too deep", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$set":{"a":{"b":{"c":{"d":{"e":1}}}}}}`, reasonTooDeep, "event 0: $set.a: nested more than 3 levels deep"},
		{"$time far ahead", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$time":1895348800000,"$set":{"a":1}}`, reasonTooNew, "event 0: $time: more than 1h0m0s in the future"},
		{"$time not a number", "/engage", `{"$token":"tok-shop","$distinct_id":"u","$time":"soon","$set":{"a":1}}`, reasonMalformed, "event 0: $time: time is not a number"},
		{"not an object", "/engage", `[1]`, reasonMalformed, "event 0: not a JSON object"},
		{"group without key", "/groups", `{"$token":"tok-shop","$group_id":"acme","$set":{"a":1}}`, reasonMissingID, "event 0: $group_key: $group_key must be a non-empty string"},
		{"group without id", "/groups", `{"$token":"tok-shop","$group_key":"company","$set":{"a":1}}`, reasonMissingID, "event 0: $group_id: $group_id must be a non-empty string or a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, nil)
			resp := do(t, c, post(tt.path+"?verbose=1", "application/x-www-form-urlencoded", formB64(tt.update)))
			v := parseVerbose(t, resp.body)
			if resp.status != 200 || v.Status != 0 || v.Error == nil || *v.Error != tt.msg {
				t.Fatalf("got %d %q, want error %q", resp.status, resp.body, tt.msg)
			}
			if n := p.Len(); n != 0 {
				t.Fatalf("produced %d", n)
			}
			if n := counter(t, reg, "veil_collector_events_rejected_total", tt.reason); n != 1 {
				t.Fatalf("%s counted %v, want 1", tt.reason, n)
			}
		})
	}
}

func TestProfileUpdatesAnyToken(t *testing.T) {
	c, p, _ := newTestCollector(t, func(c *Config) { c.AcceptAnyToken = true; c.DefaultProject = "dev" })
	do(t, c, post("/engage", "application/json", []byte(`{"$token":"whatever","$distinct_id":"u","$set":{"a":1}}`)))
	if envs := envelopes(t, p); len(envs) != 1 || envs[0].Project != "dev" {
		t.Fatalf("envelopes %+v", envs)
	}
}

func TestProfileUpdatesStrict(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	batch := `[{"$token":"tok-shop","$distinct_id":"u","$set":{"a":1},"$add":{"n":1}},{"$token":"tok-shop","$distinct_id":"u","$add":{"n":"x"}}]`
	resp := do(t, c, post("/engage?strict=1", "application/json", []byte(batch)))
	want := `{"code":400,"error":"some data points in the request failed validation","failed_records":[{"index":1,"insert_id":"","field":"$add.n","message":"$add values must be numbers"}],"num_records_imported":1,"status":"Bad Request"}`
	if resp.status != http.StatusBadRequest || resp.body != want {
		t.Fatalf("got %d %q", resp.status, resp.body)
	}
	if n := p.Len(); n != 2 {
		t.Fatalf("produced %d messages, want the valid update's 2 operations", n)
	}
}
