package deidentify

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/policy"
)

func keyring(t testing.TB) *pseudonym.Keyring {
	t.Helper()
	kr, err := pseudonym.NewKeyring(map[uint32][]byte{1: []byte("0123456789abcdef0123456789abcdef"), 2: []byte("fedcba9876543210fedcba9876543210")})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// canaries is PII an end user's events may carry; none may survive.
var canaries = []string{
	"alice@example.com", "Alice Liddell", "+14155552671", "4111111111111111", "123-45-6789",
	"GB82WEST12345698765432", "203.0.113.77", "2001:db8::77", "user-canary-7731", "device-canary-0042",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "secret-session-cookie",
}

func canaryEvent() *event.Event {
	return &event.Event{
		Kind: event.KindTrack, Project: "shop", Name: "checkout alice@example.com",
		DistinctID: "user-canary-7731", InsertID: "ins-1",
		Time: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), ReceivedAt: time.Date(2026, 11, 20, 10, 0, 1, 0, time.UTC),
		IP:        netip.MustParseAddr("203.0.113.77"),
		UserAgent: "Mozilla/5.0 (contact alice@example.com)",
		Geo:       event.Geo{CountryCode: "US", Region: "California", City: "San Francisco"},
		Properties: event.PropertiesOf(map[string]any{
			"$email":            "alice@example.com",
			"$name":             "Alice Liddell",
			"Phone":             "+14155552671",
			"$device_id":        "device-canary-0042",
			"plan":              "pro",
			"amount":            json.Number("12.5"),
			"$current_url":      "https://shop.example/checkout?email=alice%40example.com&utm_source=news#card=4111111111111111",
			"$referrer":         "https://mail.example/u/alice@example.com/inbox",
			"note":              "call me at +14155552671 or mail alice@example.com, ssn 123-45-6789",
			"nested":            map[string]any{"iban": "GB82WEST12345698765432", "list": []any{"4111 1111 1111 1111", "ok"}},
			"alice@example.com": "as a key",
			"auth":              "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
			"server":            "2001:db8::77",
			"cookie":            "secret-session-cookie",
		}),
	}
}

