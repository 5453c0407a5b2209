package ingest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/veilhq/veil/event"
)

const (
	updSet   = `{"$token":"tok-shop","$distinct_id":"u-1","$set":{"plan":"pro"}}`
	grpSet   = `{"$token":"tok-shop","$group_key":"company","$group_id":"acme","$set":{"size":10}}`
	evImport = `{"event":"signup","properties":{"distinct_id":"u-1","time":1700000000,"$insert_id":"imp-1"}}`
)

// TestEndpointPaths sends one record to every endpoint, with and without
// the trailing slash mixpanel-browser uses, by GET and by POST.
func TestEndpointPaths(t *testing.T) {
	tests := []struct {
		path, record string
		kind         event.Kind
		endpoint     string
	}{
		{"/track", evA, event.KindTrack, "/track"},
		{"/track/", evA, event.KindTrack, "/track"},
		{"/engage", updSet, event.KindEngage, "/engage"},
		{"/engage/", updSet, event.KindEngage, "/engage"},
		{"/groups", grpSet, event.KindGroups, "/groups"},
		{"/groups/", grpSet, event.KindGroups, "/groups"},
		{"/import", evImport, event.KindTrack, "/import"},
		{"/import/", evImport, event.KindTrack, "/import"},
	}
	for _, tt := range tests {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(method+" "+tt.path, func(t *testing.T) {
				c, p, _ := newTestCollector(t, nil)
				var req *http.Request
				if method == http.MethodGet {
					req = get(tt.path, b64(tt.record))
				} else {
					req = post(tt.path, "application/x-www-form-urlencoded", formB64(tt.record))
				}
				req.SetBasicAuth("sec-shop", "")
				resp := do(t, c, req)
				if resp.status != 200 || resp.body != "1" {
					t.Fatalf("got %d %q, want 200 \"1\"", resp.status, resp.body)
				}
				envs := envelopes(t, p)
				if len(envs) != 1 || envs[0].Kind != tt.kind || envs[0].Endpoint != tt.endpoint || envs[0].Project != "shop" {
					t.Fatalf("envelopes %+v", envs)
				}
			})
		}
	}
	t.Run("unknown sub-path", func(t *testing.T) {
		c, _, _ := newTestCollector(t, nil)
		if resp := do(t, c, get("/track/more", b64(evA))); resp.status != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.status)
		}
	})
}

