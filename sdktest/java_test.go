package sdktest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// javaVersion is com.mixpanel:mixpanel-java as java/pom.xml pins it: the
// newest version Maven Central lists.
const javaVersion = "1.6.1"

// The driver's source, run by `java` as a source file against the jars
// scripts/install-deps.sh copied into java/target/lib, whose stamp holds
// the SHA-256 of the pom.xml they came from.
const (
	javaLib    = "java/target/lib"
	javaStamp  = "java/target/.veil-pom.sha256"
	javaDriver = "java/src/main/java/veil/sdktest/Run.java"
)

// requireJava returns the java binary, after checking that the jars are
// those of the committed pom.xml, which pins the version the test is
// written for.
func requireJava(t *testing.T) string {
	t.Helper()
	pom, err := os.ReadFile("java/pom.xml")
	if err != nil {
		t.Fatalf("sdktest/java/pom.xml: %v", err)
	}
	if pin := "<mixpanel-java.version>" + javaVersion + "</mixpanel-java.version>"; !strings.Contains(string(pom), pin) {
		t.Fatalf("sdktest/java/pom.xml does not pin mixpanel-java %s, which the test is written for: check what the new version sends, then update javaVersion", javaVersion)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		missing(t, "java", "scripts/install-deps.sh (Debian's openjdk-17-jdk-headless and maven)")
	}
	sum := sha256.Sum256(pom)
	stamp, err := os.ReadFile(javaStamp)
	if _, statErr := os.Stat(filepath.Join(javaLib, "mixpanel-java-"+javaVersion+".jar")); statErr != nil || err != nil || strings.TrimSpace(string(stamp)) != hex.EncodeToString(sum[:]) {
		missing(t, "the jars of sdktest/java/pom.xml in sdktest/java/target/lib",
			"scripts/install-deps.sh (it runs mvn dependency:copy-dependencies in sdktest/java)")
	}
	return java
}

// javaOps are the calls Run.java makes, in order.
var javaOps = []string{
	"sendMessage event", "sendMessage event with time and $insert_id", "deliver 60 events",
	"deliver identical events", "deliver imports, strict", "deliver imports, not strict",
	"deliver imports with an invalid record, strict", "import with an unknown token",
	"deliver people updates", "deliver group updates",
}

// javaRefused are the calls Veil must refuse, as Mixpanel does: the library
// reports any answer but success as its MixpanelServerException.
var javaRefused = map[string]string{
	"deliver imports with an invalid record, strict": "MixpanelServerException: Server refused to accept import messages",
	"import with an unknown token":                   "MixpanelServerException: Server refused to accept import messages",
}

// The rows TestJavaSDK's calls must leave, per event name.
var (
	javaTracked  = map[string]int{"java single": 1, "java timed": 1, "java batch": 60, "java repeated": 3}
	javaImported = map[string]int{"java import": 5, "java import lenient": 3, "java import partial": 2}
)

// TestJavaSDK runs the official Java library (single and delivered events,
// imports strict and not, 13 people and 7 group updates each in one
// request) against a collector, through the library's custom-endpoint
// constructor, and checks that every call succeeded and that ClickHouse
// holds exactly the rows and profiles those calls describe.
func TestJavaSDK(t *testing.T) {
	java := requireJava(t)
	s := startStack(t, stackOptions{})
	now := time.Now()
	nowMs := now.UnixMilli()

	cmd := exec.CommandContext(driverContext(t), java, "-cp", javaLib+"/*", javaDriver)
	cmd.Env = append(os.Environ(),
		"VEIL_BASE=http://"+s.addr,
		"VEIL_TOKEN="+token,
		"VEIL_NOW_MS="+strconv.FormatInt(nowMs, 10),
		"JAVA_TOOL_OPTIONS=", "http_proxy=", "HTTP_PROXY=",
	)
	run := runDriver(t, cmd)
	requests := s.tap.requests()
	t.Logf("requests the Java library %s made:", javaVersion)
	for _, r := range requests {
		t.Logf("  %s", r)
	}

	t.Run("calls", func(t *testing.T) {
		if run.version != javaVersion {
			t.Errorf("the library says it is %q, want %s", run.version, javaVersion)
		}
		run.checkCalls(t, javaOps, javaRefused)
	})

	t.Run("requests", func(t *testing.T) {
		// One request a call, but the 60 events go as 50 and 10; the
		// invalid record's import is a 400, the unknown token a 401.
		if len(requests) != len(javaOps)+1 {
			t.Errorf("%d requests, want %d", len(requests), len(javaOps)+1)
		}
		want := map[string]float64{http.StatusText(200): float64(len(javaOps) + 1 - 2), http.StatusText(400): 1, http.StatusText(401): 1}
		if got := s.counters(t, "veil_collector_requests_total", "status"); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("requests by status: got %v, want %v", got, want)
		}
	})

	t.Run("collector metrics", func(t *testing.T) {
		s.checkCounters(t, endpoints(requests, func(r wireRequest) string { return r.Path }),
			map[string]float64{"unauthorized": 1, "missing_id": 1})
	})

	t.Run("events", func(t *testing.T) {
		checkJavaEvents(t, s, now)
	})
	t.Run("profiles", func(t *testing.T) {
		rows := s.events(t)
		s.waitStates(t, "profiles", "", map[string]entityState{
			storedID(t, rows, "java single"): {
				"plan":          `"pro"`,
				"first_seen":    `"2024-01-01"`,
				"logins":        `3`,
				"pages":         `["home","pricing"]`,
				"tags":          `["b"]`,
				"$transactions": `[{"$amount":29.99,"$time":"2024-03-01T10:00:00"}]`,
			},
			storedID(t, rows, "java import lenient"): {"plan": `"solo"`},
		})
	})
	t.Run("groups", func(t *testing.T) {
		s.waitGroups(t, "company", []entityState{
			{"industry": `"widgets"`, "founded": `1999`, "products": `["anvil"]`},
		})
	})
	if !t.Failed() {
		// Refused: one record of a strict import, one unknown token. The
		// people and group operations went in one request each.
		s.logSummary(t, sdkSummary{sdk: "java sdk " + javaVersion, calls: len(javaOps), requests: len(requests),
			tracked: javaTracked, imported: javaImported, refused: 2, people: 13, groups: 7})
	}
}

