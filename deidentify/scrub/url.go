package scrub

import "strings"

// URL rewriting.
//
// A URL keeps its scheme, host, port and path; it loses its userinfo
// (user:pass@), its fragment and every query parameter not on the allow
// list, because those are where sites put e-mail addresses, reset tokens,
// session ids and search terms. The path and the values of allowed
// parameters are scrubbed like any text, after percent-decoding, so
// "/u/alice%40example.com" becomes "/u/[email]". A host that is an IP
// address becomes "[ip]".
//
// The URL is parsed by hand, by offsets into the string, rather than with
// net/url: url.Parse allocates a URL and rejects much of what browsers send,
// and a clean URL must cost no allocation.

// url handles a URL whose scheme starts at i (a letter at a word start). It returns the end of the URL, having rewritten it
// if needed, or -1 if no "scheme://" starts at i.
func (z *scanner) url(i int) int {
	s, n := z.s, len(z.s)
	j := i + 1
	for j < n && j-i <= 32 && class[s[j]]&cScheme != 0 {
		j++
	}
	if j+3 > n || s[j] != ':' || s[j+1] != '/' || s[j+2] != '/' {
		return -1
	}
	k := j + 3
	for k < n && class[s[k]]&cURL != 0 {
		k++
	}
	end := trimURL(s, j+3, k)
	z.rewriteURL(i, j+3, end)
	return end
}

// trimURL drops the punctuation that ends the sentence around a URL
// written in text: trailing ".,;:!?'\"*" and a closing ')' or ']' with no
// opening one inside the URL.
func trimURL(s string, start, end int) int {
	if end == start || class[s[end-1]]&cAlnum != 0 || s[end-1] == '/' {
		return end // the common case: nothing to trim, no need to count
	}
	parens, brackets := 0, 0 // opening minus closing, over s[start:end]
	for k := start; k < end; k++ {
		switch s[k] {
		case '(':
			parens++
		case ')':
			parens--
		case '[':
			brackets++
		case ']':
			brackets--
		}
	}
	for end > start {
		switch s[end-1] {
		case '.', ',', ';', ':', '!', '?', '\'', '"', '*':
		case ')':
			if parens >= 0 {
				return end
			}
			parens++
		case ']':
			if brackets >= 0 {
				return end
			}
			brackets++
		default:
			return end
		}
		end--
	}
	return end
}

// urlParts are offsets into the scanned string of the parts of one URL.
type urlParts struct {
	authEnd              int  // the authority is s[authStart:authEnd]
	hostStart            int  // after any userinfo
	hostEnd              int  // == portStart
	portStart            int  // ":port" is s[portStart:authEnd]
	pathEnd              int  // the path is s[authEnd:pathEnd]
	queryStart, queryEnd int  // -1 when there is no '?'
	fragment             bool // a '#' follows
	hostIsIP             bool
}

