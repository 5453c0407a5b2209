package obstest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/devstack"
	"github.com/veilhq/veil/internal/kafkax"
)

// Canaries: personal data and secrets, each distinct enough that finding it
// in a log can only mean it was copied there.
const (
	cDistinctID  = "canary-did-7Q2x9ZK"
	cDistinctID2 = "canary-did2-Hn4p0W"
	cPropName    = "canaryPropName4k8"
	cPropValue   = "canary-prop-value-Z81w"
	cIPv4        = "203.0.113.77"
	cIPv6        = "2001:db8::7a11"
	cEmail       = "canary.user@example.com"
	cPhone       = "+16505550199"
	cPhoneText   = "+1 650-555-0199"
	cToken       = "canarytoken5bd1e0" // no project's: refused
	cCookie      = "canary-cookie-v4l9"
	cUserAgent   = "CanaryAgent/9.9 (canary-ua-3f1)"
	cGroupID     = "canary-group-Qz93"
	cInsertID    = "canary insert id with spaces!"
	cCallback    = "canary_cb(" + cEmail + ")"
	cBasicUser   = "canary-basic-user-Xy1"
	cBasicPass   = "canary-basic-pass-Wq7"
	// The strict collector's configured secrets.
	cKnownToken  = "canary-known-token-P3m"
	cKnownSecret = "canary-known-secret-V8k"
	cSAUser      = "canary-sa-user-J2d"
	cSASecret    = "canary-sa-secret-L5t"
	cAdminWrong  = "canary-wrong-admin-token-R6"
)

var canaries = []string{
	cDistinctID, cDistinctID2, cPropName, cPropValue, cIPv4, cIPv6, cEmail, cPhone, cPhoneText,
	cToken, cCookie, cUserAgent, cGroupID, cInsertID, cBasicUser, cBasicPass,
	cKnownToken, cKnownSecret, cSAUser, cSASecret, cAdminWrong,
}

// variants are the forms in which a canary could reach a log: as is,
// URL-encoded, base64-encoded (lower-casing is handled by the search).
func variants(v string) []string {
	b := []byte(v)
	out := []string{
		v,
		url.QueryEscape(v),
		url.PathEscape(v),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
	}
	if j, err := json.Marshal(v); err == nil {
		out = append(out, strings.Trim(string(j), `"`))
	}
	return out
}

// leaks returns the log lines that hold a canary in any of its forms.
func leaks(log string, secrets []string) []string {
	lower := strings.ToLower(log)
	var found []string
	for _, c := range secrets {
		for _, v := range variants(c) {
			i := strings.Index(log, v)
			if i < 0 {
				i = strings.Index(lower, strings.ToLower(v))
			}
			if i < 0 {
				continue
			}
			start := strings.LastIndexByte(log[:i], '\n') + 1
			end := strings.IndexByte(log[i:], '\n')
			if end < 0 {
				end = len(log) - i
			}
			found = append(found, fmt.Sprintf("%q as %q in: %s", c, v, log[start:i+end]))
			break
		}
	}
	return found
}

