package sdktest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nodeVersion is the `mixpanel` package pinned in package.json; every event
// it sends says so in $lib_version.
const nodeVersion = "0.24.0"

// nodeOps are the calls node/run.js makes, in order; each must report once.
var nodeOps = []string{
	"track", "track with time and insert_id", "track_batch", "alias", "import", "import_batch",
	"people.set", "people.set_once", "people.increment", "people.increment by one", "people.append",
	"people.append again", "people.union", "people.remove", "people.unset", "people.track_charge",
	"people.track_charge user 3", "people.clear_charges", "people.set user 2", "people.delete_user",
	"groups.set", "groups.set_once", "groups.union", "groups.remove", "groups.unset", "groups.set gone",
	"groups.delete_group",
	"verbose track", "verbose import", "verbose people.set", "verbose groups.set",
	"service account import",
	"import with a wrong secret", "service account with a wrong secret",
}

// nodeRefused are the calls that must fail, and how the library reports
// the failure: Veil must refuse them as Mixpanel does.
var nodeRefused = map[string]string{
	"import with a wrong secret":          "Mixpanel Server Error: ",
	"service account with a wrong secret": "Mixpanel Server Error: ",
}

// TestNodeSDK runs the official Node library (track, track_batch, import,
// import_batch, every people and groups operation) against a collector that
// serves HTTPS, as the library requires for an API secret, and checks that
// every call succeeded and that ClickHouse holds exactly the rows and
// profiles those calls describe.
func TestNodeSDK(t *testing.T) {
	node := requireNode(t)
	s := startStack(t, stackOptions{tls: true})
	now := time.Now()
	nowMs := now.UnixMilli()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "node/run.js")
	cmd.Env = append(os.Environ(),
		"VEIL_HOST="+s.addr,
		"VEIL_PROTOCOL=https",
		"VEIL_TOKEN="+token,
		"VEIL_SECRET="+secret,
		"VEIL_NOW_MS="+strconv.FormatInt(nowMs, 10),
		"VEIL_SA_USER="+saUser,
		"VEIL_SA_SECRET="+saSecret,
		"VEIL_PROJECT_ID="+projectID,
		// Trust the throwaway certificate rather than turning checks off.
		"NODE_EXTRA_CA_CERTS="+s.cert,
		"HTTPS_PROXY=", "HTTP_PROXY=", "https_proxy=", "http_proxy=",
	)
	run := runDriver(t, cmd)
	requests := run.requests
	run.logRequests(t, "the Node library "+nodeVersion)

	t.Run("calls", func(t *testing.T) {
		run.checkCalls(t, nodeOps, nodeRefused)
	})

	t.Run("requests", func(t *testing.T) {
		// One request a call, but track_batch's 60 events go as two
		// requests of 50 and 10.
		if len(requests) != len(nodeOps)+1 {
			t.Errorf("%d requests, want %d", len(requests), len(nodeOps)+1)
		}
		refused := 0
		for _, r := range requests {
			if r.Status == 401 {
				refused++
				continue
			}
			if r.Status != 200 {
				t.Errorf("%s: want 200", r.request())
			}
		}
		if refused != len(nodeRefused) {
			t.Errorf("%d requests answered 401, want %d (the wrong credentials)", refused, len(nodeRefused))
		}
	})

	t.Run("collector metrics", func(t *testing.T) {
		want := endpoints(requests, func(r driverLine) string { return r.Path })
		s.checkCounters(t, want, map[string]float64{"unauthorized": float64(len(nodeRefused))})
	})

	t.Run("events", func(t *testing.T) {
		checkNodeEvents(t, s, now)
	})
	t.Run("profiles", func(t *testing.T) {
		checkNodeProfiles(t, s)
	})
	t.Run("groups", func(t *testing.T) {
		checkNodeGroups(t, s)
	})
}

