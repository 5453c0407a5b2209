package ingest

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// shape is the form of an answer's body. Which one a request gets is
// docs/compatibility.md's answer matrix; TestAnswerMatrix holds it.
type shape uint8

const (
	// shapePlain is Mixpanel's default: 1 when at least one record was
	// accepted, 0 when none was.
	shapePlain shape = iota
	// shapeVerbose is {"status":1,"error":null} / {"status":0,"error":"..."}
	// (verbose=1).
	shapeVerbose
	// shapeImport is {"code":200,"num_records_imported":N,"status":"OK"} and
	// its error forms: /import with a JSON body, and strict=1 anywhere.
	shapeImport
)

// answerStyle is how a request wants to be answered, read from its
// parameters.
type answerStyle struct {
	shape shape
	// strict reports invalid records as a 400 with failed_records
	// (strict=1); otherwise the valid records' success is the answer.
	strict bool
	// callback wraps the answer for JSONP: callback(1).
	callback string
	// img answers a 1×1 transparent GIF whatever happened (img=1).
	img bool
	// redirect answers 302 to this URL whatever happened: link tracking
	// in e-mails and notifications (redirect=URL).
	redirect string
}

// jsonpCallback is what a callback parameter may be: a JavaScript
// identifier path such as mp.callbacks.cb_1, jQuery123_456 or
// mixpanel._jsc[12345] (mixpanel-browser's own), nothing that could be
// more than a function reference.
var jsonpCallback = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*|\[[0-9]{1,16}\])*$`)

// noopCallback is the callback mixpanel-browser sends when it wants a
// verbose answer over JSONP but has no function to call.
const noopCallback = "(function(){})"

const maxCallbackLen = 128

func validCallback(cb string) bool {
	return cb == noopCallback || (len(cb) <= maxCallbackLen && jsonpCallback.MatchString(cb))
}

// maxRedirectLen bounds a redirect URL: a link's destination, not a
// payload.
const maxRedirectLen = 2048

// validRedirect reports whether a redirect parameter may be followed: an
// absolute http or https URL without user info (which can disguise the
// host), to a host collector.redirect_hosts allows when it lists any.
func (c *Collector) validRedirect(raw string) bool {
	if len(raw) > maxRedirectLen {
		return false
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Hostname() == "" {
		return false
	}
	return c.cfg.redirectAllowed(u.Hostname())
}

// badWrapper checks the parameters that make an answer something a page
// can run or a browser follows: a callback must be a function reference,
// a redirect an http(s) URL to an allowed host. It returns the refusal for
// a bad one, and unwraps st so that the refusal is answered as it is, in
// the verbose shape when the plain one would not say what is wrong.
func (c *Collector) badWrapper(st *answerStyle) *RequestError {
	var re *RequestError
	switch {
	case st.callback != "" && !validCallback(st.callback):
		re = badRequest(reasonInvalidParameter, "callback must be a JavaScript identifier path such as mp.callbacks.cb_1")
	case st.redirect != "" && !c.validRedirect(st.redirect):
		re = badRequest(reasonInvalidParameter, "redirect must be an http or https URL to a host collector.redirect_hosts allows")
	default:
		return nil
	}
	st.callback, st.redirect, st.img = "", "", false
	if st.shape == shapePlain {
		st.shape = shapeVerbose
	}
	return re
}

// styleFor reads the answer style from a request's parameters (query and
// form fields); callback, img and redirect, which only make sense for a
// script, an image or a link, only from the query.
//
// fromParam says the records came in a data parameter, as the libraries
// that read 1/0 or verbose answers send them (mixpanel-browser, and the
// Node and Python libraries even on /import). /import with a JSON or
// ndjson body answers in its own shape whatever verbose says: the Go
// library sends verbose=1 and reads num_records_imported, the Java library
// reads code and status.
func styleFor(ep *endpoint, p *params, fromParam bool) answerStyle {
	s := answerStyle{
		strict:   p.get(qStrict) == "1",
		callback: p.query.first[qCallback],
		img:      p.query.first[qImg] == "1",
		redirect: p.query.first[qRedirect],
	}
	switch {
	case s.strict:
		s.shape = shapeImport
	case ep.kind == kindImport && !fromParam:
		s.shape = shapeImport
	case p.get(qVerbose) == "1":
		s.shape = shapeVerbose
	default:
		s.shape = shapePlain
	}
	return s
}

// result is what became of a request's records.
type result struct {
	accepted int // records accepted (events, or profile updates)
	errs     []*EventError
}

// transparentGIF is a 1×1 transparent GIF, the answer to img=1.
var transparentGIF, _ = base64.StdEncoding.DecodeString("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

// Bodies answered as they are, shared: write only reads them.
var (
	bodyZero = []byte("0")
	bodyOne  = []byte("1")
	// What json.Marshal makes of verboseBody with no error;
	// TestConstantBodies holds them equal.
	bodyVerboseOK   = []byte(`{"status":1,"error":null}`)
	bodyVerboseNone = []byte(`{"status":0,"error":null}`)
)

type verboseBody struct {
	Status int     `json:"status"`
	Error  *string `json:"error"`
}

// failedRecord is one entry of failed_records, named as Mixpanel's OpenAPI
// (StrictInvalid) and its libraries name them: mixpanel-go decodes
// insert_id, not $insert_id.
type failedRecord struct {
	Index    int    `json:"index"`
	InsertID string `json:"insert_id"`
	Field    string `json:"field"`
	Message  string `json:"message"`
}

type importBody struct {
	Code               int            `json:"code"`
	Error              string         `json:"error,omitempty"`
	FailedRecords      []failedRecord `json:"failed_records,omitempty"`
	NumRecordsImported *int           `json:"num_records_imported,omitempty"`
	Status             string         `json:"status"`
}

// answerResult answers a request whose records were handled one by one.
func (c *Collector) answerResult(w http.ResponseWriter, st answerStyle, res result) int {
	status, body := resultBody(st, res)
	return c.write(w, st, status, body)
}

// answerError answers a request that failed as a whole.
func (c *Collector) answerError(w http.ResponseWriter, st answerStyle, re *RequestError) int {
	status, body := errorBody(st, re)
	return c.write(w, st, status, body)
}

func resultBody(st answerStyle, res result) (status int, body []byte) {
	status = http.StatusOK
	switch st.shape {
	case shapePlain:
		body = bodyZero
		if res.accepted > 0 {
			body = bodyOne
		}
	case shapeVerbose:
		switch {
		case len(res.errs) == 0 && res.accepted > 0:
			return status, bodyVerboseOK
		case len(res.errs) == 0:
			return status, bodyVerboseNone
		}
		v := verboseBody{Status: 1}
		if res.accepted == 0 {
			v.Status = 0
		}
		msg := joinErrors(res.errs)
		v.Error = &msg
		body, _ = json.Marshal(v)
	case shapeImport:
		n := res.accepted
		b := importBody{Code: http.StatusOK, NumRecordsImported: &n, Status: "OK"}
		if st.strict && len(res.errs) > 0 {
			status = http.StatusBadRequest
			b.Code, b.Status = status, http.StatusText(status)
			b.Error = "some data points in the request failed validation"
			b.FailedRecords = make([]failedRecord, len(res.errs))
			for i, e := range res.errs {
				b.FailedRecords[i] = failedRecord{Index: e.Index, InsertID: e.InsertID, Field: e.Field, Message: e.Msg}
			}
		}
		body, _ = json.Marshal(b)
	}
	return status, body
}

func errorBody(st answerStyle, re *RequestError) (status int, body []byte) {
	status = re.Status
	switch st.shape {
	case shapePlain, shapeVerbose:
		if status == http.StatusBadRequest {
			// Mixpanel answers a bad /track payload with 200 and body 0;
			// SDKs treat other statuses as retryable, and retrying
			// cannot fix it.
			status = http.StatusOK
		}
		if st.shape == shapePlain {
			body = bodyZero
		} else {
			body, _ = json.Marshal(verboseBody{Status: 0, Error: &re.Msg})
		}
	case shapeImport:
		body, _ = json.Marshal(importBody{Code: status, Error: re.Msg, Status: http.StatusText(status)})
	}
	return status, body
}

// write sends an answer in the request's style: as is, as a redirect, as
// a GIF, or wrapped for JSONP.
// It returns the status sent.
func (c *Collector) write(w http.ResponseWriter, st answerStyle, status int, body []byte) int {
	h := w.Header()
	h["Cache-Control"] = hvNoCache
	h["X-Content-Type-Options"] = hvNoSniff
	switch {
	case st.redirect != "":
		// The person who clicked the link goes on whatever became of the
		// event; there is nobody to retry it.
		status = http.StatusFound
		h["Location"] = []string{st.redirect}
		body = nil
	case st.img:
		h["Content-Type"] = hvGIF
		body = transparentGIF
	case st.callback != "":
		// A script that failed to load never runs its callback, so JSONP
		// answers 200 and lets the body say what happened.
		status = http.StatusOK
		h["Content-Type"] = hvJavaScript
		wrapped := make([]byte, 0, len(st.callback)+len(body)+2)
		wrapped = append(wrapped, st.callback...)
		wrapped = append(wrapped, '(')
		wrapped = append(wrapped, body...)
		body = append(wrapped, ')')
	case st.shape == shapePlain:
		h["Content-Type"] = hvPlain
	default:
		h["Content-Type"] = hvJSON
	}
	if len(body) < len(hvLengths) {
		h["Content-Length"] = hvLengths[len(body)]
	} else {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
	return status
}

// hvLengths are the Content-Length values of short answers.
var hvLengths = func() (v [64][]string) {
	for n := range v {
		v[n] = []string{strconv.Itoa(n)}
	}
	return v
}()

func joinErrors(errs []*EventError) string {
	const show = 5
	var b strings.Builder
	for i, e := range errs {
		if i == show {
			b.WriteString("; and " + strconv.Itoa(len(errs)-show) + " more")
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// cors lets browsers call the ingestion endpoints from any page, with
// credentials (mixpanel-browser sends withCredentials so that the opt-out
// cookie arrives). With credentials the origin must be echoed, never "*".
func cors(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	setConst(h, "Vary", hvOrigin)
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	setConst(h, "Access-Control-Allow-Credentials", hvTrue)
	setConst(h, "Access-Control-Expose-Headers", hvExpose)
}

// Header values every response carries, shared rather than allocated for
// each: net/http only reads them, and Header.Add appends to a full slice,
// which copies it first.
var (
	hvOrigin     = []string{"Origin"}
	hvTrue       = []string{"true"}
	hvExpose     = []string{"Retry-After, X-Request-Id"}
	hvNoCache    = []string{"no-cache, no-store, must-revalidate"}
	hvNoSniff    = []string{"nosniff"}
	hvGIF        = []string{"image/gif"}
	hvJavaScript = []string{"text/javascript; charset=utf-8"}
	hvPlain      = []string{"text/plain; charset=utf-8"}
	hvJSON       = []string{"application/json"}
)

// setConst sets the canonical header key to a shared value, or adds the
// value when the header is already there.
func setConst(h http.Header, key string, v []string) {
	if len(h[key]) == 0 {
		h[key] = v
		return
	}
	h.Add(key, v[0])
}

// preflight answers a CORS preflight (OPTIONS) request.
func preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Allow", "GET, POST, OPTIONS")
	if r.Header.Get("Origin") != "" {
		h.Add("Vary", "Access-Control-Request-Headers")
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		if req := r.Header.Values("Access-Control-Request-Headers"); len(req) > 0 {
			if list := headerList(req); list != "" {
				h.Set("Access-Control-Allow-Headers", list)
			}
		}
		if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
			h.Set("Access-Control-Allow-Private-Network", "true")
		}
		h.Set("Access-Control-Max-Age", "86400")
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// headerList echoes the requested header names, keeping only characters a
// header name may have.
func headerList(values []string) string {
	var b strings.Builder
	for _, v := range values {
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" || len(name) > 64 || strings.IndexFunc(name, func(r rune) bool {
				return !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
			}) >= 0 {
				continue
			}
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(name)
		}
	}
	return b.String()
}