// TestEncodings covers every way SDKs encode a request body.
func TestEncodings(t *testing.T) {
	batch := "[" + evA + "," + evB + "]"
	tests := []struct {
		name    string
		req     func(t *testing.T) *http.Request
		events  int
		wantAns string
	}{
		{"GET data base64", func(*testing.T) *http.Request { return get("/track", b64(evA)) }, 1, "1"},
		{"GET data raw JSON", func(*testing.T) *http.Request { return get("/track", evA) }, 1, "1"},
		{"POST form base64, URL-encoded (mixpanel-browser)", func(*testing.T) *http.Request {
			return post("/track/?ip=1&_=1732270000000", "application/x-www-form-urlencoded", formB64(batch))
		}, 2, "1"},
		{"POST form base64 with raw '+' (Node library)", func(*testing.T) *http.Request {
			// '>>>' and '~~~' make '+' and '/' appear in the base64.
			data := b64(`{"event":"a>>>b","properties":{"token":"tok-shop","k":"~~~~>>>"}}`)
			if !strings.Contains(data, "+") {
				panic("test payload has no '+'")
			}
			return post("/track?ip=0&verbose=0", "application/x-www-form-urlencoded", []byte("data="+data))
		}, 1, "1"},
		{"POST form raw JSON (Python library)", func(*testing.T) *http.Request {
			return post("/track", "application/x-www-form-urlencoded", []byte("data="+url.QueryEscape(batch)+"&verbose=1&ip=0"))
		}, 2, `{"status":1,"error":null}`},
		{"POST JSON object body", func(*testing.T) *http.Request {
			return post("/track", "application/json", []byte(evA))
		}, 1, "1"},
		{"POST JSON array body", func(*testing.T) *http.Request {
			return post("/track", "application/json", []byte(batch))
		}, 2, "1"},
		{"POST JSON body without a content type", func(*testing.T) *http.Request {
			return post("/track", "", []byte(batch))
		}, 2, "1"},
		{"sendBeacon text/plain form", func(*testing.T) *http.Request {
			return post("/track/?ip=1", "text/plain;charset=UTF-8", formB64(batch))
		}, 2, "1"},
		{"gzip form (Java library)", func(t *testing.T) *http.Request {
			r := post("/track", "application/x-www-form-urlencoded;charset=utf8", gz(t, formB64(batch)))
			r.Header.Set("Content-Encoding", "gzip")
			return r
		}, 2, "1"},
		{"gzip JSON body", func(t *testing.T) *http.Request {
			r := post("/track", "application/json", gz(t, []byte(batch)))
			r.Header.Set("Content-Encoding", "gzip")
			return r
		}, 2, "1"},
		{"URL-safe base64 without padding", func(*testing.T) *http.Request {
			return get("/track", base64.RawURLEncoding.EncodeToString([]byte(evB)))
		}, 1, "1"},
		{"base64 with line breaks", func(*testing.T) *http.Request {
			s := b64(batch)
			return get("/track", s[:20]+"\n"+s[20:])
		}, 2, "1"},
		{"newline-delimited objects in a JSON body", func(*testing.T) *http.Request {
			return post("/track", "application/json", []byte(evA+"\n"+evB+"\n"))
		}, 2, "1"},
		{"ndjson body", func(*testing.T) *http.Request {
			return post("/track", "application/x-ndjson", []byte(evA+"\n\n"+evB+"\r\n"))
		}, 2, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			resp := do(t, c, tt.req(t))
			if resp.status != 200 || resp.body != tt.wantAns {
				t.Fatalf("got %d %q, want 200 %q", resp.status, resp.body, tt.wantAns)
			}
			if got := len(envelopes(t, p)); got != tt.events {
				t.Fatalf("produced %d events, want %d", got, tt.events)
			}
		})
	}
}

func TestEncodingErrors(t *testing.T) {
	c0, _, _ := newTestCollector(t, nil)
	bomb := gz(t, bytes.Repeat([]byte("A"), int(c0.cfg.Limits.MaxBodyBytes)+1))
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		body   string
		reason string
	}{
		{"gzip bomb cut off at the body limit", func() *http.Request {
			r := post("/track", "application/x-www-form-urlencoded", bomb)
			r.Header.Set("Content-Encoding", "gzip")
			return r
		}, http.StatusRequestEntityTooLarge, `{"status":0,"error":"request exceeds max limit of 10485760 bytes"}`, reasonTooLarge},
		{"endless empty gzip members", func() *http.Request {
			empty := gz(t, nil)
			r := post("/track", "application/x-www-form-urlencoded", bytes.Repeat(empty, int(c0.cfg.Limits.MaxBodyBytes)/len(empty)+1))
			r.Header.Set("Content-Encoding", "gzip")
			return r
		}, http.StatusRequestEntityTooLarge, `{"status":0,"error":"request exceeds max limit of 10485760 bytes"}`, reasonTooLarge},
		{"corrupt gzip", func() *http.Request {
			r := post("/track", "application/x-www-form-urlencoded", []byte("data=not gzip"))
			r.Header.Set("Content-Encoding", "gzip")
			return r
		}, 200, `{"status":0,"error":"body is not valid gzip"}`, reasonMalformed},
		{"truncated gzip", func() *http.Request {
			z := gz(t, formB64(evA))
			r := post("/track", "application/x-www-form-urlencoded", z[:len(z)-6])
			r.Header.Set("Content-Encoding", "gzip")
			return r
		}, 200, `{"status":0,"error":"body is not valid gzip"}`, reasonMalformed},
		{"unsupported encoding", func() *http.Request {
			r := post("/track", "application/x-www-form-urlencoded", formB64(evA))
			r.Header.Set("Content-Encoding", "br")
			return r
		}, http.StatusUnsupportedMediaType, `{"status":0,"error":"unsupported Content-Encoding; send the body uncompressed or gzip-encoded"}`, reasonMalformed},
		{"empty array", func() *http.Request {
			return post("/track", "application/json", []byte(" [ ] "))
		}, 200, `{"status":0,"error":"data holds no events"}`, reasonMalformed},
		{"trailing garbage after the array", func() *http.Request {
			return post("/track", "application/json", []byte("["+evA+"] x"))
		}, 200, `{"status":0,"error":"data is not valid JSON"}`, reasonMalformed},
		{"missing comma between elements", func() *http.Request {
			return post("/track", "application/json", []byte("["+evA+" "+evB+"]"))
		}, 200, `{"status":0,"error":"data is not valid JSON"}`, reasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, nil)
			req := tt.req()
			req.URL.RawQuery = "verbose=1"
			resp := do(t, c, req)
			if resp.status != tt.status || resp.body != tt.body {
				t.Fatalf("got %d %q, want %d %q", resp.status, resp.body, tt.status, tt.body)
			}
			if n := len(envelopes(t, p)); n != 0 {
				t.Fatalf("produced %d", n)
			}
			if n := counter(t, reg, "veil_collector_events_rejected_total", tt.reason); n != 1 {
				t.Fatalf("%s counted %v times, want 1", tt.reason, n)
			}
		})
	}
}

