package event

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
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

func checkSame(t *testing.T, value []byte, reuse *Event) {
	t.Helper()
	var want Event
	wantErr := Decode(value, &want)
	got := *reuse
	gotErr := DecodeFast(value, &got)
	*reuse = got
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("error %v, want %v", gotErr, wantErr)
	}
	if wantErr != nil {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", got, want)
	}
}

// checkRaw requires DecodeRaw to yield Decode's event or error: the
// properties it writes as they came, and the map Materialize makes of
// them, must both be Decode's map.
func checkRaw(t *testing.T, value []byte, reuse *Event) {
	t.Helper()
	var want Event
	wantErr := Decode(value, &want)
	gotErr := DecodeRaw(value, reuse)
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("raw: error %v, want %v", gotErr, wantErr)
	}
	if wantErr != nil {
		return
	}
	for _, pr := range reuse.Props {
		if pr.Known != KnownProp(pr.Key) {
			t.Fatalf("raw: %q known as %d, want %d", pr.Key, pr.Known, KnownProp(pr.Key))
		}
	}
	text, ok := reuse.AppendProperties(nil)
	if !ok {
		t.Fatal("raw: properties not encoded")
	}
	if v, ok := DecodeJSONValue(text); !ok || !reflect.DeepEqual(v, want.Properties) {
		t.Fatalf("raw: properties written as %s, want %#v", text, want.Properties)
	}
	checkRuns(t, value)
	checkCleaned(t, value, text, reuse.Props != nil)
	if err := reuse.Materialize(); err != nil {
		t.Fatal(err)
	}
	got := *reuse
	got.propsBuf, got.scratch, got.keys, got.memo = nil, nil, nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("raw: decoded\n%#v\nwant\n%#v", got, want)
	}
}

// noX is a Cleaner that holds a string clean unless it has an 'x'.
type noX struct{}

func (noX) Clean(s string) bool { return !strings.Contains(s, "x") }

// checkCleaned decodes value, whose properties DecodeRaw writes as text,
// with objects and arrays checked while read (SetCleaner): the text must
// not change, and CleanedBy must give CleanJSON's verdict for each prop,
// for that Cleaner only.
func checkCleaned(t *testing.T, value, text []byte, raw bool) {
	t.Helper()
	var ev Event
	_ = DecodeRaw(envelopeWith(`{"event":"E","properties":{"time":1}}`), &ev)
	ev.SetCleaner(noX{})
	if err := DecodeRaw(value, &ev); err != nil || (ev.Props != nil) != raw {
		t.Fatalf("with a Cleaner: error %v, props as text %v, want %v", err, ev.Props != nil, raw)
	}
	if got, _ := ev.AppendProperties(nil); !bytes.Equal(got, text) {
		t.Fatalf("with a Cleaner: properties written as %s, want %s", got, text)
	}
	for i := range ev.Props {
		pr := &ev.Props[i]
		want := (pr.Kind == PropObject || pr.Kind == PropArray) && CleanJSON(pr.Raw, noX{})
		if got := pr.CleanedBy(&ev, noX{}); got != want {
			t.Fatalf("%q: CleanedBy %v, CleanJSON %v", pr.Raw, got, want)
		}
		if pr.CleanedBy(&ev, nil) {
			t.Fatalf("%q: CleanedBy a nil Cleaner", pr.Raw)
		}
	}
}

// checkRuns requires AppendProperties, which copies runs of props that
// came as they are out of the message, to write what writing each kept
// prop on its own writes: for the props as decoded, and after the stages'
// kinds of change, which break the runs (a prop dropped, a string
// rewritten, a value replaced).
func checkRuns(t *testing.T, value []byte) {
	t.Helper()
	var ev Event
	if DecodeRaw(value, &ev) != nil || ev.Props == nil {
		return
	}
	check := func(what string) {
		t.Helper()
		got, _ := ev.AppendProperties(nil)
		if want := appendEach(&ev); string(got) != string(want) {
			t.Fatalf("raw, %s: properties written as\n%s\nprop by prop\n%s", what, got, want)
		}
	}
	check("as decoded")
	for i := range ev.Props {
		pr := &ev.Props[i]
		switch i % 4 {
		case 1:
			pr.Drop = true
		case 2:
			if pr.Kind == PropString {
				pr.Str, pr.Escaped = "[email]", true
			}
		case 3:
			if !ev.SetOutValue(i, "replaced") {
				t.Fatal("SetOutValue failed")
			}
		}
	}
	check("after changes")
}

