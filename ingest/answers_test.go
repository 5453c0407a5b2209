package ingest

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/veilhq/veil/internal/kafkatest"
)

// The answer matrix of docs/compatibility.md: for every endpoint, way of
// sending the records, verbose and strict, and outcome, the exact status,
// body and Content-Type a client gets back.
//
// Which shape a request is answered in (answerShapeFor) is the rule the
// docs state; what each shape says for each outcome is the table in
// TestAnswerMatrix.

// matrixEndpoint is one ingestion endpoint with records to send to it.
type matrixEndpoint struct {
	path    string
	import_ bool
	// valid are two records the endpoint accepts, one message each.
	valid []string
	// invalid is a record it rejects, and how the rejection reads.
	invalid                  string
	field, message, insertID string
}

var matrixEndpoints = []matrixEndpoint{
	{
		path: "/track",
		valid: []string{
			`{"event":"signup","properties":{"token":"tok-shop","distinct_id":"u-1","time":1795348800,"$insert_id":"ok-1"}}`,
			`{"event":"view","properties":{"token":"tok-shop","distinct_id":"u-2","time":1795348801,"$insert_id":"ok-2"}}`,
		},
		invalid: `{"properties":{"token":"tok-shop","distinct_id":"u-3","time":1795348802,"$insert_id":"bad-1"}}`,
		field:   "event", message: "event name is missing", insertID: "bad-1",
	},
	{
		path: "/engage",
		valid: []string{
			`{"$token":"tok-shop","$distinct_id":"u-1","$set":{"plan":"pro"}}`,
			`{"$token":"tok-shop","$distinct_id":"u-2","$set":{"plan":"free"}}`,
		},
		invalid: `{"$token":"tok-other","$distinct_id":"u-3","$set":{"plan":"pro"}}`,
		field:   "$token", message: "unknown project token",
	},
	{
		path: "/groups",
		valid: []string{
			`{"$token":"tok-shop","$group_key":"company","$group_id":"acme","$set":{"size":10}}`,
			`{"$token":"tok-shop","$group_key":"company","$group_id":"initech","$set":{"size":20}}`,
		},
		invalid: `{"$token":"tok-other","$group_key":"company","$group_id":"hooli","$set":{"size":30}}`,
		field:   "$token", message: "unknown project token",
	},
	{
		path: "/import", import_: true,
		valid: []string{
			`{"event":"signup","properties":{"distinct_id":"u-1","time":1700000000,"$insert_id":"ok-1"}}`,
			`{"event":"view","properties":{"distinct_id":"u-2","time":1700000001,"$insert_id":"ok-2"}}`,
		},
		invalid: `{"properties":{"distinct_id":"u-3","time":1700000002,"$insert_id":"bad-1"}}`,
		field:   "event", message: "event name is missing", insertID: "bad-1",
	},
}

// matrixEncoding is one way the SDKs send records.
type matrixEncoding struct {
	name string
	// body says the records are the body itself (JSON or ndjson), not a
	// data parameter.
	body bool
	// ndjson sends one record a line rather than a JSON array.
	ndjson bool
	// query says they travel in the URL: no body to be too large.
	query bool
	// req sends the records' JSON text.
	req func(t *testing.T, path, text string) *http.Request
}

func (e matrixEncoding) text(recs []string) string {
	if e.ndjson {
		return strings.Join(recs, "\n") + "\n"
	}
	return "[" + strings.Join(recs, ",") + "]"
}

var matrixEncodings = []matrixEncoding{
	{name: "JSON body (Go, Java, Swift libraries)", body: true, req: func(t *testing.T, path, text string) *http.Request {
		return post(path, "application/json", []byte(text))
	}},
	{name: "ndjson body", body: true, ndjson: true, req: func(t *testing.T, path, text string) *http.Request {
		return post(path, "application/x-ndjson", []byte(text))
	}},
	{name: "gzip JSON body", body: true, req: func(t *testing.T, path, text string) *http.Request {
		r := post(path, "application/json", gz(t, []byte(text)))
		r.Header.Set("Content-Encoding", "gzip")
		return r
	}},
	{name: "form data= base64 (mixpanel-browser, Node library)", req: func(t *testing.T, path, text string) *http.Request {
		return post(path, "application/x-www-form-urlencoded", formB64(text))
	}},
	{name: "form data= JSON (Python library)", req: func(t *testing.T, path, text string) *http.Request {
		return post(path, "application/x-www-form-urlencoded", []byte("data="+url.QueryEscape(text)))
	}},
	{name: "gzip form data= base64 (Java library)", req: func(t *testing.T, path, text string) *http.Request {
		r := post(path, "application/x-www-form-urlencoded;charset=utf8", gz(t, formB64(text)))
		r.Header.Set("Content-Encoding", "gzip")
		return r
	}},
	{name: "GET ?data= base64 (Node library, pixels)", query: true, req: func(t *testing.T, path, text string) *http.Request {
		return get(path, b64(text))
	}},
}

