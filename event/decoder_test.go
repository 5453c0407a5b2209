package event

import (
	"fmt"
	"reflect"
	"testing"
)

// envelopeWith wraps an event object in a track envelope as the collector
// writes it.
func envelopeWith(obj string) []byte {
	return []byte(`{"v":1,"kind":1,"project":"shop","endpoint":"/track","received_at":1795348800123,"ip":"::ffff:203.0.113.9","ua":"Mozilla/5.0 (X11; Linux x86_64)","signals":{"gpc":true},"request_id":"r1","event":` + obj + `}`)
}

// fastDecodeCases are realistic and awkward inputs; each must decode
// exactly as Decode does (the same Event or the same error).
var fastDecodeCases = []struct {
	name  string
	value string
}{
	{"mixpanel-browser", string(envelopeWith(`{"event":"Viewed Page","properties":{"time":1795348800123,"distinct_id":"$device:18f3a","$insert_id":"abc123","$browser":"Chrome","$browser_version":121,"$current_url":"https://shop.example.com/cart?email=jane%40example.com&utm_source=news#frag","$screen_height":1080,"mp_lib":"web","$lib_version":"2.55.0","token":"tok-shop","$device_id":"18f3a","mp_page_view":true,"ratio":1.5e-3,"neg":-0.25,"big":12345678901234567890123}}`))},
	{"nested", string(envelopeWith(`{"event":"Checkout","properties":{"time":1,"cart":{"items":[{"sku":"A1","email":"jane@example.com","n":2},[],{}],"owner":{"$email":"x@y.z"}},"tags":["a","b",null,true,false,1.0]}}`))},
	{"emails in keys", string(envelopeWith(`{"event":"E","properties":{"time":2,"jane@example.com":"v","k":"call +44 20 7946 0958"}}`))},
	{"escapes", string(envelopeWith(`{"event":"caf\u00e9 \ud83d\ude00","properties":{"time":3,"s":"line\nbreak\ttab \"q\" \\ \/ \b\f\r","lone":"\ud83d x","lone2":"\ude00","pair":"\uD83D\uDE00","k\u00e9y":"\u0026\u003c\u003e","emoji":"😀 ü"}}`))},
	{"numeric distinct_id", string(envelopeWith(`{"event":"E","properties":{"time":4,"distinct_id":9007199254740993}}`))},
	{"null distinct_id", string(envelopeWith(`{"event":"E","properties":{"time":4,"distinct_id":null,"$insert_id":7}}`))},
	{"bool distinct_id", string(envelopeWith(`{"event":"E","properties":{"time":4,"distinct_id":true}}`))},
	{"duplicate keys", string(envelopeWith(`{"event":"E","properties":{"time":4,"a":1,"a":{"b":2},"time":5}}`))},
	{"duplicate keys escaped", string(envelopeWith(`{"event":"E","properties":{"time":4,"$os":"a","plan":1,"\u0024os":"b","pla\u006e":2}}`))},
	{"duplicate unknown key", string(envelopeWith(`{"event":"E","properties":{"time":4,"plan":1,"$os":"a","plan":2}}`))},
	{"whitespace", " {\n\"v\" : 1 ,\t\"kind\":1,\"project\":\"p\",\"event\": { \"event\" : \"E\" , \"properties\" : { \"time\" : 6 , \"x\" : [ 1 , 2 ] } } } \n"},
	{"space between members", string(envelopeWith(`{"event":"E","properties":{"time":1,"a":1, "b":"x","c":[1],"d":2 ,"e":3,"f":{"g":1}}}`))},
	{"no properties", `{"v":1,"kind":1,"project":"p","received_at":0,"signals":{},"event":{"event":"E"}}`},
	{"null properties", `{"v":1,"kind":1,"project":"p","event":{"event":"E","properties":null}}`},
	{"missing time", string(envelopeWith(`{"event":"E","properties":{}}`))},
	{"fractional time", string(envelopeWith(`{"event":"E","properties":{"time":1.5}}`))},
	{"string time", string(envelopeWith(`{"event":"E","properties":{"time":"1"}}`))},
	{"missing name", string(envelopeWith(`{"properties":{"time":1}}`))},
	{"bad version", `{"v":2,"kind":1,"project":"p","event":{"event":"E","properties":{"time":1}}}`},
	{"bad kind", `{"v":1,"kind":9,"project":"p","event":{"event":"E","properties":{"time":1}}}`},
	{"no project", `{"v":1,"kind":1,"event":{"event":"E","properties":{"time":1}}}`},
	{"bad ip", `{"v":1,"kind":1,"project":"p","ip":"300.1.1.1","event":{"event":"E","properties":{"time":1}}}`},
	{"engage", `{"v":1,"kind":2,"project":"p","event":{"event":"$set","properties":{"time":1,"distinct_id":"u"},"value":{"a":1}}}`},
	{"groups", `{"v":1,"kind":3,"project":"p","event":{"event":"$set","properties":{"time":1,"$group_key":"c","$group_id":"x"},"value":{"a":1}}}`},
	{"case-insensitive field", `{"V":1,"kind":1,"project":"p","event":{"Event":"E","properties":{"time":1}}}`},
	{"unknown field", `{"v":1,"kind":1,"project":"p","extra":[1,{"a":"b"}],"event":{"event":"E","properties":{"time":1}}}`},
	{"trailing garbage", `{"v":1,"kind":1,"project":"p","event":{"event":"E","properties":{"time":1}}} x`},
	{"invalid utf8", "{\"v\":1,\"kind\":1,\"project\":\"p\",\"event\":{\"event\":\"E\xff\",\"properties\":{\"time\":1,\"s\":\"a\xc3\x28b\",\"k\xfe\":1}}}"},
	{"bad number", `{"v":1,"kind":1,"project":"p","event":{"event":"E","properties":{"time":1,"n":01}}}`},
	{"truncated", `{"v":1,"kind":1,"project":"p","event":{"event":"E","properties":{"time":1,"s":"abc`},
	{"not json", `hello`},
	{"signals dup", `{"v":1,"kind":1,"project":"p","signals":{"dnt":true},"signals":{"gpc":true},"event":{"event":"E","properties":{"time":1}}}`},
	{"ip property", string(envelopeWith(`{"event":"E","properties":{"time":1,"ip":"0","$ip":"198.51.100.7"}}`))},
	// The collector's layout with its optional fields left out, and
	// layouts that leave it part way (collectorHead gives up and the
	// general loop reads them).
	{"collector minimal", `{"v":1,"kind":1,"project":"p","endpoint":"/import","received_at":5,"signals":{"dnt":true,"nogeo":true},"event":{"event":"E","properties":{"time":1}}}`},
	{"collector ua only", `{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":5,"ua":"curl/8","signals":{},"event":{"event":"E","properties":{"time":1}}}`},
	{"field after event", `{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":5,"signals":{},"event":{"event":"E","properties":{"time":1}},"request_id":"r"}`},
	{"field repeated after event", `{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":5,"signals":{},"event":{"event":"E","properties":{"time":1}},"project":"q"}`},
	{"event repeated", `{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":5,"signals":{},"event":{"event":"E","properties":{"time":1}},"event":{"event":"F","properties":{"time":2}}}`},
	{"version 10", `{"v":10,"kind":1,"project":"p","endpoint":"/track","received_at":5,"signals":{},"event":{"event":"E","properties":{"time":1}}}`},
	{"kind 2 in layout", `{"v":1,"kind":2,"project":"p","endpoint":"/track","received_at":5,"signals":{},"event":{"event":"$set","properties":{"time":1}}}`},
	{"order changed", `{"v":1,"kind":1,"endpoint":"/track","project":"p","received_at":5,"signals":{},"event":{"event":"E","properties":{"time":1}}}`},
	{"space in layout", `{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":5, "signals":{},"event":{"event":"E","properties":{"time":1}}}`},
	{"escaped project", `{"v":1,"kind":1,"project":"p\u0041","endpoint":"/tr\u0061ck","received_at":5,"ip":"203.0.113.9","signals":{},"event":{"event":"E","properties":{"time":1}}}`},
	{"bad ip in layout", `{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":5,"ip":"x","signals":{},"event":{"event":"E","properties":{"time":1}}}`},
	{"fractional received_at", `{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":5.5,"signals":{},"event":{"event":"E","properties":{"time":1}}}`},
	{"trailing space", `{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":5,"signals":{},"event":{"event":"E","properties":{"time":1}} } `},
}

