package event

import (
	"encoding/json"
	"strings"
	"testing"
)

func envelopeJSON(kind Kind, obj string) []byte {
	b, _ := MarshalEnvelope(&Envelope{Version: EnvelopeVersion, Kind: kind, Project: "shop", Endpoint: "/x",
		ReceivedAt: 1795348800000, IP: "203.0.113.7", Event: json.RawMessage(obj)})
	return b
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		value   []byte
		wantErr string
		check   func(t *testing.T, ev *Event)
	}{
		{"track", envelopeJSON(KindTrack, `{"event":"e","properties":{"distinct_id":"u","time":1795348800123,"$insert_id":"i-1","n":12345678901234567890}}`), "", func(t *testing.T, ev *Event) {
			if ev.Name != "e" || ev.DistinctID != "u" || ev.InsertID != "i-1" || ev.Time.UnixMilli() != 1795348800123 || ev.IP.String() != "203.0.113.7" {
				t.Fatalf("%+v", ev)
			}
			if n, _ := ev.Properties.Get("n"); n != json.Number("12345678901234567890") {
				t.Fatalf("a large integer lost precision: %v", n)
			}
			for _, k := range []string{"distinct_id", "time", "$insert_id"} {
				if _, ok := ev.Properties.Get(k); ok {
					t.Fatalf("%s kept in properties", k)
				}
			}
		}},
		{"numeric distinct_id", envelopeJSON(KindTrack, `{"event":"e","properties":{"distinct_id":42,"time":1}}`), "", func(t *testing.T, ev *Event) {
			if ev.DistinctID != "42" {
				t.Fatalf("distinct_id %q", ev.DistinctID)
			}
		}},
		{"engage", envelopeJSON(KindEngage, `{"event":"$set","properties":{"distinct_id":"u","time":1},"value":{"plan":"pro"}}`), "", func(t *testing.T, ev *Event) {
			if ev.Name != "$set" || ev.Value.(map[string]any)["plan"] != "pro" {
				t.Fatalf("%+v", ev)
			}
		}},
		{"groups", envelopeJSON(KindGroups, `{"event":"$unset","properties":{"$group_key":"company","$group_id":"acme","time":1},"value":["a"]}`), "", func(t *testing.T, ev *Event) {
			if ev.GroupKey != "company" || ev.GroupID != "acme" || len(ev.Value.([]any)) != 1 {
				t.Fatalf("%+v", ev)
			}
		}},
		{"not JSON", []byte("\x00garbage"), "not a JSON envelope", nil},
		{"unknown version", []byte(`{"v":7,"kind":1,"project":"p","event":{}}`), "unknown envelope version 7", nil},
		{"unknown kind", []byte(`{"v":1,"kind":9,"project":"p","event":{}}`), "unknown event kind 9", nil},
		{"no project", []byte(`{"v":1,"kind":1,"event":{"event":"e","properties":{"time":1}}}`), "missing project", nil},
		{"bad ip", []byte(`{"v":1,"kind":1,"project":"p","ip":"nope","event":{"event":"e","properties":{"time":1}}}`), "malformed client address", nil},
		{"no name", envelopeJSON(KindTrack, `{"properties":{"time":1}}`), "missing event name", nil},
		{"no time", envelopeJSON(KindTrack, `{"event":"e","properties":{}}`), "time: missing", nil},
		{"unknown op", envelopeJSON(KindEngage, `{"event":"$explode","properties":{"time":1}}`), "unknown profile operation", nil},
		{"group without id", envelopeJSON(KindGroups, `{"event":"$set","properties":{"$group_key":"company","time":1}}`), "without $group_key and $group_id", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev Event
			err := Decode(tt.value, &ev)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if _, ok := err.(*DecodeError); !ok {
					t.Fatalf("error of type %T", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, &ev)
		})
	}
}

func TestKey(t *testing.T) {
	if got := string(Key("shop", "u-1")); got != "shop\x00u-1" {
		t.Fatalf("%q", got)
	}
	if got := string(AppendKey([]byte("prefix"), "shop", []byte("u-1"))); got != "prefixshop\x00u-1" {
		t.Fatalf("AppendKey: %q", got)
	}
}

// FuzzDecode: any bytes give an event or a *DecodeError, never a panic, and
// an error never quotes the input.
func FuzzDecode(f *testing.F) {
	f.Add(envelopeJSON(KindTrack, `{"event":"e","properties":{"distinct_id":"u","time":1}}`))
	f.Add(envelopeJSON(KindEngage, `{"event":"$add","properties":{"time":1},"value":{"n":1}}`))
	f.Add(envelopeJSON(KindGroups, `{"event":"$set","properties":{"$group_key":"k","$group_id":"g","time":1},"value":{}}`))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		err := Decode(b, &ev)
		if err == nil {
			return
		}
		de, ok := err.(*DecodeError)
		if !ok {
			t.Fatalf("error of type %T", err)
		}
		if len(b) > 12 && strings.Contains(de.Reason, string(b)) {
			t.Fatalf("error quotes its input: %q", de.Reason)
		}
	})
}
