package rules_test

import (
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/event/rules"
)

// TestEvent holds messages of the raw topic, as each of the worker's
// decoders reads them, to the rules: the same verdict whichever decoder
// read the message.
func TestEvent(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC).UnixMilli()
	ms := func(d time.Duration) string { return itoa(now + d.Milliseconds()) }
	env := func(kind, endpoint, obj string) []byte {
		return []byte(`{"v":1,"kind":` + kind + `,"project":"shop","endpoint":"` + endpoint + `","received_at":` + itoa(now) + `,"signals":{},"event":` + obj + `}`)
	}
	track := func(props string) []byte {
		return env("1", "/track", `{"event":"e","properties":{"distinct_id":"u","time":`+ms(0)+`,"$insert_id":"i-1"`+props+`}}`)
	}
	lim := rules.DefaultLimits()
	lim.MaxProperties, lim.MaxArrayLen, lim.MaxEventBytes = 5, 3, 300
	tests := []struct {
		name  string
		value []byte
		want  string // Violation.Error(); "" for valid
	}{
		{"valid", track(`,"a":1,"b":{"c":[1,2]},"d":"x\u0000y"`), ""},
		{"four properties besides the ids", track(`,"a":1,"b":2,"c":3,"d":4`), ""},
		{"five", track(`,"a":1,"b":2,"c":3,"d":4,"e":5`), "too_many_properties: properties: has 5 properties or more"},
		{"a list of 3", track(`,"l":[1,2,3]`), "array_too_long: properties.l: list has 3 items or more"},
		{"a nested object of 5 keys", track(`,"o":{"a":1,"b":2,"c":3,"d":4,"e":5}`), "too_many_properties: properties.o: object has 5 keys or more"},
		{"within the slack for what the collector adds", track(`,"a":"` + strings.Repeat("x", 300) + `"`), ""},
		{"too large", track(`,"a":"` + strings.Repeat("x", 500) + `"`), "too_large: event exceeds 300 bytes"},
		{"1e999", track(`,"n":1e999`), "invalid_number: properties.n: a number is too large for a float64"},
		{"nested 1e999", track(`,"n":{"m":[-1e999]}`), "invalid_number: properties.n: a number is too large for a float64"},
		{"control character in a key", track(`,"a\tb":1`), "invalid_name: properties: a property name holds a control character"},
		{"control character in a nested key", track(`,"o":{"a\u007f":1}`), "invalid_name: properties.o: a key holds a control character"},
		{"placeholder distinct_id", env("1", "/track", `{"event":"e","properties":{"distinct_id":"NULL","time":`+ms(0)+`,"$insert_id":"i-1"}}`),
			`invalid_distinct_id: properties.distinct_id: distinct_id is a placeholder value Mixpanel refuses (such as null, undefined or 0); use "" for events of no user`},
		{"numeric placeholder distinct_id", env("1", "/track", `{"event":"e","properties":{"distinct_id":-1,"time":`+ms(0)+`,"$insert_id":"i-1"}}`),
			`invalid_distinct_id: properties.distinct_id: distinct_id is a placeholder value Mixpanel refuses (such as null, undefined or 0); use "" for events of no user`},
		{"no user", env("1", "/track", `{"event":"e","properties":{"distinct_id":"","time":`+ms(0)+`,"$insert_id":"i-1"}}`), ""},
		{"$insert_id not a string", env("1", "/track", `{"event":"e","properties":{"distinct_id":"u","time":`+ms(0)+`,"$insert_id":7}}`), "invalid_insert_id: properties.$insert_id: $insert_id is missing"},
		{"old on /track", env("1", "/track", `{"event":"e","properties":{"time":`+ms(-6*24*time.Hour)+`,"$insert_id":"i-1"}}`), "too_old: properties.time: older than 5 days; send historical events to /import"},
		{"old on /import", env("1", "/import", `{"event":"e","properties":{"time":`+ms(-6*24*time.Hour)+`,"$insert_id":"i-1"}}`), ""},
		{"unknown endpoint", env("1", "/x", `{"event":"e","properties":{"time":`+ms(0)+`,"$insert_id":"i-1"}}`), "malformed: endpoint: a track event must come from /track or /import"},
		{"$set with a control character in a name", env("2", "/engage", `{"event":"$set","properties":{"distinct_id":"u","time":`+ms(0)+`,"$insert_id":"i-1"},"value":{"a\u0000":1}}`),
			"invalid_name: $set: a property name holds a control character"},
		{"$set 1e999", env("2", "/engage", `{"event":"$set","properties":{"distinct_id":"u","time":`+ms(0)+`,"$insert_id":"i-1"},"value":{"n":1e999}}`),
			"invalid_number: $set.n: a number is too large for a float64"},
		{"$unset a control character", env("2", "/engage", `{"event":"$unset","properties":{"distinct_id":"u","time":`+ms(0)+`,"$insert_id":"i-1"},"value":["\u0001"]}`),
			"invalid_name: $unset: a property name holds a control character"},
		{"profile of undefined", env("2", "/engage", `{"event":"$set","properties":{"distinct_id":"undefined","time":`+ms(0)+`,"$insert_id":"i-1"},"value":{"a":1}}`),
			`invalid_distinct_id: $distinct_id: $distinct_id is a placeholder value Mixpanel refuses (such as null, undefined or 0); use "" for events of no user`},
		{"group update", env("3", "/groups", `{"event":"$set","properties":{"$group_key":"company","$group_id":"null","time":`+ms(0)+`,"$insert_id":"i-1"},"value":{"a":1}}`), ""},
	}
	decoders := map[string]func([]byte, *event.Event) error{"fast": event.NewDecoder().Decode, "reference": event.Decode}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, decode := range decoders {
				var ev event.Event
				if err := decode(tt.value, &ev); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				got := ""
				if v := lim.Event(&ev); v != nil {
					got = v.Error()
				}
				if got != tt.want {
					t.Fatalf("%s decoder: %q, want %q", name, got, tt.want)
				}
			}
		})
	}
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for n >= 10 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	b[i] = byte('0' + n)
	return string(b[i:])
}
