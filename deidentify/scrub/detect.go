package scrub

import (
	"math/bits"
	"strings"
)

// Character classes, one bit each, looked up in class. A table is used
// because the scanner asks several class questions of every byte and a
// single load answers all of them.
const (
	cDigit     uint16 = 1 << iota
	cLower            // a-z
	cUpper            // A-Z
	cHexLetter        // a-f A-F
	cLocal            // e-mail local part: [A-Za-z0-9._%+-] and non-ASCII bytes
	cDomain           // e-mail domain label: [A-Za-z0-9-] and non-ASCII bytes
	cScheme           // URL scheme after its first letter: [A-Za-z0-9+.-]
	cURL              // may appear in a URL written in free text
	cTok              // API key body: [A-Za-z0-9_-]
	cB64              // base64 and base64url: [A-Za-z0-9_+/=-]

	cAlnum = cDigit | cLower | cUpper
)

// class is a constant lookup table, built once.
var class = func() (t [256]uint16) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		var m uint16
		switch {
		case b >= '0' && b <= '9':
			m |= cDigit
		case b >= 'a' && b <= 'z':
			m |= cLower
		case b >= 'A' && b <= 'Z':
			m |= cUpper
		}
		if (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F') {
			m |= cHexLetter
		}
		alnum := m&cAlnum != 0
		// Non-ASCII bytes belong to local parts and domains (internationalised
		// addresses) and to URLs. Every span the scanner replaces therefore
		// starts and ends at an ASCII byte or at the ends of the string,
		// never inside a UTF-8 sequence, which keeps the output valid UTF-8.
		if alnum || strings.IndexByte("._%+-", b) >= 0 || b >= 0x80 {
			m |= cLocal
		}
		if alnum || b == '-' || b >= 0x80 {
			m |= cDomain
		}
		if alnum || b == '+' || b == '.' || b == '-' {
			m |= cScheme
		}
		if b > 0x20 && b != 0x7f && strings.IndexByte("\"<>\\^`{|}", b) < 0 {
			m |= cURL
		}
		if alnum || b == '_' || b == '-' {
			m |= cTok
		}
		if alnum || strings.IndexByte("_+/=-", b) >= 0 {
			m |= cB64
		}
		t[c] = m
	}
	return t
}()

func isDigit(c byte) bool { return c-'0' < 10 }
func isUpper(c byte) bool { return c-'A' < 26 }
func isAlnum(c byte) bool { return class[c]&cAlnum != 0 }
func isHex(c byte) bool   { return class[c]&(cDigit|cHexLetter) != 0 }

// digitsAt reports whether s[i:i+k] exists and is all ASCII digits.
func digitsAt(s string, i, k int) bool {
	if i < 0 || i+k > len(s) {
		return false
	}
	for j := i; j < i+k; j++ {
		if !isDigit(s[j]) {
			return false
		}
	}
	return true
}

// scanner is one pass over one string. Output is built lazily: until the
// first replacement nothing is written, so a string without findings costs
// no allocation.
type scanner struct {
	sc    *Scrubber
	s     string
	depth int  // URL nesting: a URL inside a URL's path or query value
	dry   bool // report whether anything would change; write nothing
	out   strings.Builder
	dirty bool // something changed; out holds s[:last] scrubbed
	last  int
	found Finding
}

// scan runs one pass over s. It returns the scrubbed string (s itself when
// nothing changed), what fired, and whether anything changed. In dry mode it
// stops at the first change and returns no string.
func (sc *Scrubber) scan(s string, depth int, dry bool) (string, Finding, bool) {
	z := scanner{sc: sc, s: s, depth: depth, dry: dry}
	z.run()
	if !z.dirty {
		return s, z.found, false
	}
	if dry {
		return "", z.found, true
	}
	z.out.WriteString(s[z.last:])
	return z.out.String(), z.found, true
}

// begin marks a change starting at a and, unless dry, copies the unchanged
// text before it. It reports whether the caller should write.
func (z *scanner) begin(a int) bool {
	z.dirty = true
	if z.dry {
		return false
	}
	if z.out.Cap() == 0 {
		z.out.Grow(len(z.s) + 32)
	}
	z.out.WriteString(z.s[z.last:a])
	return true
}

func (z *scanner) replace(a, b int, f Finding) {
	z.found |= f
	if z.begin(a) {
		z.out.WriteString(placeholder(f))
	}
	z.last = b
}

// maxURLDepth bounds URL rewriting inside decoded URL components
// (a redirect URL carried in a path segment or a query value).
const maxURLDepth = 2