func TestLeaksFindsEveryForm(t *testing.T) {
	for _, tc := range []struct{ name, log string }{
		{"raw", `{"msg":"x","id":"canary-did-7Q2x9ZK"}`},
		{"lower-cased", `{"ua":"canaryagent/9.9 (canary-ua-3f1)"}`},
		{"url-encoded", `{"url":"/track?email=canary.user%40example.com"}`},
		{"base64", `{"data":"` + base64.StdEncoding.EncodeToString([]byte(cPropValue)) + `"}`},
		{"json-escaped", `{"err":"` + strings.Trim(mustJSON(cUserAgent), `"`) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := leaks("first line\n"+tc.log+"\nlast line", canaries); len(got) != 1 {
				t.Fatalf("leaks found %d, want 1: %v", len(got), got)
			}
		})
	}
	if got := leaks(`{"msg":"request rejected","reason":"malformed"}`, canaries); len(got) != 0 {
		t.Fatalf("false positive: %v", got)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// startStrictCollector runs a second collector on the stack's Kafka,
// configured as `veil dev` configures its own but with a project whose
// credentials are canaries: a configured secret that reached a log would
// be found by its value even where the dev project's random ones, which
// are searched for too, might be missed in some encoding.
func startStrictCollector(t *testing.T, s *stack) string {
	t.Helper()
	cfg := devstack.Config(s.ep.Kafka, s.ep.ClickHouseNative, t.TempDir(), devstack.Project{
		Token: cKnownToken, APISecret: cKnownSecret, ProjectID: "1001",
		ServiceAccount: devstack.ServiceAccount{Username: cSAUser, Secret: cSASecret},
	})
	// It seals with the stack's key, so that the stack's worker opens
	// what it produces.
	cfg.Seal.KeyFile = filepath.Join(s.dir, "seal.keys")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.RunCollector(ctx, cfg, app.Deps{Logger: s.log.Named("strict"), Registry: app.NewRegistry()}, l)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("strict collector: %v", err)
		}
	})
	base := "http://" + l.Addr().String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			return base
		}
		if time.Now().After(deadline) {
			t.Fatalf("strict collector not serving: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// request is one call of the privacy test.
type request struct {
	name   string
	method string
	url    string
	body   []byte
	header map[string]string
	// logged: the request is rejected, and the collector logs that under
	// its request id.
	logged bool
	// want is the exact answer when it is part of Mixpanel's contract;
	// zero status means only "not 404": the endpoint must exist.
	wantStatus int
	wantBody   string
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func form(kv ...string) []byte {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return []byte(v.Encode())
}

func gzipped(s string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return buf.Bytes()
}

// optOutPageToken loads the collector's opt-out page and returns the
// token its form and token cookie carry.
func optOutPageToken(t *testing.T, collector string) string {
	t.Helper()
	resp, err := http.Get(collector + "/optout")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, ck := range resp.Cookies() {
		if ck.Name == "veil_optout_csrf" {
			return ck.Value
		}
	}
	t.Fatalf("the opt-out page set no token cookie")
	return ""
}

// TestLogsCarryNoPersonalData sends personal data and secrets through every
// endpoint, well-formed and malformed, and straight into the raw topic, with
// the whole pipeline logging at debug level; none of it may reach the log.
func TestLogsCarryNoPersonalData(t *testing.T) {
	s := sharedStack(t)
	strict := startStrictCollector(t, s)
	adminToken, err := os.ReadFile(filepath.Join(s.dir, "admin.token"))
	if err != nil {
		t.Fatalf("dev admin token: %v", err)
	}
	dev := s.project
	secrets := append([]string{strings.TrimSpace(string(adminToken)),
		dev.Token, dev.APISecret, dev.ServiceAccount.Username, dev.ServiceAccount.Secret}, canaries...)

	now := time.Now().UnixMilli()
	propsOf := func(token string) string {
		return fmt.Sprintf(`{"token":%q,"distinct_id":%q,"time":%d,%q:%q,"$email":%q,"$phone":%q,"ip":%q,"$ip":%q,"note":%q,"$current_url":%q}`,
			token, cDistinctID, now, cPropName, cPropValue, cEmail, cPhone, cIPv4, cIPv6,
			"call "+cPhoneText+" or mail "+cEmail, "https://shop.example/account?email="+url.QueryEscape(cEmail)+"&phone="+url.QueryEscape(cPhone))
	}
	trackOf := func(token string) string { return fmt.Sprintf(`{"event":"signup","properties":%s}`, propsOf(token)) }
	engageOf := func(token string) string {
		return fmt.Sprintf(`{"$token":%q,"$distinct_id":%q,"$ip":%q,"$set":{%q:%q,"$email":%q,"$phone":%q}}`,
			token, cDistinctID, cIPv4, cPropName, cPropValue, cEmail, cPhone)
	}
	// The dev collector's requests carry its project's token; those with
	// cToken, no project's, are refused.
	props, track, engage := propsOf(dev.Token), trackOf(dev.Token), engageOf(dev.Token)
	unknownTrack, unknownEngage := trackOf(cToken), engageOf(cToken)
	groups := fmt.Sprintf(`{"$token":%q,"$group_key":"company","$group_id":%q,"$set":{%q:%q,"contact":%q}}`,
		dev.Token, cGroupID, cPropName, cPropValue, cEmail)
	browser := map[string]string{
		"X-Forwarded-For": cIPv4 + ", " + cIPv6,
		"User-Agent":      cUserAgent,
		"Cookie":          "session=" + cCookie + "; veil_optout=" + cCookie,
		"Referer":         "https://shop.example/?email=" + url.QueryEscape(cEmail),
	}
	formHdr := func(extra map[string]string) map[string]string {
		h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		for k, v := range browser {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	oversized := append([]byte("data="+url.QueryEscape(track)), bytes.Repeat([]byte("A"), 10<<20)...)
	pii := "?email=" + url.QueryEscape(cEmail) + "&phone=" + url.QueryEscape(cPhone) + "&distinct_id=" + cDistinctID
	c, adm := s.ep.Collector, s.ep.Admin
	bearer := "Bearer " + strings.TrimSpace(string(adminToken))
	// The opt-out page's token, as a browser holds it after loading the page.
	pageToken := optOutPageToken(t, c)
	optOutForm := func(extra map[string]string) map[string]string {
		h := formHdr(extra)
		h["Cookie"] = browser["Cookie"] + "; veil_optout_csrf=" + pageToken
		return h
	}

	reqs := []request{
		// /track, accepted.
		{name: "track GET base64", method: "GET", url: c + "/track?ip=1&data=" + url.QueryEscape(b64("["+track+"]")), header: browser, wantStatus: 200, wantBody: "1"},
		{name: "track POST JSON data", method: "POST", url: c + "/track", body: form("data", track), header: formHdr(nil), wantStatus: 200, wantBody: "1"},
		{name: "track POST gzip", method: "POST", url: c + "/track", body: gzipped(string(form("data", b64(track)))), header: formHdr(map[string]string{"Content-Encoding": "gzip"}), wantStatus: 200, wantBody: "1"},
		// /track, rejected.
		{name: "track bad base64", method: "POST", url: c + "/track", body: form("data", "%%"+cEmail+cDistinctID), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "track bad JSON", method: "POST", url: c + "/track", body: form("data", b64(track[:len(track)-20])), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "track bad JSON verbose", method: "POST", url: c + "/track?verbose=1", body: form("data", `{"event":"x","properties":{"distinct_id":"`+cDistinctID+`",}}`), header: formHdr(nil), logged: true, wantStatus: 200},
		{name: "track object distinct_id", method: "POST", url: c + "/track", body: form("data", b64(fmt.Sprintf(`{"event":"x","properties":{"token":%q,"distinct_id":{"email":%q}}}`, dev.Token, cEmail))), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "track too deep", method: "POST", url: c + "/track", body: form("data", b64(fmt.Sprintf(`{"event":"x","properties":{"token":%q,"distinct_id":%q,"a":{"b":{"c":{"d":{"e":%q}}}}}}`, dev.Token, cDistinctID, cPropValue))), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "track too old", method: "POST", url: c + "/track", body: form("data", b64(fmt.Sprintf(`{"event":"x","properties":{"token":%q,"distinct_id":%q,"time":1000,%q:%q}}`, dev.Token, cDistinctID, cPropName, cPropValue))), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "track unknown token", method: "POST", url: c + "/track", body: form("data", b64(unknownTrack)), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "track missing event", method: "POST", url: c + "/track", body: form("data", b64(`{"properties":`+props+`}`)), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "track bad insert_id", method: "POST", url: c + "/track", body: form("data", b64(fmt.Sprintf(`{"event":"x","properties":{"token":%q,"distinct_id":%q,"$insert_id":%q}}`, dev.Token, cDistinctID, cInsertID))), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "track oversized body", method: "POST", url: c + "/track", body: oversized, header: formHdr(map[string]string{"Expect": "100-continue"}), logged: true, wantStatus: 413},
		{name: "track bad gzip", method: "POST", url: c + "/track", body: []byte("data=" + cEmail), header: formHdr(map[string]string{"Content-Encoding": "gzip"}), logged: true},
		{name: "track bad callback", method: "GET", url: c + "/track?callback=" + url.QueryEscape(cCallback) + "&data=" + url.QueryEscape(b64(track)), header: browser},
		{name: "track PII in query", method: "GET", url: c + "/track/" + pii + "&data=" + url.QueryEscape(b64(track)), header: browser, wantStatus: 200, wantBody: "1"},
		{name: "track wrong method", method: "PUT", url: c + "/track" + pii, body: []byte(track), header: browser, wantStatus: 405},
		// /engage and /groups.
		{name: "engage base64", method: "POST", url: c + "/engage", body: form("data", b64("["+engage+"]")), header: formHdr(nil)},
		{name: "engage JSON", method: "GET", url: c + "/engage?data=" + url.QueryEscape(engage), header: browser},
		{name: "engage bad base64", method: "POST", url: c + "/engage", body: form("data", "%%"+cDistinctID), header: formHdr(nil), logged: true},
		{name: "engage unknown operation", method: "POST", url: c + "/engage", body: form("data", b64(fmt.Sprintf(`{"$token":%q,"$distinct_id":%q,"$explode":{%q:%q}}`, dev.Token, cDistinctID, cPropName, cPropValue))), header: formHdr(nil), logged: true},
		{name: "engage unknown token", method: "POST", url: c + "/engage", body: form("data", b64(unknownEngage)), header: formHdr(nil), logged: true},
		{name: "groups", method: "POST", url: c + "/groups", body: form("data", b64(groups)), header: formHdr(nil)},
		{name: "groups bad JSON", method: "POST", url: c + "/groups", body: form("data", b64(groups[:len(groups)-8])), header: formHdr(nil), logged: true},
		// /import.
		{name: "import JSON", method: "POST", url: c + "/import?strict=1", body: []byte("[" + track + "]"), header: map[string]string{"Content-Type": "application/json", "Authorization": basic(dev.APISecret, "")}, wantStatus: 200},
		{name: "import NDJSON gzip", method: "POST", url: c + "/import?project_id=" + dev.ProjectID, body: gzipped(track + "\n" + track + "\n"), header: map[string]string{"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip", "Authorization": basic(dev.ServiceAccount.Username, dev.ServiceAccount.Secret)}, wantStatus: 200},
		{name: "import bad JSON", method: "POST", url: c + "/import", body: []byte("[" + track[:len(track)-10]), header: map[string]string{"Content-Type": "application/json", "Authorization": basic(dev.APISecret, "")}, logged: true},
		{name: "import wrong credentials", method: "POST", url: c + "/import?project_id=" + dev.ProjectID, body: []byte("[" + track + "]"), header: map[string]string{"Content-Type": "application/json", "Authorization": basic(cBasicUser, cBasicPass)}, logged: true, wantStatus: 401},
		{name: "import service account, wrong secret", method: "POST", url: c + "/import?project_id=" + dev.ProjectID, body: []byte("[" + track + "]"), header: map[string]string{"Content-Type": "application/json", "Authorization": basic(dev.ServiceAccount.Username, dev.Token)}, logged: true, wantStatus: 401},
		// The collector with canary credentials.
		{name: "strict track unknown token", method: "POST", url: strict + "/track", body: form("data", b64(unknownTrack)), header: formHdr(nil), logged: true, wantStatus: 200, wantBody: "0"},
		{name: "strict engage unknown token", method: "POST", url: strict + "/engage", body: form("data", b64(unknownEngage)), header: formHdr(nil), logged: true},
		{name: "strict import no credentials", method: "POST", url: strict + "/import", body: []byte("[" + track + "]"), header: map[string]string{"Content-Type": "application/json"}, logged: true, wantStatus: 401},
		{name: "strict import wrong secret", method: "POST", url: strict + "/import", body: []byte("[" + track + "]"), header: map[string]string{"Content-Type": "application/json", "Authorization": basic(cBasicUser, "")}, logged: true, wantStatus: 401},
		{name: "strict import wrong service account", method: "POST", url: strict + "/import?project_id=1001", body: []byte("[" + track + "]"), header: map[string]string{"Content-Type": "application/json", "Authorization": basic(cSAUser, cBasicPass)}, logged: true, wantStatus: 401},
		{name: "strict import project secret", method: "POST", url: strict + "/import", body: []byte("[" + track + "]"), header: map[string]string{"Content-Type": "application/json", "Authorization": basic(cKnownSecret, "")}, wantStatus: 200},
		{name: "strict import service account", method: "POST", url: strict + "/import?project_id=1001", body: []byte("[" + track + "]"), header: map[string]string{"Content-Type": "application/json", "Authorization": basic(cSAUser, cSASecret)}, wantStatus: 200},
		// The opt-out pages and the privacy API.
		{name: "optout page", method: "POST", url: c + "/optout" + pii, body: form("veil_csrf", pageToken), header: optOutForm(map[string]string{"Origin": c}), wantStatus: 200},
		{name: "optout page from another site", method: "POST", url: c + "/optin" + pii, body: form("veil_csrf", pageToken), header: optOutForm(map[string]string{"Origin": "https://shop.example", "Sec-Fetch-Site": "cross-site"}), wantStatus: 403},
		{name: "optout page without its token", method: "POST", url: c + "/optin" + pii, body: form("veil_csrf", cCookie), header: optOutForm(map[string]string{"Origin": c}), wantStatus: 403},
		{name: "privacy API wrong token", method: "POST", url: adm + "/api/veil/optouts?token=" + dev.Token, body: []byte(`{"distinct_ids":["` + cDistinctID + `"]}`), header: map[string]string{"Authorization": "Bearer " + cAdminWrong}, wantStatus: 401},
		{name: "privacy API opt-out", method: "POST", url: adm + "/api/veil/optouts?token=" + dev.Token, body: []byte(`{"distinct_ids":["` + cDistinctID2 + `"]}`), header: map[string]string{"Authorization": bearer, "Content-Type": "application/json"}, wantStatus: 200},
		{name: "privacy API bad JSON", method: "POST", url: adm + "/api/veil/optouts?token=" + dev.Token, body: []byte(`{"distinct_ids":["` + cDistinctID2 + `"`), header: map[string]string{"Authorization": bearer}, wantStatus: 400},
		{name: "privacy API deletion", method: "POST", url: adm + "/api/app/data-deletions/v3.0/?token=" + dev.Token, body: []byte(`{"distinct_ids":["` + cDistinctID2 + `"],"compliance_type":"GDPR"}`), header: map[string]string{"Authorization": bearer, "Content-Type": "application/json"}, wantStatus: 200},
		{name: "privacy API retrieval", method: "POST", url: adm + "/api/app/data-retrievals/v3.0/?token=" + dev.Token, body: []byte(`{"distinct_ids":["` + cDistinctID + `"]}`), header: map[string]string{"Authorization": bearer, "Content-Type": "application/json"}, wantStatus: 200},
	}

	before := scrape(t, s.ep.Metrics)
	var logged []string // request ids whose rejection must be in the log
	for _, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			req, err := http.NewRequest(r.method, r.url, bytes.NewReader(r.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range r.header {
				req.Header.Set(k, v)
			}
			a := do(t, req)
			switch {
			case a.status == http.StatusNotFound:
				t.Errorf("answered 404: the endpoint does not exist")
			case r.wantStatus != 0 && a.status != r.wantStatus:
				t.Errorf("answered %d %q, want %d", a.status, a.body, r.wantStatus)
			case r.wantBody != "" && a.body != r.wantBody:
				t.Errorf("answered %q, want %q", a.body, r.wantBody)
			}
			if r.logged {
				if a.requestID == "" {
					t.Errorf("no X-Request-Id in the answer")
				}
				logged = append(logged, a.requestID)
			}
			t.Logf("%d %.80q", a.status, a.body)
		})
	}

	// Straight into the raw topic, as a broken or hostile producer would:
	// the worker's decode and dead-letter paths get the canaries too.
	raw := app.DefaultConfig().Kafka.RawTopic
	w := kafkax.NewWriter([]string{s.ep.Kafka}, raw, kafkax.DefaultWriterConfig(), s.log.Named("test-producer"))
	defer w.Close()
	envelope := func(v int, ip string) []byte {
		b, err := event.MarshalEnvelope(&event.Envelope{
			Version: v, Kind: event.KindTrack, Project: devstack.ProjectName, Endpoint: "/track",
			ReceivedAt: time.Now().UnixMilli(), IP: ip, UserAgent: cUserAgent, RequestID: cDistinctID,
			Event: json.RawMessage(track),
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	key := event.Key(devstack.ProjectName, cDistinctID)
	msgs := []kafka.Message{
		{Key: key, Value: envelope(event.EnvelopeVersion, cIPv4)},
		{Key: key, Value: envelope(event.EnvelopeVersion, cIPv4+".999")}, // malformed address: dead-lettered
		{Key: key, Value: []byte("not an envelope: " + cDistinctID + " " + cEmail + " " + cPropValue)},
		{Key: key, Value: envelope(99, cIPv6)}, // unknown version: dead-lettered
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("writing to the raw topic: %v", err)
	}
	const wantDead = 3
	series := `veil_worker_events_dead_lettered_total{reason="decode"}`
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := scrape(t, s.ep.Metrics)[series] - before[series]
		if got == wantDead {
			break
		}
		if got > wantDead || time.Now().After(deadline) {
			t.Fatalf("%s grew by %v, want %d", series, got, wantDead)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Let the worker's batch (sink.max_age) and the privacy tasks run.
	time.Sleep(3 * time.Second)

	log := s.logs.String()
	for _, id := range logged {
		if !strings.Contains(log, `"request_id":"`+id+`"`) {
			t.Errorf("no log line for rejected request %s: the test would not see a leak there", id)
		}
	}
	if n := strings.Count(log, `"msg":"event dead-lettered"`); n < wantDead {
		t.Errorf("%d dead-letter log lines, want at least %d", n, wantDead)
	}
	// VEIL_OBSTEST_LOG=FILE keeps the captured log for reading.
	if path := os.Getenv("VEIL_OBSTEST_LOG"); path != "" {
		if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
			t.Error(err)
		}
	}
	for _, l := range leaks(log, secrets) {
		t.Errorf("personal data or a secret in the log: %s", l)
	}
	t.Logf("searched %d log lines (%d bytes) for %d canaries in %d forms each", strings.Count(log, "\n"), len(log), len(secrets), len(variants("x")))
}
