package sdktest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mixpanel "github.com/mixpanel/mixpanel-go"
)

// goSDKModule is the official Go library, pinned in go.mod at goSDKVersion:
// the newest version the Go module proxy serves (its v2 line, module path
// github.com/mixpanel/mixpanel-go/v2, is refused by the proxy here).
const (
	goSDKModule  = "github.com/mixpanel/mixpanel-go"
	goSDKVersion = "v1.2.1"
	// goLibVersion is what goSDKVersion puts in $lib_version: the library's
	// own version constant was not bumped for v1.2.1.
	goLibVersion = "v1.2.0"
)

// requireGoSDK checks that go.mod pins the version the test is written
// for: the test knows what that version sends, and a new one is reviewed,
// not picked up silently. (A test binary carries no module versions in its
// build information, so go.mod, which the build used, is read instead.)
func requireGoSDK(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == goSDKModule {
			if f[1] != goSDKVersion {
				t.Fatalf("go.mod requires %s %s but the test is written for %s: check what the new version sends, then update goSDKVersion", goSDKModule, f[1], goSDKVersion)
			}
			return
		}
	}
	t.Fatalf("go.mod does not require %s", goSDKModule)
}

// goOps are the calls TestGoSDK makes, in order.
var goOps = []string{
	"Track", "Track with time and insert_id", "Track a batch", "Track identical events", "Alias",
	"Import", "Import strict, gzip", "Import strict with invalid records",
	"Import with a service account", "Import with a wrong secret", "Import with a wrong service account secret",
	"PeopleSet three profiles", "PeopleSetOnce", "PeopleIncrement", "PeopleIncrement again",
	"PeopleAppendListProperty", "PeopleAppendListProperty again", "PeopleUnionProperty",
	"PeopleRemoveListProperty", "PeopleDeleteProperty", "PeopleDeleteProfile",
	"GroupSet", "GroupSetOnce", "GroupUnionListProperty", "GroupRemoveListProperty",
	"GroupDeleteProperty", "GroupSet gone", "GroupDelete",
}

// goRefused are the calls Veil must refuse, as Mixpanel does, and the
// start of the error the library returns; the errors' fields are checked
// in full below.
var goRefused = map[string]string{
	"Import strict with invalid records":         "",
	"Import with a wrong secret":                 "Invalid credentials",
	"Import with a wrong service account secret": "Invalid credentials",
}

// The rows TestGoSDK's calls must leave, per event name.
var (
	goTracked  = map[string]int{"go single": 1, "go timed": 1, "go batch": 40, "go repeated": 3, "$create_alias": 1}
	goImported = map[string]int{"go import": 5, "go import strict": 5, "go import partial": 2, "go service account import": 2}
)

