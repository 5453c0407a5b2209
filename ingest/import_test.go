package ingest

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/veilhq/veil/event"
)

func withServiceAccount(c *Config) {
	c.Projects[0].ID = "1001"
	c.Projects = append(c.Projects, Project{Name: "blog", ID: "1002", Token: "tok-blog", Secret: "sec-blog"})
	c.ServiceAccounts = []ServiceAccount{{Username: "importer.sa", Secret: "sa-secret", Projects: []string{"1001"}}}
}

func TestImportAuth(t *testing.T) {
	tests := []struct {
		name          string
		user, pass    string
		noAuth        bool
		query         string
		status        int
		body, project string
	}{
		{"project secret as user name", "sec-shop", "", false, "", 200, `{"code":200,"num_records_imported":1,"status":"OK"}`, "shop"},
		{"project token as user name", "tok-blog", "", false, "", 200, `{"code":200,"num_records_imported":1,"status":"OK"}`, "blog"},
		{"service account with project_id", "importer.sa", "sa-secret", false, "?project_id=1001", 200, `{"code":200,"num_records_imported":1,"status":"OK"}`, "shop"},
		{"service account, project it may not import into", "importer.sa", "sa-secret", false, "?project_id=1002", 401, `{"code":401,"error":"Invalid credentials","status":"Unauthorized"}`, ""},
		{"service account without project_id", "importer.sa", "sa-secret", false, "", 401, `{"code":401,"error":"Invalid credentials","status":"Unauthorized"}`, ""},
		{"service account, wrong secret", "importer.sa", "nope", false, "?project_id=1001", 401, `{"code":401,"error":"Invalid credentials","status":"Unauthorized"}`, ""},
		{"unknown secret", "guess", "", false, "", 401, `{"code":401,"error":"Invalid credentials","status":"Unauthorized"}`, ""},
		{"secret as password", "", "sec-shop", false, "", 401, `{"code":401,"error":"/import needs HTTP Basic credentials: a service account with project_id, or the project secret or token as user name","status":"Unauthorized"}`, ""},
		{"no credentials", "", "", true, "", 401, `{"code":401,"error":"/import needs HTTP Basic credentials: a service account with project_id, or the project secret or token as user name","status":"Unauthorized"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, withServiceAccount)
			r := post("/import"+tt.query, "application/json", []byte("["+evImport+"]"))
			if !tt.noAuth {
				r.SetBasicAuth(tt.user, tt.pass)
			}
			resp := do(t, c, r)
			if resp.status != tt.status || resp.body != tt.body {
				t.Fatalf("got %d %q, want %d %q", resp.status, resp.body, tt.status, tt.body)
			}
			envs := envelopes(t, p)
			if tt.status == 200 {
				if len(envs) != 1 || envs[0].Project != tt.project {
					t.Fatalf("envelopes %+v", envs)
				}
				return
			}
			if len(envs) != 0 {
				t.Fatalf("produced %d", len(envs))
			}
			if resp.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if n := counter(t, reg, "veil_collector_events_rejected_total", reasonUnauthorized); n != 1 {
				t.Fatalf("unauthorized counted %v", n)
			}
		})
	}
	// accept_any_token opens the public token, never /import's secrets.
	for _, tt := range []struct {
		name       string
		user, pass string
		noAuth     bool
		status     int
	}{
		{"accept_any_token: project secret", "sec-shop", "", false, 200},
		{"accept_any_token: unknown secret", "anything", "", false, 401},
		{"accept_any_token: no credentials", "", "", true, 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, func(c *Config) { c.AcceptAnyToken = true; c.DefaultProject = "dev" })
			r := post("/import", "application/json", []byte(evImport))
			if !tt.noAuth {
				r.SetBasicAuth(tt.user, tt.pass)
			}
			resp := do(t, c, r)
			if resp.status != tt.status {
				t.Fatalf("got %d %q, want %d", resp.status, resp.body, tt.status)
			}
			envs := envelopes(t, p)
			if tt.status == 200 && (len(envs) != 1 || envs[0].Project != "shop") || tt.status != 200 && len(envs) != 0 {
				t.Fatalf("envelopes %+v", envs)
			}
		})
	}
}

// TestImportStrict: with strict=1, invalid events are listed in a 400 and the
// valid ones beside them are still imported.
func TestImportStrict(t *testing.T) {
	c, p, reg := newTestCollector(t, nil)
	batch := "[" + strings.Join([]string{
		evImport,
		`{"event":"old","properties":{"distinct_id":"u","time":1000,"$insert_id":"old-1"}}`,
		`{"event":"e","properties":{"time":1700000000}}`,
		`{"event":"e","properties":{"distinct_id":"u","time":1700000000,"$insert_id":"has space"}}`,
		`{"event":"later","properties":{"distinct_id":"u","time":1895348800,"$insert_id":"fut-1"}}`,
		`{"event":"e","properties":{"distinct_id":"u"}}`,
		`{"event":"ok2","properties":{"distinct_id":"","time":"1700000000.5"}}`,
	}, ",") + "]"
	r := post("/import?strict=1", "application/json", []byte(batch))
	r.SetBasicAuth("sec-shop", "")
	resp := do(t, c, r)
	want := `{"code":400,"error":"some data points in the request failed validation","failed_records":[` +
		`{"index":1,"insert_id":"old-1","field":"properties.time","message":"before 1971-01-01"},` +
		`{"index":2,"insert_id":"","field":"properties.distinct_id","message":"distinct_id is required by /import (use \"\" for events of no user)"},` +
		`{"index":3,"insert_id":"","field":"properties.$insert_id","message":"$insert_id must be 1 to 36 characters of A-Z, a-z, 0-9 and -"},` +
		`{"index":4,"insert_id":"fut-1","field":"properties.time","message":"more than 1h0m0s in the future"},` +
		`{"index":5,"insert_id":"","field":"properties.time","message":"time is required by /import"}],` +
		`"num_records_imported":2,"status":"Bad Request"}`
	if resp.status != 400 || resp.body != want {
		t.Fatalf("got %d\n%s\nwant\n%s", resp.status, resp.body, want)
	}
	evs := decodeAll(t, p)
	if len(evs) != 2 || evs[0].Name != "signup" || evs[1].Name != "ok2" || evs[1].Time.UnixMilli() != 1700000000500 {
		t.Fatalf("imported %+v", evs)
	}
	for reason, n := range map[string]float64{reasonTooOld: 1, reasonMissingID: 1, reasonInvalidInsertID: 1, reasonTooNew: 1, reasonMalformed: 1} {
		if got := counter(t, reg, "veil_collector_events_rejected_total", reason); got != n {
			t.Errorf("%s counted %v, want %v", reason, got, n)
		}
	}
}

func TestImportAnswers(t *testing.T) {
	bad := `{"event":"e","properties":{"time":1700000000}}`
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		body   string
		events int
	}{
		{"JSON body, not strict: invalid events are skipped", func() *http.Request {
			return post("/import", "application/json", []byte("["+evImport+","+bad+"]"))
		}, 200, `{"code":200,"num_records_imported":1,"status":"OK"}`, 1},
		{"ndjson body", func() *http.Request {
			return post("/import?strict=1", "application/x-ndjson", []byte(evImport+"\n"+`{"event":"x","properties":{"distinct_id":"u","time":1700000001}}`+"\n"))
		}, 200, `{"code":200,"num_records_imported":2,"status":"OK"}`, 2},
		{"ndjson with a broken line", func() *http.Request {
			return post("/import?strict=1", "application/x-ndjson", []byte(evImport+"\n{not json\n"))
		}, 400, `{"code":400,"error":"some data points in the request failed validation","failed_records":[{"index":1,"insert_id":"","field":"","message":"not a JSON object with an event name and properties"}],"num_records_imported":1,"status":"Bad Request"}`, 1},
		{"gzip ndjson body", func() *http.Request {
			var b bytes.Buffer
			for i := 0; i < 3; i++ {
				b.WriteString(evImport + "\n")
			}
			r := post("/import?strict=1", "application/x-ndjson", gz(t, b.Bytes()))
			r.Header.Set("Content-Encoding", "gzip")
			return r
		}, 200, `{"code":200,"num_records_imported":3,"status":"OK"}`, 3},
		{"Node library: GET data= base64, verbose=0", func() *http.Request {
			return get("/import?ip=0&verbose=0", b64(evImport))
		}, 200, "1", 1},
		{"Node library: POST form, verbose=1", func() *http.Request {
			return post("/import?ip=0&verbose=1", "application/x-www-form-urlencoded", []byte("data="+b64("["+evImport+","+bad+"]")))
		}, 200, `{"status":1,"error":"event 1: properties.distinct_id: distinct_id is required by /import (use \"\" for events of no user)"}`, 1},
		{"Python library: form data= raw JSON, verbose=1 in the body", func() *http.Request {
			return post("/import", "application/x-www-form-urlencoded", []byte("data="+url.QueryEscape("["+evImport+"]")+"&verbose=1&ip=0"))
		}, 200, `{"status":1,"error":null}`, 1},
		{"Node library: form data= that is not base64, still answered as a form", func() *http.Request {
			return post("/import?ip=0&verbose=0", "application/x-www-form-urlencoded", []byte("data=!!!"))
		}, 200, "0", 0},
		{"Node library: GET data= that is not base64, verbose=1", func() *http.Request {
			return get("/import?ip=0&verbose=1", "!!!")
		}, 200, `{"status":0,"error":"data is neither JSON nor valid base64"}`, 0},
		{"Go library: JSON body, verbose=1 and strict=0", func() *http.Request {
			return post("/import?strict=0&project_id=1001&verbose=1", "application/json", []byte("["+evImport+","+bad+"]"))
		}, 200, `{"code":200,"num_records_imported":1,"status":"OK"}`, 1},
		{"malformed JSON body", func() *http.Request {
			return post("/import?strict=1", "application/json", []byte("[{"))
		}, 400, `{"code":400,"error":"data is not valid JSON","status":"Bad Request"}`, 0},
		{"too many events", func() *http.Request {
			return post("/import", "application/json", []byte("["+strings.Repeat(evImport+",", 2000)+evImport+"]"))
		}, 413, `{"code":413,"error":"request has more than 2000 events","status":"Request Entity Too Large"}`, 0},
		{"body over 10 MB after decompression", func() *http.Request {
			big := []byte("[" + strings.Repeat(" ", 10<<20) + evImport + "]")
			r := post("/import", "application/json", gz(t, big))
			r.Header.Set("Content-Encoding", "gzip")
			return r
		}, 413, `{"code":413,"error":"request exceeds max limit of 10485760 bytes","status":"Request Entity Too Large"}`, 0},
		{"method not allowed", func() *http.Request {
			return post("/import", "application/json", nil).WithContext(t.Context())
		}, 405, `{"code":405,"error":"method not allowed; use GET or POST","status":"Method Not Allowed"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			r := tt.req()
			if tt.status == 405 {
				r.Method = http.MethodPut
			}
			r.SetBasicAuth("sec-shop", "")
			resp := do(t, c, r)
			if resp.status != tt.status || resp.body != tt.body {
				t.Fatalf("got %d %q\nwant %d %q", resp.status, resp.body, tt.status, tt.body)
			}
			if n := len(envelopes(t, p)); n != tt.events {
				t.Fatalf("produced %d, want %d", n, tt.events)
			}
		})
	}
}

