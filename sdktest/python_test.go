package sdktest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pythonVersion is the `mixpanel` package pinned in python/requirements.txt;
// every event it sends says so in $lib_version.
const pythonVersion = "5.4.1"

// pythonVenv is the virtual environment scripts/install-deps.sh installs
// python/requirements.txt into; pythonStamp, inside it, holds the SHA-256 of
// the requirements file it was installed from.
const (
	pythonVenv  = "python/.venv"
	pythonStamp = pythonVenv + "/.veil-requirements.sha256"
)

// requirePython returns the venv's python, after checking that it was
// installed from the committed requirements file, which pins the version
// the test is written for.
func requirePython(t *testing.T) string {
	t.Helper()
	req, err := os.ReadFile("python/requirements.txt")
	if err != nil {
		t.Fatalf("sdktest/python/requirements.txt: %v", err)
	}
	pinned := false
	for _, line := range strings.Split(string(req), "\n") {
		if name, version, ok := strings.Cut(strings.TrimSpace(line), "=="); ok && name == "mixpanel" {
			if version != pythonVersion {
				t.Fatalf("sdktest/python/requirements.txt pins mixpanel %q but the test is written for %s: check what the new version sends, then update pythonVersion", version, pythonVersion)
			}
			pinned = true
		}
	}
	if !pinned {
		t.Fatal("sdktest/python/requirements.txt does not pin mixpanel")
	}
	python := filepath.Join(pythonVenv, "bin", "python")
	sum := sha256.Sum256(req)
	stamp, err := os.ReadFile(pythonStamp)
	if _, statErr := os.Stat(python); statErr != nil || err != nil || strings.TrimSpace(string(stamp)) != hex.EncodeToString(sum[:]) {
		missing(t, "sdktest/python/.venv installed from python/requirements.txt",
			"scripts/install-deps.sh (it creates the venv with Debian's python3-venv and runs pip install -r)")
	}
	return python
}

// pythonOps are the calls python/run.py makes, in order.
var pythonOps = []string{
	"track", "track with time and insert_id", "BufferedConsumer: track 60, flush",
	"import_data with the API secret", "BufferedConsumer: import_data 5, flush",
	"import_data with a service account",
	"import_data with a wrong secret", "import_data with a wrong service account secret",
	"people_set", "people_set_once", "people_increment", "people_increment again", "people_append",
	"people_append again", "people_union", "people_remove", "people_unset", "people_track_charge",
	"people_track_charge user 3", "people_clear_charges", "people_set user 2", "people_delete",
	"BufferedConsumer: people_set, people_increment, flush",
	"group_set", "group_set_once", "group_union", "group_remove", "group_unset", "group_set gone",
	"group_delete",
}

// pythonRefused are the calls Veil must refuse, as Mixpanel does, and how
// the library reports the refusal: its own exception with the answer's
// error.
var pythonRefused = map[string]string{
	"import_data with a wrong secret":                 "MixpanelException: Mixpanel error: Invalid credentials",
	"import_data with a wrong service account secret": "MixpanelException: Mixpanel error: Invalid credentials",
}

// The rows TestPythonSDK's calls must leave, per event name.
var (
	pythonTracked  = map[string]int{"py single": 1, "py timed": 1, "py batch": 60}
	pythonImported = map[string]int{"py imported": 1, "py import batch": 5, "py service account import": 1}
)

// TestPythonSDK runs the official Python library (track, import_data with an
// API secret and a service account, BufferedConsumer batches, every people
// and group call) against a collector serving HTTPS, where the library's
// api_host sends it, and checks that every call succeeded and that
// ClickHouse holds exactly the rows and profiles those calls describe.
func TestPythonSDK(t *testing.T) {
	python := requirePython(t)
	s := startStack(t, stackOptions{tls: true})
	now := time.Now()
	nowMs := now.UnixMilli()

	cmd := exec.CommandContext(driverContext(t), python, "python/run.py")
	cmd.Env = append(os.Environ(),
		"VEIL_HOST="+s.addr,
		"VEIL_TOKEN="+token,
		"VEIL_SECRET="+secret,
		"VEIL_NOW_MS="+strconv.FormatInt(nowMs, 10),
		"VEIL_SA_USER="+saUser,
		"VEIL_SA_SECRET="+saSecret,
		"VEIL_PROJECT_ID="+projectID,
		// Trust the throwaway certificate rather than turning checks off.
		"REQUESTS_CA_BUNDLE="+s.cert,
		"PYTHONDONTWRITEBYTECODE=1",
		"HTTPS_PROXY=", "HTTP_PROXY=", "https_proxy=", "http_proxy=", "NO_PROXY=*",
	)
	run := runDriver(t, cmd)
	run.logRequests(t, "the Python library "+pythonVersion)

	t.Run("calls", func(t *testing.T) {
		if run.version != pythonVersion {
			t.Errorf("the venv's mixpanel is %q, want %s", run.version, pythonVersion)
		}
		run.checkCalls(t, pythonOps, pythonRefused)
	})

	t.Run("requests", func(t *testing.T) {
		// One request a call, but the buffered 60 events go as 50 and 10;
		// the wrong credentials are 401s.
		want := map[int]int{200: len(pythonOps) + 1 - len(pythonRefused), 401: len(pythonRefused)}
		if got := run.statuses(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("requests by status: got %v, want %v", got, want)
		}
	})

	t.Run("collector metrics", func(t *testing.T) {
		s.checkCounters(t, endpoints(run.requests, func(r driverLine) string { return r.Path }),
			map[string]float64{"unauthorized": float64(len(pythonRefused))})
	})

	t.Run("events", func(t *testing.T) {
		checkPythonEvents(t, s, now)
	})
	t.Run("profiles", func(t *testing.T) {
		rows := s.events(t)
		s.waitStates(t, "profiles", "", map[string]entityState{
			storedID(t, rows, "py single"): {
				"plan":          `"pro"`,
				"first_seen":    `"2024-01-01"`,
				"logins":        `3`,
				"pages":         `["home","pricing"]`,
				"tags":          `["b"]`,
				"$transactions": `[{"$amount":29.99,"$time":"2024-03-01T10:00:00"}]`,
			},
			storedID(t, rows, "py import batch"):           {},
			storedID(t, rows, "py service account import"): {"plan": `"team"`, "visits": `1`},
		})
	})
	t.Run("groups", func(t *testing.T) {
		s.waitGroups(t, "company", []entityState{
			{"industry": `"widgets"`, "founded": `1999`, "products": `["anvil"]`},
		})
	})
	if !t.Failed() {
		s.logSummary(t, sdkSummary{sdk: "python sdk " + pythonVersion, calls: len(pythonOps), requests: len(run.requests),
			tracked: pythonTracked, imported: pythonImported, refused: len(pythonRefused), people: 16, groups: 7})
	}
}