func (z *scanner) run() {
	s, n := z.s, len(z.s)
	en := z.sc.enabled
	urls := en&FindingURL != 0 && z.depth < maxURLDepth
	i := 0
	for i < n {
		if z.dry && z.dirty {
			return
		}
		c := s[i]
		cl := class[c]
		var pcl uint16 // class of the byte before i; none at the start
		if i > 0 {
			pcl = class[s[i-1]]
		}
		// A scheme starts at a word start; "[card].https://…" must still
		// be seen as a URL, so a '.' or '-' before it does not hide it.
		if urls && cl&(cLower|cUpper) != 0 && pcl&cAlnum == 0 {
			if end := z.url(i); end > i {
				i = end
				continue
			}
		}
		if en&FindingEmail != 0 && cl&cLocal != 0 && pcl&cLocal == 0 {
			if end := emailEnd(s, i); end > i {
				z.replace(i, end, FindingEmail)
				i = end
				continue
			}
		}
		if cl&cAlnum != 0 {
			// A word start (the main loop never stops inside a word).
			end, f := z.word(i)
			if f != 0 {
				z.replace(i, end, f)
				i = end
				continue
			}
			if end > i { // a UUID: skipped whole, nothing in it is personal
				i = end
				continue
			}
			// Nothing can start inside a word: every detector wants a
			// non-alphanumeric byte before its match.
			i++
			for i < n && class[s[i]]&cAlnum != 0 {
				i++
			}
			continue
		}
		end := -1
		var f Finding
		switch c {
		case '+':
			if en&FindingPhone != 0 {
				end, f = phonePlus(s, i), FindingPhone
			}
		case '(':
			if en&FindingPhone != 0 {
				end, f = phoneNational(s, i), FindingPhone
			}
		case ':':
			if en&FindingIP != 0 {
				end, f = ipv6End(s, i), FindingIP
			}
		}
		if end > i {
			z.replace(i, end, f)
			i = end
			continue
		}
		i++
	}
}

// word tries the detectors that start at the beginning of an alphanumeric
// word. It returns the end and the finding of a match, or the end of a UUID
// to skip with no finding, or i.
func (z *scanner) word(i int) (int, Finding) {
	s, en := z.s, z.sc.enabled
	c := s[i]
	if isDigit(c) {
		if end := uuidEnd(s, i); end > 0 {
			return end, 0
		}
		if en&FindingNationalID != 0 {
			if end := ssnEnd(s, i); end > 0 {
				return end, FindingNationalID
			}
			if end := sinEnd(s, i); end > 0 {
				return end, FindingNationalID
			}
		}
		if en&FindingCard != 0 {
			if end := cardEnd(s, i); end > 0 {
				return end, FindingCard
			}
		}
		if en&FindingIP != 0 {
			if end := ipv4End(s, i); end > 0 {
				return end, FindingIP
			}
			if end := ipv6End(s, i); end > 0 {
				return end, FindingIP
			}
		}
		if en&FindingPhone != 0 {
			if end := phoneNational(s, i); end > 0 {
				return end, FindingPhone
			}
		}
		return i, 0
	}
	if en&FindingToken != 0 {
		if end := tokenEnd(s, i); end > 0 {
			return end, FindingToken
		}
	}
	if isUpper(c) {
		if en&FindingIBAN != 0 {
			if end := ibanEnd(s, i); end > 0 {
				return end, FindingIBAN
			}
		}
		if en&FindingNationalID != 0 {
			if end := ninoEnd(s, i); end > 0 {
				return end, FindingNationalID
			}
		}
	}
	if class[c]&cHexLetter != 0 {
		if end := uuidEnd(s, i); end > 0 {
			return end, 0
		}
		if en&FindingIP != 0 {
			if end := ipv6End(s, i); end > 0 {
				return end, FindingIP
			}
		}
	}
	return i, 0
}

// ---- Boundaries shared by the numeric detectors ----
//
// A number is only personal data if it stands alone. These rules are what
// keep the numeric detectors off ordinary analytics values:
//   - no letter or digit may touch it (hex ids, "v1234567890", "a4111...");
//   - it is not the fraction or the integer part of a decimal ("0.4111…",
//     the 17 significant digits JavaScript prints for a float);
//   - it is not one part of a hyphen-joined hex identifier such as a UUID
//     or mixpanel's device id "18c5…-0b1c…-26021051-1fa400-18c5…": a
//     neighbouring hex word with both letters and digits marks it as such.

func numStartOK(s string, i int) bool {
	if i == 0 {
		return true
	}
	p := s[i-1]
	switch {
	case isAlnum(p):
		return false
	case p == '.':
		return i < 2 || !isDigit(s[i-2])
	case p == '-':
		return !hexWordBefore(s, i-1)
	}
	return true
}

func numEndOK(s string, e int) bool {
	if e >= len(s) {
		return true
	}
	c := s[e]
	switch {
	case isAlnum(c):
		return false
	case c == '.':
		return e+1 >= len(s) || !isDigit(s[e+1])
	case c == '-':
		return !hexWordAfter(s, e+1)
	}
	return true
}

// continues reports whether the number ending at e goes on with another
// group after the same separator sep ("123-45-6789-0"), which makes it some
// longer number. A different separator ("123-45-6789 5") does not: that is
// a list.
func continues(s string, e int, sep byte) bool {
	return e+1 < len(s) && s[e] == sep && isDigit(s[e+1])
}

