package ingest

import (
	"mime"
	"net/url"
	"strings"
)

// The query parameters the collector reads.
type queryKey uint8

const (
	qVerbose queryKey = iota
	qStrict
	qCallback
	qImg
	qIP
	qProjectID
	qData
	qRedirect
	numQueryKeys
)

var queryKeyNames = [numQueryKeys]string{"verbose", "strict", "callback", "img", "ip", "project_id", "data", "redirect"}

func queryKeyOf(name string) (queryKey, bool) {
	switch name {
	case "verbose":
		return qVerbose, true
	case "strict":
		return qStrict, true
	case "callback":
		return qCallback, true
	case "img":
		return qImg, true
	case "ip":
		return qIP, true
	case "project_id":
		return qProjectID, true
	case "data":
		return qData, true
	case "redirect":
		return qRedirect, true
	}
	return 0, false
}

// query is what the collector reads of a query string, in one pass and
// without the map url.ParseQuery builds: the first value of each key it
// knows, and the first non-empty data. Pairs that url.ParseQuery skips (a
// ';' in them, a bad escape) are skipped. FuzzQueryParams holds it to
// url.ParseQuery.
type query struct {
	first [numQueryKeys]string
	has   [numQueryKeys]bool
	data  string // the first data value that is not empty
}

func parseQuery(q string) query {
	var out query
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, val, _ := strings.Cut(pair, "=")
		if escaped(k) {
			u, err := url.QueryUnescape(k)
			if err != nil {
				continue
			}
			k = u
		}
		key, known := queryKeyOf(k)
		if !known || out.has[key] && (key != qData || out.data != "") {
			// Still a pair url.ParseQuery may refuse, but one whose value
			// is not read.
			continue
		}
		if escaped(val) {
			u, err := url.QueryUnescape(val)
			if err != nil {
				continue
			}
			val = u
		}
		if !out.has[key] {
			out.first[key], out.has[key] = val, true
		}
		if key == qData && out.data == "" {
			out.data = val
		}
	}
	return out
}

// escaped reports whether url.QueryUnescape could change s.
func escaped(s string) bool {
	return strings.IndexByte(s, '%') >= 0 || strings.IndexByte(s, '+') >= 0
}

// params are a request's parameters: its query and the fields of a form
// body other than data, which come first.
type params struct {
	query *query
	form  url.Values // nil when none
}

// get returns the first value of key, as url.Values.Get does on the query
// merged after the form fields.
func (p *params) get(key queryKey) string {
	if v := p.form[queryKeyNames[key]]; len(v) > 0 {
		return v[0]
	}
	return p.query.first[key]
}

// mediaType returns the media type of a Content-Type value as
// mime.ParseMediaType does, "" when it is invalid. The common value without
// parameters is read without the map ParseMediaType builds.
func mediaType(v string) string {
	if strings.IndexByte(v, ';') >= 0 {
		mt, _, _ := mime.ParseMediaType(v)
		return mt
	}
	mt := strings.TrimSpace(strings.ToLower(v))
	typ, rest := consumeToken(mt)
	if typ == "" {
		return ""
	}
	if rest == "" {
		return mt
	}
	if rest[0] != '/' {
		return ""
	}
	if sub, rest := consumeToken(rest[1:]); sub == "" || rest != "" {
		return ""
	}
	return mt
}

// consumeToken splits off the RFC 1521 token at the start of v.
func consumeToken(v string) (token, rest string) {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return v[:i], v[i:]
		}
	}
	return v, ""
}
