package app_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/testsvc"
	"github.com/veilhq/veil/policy"
)

// track sends events to /track with the given headers and cookies and
// requires the answer 1.
func track(t *testing.T, s *stack, events []map[string]any, hdr map[string]string, cookies ...*http.Cookie) {
	t.Helper()
	postRaw(t, s, "/track", events, hdr, cookies...)
}

func events(project, user, name string, n int, token string) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = map[string]any{"event": name, "properties": map[string]any{
			"token": token, "distinct_id": user, "$insert_id": fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint(project, user, name, i))))[:32], "n": i,
		}}
	}
	return out
}

// admin calls the privacy API and decodes its JSON answer.
func (s *stack) adminCall(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.admin+path, r)
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

func dropped(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	return byLabel(t, reg, "veil_worker_events_dropped_total")
}

// byLabel is the counter name's value by its one label's value.
func byLabel(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.Metric {
				out[m.Label[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestConsentSignals sends events with each privacy signal and checks the
// exact numbers stored and dropped, by reason.
func TestConsentSignals(t *testing.T) {
	s := newStack(t, func(c *app.Config) {
		c.Collector.Projects = append(c.Collector.Projects, ingest.Project{Name: "anon", Token: "tok-anon"})
		p := policy.Default()
		p.DNT, p.GPC = policy.Anonymize, policy.Anonymize
		c.Deidentify.Policies.Projects = map[string]policy.Policy{"anon": p}
	})
	s.startCollector()
	_, wreg := s.startWorker(true)

	// The admin token counts only under the Bearer scheme, spelt in any case.
	for h, want := range map[string]int{
		"Bearer " + s.adminToken: http.StatusMethodNotAllowed, "bearer " + s.adminToken: http.StatusMethodNotAllowed,
		"BEARER " + s.adminToken: http.StatusMethodNotAllowed, s.adminToken: http.StatusUnauthorized,
		"Basic " + s.adminToken: http.StatusUnauthorized, "Bearer  wrong": http.StatusUnauthorized, "": http.StatusUnauthorized,
	} {
		req, _ := http.NewRequest(http.MethodGet, s.admin+"/api/veil/optouts?token=tok-shop", nil)
		req.Header.Set("Authorization", h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || (want == http.StatusUnauthorized) != (resp.Header.Get("WWW-Authenticate") == "Bearer") {
			t.Errorf("Authorization of %d bytes: %d (WWW-Authenticate %q), want %d", len(h), resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
		}
	}

	// The registry: opted out through the API, in force within 5 s.
	if code, v := s.adminCall(t, http.MethodPost, "/api/veil/optouts?token=tok-shop", map[string]any{"distinct_ids": []string{"reg-user"}}); code != 200 {
		t.Fatalf("opt-out registry: %d %v", code, v)
	}
	time.Sleep(5 * time.Second)

	track(t, s, events("shop", "plain", "e", 3, "tok-shop"), nil)
	track(t, s, events("shop", "dnt-user", "e", 2, "tok-shop"), map[string]string{"DNT": "1"})
	track(t, s, events("shop", "gpc-user", "e", 2, "tok-shop"), map[string]string{"Sec-GPC": "1"})
	track(t, s, events("shop", "cookie-user", "e", 2, "tok-shop"), nil, &http.Cookie{Name: "veil_optout", Value: "1"})
	track(t, s, events("shop", "reg-user", "before", 2, "tok-shop"), nil)
	// $opt_in clears the registry entry; what follows is kept.
	track(t, s, events("shop", "reg-user", "$opt_in", 1, "tok-shop"), nil)
	track(t, s, events("shop", "reg-user", "after", 2, "tok-shop"), nil)
	track(t, s, events("anon", "anon-user", "e", 2, "tok-anon"), map[string]string{"DNT": "1"})

	conn := testsvc.Conn(t, s.cfg.Sink)
	db := s.cfg.Sink.Database
	const wantStored = 3 + 1 + 2 + 2
	testsvc.Eventually(t, 20*time.Second, "kept events stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") >= wantStored
	})
	time.Sleep(time.Second)
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+db+".events"); n != wantStored {
		t.Fatalf("%d rows stored, want %d", n, wantStored)
	}
	for q, want := range map[string]uint64{
		"SELECT count() FROM " + db + ".events WHERE project = 'shop' AND event = 'e'":                                                                3,
		"SELECT count() FROM " + db + ".events WHERE event IN ('$opt_in', 'after')":                                                                   3,
		"SELECT count() FROM " + db + ".events WHERE event = 'before'":                                                                                0,
		"SELECT count() FROM " + db + ".events WHERE project = 'anon' AND distinct_id = '' AND has(consent, 'dnt') AND has(transforms, 'anonymized')": 2,
	} {
		if n := testsvc.Count(t, conn, q); n != want {
			t.Errorf("%s: %d, want %d", q, n, want)
		}
	}
	want := map[string]float64{"dnt": 2, "gpc": 2, "optout": 4, "deleted_user": 0, "bot": 0}
	got := dropped(t, wreg)
	for reason, n := range want {
		if got[reason] != n {
			t.Errorf("dropped{reason=%q} = %v, want %v (all: %v)", reason, got[reason], n, got)
		}
	}
}

// TestDeletion removes a user some of whose events are stored and some
// still in Kafka when the request comes: after SUCCESS none of their rows
// exist, later either, and every other user's rows are untouched.
func TestDeletion(t *testing.T) {
	s := newStack(t, func(c *app.Config) {
		c.Privacy.Refresh = 500 * time.Millisecond
		c.Privacy.Settle = time.Second
	})
	s.startCollector()
	stopWorker, _ := s.startWorker(false)
	conn := testsvc.Conn(t, s.cfg.Sink)
	db := s.cfg.Sink.Database

	track(t, s, events("shop", "alice", "stored", 5, "tok-shop"), nil)
	track(t, s, events("shop", "bob", "stored", 5, "tok-shop"), nil)
	testsvc.Eventually(t, 20*time.Second, "first events stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") == 10
	})
	stopWorker()

	// These wait in Kafka: no worker is running.
	track(t, s, events("shop", "alice", "queued", 4, "tok-shop"), nil)
	track(t, s, events("shop", "bob", "queued", 4, "tok-shop"), nil)

	s.startPrivacy()
	code, v := s.adminCall(t, http.MethodPost, "/api/app/data-deletions/v3.0/?token=tok-shop",
		map[string]any{"distinct_ids": []string{"alice"}, "compliance_type": "GDPR"})
	if code != 200 {
		t.Fatalf("create deletion: %d %v", code, v)
	}
	id := v["results"].(map[string]any)["task_id"].(string)
	if code, v := s.adminCall(t, http.MethodGet, "/api/app/data-deletions/v3.0/"+id+"?token=wrong-token", nil); code != 400 {
		t.Fatalf("a task read with an unknown project token: %d %v", code, v)
	}
	status := func() string {
		_, v := s.adminCall(t, http.MethodGet, "/api/app/data-deletions/v3.0/"+id+"?token=tok-shop", nil)
		r, _ := v["results"].(map[string]any)
		st, _ := r["status"].(string)
		return st
	}
	seen := map[string]bool{}
	testsvc.Eventually(t, 30*time.Second, "deletion SUCCESS", func() bool { st := status(); seen[st] = true; return st == "SUCCESS" })
	if !seen["STAGING"] && !seen["STARTED"] && !seen["PENDING"] {
		t.Errorf("statuses seen %v: none before SUCCESS", seen)
	}
	if code, _ := s.adminCall(t, http.MethodDelete, "/api/app/data-deletions/v3.0/"+id+"?token=tok-shop", nil); code != 400 {
		t.Errorf("cancelling a finished task answered %d, want 400", code)
	}

	// Now the worker reads the queued events: Alice's must not reappear.
	_, wreg := s.startWorker(false)
	defer func() {
		if t.Failed() {
			t.Logf("dropped: %v; rows: %d", dropped(t, wreg), testsvc.Count(t, conn, "SELECT count() FROM "+db+".events"))
		}
	}()
	testsvc.Eventually(t, 20*time.Second, "bob's queued events stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events WHERE event = 'queued'") == 4
	})
	time.Sleep(2 * time.Second)
	if n := testsvc.Count(t, conn, "SELECT count() FROM "+db+".events"); n != 9 {
		t.Fatalf("%d rows, want bob's 9", n)
	}
	if n := testsvc.Count(t, conn, "SELECT uniqExact(distinct_id) FROM "+db+".events"); n != 1 {
		t.Fatalf("%d users left, want 1", n)
	}
	if got := dropped(t, wreg)["deleted_user"]; got != 4 {
		t.Fatalf("dropped{reason=deleted_user} = %v, want 4", got)
	}
}

