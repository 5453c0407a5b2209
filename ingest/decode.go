package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/veilhq/veil/event/rules"
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

// A body's buffer grows by doubling, from bodyGrowMin (one step holds a
// single event) to steps of bodyGrowMax at most: it holds at most twice
// the bytes that arrived, and a client that declares a large
// Content-Length and sends a few bytes holds bodyGrowMin.
const (
	bodyGrowMin = 8 << 10
	bodyGrowMax = 4 << 20
)

// requestBody is a request's body as it is read. Each step of its
// buffer's growth is taken from the collector's budget first.
type requestBody struct {
	buf  []byte
	held int64 // what buf holds of the budget: its capacity, once reading began
}

// grow makes room for more bytes, to at most bound bytes in all. It
// reports false when the budget has no room for the step.
func (b *requestBody) grow(budget *bodyBudget, bound int64) bool {
	c := int64(cap(b.buf))
	n := min(c+min(max(c, bodyGrowMin), bodyGrowMax), bound)
	if !budget.take(n - b.held) {
		return false
	}
	b.held = n
	nb := make([]byte, len(b.buf), n)
	copy(nb, b.buf)
	b.buf = nb
	return true
}

// release gives back what the body held of the budget; its buffer may
// then serve another request, which takes it again.
func (b *requestBody) release(budget *bodyBudget) {
	budget.give(b.held)
	b.held = 0
}

// readBody reads the request body into body, decompressing it when it is
// gzip-encoded. limit bounds the body after decompression, so a small gzip
// bomb is cut off at the limit; a body over the limit is an error rather
// than silently cut. Memory grows with the bytes that arrive, in steps
// taken from budget; a step that does not fit is answered 503. It returns
// how many bytes came over the wire.
//
// counted is the reader that counts and bounds the wire bytes, given so
// that a request's scratch can hold it.
func readBody(r *http.Request, body *requestBody, limit int64, counted *countingReader, budget *bodyBudget) (wire int64, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return 0, nil
	}
	// Bound the bytes on the wire too: a compressed stream can be long and
	// still decompress to little (empty gzip members, say).
	*counted = countingReader{r: r.Body, left: limit + 1}
	var src io.Reader = counted
	// A declared length is believed only to stop the buffer from growing
	// past it, never to grow it ahead of the bytes.
	bound := limit + 1
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		if n := r.ContentLength; n > limit {
			return 0, tooLarge("request exceeds max limit of %d bytes", limit)
		} else if n >= 0 {
			bound = n + 1 // room to see the end without another step
		}
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(counted)
		if err != nil {
			return counted.n, badRequest(reasonMalformed, "body is not valid gzip")
		}
		defer zr.Close()
		src = io.LimitReader(zr, limit+1)
	default:
		return 0, &RequestError{Status: http.StatusUnsupportedMediaType, Reason: reasonMalformed,
			Msg: "unsupported Content-Encoding; send the body uncompressed or gzip-encoded"}
	}
	// A buffer from the pool is held as it is, or, when the budget has no
	// room for it, left to the garbage collector.
	body.buf = body.buf[:0]
	if c := int64(cap(body.buf)); c > 0 {
		if budget.take(c) {
			body.held = c
		} else {
			body.buf = nil
		}
	}
	for {
		if len(body.buf) == cap(body.buf) {
			if int64(len(body.buf)) >= bound {
				bound = limit + 1 // more than it declared
			}
			if int64(len(body.buf)) > limit {
				break
			}
			if !body.grow(budget, bound) {
				return counted.n, overloaded()
			}
		}
		n, err := src.Read(body.buf[len(body.buf):cap(body.buf)])
		body.buf = body.buf[:len(body.buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			if counted.n > limit {
				// A gzip stream cut off at the wire limit.
				return counted.n, tooLarge("request exceeds max limit of %d bytes", limit)
			}
			if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
				return counted.n, badRequest(reasonMalformed, "body is not valid gzip")
			}
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return counted.n, tooLarge("request exceeds max limit of %d bytes", limit)
			}
			return counted.n, badRequest(reasonMalformed, "could not read the request body")
		}
	}
	// Uncompressed, counted itself stops after limit+1 bytes.
	if int64(len(body.buf)) > limit || counted.n > limit {
		return counted.n, tooLarge("request exceeds max limit of %d bytes", limit)
	}
	return counted.n, nil
}

