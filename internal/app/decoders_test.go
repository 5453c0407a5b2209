package app

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/enrich/geo/geotest"
	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/event/rules"
	"github.com/veilhq/veil/policy"
	"github.com/veilhq/veil/worker"
)

// The worker's fast reader (event.Decoder) must store the rows the
// reference reader (event.Decode) stores: the fast one leaves property
// text in place for the stages to rewrite, the reference decodes it with
// encoding/json, and only the cost may differ. These tests run envelopes
// through every stage after each and compare the events the sink
// receives, field by field, with the properties compared as JSON values
// (the fast reader keeps their order, the reference sorts them). The fast
// side reuses one Decoder and one set of stages, as a worker does, so
// their memos are held to the reference too.

// decoderPolicies are the policy variants compared, each with the privacy
// signals its envelopes carry.
var decoderPolicies = []struct {
	name    string
	signals string
	policy  func() policy.Policy
}{
	{"default", `{}`, policy.Default},
	{"anonymize", `{"dnt":true}`, func() policy.Policy {
		p := policy.Default()
		p.DNT = policy.Anonymize
		return p
	}},
	{"truncate-daily-groups", `{}`, func() policy.Policy {
		p := policy.Default()
		p.IP, p.Geo, p.Rotate = policy.IPTruncate, policy.GeoRegion, policy.RotateDaily
		p.GroupKeys = []string{"company", "$device_id"}
		p.PIIDeny = []string{"Plan", "nested"}
		p.PIIAllow = []string{"name"}
		p.URLQueryAllow = []string{"q"}
		return p
	}},
	{"allow-only", `{}`, func() policy.Policy {
		p := policy.Default()
		p.AllowOnly = []string{"$current_url", "plan", "cart", "tags", "$browser"}
		p.GroupKeys = []string{"company"}
		return p
	}},
}

// decoderSeeds are property objects: what mixpanel-browser sends, and every
// awkward case the raw decoder must either handle exactly or hand over.
var decoderSeeds = []string{
	`{"$os":"Windows","$browser":"Microsoft Edge","$current_url":"https://shop.example.com/cart?q=trail+runner&email=jane%40example.com&utm_source=news#top","$browser_version":131,"$screen_height":864,"mp_lib":"web","$lib_version":"2.58.0","$device_id":"1918320f724-13a9218b46647f","$initial_referrer":"https://www.bing.com/","$user_id":"user-149544","current_page_title":"Your cart","logged_in":false,"page_load_ms":741,"experiment":{"exposures":1,"name":"new_checkout","variant":"off"},"viewport":{"dpr":1.5,"h":951,"w":522},"categories":["shoes","running"],"cart":{"coupon":null,"items":2,"total":153.83},"distinct_id":"user-149544","time":1795361069472,"$insert_id":"jj525g60000000001","token":"tok-shop"}`,
	`{"time":1795361069472,"distinct_id":"jane","$email":"jane@example.com","Email":"JANE@EXAMPLE.COM","$name":"Jane Roe","name":"kept?","note":"call +44 20 7946 0958 or 4111 1111 1111 1111","iban":"DE89 3704 0044 0532 0130 00","plan":"pro","Plan":"gold","nested":{"a":1}}`,
	`{"time":1795361069001,"distinct_id":42,"$device_id":123,"$user_id":null,"$anon_distinct_id":"","$identified_id":true,"company":["acme",42,{"x":"jane@example.com"},null],"owner":{"email":"x@y.com","profile":{"phone":"+1 415 555 0100"}},"list":["jane@example.com",1,[2,"ssn 078-05-1120"]]}`,
	`{"time":1795361069002,"ip":"198.51.100.7","$ip":"0","mp_country_code":"DE","$city":"Berlin","$region":"Berlin","$browser":true,"$os":12,"$device":{"x":1},"mp_lib":null}`,
	`{"time":1795361069003,"ip":0,"$ip":false,"distinct_id":"u"}`,
	`{"time":1795361069004,"distinct_id":"u","jane@example.com":"key carries an email","k":1}`,
	`{"time":1795361069005,"distinct_id":"u","caf\u00e9":"\u00e9t\u00e9 \ud83d\ude00 \/ \"q\"","lone":"\ud83d x","raw":"😀 ü","ctl":"a\tb\nc","sep":"x\u2028y"}`,
	"{\"time\":6,\"distinct_id\":\"u\",\"bad\":\"a\xc3\x28b\",\"k\xfe\":1,\"deep\":{\"s\":\"\xff\"}}",
	`{"time":1795361069007,"distinct_id":"u","dup":{"a":1,"a":2},"big":{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17}}`,
	`{"time":1795361069008,"distinct_id":"u","a":1,"a":{"b":2}}`,
	`{"time":1795361069009,"distinct_id":"u","ws" : [ 1 , { "x" : "jane@example.com" } ] , "n":-0.25e-3,"z":0,"huge":12345678901234567890123}`,
	`{"time":1795361069010,"distinct_id":"u","$current_url":"https://jane:secret@shop.example.com/a?q=1&utm_medium=cpc&token=abc#frag","url_in_obj":{"u":"https://x.example/?email=a@b.co"},"empty":{},"none":[]}`,
	`{"time":1795361069011,"distinct_id":{"obj":1}}`,
	`{"time":1795361069013,"distinct_id":"u","n":1e999,"m":[1,2e400]}`,
	`{"time":1795361069014,"distinct_id":"u","a\u0000b":1,"o":{"k\u0007":2}}`,
	`{"time":1795361069015,"distinct_id":"null","v":"x\u0000y","big":123456789012345678901234567890,"tiny":1e-400}`,
	`{"time":1795361069016,"distinct_id":"u","v":"x\u0000y","big":123456789012345678901234567890,"tiny":1e-400,"\u00e9":1}`,
	`{"time":"12","distinct_id":"u"}`,
	`{"distinct_id":"u"}`,
	`{}`,
}