// hexWordLimit bounds the look at a neighbouring word; a hex run longer
// than this is an identifier whatever comes after.
const hexWordLimit = 64

// hexWordBefore reports whether the word ending at j is made of hex digits
// only and has at least one letter and one digit.
func hexWordBefore(s string, j int) bool { return hexWord(s, j-1, -1) }

func hexWordAfter(s string, j int) bool { return hexWord(s, j, 1) }

// hexWord reports whether the alphanumeric run from s[k] on, read in
// direction step (1 forwards, -1 backwards) for at most hexWordLimit
// bytes, is hex with both a letter and a digit.
func hexWord(s string, k, step int) bool {
	letters, digits := 0, 0
	for n := 0; k >= 0 && k < len(s) && isAlnum(s[k]) && n < hexWordLimit; k, n = k+step, n+1 {
		switch c := s[k]; {
		case isDigit(c):
			digits++
		case class[c]&cHexLetter != 0:
			letters++
		default:
			return false
		}
	}
	return letters > 0 && digits > 0
}

// uuidEnd returns the end of a UUID (8-4-4-4-12 hex) at i, or -1. UUIDs are
// skipped whole: their digit groups would otherwise look like numbers.
func uuidEnd(s string, i int) int {
	if i+36 > len(s) {
		return -1
	}
	for k := 0; k < 36; k++ {
		c := s[i+k]
		if k == 8 || k == 13 || k == 18 || k == 23 {
			if c != '-' {
				return -1
			}
		} else if !isHex(c) {
			return -1
		}
	}
	if i+36 < len(s) && isAlnum(s[i+36]) {
		return -1
	}
	return i + 36
}

// ---- E-mail ----

// emailEnd returns the end of an e-mail address whose local part starts at
// i, or -1. "%40" counts as the '@', so URL-encoded addresses are caught
// wherever they appear. The domain needs two labels and a last label with
// a letter, which keeps "user@localhost" and "a@1.2" out.
func emailEnd(s string, i int) int {
	n := len(s)
	named := false // the local part has a letter or digit, not only dots
	for j := i; j < n; j++ {
		c := s[j]
		if c == '@' {
			if named {
				return domainEnd(s, j+1)
			}
			return -1
		}
		if c == '%' && named && j+2 < n && s[j+1] == '4' && s[j+2] == '0' {
			if e := domainEnd(s, j+3); e > 0 {
				return e
			}
		}
		cl := class[c]
		if cl&cLocal == 0 {
			return -1
		}
		if cl&cAlnum != 0 || c >= 0x80 {
			named = true
		}
	}
	return -1
}

// domainEnd returns the end of the longest plausible domain at j, or -1.
func domainEnd(s string, j int) int {
	n := len(s)
	if j < n && s[j] == '[' {
		// An address literal, user@[203.0.113.7] or user@[IPv6:…]. It must
		// hold a '.' or ':', which no placeholder does: "0@[email]" would
		// otherwise eat one more address on every rescan.
		k, sep := j+1, false
		for k < n && k-j < 64 && (isAlnum(s[k]) || s[k] == ':' || s[k] == '.') {
			sep = sep || s[k] == ':' || s[k] == '.'
			k++
		}
		if sep && k < n && s[k] == ']' {
			return k + 1
		}
		return -1
	}
	best, labels := -1, 0
	for {
		st := j
		for j < n && class[s[j]]&cDomain != 0 {
			j++
		}
		if j == st {
			return best
		}
		labels++
		if labels >= 2 && tldOK(s[st:j]) {
			best = j
		}
		if j+1 < n && s[j] == '.' && class[s[j+1]]&cDomain != 0 {
			j++
			continue
		}
		return best
	}
}

func tldOK(l string) bool {
	if len(l) < 2 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for k := 0; k < len(l); k++ {
		if c := l[k]; class[c]&(cLower|cUpper) != 0 || c >= 0x80 {
			return true
		}
	}
	return false
}

// ---- Payment cards ----

