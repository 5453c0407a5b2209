package ingest

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzTrackBody feeds arbitrary bodies to /track: whatever arrives, the
// answer is 200, 413 or 503 with Mixpanel's body, never a 500 or a panic.
func FuzzTrackBody(f *testing.F) {
	for _, s := range []string{
		"data=" + url.QueryEscape(b64(evA)),
		"data=" + b64("["+evA+","+evB+"]"),
		"data=" + url.QueryEscape("["+evA+"]"),
		"[" + evA + "]",
		"data=%%%",
		"data=" + b64(`{"event":"\ud83d\ude00","properties":{"token":"tok-shop","k":"\xed\xa0\xbd"}}`),
		`{"event":null}`,
		"data=" + b64(`[1,2,"x",null,{}]`),
	} {
		f.Add(s)
	}
	c, _, _ := newTestCollector(f, nil)
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/track", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		c.Handler().ServeHTTP(rec, r)
		switch rec.Code {
		case 200, 413:
		default:
			t.Fatalf("status %d for body %q", rec.Code, body)
		}
		if b := rec.Body.String(); b != "0" && b != "1" {
			t.Fatalf("body %q", b)
		}
	})
}

// FuzzDecodeData checks the `data` decoder alone: it returns JSON-ish bytes
// or a RequestError, never panics.
func FuzzDecodeData(f *testing.F) {
	for _, s := range []string{b64(evA), "[" + evA + "]", "e30", "e30=", "e3 0", "-_-_", ""} {
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