// appendEach is AppendProperties for a raw event, one prop at a time,
// without runs.
func appendEach(ev *Event) []byte { return ev.appendProps(nil, false) }

func TestDecodeRawMatchesDecode(t *testing.T) {
	var reused Event
	for _, tc := range fastDecodeCases {
		t.Run(tc.name, func(t *testing.T) {
			var fresh Event
			checkRaw(t, []byte(tc.value), &fresh)
			checkRaw(t, []byte(tc.value), &reused)
		})
	}
}

func TestDecodeFastMatchesDecode(t *testing.T) {
	for _, tc := range fastDecodeCases {
		t.Run(tc.name, func(t *testing.T) {
			var fresh Event
			checkSame(t, []byte(tc.value), &fresh)
			// Decoding over a previous event reuses its map; nothing of
			// the previous event may remain.
			prev := Event{Properties: map[string]any{"stale": "x", "time": "y"}, DistinctID: "old", Device: Device{Browser: "b"}}
			checkSame(t, []byte(tc.value), &prev)
		})
	}
}

// TestDecodeFastCoversTrack checks that the common case really takes the
// fast path (a fallback to Decode would pass the equality test too).
func TestDecodeFastCoversTrack(t *testing.T) {
	for _, name := range []string{"mixpanel-browser", "nested", "escapes", "duplicate keys", "whitespace", "ip property"} {
		for _, tc := range fastDecodeCases {
			if tc.name != name {
				continue
			}
			var ev Event
			if !decodeTrack([]byte(tc.value), &ev, map[string]any{}, nil, nil) {
				t.Errorf("%s: not decoded by the fast path", name)
			}
			var props []Prop
			if name != "duplicate keys" && !decodeTrack([]byte(tc.value), &ev, nil, &props, nil) {
				t.Errorf("%s: not decoded by the raw path", name)
			}
		}
	}
}

// TestDecodeRawGivesUpOnRepeats checks that a property named twice, however
// its name is written, leaves the raw path (the map keeps the last value;
// the raw props would keep both).
func TestDecodeRawGivesUpOnRepeats(t *testing.T) {
	for _, name := range []string{"duplicate keys", "duplicate keys escaped", "duplicate unknown key"} {
		for _, tc := range fastDecodeCases {
			if tc.name != name {
				continue
			}
			var ev Event
			var props []Prop
			if decodeTrack([]byte(tc.value), &ev, nil, &props, nil) {
				t.Errorf("%s: decoded by the raw path", name)
			}
		}
	}
}

func FuzzDecodeFast(f *testing.F) {
	for _, tc := range fastDecodeCases {
		f.Add([]byte(tc.value))
	}
	f.Add([]byte(`{"a":{"b":[1,"\u00e9",{"c":null}]}}`))
	f.Add([]byte(`{"o":{"x":1},"a":["y","zx"],"c":{"k":1,"k":2},"d":{"a":"b","n":[true,null,{}]},"e":[]}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		prev := Event{Properties: map[string]any{"stale": 1}}
		checkSame(t, value, &prev)
		var raw Event
		checkRaw(t, value, &raw)
		checkRaw(t, envelopeWith(`{"event":"E","properties":{"time":1,"p":`+string(value)+`}}`), &raw)
		// After an envelope with the seeds' head, value takes the path of a
		// message that repeats the previous one's head when it starts
		// with the same bytes.
		checkRaw(t, envelopeWith(`{"event":"E","properties":{"time":1}}`), &raw)
		checkRaw(t, value, &raw)
		// The bytes as the properties of a track event, too.
		checkSame(t, envelopeWith(`{"event":"E","properties":`+string(value)+`}`), &prev)
		checkSame(t, envelopeWith(`{"event":"E","properties":{"time":1,"p":`+string(value)+`}}`), &prev)
	})
}