// TestGoSDK drives the official Go library (Track, Import strict and not,
// with an API secret and a service account, every People and Group call)
// against a collector, checks every answer the library decoded (Import's
// NumRecordsImported, its failed records), and reads back exactly the rows,
// profiles and groups those calls describe.
func TestGoSDK(t *testing.T) {
	requireGoSDK(t)
	s := startStack(t, stackOptions{})
	now := time.Now()
	nowMs := now.UnixMilli()
	day := 24 * time.Hour

	run := &sdkRun{}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: &recordingTransport{base: transport, run: run}, Timeout: 15 * time.Second}
	numericID, err := strconv.Atoi(projectID)
	if err != nil {
		t.Fatal(err)
	}
	// ProxyApiLocation is the library's api_host.
	newClient := func(auth mixpanel.Options) *mixpanel.ApiClient {
		return mixpanel.NewApiClient(token, auth, mixpanel.ProxyApiLocation("http://"+s.addr), mixpanel.HttpClient(client))
	}
	mp := newClient(mixpanel.ApiSecret(secret))
	mpAccount := newClient(mixpanel.ServiceAccount(numericID, saUser, saSecret))
	mpWrongSecret := newClient(mixpanel.ApiSecret("not-the-secret"))
	mpWrongAccount := newClient(mixpanel.ServiceAccount(numericID, saUser, "not-the-account-secret"))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	call := func(op string, fn func() error) { run.result(op, fn()) }
	// answers collects what the library decoded from each import's answer,
	// checked below against what Mixpanel answers.
	type importAnswer struct {
		ok  *mixpanel.ImportSuccess
		err error
	}
	answers := map[string]importAnswer{}
	importCall := func(op string, c *mixpanel.ApiClient, events []*mixpanel.Event, opts mixpanel.ImportOptions) {
		res, err := c.Import(ctx, events, opts)
		answers[op] = importAnswer{res, err}
		run.result(op, err)
	}
	event := func(name, user string, props map[string]any, at time.Time, insertID string) *mixpanel.Event {
		e := mp.NewEvent(name, user, props)
		if !at.IsZero() {
			e.AddTime(at)
		}
		if insertID != "" {
			e.AddInsertID(insertID)
		}
		return e
	}

	// Events.
	call("Track", func() error {
		return mp.Track(ctx, []*mixpanel.Event{event("go single", "go-user-1", map[string]any{"plan": "pro", "label": "party 🎉"}, time.Time{}, "")})
	})
	call("Track with time and insert_id", func() error {
		return mp.Track(ctx, []*mixpanel.Event{event("go timed", "go-user-1", nil, now.Add(-time.Minute), "go-timed-1")})
	})
	var batch []*mixpanel.Event
	for i := 0; i < 40; i++ {
		batch = append(batch, event("go batch", fmt.Sprintf("go-user-%d", i%3+1), map[string]any{"i": i},
			time.UnixMilli(nowMs-int64(i)*1000), fmt.Sprintf("go-batch-%d", i)))
	}
	call("Track a batch", func() error { return mp.Track(ctx, batch) })
	// Three clicks of one button in one request, with neither time nor
	// $insert_id, as the library sends events by default: three events.
	var repeated []*mixpanel.Event
	for i := 0; i < 3; i++ {
		repeated = append(repeated, event("go repeated", "go-user-1", map[string]any{"button": "buy"}, time.Time{}, ""))
	}
	call("Track identical events", func() error { return mp.Track(ctx, repeated) })
	call("Alias", func() error { return mp.Alias(ctx, "go-alias-1", "go-user-1") })

	// Imports.
	var imports, strictImports []*mixpanel.Event
	for i := 0; i < 5; i++ {
		imports = append(imports, event("go import", "go-user-2", nil,
			time.UnixMilli(nowMs-int64(10*day/time.Millisecond)+int64(i)*1000), fmt.Sprintf("go-import-%d", i)))
		strictImports = append(strictImports, event("go import strict", "go-user-3", nil,
			time.UnixMilli(nowMs-int64(30*day/time.Millisecond)+int64(i)*1000), fmt.Sprintf("go-import-strict-%d", i)))
	}
	importCall("Import", mp, imports, mixpanel.ImportOptions{Strict: false, Compression: mixpanel.None})
	importCall("Import strict, gzip", mp, strictImports, mixpanel.ImportOptionsRecommend)
	// Records 1 (no time) and 3 (no distinct_id) are invalid; 0 and 2 are
	// imported all the same.
	noID, err := mp.NewEventFromJson(map[string]any{"event": "go import partial", "properties": map[string]any{
		"token": token, "time": nowMs - int64(2*day/time.Millisecond), "$insert_id": "go-partial-3",
	}})
	if err != nil {
		t.Fatal(err)
	}
	partial := []*mixpanel.Event{
		event("go import partial", "go-user-3", nil, now.Add(-2*day), "go-partial-0"),
		event("go import partial", "go-user-3", nil, time.Time{}, "go-partial-1"),
		event("go import partial", "go-user-3", nil, now.Add(-2*day).Add(time.Second), "go-partial-2"),
		noID,
	}
	importCall("Import strict with invalid records", mp, partial, mixpanel.ImportOptionsRecommend)
	importCall("Import with a service account", mpAccount, []*mixpanel.Event{
		event("go service account import", "go-user-4", nil, now.Add(-3*day), "go-sa-0"),
		event("go service account import", "go-user-4", nil, now.Add(-3*day).Add(time.Second), "go-sa-1"),
	}, mixpanel.ImportOptionsRecommend)
	wrong := []*mixpanel.Event{event("go unauthorised import", "go-user-5", nil, now.Add(-3*day), "go-wrong-0")}
	importCall("Import with a wrong secret", mpWrongSecret, wrong, mixpanel.ImportOptionsRecommend)
	importCall("Import with a wrong service account secret", mpWrongAccount, wrong, mixpanel.ImportOptionsRecommend)

	// People: go-user-1 ends as {plan: "pro", first_seen: "2024-01-01",
	// logins: 3, pages: ["home", "pricing"], tags: ["b"]}; go-user-4 as
	// {plan: "team"}; go-user-2 is deleted.
	call("PeopleSet three profiles", func() error {
		return mp.PeopleSet(ctx, []*mixpanel.PeopleProperties{
			mixpanel.NewPeopleProperties("go-user-1", map[string]any{"plan": "pro", "seats": 3, "tags": []string{"a"}}),
			mixpanel.NewPeopleProperties("go-user-4", map[string]any{"plan": "team"}),
			mixpanel.NewPeopleProperties("go-user-2", map[string]any{"plan": "gone"}),
		})
	})
	call("PeopleSetOnce", func() error {
		return mp.PeopleSetOnce(ctx, []*mixpanel.PeopleProperties{
			mixpanel.NewPeopleProperties("go-user-1", map[string]any{"first_seen": "2024-01-01", "plan": "free"}),
		})
	})
	call("PeopleIncrement", func() error { return mp.PeopleIncrement(ctx, "go-user-1", map[string]int{"logins": 2}) })
	call("PeopleIncrement again", func() error { return mp.PeopleIncrement(ctx, "go-user-1", map[string]int{"logins": 1}) })
	call("PeopleAppendListProperty", func() error {
		return mp.PeopleAppendListProperty(ctx, "go-user-1", map[string]any{"pages": "home"})
	})
	call("PeopleAppendListProperty again", func() error {
		return mp.PeopleAppendListProperty(ctx, "go-user-1", map[string]any{"pages": "pricing"})
	})
	call("PeopleUnionProperty", func() error {
		return mp.PeopleUnionProperty(ctx, "go-user-1", map[string]any{"tags": []string{"b", "a"}})
	})
	call("PeopleRemoveListProperty", func() error {
		return mp.PeopleRemoveListProperty(ctx, "go-user-1", map[string]any{"tags": "a"})
	})
	call("PeopleDeleteProperty", func() error { return mp.PeopleDeleteProperty(ctx, "go-user-1", []string{"seats"}) })
	call("PeopleDeleteProfile", func() error { return mp.PeopleDeleteProfile(ctx, "go-user-2", false) })

	// Groups: company/go-acme ends as {industry: "widgets", founded: 1999,
	// products: ["anvil"]}; company/go-gone is deleted.
	call("GroupSet", func() error {
		return mp.GroupSet(ctx, "company", "go-acme", map[string]any{"industry": "widgets", "size": 10})
	})
	call("GroupSetOnce", func() error {
		return mp.GroupSetOnce(ctx, "company", "go-acme", map[string]any{"founded": 1999, "industry": "ignored"})
	})
	call("GroupUnionListProperty", func() error {
		return mp.GroupUnionListProperty(ctx, "company", "go-acme", map[string]any{"products": []string{"anvil", "rocket"}})
	})
	call("GroupRemoveListProperty", func() error {
		return mp.GroupRemoveListProperty(ctx, "company", "go-acme", map[string]any{"products": "rocket"})
	})
	call("GroupDeleteProperty", func() error { return mp.GroupDeleteProperty(ctx, "company", "go-acme", []string{"size"}) })
	call("GroupSet gone", func() error {
		return mp.GroupSet(ctx, "company", "go-gone", map[string]any{"industry": "none"})
	})
	call("GroupDelete", func() error { return mp.GroupDelete(ctx, "company", "go-gone") })

	run.logRequests(t, "the Go library "+goSDKVersion)
	t.Run("calls", func(t *testing.T) {
		run.checkCalls(t, goOps, goRefused)
	})

	t.Run("import answers", func(t *testing.T) {
		checkGoImportAnswers(t, answers["Import"].ok, answers["Import"].err, 5)
		checkGoImportAnswers(t, answers["Import strict, gzip"].ok, answers["Import strict, gzip"].err, 5)
		checkGoImportAnswers(t, answers["Import with a service account"].ok, answers["Import with a service account"].err, 2)
		checkGoFailedRecords(t, answers["Import strict with invalid records"].err, 2, []mixpanel.ImportFailedRecords{
			{Index: 1, InsertID: "go-partial-1", Field: "properties.time"},
			{Index: 3, InsertID: "go-partial-3", Field: "properties.distinct_id"},
		})
		for _, op := range []string{"Import with a wrong secret", "Import with a wrong service account secret"} {
			var g mixpanel.ImportGenericError
			if err := answers[op].err; !errors.As(err, &g) {
				t.Errorf("%s: the library reported %v, want its ImportGenericError", op, err)
				continue
			}
			if g.Code != 401 || g.ApiError != "Invalid credentials" || g.Status != "Unauthorized" {
				t.Errorf("%s: the library read code %d, error %q, status %v; want 401, \"Invalid credentials\", \"Unauthorized\"", op, g.Code, g.ApiError, g.Status)
			}
		}
	})

	t.Run("requests", func(t *testing.T) {
		// One request a call; the invalid records' import is a 400, the
		// wrong credentials 401s.
		if len(run.requests) != len(goOps) {
			t.Errorf("%d requests, want %d", len(run.requests), len(goOps))
		}
		want := map[int]int{200: len(goOps) - 3, 400: 1, 401: 2}
		if got := run.statuses(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("requests by status: got %v, want %v", got, want)
		}
	})

	t.Run("collector metrics", func(t *testing.T) {
		s.checkCounters(t, endpoints(run.requests, func(r driverLine) string { return r.Path }),
			map[string]float64{"unauthorized": 2, "malformed": 1, "missing_id": 1})
	})

	t.Run("events", func(t *testing.T) {
		checkGoEvents(t, s, now)
	})
	t.Run("profiles", func(t *testing.T) {
		rows := s.events(t)
		user1, user4 := storedID(t, rows, "go single"), storedID(t, rows, "go service account import")
		s.waitStates(t, "profiles", "", map[string]entityState{
			user1: {
				"plan":       `"pro"`,
				"first_seen": `"2024-01-01"`,
				"logins":     `3`,
				"pages":      `["home","pricing"]`,
				"tags":       `["b"]`,
			},
			user4: {"plan": `"team"`},
		})
	})
	t.Run("groups", func(t *testing.T) {
		s.waitGroups(t, "company", []entityState{
			{"industry": `"widgets"`, "founded": `1999`, "products": `["anvil"]`},
		})
	})
	if !t.Failed() {
		// Refused: two records by index, two wrong credentials.
		s.logSummary(t, sdkSummary{sdk: "go sdk " + goSDKVersion, calls: len(goOps), requests: len(run.requests),
			tracked: goTracked, imported: goImported, refused: 4, people: 12, groups: 7})
	}
}

