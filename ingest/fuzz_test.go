package ingest

import (
	"github.com/veilhq/veil/event/rules"
	"github.com/veilhq/veil/internal/kafkatest"

	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/veilhq/veil/event"
)

// serveFuzz sends one request and checks what every answer must satisfy:
// a known status, Mixpanel's body, and produced messages the worker can
// decode. It returns the answer and the decoded events, and forgets them.
func serveFuzz(t *testing.T, c *Collector, p *kafkatest.Producer, r *http.Request) (*httptest.ResponseRecorder, []event.Event) {
	t.Helper()
	r.RemoteAddr = "198.51.100.20:5555"
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, r)
	switch rec.Code {
	case 200, 400, 401, 413, 415:
	default:
		t.Fatalf("status %d", rec.Code)
	}
	evs := decodeAll(t, p)
	p.Reset()
	return rec, evs
}

func checkPlain(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if b := rec.Body.String(); b != "0" && b != "1" {
		t.Fatalf("body %q", b)
	}
}

// FuzzTrackBody feeds arbitrary form or JSON bodies to /track: whatever
// arrives, the answer is Mixpanel's 1 or 0, never a 500 or a panic.
func FuzzTrackBody(f *testing.F) {
	for _, s := range []string{
		"data=" + url.QueryEscape(b64(evA)),
		"data=" + b64("["+evA+","+evB+"]"),
		"data=" + url.QueryEscape("["+evA+"]") + "&verbose=0&ip=0",
		"[" + evA + "]",
		evA + "\n" + evB,
		"data=%%%",
		"data=" + b64(`{"event":"\ud83d\ude00","properties":{"token":"tok-shop","k":"\xed\xa0\xbd"}}`),
		"data=" + b64(string(cesu8(`{"event":"😀","properties":{"token":"tok-shop"}}`))),
		`{"event":null}`,
		"data=" + b64(`[1,2,"x",null,{}]`),
		`[{"event":"e","properties":{"token":"tok-shop","a":[[[[1]]]]}}]`,
	} {
		f.Add(s)
	}
	c, p, _ := newTestCollector(f, nil)
	f.Fuzz(func(t *testing.T, body string) {
		rec, evs := serveFuzz(t, c, p, post("/track", "application/x-www-form-urlencoded", []byte(body)))
		if rec.Code != 200 && rec.Code != 413 {
			t.Fatalf("status %d", rec.Code)
		}
		checkPlain(t, rec)
		if (rec.Body.String() == "1") != (len(evs) > 0) {
			t.Fatalf("answer %q with %d events", rec.Body.String(), len(evs))
		}
		for _, ev := range evs {
			if ev.Name == "" || !utf8.ValidString(ev.Name) || len(ev.InsertID) == 0 || ev.Project != "shop" {
				t.Fatalf("event %+v", ev)
			}
		}
	})
}

// decodeData is decodeDataBytes on a string.
func decodeData(s string) ([]byte, error) {
	var dst []byte
	return decodeDataBytes([]byte(s), &dst)
}

// FuzzDecodeData checks the `data` decoder alone: it returns bytes or a
// RequestError, never panics.
func FuzzDecodeData(f *testing.F) {
	for _, s := range []string{b64(evA), "[" + evA + "]", "e30", "e30=", "e3 0", "-_-_", "", "e3\n0=", "{"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := decodeData(s)
		if err == nil && b == nil {
			t.Fatal("nil data without an error")
		}
		if err != nil {
			if _, ok := err.(*RequestError); !ok {
				t.Fatalf("error of type %T", err)
			}
		}
	})
}