func decoderStages(t testing.TB, p policy.Policy) *Pipeline {
	t.Helper()
	path := filepath.Join(t.TempDir(), "GeoLite2-City.mmdb")
	geotest.Write(t, path, geotest.Spec{Layout: geotest.GeoIP2, Records: []geotest.Record{
		{Network: "203.0.113.0/24", CountryCode: "US", Region: "California", City: "San Francisco"},
		{Network: "198.51.100.0/24", CountryCode: "FR", Region: "Île-de-France", City: "Paris"},
	}})
	cfg := DefaultConfig()
	cfg.Enrich.Geo.Paths = []string{path}
	cfg.Deidentify.Policies = policy.Set{Default: p}
	key := make([]byte, pseudonym.MinKeyLen)
	for i := range key {
		key[i] = byte(i * 7)
	}
	kr, err := pseudonym.NewKeyring(map[uint32][]byte{3: key})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := NewPipeline(cfg, kr, nil, Deps{Logger: zap.NewNop(), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pl.Close)
	return pl
}

// fastWorker is what a worker reads and transforms messages with, reused
// from one message to the next.
type fastWorker struct {
	dec    *event.Decoder
	stages []worker.Stage
}

func newFastWorker(pl *Pipeline) *fastWorker {
	return &fastWorker{dec: event.NewDecoder(), stages: pl.NewStages()}
}

// decoderEnvelope is a collector's envelope around an event named name
// with the given properties; those without a $insert_id get one, as the
// collector gives them.
func decoderEnvelope(signals, name, props string) []byte {
	if strings.HasPrefix(props, "{") && !strings.Contains(props, `"$insert_id"`) {
		props = `{"$insert_id":"a0b1c2d3e4f5a6b7c8d9e0f100000000",` + strings.TrimPrefix(props[1:], "}")
		if strings.HasSuffix(props, ",") {
			props = props[:len(props)-1] + "}"
		}
	}
	return []byte(`{"v":1,"kind":1,"project":"shop","endpoint":"/track","received_at":1795361089719,"ip":"203.0.113.9","ua":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","signals":` + signals + `,"request_id":"r1","event":{"event":` + name + `,"properties":` + props + `}}`)
}

// outcome is what a decoder, the rules and the stages made of one
// envelope.
type outcome struct {
	err    string
	text   string // the properties the sink writes, as JSON text
	broke  bool   // the event broke a rule (err says which)
	reason event.DropReason
	ev     event.Event // without its properties
	props  any         // the properties the sink writes, as a JSON value
	fast   bool        // the fast reader read the envelope
}

func run(stages []worker.Stage, value []byte, decode func([]byte, *event.Event) error) outcome {
	ev := new(event.Event)
	if err := decode(value, ev); err != nil {
		return outcome{err: err.Error()}
	}
	if v := rules.DefaultLimits().Event(ev); v != nil {
		return outcome{err: v.Error(), broke: true}
	}
	for _, st := range stages {
		if r := st.Apply(ev); r != event.Keep {
			return outcome{reason: r}
		}
	}
	var o outcome
	text, ok := ev.Properties.AppendJSON(nil, new([]string))
	if !ok {
		return outcome{err: "properties not encodable"}
	}
	o.props, _ = event.DecodeJSONValue(text)
	o.text = string(text)
	o.ev = event.Event{
		Kind: ev.Kind, Project: ev.Project, Endpoint: ev.Endpoint, Name: ev.Name, DistinctID: ev.DistinctID,
		GroupKey: ev.GroupKey, GroupID: ev.GroupID, Value: ev.Value, InsertID: ev.InsertID, Time: ev.Time,
		ReceivedAt: ev.ReceivedAt, IP: ev.IP, UserAgent: ev.UserAgent, Signals: ev.Signals, IPPrefix: ev.IPPrefix,
		Anonymized: ev.Anonymized, Geo: ev.Geo, Device: ev.Device, Provenance: ev.Provenance,
	}
	return o
}

// compareDecoders runs value through fresh stages after the reference
// reader and through w, and fails on any difference. It returns w's
// outcome.
func compareDecoders(t *testing.T, pl *Pipeline, value []byte, w *fastWorker) outcome {
	t.Helper()
	want := run(pl.NewStages(), value, event.Decode)
	got := run(w.stages, value, w.dec.Decode)
	got.fast = w.dec.Fast()
	if got.broke && want.broke {
		// An event that breaks several rules is refused either way; which
		// one is named first follows the order each decoder reads the
		// properties in (the map's is random).
		return got
	}
	if got.err != want.err || got.reason != want.reason {
		t.Fatalf("fast reader: error %q, drop %q; reference: error %q, drop %q", got.err, got.reason, want.err, want.reason)
	}
	if !reflect.DeepEqual(got.props, want.props) {
		t.Fatalf("fast reader stored properties\n%#v\nreference\n%#v", got.props, want.props)
	}
	if !reflect.DeepEqual(got.ev, want.ev) {
		t.Fatalf("fast reader stored\n%#v\nreference\n%#v", got.ev, want.ev)
	}
	if got.err == "" && got.reason == event.Keep {
		portable(t, got)
	}
	return got
}

// portable fails unless what the sink stores is strict, portable JSON and
// text: the properties parse with encoding/json (which refuses numbers no
// float64 holds) and are valid UTF-8, and no event or property name, at
// any depth, holds a control character.
func portable(t *testing.T, o outcome) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(o.text), &v); err != nil {
		t.Fatalf("stored properties %q are not strict JSON: %v", o.text, err)
	}
	if !utf8.ValidString(o.text) || !utf8.ValidString(o.ev.Name) {
		t.Fatalf("stored properties %q or name %q are not valid UTF-8", o.text, o.ev.Name)
	}
	if !rules.ValidName(o.ev.Name) {
		t.Fatalf("stored event name %q holds a control character", o.ev.Name)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if !rules.ValidName(k) {
					t.Fatalf("stored property name %q holds a control character", k)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
}

func TestDecodersAgree(t *testing.T) {
	for _, pc := range decoderPolicies {
		t.Run(pc.name, func(t *testing.T) {
			pl := decoderStages(t, pc.policy())
			w := newFastWorker(pl)
			fast := 0
			for i, props := range decoderSeeds {
				for _, name := range []string{`"Product Viewed"`, `"mail jane@example.com"`} {
					o := compareDecoders(t, pl, decoderEnvelope(pc.signals, name, props), w)
					if o.fast {
						fast++
					}
					if i == 0 && !o.fast {
						t.Fatal("the mixpanel-browser event left the fast reader")
					}
				}
			}
			t.Logf("%d of %d events read by the fast reader", fast, 2*len(decoderSeeds))
		})
	}
}

// TestFastStoresNoCanary checks the fast reader's output itself, not only
// its agreement: no personal datum of the seeds survives, under the
// default policy.
func TestFastStoresNoCanary(t *testing.T) {
	w := newFastWorker(decoderStages(t, policy.Default()))
	for _, props := range decoderSeeds {
		o := run(w.stages, decoderEnvelope(`{}`, `"E"`, props), w.dec.Decode)
		if o.err != "" || o.reason != event.Keep {
			continue
		}
		all := fmt.Sprintf("%#v %#v", o.props, o.ev)
		for _, canary := range []string{"jane@example.com", "JANE@EXAMPLE", "Jane Roe", "7946 0958", "4111 1111", "DE89", "x@y.com", "555 0100", "078-05-1120", "198.51.100.7", "203.0.113", "secret", "token=abc", "user-149544", "1918320f724", "a@b.co"} {
			if strings.Contains(all, canary) {
				t.Errorf("%q stored: %s", canary, all)
			}
		}
	}
}

func FuzzDecodersAgree(f *testing.F) {
	for i, s := range decoderSeeds {
		f.Add(s, uint8(i))
	}
	pls := make([]*Pipeline, len(decoderPolicies))
	for i, pc := range decoderPolicies {
		pls[i] = decoderStages(f, pc.policy())
	}
	f.Fuzz(func(t *testing.T, props string, variant uint8) {
		v := int(variant) % len(decoderPolicies)
		w := newFastWorker(pls[v])
		compareDecoders(t, pls[v], decoderEnvelope(decoderPolicies[v].signals, `"E"`, props), w)
		// And reused after an event that filled its buffers and memos.
		compareDecoders(t, pls[v], decoderEnvelope(decoderPolicies[v].signals, `"E"`, decoderSeeds[0]), w)
		compareDecoders(t, pls[v], decoderEnvelope(decoderPolicies[v].signals, `"E"`, props), w)
	})
}