// checkGoImportAnswers checks what the library decoded from a successful
// import: Mixpanel's {"code":200,"num_records_imported":N,"status":"OK"}.
func checkGoImportAnswers(t *testing.T, res *mixpanel.ImportSuccess, err error, n int) {
	t.Helper()
	if err != nil {
		t.Errorf("import of %d: %v", n, err)
		return
	}
	if res.Code != 200 || res.NumRecordsImported != n || res.Status != "OK" {
		t.Errorf("import of %d: the library read code %d, num_records_imported %d, status %v; want 200, %d, \"OK\"", n, res.Code, res.NumRecordsImported, res.Status, n)
	}
}

// checkGoFailedRecords checks what the library decoded from a 400: the
// number imported, and each failed record's index, insert_id and field.
func checkGoFailedRecords(t *testing.T, err error, imported int, want []mixpanel.ImportFailedRecords) {
	t.Helper()
	var v mixpanel.ImportFailedValidationError
	if !errors.As(err, &v) {
		t.Errorf("import with invalid records: the library reported %v, want its ImportFailedValidationError", err)
		return
	}
	if v.Code != 400 || v.Status != "Bad Request" || v.NumRecordsImported != imported || v.ApiError == "" {
		t.Errorf("import with invalid records: the library read code %d, status %v, num_records_imported %d, error %q; want 400, \"Bad Request\", %d and a message",
			v.Code, v.Status, v.NumRecordsImported, v.ApiError, imported)
	}
	var got, wantS []string
	for _, r := range v.FailedImportRecords {
		got = append(got, fmt.Sprintf("index %d insert_id %q field %q", r.Index, r.InsertID, r.Field))
		if r.Message == "" {
			t.Errorf("failed record %d has no message", r.Index)
		}
	}
	for _, r := range want {
		wantS = append(wantS, fmt.Sprintf("index %d insert_id %q field %q", r.Index, r.InsertID, r.Field))
	}
	if strings.Join(got, "; ") != strings.Join(wantS, "; ") {
		t.Errorf("failed records as the library read them:\n  got  %s\n  want %s", strings.Join(got, "; "), strings.Join(wantS, "; "))
	}
}