// FuzzExtractPayload checks form and query decoding: whatever the body,
// the result is data or a RequestError, and data from a form's data field
// is what decodeData makes of it.
func FuzzExtractPayload(f *testing.F) {
	for _, s := range []struct{ body, ct, query string }{
		{"data=" + url.QueryEscape(b64(evA)), "application/x-www-form-urlencoded", "verbose=1"},
		{"data=" + b64(evA), "text/plain;charset=UTF-8", "ip=1&_=1"},
		{"[" + evA + "]", "application/json", ""},
		{evA + "\n" + evB, "application/x-ndjson", "strict=1"},
		{"", "", "data=" + url.QueryEscape(b64(evA))},
		{"a=1&data=&data=e30", "application/x-www-form-urlencoded", ""},
		{"%zz", "application/x-www-form-urlencoded", ""},
	} {
		f.Add(s.body, s.ct, s.query)
	}
	f.Fuzz(func(t *testing.T, body, ct, query string) {
		r := httptest.NewRequest(http.MethodPost, "/track", strings.NewReader(body))
		r.Header.Set("Content-Type", ct)
		q := parseQuery(query)
		p, err := extractPayload(r, []byte(body), &q, &payloadBuffers{})
		if err != nil {
			if _, ok := err.(*RequestError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if len(p.data) == 0 {
			t.Fatal("empty data without an error")
		}
	})
}

// FuzzParseForm holds the form parser to url.ParseQuery: the same bodies
// are refused, and the same fields come out, data first among them.
func FuzzParseForm(f *testing.F) {
	for _, s := range []string{"data=" + url.QueryEscape(b64(evA)) + "&verbose=1", "data=e30+&ip=0", "a=%zz", "a=1;b=2", "data=&data=e30", "&&data=%7B%7D", "k+1=v%20w", "=x", "data"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var dst []byte
		form, data, err := parseForm([]byte(body), &dst)
		want, wantErr := url.ParseQuery(body)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%q: parseForm error %v, url.ParseQuery error %v", body, err, wantErr)
		}
		if err != nil {
			return
		}
		wantData := ""
		for _, v := range want["data"] {
			if strings.TrimSpace(v) != "" {
				wantData = v
				break
			}
		}
		if string(data) != wantData {
			t.Fatalf("%q: data %q, want %q", body, data, wantData)
		}
		delete(want, "data")
		for k, v := range form {
			if !slices.Equal(v, want[k]) {
				t.Fatalf("%q: field %q = %q, want %q", body, k, v, want[k])
			}
		}
		if len(form) != len(want) {
			t.Fatalf("%q: fields %v, want %v", body, form, want)
		}
	})
}

// FuzzGzipBody: a gzip-encoded body gets the same answer as the same body
// sent plain, and arbitrary bytes claiming to be gzip are a clean error.
func FuzzGzipBody(f *testing.F) {
	for _, s := range []string{"data=" + url.QueryEscape(b64(evA)), "[" + evA + "," + evB + "]", "", "\x1f\x8b\x08\x00", "not gzip"} {
		f.Add([]byte(s))
	}
	c, p, _ := newTestCollector(f, func(c *Config) { c.Limits.MaxBodyBytes = 64 << 10 })
	f.Fuzz(func(t *testing.T, body []byte) {
		plain, plainEvs := serveFuzz(t, c, p, post("/track?verbose=1", "application/x-www-form-urlencoded", body))
		r := post("/track?verbose=1", "application/x-www-form-urlencoded", gz(t, body))
		r.Header.Set("Content-Encoding", "gzip")
		zipped, zippedEvs := serveFuzz(t, c, p, r)
		if plain.Code != zipped.Code || plain.Body.String() != zipped.Body.String() || len(plainEvs) != len(zippedEvs) {
			t.Fatalf("plain %d %q (%d events), gzip %d %q (%d events)", plain.Code, plain.Body, len(plainEvs), zipped.Code, zipped.Body, len(zippedEvs))
		}
		// The raw bytes as if they were gzip.
		r = post("/track", "application/x-www-form-urlencoded", body)
		r.Header.Set("Content-Encoding", "gzip")
		rec, _ := serveFuzz(t, c, p, r)
		checkPlain(t, rec)
	})
}

// FuzzRepairUTF8: the result is always valid UTF-8, valid input is left
// alone, repairing twice changes nothing more, and a CESU-8 encoding of any
// valid text repairs to the text itself.
func FuzzRepairUTF8(f *testing.F) {
	for _, s := range []string{"", "ascii", "é😀", string(cesu8("😀")), "\xed\xa0\xbd", "\xed\xb8\x80\xed\xa0", "\xff", "a\xed\xa0\xbd\xed\xb8\x80b"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := repairUTF8(b)
		if !utf8.Valid(out) {
			t.Fatalf("repairUTF8(%q) = %q is not valid UTF-8", b, out)
		}
		if utf8.Valid(b) && !bytes.Equal(out, b) {
			t.Fatalf("valid %q changed to %q", b, out)
		}
		if again := repairUTF8(out); !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q then %q", out, again)
		}
		if utf8.Valid(b) {
			if got := repairUTF8(cesu8(string(b))); !bytes.Equal(got, b) {
				t.Fatalf("CESU-8 of %q repaired to %q", b, got)
			}
		}
	})
}

