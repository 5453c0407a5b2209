package sdktest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// entityState is one profile or group as the analysts' view shows it:
// property → value_json.
type entityState map[string]string

func (e entityState) String() string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + e[k]
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// canonicalJSON re-encodes a JSON text so that equal values compare equal
// as strings (object keys sorted, numbers as written).
func canonicalJSON(t *testing.T, s string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("value %q is not JSON: %v", s, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// states reads the profiles (table "profiles", id distinct_id) or groups
// (table "groups", id group_id of groupKey) of the project from the
// analysts' views, by id.
func (s *stack) states(t *testing.T, view, groupKey string) map[string]entityState {
	t.Helper()
	q := fmt.Sprintf("SELECT distinct_id, property, value_json FROM %s.profiles WHERE project = '%s'", s.cfg.Sink.Database, project)
	if view == "groups" {
		q = fmt.Sprintf("SELECT group_id, property, value_json FROM %s.groups WHERE project = '%s' AND group_key = '%s'", s.cfg.Sink.Database, project, groupKey)
	}
	rows, err := s.conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	out := map[string]entityState{}
	for rows.Next() {
		var id, prop, val string
		if err := rows.Scan(&id, &prop, &val); err != nil {
			t.Fatal(err)
		}
		if out[id] == nil {
			out[id] = entityState{}
		}
		out[id][prop] = canonicalJSON(t, val)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitStates polls the view until it equals want (ids and values, with the
// $last_seen that Veil maintains for people checked to be present and then
// left out), or fails after 20 s showing the difference. want is keyed by
// the stored id; its values are JSON texts.
func (s *stack) waitStates(t *testing.T, view, groupKey string, want map[string]entityState) {
	t.Helper()
	for _, st := range want {
		for k, v := range st {
			st[k] = canonicalJSON(t, v)
		}
	}
	var got map[string]entityState
	var diff string
	deadline := time.Now().Add(20 * time.Second)
	for {
		got = s.states(t, view, groupKey)
		diff = stateDiff(got, want, view == "profiles")
		if diff == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if diff != "" {
		t.Errorf("%s: %s", view, diff)
	}
}

// stateDiff describes how got differs from want, or returns "".
func stateDiff(got, want map[string]entityState, lastSeen bool) string {
	var out []string
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			out = append(out, fmt.Sprintf("%s missing, want %s", label(id), w))
			continue
		}
		if lastSeen {
			if _, ok := g["$last_seen"]; !ok {
				out = append(out, fmt.Sprintf("%s has no $last_seen", label(id)))
			}
			g = copyWithout(g, "$last_seen")
		}
		if g.String() != w.String() {
			out = append(out, fmt.Sprintf("%s:\n    got  %s\n    want %s", label(id), g, w))
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			out = append(out, fmt.Sprintf("unexpected %s %s", label(id), g))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n  ")
}

// label names a stored id in messages by its first characters: stored ids
// are pseudonyms, so this reveals nothing.
func label(id string) string {
	if len(id) > 12 {
		id = id[:12] + "…"
	}
	return "id " + id
}

func copyWithout(e entityState, key string) entityState {
	out := entityState{}
	for k, v := range e {
		if k != key {
			out[k] = v
		}
	}
	return out
}

// checkNodeProfiles checks the profiles node/run.js built, found by the
// stored distinct_id of each user's events.
func checkNodeProfiles(t *testing.T, s *stack) {
	rows := s.events(t)
	idOf := func(event string) string { t.Helper(); return storedID(t, rows, event) }
	user1, user2, user3, user4 := idOf("node single"), idOf("node imported"), idOf("node import batch"), idOf("node verbose")
	_ = user2 // deleted: it must not be in the view, which the exact comparison checks
	s.waitStates(t, "profiles", "", map[string]entityState{
		user1: {
			"plan":          `"pro"`,
			"first_seen":    `"2024-01-01"`,
			"logins":        `3`,
			"pages":         `["home","pricing"]`,
			"tags":          `["b"]`,
			"$transactions": `[{"$amount":29.99,"$time":"2024-03-01T10:00:00.000Z"}]`,
		},
		user3: {"$transactions": `[]`},
		user4: {"plan": `"verbose"`},
	})
}

// checkNodeGroups checks the groups node/run.js built: company "acme",
// company "verbose", and company "gone", deleted.
func checkNodeGroups(t *testing.T, s *stack) {
	s.waitGroups(t, "company", []entityState{
		{"industry": `"widgets"`, "founded": `1999`, "products": `["anvil"]`},
		{"industry": `"json"`},
	})
}

// waitGroups polls the groups of one group key until their states are
// exactly want, in any order, or fails after 20 s. Group ids are stored as
// pseudonyms, so groups are told apart by their properties.
func (s *stack) waitGroups(t *testing.T, groupKey string, want []entityState) {
	t.Helper()
	for _, w := range want {
		for k, v := range w {
			w[k] = canonicalJSON(t, v)
		}
	}
	wantS := fmt.Sprint(sortedStates(want))
	var gotS string
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got []entityState
		for _, st := range s.states(t, "groups", groupKey) {
			got = append(got, st)
		}
		gotS = fmt.Sprint(sortedStates(got))
		if gotS == wantS || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if gotS != wantS {
		t.Errorf("groups of key %s:\n  got  %s\n  want %s", groupKey, gotS, wantS)
	}
}

func sortedStates(l []entityState) []string {
	out := make([]string, len(l))
	for i, e := range l {
		out[i] = e.String()
	}
	sort.Strings(out)
	return out
}

// checkBrowserProfile checks the profile mixpanel-browser built for the
// identified user, found by the stored distinct_id of the user's $identify
// event: what people.set sent, and what the library adds to a profile
// itself (browser and OS in $set, the initial referrer in $set_once; a page
// opened directly has "$direct"). The browser's name, version and OS must
// agree with the typed columns of the user's events.
func checkBrowserProfile(t *testing.T, s *stack) {
	rows := s.events(t)
	r := byEvent(rows, "$identify")
	if len(r) != 1 {
		t.Fatalf("%d $identify events, want 1", len(r))
	}
	ev := byEvent(rows, "browser emoji")[0]
	if ev.Browser == "" || ev.BrowserVersion == "" || ev.OS == "" {
		t.Fatalf("browser emoji: browser %q version %q os %q, want all three", ev.Browser, ev.BrowserVersion, ev.OS)
	}
	str := func(v string) string { b, _ := json.Marshal(v); return string(b) }
	s.waitStates(t, "profiles", "", map[string]entityState{
		r[0].DistinctID: {
			"plan":                      `"pro"`,
			"seats":                     `2`,
			"$browser":                  str(ev.Browser),
			"$browser_version":          ev.BrowserVersion,
			"$os":                       str(ev.OS),
			"$initial_referrer":         `"$direct"`,
			"$initial_referring_domain": `"$direct"`,
		},
	})
}
