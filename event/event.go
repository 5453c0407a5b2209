// Package event holds what the collector and the worker share: the Envelope
// that travels through Kafka and the Event the worker's stages transform.
//
// The collector is the only writer of envelopes and the worker the only
// reader; keeping the type here, away from both, is what lets data flow one
// way (collector → Kafka → worker) without either importing the other.
package event

import (
	"fmt"
	"net/netip"
	"time"
)

// Kind says which Mixpanel endpoint family an event came through.
type Kind uint8

// The kinds of event Veil ingests.
const (
	KindTrack  Kind = 1 // /track and /import: behavioural events
	KindEngage Kind = 2 // /engage: user profile updates
	KindGroups Kind = 3 // /groups: group profile updates
)

func (k Kind) String() string {
	switch k {
	case KindTrack:
		return "track"
	case KindEngage:
		return "engage"
	case KindGroups:
		return "groups"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool { return k >= KindTrack && k <= KindGroups }

// Key is the Kafka message key of an event: project and distinct_id, so that
// one user's events stay ordered in one partition.
func Key(project, distinctID string) []byte {
	return AppendKey(make([]byte, 0, len(project)+1+len(distinctID)), project, distinctID)
}

// AppendKey appends Key(project, distinctID) to dst, for a caller that
// keeps the keys of many messages in one buffer.
func AppendKey[T string | []byte](dst []byte, project string, distinctID T) []byte {
	dst = append(dst, project...)
	dst = append(dst, 0)
	return append(dst, distinctID...)
}

// Geo is what IP geolocation found.
type Geo struct {
	CountryCode string
	Region      string
	City        string
}

// Device is what the user agent (or the SDK) says about the client.
type Device struct {
	Browser        string
	BrowserVersion string
	OS             string
	Device         string
	Lib            string
	LibVersion     string
	Bot            bool
}

// Provenance records what the privacy engine did to an event, so every row
// can say which policy applied and which transforms fired.
type Provenance struct {
	PolicyVersion uint32
	KeyEpoch      uint32
	Consent       []string // consent signals seen: "dnt", "gpc", "optout"
	Transforms    []string // transforms that fired, e.g. "ip_dropped", "pii_scrubbed"
}

// Event is one event inside the worker: data, which the stages transform
// in place. Policy decides whether it is kept, enrichment fills Geo and
// Device, de-identification replaces identifiers and scrubs Properties.
// What it points into belongs to the Decoder that filled it (see
// Properties), not to the Event.
type Event struct {
	Kind       Kind
	Project    string
	Endpoint   string
	Name       string // event name; for profile updates, the operation ("$set")
	DistinctID string
	// GroupKey and GroupID identify the group of a KindGroups update.
	GroupKey string
	GroupID  string
	// Value is a profile operation's operand (KindEngage, KindGroups).
	Value any
	// InsertID is $insert_id; the Decoder's points into the message, and
	// the sink copies it.
	InsertID   string
	Time       time.Time
	ReceivedAt time.Time
	// EventBytes is the size of the envelope's event object, the
	// normalised Mixpanel object, in bytes (0 when not known).
	EventBytes int
	// Properties are the event's properties; for a profile update, its
	// modifiers ($ignore_time, $ignore_alias).
	Properties Properties

	IP        netip.Addr // zero when unknown or dropped
	UserAgent string
	Signals   Signals
	// IPPrefix is what the privacy policy keeps of IP ("203.0.113.0/24"),
	// or empty.
	IPPrefix string
	// Anonymized is set by the policy stage when the event is kept without
	// identifiers (DNT or GPC in anonymize mode).
	Anonymized bool

	Geo        Geo
	Device     Device
	Provenance Provenance
}

// DropReason says why a stage dropped an event. The set is fixed so that it
// can be a metric label.
type DropReason string

// The reasons an event is dropped on purpose.
const (
	Keep          DropReason = ""
	DropOptOut    DropReason = "optout"
	DropDNT       DropReason = "dnt"
	DropGPC       DropReason = "gpc"
	DropBot       DropReason = "bot"
	DropInvalid   DropReason = "invalid"
	DropDeleted   DropReason = "deleted_user"
	DropUnknownPj DropReason = "unknown_project"
)

// DropReasons lists every DropReason, for pre-creating metric series.
var DropReasons = []DropReason{DropOptOut, DropDNT, DropGPC, DropBot, DropInvalid, DropDeleted, DropUnknownPj}