// overloaded is the answer to a request whose body does not fit in what
// the bodies in flight may hold: SDKs retry a 503.
func overloaded() *RequestError {
	return &RequestError{Status: http.StatusServiceUnavailable, Reason: reasonOverloaded,
		Msg: "the collector is busy; retry"}
}

// countingReader reads at most left bytes from r (as io.LimitReader does)
// and counts them.
type countingReader struct {
	r    io.Reader
	n    int64
	left int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.left -= int64(n)
	return n, err
}

// payload is what a Mixpanel ingestion request carries.
type payload struct {
	// data is JSON text: one object, an array, or newline-delimited objects.
	data []byte
	// form holds the fields of a form body other than data; nil when none.
	form url.Values
	// fromParam says the request sends its records in a `data` parameter
	// (a form body, or data in the query), the way SDKs that read 1/0
	// answers send them, rather than as a JSON body; also when that data
	// turns out not to decode.
	fromParam bool
	// ndjson says the body was declared application/x-ndjson.
	ndjson bool
}

// payloadBuffers are reused between requests for the data parameter:
// unescaped, then decoded from base64.
type payloadBuffers struct{ form, data []byte }

// extractPayload finds the JSON payload of a request: the `data` parameter
// of a form body or of the query string, or a JSON body. Form
// bodies come as application/x-www-form-urlencoded or, from
// navigator.sendBeacon, as text/plain. The payload may live in buf, which
// must outlive it.
func extractPayload(r *http.Request, body []byte, query *query, buf *payloadBuffers) (payload, error) {
	var p payload
	trimmed := bytes.TrimSpace(body)
	ct := mediaType(r.Header.Get("Content-Type"))
	p.ndjson = ct == "application/x-ndjson" || ct == "application/jsonl" || ct == "application/x-jsonlines"
	if len(trimmed) > 0 {
		if p.ndjson || trimmed[0] == '[' || trimmed[0] == '{' {
			p.data = trimmed
			return p, nil
		}
		// Not JSON: a form, as the SDKs that send data= post it.
		p.fromParam = true
		form, data, err := parseForm(trimmed, &buf.form)
		if err != nil {
			return p, err
		}
		// Form fields (verbose, ip, ...) count as parameters too; the
		// Python library sends them there.
		p.form = form
		if data != nil {
			// The body's data wins over the query's.
			b, err := decodeDataBytes(data, &buf.data)
			if err != nil {
				return p, err
			}
			p.data = b
			return p, nil
		}
	}
	// A form never holds data among its fields: only the query can.
	data := query.data
	if data == "" {
		return p, badRequest(reasonMalformed, "no data parameter and no JSON body")
	}
	p.fromParam = true
	b, err := decodeDataBytes([]byte(data), &buf.data)
	if err != nil {
		return p, err
	}
	p.data = b
	return p, nil
}