// TestCollectorHeadCoversEnvelope checks that the collector's layouts take
// collectorHead's prefix compares (a fall back to the general loop would
// pass the equality tests too), and that other layouts do not.
func TestCollectorHeadCoversEnvelope(t *testing.T) {
	want := map[string]bool{
		"mixpanel-browser": true, "collector minimal": true, "collector ua only": true,
		"field after event": true, "field repeated after event": true, "event repeated": true,
		"escaped project": true, "bad ip in layout": true, "trailing space": true,
		"version 10": false, "kind 2 in layout": false, "order changed": false,
		"space in layout": false, "fractional received_at": false, "whitespace": false,
		"no properties": false, "unknown field": false,
	}
	for _, tc := range fastDecodeCases {
		w, ok := want[tc.name]
		if !ok {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			p := scanner{b: []byte(tc.value), view: true}
			p.ws()
			if !p.lit('{') {
				t.Fatal("not an object")
			}
			if _, got := p.collectorHead(); got != w {
				t.Fatalf("collectorHead read it: %v, want %v", got, w)
			}
		})
	}
}

// checkDecoder requires the Decoder to yield the reference's event or
// error: the properties it writes must be the reference's, as JSON
// values, each known name recorded, and the event otherwise the same.
func checkDecoder(t *testing.T, value []byte, d *Decoder) {
	t.Helper()
	var want Event
	wantErr := Decode(value, &want)
	var got Event
	gotErr := d.Decode(value, &got)
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("error %v, want %v", gotErr, wantErr)
	}
	if wantErr != nil {
		return
	}
	for _, pr := range got.Properties.All() {
		if pr.Known() != LookupKnown(pr.Name()) {
			t.Fatalf("%q known as %d, want %d", pr.Name(), pr.Known(), LookupKnown(pr.Name()))
		}
	}
	text, ok := got.Properties.AppendJSON(nil, new([]string))
	if !ok {
		t.Fatal("properties not encoded")
	}
	wantProps, _ := want.Properties.Map()
	if v, ok := DecodeJSONValue(text); !ok || !reflect.DeepEqual(v, wantProps) {
		t.Fatalf("properties written as %s, want %#v", text, wantProps)
	}
	if m, ok := got.Properties.Map(); !ok || !reflect.DeepEqual(m, wantProps) {
		t.Fatalf("properties as a map %#v, want %#v", m, wantProps)
	}
	checkRuns(t, value)
	got.Properties, want.Properties = Properties{}, Properties{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", got, want)
	}
}

