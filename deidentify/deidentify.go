// Package deidentify is the worker's de-identification stage, the last:
// after the policy stage (package policy) has decided the event is kept
// and enrichment has used the IP, it removes what identifies a person
// before anything reaches ClickHouse:
//
//   - the IP is dropped, or truncated to its /24 or /48 network;
//   - distinct_id, $device_id, $user_id, $anon_distinct_id and group ids
//     become keyed HMAC-SHA256 pseudonyms;
//   - PII properties ($email, $phone, $name, …) are dropped; a group
//     profile's properties are a company's or an account's, and keep its
//     name ($name, name) under a list of their own;
//   - every remaining string, keys included, is scanned for emails, phone
//     numbers, card numbers, IBANs, national ids, IPs and tokens, which are
//     replaced by typed placeholders; URLs lose their fragment and every
//     query parameter not allow-listed;
//   - geo is cut to the policy's precision;
//   - the row records the policy version, the key epoch, the consent
//     signals seen and the transforms that fired.
package deidentify

import (
	"errors"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/deidentify/scrub"
	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/policy"
)

// Transform names recorded in a row's transforms column.
const (
	TIPDropped      = "ip_dropped"
	TIPTruncated    = "ip_truncated"
	TPseudonymized  = "ids_pseudonymized"
	TAnonymized     = "anonymized"
	TPIIDropped     = "pii_dropped"
	TNotAllowListed = "not_allow_listed_dropped"
	TGeoReduced     = "geo_reduced"
	TScrubbedPrefix = "scrubbed_"
)

// builtinPII are property names that hold personal data by their very name.
// They are compared case-insensitively and without a leading '$'.
var builtinPII = []string{
	"email", "phone", "phone_number", "mobile", "name", "first_name", "last_name", "full_name",
	"address", "street", "street_address", "postal_code", "zip", "zip_code", "ip", "ip_address",
	"birthday", "date_of_birth", "dob", "ssn", "password", "username", "user_name",
	"avatar", "latitude", "longitude", "lat", "lng", "geo_latitude", "geo_longitude",
}

// groupProfileNames are the names of builtinPII that a group profile keeps:
// a group is a company, an account or a team, and its $name is what it is
// called, not a person's name. Everything else on builtinPII still goes
// from group profiles (an e-mail, a phone or a first name there is a
// contact person's), and what is kept is scrubbed like any free text.
var groupProfileNames = []string{"name"}

// builtinGroupPII is builtinPII without groupProfileNames: the property
// names of group profiles (/groups) that hold personal data by their name.
var builtinGroupPII = slices.DeleteFunc(slices.Clone(builtinPII), func(k string) bool {
	return slices.Contains(groupProfileNames, k)
})

// memoSize is how many pseudonyms each memo keeps: the users of a few
// seconds of traffic, a few MB.
const memoSize = 1 << 16

// Deps are the stages' collaborators.
type Deps struct {
	Logger  *zap.Logger
	Metrics prometheus.Registerer
	Keyring *pseudonym.Keyring
}

type projectRules struct {
	policy policy.Policy
	// pii are the PII names of events and people profiles; groupPII those
	// of the properties of group profiles.
	pii, groupPII piiNames
	allowOnly     map[string]bool
	scrubber      *scrub.Scrubber
	// known is what the name checks below decide for each of the
	// property names Mixpanel's SDKs use (event.KnownProp), worked out
	// once from this policy and scrubber, so that a raw event's props
	// with such a name are not checked one by one. A name the policy
	// lists as PII, or that is not allow-listed, is marked so here.
	known [event.NumKnown]nameRule
}

// nameRule is what the checks of a property name decided for it.
type nameRule uint8

const (
	nameClean      nameRule = 1 << iota // the scrubber leaves the name as it is
	nameID                              // isIDKey
	namePII                             // drops: PII
	nameNotAllowed                      // drops: not allow-listed
)

