package deidentify

import (
	"strings"
	"testing"

	"github.com/veilhq/veil/deidentify/policy"
	"github.com/veilhq/veil/event"
)

// knownNamesMessage is a track envelope whose properties are Mixpanel's
// own names (which the raw path decides from a table built per policy)
// and two of the event's own.
const knownNamesMessage = `{"v":1,"kind":1,"project":"shop","received_at":1795348800123,"ip":"203.0.113.9","event":{"event":"Viewed","properties":{` +
	`"time":1795348800123,"distinct_id":"u1","$insert_id":"i1","$browser":"Chrome","$referrer":"https://a.example/",` +
	`"$referring_domain":"a.example","current_domain":"shop.example.com","$device_id":"d1","ip":"198.51.100.7",` +
	`"$email":"x","utm_source":"news","plan":"team","team_id":"t-1"}}}`

// TestKnownNamesFollowThePolicy runs one message through the raw path
// under policies that name Mixpanel's own properties: what the table of
// known names decides must be what the policy says, and what the map path
// decides.
func TestKnownNamesFollowThePolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy func(p *policy.Policy)
		want   []string // the properties stored, in order
	}{
		{"default", func(*policy.Policy) {},
			[]string{"$browser", "$referrer", "$referring_domain", "current_domain", "$device_id", "utm_source", "plan", "team_id"}},
		{"deny list names known properties", func(p *policy.Policy) {
			p.PIIDeny = []string{"$Referrer", "current_domain", "utm_source", "$browser"}
		}, []string{"$referring_domain", "$device_id", "plan", "team_id"}},
		{"allow list takes a known name off the PII list", func(p *policy.Policy) {
			p.PIIAllow = []string{"ip", "email"}
		}, []string{"$browser", "$referrer", "$referring_domain", "current_domain", "$device_id", "ip", "$email", "utm_source", "plan", "team_id"}},
		{"allow-only mode", func(p *policy.Policy) {
			p.AllowOnly = []string{"$referrer", "plan"}
		}, []string{"$referrer", "$device_id", "plan"}},
		{"a group key", func(p *policy.Policy) {
			p.GroupKeys = []string{"team_id", "current_domain"}
		}, []string{"$browser", "$referrer", "$referring_domain", "current_domain", "$device_id", "utm_source", "plan", "team_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := policy.Default()
			tc.policy(&p)
			e := newEngine(t, policy.Set{Default: p}, nil)
			var raw, ref event.Event
			if err := event.DecodeRaw([]byte(knownNamesMessage), &raw); err != nil {
				t.Fatal(err)
			}
			if err := event.Decode([]byte(knownNamesMessage), &ref); err != nil {
				t.Fatal(err)
			}
			if raw.Props == nil {
				t.Fatal("the message left the raw path")
			}
			for _, ev := range []*event.Event{&raw, &ref} {
				if got := e.Stage(ev); got != event.Keep {
					t.Fatalf("Stage = %q", got)
				}
			}
			if raw.Props == nil {
				t.Fatal("the raw event was materialized")
			}
			var got []string
			for _, pr := range raw.Props {
				if !pr.Drop {
					got = append(got, pr.Key)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("stored %v, want %v", got, tc.want)
			}
			if len(ref.Properties) != len(got) {
				t.Fatalf("the map path stored %d properties, the raw path %d", len(ref.Properties), len(got))
			}
			for _, k := range got {
				pr := &raw.Props[raw.PropIndex(k)]
				v, _ := pr.Value()
				if ref.Properties[k] != v {
					t.Fatalf("%s: raw %v, map %v", k, v, ref.Properties[k])
				}
			}
			if strings.Join(raw.Provenance.Transforms, ",") != strings.Join(ref.Provenance.Transforms, ",") {
				t.Fatalf("transforms %v, map path %v", raw.Provenance.Transforms, ref.Provenance.Transforms)
			}
		})
	}
}

// TestKnownNameRules holds the table built for the known names equal to
// the checks it replaces, for every known name under policies that name
// some of them.
func TestKnownNameRules(t *testing.T) {
	for _, p := range []policy.Policy{
		policy.Default(),
		{PIIDeny: []string{"$browser", "mp_lib", "$current_url"}, PIIAllow: []string{"ip"}, GroupKeys: []string{"$os"}},
		{AllowOnly: []string{"$os", "$user_id"}, URLQueryAllow: []string{}},
	} {
		r, err := compile(p)
		if err != nil {
			t.Fatal(err)
		}
		for id := 1; id < event.NumKnownProps; id++ {
			k := event.KnownPropName(uint8(id))
			nr := r.propRule(&event.Prop{Key: k, Known: uint8(id)}, nil)
			if nr != r.propRule(&event.Prop{Key: k}, nil) {
				t.Fatalf("%+v: the rule of %q from the table differs from its rule worked out", p, k)
			}
			wantPII, wantNA := r.drops(&r.pii, k)
			if nr&namePII != 0 != wantPII || nr&nameNotAllowed != 0 != wantNA || nr&nameID != 0 != r.isIDKey(k) ||
				nr&nameClean != 0 != r.scrubber.Clean(k) {
				t.Fatalf("%+v: the rule of %q differs from its checks", p, k)
			}
		}
	}
}