// decodeDataBytes turns a `data` value into JSON: raw JSON as the Python
// library sends it, or base64 in any of the spellings SDKs produce (standard
// or URL-safe alphabet, with or without padding, and with '+' turned into
// ' ' by a form decoder because the Node library does not escape it). t is
// given up to it (base64 is cleaned up in place); the result is decoded into
// *dst, which it grows as needed.
func decodeDataBytes(t []byte, dst *[]byte) ([]byte, error) {
	t = bytes.TrimSpace(t)
	if len(t) > 0 && (t[0] == '[' || t[0] == '{') {
		return t, nil
	}
	// The common spelling, padded standard base64, decodes directly.
	if len(t)%4 == 0 && len(t) > 0 {
		out := grow(dst, base64.StdEncoding.DecodedLen(len(t)))
		if m, err := base64.StdEncoding.Decode(out, t); err == nil && m > 0 {
			return out[:m], nil
		}
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
	out := grow(dst, enc.DecodedLen(len(t)))
	m, err := enc.Decode(out, t)
	if err != nil {
		return nil, badRequest(reasonMalformed, "data is neither JSON nor valid base64")
	}
	if m == 0 {
		return nil, badRequest(reasonMalformed, "data is empty")
	}
	return out[:m], nil
}

// grow returns (*b)[:n], reallocating when its capacity is short.
func grow(b *[]byte, n int) []byte {
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	*b = (*b)[:n]
	return *b
}

// errNotForm is built once rather than for every form parsed; nothing
// changes a RequestError once made.
var errNotForm = &RequestError{Status: http.StatusBadRequest, Reason: reasonMalformed, Msg: "body is neither a form nor JSON"}

// parseForm reads an application/x-www-form-urlencoded body. The data
// field, which is nearly all of it, is unescaped into *dst without passing
// through strings; the other fields are returned as values. It refuses what
// url.ParseQuery refuses: bad escapes and ';' separators.
func parseForm(body []byte, dst *[]byte) (form url.Values, data []byte, err error) {
	bad := errNotForm
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
		key, err := url.QueryUnescape(string(k))
		if err != nil {
			return nil, nil, bad
		}
		if key == "data" {
			if data != nil {
				if _, err := url.QueryUnescape(string(v)); err != nil {
					return nil, nil, bad // checked, as url.ParseQuery would
				}
				continue
			}
			d, err := unescapeForm((*dst)[:0], v)
			if err != nil {
				return nil, nil, bad
			}
			*dst = d
			if len(bytes.TrimSpace(d)) > 0 {
				data = d // the first non-empty data field
			}
			continue
		}
		val, err := url.QueryUnescape(string(v))
		if err != nil {
			return nil, nil, bad
		}
		if form == nil {
			form = url.Values{}
		}
		form[key] = append(form[key], val)
	}
	return form, data, nil
}

// unescapeForm appends the decoded form value v to out: %XX escapes, and
// '+' for a space.
func unescapeForm(out, v []byte) ([]byte, error) {
	if cap(out)-len(out) < len(v) {
		out = append(make([]byte, 0, len(out)+len(v)), out...)
	}
	for len(v) > 0 {
		// Copy the run up to the next escape at once, spaces undone.
		run := v
		i := bytes.IndexByte(v, '%')
		if i >= 0 {
			run = v[:i]
		}
		for {
			j := bytes.IndexByte(run, '+')
			if j < 0 {
				out = append(out, run...)
				break
			}
			out = append(append(out, run[:j]...), ' ')
			run = run[j+1:]
		}
		if i < 0 {
			break
		}
		if i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2]) {
			return nil, errors.New("bad escape")
		}
		out = append(out, unhex(v[i+1])<<4|unhex(v[i+2]))
		v = v[i+3:]
	}
	return out, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
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
	return appendRecords(nil, b, ndjson, max)
}

// appendRecords is splitRecords appending the records to recs.
func appendRecords(recs [][]byte, b []byte, ndjson bool, max int) ([][]byte, int, error) {
	total := 0
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
		i := rules.SkipWS(b, 1)
		if i < len(b) && b[i] == ']' {
			i = rules.SkipWS(b, i+1)
		} else {
			for {
				end, ok := skipValue(b, i)
				if !ok || end == i {
					return nil, 0, badRequest(reasonMalformed, "data is not valid JSON")
				}
				keep(b[i:end])
				i = rules.SkipWS(b, end)
				if i < len(b) && b[i] == ',' {
					i = rules.SkipWS(b, i+1)
					continue
				}
				if i < len(b) && b[i] == ']' {
					i = rules.SkipWS(b, i+1)
					break
				}
				return nil, 0, badRequest(reasonMalformed, "data is not valid JSON")
			}
		}
		if i != len(b) {
			return nil, 0, badRequest(reasonMalformed, "data is not valid JSON")
		}
	case b[0] == '{':
		for i := 0; i < len(b); i = rules.SkipWS(b, i) {
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

// skipValue returns the end of the JSON value that starts at b[i]. It only
// follows strings and nesting; the value's content is checked when it is
// decoded, so a malformed record fails alone.
func skipValue(b []byte, i int) (int, bool) {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			for i = rules.StringRun(b, i+1, false); i < len(b) && b[i] == '\\'; {
				i = rules.StringRun(b, i+2, false) // the escaped byte is not the end
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