func checkPythonEvents(t *testing.T, s *stack, now time.Time) {
	nowMs := now.UnixMilli()
	dayMs := int64(24 * 3600 * 1000)
	rows := s.waitRowsPerEvent(t, merge(pythonTracked, pythonImported))
	for _, r := range rows {
		// The library names itself in every event, and gives each a
		// $insert_id: 32 hex digits of a random UUID unless the caller
		// gave one.
		if r.Lib != "python" || r.LibVersion != pythonVersion {
			t.Errorf("%s: lib %q %q, want %q %q", r.Event, r.Lib, r.LibVersion, "python", pythonVersion)
		}
		if r.InsertID == "" {
			t.Errorf("%s: no insert_id", r.Event)
		}
		if _, ok := r.Properties["token"]; ok {
			t.Errorf("%s: the project token is stored in properties", r.Event)
		}
	}
	single := byEvent(rows, "py single")[0]
	if single.Properties["label"] != "party 🎉" || single.Properties["plan"] != "pro" {
		t.Errorf("py single: properties %s, want label %q and plan %q", single.RawProps, "party 🎉", "pro")
	}
	if d := single.Time.Sub(now); d < -time.Minute || d > time.Minute {
		t.Errorf("py single: time %s, want the time it was sent (about %s)", single.Time, now)
	}
	if len(single.InsertID) != 32 {
		t.Errorf("py single: insert_id %q, want the library's 32 hex digits", single.InsertID)
	}
	timed := byEvent(rows, "py timed")[0]
	checkTime(t, timed, nowMs-60_000)
	if timed.InsertID != "py-timed-1" || timed.DistinctID != single.DistinctID {
		t.Errorf("py timed: insert_id %q (want py-timed-1), same user as py single: %v", timed.InsertID, timed.DistinctID == single.DistinctID)
	}
	// Even events carried float seconds with milliseconds, odd ones whole
	// seconds.
	users := map[int]string{}
	for _, r := range byEvent(rows, "py batch") {
		i := int(r.Properties["i"].(float64))
		if r.InsertID != fmt.Sprintf("py-batch-%d", i) {
			t.Errorf("py batch i=%d: insert_id %q", i, r.InsertID)
		}
		ms := nowMs - int64(i)*1000
		if i%2 == 1 {
			ms -= ms % 1000
		}
		checkTime(t, r, ms)
		if prev, ok := users[i%3]; ok && prev != r.DistinctID {
			t.Errorf("py batch i=%d: events of one user have different distinct_ids", i)
		}
		users[i%3] = r.DistinctID
	}
	if len(users) != 3 || users[0] != single.DistinctID || users[1] == users[2] || users[0] == users[1] {
		t.Errorf("py batch: want 3 users with different distinct_ids, py-user-1's as in py single")
	}
	imported := byEvent(rows, "py imported")[0]
	checkTime(t, imported, nowMs-10*dayMs)
	if imported.InsertID != "py-import-1" {
		t.Errorf("py imported: insert_id %q, want py-import-1", imported.InsertID)
	}
	for i, r := range byEvent(rows, "py import batch") {
		if want := fmt.Sprintf("py-import-batch-%d", i); r.InsertID != want {
			t.Errorf("py import batch: insert_id %q, want %q", r.InsertID, want)
		}
		checkTime(t, r, nowMs-30*dayMs+int64(i)*1000)
	}
	checkTime(t, byEvent(rows, "py service account import")[0], nowMs-3*dayMs)
}
