package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// post builds a POST with the given content type.
func post(path, contentType string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

// get builds a GET with data= in the query, the way the Node library sends
// single events and pixels do.
func get(path, data string) *http.Request {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return httptest.NewRequest(http.MethodGet, path+sep+"data="+url.QueryEscape(data), nil)
}

// formB64 is a form body carrying data= as URL-encoded base64.
func formB64(json string) []byte {
	return []byte("data=" + url.QueryEscape(b64(json)))
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type verboseAnswer struct {
	Status int     `json:"status"`
	Error  *string `json:"error"`
}

func parseVerbose(t testing.TB, body string) verboseAnswer {
	t.Helper()
	var v verboseAnswer
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("answer is not verbose JSON: %q", body)
	}
	return v
}

// counter reads one series of a counter vector by its first label value.
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	return testutil.ToFloat64(metricVec(t, reg, name, label))
}

// cesu8 encodes s the way mixpanel-browser's utf8Encode does: one UTF-16
// code unit at a time, so characters outside the BMP become two 3-byte
// surrogate sequences.
func cesu8(s string) []byte {
	var out []byte
	for _, u := range utf16.Encode([]rune(s)) {
		switch {
		case u < 0x80:
			out = append(out, byte(u))
		case u < 0x800:
			out = append(out, byte(0xC0|u>>6), byte(0x80|u&0x3F))
		default:
			out = append(out, byte(0xE0|u>>12), byte(0x80|(u>>6)&0x3F), byte(0x80|u&0x3F))
		}
	}
	return out
}

func readAll(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
