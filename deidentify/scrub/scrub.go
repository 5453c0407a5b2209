// Package scrub finds personal data in free text and in JSON-decoded property
// trees and replaces it by typed placeholders such as "[email]".
//
// Detection is structural, not statistical: every detector looks for a shape
// (an '@' with a plausible domain, a Luhn-valid digit run, an IBAN whose
// mod-97 checksum holds, ...) and then checks the surrounding characters, so
// that the ordinary numbers analytics is full of (prices, dates, versions,
// timestamps, UUIDs) are left alone. The rules and the false positives each
// one accepts are documented on the detector that applies them (detect.go).
//
// The scanner is hand-written rather than a set of regular expressions: a
// property map is scrubbed for every event, most strings in it carry no
// personal data, and a one-byte-at-a-time prefilter (prefilter.go) lets such
// strings through without allocating.
//
// The rules that keep false positives out, in short:
//   - numbers must stand alone: no letter or digit touching them, not the
//     fraction or integer part of a decimal, not a piece of a hyphenated
//     hex id (UUIDs are skipped whole);
//   - cards are Luhn-valid, 13–19 digits, issuer digit 2–6, and 13 digits
//     only for a leading 4, which keeps Unix timestamps (ms, µs, ns) out;
//   - phones need a '+' (E.164), NANP or trunk-0 formatting, or a bare run
//     of exactly 10/11 digits shaped like a NANP number; see phonePlus;
//   - IBANs need a registry country, its exact length and mod-97; SSNs the
//     dashed or spaced form and an issuable area/group/serial; SINs Luhn;
//     UK NINOs HMRC's prefix and suffix letters;
//   - IPv4 has no leading zeros, no fifth part, no zero first octet and is
//     not a product version ("Chrome/120.0.0.0"); IPv6 is parsed strictly;
//   - tokens are "Bearer" + a generated-looking token, JWTs and base64 JSON
//     ("eyJ…"), and a list of vendor key prefixes with a long body.
package scrub

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Finding is a set of detectors that fired, one bit per detector.
type Finding uint16

// The detectors. The order of the bits is the order of Names.
const (
	FindingEmail      Finding = 1 << iota // an e-mail address
	FindingPhone                          // a telephone number
	FindingCard                           // a payment card number (Luhn-checked)
	FindingIBAN                           // an IBAN (mod-97-checked)
	FindingNationalID                     // a national identification number
	FindingIP                             // an IPv4 or IPv6 address
	FindingToken                          // a bearer token, JWT or API secret
	FindingURL                            // a URL was rewritten (query, fragment or userinfo dropped)

	findingAll = FindingEmail | FindingPhone | FindingCard | FindingIBAN |
		FindingNationalID | FindingIP | FindingToken | FindingURL
)

// detectorNames are the stable names of the detectors, indexed by bit.
// They appear in configuration and in metrics labels, so they never change.
var detectorNames = [...]string{"email", "phone", "card", "iban", "national_id", "ip", "token", "url"}

// placeholders replace what each detector found; indexed like detectorNames.
// FindingURL has none: a URL is rewritten, never replaced.
var placeholders = [...]string{"[email]", "[phone]", "[card]", "[iban]", "[national_id]", "[ip]", "[token]", ""}