func parseURL(s string, authStart, end int) urlParts {
	p := urlParts{queryStart: -1, queryEnd: -1}
	k := authStart
	for k < end && s[k] != '/' && s[k] != '?' && s[k] != '#' {
		k++
	}
	p.authEnd = k
	for k < end && s[k] != '?' && s[k] != '#' {
		k++
	}
	p.pathEnd = k
	if k < end && s[k] == '?' {
		p.queryStart = k + 1
		for k < end && s[k] != '#' {
			k++
		}
		p.queryEnd = k
	}
	p.fragment = k < end
	p.hostStart = authStart
	if at := strings.LastIndexByte(s[authStart:p.authEnd], '@'); at >= 0 {
		p.hostStart = authStart + at + 1
	}
	hp := s[p.hostStart:p.authEnd]
	host := hp
	p.portStart = p.authEnd
	if strings.HasPrefix(hp, "[") {
		if r := strings.IndexByte(hp, ']'); r > 0 {
			host = hp[1:r]
			p.portStart = p.hostStart + r + 1
		}
	} else if c := strings.LastIndexByte(hp, ':'); c >= 0 && allDigits(hp[c+1:]) {
		host = hp[:c]
		p.portStart = p.hostStart + c
	}
	p.hostEnd = p.portStart
	p.hostIsIP = (host != "" && dottedQuadAll(host) == len(host)) || isIPv6(host)
	return p
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// rewriteURL rewrites s[start:end] if anything in it has to go. A URL that
// needs no change is left in place with nothing written.
func (z *scanner) rewriteURL(start, authStart, end int) {
	s := z.s
	p := parseURL(s, authStart, end)
	changed := p.hostStart != authStart || p.fragment || p.hostIsIP ||
		(p.queryStart >= 0 && z.queryChanges(s[p.queryStart:p.queryEnd])) ||
		z.pathChanges(s[p.authEnd:p.pathEnd])
	if !changed {
		return
	}
	if !z.begin(start) {
		z.last = end
		return
	}
	var f Finding
	if p.hostStart != authStart || p.fragment {
		f |= FindingURL
	}
	b := &z.out
	b.WriteString(s[start:authStart])
	if p.hostIsIP {
		b.WriteString("[ip]")
		f |= FindingIP
	} else {
		b.WriteString(s[p.hostStart:p.hostEnd])
	}
	b.WriteString(s[p.portStart:p.authEnd])
	path := s[p.authEnd:p.pathEnd]
	for len(path) > 0 {
		seg := path
		if k := strings.IndexByte(path[1:], '/'); k >= 0 {
			seg = path[:k+1]
		}
		path = path[len(seg):]
		if seg[0] == '/' {
			b.WriteByte('/')
			seg = seg[1:]
		}
		z.writePiece(seg, false)
	}
	if p.queryStart >= 0 {
		q := s[p.queryStart:p.queryEnd]
		if q == "" {
			f |= FindingURL // a bare '?' goes
		}
		kept := 0
		for q != "" {
			var pair string
			pair, q = cut(q, '&')
			key, val, hasVal := strings.Cut(pair, "=")
			if pair == "" || !z.allowed(key) {
				f |= FindingURL
				continue
			}
			if kept == 0 {
				b.WriteByte('?')
			} else {
				b.WriteByte('&')
			}
			kept++
			b.WriteString(key)
			if hasVal {
				b.WriteByte('=')
				z.writePiece(val, true)
			}
		}
	}
	z.found |= f
	z.last = end
}

// cut splits s at the first sep.
func cut(s string, sep byte) (before, after string) {
	if k := strings.IndexByte(s, sep); k >= 0 {
		return s[:k], s[k+1:]
	}
	return s, ""
}

func (z *scanner) allowed(key string) bool {
	if strings.IndexByte(key, '%') >= 0 || strings.IndexByte(key, '+') >= 0 {
		if d, ok := unescape(key, true); ok {
			key = d
		}
	}
	for _, a := range z.sc.allow {
		if a == key {
			return true
		}
	}
	return false
}

// queryChanges reports whether rewriting the query q (without its '?')
// changes it: a parameter to drop, an empty pair to tidy, nothing kept (so
// the '?' goes), or an allowed value carrying personal data.
func (z *scanner) queryChanges(q string) bool {
	if q == "" {
		return true
	}
	for q != "" {
		var pair string
		pair, q = cut(q, '&')
		key, val, _ := strings.Cut(pair, "=")
		if pair == "" || !z.allowed(key) || z.pieceChanges(val, true) {
			return true
		}
	}
	return false
}

func (z *scanner) pathChanges(path string) bool {
	for path != "" {
		var seg string
		seg, path = cut(path, '/')
		if z.pieceChanges(seg, false) {
			return true
		}
	}
	return false
}

// decodePiece percent-decodes a path segment or query value when it is
// encoded. It returns the piece itself when it is not, or when its encoding
// is broken (then it is scrubbed as written).
func decodePiece(piece string, query bool) (string, bool) {
	if strings.IndexByte(piece, '%') < 0 && (!query || strings.IndexByte(piece, '+') < 0) {
		return piece, false
	}
	if d, ok := unescape(piece, query); ok {
		return d, true
	}
	return piece, false
}

func (z *scanner) pieceChanges(piece string, query bool) bool {
	d, _ := decodePiece(piece, query)
	if !z.sc.mayContain(d) {
		return false
	}
	_, _, changed := z.sc.scan(d, z.depth+1, true)
	return changed
}

// writePiece writes a path segment or query value, scrubbed. An unchanged
// piece is written exactly as it came; a decoded one that changed is
// re-encoded, so the output is still a well-formed URL.
func (z *scanner) writePiece(piece string, query bool) {
	d, decoded := decodePiece(piece, query)
	if !z.sc.mayContain(d) {
		z.out.WriteString(piece)
		return
	}
	out, f, changed := z.sc.scan(d, z.depth+1, false)
	if !changed {
		z.out.WriteString(piece)
		return
	}
	z.found |= f
	if decoded {
		escape(&z.out, out, query)
	} else {
		z.out.WriteString(out)
	}
}

func unhex(c byte) (byte, bool) {
	switch {
	case isDigit(c):
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescape percent-decodes s ('+' is a space in a query). It fails on a
// malformed escape.
func unescape(s string, query bool) (string, bool) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", false
			}
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", false
			}
			b.WriteByte(h<<4 | l)
			i += 2
		case c == '+' && query:
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// escape percent-encodes s as a path segment or query value. Brackets stay
// as they are so placeholders read as "[email]", not "%5Bemail%5D".
func escape(b *strings.Builder, s string, query bool) {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		keep := isAlnum(c) || strings.IndexByte("-._~!$'()*,;:@[]", c) >= 0
		if !query && (c == '&' || c == '=' || c == '+') {
			keep = true
		}
		if query && (c == '/' || c == '?') {
			keep = true
		}
		switch {
		case keep:
			b.WriteByte(c)
		case query && c == ' ':
			b.WriteByte('+')
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
}
