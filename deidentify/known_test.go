package deidentify

import (
	"reflect"
	"strings"
	"testing"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/policy"
)

// knownNamesMessage is a track envelope whose properties are Mixpanel's
// own names (which the raw path decides from a table built per policy)
// and two of the event's own.
const knownNamesMessage = `{"v":1,"kind":1,"project":"shop","received_at":1795348800123,"ip":"203.0.113.9","event":{"event":"Viewed","properties":{` +
	`"time":1795348800123,"distinct_id":"u1","$insert_id":"i1","$browser":"Chrome","$referrer":"https://a.example/",` +
	`"$referring_domain":"a.example","current_domain":"shop.example.com","$device_id":"d1","ip":"198.51.100.7",` +
	`"$email":"x","utm_source":"news","plan":"team","team_id":"t-1"}}}`

// TestKnownNamesFollowThePolicy runs one message through the stage under
// policies that name Mixpanel's own properties: what the table of known
// names decides must be what the policy says, and what the stage decides
// for the same properties read by the reference reader.
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
			e := newEngine(t, policy.Set{Default: p})
			var raw, ref event.Event
			if err := event.NewDecoder().Decode([]byte(knownNamesMessage), &raw); err != nil {
				t.Fatal(err)
			}
			if err := event.Decode([]byte(knownNamesMessage), &ref); err != nil {
				t.Fatal(err)
			}
			for _, ev := range []*event.Event{&raw, &ref} {
				if got := e.NewStage().Apply(ev); got != event.Keep {
					t.Fatalf("Stage = %q", got)
				}
			}
			var got []string
			for _, pr := range raw.Properties.All() {
				got = append(got, pr.Name())
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("stored %v, want %v", got, tc.want)
			}
			rawMap, _ := raw.Properties.Map()
			refMap, _ := ref.Properties.Map()
			if !reflect.DeepEqual(rawMap, refMap) {
				t.Fatalf("stored %v, from the reference reader %v", rawMap, refMap)
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
		for id := 1; id < event.NumKnown; id++ {
			k := event.Known(id).Name()
			nr := r.known[id]
			if nr != r.ruleOf(k) {
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