// cardEnd returns the end of a payment card number at i, or -1.
//
// 13–19 digits, Luhn-valid, written as one run or as groups of at least
// three digits separated by single spaces or dashes. The first digit must
// be 2–6 (the issuer ranges of the card networks: Mastercard 2-series, Amex
// and Diners 3, Visa 4, Mastercard 5, Discover/UnionPay/Maestro 6), and a
// 13-digit number must start with 4 (old Visa, the only 13-digit card).
// That rule is what keeps Unix timestamps out: milliseconds are 13 digits
// starting with 1 until 2033 and with 2 after, microseconds and nanoseconds
// start with 1; all would otherwise pass Luhn one time in ten.
//
// When groups run on ("4111 1111 1111 1111 2024") the longest prefix of
// whole groups that is a valid card wins.
func cardEnd(s string, i int) int {
	n := len(s)
	if !numStartOK(s, i) || (i > 0 && s[i-1] == '+') {
		return -1
	}
	var digits [19]byte
	var ends [19]int   // end of group g in s
	var counts [19]int // digits up to and including group g
	nd, ng, minGroup := 0, 0, 19
	j := i
	for {
		st := j
		for j < n && isDigit(s[j]) {
			j++
		}
		gl := j - st
		if nd+gl > 19 {
			break
		}
		copy(digits[nd:], s[st:j])
		nd += gl
		ends[ng], counts[ng] = j, nd
		ng++
		minGroup = min(minGroup, gl)
		if ng > 1 && minGroup < 3 {
			ng-- // this short group ends the candidates
			break
		}
		if j+1 < n && (s[j] == ' ' || s[j] == '-') && isDigit(s[j+1]) {
			j++
			continue
		}
		break
	}
	for g := ng - 1; g >= 0; g-- {
		d := counts[g]
		if d < 13 {
			break
		}
		if d > 19 {
			continue
		}
		if digits[0] < '2' || digits[0] > '6' || (d == 13 && digits[0] != '4') {
			return -1
		}
		if !numEndOK(s, ends[g]) || !luhn(digits[:d]) {
			continue
		}
		return ends[g]
	}
	return -1
}