func checkJavaEvents(t *testing.T, s *stack, now time.Time) {
	nowMs := now.UnixMilli()
	dayMs := int64(24 * 3600 * 1000)
	rows := s.waitRowsPerEvent(t, merge(javaTracked, javaImported))
	for _, r := range rows {
		// The library names itself "jdk", without a version.
		if r.Lib != "jdk" || r.LibVersion != "" {
			t.Errorf("%s: lib %q %q, want \"jdk\" \"\"", r.Event, r.Lib, r.LibVersion)
		}
		if _, ok := r.Properties["token"]; ok {
			t.Errorf("%s: the project token is stored in properties", r.Event)
		}
	}
	single := byEvent(rows, "java single")[0]
	if single.Properties["label"] != "party 🎉" || single.Properties["plan"] != "pro" {
		t.Errorf("java single: properties %s, want label %q and plan %q", single.RawProps, "party 🎉", "pro")
	}
	if d := single.Time.Sub(now); d < -time.Minute || d > time.Minute {
		t.Errorf("java single: time %s, want the time it was made (about %s)", single.Time, now)
	}
	timed := byEvent(rows, "java timed")[0]
	checkTime(t, timed, nowMs-60_000)
	if timed.InsertID != "java-timed-1" || timed.DistinctID != single.DistinctID {
		t.Errorf("java timed: insert_id %q (want java-timed-1), same user as java single: %v", timed.InsertID, timed.DistinctID == single.DistinctID)
	}
	for _, r := range byEvent(rows, "java repeated") {
		checkTime(t, r, nowMs-5_000)
		if r.DistinctID != single.DistinctID {
			t.Errorf("java repeated: distinct_id differs from the other events of java-user-1")
		}
	}
	users := map[int]string{}
	for _, r := range byEvent(rows, "java batch") {
		i := int(r.Properties["i"].(float64))
		if r.InsertID != fmt.Sprintf("java-batch-%d", i) {
			t.Errorf("java batch i=%d: insert_id %q", i, r.InsertID)
		}
		checkTime(t, r, nowMs-int64(i)*1000)
		if prev, ok := users[i%3]; ok && prev != r.DistinctID {
			t.Errorf("java batch i=%d: events of one user have different distinct_ids", i)
		}
		users[i%3] = r.DistinctID
	}
	if len(users) != 3 || users[0] != single.DistinctID || users[1] == users[2] || users[0] == users[1] {
		t.Errorf("java batch: want 3 users with different distinct_ids, java-user-1's as in java single")
	}
	for i, r := range byEvent(rows, "java import") {
		checkTime(t, r, nowMs-10*dayMs+int64(i)*1000)
	}
	for i, r := range byEvent(rows, "java import lenient") {
		checkTime(t, r, nowMs-20*dayMs+int64(i)*1000)
	}
	for i, r := range byEvent(rows, "java import partial") {
		if want := fmt.Sprintf("java-partial-%d", 2*i); r.InsertID != want {
			t.Errorf("java import partial: insert_id %q, want %q", r.InsertID, want)
		}
		checkTime(t, r, nowMs-2*dayMs+int64(2*i)*1000)
	}
}
