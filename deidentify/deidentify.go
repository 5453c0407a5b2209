// Package deidentify holds the worker's privacy stages. The policy stage
// applies each project's policy to the end user's choices; the
// de-identification stage, which runs after enrichment has used the IP,
// removes what identifies a person before anything reaches ClickHouse:
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

	"github.com/veilhq/veil/deidentify/policy"
	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/deidentify/scrub"
	"github.com/veilhq/veil/event"
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

// idProps are the identifier properties that become pseudonyms.
var idProps = []string{"$device_id", "$user_id", "$anon_distinct_id", "$distinct_id_before_identity", "$identified_id", "$anon_id"}

// Deps are the stages' collaborators.
type Deps struct {
	Logger   *zap.Logger
	Metrics  prometheus.Registerer
	Keyring  *pseudonym.Keyring
	Registry Registry // nil: no opt-out registry and no deletions
}

// Registry answers whether a user opted out or was deleted. Lookups take
// the user's pseudonyms under every key held, so entries made under an older
// key still match.
type Registry interface {
	OptedOut(project string, ids []pseudonym.Pseudonym) bool
	// DeletedBefore returns the time of the user's deletion request, if any:
	// events received up to then must not be stored.
	DeletedBefore(project string, ids []pseudonym.Pseudonym) (time.Time, bool)
	// OptIn records that the user opted back in.
	OptIn(project, id string)
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
	known [event.NumKnownProps]nameRule
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

// Engine holds the compiled per-project policies. Its PolicyStage and
// Stage methods are the worker's stages.
type Engine struct {
	set      policy.Set
	rules    map[string]*projectRules
	fallback *projectRules
	keys     *pseudonym.Keyring
	// memo and dailyMemo remember the pseudonyms of the keys, and of the
	// same keys rotating daily.
	memo, dailyMemo *pseudonym.Memo
	registry        Registry
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
	e := &Engine{set: set, rules: map[string]*projectRules{}, keys: deps.Keyring, registry: deps.Registry, log: deps.Logger, m: newMetrics(deps.Metrics, deps.Keyring)}
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
	for id := 1; id < event.NumKnownProps; id++ {
		r.known[id] = r.ruleOf(event.KnownPropName(uint8(id)))
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

// PolicyStage applies the project's policy to ev's privacy choices.
func (e *Engine) PolicyStage(ev *event.Event) event.DropReason {
	r := e.rulesFor(ev.Project)
	c := policy.Choices{
		DNT:          ev.Signals.DNT,
		GPC:          ev.Signals.GPC,
		OptOutCookie: ev.Signals.OptOut,
		OptIn:        ev.Kind == event.KindTrack && ev.Name == "$opt_in",
	}
	if e.registry != nil && ev.DistinctID != "" {
		ids := e.keys.All(ev.Project, ev.DistinctID)
		c.Registered = e.registry.OptedOut(ev.Project, ids)
		if at, ok := e.registry.DeletedBefore(ev.Project, ids); ok && !ev.ReceivedAt.After(at) {
			c.Deleted = true
		}
	}
	outcome, seen := r.policy.Decide(c)
	ev.Provenance.PolicyVersion = r.policy.Version
	ev.Provenance.Consent = seen
	switch outcome {
	case policy.DropOptOut:
		return event.DropOptOut
	case policy.DropDNT:
		return event.DropDNT
	case policy.DropGPC:
		return event.DropGPC
	case policy.DropDeleted:
		return event.DropDeleted
	case policy.KeepAnonymized:
		ev.Anonymized = true
	}
	if c.OptIn && e.registry != nil && ev.DistinctID != "" {
		e.registry.OptIn(ev.Project, ev.DistinctID)
	}
	return event.Keep
}

// BotsDropped reports whether the project drops bot traffic.
func (e *Engine) BotsDropped(project string) bool {
	return e.rulesFor(project).policy.Bots == policy.BotDrop
}

// Stage de-identifies ev in place. It never drops.
//
// An event whose properties are JSON text (event.DecodeRaw) is handled
// without decoding them: identifiers are replaced, PII properties dropped
// and strings scrubbed prop by prop, and a value nobody changes is written
// as it came. Only a property name that itself carries personal data
// (it would be renamed, and renames can collide) sends the event through
// the map, which holds the exact same rules.
func (e *Engine) Stage(ev *event.Event) event.DropReason {
	r := e.rulesFor(ev.Project)
	// A raw event's props are read once below, with the rule of each name
	// worked out here; a name the scrubber would rename sends the event
	// down the map path, which renames keys.
	var rulesBuf [64]nameRule
	var rules []nameRule
	var memo *passMemo
	if ev.Props != nil {
		memo = memoFor(ev, r)
		// The next message's objects and arrays are checked with this
		// project's scrubber as they are read (scrubProp).
		ev.SetCleaner(r.scrubber)
		var clean bool
		if rules, clean = r.propRules(ev, rulesBuf[:0], memo); !clean {
			if err := ev.Materialize(); err != nil {
				return event.DropInvalid
			}
		}
	}
	p := &r.policy
	var tr transformSet

	// The IP has served geolocation; only the policy's prefix may remain.
	if ev.IP.IsValid() {
		if p.IP == policy.IPTruncate && !ev.Anonymized {
			ev.IPPrefix = truncate(ev.IP).String()
			tr |= tIPTruncated
		} else {
			tr |= tIPDropped
		}
		ev.IP = netip.Addr{}
	}
	ev.UserAgent = ""

	geo := p.Geo
	if ev.Anonymized && (geo == policy.GeoCity || geo == policy.GeoRegion) {
		geo = policy.GeoCountry
	}
	if reduceGeo(&ev.Geo, geo) {
		tr |= tGeoReduced
	}
	if ev.Kind == event.KindEngage && ev.Name == "$set" {
		// Mixpanel puts a profile's location on the profile itself.
		if m, ok := ev.Value.(map[string]any); ok {
			for k, v := range map[string]string{"$country_code": ev.Geo.CountryCode, "$region": ev.Geo.Region, "$city": ev.Geo.City} {
				if _, set := m[k]; !set && v != "" {
					m[k] = v
				}
			}
		}
	}

	// Identifiers: pseudonyms, or nothing at all when anonymized. Then PII
	// properties and, in allow-list mode, everything not allowed; then
	// whatever is left is scanned for PII in free text. A raw event's
	// props go through the three in one pass (rawProps).
	// The pass memo holds pseudonyms that do not depend on the day.
	ids := memo
	if p.Rotate == policy.RotateDaily {
		ids = nil
	}
	pseudo := func(id string) string {
		v, epoch, ok := ids.pseudonym(ev.Project, id)
		if !ok {
			v, epoch = e.pseudonymize(p, ev.Project, id, ev.Time)
			ids.rememberPseudonym(ev.Project, id, v, epoch)
		}
		ev.Provenance.KeyEpoch = epoch
		return v
	}
	var (
		found               scrub.Finding
		dropped, notAllowed bool
		pseudonymized       bool
	)
	if ev.Anonymized {
		ev.DistinctID, ev.GroupID = "", ""
		if ev.Props == nil {
			for k := range ev.Properties {
				if r.isIDKey(k) {
					delete(ev.Properties, k)
				}
			}
		}
		tr |= tAnonymized
	} else {
		if ev.DistinctID != "" {
			ev.DistinctID = pseudo(ev.DistinctID)
			pseudonymized = true
		}
		if ev.GroupID != "" {
			ev.GroupID = pseudo(ev.GroupID)
			pseudonymized = true
		}
		if ev.Props == nil {
			pseudonymized = pseudonymizeMap(ev.Properties, r, pseudo) || pseudonymized
		}
	}
	if ev.Props != nil {
		res := rawProps(ev, r, rules, pseudo, memo)
		pseudonymized = pseudonymized || res.pseudonymized
		dropped, notAllowed, found = res.dropped, res.notAllowed, res.found
	} else {
		dropped, notAllowed = dropProps(ev.Properties, r, &r.pii)
	}
	if pseudonymized {
		tr |= tPseudonymized
	}
	// A profile operation's operand holds the profile's properties:
	// a person's, or a group's under the group list.
	profile := r.profilePII(ev.Kind)
	if m, ok := ev.Value.(map[string]any); ok {
		d, n := dropProps(m, r, profile)
		dropped, notAllowed = dropped || d, notAllowed || n
	}
	if ev.Kind != event.KindTrack && ev.Name == "$unset" {
		// $unset's operand is a list of property names: names are kept.
		if l, ok := ev.Value.([]any); ok {
			ev.Value = filterNames(l, r, profile)
		}
	}
	if dropped {
		tr |= tPIIDropped
	}
	if notAllowed {
		tr |= tNotAllowListed
	}

	if name, f := memo.scrubName(r.scrubber, ev.Name); f != 0 {
		ev.Name, found = name, found|f
	}
	if ev.Props == nil {
		if v, f := r.scrubber.Value(ev.Properties); f != 0 {
			if m, ok := v.(map[string]any); ok {
				ev.Properties = m
			}
			found |= f
		}
	}
	if ev.Value != nil {
		v, f := r.scrubber.Value(ev.Value)
		ev.Value, found = v, found|f
	}
	e.m.countFound(found)
	ev.Provenance.Transforms = tr.list(found)
	return event.Keep
}

// propRules appends the nameRule of each of a raw event's props to rules
// (a known name's from the table, any other name's from its checks) and
// reports whether every kept prop's name is clean. It stops at the first
// name that is not. memo, if not nil, remembers the rules of names that
// are not known.
func (r *projectRules) propRules(ev *event.Event, rules []nameRule, memo *passMemo) ([]nameRule, bool) {
	for i := range ev.Props {
		pr := &ev.Props[i]
		var nr nameRule
		if !pr.Drop {
			nr = r.propRule(pr, memo)
			if nr&nameClean == 0 {
				return rules, false
			}
		}
		rules = append(rules, nr)
	}
	return rules, true
}

// propRule is ruleOf for a raw event's prop: a known name's rule from
// the table, any other name's from memo, if not nil, or its checks.
func (r *projectRules) propRule(pr *event.Prop, memo *passMemo) nameRule {
	switch {
	case pr.Known != 0:
		return r.known[pr.Known]
	case memo != nil:
		return memo.rule(pr.Key)
	}
	return r.ruleOf(pr.Key)
}

// pseudonymizeMap replaces the identifier properties of m by their
// pseudonyms and reports whether there were any.
func pseudonymizeMap(m map[string]any, r *projectRules, pseudo func(string) string) bool {
	changed := false
	for k, v := range m {
		if !r.isIDKey(k) {
			continue
		}
		switch x := v.(type) {
		case []any: // an event may belong to several groups
			pseudonymizeList(x, pseudo)
			changed = true
		default:
			if s := idString(v); s != "" {
				m[k] = pseudo(s)
				changed = true
			} else {
				delete(m, k)
			}
		}
	}
	return changed
}

func pseudonymizeList(l []any, pseudo func(string) string) {
	for i, e := range l {
		if s := idString(e); s != "" {
			l[i] = pseudo(s)
		}
	}
}

// rawResult is what rawProps did to an event's props.
type rawResult struct {
	pseudonymized, dropped, notAllowed bool
	found                              scrub.Finding
}

// rawProps is, for a raw event's props, what Stage does to a map's in
// three steps, in one pass over them: each identifier prop becomes its
// pseudonym (or goes, when the event is anonymized), a prop the policy
// names as PII or does not allow goes, and every prop kept is scrubbed.
// rules holds the nameRule of each prop (propRules).
func rawProps(ev *event.Event, r *projectRules, rules []nameRule, pseudo func(string) string, memo *passMemo) rawResult {
	var res rawResult
	for i := range ev.Props {
		pr := &ev.Props[i]
		if pr.Drop {
			continue
		}
		nr := rules[i]
		if nr&nameID != 0 {
			if ev.Anonymized || !pseudonymizeProp(ev, i, pseudo) {
				pr.Drop = true
				continue
			}
			res.pseudonymized = true
		}
		if nr&(namePII|nameNotAllowed) != 0 {
			pr.Drop = true
			res.dropped = res.dropped || nr&namePII != 0
			res.notAllowed = res.notAllowed || nr&nameNotAllowed != 0
			continue
		}
		res.found |= scrubProp(ev, i, r.scrubber, memo)
	}
	return res
}

// pseudonymizeProp replaces the identifier prop i of a raw event by its
// pseudonym (each of them, for a list), as pseudonymizeMap does a map's.
// It reports false when the prop has no identifier and goes.
func pseudonymizeProp(ev *event.Event, i int, pseudo func(string) string) bool {
	pr := &ev.Props[i]
	switch {
	case pr.Kind == event.PropArray:
		v, ok := pr.Value()
		l, isList := v.([]any)
		if !ok || !isList {
			return false
		}
		pseudonymizeList(l, pseudo)
		return ev.SetOutValue(i, l)
	case (pr.Kind == event.PropString || pr.Kind == event.PropNumber) && pr.Str != "":
		// The pseudonym is written from Str, and scrubbed with the
		// other strings.
		pr.Str, pr.Kind, pr.Escaped, pr.Out = pseudo(pr.Str), event.PropString, true, nil
		return true
	}
	return false
}

// scrubProp scrubs the prop i of a raw event: a string through the
// scrubber, an object or an array checked in place and rewritten only
// when something in it changes. A value that cannot be rewritten goes.
func scrubProp(ev *event.Event, i int, sc *scrub.Scrubber, memo *passMemo) scrub.Finding {
	pr := &ev.Props[i]
	switch pr.Kind {
	case event.PropString:
		if s, f := memo.scrubString(sc, pr.Known, pr.Str); f != 0 {
			pr.Str, pr.Escaped, pr.Out = s, true, nil
			return f
		}
	case event.PropObject, event.PropArray:
		text := pr.Out
		if text == nil {
			text = pr.Raw
		}
		if pr.CleanedBy(ev, sc) || event.CleanJSON(text, sc) {
			return 0
		}
		v, ok := event.DecodeJSONValue(text)
		if !ok {
			pr.Drop = true
			return 0
		}
		v, f := sc.Value(v)
		if !ev.SetOutValue(i, v) {
			pr.Drop = true
		}
		return f
	}
	return 0
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

func isIDProp(k string) bool {
	for _, p := range idProps {
		if p == k {
			return true
		}
	}
	return false
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
