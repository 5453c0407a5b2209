package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// RequestError is a problem with a whole request. Its message is safe to
// send back to the client and to log: it never quotes the request's content.
type RequestError struct {
	Status int // HTTP status to answer with
	Reason string
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

func badRequest(reason, format string, args ...any) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) *RequestError {
	return &RequestError{Status: http.StatusRequestEntityTooLarge, Reason: reasonTooLarge, Msg: fmt.Sprintf(format, args...)}
}

// readBody reads the request body into buf, decompressing it when it is
// gzip-encoded. limit bounds the body after decompression, so a small gzip
// bomb is cut off at the limit; a body over the limit is an error rather
// than silently cut. It returns how many bytes came over the wire.
func readBody(r *http.Request, buf *bytes.Buffer, limit int64) (wire int64, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return 0, nil
	}
	counted := &countingReader{r: r.Body}
	var src io.Reader = counted
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		if n := r.ContentLength; n > 0 && n <= limit {
			buf.Grow(int(n))
		}
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(counted)
		if err != nil {
			return counted.n, badRequest(reasonMalformed, "body is not valid gzip")
		}
		defer zr.Close()
		src = zr
	default:
		return 0, &RequestError{Status: http.StatusUnsupportedMediaType, Reason: reasonMalformed,
			Msg: "unsupported Content-Encoding; send the body uncompressed or gzip-encoded"}
	}
	n, err := buf.ReadFrom(io.LimitReader(src, limit+1))
	if n > limit {
		return counted.n, tooLarge("request body exceeds %d bytes", limit)
	}
	if err != nil {
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
			return counted.n, badRequest(reasonMalformed, "body is not valid gzip")
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return counted.n, tooLarge("request body exceeds %d bytes", limit)
		}
		return counted.n, badRequest(reasonMalformed, "could not read the request body")
	}
	return counted.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// payload is what a Mixpanel ingestion request carries.
type payload struct {
	// data is JSON text: one object, an array, or newline-delimited objects.
	data []byte
	// params are the query parameters merged with the form fields.
	params url.Values
	// fromParam says data came in a `data` parameter, the way SDKs send
	// it, rather than as a JSON body.
	fromParam bool
	// ndjson says the body was declared application/x-ndjson.
	ndjson bool
}

// extractPayload finds the JSON payload of a request: the `data` parameter
// of a form body or of the query string, or a JSON body. Form bodies come as
// application/x-www-form-urlencoded or, from navigator.sendBeacon, as
// text/plain.
func extractPayload(r *http.Request, body []byte, query url.Values) (payload, error) {
	p := payload{params: query}
	trimmed := bytes.TrimSpace(body)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	p.ndjson = ct == "application/x-ndjson" || ct == "application/jsonl" || ct == "application/x-jsonlines"
	if len(trimmed) > 0 {
		if p.ndjson || trimmed[0] == '[' || trimmed[0] == '{' {
			p.data = trimmed
			return p, nil
		}
		form, data, err := parseForm(trimmed)
		if err != nil {
			return p, err
		}
		// Form fields (verbose, ip, ...) count as parameters too; the
		// Python library sends them there.
		if len(form) > 0 {
			merged := make(url.Values, len(query)+len(form))
			for k, v := range query {
				merged[k] = v
			}
			for k, v := range form {
				merged[k] = append(append([]string(nil), v...), merged[k]...)
			}
			p.params = merged
		}
		if data != nil {
			// The body's data wins over the query's.
			b, err := decodeDataBytes(data)
			if err != nil {
				return p, err
			}
			p.data, p.fromParam = b, true
			return p, nil
		}
	}
	data := ""
	for _, v := range p.params["data"] {
		if v != "" {
			data = v
			break
		}
	}
	if data == "" {
		return p, badRequest(reasonMalformed, "no data parameter and no JSON body")
	}
	b, err := decodeData(data)
	if err != nil {
		return p, err
	}
	p.data = b
	p.fromParam = true
	return p, nil
}

// decodeData turns a `data` value into JSON: raw JSON as the Python library
// sends it, or base64 in any of the spellings SDKs produce (standard or
// URL-safe alphabet, with or without padding, and with '+' turned into ' '
// by a form decoder because the Node library does not escape it).
func decodeData(s string) ([]byte, error) {
	return decodeDataBytes([]byte(s))
}

// decodeDataBytes is decodeData on bytes the caller gives up: base64 is
// cleaned up in place.
func decodeDataBytes(t []byte) ([]byte, error) {
	t = bytes.TrimSpace(t)
	if len(t) > 0 && (t[0] == '[' || t[0] == '{') {
		return t, nil
	}
	urlSafe := false
	n := 0
	for _, c := range t {
		switch c {
		case ' ':
			c = '+'
		case '-', '_':
			urlSafe = true
		case '=', '\n', '\r', '\t':
			continue // padding and line breaks carry nothing
		}
		t[n] = c
		n++
	}
	t = t[:n]
	enc := base64.RawStdEncoding
	if urlSafe {
		enc = base64.RawURLEncoding
	}
	out := make([]byte, enc.DecodedLen(len(t)))
	m, err := enc.Decode(out, t)
	if err != nil {
		return nil, badRequest(reasonMalformed, "data is neither JSON nor valid base64")
	}
	if m == 0 {
		return nil, badRequest(reasonMalformed, "data is empty")
	}
	return out[:m], nil
}