// ruleOf works out the nameRule of the property name k.
func (r *projectRules) ruleOf(k string) nameRule {
	var nr nameRule
	if r.scrubber.Clean(k) {
		nr |= nameClean
	}
	if r.isIDKey(k) {
		nr |= nameID
	}
	pii, na := r.drops(&r.pii, k)
	if pii {
		nr |= namePII
	}
	if na {
		nr |= nameNotAllowed
	}
	return nr
}

// Engine holds the compiled per-project rules and the pseudonym caches,
// shared by every goroutine's Stage.
type Engine struct {
	set      policy.Set
	rules    map[string]*projectRules
	fallback *projectRules
	keys     *pseudonym.Keyring
	// memo and dailyMemo remember the pseudonyms of the keys, and of the
	// same keys rotating daily.
	memo, dailyMemo *pseudonym.Memo
	log             *zap.Logger
	m               *metrics
}

// New compiles the policies.
func New(set policy.Set, deps Deps) (*Engine, error) {
	if err := set.Validate(); err != nil {
		return nil, err
	}
	if deps.Keyring == nil {
		return nil, errors.New("deidentify: a pseudonymisation keyring is required")
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	e := &Engine{set: set, rules: map[string]*projectRules{}, keys: deps.Keyring, log: deps.Logger, m: newMetrics(deps.Metrics, deps.Keyring)}
	stable, err := deps.Keyring.WithConfig(pseudonym.Config{Rotate: pseudonym.RotateNone})
	if err != nil {
		return nil, err
	}
	daily, err := deps.Keyring.WithConfig(pseudonym.Config{Rotate: pseudonym.RotateDaily})
	if err != nil {
		return nil, err
	}
	e.memo, e.dailyMemo = pseudonym.NewMemo(stable, memoSize), pseudonym.NewMemo(daily, memoSize)
	if e.fallback, err = compile(set.Default); err != nil {
		return nil, err
	}
	for name, p := range set.Projects {
		if e.rules[name], err = compile(p); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func compile(p policy.Policy) (*projectRules, error) {
	r := &projectRules{policy: p}
	// pii_deny and pii_allow apply to every property; group_pii_deny and
	// group_pii_allow then to group profiles only.
	r.pii = newPIINames(builtinPII)
	r.pii.edit(p.PIIDeny, p.PIIAllow)
	r.groupPII = newPIINames(builtinGroupPII)
	r.groupPII.edit(p.PIIDeny, p.PIIAllow)
	r.groupPII.edit(p.GroupPIIDeny, p.GroupPIIAllow)
	if len(p.AllowOnly) > 0 {
		r.allowOnly = map[string]bool{}
		for _, k := range p.AllowOnly {
			r.allowOnly[k] = true
		}
	}
	cfg := scrub.DefaultConfig()
	cfg.URLQueryAllow = p.URLQueryAllow
	sc, err := scrub.New(cfg)
	if err != nil {
		return nil, err
	}
	r.scrubber = sc
	for id := 1; id < event.NumKnown; id++ {
		r.known[id] = r.ruleOf(event.Known(id).Name())
	}
	return r, nil
}

func (e *Engine) rulesFor(project string) *projectRules {
	if r, ok := e.rules[project]; ok {
		return r
	}
	return e.fallback
}

// normKey folds a property name for the PII list: case and a leading '$'
// do not matter ($Email, email and EMAIL are the same promise).
func normKey(k string) string {
	return strings.ToLower(strings.TrimPrefix(k, "$"))
}

// Stage is the de-identification stage of one worker goroutine. It keeps
// what it remembers from one event to the next (passMemo), so it is not
// safe for concurrent use: each goroutine that runs the stages has its
// own (Engine.NewStage), and they share the Engine.
type Stage struct {
	e    *Engine
	memo passMemo
	// rules is the space for each event's name rules (pass.rules).
	rules []nameRule
}

// NewStage returns a de-identification stage for one goroutine.
func (e *Engine) NewStage() *Stage { return &Stage{e: e} }

// pass is what de-identifying one event works with.
type pass struct {
	*Stage
	r    *projectRules
	p    *policy.Policy
	ev   *event.Event
	memo *passMemo // nil: remember nothing
	tr   transformSet
	// found is the personal data the scrubber found.
	found scrub.Finding
	// rules holds the nameRule of each property, by its index: worked
	// out once, as the steps below each ask.
	rules []nameRule
}

// Apply de-identifies ev in place. It never drops, but for a property
// value that cannot be read.
func (s *Stage) Apply(ev *event.Event) event.DropReason {
	r := s.e.rulesFor(ev.Project)
	d := pass{Stage: s, r: r, p: &r.policy, ev: ev, memo: s.memo.under(r)}
	d.names()
	d.consent()
	d.geo()
	d.ip()
	d.identifiers()
	d.pii()
	if !d.freeText() {
		return event.DropInvalid
	}
	d.provenance()
	return event.Keep
}

// names works out the rule of each property's name (identifier, PII, not
// allow-listed, clean): a known name's from the policy's table, any other
// name's from the memo or its checks.
func (d *pass) names() {
	props := &d.ev.Properties
	d.rules = d.Stage.rules[:0]
	for i, pr := range props.All() {
		for len(d.rules) <= i {
			d.rules = append(d.rules, 0)
		}
		switch {
		case pr.Known() != 0:
			d.rules[i] = d.r.known[pr.Known()]
		case d.memo != nil:
			d.rules[i] = d.memo.rule(pr.Name())
		default:
			d.rules[i] = d.r.ruleOf(pr.Name())
		}
	}
	d.Stage.rules = d.rules
}

// consent records what the policy stage decided: an anonymized event is
// kept without identifiers, and with no more than its country (geo, ip,
// identifiers).
func (d *pass) consent() {
	if d.ev.Anonymized {
		d.tr |= tAnonymized
	}
}

// geo cuts the location to the policy's precision (country at most for
// an anonymized event), and puts it on a person's profile, where Mixpanel
// puts it.
func (d *pass) geo() {
	ev, geo := d.ev, d.p.Geo
	if ev.Anonymized && (geo == policy.GeoCity || geo == policy.GeoRegion) {
		geo = policy.GeoCountry
	}
	if reduceGeo(&ev.Geo, geo) {
		d.tr |= tGeoReduced
	}
	if ev.Kind == event.KindEngage && ev.Name == "$set" {
		if m, ok := ev.Value.(map[string]any); ok {
			for k, v := range map[string]string{"$country_code": ev.Geo.CountryCode, "$region": ev.Geo.Region, "$city": ev.Geo.City} {
				if _, set := m[k]; !set && v != "" {
					m[k] = v
				}
			}
		}
	}
}

// ip keeps only the policy's prefix of the address, which has served
// geolocation, and drops the user agent, which has served parsing.
func (d *pass) ip() {
	ev := d.ev
	if ev.IP.IsValid() {
		if d.p.IP == policy.IPTruncate && !ev.Anonymized {
			ev.IPPrefix = truncate(ev.IP).String()
			d.tr |= tIPTruncated
		} else {
			d.tr |= tIPDropped
		}
		ev.IP = netip.Addr{}
	}
	ev.UserAgent = ""
}

// identifiers replaces distinct_id, the group id and every identifier
// property by its pseudonym, or drops them all when the event is
// anonymized.
func (d *pass) identifiers() {
	ev, props := d.ev, &d.ev.Properties
	if ev.Anonymized {
		ev.DistinctID, ev.GroupID = "", ""
		for i := range props.All() {
			if d.rules[i]&nameID != 0 {
				props.Drop(i)
			}
		}
		return
	}
	done := false
	if ev.DistinctID != "" {
		ev.DistinctID, done = d.pseudonym(ev.DistinctID), true
	}
	if ev.GroupID != "" {
		ev.GroupID, done = d.pseudonym(ev.GroupID), true
	}
	for i, pr := range props.All() {
		if d.rules[i]&nameID == 0 {
			continue
		}
		switch {
		case pr.Kind() == event.PropArray: // an event may belong to several groups
			v, ok := pr.Value()
			l, isList := v.([]any)
			if !ok || !isList {
				props.Drop(i)
				continue
			}
			for j, e := range l {
				if s := idString(e); s != "" {
					l[j] = d.pseudonym(s)
				}
			}
			props.SetValue(i, l)
		case (pr.Kind() == event.PropString || pr.Kind() == event.PropNumber) && pr.Text() != "":
			props.SetString(i, d.pseudonym(pr.Text()))
		default:
			props.Drop(i)
			continue
		}
		done = true
	}
	if done {
		d.tr |= tPseudonymized
	}
}

// pseudonym returns id's pseudonym under the policy's keys, and records
// the key's epoch. The memo holds pseudonyms that do not depend on the
// day.
func (d *pass) pseudonym(id string) string {
	m := d.memo
	if d.p.Rotate == policy.RotateDaily {
		m = nil
	}
	v, epoch, ok := m.pseudonym(d.ev.Project, id)
	if !ok {
		v, epoch = d.e.pseudonymize(d.p, d.ev.Project, id, d.ev.Time)
		m.rememberPseudonym(d.ev.Project, id, v, epoch)
	}
	d.ev.Provenance.KeyEpoch = epoch
	return v
}

// pii drops the properties the policy names as personal data and, in
// allow-list mode, every property not allowed; from a profile update's
// operand too, under the list of its kind of profile.
func (d *pass) pii() {
	ev, props := d.ev, &d.ev.Properties
	var dropped, notAllowed bool
	for i := range props.All() {
		if nr := d.rules[i]; nr&(namePII|nameNotAllowed) != 0 {
			props.Drop(i)
			dropped = dropped || nr&namePII != 0
			notAllowed = notAllowed || nr&nameNotAllowed != 0
		}
	}
	profile := d.r.profilePII(ev.Kind)
	if m, ok := ev.Value.(map[string]any); ok {
		p, n := dropProps(m, d.r, profile)
		dropped, notAllowed = dropped || p, notAllowed || n
	}
	if ev.Kind != event.KindTrack && ev.Name == "$unset" {
		// $unset's operand is a list of property names: names are kept.
		if l, ok := ev.Value.([]any); ok {
			ev.Value = filterNames(l, d.r, profile)
		}
	}
	if dropped {
		d.tr |= tPIIDropped
	}
	if notAllowed {
		d.tr |= tNotAllowListed
	}
}

// freeText runs the scrubber over every string left: the event name, each
// property's value (an object or array checked in place, rewritten only
// when something in it changes) and a profile operation's operand. A
// property name the scrubber would rename sends the properties through
// the scrubber as one map, which renames names (and renames can collide).
// It reports false when a value cannot be read.
func (d *pass) freeText() bool {
	ev, sc, props := d.ev, d.r.scrubber, &d.ev.Properties
	if name, f := d.memo.scrubName(sc, ev.Name); f != 0 {
		ev.Name, d.found = name, d.found|f
	}
	namesClean := true
	for i := range props.All() {
		if d.rules[i]&nameClean == 0 {
			namesClean = false
			break
		}
	}
	if namesClean {
		for i, pr := range props.All() {
			d.found |= d.scrubProp(i, pr)
		}
	} else {
		m, ok := props.Map()
		if !ok {
			return false
		}
		v, f := sc.Value(m)
		if m, ok = v.(map[string]any); ok {
			props.Replace(m)
		}
		d.found |= f
	}
	if ev.Value != nil {
		v, f := sc.Value(ev.Value)
		ev.Value, d.found = v, d.found|f
	}
	return true
}

// scrubProp scrubs property i: a string through the scrubber, an object
// or an array checked in place and rewritten only when something in it
// changes. A value that cannot be read goes.
func (d *pass) scrubProp(i int, pr *event.Prop) scrub.Finding {
	sc, props := d.r.scrubber, &d.ev.Properties
	switch pr.Kind() {
	case event.PropString:
		if s, f := d.memo.scrubString(sc, pr.Known(), pr.Text()); f != 0 {
			props.SetString(i, s)
			return f
		}
	case event.PropObject, event.PropArray:
		if text, ok := pr.JSON(); ok && event.CleanJSON(text, sc) {
			return 0
		}
		v, ok := pr.Value()
		if !ok {
			props.Drop(i)
			return 0
		}
		// Written as the reference writes it, whatever was found: the
		// text may hold escapes or a repeated key.
		v, f := sc.Value(v)
		props.SetValue(i, v)
		return f
	}
	return 0
}

// provenance records what was done: the transforms that fired and the
// personal data found, counted by kind.
func (d *pass) provenance() {
	d.e.m.countFound(d.found)
	d.ev.Provenance.Transforms = d.tr.list(d.found)
}

// Transforms as a set, in the order a row lists them.
type transformSet uint8

const (
	tIPTruncated transformSet = 1 << iota
	tIPDropped
	tGeoReduced
	tAnonymized
	tPseudonymized
	tPIIDropped
	tNotAllowListed
)

var transformNames = [...]string{TIPTruncated, TIPDropped, TGeoReduced, TAnonymized, TPseudonymized, TPIIDropped, TNotAllowListed}

// transformLists shares the list of every combination of transforms and
// findings seen: rows keep their list, and most rows have one of a few.
var transformLists sync.Map // uint32 → []string

// list returns the transforms of t and found, nil for none. The slice is
// shared and must not be modified.
func (t transformSet) list(found scrub.Finding) []string {
	if t == 0 && found == 0 {
		return nil // as before: no transform is a nil list
	}
	id := uint32(t) | uint32(found)<<8
	if l, ok := transformLists.Load(id); ok {
		return l.([]string)
	}
	var l []string
	for i, name := range transformNames {
		if t&(1<<i) != 0 {
			l = append(l, name)
		}
	}
	for _, name := range found.Names() {
		l = append(l, TScrubbedPrefix+name)
	}
	l = slices.Clip(l)
	transformLists.Store(id, l)
	return l
}

func (e *Engine) pseudonymize(p *policy.Policy, project, id string, t time.Time) (string, uint32) {
	if p.Rotate == policy.RotateDaily {
		return e.dailyMemo.PseudonymizeAt(project, id, t)
	}
	return e.memo.PseudonymizeAt(project, id, t)
}

func idString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case interface{ String() string }:
		return x.String()
	}
	return ""
}

// dropProps removes the properties of m that names lists as PII and, in
// allow-list mode, every property not allowed. It reports which of the
// two fired.
func dropProps(m map[string]any, r *projectRules, names *piiNames) (pii, notAllowed bool) {
	for k := range m {
		if p, na := r.drops(names, k); p || na {
			delete(m, k)
			pii, notAllowed = pii || p, notAllowed || na
		}
	}
	return pii, notAllowed
}

// drops says whether the property k goes: as PII by names, or as not
// allow-listed in allow-list mode.
func (r *projectRules) drops(names *piiNames, k string) (pii, notAllowed bool) {
	if r.allowOnly != nil && !r.allowOnly[k] && !r.isIDKey(k) {
		return false, true
	}
	return names.has(k), false
}

// profilePII is the PII list of the properties a profile operation of kind
// k sets: a group profile's are a company's or an account's.
func (r *projectRules) profilePII(k event.Kind) *piiNames {
	if k == event.KindGroups {
		return &r.groupPII
	}
	return &r.pii
}

// piiNames is a set of property names that hold personal data, folded by
// normKey.
type piiNames struct {
	set map[string]bool
	// shapes has a bit per (length, first byte) of the names in set,
	// folded as has folds them: most names are ruled out without hashing.
	shapes [64]uint64
}

func newPIINames(builtin []string) piiNames {
	n := piiNames{set: make(map[string]bool, len(builtin))}
	n.edit(builtin, nil)
	return n
}

// edit adds the names of deny to the set, then takes those of allow off.
func (n *piiNames) edit(deny, allow []string) {
	for _, k := range deny {
		n.set[normKey(k)] = true
	}
	for _, k := range allow {
		delete(n.set, normKey(k))
	}
	n.shapes = [64]uint64{}
	for k := range n.set {
		if k != "" {
			n.shapes[len(k)&63] |= 1 << (k[0] & 63)
		}
	}
}

// has reports whether k names personal data, as set[normKey(k)] does,
// without allocating for an ASCII name.
func (n *piiNames) has(k string) bool {
	k = strings.TrimPrefix(k, "$")
	var buf [64]byte
	if len(k) == 0 || len(k) > len(buf) {
		return n.set[strings.ToLower(k)]
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= utf8.RuneSelf {
			return n.set[strings.ToLower(k)] // folding may change the length
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	if n.shapes[len(k)&63]&(1<<(buf[0]&63)) == 0 {
		return false
	}
	return n.set[string(buf[:len(k)])]
}

// isIDKey reports whether k is an identifier property: one of idProps or
// a group key of the policy.
func (r *projectRules) isIDKey(k string) bool {
	return isIDProp(k) || slices.Contains(r.policy.GroupKeys, k)
}

func filterNames(l []any, r *projectRules, names *piiNames) []any {
	out := l[:0]
	for _, v := range l {
		if s, ok := v.(string); ok && (names.has(s) || (r.allowOnly != nil && !r.allowOnly[s])) {
			continue
		}
		out = append(out, v)
	}
	return out
}

// isIDProp reports whether k is one of the known identifier properties
// (event.RoleIdentifier).
func isIDProp(k string) bool {
	return event.LookupKnown(k).Prop().Role == event.RoleIdentifier
}

// truncate keeps the /24 of an IPv4 and the /48 of an IPv6 address: enough
// for network-level analysis, too coarse to single out a household.
func truncate(ip netip.Addr) netip.Prefix {
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

// reduceGeo cuts g to precision and reports whether anything was removed.
func reduceGeo(g *event.Geo, precision policy.GeoPrecision) bool {
	before := *g
	switch precision {
	case policy.GeoRegion:
		g.City = ""
	case policy.GeoCountry:
		g.City, g.Region = "", ""
	case policy.GeoNone:
		*g = event.Geo{}
	}
	return *g != before
}

type metrics struct {
	scrubbed *prometheus.CounterVec
	// byKind are scrubbed's counters, by the bit of their Finding.
	byKind [16]prometheus.Counter
}

// countFound counts each kind of personal data in found.
func (m *metrics) countFound(found scrub.Finding) {
	for f := uint64(found); f != 0; f &= f - 1 {
		if c := m.byKind[bits.TrailingZeros64(f)]; c != nil {
			c.Inc()
		}
	}
}

func newMetrics(reg prometheus.Registerer, keys *pseudonym.Keyring) *metrics {
	m := &metrics{
		scrubbed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_deidentify_scrubbed_total", Help: "Personal data found in free text and replaced, by kind.",
		}, []string{"kind"}),
	}
	// Every kind is pre-created so that rate() sees a zero before the first
	// finding.
	for f := scrub.Finding(1); f != 0; f <<= 1 {
		for _, name := range f.Names() {
			m.byKind[bits.TrailingZeros64(uint64(f))] = m.scrubbed.WithLabelValues(name)
		}
	}
	keyAge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "veil_deidentify_key_age_seconds", Help: "Age of the current pseudonymisation key (0 when its creation time is unknown).",
	}, func() float64 {
		age, ok := keys.KeyAge(time.Now())
		if !ok {
			return 0
		}
		return age.Seconds()
	})
	if reg != nil {
		reg.MustRegister(m.scrubbed, keyAge)
	}
	return m
}
