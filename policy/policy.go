// Package policy decides, per project, what an end user's privacy choices
// mean for each event: the opt-out cookie and the opt-out registry always
// drop; Do-Not-Track and Global Privacy Control each drop, anonymize or are
// ignored as the project's policy says. The collector only carries the
// signals; this decision is made in the worker, whatever the SDK did.
package policy

import (
	"errors"
	"fmt"
	"slices"
)

// Mode is what a consent signal does to an event.
type Mode string

// The modes of DNT and GPC.
const (
	Drop      Mode = "drop"      // the event is not stored (the default)
	Anonymize Mode = "anonymize" // stored without identifiers and geo below country
	Ignore    Mode = "ignore"    // the signal is recorded but changes nothing
)

// IPMode says what remains of the client IP after geolocation.
type IPMode string

// The IP modes.
const (
	IPDrop     IPMode = "drop"     // nothing (the default)
	IPTruncate IPMode = "truncate" // the /24 (IPv4) or /48 (IPv6) network
)

// GeoPrecision is the finest geo level stored.
type GeoPrecision string

// The geo precisions, finest first.
const (
	GeoCity    GeoPrecision = "city"
	GeoRegion  GeoPrecision = "region"
	GeoCountry GeoPrecision = "country"
	GeoNone    GeoPrecision = "none"
)

// BotMode says what happens to events from crawlers and bots.
type BotMode string

// The bot modes.
const (
	BotFlag BotMode = "flag" // stored, marked as a bot (the default)
	BotDrop BotMode = "drop" // not stored, counted
)

// Rotation says how pseudonyms relate across days.
type Rotation string

// The rotations.
const (
	RotateNone  Rotation = "none"  // one pseudonym per user for as long as the key lives
	RotateDaily Rotation = "daily" // a new pseudonym every UTC day: cookieless analytics
)

// Policy is one project's privacy policy. Version is recorded on every row
// it applied to, so a change of policy is visible in the data.
type Policy struct {
	Version uint32       `yaml:"version"`
	DNT     Mode         `yaml:"dnt"`
	GPC     Mode         `yaml:"gpc"`
	IP      IPMode       `yaml:"ip"`
	Geo     GeoPrecision `yaml:"geo"`
	Bots    BotMode      `yaml:"bots"`
	Rotate  Rotation     `yaml:"rotate"`
	// PIIDeny adds property names to the built-in lists of PII properties
	// that are always dropped, of events, people and group profiles alike;
	// PIIAllow takes names off them.
	PIIDeny  []string `yaml:"pii_deny"`
	PIIAllow []string `yaml:"pii_allow"`
	// GroupPIIDeny and GroupPIIAllow then do the same for the properties
	// of group profiles (/groups) only. A group is a company or an
	// account, so their built-in list is the people list without $name
	// and name (docs/privacy.md).
	GroupPIIDeny  []string `yaml:"group_pii_deny"`
	GroupPIIAllow []string `yaml:"group_pii_allow"`
	// AllowOnly, when set, keeps only these properties and drops every other:
	// a new property is dropped until someone allows it (fails closed).
	AllowOnly []string `yaml:"allow_only"`
	// URLQueryAllow are the query parameters kept in URLs; all others go.
	URLQueryAllow []string `yaml:"url_query_allow"`
	// GroupKeys are the project's group keys (Mixpanel group analytics):
	// an event property of that name holds a group id, which becomes a
	// pseudonym like the group's own id.
	GroupKeys []string `yaml:"group_keys"`
}

// Default is the policy of a project that configures none: every choice
// honoured by dropping, IPs dropped after geolocation, city-level geo.
func Default() Policy {
	return Policy{
		Version:       1,
		DNT:           Drop,
		GPC:           Drop,
		IP:            IPDrop,
		Geo:           GeoCity,
		Bots:          BotFlag,
		Rotate:        RotateNone,
		URLQueryAllow: []string{"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"},
	}
}

// Validate reports the first invalid setting; key names the policy in the
// configuration (e.g. "privacy.projects.shop").
func (p Policy) Validate(key string) error {
	in := func(v string, allowed ...string) bool { return slices.Contains(allowed, v) }
	switch {
	case p.Version == 0:
		return fmt.Errorf("%s.version must be positive", key)
	case !in(string(p.DNT), "drop", "anonymize", "ignore"):
		return fmt.Errorf("%s.dnt must be drop, anonymize or ignore", key)
	case !in(string(p.GPC), "drop", "anonymize", "ignore"):
		return fmt.Errorf("%s.gpc must be drop, anonymize or ignore", key)
	case !in(string(p.IP), "drop", "truncate"):
		return fmt.Errorf("%s.ip must be drop or truncate", key)
	case !in(string(p.Geo), "city", "region", "country", "none"):
		return fmt.Errorf("%s.geo must be city, region, country or none", key)
	case !in(string(p.Bots), "flag", "drop"):
		return fmt.Errorf("%s.bots must be flag or drop", key)
	case !in(string(p.Rotate), "none", "daily"):
		return fmt.Errorf("%s.rotate must be none or daily", key)
	}
	return nil
}