// parseForm reads an application/x-www-form-urlencoded body. The data
// field, which is nearly all of it, is unescaped into its own buffer without
// passing through strings; the other fields are returned as values. It
// refuses what url.ParseQuery refuses: bad escapes and ';' separators.
func parseForm(body []byte) (form url.Values, data []byte, err error) {
	bad := badRequest(reasonMalformed, "body is neither a form nor JSON")
	for len(body) > 0 {
		field := body
		if i := bytes.IndexByte(body, '&'); i >= 0 {
			field, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if len(field) == 0 {
			continue
		}
		if bytes.IndexByte(field, ';') >= 0 {
			return nil, nil, bad
		}
		k, v, _ := bytes.Cut(field, []byte{'='})
		if string(k) == "data" && data == nil {
			if data, err = unescapeForm(v); err != nil {
				return nil, nil, bad
			}
			if len(bytes.TrimSpace(data)) == 0 {
				data = nil // an empty data field, as if absent
			}
			continue
		}
		key, err1 := url.QueryUnescape(string(k))
		val, err2 := url.QueryUnescape(string(v))
		if err1 != nil || err2 != nil {
			return nil, nil, bad
		}
		if form == nil {
			form = url.Values{}
		}
		form[key] = append(form[key], val)
	}
	return form, data, nil
}

// unescapeForm decodes a form value: %XX escapes, and '+' for a space.
func unescapeForm(v []byte) ([]byte, error) {
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '%':
			if i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2]) {
				return nil, errors.New("bad escape")
			}
			out = append(out, unhex(v[i+1])<<4|unhex(v[i+2]))
			i += 2
		case '+':
			out = append(out, ' ')
		default:
			// Copy the run up to the next special byte at once.
			j := i + 1
			for j < len(v) && v[j] != '%' && v[j] != '+' {
				j++
			}
			out = append(out, v[i:j]...)
			i = j - 1
		}
	}
	return out, nil
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// splitRecords returns the records of a JSON payload without copying them:
// the elements of an array, or one or more objects one after another (a
// single object, or newline-delimited JSON). With ndjson set every non-blank
// line is a record, so that a bad line fails alone. At most max records are
// returned; total counts them all.
func splitRecords(b []byte, ndjson bool, max int) (recs [][]byte, total int, err error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, 0, badRequest(reasonMalformed, "data is empty")
	}
	keep := func(r []byte) {
		if total < max {
			recs = append(recs, r)
		}
		total++
	}
	switch {
	case ndjson:
		for len(b) > 0 {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			if line = bytes.TrimSpace(line); len(line) > 0 {
				keep(line)
			}
		}
	case b[0] == '[':
		i := skipSpace(b, 1)
		if i < len(b) && b[i] == ']' {
			i = skipSpace(b, i+1)
		} else {
			for {
				end, ok := skipValue(b, i)
				if !ok || end == i {
					return nil, 0, badRequest(reasonMalformed, "data is not valid JSON")
				}
				keep(b[i:end])
				i = skipSpace(b, end)
				if i < len(b) && b[i] == ',' {
					i = skipSpace(b, i+1)
					continue
				}
				if i < len(b) && b[i] == ']' {
					i = skipSpace(b, i+1)
					break
				}
				return nil, 0, badRequest(reasonMalformed, "data is not valid JSON")
			}
		}
		if i != len(b) {
			return nil, 0, badRequest(reasonMalformed, "data is not valid JSON")
		}
	case b[0] == '{':
		for i := 0; i < len(b); i = skipSpace(b, i) {
			if b[i] != '{' {
				return nil, 0, badRequest(reasonMalformed, "data is not valid JSON")
			}
			end, ok := skipValue(b, i)
			if !ok {
				return nil, 0, badRequest(reasonMalformed, "data is not valid JSON")
			}
			keep(b[i:end])
			i = end
		}
	default:
		return nil, 0, badRequest(reasonMalformed, "data must be a JSON object or array")
	}
	if total == 0 {
		return nil, 0, badRequest(reasonMalformed, "data holds no events")
	}
	return recs, total, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the JSON value that starts at b[i]. It only
// follows strings and nesting; the value's content is checked when it is
// decoded, so a malformed record fails alone.
func skipValue(b []byte, i int) (int, bool) {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			i++
			for i < len(b) && b[i] != '"' {
				if b[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(b) {
				return 0, false
			}
			i++
			if depth == 0 {
				return i, true
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i, true
			}
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i, true
			}
		}
		i++
	}
	return i, depth == 0
}