// TestMalformedRecordFailsAlone: a record whose JSON is broken inside an
// otherwise well-formed array is rejected without its neighbours.
func TestMalformedRecordFailsAlone(t *testing.T) {
	c, p, _ := newTestCollector(t, nil)
	resp := do(t, c, post("/track?verbose=1", "application/json", []byte(`[`+evA+`,{"event":"x","properties":{"a":}},7,`+evB+`]`)))
	want := `{"status":1,"error":"event 1: not a JSON object with an event name and properties; event 2: not a JSON object with an event name and properties"}`
	if resp.status != 200 || resp.body != want {
		t.Fatalf("got %d %q, want %q", resp.status, resp.body, want)
	}
	if n := len(envelopes(t, p)); n != 2 {
		t.Fatalf("produced %d, want 2", n)
	}
}

// TestUTF8Repair sends what mixpanel-browser sends for emoji (CESU-8 inside
// base64) and other broken text: every event arrives, with the emoji intact
// and anything unreadable as U+FFFD.
func TestUTF8Repair(t *testing.T) {
	tests := []struct {
		name string
		data []byte // the JSON payload's bytes
		want string // the "k" property after decoding
	}{
		{"CESU-8 emoji from mixpanel-browser", cesu8(`{"event":"e","properties":{"token":"tok-shop","k":"a😀b"}}`), "a😀b"},
		{"CESU-8 in the event name too", cesu8(`{"event":"🎉","properties":{"token":"tok-shop","k":"🎉🎉"}}`), "🎉🎉"},
		{"lone high surrogate", []byte("{\"event\":\"e\",\"properties\":{\"token\":\"tok-shop\",\"k\":\"a\xed\xa0\xbdb\"}}"), "a\uFFFDb"},
		{"lone low surrogate", []byte("{\"event\":\"e\",\"properties\":{\"token\":\"tok-shop\",\"k\":\"a\xed\xb8\x80b\"}}"), "a\uFFFDb"},
		{"stray continuation byte", []byte("{\"event\":\"e\",\"properties\":{\"token\":\"tok-shop\",\"k\":\"a\x80b\"}}"), "a\uFFFDb"},
		{"Latin-1 byte", []byte("{\"event\":\"e\",\"properties\":{\"token\":\"tok-shop\",\"k\":\"caf\xe9\"}}"), "caf\uFFFD"},
		{"JSON surrogate-pair escape", []byte(`{"event":"e","properties":{"token":"tok-shop","k":"\ud83d\ude00"}}`), "😀"},
		{"JSON lone surrogate escape", []byte(`{"event":"e","properties":{"token":"tok-shop","k":"x\ud83dy"}}`), "x\uFFFDy"},
		{"valid 4-byte UTF-8 untouched", []byte(`{"event":"e","properties":{"token":"tok-shop","k":"😀"}}`), "😀"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			resp := do(t, c, post("/track/", "application/x-www-form-urlencoded", []byte("data="+url.QueryEscape(base64.StdEncoding.EncodeToString(tt.data)))))
			if resp.body != "1" {
				t.Fatalf("answer %q", resp.body)
			}
			evs := decodeAll(t, p)
			if len(evs) != 1 {
				t.Fatalf("%d events", len(evs))
			}
			if got := propOf(&evs[0].Properties, "k"); got != tt.want {
				t.Fatalf("k = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRepairUTF8(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{string(cesu8("😀")), "😀"},
		{string(cesu8("x😀y🎉z")), "x😀y🎉z"},
		{"\xed\xa0\xbd", "\uFFFD"},                   // high surrogate alone
		{"\xed\xa0\xbd\xed\xa0\xbd", "\uFFFD\uFFFD"}, // two highs
		{"\xed\xb8\x80\xed\xa0\xbd", "\uFFFD\uFFFD"}, // low then high
		{"\xed\xa0", "\uFFFD\uFFFD"},                 // cut short
		{"\xff\xfe", "\uFFFD\uFFFD"},
		{"é\x80", "é\uFFFD"},
	}
	for _, tt := range tests {
		if got := string(repairUTF8([]byte(tt.in))); got != tt.want {
			t.Errorf("repairUTF8(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	valid := []byte("already valid ✓")
	if got := repairUTF8(valid); &got[0] != &valid[0] {
		t.Error("valid input was copied")
	}
}

func TestSplitRecords(t *testing.T) {
	tests := []struct {
		in     string
		ndjson bool
		max    int
		want   []string
		total  int
		err    string
	}{
		{`{"a":1}`, false, 5, []string{`{"a":1}`}, 1, ""},
		{` [ {"a":"]"} , {"b":"\"}"} ] `, false, 5, []string{`{"a":"]"}`, `{"b":"\"}"}`}, 2, ""},
		{`[1,"x",null]`, false, 5, []string{`1`, `"x"`, `null`}, 3, ""},
		{"{\"a\":1}\n{\"b\":2}", false, 5, []string{`{"a":1}`, `{"b":2}`}, 2, ""},
		{"{\"a\":1}\nnot json\n{\"b\":2}", true, 5, []string{`{"a":1}`, `not json`, `{"b":2}`}, 3, ""},
		{`[{},{},{},{}]`, false, 2, []string{`{}`, `{}`}, 4, ""},
		{`[{"a":1}`, false, 5, nil, 0, "data is not valid JSON"},
		{`["unterminated]`, false, 5, nil, 0, "data is not valid JSON"},
		{`{"a":1} x`, false, 5, nil, 0, "data is not valid JSON"},
		{`"str"`, false, 5, nil, 0, "data must be a JSON object or array"},
		{`[]`, false, 5, nil, 0, "data holds no events"},
	}
	for _, tt := range tests {
		recs, total, err := splitRecords([]byte(tt.in), tt.ndjson, tt.max)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%q: error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		var got []string
		for _, r := range recs {
			got = append(got, string(r))
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || total != tt.total {
			t.Errorf("%q: got %q (total %d), want %q (total %d)", tt.in, got, total, tt.want, tt.total)
		}
	}
}

// TestProducedBytesDoNotAliasTheBody guards the pooled request buffers:
// nothing produced may alias them, since the next request reuses them.
func TestProducedBytesDoNotAliasTheBody(t *testing.T) {
	for _, form := range []bool{false, true} {
		t.Run(fmt.Sprintf("form=%v", form), func(t *testing.T) {
			c, p, _ := newTestCollector(t, nil)
			send := func(data string) {
				if form {
					do(t, c, post("/track", "application/x-www-form-urlencoded", formB64(data)))
				} else {
					do(t, c, post("/track", "application/json", []byte(data)))
				}
			}
			send("[" + evA + "," + evB + "]")
			before := decodeAll(t, p)
			// A second, different request reuses the buffers.
			send(`[{"event":"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz","properties":{"token":"tok-shop","distinct_id":"qqqqqqqqqqqqqqqqqqqqqqqqq"}}]`)
			after := decodeAll(t, p)
			if len(after) != 3 || before[0].Name != after[0].Name || before[1].DistinctID != after[1].DistinctID || string(p.Messages()[0].Key) != "shop\x00u-1" {
				t.Fatalf("produced messages changed when the buffers were reused: %+v vs %+v", before, after[:2])
			}
		})
	}
}