// Answer shapes.
const (
	answerPlain   = "plain"         // 1 or 0
	answerVerbose = "verbose"       // {"status":…,"error":…}
	answerImport  = "import"        // {"code":…,"num_records_imported":…,"status":…}
	answerStrict  = "import strict" // the same, with failed_records in a 400
)

// answerShapeFor is the rule of docs/compatibility.md: strict=1 asks for
// /import's answer with failed_records anywhere; /import answers a JSON or
// ndjson body in its own shape whatever verbose says (the Go library sends
// verbose=1 and reads num_records_imported); records in a data parameter
// are answered as /track answers them, 1/0 or verbose (the Node and Python
// libraries read status).
func answerShapeFor(ep matrixEndpoint, enc matrixEncoding, verbose, strict string) string {
	switch {
	case strict == "1":
		return answerStrict
	case ep.import_ && enc.body:
		return answerImport
	case verbose == "1":
		return answerVerbose
	}
	return answerPlain
}

type matrixAnswer struct {
	status int
	body   string
}

func TestAnswerMatrix(t *testing.T) {
	// What each shape answers for each outcome. In the bodies, {err0} and
	// {err1} stand for the verbose error naming the invalid record at index 0
	// or 1, and {failed0} and {failed1} for its failed_records entry.
	const (
		tooMany  = "request has more than 1 events"
		tooLarge = "request exceeds max limit of 512 bytes"
		limited  = "Project exceeded rate limits. Please retry the request with exponential backoff."
		down     = "temporarily unable to accept events; retry"
		badJSON  = "data is not valid JSON"
		failed   = "some data points in the request failed validation"
	)
	answers := map[string]map[string]matrixAnswer{
		answerPlain: {
			"all valid":       {200, `1`},
			"some invalid":    {200, `1`},
			"all invalid":     {200, `0`},
			"malformed":       {200, `0`},
			"too many events": {413, `0`},
			"body too large":  {413, `0`},
			"rate limited":    {429, `0`},
			"Kafka down":      {503, `0`},
		},
		answerVerbose: {
			"all valid":       {200, `{"status":1,"error":null}`},
			"some invalid":    {200, `{"status":1,"error":"{err1}"}`},
			"all invalid":     {200, `{"status":0,"error":"{err0}"}`},
			"malformed":       {200, `{"status":0,"error":"` + badJSON + `"}`},
			"too many events": {413, `{"status":0,"error":"` + tooMany + `"}`},
			"body too large":  {413, `{"status":0,"error":"` + tooLarge + `"}`},
			"rate limited":    {429, `{"status":0,"error":"` + limited + `"}`},
			"Kafka down":      {503, `{"status":0,"error":"` + down + `"}`},
		},
		answerImport: {
			"all valid":       {200, `{"code":200,"num_records_imported":2,"status":"OK"}`},
			"some invalid":    {200, `{"code":200,"num_records_imported":1,"status":"OK"}`},
			"all invalid":     {200, `{"code":200,"num_records_imported":0,"status":"OK"}`},
			"malformed":       {400, `{"code":400,"error":"` + badJSON + `","status":"Bad Request"}`},
			"unauthorized":    {401, `{"code":401,"error":"Invalid credentials","status":"Unauthorized"}`},
			"too many events": {413, `{"code":413,"error":"` + tooMany + `","status":"Request Entity Too Large"}`},
			"body too large":  {413, `{"code":413,"error":"` + tooLarge + `","status":"Request Entity Too Large"}`},
			"rate limited":    {429, `{"code":429,"error":"` + limited + `","status":"Too Many Requests"}`},
			"Kafka down":      {503, `{"code":503,"error":"` + down + `","status":"Service Unavailable"}`},
		},
		answerStrict: {
			"all valid":       {200, `{"code":200,"num_records_imported":2,"status":"OK"}`},
			"some invalid":    {400, `{"code":400,"error":"` + failed + `","failed_records":[{failed1}],"num_records_imported":1,"status":"Bad Request"}`},
			"all invalid":     {400, `{"code":400,"error":"` + failed + `","failed_records":[{failed0}],"num_records_imported":0,"status":"Bad Request"}`},
			"malformed":       {400, `{"code":400,"error":"` + badJSON + `","status":"Bad Request"}`},
			"unauthorized":    {401, `{"code":401,"error":"Invalid credentials","status":"Unauthorized"}`},
			"too many events": {413, `{"code":413,"error":"` + tooMany + `","status":"Request Entity Too Large"}`},
			"body too large":  {413, `{"code":413,"error":"` + tooLarge + `","status":"Request Entity Too Large"}`},
			"rate limited":    {429, `{"code":429,"error":"` + limited + `","status":"Too Many Requests"}`},
			"Kafka down":      {503, `{"code":503,"error":"` + down + `","status":"Service Unavailable"}`},
		},
	}
	contentType := map[string]string{
		answerPlain:   "text/plain; charset=utf-8",
		answerVerbose: "application/json",
		answerImport:  "application/json",
		answerStrict:  "application/json",
	}
	pad := `,"pad":"` + strings.Repeat("p", 600) + `"}`
	type outcome struct {
		name     string
		produced int // messages produced
		// records to send; nil sends a payload that is not JSON
		records func(ep matrixEndpoint) []string
		config  func(c *Config)
		before  func(t *testing.T, c *Collector, p *kafkatest.Producer)
	}
	outcomes := []outcome{
		{name: "all valid", produced: 2, records: func(ep matrixEndpoint) []string { return ep.valid }},
		{name: "some invalid", produced: 1, records: func(ep matrixEndpoint) []string { return []string{ep.valid[0], ep.invalid} }},
		{name: "all invalid", records: func(ep matrixEndpoint) []string { return []string{ep.invalid} }},
		{name: "malformed"},
		{name: "unauthorized", records: func(ep matrixEndpoint) []string { return ep.valid }},
		{name: "too many events", records: func(ep matrixEndpoint) []string { return ep.valid },
			config: func(c *Config) { c.Limits.MaxEventsPerRequest = 1 }},
		{name: "body too large", config: func(c *Config) { c.Limits.MaxBodyBytes = 512 },
			records: func(ep matrixEndpoint) []string {
				out := make([]string, len(ep.valid))
				for i, r := range ep.valid {
					out[i] = strings.TrimSuffix(r, "}") + pad
				}
				return out
			}},
		{name: "rate limited", records: func(ep matrixEndpoint) []string { return ep.valid },
			// A bucket of 2 events, emptied by a request before.
			config: func(c *Config) { c.Limits.RateLimit = 1; c.Limits.MaxEventsPerRequest = 2 },
			before: func(t *testing.T, c *Collector, p *kafkatest.Producer) {
				if resp := do(t, c, post("/track", "application/json", []byte("["+strings.Join(matrixEndpoints[0].valid, ",")+"]"))); resp.status != 200 {
					t.Fatalf("emptying the bucket: %d %q", resp.status, resp.body)
				}
				p.Reset()
			}},
		{name: "Kafka down", records: func(ep matrixEndpoint) []string { return ep.valid },
			before: func(t *testing.T, c *Collector, p *kafkatest.Producer) {
				p.Fail(errors.New("kafka: leader not available"))
			}},
	}
	params := []string{"", "0", "1"}

	for _, ep := range matrixEndpoints {
		failedRecord := func(i string) string {
			return `{"index":` + i + `,"insert_id":"` + ep.insertID + `","field":"` + ep.field + `","message":"` + ep.message + `"}`
		}
		fill := strings.NewReplacer(
			"{err0}", "event 0: "+ep.field+": "+ep.message,
			"{err1}", "event 1: "+ep.field+": "+ep.message,
			"{failed0}", failedRecord("0"),
			"{failed1}", failedRecord("1"),
		)
		for _, enc := range matrixEncodings {
			for _, o := range outcomes {
				if o.name == "unauthorized" && !ep.import_ || o.name == "body too large" && enc.query {
					continue // only /import takes credentials; a URL has no body
				}
				if o.name == "malformed" && enc.name == "ndjson body" {
					continue // each line is a record of its own: see "some invalid"
				}
				for _, verbose := range params {
					for _, strict := range params {
						var q []string
						if verbose != "" {
							q = append(q, "verbose="+verbose)
						}
						if strict != "" {
							q = append(q, "strict="+strict)
						}
						name := strings.TrimPrefix(ep.path, "/") + "/" + enc.name + "/" + o.name + "/verbose=" + verbose + ",strict=" + strict
						t.Run(name, func(t *testing.T) {
							shape := answerShapeFor(ep, enc, verbose, strict)
							if ep.import_ && o.name == "unauthorized" {
								// Credentials are checked before anything else, and
								// Mixpanel documents one answer for them.
								shape = answerImport
							}
							want, ok := answers[shape][o.name]
							if !ok {
								t.Fatalf("no answer for %s, %s", shape, o.name)
							}
							want.body = fill.Replace(want.body)

							c, p, _ := newTestCollector(t, o.config)
							if o.before != nil {
								o.before(t, c, p)
							}
							text := "[{" // what is left of an array cut short
							if o.records != nil {
								text = enc.text(o.records(ep))
							}
							path := ep.path
							if len(q) > 0 {
								path += "?" + strings.Join(q, "&")
							}
							r := enc.req(t, path, text)
							if ep.import_ {
								if o.name == "unauthorized" {
									r.SetBasicAuth("not-a-secret", "")
								} else {
									r.SetBasicAuth("sec-shop", "")
								}
							}
							resp := do(t, c, r)
							if resp.status != want.status || resp.body != want.body || resp.header.Get("Content-Type") != contentType[shape] {
								t.Fatalf("%s answer: got %d %q (%s)\nwant %d %q (%s)", shape,
									resp.status, resp.body, resp.header.Get("Content-Type"), want.status, want.body, contentType[shape])
							}
							if n := p.Len(); n != o.produced {
								t.Fatalf("produced %d messages, want %d", n, o.produced)
							}
							if resp.status == 429 || resp.status == 503 {
								if resp.header.Get("Retry-After") == "" {
									t.Error("no Retry-After")
								}
							}
							sdkReads(t, shape, resp, o.produced, ep.insertID)
						})
					}
				}
			}
		}
	}
}