func checkGoEvents(t *testing.T, s *stack, now time.Time) {
	nowMs := now.UnixMilli()
	dayMs := int64(24 * 3600 * 1000)
	rows := s.waitRowsPerEvent(t, merge(goTracked, goImported))
	for _, r := range rows {
		// The library names itself in every event NewEvent makes; Alias
		// sends a bare event.
		wantLib, wantVersion := "go", goLibVersion
		if r.Event == "$create_alias" {
			wantLib, wantVersion = "", ""
		}
		if r.Lib != wantLib || r.LibVersion != wantVersion {
			t.Errorf("%s: lib %q %q, want %q %q", r.Event, r.Lib, r.LibVersion, wantLib, wantVersion)
		}
		if _, ok := r.Properties["token"]; ok {
			t.Errorf("%s: the project token is stored in properties", r.Event)
		}
	}
	single := byEvent(rows, "go single")[0]
	if single.Properties["label"] != "party 🎉" || single.Properties["plan"] != "pro" {
		t.Errorf("go single: properties %s, want label %q and plan %q", single.RawProps, "party 🎉", "pro")
	}
	for _, r := range append(byEvent(rows, "go repeated"), single) {
		if d := r.Time.Sub(now); d < -time.Minute || d > time.Minute {
			t.Errorf("%s: time %s, want the time it was received (about %s)", r.Event, r.Time, now)
		}
		if r.DistinctID != single.DistinctID {
			t.Errorf("%s: distinct_id differs from the other events of go-user-1", r.Event)
		}
	}
	if alias := byEvent(rows, "$create_alias")[0]; alias.DistinctID != single.DistinctID {
		t.Errorf("$create_alias: distinct_id differs from the other events of go-user-1")
	}
	timed := byEvent(rows, "go timed")[0]
	checkTime(t, timed, nowMs-60_000)
	if timed.InsertID != "go-timed-1" || timed.DistinctID != single.DistinctID {
		t.Errorf("go timed: insert_id %q (want go-timed-1), same user as go single: %v", timed.InsertID, timed.DistinctID == single.DistinctID)
	}
	users := map[int]string{}
	for _, r := range byEvent(rows, "go batch") {
		i := int(r.Properties["i"].(float64))
		if r.InsertID != fmt.Sprintf("go-batch-%d", i) {
			t.Errorf("go batch i=%d: insert_id %q", i, r.InsertID)
		}
		checkTime(t, r, nowMs-int64(i)*1000)
		if prev, ok := users[i%3]; ok && prev != r.DistinctID {
			t.Errorf("go batch i=%d: events of one user have different distinct_ids", i)
		}
		users[i%3] = r.DistinctID
	}
	if len(users) != 3 || users[0] != single.DistinctID || users[1] == users[2] || users[0] == users[1] {
		t.Errorf("go batch: want 3 users with different distinct_ids, go-user-1's as in go single")
	}
	for i, r := range byEvent(rows, "go import") {
		checkTime(t, r, nowMs-10*dayMs+int64(i)*1000)
	}
	for i, r := range byEvent(rows, "go import strict") {
		checkTime(t, r, nowMs-30*dayMs+int64(i)*1000)
	}
	for i, r := range byEvent(rows, "go import partial") {
		if want := fmt.Sprintf("go-partial-%d", 2*i); r.InsertID != want {
			t.Errorf("go import partial: insert_id %q, want %q", r.InsertID, want)
		}
		checkTime(t, r, nowMs-2*dayMs+int64(i)*1000)
	}
	for i, r := range byEvent(rows, "go service account import") {
		checkTime(t, r, nowMs-3*dayMs+int64(i)*1000)
	}
}

// storedID returns the stored (pseudonymised) distinct_id of the user of
// an event, by which that user's profile is found.
func storedID(t *testing.T, rows []eventRow, event string) string {
	t.Helper()
	r := byEvent(rows, event)
	if len(r) == 0 {
		t.Fatalf("no %q event to find its user's stored distinct_id by", event)
	}
	return r[0].DistinctID
}