// checkRuns requires AppendJSON, which copies runs of properties that
// came as they are out of the message, to write what writing each kept
// property on its own writes: as decoded, and after the stages' kinds of
// change, which break the runs (a property dropped, a string set, a value
// replaced).
func checkRuns(t *testing.T, value []byte) {
	t.Helper()
	var ev Event
	if NewDecoder().Decode(value, &ev) != nil {
		return
	}
	check := func(what string) {
		t.Helper()
		got, _ := ev.Properties.AppendJSON(nil, new([]string))
		if want := appendEach(&ev.Properties); string(got) != string(want) {
			t.Fatalf("%s: properties written as\n%s\nproperty by property\n%s", what, got, want)
		}
	}
	check("as decoded")
	props := &ev.Properties
	for i, pr := range props.All() {
		switch i % 4 {
		case 1:
			props.Drop(i)
		case 2:
			if pr.Kind() == PropString {
				props.SetString(i, "[email]")
			}
		case 3:
			props.SetValue(i, map[string]any{"replaced": []any{"x"}})
		}
	}
	check("after changes")
}

func TestDecoderMatchesDecode(t *testing.T) {
	reused := NewDecoder()
	for _, tc := range fastDecodeCases {
		t.Run(tc.name, func(t *testing.T) {
			checkDecoder(t, []byte(tc.value), NewDecoder())
			checkDecoder(t, []byte(tc.value), reused)
		})
	}
}

// TestDecoderCoversTrack checks that the common case really takes the
// fast path (a hand-over to the reference would pass the equality test
// too), and that a property named twice, however its name is written,
// does not: the reference keeps the last value, the fast path would keep
// both.
func TestDecoderCoversTrack(t *testing.T) {
	want := map[string]bool{
		"mixpanel-browser": true, "nested": true, "escapes": true, "whitespace": true, "ip property": true,
		"duplicate keys": false, "duplicate keys escaped": false, "duplicate unknown key": false,
		"engage": false, "groups": false,
	}
	for _, tc := range fastDecodeCases {
		w, ok := want[tc.name]
		if !ok {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			var ev Event
			if _, got := NewDecoder().track([]byte(tc.value), &ev, nil); got != w {
				t.Fatalf("read by the fast path: %v, want %v", got, w)
			}
		})
	}
}

// FuzzDecoder holds the Decoder to the reference on any input, on its
// own, as a property value and as the properties of a track event, and
// after a message whose head it remembers.
func FuzzDecoder(f *testing.F) {
	for _, tc := range fastDecodeCases {
		f.Add([]byte(tc.value))
	}
	f.Add([]byte(`{"a":{"b":[1,"\u00e9",{"c":null}]}}`))
	f.Add([]byte(`{"o":{"x":1},"a":["y","zx"],"c":{"k":1,"k":2},"d":{"a":"b","n":[true,null,{}]},"e":[]}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		d := NewDecoder()
		checkDecoder(t, value, d)
		checkDecoder(t, envelopeWith(`{"event":"E","properties":{"time":1,"p":`+string(value)+`}}`), d)
		// After an envelope with the seeds' head, value takes the path of a
		// message that repeats the previous one's head when it starts
		// with the same bytes.
		checkDecoder(t, envelopeWith(`{"event":"E","properties":{"time":1}}`), d)
		checkDecoder(t, value, d)
		checkDecoder(t, envelopeWith(`{"event":"E","properties":`+string(value)+`}`), d)
	})
}