// The types the official Go library decodes answers into, with its JSON
// names: github.com/mixpanel/mixpanel-go ingestion.go (ImportSuccess,
// ImportFailedValidationError, ImportFailedRecords, ImportGenericError)
// and http.go (VerboseError), as of v1.2.1 and unchanged since. They are
// mirrored here rather than imported, which would add the library to
// Veil's module for one test; sdktest drives the libraries themselves.
type (
	sdkImportSuccess struct {
		Code               int `json:"code"`
		NumRecordsImported int `json:"num_records_imported"`
		Status             any `json:"status"`
	}
	sdkImportFailedValidationError struct {
		Code                int                     `json:"code"`
		ApiError            string                  `json:"error"`
		Status              any                     `json:"status"`
		NumRecordsImported  int                     `json:"num_records_imported"`
		FailedImportRecords []sdkImportFailedRecord `json:"failed_records"`
	}
	sdkImportFailedRecord struct {
		Index    int    `json:"index"`
		InsertID string `json:"insert_id"`
		Field    string `json:"field"`
		Message  string `json:"message"`
	}
	sdkImportGenericError struct {
		Code     int    `json:"code"`
		ApiError string `json:"error"`
		Status   any    `json:"status"`
	}
	sdkVerboseError struct {
		ApiError string `json:"error"`
		Status   int    `json:"status"`
	}
)

