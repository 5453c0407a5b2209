package event_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/veilhq/veil/event"
)

// write returns the envelope of r as w writes it.
func write(w *event.EnvelopeWriter, r event.Record) []byte {
	return w.Append(make([]byte, 0, w.Size(&r)), &r)
}

// TestEnvelopeWriterMatchesMarshalEnvelope: the collector's envelope writer
// produces exactly event.MarshalEnvelope's bytes.
func TestEnvelopeWriterMatchesMarshalEnvelope(t *testing.T) {
	obj := []byte(`{"event":"e","properties":{"$insert_id":"abc","time":1}}`)
	base := event.Envelope{Version: event.EnvelopeVersion, Kind: event.KindEngage, Endpoint: "/engage", ReceivedAt: 1795348800123,
		IP: "198.51.100.20", UserAgent: `Mozilla/5.0 <script>&"\u2028"`, Signals: event.Signals{DNT: true}, RequestID: "0123abcd"}
	tests := []struct {
		name   string
		mutate func(*event.Envelope)
		n      event.Record
	}{
		{"everything", func(*event.Envelope) {}, event.Record{Project: "shop"}},
		{"no optional fields", func(e *event.Envelope) { e.IP, e.UserAgent, e.RequestID, e.Signals = "", "", "", event.Signals{} }, event.Record{Project: "shop"}},
		{"all signals", func(e *event.Envelope) { e.Signals = event.Signals{DNT: true, GPC: true, OptOut: true, NoGeo: true} }, event.Record{Project: "shop"}},
		{"profile $ip", func(*event.Envelope) {}, event.Record{Project: "shop", IP: "2001:db8::1"}},
		{"profile $ip without a connection address", func(e *event.Envelope) { e.IP = "" }, event.Record{Project: "shop", IP: "203.0.113.1"}},
		{"profile $ip 0", func(*event.Envelope) {}, event.Record{Project: "shop", NoGeo: true}},
		{"odd project name", func(*event.Envelope) {}, event.Record{Project: "s<h>o&p\"é"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := base
			tt.mutate(&env)
			w := event.NewEnvelopeWriter(&env)
			n := tt.n
			n.Event = obj
			got := write(w, n)
			// What the writer must equal: the envelope with the record's
			// project and overrides, marshalled by the event package.
			want := env
			want.Project, want.Event = n.Project, obj
			if n.IP != "" {
				want.IP = n.IP
			}
			if n.NoGeo {
				want.Signals.NoGeo = true
			}
			wb, err := event.MarshalEnvelope(&want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wb) {
				t.Fatalf("writer  %s\nmarshal %s", got, wb)
			}
			// And a second record through the same writer is unaffected.
			if again := write(w, event.Record{Project: "other", Event: obj}); !strings.Contains(string(again), `"project":"other"`) {
				t.Fatalf("second record %s", again)
			}
		})
	}
}

// TestEnvelopeFieldsKnown fails when event.Envelope or event.Signals gains
// a field, so that the envelope writer is taught to write it.
func TestEnvelopeFieldsKnown(t *testing.T) {
	tags := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			out = append(out, strings.Split(rt.Field(i).Tag.Get("json"), ",")[0])
		}
		return out
	}
	if got, want := tags(event.Envelope{}), []string{"v", "kind", "project", "endpoint", "received_at", "ip", "ua", "signals", "request_id", "event"}; !slices.Equal(got, want) {
		t.Fatalf("event.Envelope fields are %v; envelopeWriter writes %v: update it", got, want)
	}
	if got, want := tags(event.Signals{}), []string{"dnt", "gpc", "optout", "nogeo"}; !slices.Equal(got, want) {
		t.Fatalf("event.Signals fields are %v, the writer knows %v: update it", got, want)
	}
}

// FuzzEnvelopeWriter compares the writer with event.MarshalEnvelope over
// arbitrary strings.
func FuzzEnvelopeWriter(f *testing.F) {
	f.Add("shop", "/track", "Mozilla/5.0", "198.51.100.1", "req", "", false, uint8(1))
	f.Add("<&>", "/engage", "\u2028\x00\xff", "", "", "2001:db8::1", true, uint8(0))
	f.Add("p", "/track", "", "", "", "", true, uint8(15))
	obj := json.RawMessage(`{"event":"e","properties":{"time":1,"$insert_id":"x"}}`)
	f.Fuzz(func(t *testing.T, project, endpoint, ua, ip, reqID, overrideIP string, noGeo bool, signals uint8) {
		env := event.Envelope{Version: 1, Kind: event.KindTrack, Endpoint: endpoint, ReceivedAt: 42, IP: ip, UserAgent: ua,
			Signals:   event.Signals{DNT: signals&1 != 0, GPC: signals&2 != 0, OptOut: signals&4 != 0, NoGeo: signals&8 != 0},
			RequestID: reqID}
		n := event.Record{Project: project, Event: obj, IP: overrideIP, NoGeo: noGeo}
		got := write(event.NewEnvelopeWriter(&env), n)
		want := env
		want.Project, want.Event = project, obj
		if overrideIP != "" {
			want.IP = overrideIP
		}
		want.Signals.NoGeo = want.Signals.NoGeo || noGeo
		wb, err := event.MarshalEnvelope(&want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, wb) {
			t.Fatalf("writer  %s\nmarshal %s", got, wb)
		}
	})
}