func TestImportEnvelope(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	r := post("/import", "application/json", []byte(`{"event":"signup","properties":{"token":"tok-other","distinct_id":"u-1","time":31622400,"plan":"pro"}}`))
	r.SetBasicAuth("sec-shop", "")
	r.Header.Set("X-Forwarded-For", "203.0.113.9")
	do(t, c, r)
	envs := envelopes(t, p)
	if len(envs) != 1 {
		t.Fatalf("%d envelopes", len(envs))
	}
	env := envs[0]
	// The project is the authenticated one, whatever token the event names,
	// and the importing server's address is not the event's.
	if env.Project != "shop" || env.Kind != event.KindTrack || env.Endpoint != "/import" || env.IP != "" {
		t.Fatalf("envelope %+v", env)
	}
	// ip=1 asks for the request's address after all.
	r = post("/import?ip=1", "application/json", []byte(evImport))
	r.SetBasicAuth("sec-shop", "")
	do(t, c, r)
	if envs := envelopes(t, p); len(envs) != 2 || envs[1].IP != "198.51.100.20" {
		t.Fatalf("with ip=1: %+v", envs)
	}
	ev := decodeAll(t, p)[0]
	if ev.Time.UnixMilli() != 31622400000 || ev.DistinctID != "u-1" || len(ev.InsertID) != 32 || propOf(&ev.Properties, "token") != nil {
		t.Fatalf("event %+v", ev)
	}
}
