package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Property names Veil itself relies on in a normalised track event.
const (
	PropDistinctID = "distinct_id"
	PropTime       = "time"
	PropInsertID   = "$insert_id"
	PropToken      = "token"
	PropGroupKey   = "$group_key"
	PropGroupID    = "$group_id"
)

// The profile operations of /engage and /groups, in Mixpanel's spelling.
var ProfileOps = []string{"$set", "$set_once", "$add", "$append", "$union", "$remove", "$unset", "$delete"}

// IsProfileOp reports whether op is one of ProfileOps.
func IsProfileOp(op string) bool {
	for _, o := range ProfileOps {
		if o == op {
			return true
		}
	}
	return false
}

// DecodeError is a permanent failure to read an envelope: retrying cannot
// help, so the worker dead-letters the message with Reason.
type DecodeError struct {
	Reason string
}

func (e *DecodeError) Error() string { return "envelope: " + e.Reason }

// trackObject is the normalised shape of a track event inside an envelope.
type trackObject struct {
	Event      string         `json:"event"`
	Properties map[string]any `json:"properties"`
	Value      any            `json:"value"`
}

// Decode reads a raw-topic message value into ev, replacing its contents:
// the reference reader, with encoding/json. The worker's Decoder hands it
// what its fast path does not cover, and the tests hold the fast path to
// it. Errors are *DecodeError and never quote the message's content.
func Decode(value []byte, ev *Event) error {
	return decodeReference(value, ev, nil)
}

// decodeReference is Decode, with props as the space for the properties.
func decodeReference(value []byte, ev *Event, props []Prop) error {
	var env Envelope
	if err := json.Unmarshal(value, &env); err != nil {
		return &DecodeError{Reason: "not a JSON envelope"}
	}
	if env.Version != EnvelopeVersion {
		return &DecodeError{Reason: fmt.Sprintf("unknown envelope version %d", env.Version)}
	}
	if !env.Kind.Valid() {
		return &DecodeError{Reason: fmt.Sprintf("unknown event kind %d", env.Kind)}
	}
	if env.Project == "" {
		return &DecodeError{Reason: "missing project"}
	}
	*ev = Event{
		Kind:       env.Kind,
		Project:    env.Project,
		Endpoint:   env.Endpoint,
		EventBytes: len(env.Event),
		ReceivedAt: time.UnixMilli(env.ReceivedAt).UTC(),
		UserAgent:  env.UserAgent,
		Signals:    env.Signals,
	}
	if env.IP != "" {
		ip, err := netip.ParseAddr(env.IP)
		if err != nil {
			return &DecodeError{Reason: "malformed client address"}
		}
		ev.IP = ip.Unmap()
	}

	var obj trackObject
	dec := json.NewDecoder(bytes.NewReader(env.Event))
	dec.UseNumber() // keep integers exact; float64 would round ids above 2^53
	if err := dec.Decode(&obj); err != nil {
		return &DecodeError{Reason: "event is not a JSON object"}
	}
	if obj.Properties == nil {
		obj.Properties = map[string]any{}
	}
	ev.Name = obj.Event
	if ev.Kind == KindTrack && ev.Name == "" {
		return &DecodeError{Reason: "missing event name"}
	}
	if ev.Kind != KindTrack {
		if !IsProfileOp(ev.Name) {
			return &DecodeError{Reason: "unknown profile operation"}
		}
		ev.Value = obj.Value
	}
	if ev.Kind == KindGroups {
		ev.GroupKey = stringify(obj.Properties[PropGroupKey])
		ev.GroupID = stringify(obj.Properties[PropGroupID])
		if ev.GroupKey == "" || ev.GroupID == "" {
			return &DecodeError{Reason: "group update without $group_key and $group_id"}
		}
		delete(obj.Properties, PropGroupKey)
		delete(obj.Properties, PropGroupID)
	}

	if id, ok := obj.Properties[PropDistinctID]; ok {
		switch id.(type) {
		case string, json.Number, nil:
		default:
			return &DecodeError{Reason: "distinct_id is not a string or a number"}
		}
		ev.DistinctID = stringify(id)
	}
	if id, ok := obj.Properties[PropInsertID].(string); ok {
		ev.InsertID = id
	}
	ms, err := millis(obj.Properties[PropTime])
	if err != nil {
		return &DecodeError{Reason: "time: " + err.Error()}
	}
	ev.Time = time.UnixMilli(ms).UTC()
	// These now live in typed fields; keeping them in Properties too would
	// store them twice.
	delete(obj.Properties, PropDistinctID)
	delete(obj.Properties, PropInsertID)
	delete(obj.Properties, PropTime)
	ev.Properties = Properties{list: props}
	ev.Properties.Replace(obj.Properties)
	return nil
}

// stringify turns a distinct_id, which SDKs send as a string or a number,
// into its string form.
func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

var errNoTime = errors.New("missing")

func millis(v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, errNoTime
	}
	ms, err := n.Int64()
	if err != nil {
		return 0, errors.New("not an integer number of milliseconds")
	}
	return ms, nil
}