func checkNodeEvents(t *testing.T, s *stack, now time.Time) {
	nowMs := now.UnixMilli()
	want := map[string]int{
		"node single":                 1,
		"node timed":                  1,
		"node batch":                  60,
		"$create_alias":               1,
		"node imported":               1,
		"node import batch":           5,
		"node verbose":                1,
		"node verbose import":         1,
		"node service account import": 1,
	}
	rows := s.waitRowsPerEvent(t, want)
	// The library names itself (mp_lib, $lib_version) in single calls but
	// not in track_batch and import_batch.
	batched := map[string]bool{"node batch": true, "node import batch": true}
	for _, r := range rows {
		wantLib, wantVersion := "node", nodeVersion
		if batched[r.Event] {
			wantLib, wantVersion = "", ""
		}
		if r.Lib != wantLib || r.LibVersion != wantVersion {
			t.Errorf("%s: lib %q %q, want %q %q", r.Event, r.Lib, r.LibVersion, wantLib, wantVersion)
		}
		if _, ok := r.Properties["token"]; ok {
			t.Errorf("%s: the project token is stored in properties", r.Event)
		}
	}
	single := byEvent(rows, "node single")[0]
	if single.Properties["label"] != "party 🎉" || single.Properties["plan"] != "pro" {
		t.Errorf("node single: properties %s, want label %q and plan %q", single.RawProps, "party 🎉", "pro")
	}
	if d := single.Time.Sub(now); d < -time.Minute || d > time.Minute {
		t.Errorf("node single: time %s, want the time it was received (about %s)", single.Time, now)
	}

	timed := byEvent(rows, "node timed")[0]
	checkTime(t, timed, nowMs-60_000)
	if timed.InsertID != "node-timed-1" {
		t.Errorf("node timed: insert_id %q, want node-timed-1", timed.InsertID)
	}
	if timed.DistinctID != single.DistinctID {
		t.Errorf("node timed and node single were sent for one user but have different distinct_ids")
	}
	if alias := byEvent(rows, "$create_alias")[0]; alias.DistinctID != single.DistinctID {
		t.Errorf("$create_alias: distinct_id differs from the other events of node-user-1")
	}

	// Even events carried a Date (sent as milliseconds), odd ones whole seconds.
	ids := map[int]string{}
	seen := map[string]bool{}
	for _, r := range byEvent(rows, "node batch") {
		f, ok := r.Properties["i"].(float64)
		if !ok {
			t.Fatalf("node batch %s: no property i in %s", r.InsertID, r.RawProps)
		}
		i := int(f)
		if r.InsertID != fmt.Sprintf("node-batch-%d", i) || seen[r.InsertID] {
			t.Errorf("node batch i=%d: insert_id %q", i, r.InsertID)
		}
		seen[r.InsertID] = true
		ms := nowMs - int64(i)*1000
		if i%2 == 1 {
			ms -= ms % 1000
		}
		checkTime(t, r, ms)
		if prev, ok := ids[i%3]; ok && prev != r.DistinctID {
			t.Errorf("node batch i=%d: events of one user have different distinct_ids", i)
		}
		ids[i%3] = r.DistinctID
	}
	if len(ids) != 3 || ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
		t.Errorf("node batch: want 3 users with different distinct_ids, got %d", len(ids))
	}
	if ids[0] != single.DistinctID {
		t.Errorf("node batch: node-user-1's distinct_id differs from its single event's")
	}

	imported := byEvent(rows, "node imported")[0]
	checkTime(t, imported, nowMs-10*24*3600*1000)
	if imported.InsertID != "node-import-1" {
		t.Errorf("node imported: insert_id %q, want node-import-1", imported.InsertID)
	}
	var batchTimes []string
	for _, r := range byEvent(rows, "node import batch") {
		batchTimes = append(batchTimes, fmt.Sprintf("%s@%d.%03d", r.InsertID, r.Time.Unix(), r.TimeMs))
	}
	sort.Strings(batchTimes)
	var wantTimes []string
	for i := 0; i < 5; i++ {
		ms := nowMs - 30*24*3600*1000 + int64(i)*1000
		wantTimes = append(wantTimes, fmt.Sprintf("node-import-batch-%d@%d.%03d", i, ms/1000, ms%1000))
	}
	if strings.Join(batchTimes, " ") != strings.Join(wantTimes, " ") {
		t.Errorf("node import batch:\n  got  %v\n  want %v", batchTimes, wantTimes)
	}
	checkTime(t, byEvent(rows, "node verbose import")[0], nowMs-7*24*3600*1000)
	checkTime(t, byEvent(rows, "node service account import")[0], nowMs-3*24*3600*1000)
}
