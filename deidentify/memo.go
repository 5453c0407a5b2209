package deidentify

import (
	"github.com/veilhq/veil/deidentify/scrub"
	"github.com/veilhq/veil/event"
)

// passMemo is what a de-identification Stage remembers from one event to
// the next: the rule of each
// recent property name that is not one of Mixpanel's; the last string of
// each known property, and recent event names, that the scrubber left as
// they were; the pseudonyms of the last two identifiers. The events of
// one request come from one browser on one page, so they repeat most of
// them ($os, $browser, $initial_referrer, the pseudonym of $device_id, the
// shop's own property names, the user's distinct_id), and the next
// event's are then answered by a comparison instead of the checks, the
// scan or the shared pseudonym memo's lock. Everything here was decided
// under rules; an event of another project forgets it all. A nil memo
// remembers nothing: its methods do the work every time.
//
// Only what the scrubber found nothing in is kept: a name it would rename
// or a value it would rewrite is never stored, so the memo holds no text
// the scrubber counts as personal data, only text that is stored as it
// came anyway. It is bounded: nameSlots property names and eventSlots
// event names of at most maxMemoName bytes, and one value of at most
// maxMemoValue bytes per known property.
type passMemo struct {
	rules  *projectRules
	names  [nameSlots]nameSlot
	values [event.NumKnown]valueSlot
	// events are recent event names, by nameHash: a site sends a handful.
	events [eventSlots]valueSlot
	// ids are the last identifiers pseudonymized under keys that do not
	// rotate daily: a user's distinct_id and device id, which every
	// event of a request repeats.
	ids    [2]idSlot
	nextID int
}

type idSlot struct {
	project string // interned by the decoder
	id      []byte
	pseudo  string
	epoch   uint32
	ok      bool
}

type nameSlot struct {
	name []byte // a copy: the event's key points into its message
	rule nameRule
	ok   bool
}

type valueSlot struct {
	text []byte
	ok   bool
}

const (
	eventSlots   = 32
	nameSlots    = 128
	maxMemoName  = 64
	maxMemoValue = 256
)

// under returns m, emptied if it was filled under other rules than r.
func (m *passMemo) under(r *projectRules) *passMemo {
	if m.rules != r {
		m.rules = r
		for i := range m.names {
			m.names[i].ok = false
		}
		for i := range m.values {
			m.values[i].ok = false
		}
		for i := range m.events {
			m.events[i].ok = false
		}
		m.ids[0].ok, m.ids[1].ok = false, false
	}
	return m
}

// nameHash picks a name's slot among slots from its length and three of
// its bytes, as event's known-name table does: names of one site mostly
// differ there, and a collision only costs the checks.
func nameHash(k string, slots int) int {
	n := len(k)
	return int(uint(n)*37+uint(k[0])*7+uint(k[n-1])*3+uint(k[n/2])) % slots
}

// rule returns the nameRule of a name that is not one of Mixpanel's:
// remembered if it came recently, else worked out by r and remembered
// when the scrubber leaves the name as it is.
func (m *passMemo) rule(k string) nameRule {
	r := m.rules
	if len(k) == 0 || len(k) > maxMemoName {
		return r.ruleOf(k)
	}
	s := &m.names[nameHash(k, nameSlots)]
	if s.ok && string(s.name) == k {
		return s.rule
	}
	nr := r.ruleOf(k)
	if nr&nameClean != 0 {
		s.name, s.rule, s.ok = append(s.name[:0], k...), nr, true
	}
	return nr
}

// scrubString is sc.String (sc is m.rules.scrubber) for the value of the
// known property id (0 for any other name, which is not remembered),
// answered from the memo when it is the value the scrubber last left as
// it was.
func (m *passMemo) scrubString(sc *scrub.Scrubber, id event.Known, s string) (string, scrub.Finding) {
	if m == nil || id == 0 {
		return sc.String(s)
	}
	return scrubSlot(sc, &m.values[id], s)
}

// scrubName is sc.String for an event name, answered from the memo when
// the scrubber left it as it was recently.
func (m *passMemo) scrubName(sc *scrub.Scrubber, s string) (string, scrub.Finding) {
	if m == nil || len(s) == 0 || len(s) > maxMemoName {
		return sc.String(s)
	}
	return scrubSlot(sc, &m.events[nameHash(s, eventSlots)], s)
}

// scrubSlot is sc.String for s, answered by v when it holds s, and
// remembered there when the scrubber leaves s as it is.
func scrubSlot(sc *scrub.Scrubber, v *valueSlot, s string) (string, scrub.Finding) {
	if v.ok && string(v.text) == s {
		return s, 0
	}
	out, f := sc.String(s)
	if f == 0 && out == s && len(s) <= maxMemoValue {
		v.text, v.ok = append(v.text[:0], s...), true
	}
	return out, f
}

// pseudonym returns the pseudonym of id in project and its key's epoch
// if it is one of the last two pseudonymized.
func (m *passMemo) pseudonym(project, id string) (string, uint32, bool) {
	if m == nil {
		return "", 0, false
	}
	for i := range m.ids {
		if s := &m.ids[i]; s.ok && string(s.id) == id && s.project == project {
			return s.pseudo, s.epoch, true
		}
	}
	return "", 0, false
}

// rememberPseudonym makes pseudo, of epoch, one of the last two.
func (m *passMemo) rememberPseudonym(project, id, pseudo string, epoch uint32) {
	if m == nil {
		return
	}
	s := &m.ids[m.nextID]
	m.nextID ^= 1
	s.project, s.id, s.pseudo, s.epoch, s.ok = project, append(s.id[:0], id...), pseudo, epoch, true
}
