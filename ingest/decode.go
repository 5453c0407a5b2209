package ingest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
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

// readBody reads the request body, bounded by limit. A body over the limit
// is an error rather than silently cut.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, badRequest(reasonMalformed, "could not read the request body")
	}
	if int64(len(b)) > limit {
		return nil, &RequestError{Status: http.StatusRequestEntityTooLarge, Reason: reasonTooLarge,
			Msg: fmt.Sprintf("request body exceeds %d bytes", limit)}
	}
	return b, nil
}

// payload extracts the JSON payload of a Mixpanel ingestion request: the
// `data` parameter of the query string or of a form body, or a JSON body.
// It also returns the request's parameters (query merged with form fields).
func payload(r *http.Request, body []byte) ([]byte, url.Values, error) {
	params := r.URL.Query()
	if len(bytes.TrimSpace(body)) > 0 {
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		trimmed := bytes.TrimSpace(body)
		switch {
		case ct == "application/json" || trimmed[0] == '[' || trimmed[0] == '{':
			return trimmed, params, nil
		default:
			// Form bodies: application/x-www-form-urlencoded, and the
			// text/plain bodies of navigator.sendBeacon.
			form, err := url.ParseQuery(string(body))
			if err != nil {
				return nil, params, badRequest(reasonMalformed, "body is neither a form nor JSON")
			}
			for k, v := range form {
				params[k] = append(params[k], v...)
			}
		}
	}
	data := params.Get("data")
	if data == "" {
		return nil, params, badRequest(reasonMalformed, "no data parameter and no JSON body")
	}
	b, err := decodeData(data)
	if err != nil {
		return nil, params, err
	}
	return b, params, nil
}

// decodeData turns a `data` value into JSON: raw JSON as the Python library
// sends it, or base64 in any of the spellings SDKs produce (standard or
// URL-safe alphabet, with or without padding, and with '+' turned into ' '
// by a form decoder because the Node library does not escape it).
func decodeData(s string) ([]byte, error) {
	t := bytes.TrimSpace([]byte(s))
	if len(t) > 0 && (t[0] == '[' || t[0] == '{') {
		return t, nil
	}
	t = bytes.ReplaceAll(t, []byte{' '}, []byte{'+'})
	t = bytes.TrimRight(t, "=")
	enc := base64.RawStdEncoding
	if bytes.ContainsAny(t, "-_") {
		enc = base64.RawURLEncoding
	}
	out := make([]byte, enc.DecodedLen(len(t)))
	n, err := enc.Decode(out, t)
	if err != nil {
		return nil, badRequest(reasonMalformed, "data is neither JSON nor valid base64")
	}
	return out[:n], nil
}

// splitEvents returns the events of a JSON payload: one object or an array
// of them.
func splitEvents(b []byte) ([]json.RawMessage, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, badRequest(reasonMalformed, "data is empty")
	}
	switch b[0] {
	case '{':
		if !json.Valid(b) {
			return nil, badRequest(reasonMalformed, "data is not valid JSON")
		}
		return []json.RawMessage{b}, nil
	case '[':
		var list []json.RawMessage
		if err := json.Unmarshal(b, &list); err != nil {
			return nil, badRequest(reasonMalformed, "data is not valid JSON")
		}
		return list, nil
	}
	return nil, badRequest(reasonMalformed, "data must be a JSON object or array")
}

var errNotObject = errors.New("not a JSON object")