func luhn(d []byte) bool {
	sum, dbl := 0, false
	for k := len(d) - 1; k >= 0; k-- {
		x := int(d[k] - '0')
		if dbl {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
		dbl = !dbl
	}
	return sum%10 == 0
}

// ---- National identification numbers ----

// ssnEnd returns the end of a US Social Security number, ddd-dd-dddd or
// ddd dd dddd, or -1. Numbers the SSA never issues (area 000, 666, 900–999,
// group 00, serial 0000) are rejected. A bare nine-digit run is not taken:
// it is far more often an id than an SSN.
func ssnEnd(s string, i int) int {
	if i+11 > len(s) {
		return -1
	}
	sep := s[i+3]
	if (sep != '-' && sep != ' ') || s[i+6] != sep ||
		!digitsAt(s, i, 3) || !digitsAt(s, i+4, 2) || !digitsAt(s, i+7, 4) {
		return -1
	}
	area := s[i : i+3]
	if area == "000" || area == "666" || area[0] == '9' || s[i+4:i+6] == "00" || s[i+7:i+11] == "0000" {
		return -1
	}
	e := i + 11
	if !numStartOK(s, i) || !numEndOK(s, e) || continues(s, e, sep) {
		return -1
	}
	return e
}

// sinEnd returns the end of a Canadian Social Insurance Number, ddd-ddd-ddd
// or ddd ddd ddd, Luhn-valid and not starting with 0 or 8 (never issued),
// or -1.
func sinEnd(s string, i int) int {
	if i+11 > len(s) {
		return -1
	}
	sep := s[i+3]
	if (sep != '-' && sep != ' ') || s[i+7] != sep ||
		!digitsAt(s, i, 3) || !digitsAt(s, i+4, 3) || !digitsAt(s, i+8, 3) {
		return -1
	}
	if s[i] == '0' || s[i] == '8' {
		return -1
	}
	var d [9]byte
	copy(d[0:], s[i:i+3])
	copy(d[3:], s[i+4:i+7])
	copy(d[6:], s[i+8:i+11])
	e := i + 11
	if !luhn(d[:]) || !numStartOK(s, i) || !numEndOK(s, e) || continues(s, e, sep) {
		return -1
	}
	return e
}

// ninoEnd returns the end of a UK National Insurance number, AB123456C or
// AB 12 34 56 C (upper case, suffix A–D required), or -1. The prefix rules
// are HMRC's: D, F, I, Q, U, V never appear, O never second, and BG, GB,
// KN, NK, NT, TN, ZZ are not allocated.
func ninoEnd(s string, i int) int {
	n := len(s)
	if i+9 > n {
		return -1
	}
	a, b := s[i], s[i+1]
	if !isUpper(a) || !isUpper(b) ||
		strings.IndexByte("DFIQUV", a) >= 0 || strings.IndexByte("DFIOQUV", b) >= 0 {
		return -1
	}
	switch s[i : i+2] {
	case "BG", "GB", "KN", "NK", "NT", "TN", "ZZ":
		return -1
	}
	j := i + 2
	if s[j] == ' ' {
		for g := 0; g < 3; g++ {
			if j >= n || s[j] != ' ' || !digitsAt(s, j+1, 2) {
				return -1
			}
			j += 3
		}
	} else {
		if !digitsAt(s, j, 6) {
			return -1
		}
		j += 6
	}
	if j+1 < n && s[j] == ' ' {
		j++
	}
	if j >= n || s[j] < 'A' || s[j] > 'D' {
		return -1
	}
	j++
	if j < n && isAlnum(s[j]) {
		return -1
	}
	return j
}

// ---- IBAN ----

// ibanLengths lists the countries of the SWIFT IBAN registry with the
// length of their IBANs. Requiring a known country and its exact length on
// top of the mod-97 check is what keeps product codes shaped like
// "AB12XYZ…" out: mod-97 alone passes one random string in 97.
const ibanLengths = "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 " +
	"CY28 CZ24 DE22 DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 " +
	"GL18 GR27 GT28 HN28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 " +
	"LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 " +
	"OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 " +
	"SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30"

// ibanLen is indexed by (first letter-'A')*26 + (second letter-'A').
var ibanLen = func() (t [26 * 26]uint8) {
	for k := 0; k+4 <= len(ibanLengths); k += 5 {
		e := ibanLengths[k : k+4]
		t[int(e[0]-'A')*26+int(e[1]-'A')] = (e[2]-'0')*10 + (e[3] - '0')
	}
	return t
}()

func isIBANChar(c byte) bool { return isUpper(c) || isDigit(c) }

// ibanEnd returns the end of an IBAN at i, in electronic form
// (GB82WEST12345698765432) or printed in groups of four
// (GB82 WEST 1234 5698 7654 32), or -1. Upper case only, as the standard
// writes it.
func ibanEnd(s string, i int) int {
	n := len(s)
	if i+4 > n || !isUpper(s[i]) || !isUpper(s[i+1]) || !isDigit(s[i+2]) || !isDigit(s[i+3]) {
		return -1
	}
	l := int(ibanLen[int(s[i]-'A')*26+int(s[i+1]-'A')])
	if l == 0 {
		return -1
	}
	var buf [34]byte
	j := i
	for j < n && j-i <= l && isIBANChar(s[j]) {
		j++
	}
	switch {
	case j-i == l:
		if j < n && isAlnum(s[j]) {
			return -1
		}
		copy(buf[:], s[i:j])
	case j-i == 4 && j < n && s[j] == ' ':
		copy(buf[:], s[i:j])
		nb := 4
		for nb < l {
			if j+1 >= n || s[j] != ' ' {
				return -1
			}
			j++
			st := j
			for j < n && j-st < 4 && nb < l && isIBANChar(s[j]) {
				buf[nb] = s[j]
				nb++
				j++
			}
			if gl := j - st; gl == 0 || (gl < 4 && nb < l) {
				return -1
			}
		}
		if j < n && isAlnum(s[j]) {
			return -1
		}
	default:
		return -1
	}
	if !mod97(buf[:l]) {
		return -1
	}
	return j
}

// mod97 checks an IBAN: the first four characters moved to the end,
// letters as 10–35, the whole read as a number, must leave 1 modulo 97.
func mod97(b []byte) bool {
	r := 0
	for k := 0; k < len(b); k++ {
		c := b[(k+4)%len(b)]
		if isDigit(c) {
			r = (r*10 + int(c-'0')) % 97
		} else {
			r = (r*100 + int(c-'A') + 10) % 97
		}
	}
	return r == 1
}

// ---- IP addresses ----

// ipv4End returns the end of a dotted-quad IPv4 address at i, or -1.
// Octets have no leading zeros and the first is not 0 (0.x.x.x is no
// host's address, and versions like "0.9.1.2" are common). A fifth
// component ("1.2.3.4.5") makes it a version or an OID instead.
// Four-component versions that are valid addresses ("4.2.1.7") are
// scrubbed: they cannot be told apart.
//
// A quad right after "word/" is a product version, as in the user agent
// "Chrome/120.0.0.0", and is left alone.
func ipv4End(s string, i int) int {
	j := dottedQuad(s, i)
	if j < 0 || !numStartOK(s, i) || !numEndOK(s, j) || (i >= 2 && s[i-1] == '/' && isAlnum(s[i-2])) {
		return -1
	}
	return j
}

// dottedQuad returns the end of a dotted quad at i, or -1.
func dottedQuad(s string, i int) int {
	n, j := len(s), i
	for part := 0; part < 4; part++ {
		if part > 0 {
			if j >= n || s[j] != '.' {
				return -1
			}
			j++
		}
		st, v := j, 0
		for j < n && isDigit(s[j]) && j-st < 3 {
			v = v*10 + int(s[j]-'0')
			j++
		}
		if j == st || (j < n && isDigit(s[j])) || v > 255 || (j-st > 1 && s[st] == '0') || (part == 0 && v == 0) {
			return -1
		}
	}
	return j
}

// ipv6End returns the end of an IPv6 literal at i, or -1. The candidate is
// the run of hex digits, colons and dots; a trailing ':' or '.' (end of a
// sentence, "addr: ...") is dropped. The unspecified address "::" is not
// taken: it is what C++'s and Ruby's "::" look like.
func ipv6End(s string, i int) int {
	if i > 0 {
		if p := s[i-1]; isAlnum(p) || p == ':' || p == '.' {
			return -1
		}
	}
	n, j, colons := len(s), i, 0
	for j < n && j-i <= 46 {
		c := s[j]
		if c == ':' {
			colons++
		} else if !isHex(c) && c != '.' {
			break
		}
		j++
	}
	if colons < 2 || j-i > 45 || (j < n && isAlnum(s[j])) {
		return -1
	}
	if isIPv6(s[i:j]) {
		return j
	}
	if c := s[j-1]; (c == ':' || c == '.') && j-1 > i && isIPv6(s[i:j-1]) {
		return j - 1
	}
	return -1
}

// isIPv6 reports whether s is an IPv6 address (RFC 4291 text form, with an
// optional trailing dotted quad, no zone) other than the unspecified one.
// It is hand-written because netip.ParseAddr allocates its error, and
// times like "12:30:00" are tried on every event.
func isIPv6(s string) bool {
	n := len(s)
	if n < 2 {
		return false
	}
	groups, ellipsis, nonzero := 0, false, false
	i := 0
	if s[0] == ':' {
		if s[1] != ':' {
			return false
		}
		ellipsis, i = true, 2
	}
	for i < n {
		st := i
		for i < n && i-st < 5 && isHex(s[i]) {
			if s[i] != '0' {
				nonzero = true
			}
			i++
		}
		gl := i - st
		if gl == 0 || gl > 4 {
			return false
		}
		if i < n && s[i] == '.' { // embedded IPv4 in the last 32 bits
			if groups > 6 || dottedQuadAll(s[st:]) < 0 {
				return false
			}
			groups += 2
			nonzero = nonzero || strings.Trim(s[st:], "0.") != ""
			break
		}
		groups++
		if i == n {
			break
		}
		if s[i] != ':' {
			return false
		}
		i++
		if i < n && s[i] == ':' {
			if ellipsis {
				return false
			}
			ellipsis = true
			i++
			if i == n {
				break
			}
		} else if i == n {
			return false
		}
	}
	if !nonzero {
		return false
	}
	if ellipsis {
		return groups <= 7
	}
	return groups == 8
}

// dottedQuadAll is dottedQuad over the whole of s, with a zero first octet
// allowed (::ffff:0.0.0.1), or -1.
func dottedQuadAll(s string) int {
	j := 0
	for part := 0; part < 4; part++ {
		if part > 0 {
			if j >= len(s) || s[j] != '.' {
				return -1
			}
			j++
		}
		st, v := j, 0
		for j < len(s) && isDigit(s[j]) && j-st < 3 {
			v = v*10 + int(s[j]-'0')
			j++
		}
		if j == st || v > 255 || (j-st > 1 && s[st] == '0') {
			return -1
		}
	}
	if j != len(s) {
		return -1
	}
	return j
}

// ---- Telephone numbers ----
//
// The rule, chosen so that analytics numbers are left alone:
//
//  1. "+" then 8–15 digits (E.164) in groups separated by up to two of
//     " -.()" — "+14155552671", "+44 20 7946 0958", "+44 (0)20 7946 0958".
//     A date after the plus ("+2024-05-01") is not taken.
//  2. North American formatting: "(415) 555-2671", "415-555-2671",
//     "415.555.2671", "415 555 2671", optionally led by "1 " or "1-".
//  3. A national number with a trunk 0 in separated groups:
//     "020 7946 0958", "01 23 45 67 89", "(030) 1234567"; 10–11 digits.
//  4. A bare run of exactly 10 digits that is a valid NANP number (area code
//     and exchange start with 2–9), or 11 digits "1" + such a number.
//
// Everything else is not a phone: no bare run of another length, so a
// Unix timestamp in milliseconds (13 digits) never is; Unix seconds (10
// digits) start with 1, which no NANP area code does, until 2033-05-18.
// Prices, ISO dates, times, versions and short integers have too few
// digits or the wrong separators, and the shared numeric boundaries keep
// out digits inside hex ids and UUIDs. The accepted false positive is a
// bare 10-digit integer that happens to be NANP-shaped ("2147483647").

func isPhoneSep(c byte) bool { return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' }

// phonePlus returns the end of an international number at the '+' at i,
// or -1.
func phonePlus(s string, i int) int {
	n := len(s)
	if i > 0 && (isAlnum(s[i-1]) || s[i-1] == '+') {
		return -1
	}
	j := i + 1
	if j >= n || s[j] < '1' || s[j] > '9' {
		return -1
	}
	var glen, ends, counts [8]int
	ng, nd := 0, 0
	for ng < len(glen) {
		st := j
		for j < n && isDigit(s[j]) {
			j++
		}
		gl := j - st
		// "(0)" is the trunk prefix written inside an international number.
		trunk := gl == 1 && s[st] == '0' && s[st-1] == '(' && j < n && s[j] == ')'
		if !trunk {
			if nd+gl > 15 {
				break
			}
			nd += gl
		}
		glen[ng], ends[ng], counts[ng] = gl, j, nd
		ng++
		k := j
		for k < n && k-j < 2 && isPhoneSep(s[k]) {
			k++
		}
		if k == j || k >= n || !isDigit(s[k]) {
			break
		}
		j = k
	}
	if ng >= 3 && glen[0] == 4 && glen[1] == 2 && glen[2] == 2 {
		return -1 // "+2024-05-01"
	}
	// The longest run of whole groups that ends cleanly: in
	// "+14155552671 0A" the "0A" that follows is some other word.
	for g := ng - 1; g >= 0 && counts[g] >= 8; g-- {
		if numEndOK(s, ends[g]) {
			return ends[g]
		}
	}
	return -1
}

// phoneNational returns the end of a number without a '+' at i (a digit or
// '('), or -1.
func phoneNational(s string, i int) int {
	if !numStartOK(s, i) || (i > 0 && s[i-1] == '+') {
		return -1
	}
	if e := nanpEnd(s, i); e > 0 {
		return e
	}
	return trunkEnd(s, i)
}

func nanpSep(c byte) bool { return c == ' ' || c == '-' || c == '.' }

func nanpEnd(s string, i int) int {
	n := len(s)
	if s[i] == '1' && i+1 < n && nanpSep(s[i+1]) {
		if e := nanpFormatted(s, i+2); e > 0 {
			return e
		}
	}
	if e := nanpFormatted(s, i); e > 0 {
		return e
	}
	j := i
	for j < n && isDigit(s[j]) {
		j++
	}
	switch j - i {
	case 10:
		if s[i] < '2' || s[i+3] < '2' {
			return -1
		}
	case 11:
		if s[i] != '1' || s[i+1] < '2' || s[i+4] < '2' {
			return -1
		}
	default:
		return -1
	}
	if !numEndOK(s, j) {
		return -1
	}
	return j
}

func nanpFormatted(s string, j int) int {
	n := len(s)
	if j < n && s[j] == '(' {
		if !digitsAt(s, j+1, 3) || j+4 >= n || s[j+4] != ')' {
			return -1
		}
		j += 5
		if j < n && (s[j] == ' ' || s[j] == '-') {
			j++
		}
	} else {
		if !digitsAt(s, j, 3) || j+3 >= n || !nanpSep(s[j+3]) {
			return -1
		}
		j += 4
	}
	if !digitsAt(s, j, 3) || j+3 >= n || !nanpSep(s[j+3]) {
		return -1
	}
	sep := s[j+3]
	j += 4
	if !digitsAt(s, j, 4) {
		return -1
	}
	j += 4
	if !numEndOK(s, j) || continues(s, j, sep) {
		return -1
	}
	return j
}

// trunkEnd returns the end of a national number led by a trunk 0, in at
// least two groups with one consistent separator, or -1.
func trunkEnd(s string, i int) int {
	n := len(s)
	j := i
	paren := s[j] == '('
	if paren {
		j++
	}
	if j+1 >= n || s[j] != '0' || s[j+1] < '1' || s[j+1] > '9' {
		return -1
	}
	st := j
	for j < n && isDigit(s[j]) {
		j++
	}
	if g := j - st; g < 2 || g > 5 {
		return -1
	}
	var ends, counts [6]int
	ends[0], counts[0] = j, j-st
	nd, groups := j-st, 1
	var sep byte
	if paren {
		if j >= n || s[j] != ')' {
			return -1
		}
		j++
		if j < n && s[j] == ' ' {
			j++
		}
		if j >= n || !isDigit(s[j]) {
			return -1
		}
		j-- // let the loop read the next group as if after a separator
	}
	for j+1 < n && groups < len(ends) {
		c := s[j]
		if !paren || groups > 1 {
			if (c != ' ' && c != '-' && c != '.') || (sep != 0 && c != sep) {
				break
			}
		}
		if !isDigit(s[j+1]) {
			break
		}
		k := j + 1
		for k < n && isDigit(s[k]) {
			k++
		}
		gl := k - (j + 1)
		if gl < 2 || gl > 8 || nd+gl > 11 {
			break
		}
		if !paren || groups > 1 {
			sep = c
		}
		nd += gl
		ends[groups], counts[groups] = k, nd
		groups++
		j = k
	}
	for g := groups - 1; g >= 1 && counts[g] >= 10; g-- {
		if numEndOK(s, ends[g]) {
			return ends[g]
		}
	}
	return -1
}

// ---- Tokens and secrets ----

// keyPrefix is a vendor secret-key prefix. The body after it must be at
// least min characters of [A-Za-z0-9_-] ('.' too when dot) and contain a
// digit unless it is 32 characters or longer: that keeps prose such as
// "sk-learn-tutorial" out. upperExact is AWS's fixed-length upper-case form.
type keyPrefix struct {
	p          string
	min        int
	dot        bool
	upperExact bool
}

var keyPrefixes = [...]keyPrefix{
	// Stripe
	{p: "sk_live_", min: 16}, {p: "sk_test_", min: 16},
	{p: "rk_live_", min: 16}, {p: "rk_test_", min: 16}, {p: "whsec_", min: 16},
	// OpenAI, Anthropic ("sk-ant-…", "sk-proj-…")
	{p: "sk-", min: 20},
	// GitHub, GitLab
	{p: "ghp_", min: 20}, {p: "gho_", min: 20}, {p: "ghu_", min: 20},
	{p: "ghs_", min: 20}, {p: "ghr_", min: 20}, {p: "github_pat_", min: 20},
	{p: "glpat-", min: 16},
	// Slack
	{p: "xoxb-", min: 16}, {p: "xoxp-", min: 16}, {p: "xoxa-", min: 16},
	{p: "xoxr-", min: 16}, {p: "xoxs-", min: 16}, {p: "xapp-", min: 16},
	// npm, Shopify, Hugging Face, SendGrid, Google
	{p: "npm_", min: 20},
	{p: "shpat_", min: 20}, {p: "shpss_", min: 20}, {p: "shpca_", min: 20},
	{p: "hf_", min: 20},
	{p: "SG.", min: 20, dot: true},
	{p: "AIza", min: 30},
	// AWS access key ids
	{p: "AKIA", min: 16, upperExact: true}, {p: "ASIA", min: 16, upperExact: true},
}

// keyPrefixesByFirst maps a first byte to the set (bit k = keyPrefixes[k])
// of prefixes starting with it, so a word start costs one load instead of
// a walk over the list.
var keyPrefixesByFirst = func() (t [256]uint32) {
	for k, kp := range keyPrefixes {
		t[kp.p[0]] |= 1 << k
	}
	return t
}()

// hasKeyPrefix is strings.HasPrefix(s[i:], p) for a p whose first byte is
// known to match; comparing the second byte inline first turns most words
// away without a call ("sign" vs "sk_", "shpat_").
func hasKeyPrefix(s string, i int, p string) bool {
	return len(s)-i >= len(p) && s[i+1] == p[1] && s[i:i+len(p)] == p
}

// tokenEnd returns the end of a bearer token, JWT or vendor secret at the
// word start i, or -1.
func tokenEnd(s string, i int) int {
	switch s[i] {
	case 'e':
		if strings.HasPrefix(s[i:], "eyJ") {
			return jwtEnd(s, i)
		}
	case 'B', 'b':
		if strings.HasPrefix(s[i:], "Bearer") || strings.HasPrefix(s[i:], "bearer") || strings.HasPrefix(s[i:], "BEARER") {
			if e := bearerEnd(s, i+6); e > 0 {
				return e
			}
		}
	}
	for set := keyPrefixesByFirst[s[i]]; set != 0; set &= set - 1 {
		kp := &keyPrefixes[bits.TrailingZeros32(set)]
		if !hasKeyPrefix(s, i, kp.p) {
			continue
		}
		j := i + len(kp.p)
		st, digit := j, false
		for j < len(s) {
			c := s[j]
			if kp.upperExact {
				if !isUpper(c) && !isDigit(c) {
					break
				}
			} else if class[c]&cTok == 0 && (!kp.dot || c != '.') {
				break
			}
			digit = digit || isDigit(c)
			j++
		}
		l := j - st
		if kp.upperExact {
			if l == kp.min && (j == len(s) || !isAlnum(s[j])) {
				return j
			}
			continue
		}
		if l >= kp.min && (digit || l >= 32) {
			return j
		}
	}
	return -1
}

func isBearerChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("-._~+/=", c) >= 0
}

// bearerEnd returns the end of "Bearer <token>" given the index after the
// word, or -1. The token must look generated: 16+ characters with a digit,
// or 24+ characters, so "Bearer bonds" stays.
func bearerEnd(s string, j int) int {
	n := len(s)
	if j >= n || (s[j] != ' ' && s[j] != '\t') {
		return -1
	}
	for j < n && (s[j] == ' ' || s[j] == '\t') {
		j++
	}
	st, digit := j, false
	for j < n && isBearerChar(s[j]) {
		digit = digit || isDigit(s[j])
		j++
	}
	if l := j - st; l >= 24 || (l >= 16 && digit) {
		return j
	}
	return -1
}

// jwtEnd returns the end of a JWT (or JWS/JWE: up to five dot-separated
// base64url segments) or of a lone base64-encoded JSON object, both
// starting with "eyJ" (base64 of `{"`), or -1. A lone blob needs 16
// characters; it is what SDKs put in "data=" parameters and it carries the
// whole event, personal data included.
func jwtEnd(s string, i int) int {
	n, j := len(s), i
	for j < n && class[s[j]]&cB64 != 0 {
		j++
	}
	first, segs := j-i, 1
	for segs < 5 && j < n && s[j] == '.' {
		k := j + 1
		for k < n && class[s[k]]&cB64 != 0 {
			k++
		}
		if k == j+1 { // "header.payload." is an unsigned JWT
			if segs == 2 {
				j = k
			}
			break
		}
		j, segs = k, segs+1
	}
	switch {
	case segs >= 2 && first >= 10:
		return j
	case first >= 16:
		return i + first
	}
	return -1
}