// TestDeletionCancel: a task cancelled before it starts deletes nothing.
func TestDeletionCancel(t *testing.T) {
	s := newStack(t, func(c *app.Config) { c.Privacy.Settle = 3 * time.Second; c.Privacy.Refresh = 500 * time.Millisecond })
	s.startCollector()
	s.startWorker(false)
	conn := testsvc.Conn(t, s.cfg.Sink)
	db := s.cfg.Sink.Database
	track(t, s, events("shop", "carol", "e", 3, "tok-shop"), nil)
	testsvc.Eventually(t, 20*time.Second, "stored", func() bool { return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") == 3 })
	s.startPrivacy()
	_, v := s.adminCall(t, http.MethodPost, "/api/app/data-deletions/v3.0/?token=tok-shop", map[string]any{"distinct_ids": []string{"carol"}})
	id := v["results"].(map[string]any)["task_id"].(string)
	if code, v := s.adminCall(t, http.MethodDelete, "/api/app/data-deletions/v3.0/"+id+"?token=tok-shop", nil); code != 200 {
		t.Fatalf("cancel: %d %v", code, v)
	}
	time.Sleep(5 * time.Second)
	_, v = s.adminCall(t, http.MethodGet, "/api/app/data-deletions/v3.0/"+id+"?token=tok-shop", nil)
	if st := v["results"].(map[string]any)["status"]; st != "REVOKED" {
		t.Fatalf("status %v, want REVOKED", st)
	}
	track(t, s, events("shop", "carol", "later", 2, "tok-shop"), nil)
	testsvc.Eventually(t, 20*time.Second, "later events stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") == 5
	})
}