// Signal names, as recorded in a row's consent column.
const (
	SignalDNT    = "dnt"
	SignalGPC    = "gpc"
	SignalCookie = "optout_cookie"
	SignalOptIn  = "opt_in"
)

// Outcome is what the policy decided for one event.
type Outcome int

// The outcomes.
const (
	Keep Outcome = iota
	KeepAnonymized
	DropOptOut
	DropDNT
	DropGPC
	DropDeleted
)

// Choices are the privacy facts about one event.
type Choices struct {
	DNT, GPC     bool
	OptOutCookie bool
	// Registered is true when the user is in the opt-out registry.
	Registered bool
	// OptIn is true for the $opt_in event, which clears an opt-out.
	OptIn bool
	// Deleted is true when a deletion request covers this event.
	Deleted bool
}

// Decide applies p to one event's choices. It returns the outcome and the
// consent signals seen, for the row's provenance.
func (p *Policy) Decide(c Choices) (Outcome, []string) {
	var seen []string
	if c.DNT {
		seen = append(seen, SignalDNT)
	}
	if c.GPC {
		seen = append(seen, SignalGPC)
	}
	if c.OptOutCookie {
		seen = append(seen, SignalCookie)
	}
	if c.OptIn {
		seen = append(seen, SignalOptIn)
	}
	switch {
	case c.Deleted:
		return DropDeleted, seen
	case c.OptIn:
		// $opt_in is the user saying yes: it is kept even though an old
		// cookie or registry entry said no, and it clears the registry.
	case c.OptOutCookie || c.Registered:
		return DropOptOut, seen
	}
	anonymize := false
	for _, s := range []struct {
		on   bool
		mode Mode
		drop Outcome
	}{{c.DNT, p.DNT, DropDNT}, {c.GPC, p.GPC, DropGPC}} {
		if !s.on {
			continue
		}
		switch s.mode {
		case Drop:
			return s.drop, seen
		case Anonymize:
			anonymize = true
		}
	}
	if anonymize {
		return KeepAnonymized, seen
	}
	return Keep, seen
}

// Set holds every project's policy and the default for the others.
type Set struct {
	Default  Policy            `yaml:"default"`
	Projects map[string]Policy `yaml:"projects"`
}

// DefaultSet applies Default to every project.
func DefaultSet() Set { return Set{Default: Default()} }

// Validate checks every policy.
func (s Set) Validate() error {
	if err := s.Default.Validate("privacy.policies.default"); err != nil {
		return err
	}
	for name, p := range s.Projects {
		if name == "" {
			return errors.New("privacy.policies.projects has an empty project name")
		}
		if err := p.Validate("privacy.policies.projects." + name); err != nil {
			return err
		}
	}
	return nil
}

// For returns the policy of project.
func (s *Set) For(project string) Policy {
	if p, ok := s.Projects[project]; ok {
		return p
	}
	return s.Default
}

// Inherit fills every unset field of each project's policy from the
// default, so that a project names only what it changes.
func (s *Set) Inherit() {
	d := s.Default
	for name, p := range s.Projects {
		if p.Version == 0 {
			p.Version = d.Version
		}
		if p.DNT == "" {
			p.DNT = d.DNT
		}
		if p.GPC == "" {
			p.GPC = d.GPC
		}
		if p.IP == "" {
			p.IP = d.IP
		}
		if p.Geo == "" {
			p.Geo = d.Geo
		}
		if p.Bots == "" {
			p.Bots = d.Bots
		}
		if p.Rotate == "" {
			p.Rotate = d.Rotate
		}
		if p.URLQueryAllow == nil {
			p.URLQueryAllow = d.URLQueryAllow
		}
		if p.PIIDeny == nil {
			p.PIIDeny = d.PIIDeny
		}
		if p.PIIAllow == nil {
			p.PIIAllow = d.PIIAllow
		}
		if p.GroupPIIDeny == nil {
			p.GroupPIIDeny = d.GroupPIIDeny
		}
		if p.GroupPIIAllow == nil {
			p.GroupPIIAllow = d.GroupPIIAllow
		}
		if p.AllowOnly == nil {
			p.AllowOnly = d.AllowOnly
		}
		if p.GroupKeys == nil {
			p.GroupKeys = d.GroupKeys
		}
		s.Projects[name] = p
	}
}