// Names returns the names of the detectors in f, in bit order. It returns
// nil for the empty set.
func (f Finding) Names() []string {
	if f == 0 {
		return nil
	}
	names := make([]string, 0, 8)
	for i, n := range detectorNames {
		if f&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return names
}

// Has reports whether every detector in g is in f.
func (f Finding) Has(g Finding) bool { return f&g == g }

func (f Finding) String() string {
	if f == 0 {
		return "none"
	}
	s := strings.Join(f.Names(), "|")
	if rest := f &^ findingAll; rest != 0 {
		s += "|0x" + strconv.FormatUint(uint64(rest), 16)
	}
	return s
}

// placeholder returns the replacement text for a single-bit finding.
func placeholder(f Finding) string {
	for i := range placeholders {
		if f == 1<<i {
			return placeholders[i]
		}
	}
	return "[redacted]"
}

// Config chooses what a Scrubber looks for.
type Config struct {
	// Detectors names the detectors to run (see Finding.Names). Empty means
	// all of them: scrubbing is opt-out, never opt-in.
	Detectors []string
	// URLQueryAllow names the query parameters a URL keeps; every other one
	// is dropped, whatever its value. Nil means the utm_* campaign
	// parameters; a non-nil empty list keeps none.
	URLQueryAllow []string
}

// DefaultURLQueryAllow is the query allow-list used when Config leaves it
// nil: the campaign parameters marketing attribution needs, which name a
// campaign and never a person.
func DefaultURLQueryAllow() []string {
	return []string{"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"}
}

// DefaultConfig returns a Config that runs every detector and keeps only
// the utm_* query parameters. Detectors is left empty, meaning all, so a
// detector added in a later release is on without a configuration change.
func DefaultConfig() Config {
	return Config{URLQueryAllow: DefaultURLQueryAllow()}
}

// Validate reports the first problem with c. Messages name the
// configuration key and never echo a value that might be personal data
// (detector names and parameter names are configuration, not user data).
func (c Config) Validate() error {
	for i, d := range c.Detectors {
		if detectorBit(d) == 0 {
			return fmt.Errorf("deidentify.detectors[%d] must be one of %s, got %q",
				i, strings.Join(detectorNames[:], ", "), d)
		}
	}
	for i, p := range c.URLQueryAllow {
		if p == "" {
			return fmt.Errorf("deidentify.url_query_allow[%d] must not be empty", i)
		}
		if strings.ContainsAny(p, "&=#?%+ \t\r\n") {
			return fmt.Errorf("deidentify.url_query_allow[%d] must be a plain parameter name (no '&', '=', '#', '?', '%%', '+' or spaces), got %q", i, p)
		}
	}
	return nil
}

func detectorBit(name string) Finding {
	for i, n := range detectorNames {
		if n == name {
			return 1 << i
		}
	}
	return 0
}

// Scrubber replaces personal data by placeholders. It is immutable after New
// and safe for concurrent use.
type Scrubber struct {
	enabled Finding
	// allow is the query allow-list. It is short (a handful of names), so a
	// linear scan beats hashing and needs no allocation.
	allow []string
	// urls remembers recent URLs found clean (cache.go).
	urls *cleanURLs
}

// New returns a Scrubber for cfg.
func New(cfg Config) (*Scrubber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Scrubber{enabled: findingAll, urls: newCleanURLs()}
	if len(cfg.Detectors) > 0 {
		s.enabled = 0
		for _, d := range cfg.Detectors {
			s.enabled |= detectorBit(d)
		}
	}
	if cfg.URLQueryAllow == nil {
		s.allow = DefaultURLQueryAllow()
	} else {
		s.allow = append([]string(nil), cfg.URLQueryAllow...)
	}
	return s, nil
}

// maxPasses bounds the rescans String does until its output is stable.
const maxPasses = 4

// String returns s with every finding replaced by its placeholder and every
// URL rewritten, and the set of detectors that fired. A string with nothing
// to replace is returned as is, without allocating.
//
// Scrubbing is idempotent: String(String(s)) == String(s). Replacing a
// match can change what its neighbours look like (a digit run that was
// rejected because it touched the match may now stand alone), so the output
// is rescanned until nothing changes; the rescan almost always stops at the
// prefilter, because placeholders carry no candidate character.
func (sc *Scrubber) String(s string) (string, Finding) {
	if !sc.mayContain(s) {
		return s, 0
	}
	if cacheable(s) {
		h, clean := sc.urls.lookup(s)
		if clean {
			return s, 0
		}
		out, found := sc.scrub(s)
		if found == 0 && out == s {
			sc.urls.add(s, h)
		}
		return out, found
	}
	return sc.scrub(s)
}

// scrub is String after the prefilter. A rewritten URL is rescanned like
// any output, unless the clean-URL cache already knows it (a page URL
// whose query parameters went, the same for every visitor); one the
// rescan finds clean is offered to the cache.
func (sc *Scrubber) scrub(s string) (string, Finding) {
	var found Finding
	for pass := 0; pass < maxPasses; pass++ {
		out, f, changed := sc.scan(s, 0, false)
		if !changed {
			if pass > 0 && cacheable(s) {
				h, _ := sc.urls.lookup(s)
				sc.urls.add(s, h)
			}
			return s, found
		}
		found |= f
		s = out
		if !sc.mayContain(s) {
			break
		}
		if cacheable(s) {
			if _, clean := sc.urls.lookup(s); clean {
				break
			}
		}
	}
	return s, found
}

// Value scrubs a JSON-decoded value (as produced by encoding/json, with or
// without UseNumber): every string and every map key, recursively. Numbers,
// booleans and nil are returned unchanged: they are not scanned, so a card
// number sent as a JSON number passes through.
//
// Value mutates maps and slices in place and returns the same container:
// the worker owns the decoded event, and copying every property map of
// every event only to drop the original would double the allocation rate.
//
// A key that contains personal data is renamed to its scrubbed form. When
// two keys collide after scrubbing both are kept: keys that did not change
// keep their name and renamed keys take the next free name among k, k#2,
// k#3, ... in the sorted order of their original names, so the result does
// not depend on map iteration order.
func (sc *Scrubber) Value(v any) (any, Finding) {
	switch t := v.(type) {
	case string:
		out, f := sc.String(t)
		if f == 0 {
			return v, 0 // re-boxing the string would allocate
		}
		return out, f
	case map[string]any:
		return t, sc.scrubMap(t)
	case []any:
		var found Finding
		for i, e := range t {
			var f Finding
			t[i], f = sc.Value(e)
			found |= f
		}
		return t, found
	}
	return v, 0
}

type rename struct {
	from, to string
	val      any
}

func (sc *Scrubber) scrubMap(m map[string]any) Finding {
	var found Finding
	var renames []rename // allocated only when a key carries personal data
	for k, v := range m {
		nv, f := sc.Value(v)
		found |= f
		nk, kf := sc.String(k)
		found |= kf
		if nk != k {
			renames = append(renames, rename{from: k, to: nk, val: nv})
			continue
		}
		// Only strings change identity; re-storing a container or an
		// unchanged scalar would be a wasted map write.
		if _, isStr := v.(string); isStr && f != 0 {
			m[k] = nv
		}
	}
	if len(renames) == 0 {
		return found
	}
	sort.Slice(renames, func(i, j int) bool { return renames[i].from < renames[j].from })
	for _, r := range renames {
		delete(m, r.from)
	}
	for _, r := range renames {
		name := r.to
		for n := 2; ; n++ {
			if _, taken := m[name]; !taken {
				break
			}
			name = r.to + "#" + strconv.Itoa(n)
		}
		m[name] = r.val
	}
	return found
}

// Clean reports whether String would return s unchanged.
func (sc *Scrubber) Clean(s string) bool {
	if !sc.mayContain(s) {
		return true
	}
	_, f := sc.String(s)
	return f == 0
}