// TestRetrieval returns every stored row of a user as a JSON file.
func TestRetrieval(t *testing.T) {
	s := newStack(t, nil)
	s.startCollector()
	s.startWorker(true)
	conn := testsvc.Conn(t, s.cfg.Sink)
	db := s.cfg.Sink.Database
	track(t, s, events("shop", "dave", "e", 3, "tok-shop"), nil)
	track(t, s, events("shop", "erin", "e", 2, "tok-shop"), nil)
	testsvc.Eventually(t, 20*time.Second, "stored", func() bool { return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") == 5 })

	_, v := s.adminCall(t, http.MethodPost, "/api/app/data-retrievals/v3.0/?token=tok-shop", map[string]any{"distinct_ids": []string{"dave"}, "compliance_type": "CCPA"})
	id := v["results"].(map[string]any)["task_id"].(string)
	var result string
	testsvc.Eventually(t, 20*time.Second, "retrieval SUCCESS", func() bool {
		_, v := s.adminCall(t, http.MethodGet, "/api/app/data-retrievals/v3.0/"+id+"?token=tok-shop", nil)
		r := v["results"].(map[string]any)
		result, _ = r["result"].(string)
		return r["status"] == "SUCCESS"
	})
	req, _ := http.NewRequest(http.MethodGet, s.admin+result, nil)
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Tables map[string][]map[string]any `json:"tables"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("download: %d %v", resp.StatusCode, err)
	}
	if rows := doc.Tables["events"]; len(rows) != 3 {
		t.Fatalf("%d event rows retrieved, want dave's 3", len(rows))
	}
}
