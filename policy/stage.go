package policy

import (
	"errors"
	"time"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/event"
)

// Registry answers whether a user opted out or was deleted. Lookups take
// the user's pseudonyms under every key held, so entries made under an
// older key still match.
type Registry interface {
	OptedOut(project string, ids []pseudonym.Pseudonym) bool
	// DeletedBefore returns the time of the user's deletion request, if any:
	// events received up to then must not be stored.
	DeletedBefore(project string, ids []pseudonym.Pseudonym) (time.Time, bool)
	// OptIn records that the user opted back in.
	OptIn(project, id string)
}

// Deps are the policy stage's collaborators.
type Deps struct {
	// Keyring pseudonymises the distinct_id for the registry's lookups.
	Keyring *pseudonym.Keyring
	// Registry is the opt-out registry and the deletions; nil for none.
	Registry Registry
}

// Stage is the worker's policy stage, the first: it applies each
// project's policy to the end user's choices (the opt-out cookie, DNT,
// GPC, the opt-out registry, a deletion, `$opt_in`), dropping the event or
// marking it to be kept without identifiers. It keeps no state of its own
// beyond the registry's, so one Stage serves every goroutine.
type Stage struct {
	set      Set
	policies map[string]*Policy
	keys     *pseudonym.Keyring
	registry Registry
}

// NewStage returns the policy stage for set.
func NewStage(set Set, deps Deps) (*Stage, error) {
	if err := set.Validate(); err != nil {
		return nil, err
	}
	if deps.Registry != nil && deps.Keyring == nil {
		return nil, errors.New("policy: the opt-out registry needs a pseudonymisation keyring")
	}
	s := &Stage{set: set, policies: make(map[string]*Policy, len(set.Projects)), keys: deps.Keyring, registry: deps.Registry}
	for name, p := range set.Projects {
		s.policies[name] = &p
	}
	return s, nil
}

// For returns the policy of project.
func (s *Stage) For(project string) *Policy {
	if p, ok := s.policies[project]; ok {
		return p
	}
	return &s.set.Default
}

// BotsDropped reports whether the project drops bot traffic.
func (s *Stage) BotsDropped(project string) bool {
	return s.For(project).Bots == BotDrop
}

// Apply decides, by the project's policy, whether ev is kept, kept
// without identifiers (ev.Anonymized) or dropped, and records the
// policy's version and the consent signals seen.
func (s *Stage) Apply(ev *event.Event) event.DropReason {
	p := s.For(ev.Project)
	c := Choices{
		DNT:          ev.Signals.DNT,
		GPC:          ev.Signals.GPC,
		OptOutCookie: ev.Signals.OptOut,
		OptIn:        ev.Kind == event.KindTrack && ev.Name == "$opt_in",
	}
	if s.registry != nil && ev.DistinctID != "" {
		ids := s.keys.All(ev.Project, ev.DistinctID)
		c.Registered = s.registry.OptedOut(ev.Project, ids)
		if at, ok := s.registry.DeletedBefore(ev.Project, ids); ok && !ev.ReceivedAt.After(at) {
			c.Deleted = true
		}
	}
	outcome, seen := p.Decide(c)
	ev.Provenance.PolicyVersion = p.Version
	ev.Provenance.Consent = seen
	switch outcome {
	case DropOptOut:
		return event.DropOptOut
	case DropDNT:
		return event.DropDNT
	case DropGPC:
		return event.DropGPC
	case DropDeleted:
		return event.DropDeleted
	case KeepAnonymized:
		ev.Anonymized = true
	}
	if c.OptIn && s.registry != nil && ev.DistinctID != "" {
		s.registry.OptIn(ev.Project, ev.DistinctID)
	}
	return event.Keep
}
