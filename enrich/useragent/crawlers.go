package useragent

import (
	_ "embed"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
)

//go:generate ./update-crawlers.sh

// crawlerPatterns is the crawler-user-agents list: one regular expression a
// line, lines starting with '#' and empty lines aside. Leading and trailing
// spaces are part of a pattern ("^LCC ").
//
//go:embed crawlers.txt
var crawlerPatterns string

// crawlerMatcher reports whether a user agent matches any pattern of the
// list, with the semantics of trying each as an unanchored Go regexp but at
// a fraction of the cost: a combined regexp of the 1,500 patterns takes
// about 1.5 ms a user agent, this about a microsecond.
//
// Nearly all patterns (1,464 of 1,500) are plain strings; those are found
// in one pass over the user agent, indexed by their first two bytes. The
// rest run as regexps, each only when that pass has seen a string the
// regexp cannot match without.
type crawlerMatcher struct {
	// literals maps the first two bytes of each string to look for to the
	// strings starting with them; bigrams is the same set of keys as a
	// bitmap, so most positions cost a bit test rather than a map probe.
	literals map[uint16][]literal
	bigrams  [1 << 16 / 64]uint64
	// short holds plain-string patterns of one byte, if the list ever has
	// any.
	short   string
	regexps []prefiltered
}

type literal struct {
	s string
	// re is -1 for a crawler pattern, else the index of the regexp this
	// string is a prefilter of.
	re int
}

// maxFiltered is how many regexps can have a prefilter: the pass records
// candidates in a bitmap of this many bits. Later ones always run.
const maxFiltered = 256

type prefiltered struct {
	re *regexp.Regexp
	// always is set when no prefilter could be found: the regexp runs on
	// every user agent.
	always bool
}

func newCrawlerMatcher(list string) (*crawlerMatcher, error) {
	m := &crawlerMatcher{literals: make(map[uint16][]literal)}
	n := 0
	for i, line := range strings.Split(list, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		n++
		re, err := syntax.Parse(line, syntax.Perl)
		if err != nil {
			return nil, fmt.Errorf("useragent: crawler pattern on line %d: %w", i+1, err)
		}
		re = re.Simplify()
		if re.Op == syntax.OpLiteral && re.Flags&syntax.FoldCase == 0 {
			if s := string(re.Rune); len(s) < 2 {
				m.short += s
			} else {
				m.add(literal{s: s, re: -1})
			}
			continue
		}
		compiled, err := regexp.Compile(line)
		if err != nil {
			return nil, fmt.Errorf("useragent: crawler pattern on line %d: %w", i+1, err)
		}
		idx := len(m.regexps)
		needs := requiredLiterals(re)
		always := needs == nil || idx >= maxFiltered
		for _, s := range needs {
			always = always || len(s) < 2
		}
		if !always {
			for _, s := range needs {
				m.add(literal{s: s, re: idx})
			}
		}
		m.regexps = append(m.regexps, prefiltered{re: compiled, always: always})
	}
	if n == 0 {
		return nil, fmt.Errorf("useragent: the crawler list is empty")
	}
	return m, nil
}

func (m *crawlerMatcher) add(l literal) {
	k := uint16(l.s[0])<<8 | uint16(l.s[1])
	m.literals[k] = append(m.literals[k], l)
	m.bigrams[k/64] |= 1 << (k % 64)
}

func (m *crawlerMatcher) match(ua string) bool {
	if m.short != "" && strings.ContainsAny(ua, m.short) {
		return true
	}
	var candidates [maxFiltered / 64]uint64
	for i := 0; i+1 < len(ua); i++ {
		k := uint16(ua[i])<<8 | uint16(ua[i+1])
		if m.bigrams[k/64]&(1<<(k%64)) == 0 {
			continue
		}
		rest := ua[i:]
		for _, l := range m.literals[k] {
			if !strings.HasPrefix(rest, l.s) {
				continue
			}
			if l.re < 0 {
				return true
			}
			candidates[l.re/64] |= 1 << (l.re % 64)
		}
	}
	for i, p := range m.regexps {
		if !p.always && candidates[i/64]&(1<<(i%64)) == 0 {
			continue
		}
		if p.re.MatchString(ua) {
			return true
		}
	}
	return false
}

// requiredLiterals returns strings of which every match of re contains at
// least one, or nil if it finds none. It is deliberately simple: a concat
// needs what its most selective part needs, an alternation needs what any
// branch needs, and everything else needs nothing it can name.
func requiredLiterals(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil
		}
		return []string{string(re.Rune)}
	case syntax.OpCapture:
		return requiredLiterals(re.Sub[0])
	case syntax.OpConcat:
		var best []string
		for _, sub := range re.Sub {
			if lits := requiredLiterals(sub); lits != nil && (best == nil || shortest(lits) > shortest(best)) {
				best = lits
			}
		}
		return best
	case syntax.OpAlternate:
		var all []string
		for _, sub := range re.Sub {
			lits := requiredLiterals(sub)
			if lits == nil {
				return nil
			}
			all = append(all, lits...)
		}
		return all
	}
	return nil
}

func shortest(lits []string) int {
	n := len(lits[0])
	for _, l := range lits[1:] {
		n = min(n, len(l))
	}
	return n
}