// newPolicy returns the policy stage of set, which runs before this one.
func newPolicy(t *testing.T, set policy.Set) *policy.Stage {
	t.Helper()
	s, err := policy.NewStage(set, policy.Deps{Keyring: keyring(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEngine(t *testing.T, set policy.Set) *Engine {
	t.Helper()
	e, err := New(set, Deps{Keyring: keyring(t)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestNoCanarySurvives(t *testing.T) {
	set := policy.DefaultSet()
	set.Default.PIIDeny = []string{"cookie"}
	e := newEngine(t, set)
	ev := canaryEvent()
	if r := newPolicy(t, set).Apply(ev); r != event.Keep {
		t.Fatalf("dropped: %s", r)
	}
	if r := e.NewStage().Apply(ev); r != event.Keep {
		t.Fatalf("dropped: %s", r)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.ToLower(string(b))
	for _, c := range canaries {
		for _, form := range []string{strings.ToLower(c), strings.ToLower(strings.ReplaceAll(c, "@", "%40"))} {
			if strings.Contains(out, form) {
				t.Errorf("canary %q survived de-identification:\n%s", c, b)
			}
		}
	}
	// The non-PII data is all there.
	if propOf(&ev.Properties, "plan") != "pro" || propOf(&ev.Properties, "amount") != json.Number("12.5") {
		t.Errorf("non-PII properties lost: %v", ev.Properties)
	}
	if got := propOf(&ev.Properties, "$current_url"); got != "https://shop.example/checkout?utm_source=news" {
		t.Errorf("$current_url = %v", got)
	}
	if len(ev.DistinctID) != pseudonym.Size || ev.Provenance.KeyEpoch != 2 {
		t.Errorf("distinct_id not pseudonymised under the current key: %q epoch %d", ev.DistinctID, ev.Provenance.KeyEpoch)
	}
	if ev.IP.IsValid() || ev.IPPrefix != "" || ev.UserAgent != "" {
		t.Errorf("IP or user agent kept: %v %q %q", ev.IP, ev.IPPrefix, ev.UserAgent)
	}
	if ev.Geo.City != "San Francisco" {
		t.Errorf("city-level geo lost under the default policy: %+v", ev.Geo)
	}
	tr := strings.Join(ev.Provenance.Transforms, ",")
	for _, want := range []string{TIPDropped, TPseudonymized, TPIIDropped, "scrubbed_email", "scrubbed_phone", "scrubbed_card"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transforms %q lack %s", tr, want)
		}
	}
}

func TestPseudonymsAreStable(t *testing.T) {
	e := newEngine(t, policy.DefaultSet())
	a, b := canaryEvent(), canaryEvent()
	b.Project = "other"
	c := canaryEvent()
	for _, ev := range []*event.Event{a, b, c} {
		e.NewStage().Apply(ev)
	}
	if a.DistinctID != c.DistinctID {
		t.Error("the same user got two pseudonyms")
	}
	if a.DistinctID == b.DistinctID {
		t.Error("two projects share a pseudonym")
	}
	if propOf(&a.Properties, "$device_id") == "device-canary-0042" || len(propOf(&a.Properties, "$device_id").(string)) != pseudonym.Size {
		t.Errorf("$device_id = %v", propOf(&a.Properties, "$device_id"))
	}
}

func TestPolicies(t *testing.T) {
	anon := policy.DefaultSet()
	anon.Default.DNT = policy.Anonymize
	anon.Default.IP = policy.IPTruncate
	trunc := policy.DefaultSet()
	trunc.Default.IP = policy.IPTruncate
	trunc.Default.Geo = policy.GeoRegion
	allow := policy.DefaultSet()
	allow.Default.AllowOnly = []string{"plan"}
	daily := policy.DefaultSet()
	daily.Default.Rotate = policy.RotateDaily

	t.Run("anonymize drops ids and geo below country", func(t *testing.T) {
		e := newEngine(t, anon)
		ev := canaryEvent()
		ev.Signals.DNT = true
		if r := newPolicy(t, anon).Apply(ev); r != event.Keep || !ev.Anonymized {
			t.Fatalf("got %q anonymized=%v", r, ev.Anonymized)
		}
		e.NewStage().Apply(ev)
		if ev.DistinctID != "" || propOf(&ev.Properties, "$device_id") != nil || ev.IPPrefix != "" {
			t.Fatalf("identifiers kept: %q %v %q", ev.DistinctID, propOf(&ev.Properties, "$device_id"), ev.IPPrefix)
		}
		if ev.Geo != (event.Geo{CountryCode: "US"}) {
			t.Fatalf("geo %+v", ev.Geo)
		}
		if strings.Join(ev.Provenance.Consent, ",") != "dnt" {
			t.Fatalf("consent %v", ev.Provenance.Consent)
		}
	})
	t.Run("truncate keeps the /24 and region", func(t *testing.T) {
		e := newEngine(t, trunc)
		ev := canaryEvent()
		e.NewStage().Apply(ev)
		if ev.IPPrefix != "203.0.113.0/24" || ev.Geo != (event.Geo{CountryCode: "US", Region: "California"}) {
			t.Fatalf("prefix %q geo %+v", ev.IPPrefix, ev.Geo)
		}
		ev6 := canaryEvent()
		ev6.IP = netip.MustParseAddr("2001:db8:1234:5678::1")
		e.NewStage().Apply(ev6)
		if ev6.IPPrefix != "2001:db8:1234::/48" {
			t.Fatalf("v6 prefix %q", ev6.IPPrefix)
		}
	})
	t.Run("allow-list mode fails closed", func(t *testing.T) {
		e := newEngine(t, allow)
		ev := canaryEvent()
		m, _ := ev.Properties.Map()
		m["brand_new_property"] = "x"
		ev.Properties = event.PropertiesOf(m)
		e.NewStage().Apply(ev)
		keys := []string{}
		for _, pr := range ev.Properties.All() {
			keys = append(keys, pr.Name())
		}
		if ev.Properties.Len() != 2 || propOf(&ev.Properties, "plan") != "pro" || propOf(&ev.Properties, "$device_id") == nil {
			t.Fatalf("kept %v", keys)
		}
	})
	t.Run("daily rotation changes pseudonyms across days", func(t *testing.T) {
		e := newEngine(t, daily)
		a, b := canaryEvent(), canaryEvent()
		b.Time = b.Time.Add(24 * time.Hour)
		e.NewStage().Apply(a)
		e.NewStage().Apply(b)
		if a.DistinctID == b.DistinctID {
			t.Fatal("same pseudonym on two days")
		}
	})
}

// TestIsPIIMatchesNormKey holds the allocation-free name check to the
// definition: the name folded by normKey is in the PII set.
func TestIsPIIMatchesNormKey(t *testing.T) {
	p := policy.Default()
	p.PIIDeny = []string{"Customer_Ref", "emaİl", "ÉCOLE", strings.Repeat("x", 70)}
	p.PIIAllow = []string{"name"}
	r, err := compile(p)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"", "$", "email", "$Email", "EMAIL", "$$email", "e-mail", "name", "$name", "first_name", "First_Name",
		"customer_ref", "$CUSTOMER_REF", "EMAİL", "emai̇l", "école", "ÉCOLE", "$ip", "IP", "ipx", "zip", "ZIP_code",
		strings.Repeat("x", 70), strings.Repeat("X", 70), strings.Repeat("x", 64), "current_page_title"}
	for _, k := range names {
		if got, want := r.pii.has(k), r.pii.set[normKey(k)]; got != want {
			t.Errorf("isPII(%q) = %v, want %v", k, got, want)
		}
	}
	if !r.pii.has("$Email") || r.pii.has("name") || !r.pii.has("Customer_Ref") {
		t.Error("the PII set is not the one configured")
	}
}

// TestProfilePII: a group profile is a company's or an account's, so it
// keeps the name it is known by, scrubbed as any free text, and loses what
// is a person's; a people profile loses its $name as before. Both lists
// are configurable, each on its own.
func TestProfilePII(t *testing.T) {
	update := func(kind event.Kind, op string, v any) *event.Event {
		ev := &event.Event{Kind: kind, Project: "shop", Name: op, Value: v, Properties: event.PropertiesOf(map[string]any{}),
			Time: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), ReceivedAt: time.Date(2026, 11, 20, 10, 0, 1, 0, time.UTC)}
		if kind == event.KindGroups {
			ev.GroupKey, ev.GroupID = "company", "acme-1"
		} else {
			ev.DistinctID = "user-1"
		}
		return ev
	}
	company := func() map[string]any {
		return map[string]any{
			"$name": "Acme Corp", "name": "Acme", "Name": "ACME", "industry": "retail",
			"$email": "ceo@acme.example", "$phone": "+14155552671", "$first_name": "Alice", "owner_name": "Alice Liddell",
			"address": "1 Main St", "$avatar": "https://acme.example/alice.png",
		}
	}
	groupDeny := policy.DefaultSet()
	groupDeny.Default.GroupPIIDeny = []string{"$Name", "industry"}
	groupAllow := policy.DefaultSet()
	groupAllow.Default.GroupPIIAllow = []string{"address"}
	peopleAllow := policy.DefaultSet()
	peopleAllow.Default.PIIAllow = []string{"first_name"}
	projectDeny := policy.DefaultSet()
	projectDeny.Default.PIIDeny = []string{"owner_name"}

	for _, tt := range []struct {
		name string
		set  policy.Set
		ev   *event.Event
		want any
	}{
		{"a group keeps its names and loses a person's data", policy.DefaultSet(), update(event.KindGroups, "$set", company()),
			map[string]any{"$name": "Acme Corp", "name": "Acme", "Name": "ACME", "industry": "retail", "owner_name": "Alice Liddell"}},
		{"a group's name is scrubbed as free text", policy.DefaultSet(),
			update(event.KindGroups, "$set", map[string]any{"$name": "Acme (billing@acme.example, +14155552671)"}),
			map[string]any{"$name": "Acme ([email], [phone])"}},
		{"a group keeps its name in $set_once", policy.DefaultSet(), update(event.KindGroups, "$set_once", map[string]any{"$name": "Acme Corp", "$email": "ceo@acme.example"}),
			map[string]any{"$name": "Acme Corp"}},
		{"$unset of a group names its name, not a person's", policy.DefaultSet(), update(event.KindGroups, "$unset", []any{"$name", "name", "$email", "industry"}),
			[]any{"$name", "name", "industry"}},
		{"a people profile loses its names", policy.DefaultSet(), update(event.KindEngage, "$set", company()),
			map[string]any{"industry": "retail", "owner_name": "Alice Liddell"}},
		{"$unset of a people profile keeps no PII name", policy.DefaultSet(), update(event.KindEngage, "$unset", []any{"$name", "name", "$email", "industry"}),
			[]any{"industry"}},
		{"group_pii_deny drops from groups only: group", groupDeny, update(event.KindGroups, "$set", company()),
			map[string]any{"owner_name": "Alice Liddell"}},
		{"group_pii_deny drops from groups only: people", groupDeny, update(event.KindEngage, "$set", map[string]any{"industry": "retail"}),
			map[string]any{"industry": "retail"}},
		{"group_pii_allow keeps on groups only: group", groupAllow, update(event.KindGroups, "$set", map[string]any{"address": "1 Main St"}),
			map[string]any{"address": "1 Main St"}},
		{"group_pii_allow keeps on groups only: people", groupAllow, update(event.KindEngage, "$set", map[string]any{"address": "1 Main St"}),
			map[string]any{}},
		{"pii_allow applies to groups too", peopleAllow, update(event.KindGroups, "$set", map[string]any{"$first_name": "Alice"}),
			map[string]any{"$first_name": "Alice"}},
		{"pii_deny applies to groups too", projectDeny, update(event.KindGroups, "$set", company()),
			map[string]any{"$name": "Acme Corp", "name": "Acme", "Name": "ACME", "industry": "retail"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, tt.set)
			if r := e.NewStage().Apply(tt.ev); r != event.Keep {
				t.Fatalf("dropped: %s", r)
			}
			if !reflect.DeepEqual(tt.ev.Value, tt.want) {
				t.Fatalf("operand %#v, want %#v", tt.ev.Value, tt.want)
			}
		})
	}
}

// TestPrivacyDocListsThePIINames holds the lists in docs/privacy.md to the
// code's: the people list name by name, the group list as what it leaves
// out of it.
func TestPrivacyDocListsThePIINames(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "privacy.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := func(list string) string {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "| "+list+" |") {
				cells := strings.Split(l, "|")
				return strings.TrimSpace(cells[len(cells)-2])
			}
		}
		t.Fatalf("docs/privacy.md has no row for the %s list", list)
		return ""
	}
	quoted := func(names []string) string {
		q := make([]string, len(names))
		for i, n := range names {
			q[i] = "`" + n + "`"
		}
		return strings.Join(q, ", ")
	}
	if got, want := row("people"), quoted(builtinPII); got != want {
		t.Errorf("the people list in docs/privacy.md is\n%s\nthe code's is\n%s", got, want)
	}
	if got, want := row("groups"), "the people list without "+quoted(groupProfileNames); got != want {
		t.Errorf("the group list in docs/privacy.md is %q, want %q", got, want)
	}
}