// sdkReads reads an answer the way the official libraries do and checks
// that they understand what happened: mixpanel-go's Import switches on the
// status code and decodes the body by it, and mixpanel-java's import wants
// code 200 and status "OK"; mixpanel-go's Track, the Node and the Python
// libraries read a verbose answer's status; mixpanel-go's profile calls
// and mixpanel-java's track decode a plain answer as the number 1.
func sdkReads(t *testing.T, shape string, resp response, accepted int, insertID string) {
	t.Helper()
	decode := func(v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(resp.body), v); err != nil {
			t.Fatalf("the official library cannot decode the %d answer %q: %v", resp.status, resp.body, err)
		}
	}
	switch shape {
	case answerImport, answerStrict:
		switch resp.status {
		case http.StatusOK:
			var s sdkImportSuccess
			decode(&s)
			if s.Code != 200 || s.Status != "OK" || s.NumRecordsImported != accepted {
				t.Fatalf("the libraries read %+v, want code 200, status OK, %d imported", s, accepted)
			}
		case http.StatusBadRequest:
			var e sdkImportFailedValidationError
			decode(&e)
			if e.Code != 400 || e.NumRecordsImported != accepted || e.ApiError == "" {
				t.Fatalf("mixpanel-go reads %+v", e)
			}
			for _, f := range e.FailedImportRecords {
				if f.InsertID != insertID || f.Field == "" || f.Message == "" {
					t.Fatalf("mixpanel-go reads the failed record %+v, want insert_id %q", f, insertID)
				}
			}
		default:
			var e sdkImportGenericError
			decode(&e)
			if e.Code != resp.status || e.ApiError == "" || e.Status != http.StatusText(resp.status) {
				t.Fatalf("mixpanel-go reads %+v from a %d", e, resp.status)
			}
		}
	case answerVerbose:
		var v sdkVerboseError
		decode(&v)
		if ok := resp.status == 200 && accepted > 0; (v.Status == 1) != ok {
			t.Fatalf("the libraries read status %d from a %d answer with %d accepted", v.Status, resp.status, accepted)
		}
	case answerPlain:
		var n int
		decode(&n)
		if ok := resp.status == 200 && accepted > 0; (n == 1) != ok {
			t.Fatalf("the libraries read %d from a %d answer with %d accepted", n, resp.status, accepted)
		}
	}
}