// FuzzSplitRecords compares the record splitter with encoding/json: on a
// valid JSON array it finds exactly the array's elements.
func FuzzSplitRecords(f *testing.F) {
	for _, s := range []string{`[{"a":1},{"b":"]"}]`, `{"a":1}`, "{\"a\":1}\n{\"b\":2}", `[1,"x",[2,[3]],null]`, `["\\\""]`, `[`, `[{]`, "{}\n\nnot"} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("{\"a\":1}\nbad\n\n{\"b\":2}"), true)
	f.Fuzz(func(t *testing.T, b []byte, ndjson bool) {
		recs, total, err := splitRecords(b, ndjson, 100)
		if err != nil {
			if _, ok := err.(*RequestError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if total < len(recs) || len(recs) > 100 || total == 0 {
			t.Fatalf("%d records of %d", len(recs), total)
		}
		for _, r := range recs {
			if len(r) == 0 || (!ndjson && (rules.SkipWS(r, 0) != 0 || bytes.ContainsAny(r[len(r)-1:], " \t\r\n"))) {
				t.Fatalf("record %q is empty or has JSON whitespace around it", r)
			}
		}
		var list []json.RawMessage
		if !ndjson && json.Unmarshal(b, &list) == nil && list != nil {
			if total != len(list) {
				t.Fatalf("split %d records, encoding/json finds %d", total, len(list))
			}
			for i := range recs {
				if !json.Valid(recs[i]) {
					t.Fatalf("record %d %q is not the array's element", i, recs[i])
				}
			}
		}
	})
}

// FuzzEngage feeds arbitrary updates to /engage and /groups: every message
// produced decodes to a known operation, and the answer is 1 exactly when
// something was produced.
func FuzzEngage(f *testing.F) {
	for _, s := range []string{
		updSet, grpSet,
		`{"$token":"tok-shop","$distinct_id":"u","$add":{"n":1},"$unset":["a"],"$delete":"","$ip":"0"}`,
		`{"$token":"tok-shop","$distinct_id":7,"$union":{"t":["a"]},"$remove":{"t":"b"},"$append":{"l":{"x":1}},"$set_once":{"f":true},"$time":1795348800}`,
		`{"$token":"tok-shop","$group_key":"k","$group_id":1,"$set":{"a":[1]}}`,
		`[{"$token":"tok-shop","$distinct_id":"u","$add":{"n":"1"}},{}]`,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	c, p, _ := newTestCollector(f, nil)
	f.Fuzz(func(t *testing.T, data string, groups bool) {
		path := "/engage"
		kind := event.KindEngage
		if groups {
			path, kind = "/groups", event.KindGroups
		}
		rec, evs := serveFuzz(t, c, p, post(path, "application/x-www-form-urlencoded", formB64(data)))
		checkPlain(t, rec)
		if (rec.Body.String() == "1") != (len(evs) > 0) {
			t.Fatalf("answer %q with %d messages", rec.Body.String(), len(evs))
		}
		for _, ev := range evs {
			if ev.Kind != kind || !event.IsProfileOp(ev.Name) || len(ev.InsertID) != 32 {
				t.Fatalf("event %+v", ev)
			}
			if kind == event.KindEngage && ev.DistinctID == "" {
				t.Fatalf("engage update without a distinct_id: %+v", ev)
			}
		}
	})
}

// FuzzImport feeds arbitrary JSON and ndjson bodies to /import with
// strict=1: the answer is always Mixpanel's import JSON, and its counts add
// up with what was produced.
func FuzzImport(f *testing.F) {
	for _, s := range []string{
		"[" + evImport + "]",
		evImport + "\n" + `{"event":"e","properties":{"time":1}}`,
		`[{"event":"e","properties":{"distinct_id":"u","time":1700000000,"$insert_id":"x y"}}]`,
		`[{"event":"e","properties":{"distinct_id":"u","time":"1700000000"}},1]`,
		`[{`,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	c, p, _ := newTestCollector(f, nil)
	f.Fuzz(func(t *testing.T, body string, ndjson bool) {
		ct := "application/json"
		if ndjson {
			ct = "application/x-ndjson"
		}
		r := post("/import?strict=1", ct, []byte(body))
		r.SetBasicAuth("sec-shop", "")
		rec, evs := serveFuzz(t, c, p, r)
		var ans struct {
			Code               int            `json:"code"`
			Status             string         `json:"status"`
			NumRecordsImported *int           `json:"num_records_imported"`
			FailedRecords      []failedRecord `json:"failed_records"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || ans.Code != rec.Code || ans.Status != http.StatusText(rec.Code) {
			t.Fatalf("answer %d %q", rec.Code, rec.Body)
		}
		if ans.NumRecordsImported != nil && *ans.NumRecordsImported != len(evs) {
			t.Fatalf("num_records_imported %d, produced %d", *ans.NumRecordsImported, len(evs))
		}
		if (rec.Code == 400) != (len(ans.FailedRecords) > 0) && ans.NumRecordsImported != nil {
			t.Fatalf("status %d with %d failed records", rec.Code, len(ans.FailedRecords))
		}
		for _, ev := range evs {
			if ev.Endpoint != "/import" || ev.Time.Year() < 1971 {
				t.Fatalf("event %+v", ev)
			}
		}
	})
}
