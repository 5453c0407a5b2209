package sink

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/veilhq/veil/event"
)

// appendPropsJSON is how the sink encodes a property map (event.AppendJSON,
// through Event.AppendProperties); these tests hold it to marshalJSON, the
// sink's fallback.
func appendPropsJSON(dst []byte, v any, keys *[]string) ([]byte, bool) {
	return event.AppendJSON(dst, v, keys)
}

// propsCases are property trees as the worker's stages leave them.
var propsCases = []struct {
	name  string
	props map[string]any
}{
	{"empty", map[string]any{}},
	{"nil", nil},
	{"mixpanel-browser", map[string]any{
		"$current_url": "https://shop.example.com/cart?utm_source=news&a=<b>", "$screen_height": json.Number("1080"),
		"mp_page_view": true, "$referrer": nil, "$device_id": "p_0123abcd", "ratio": json.Number("1.5e-3"),
		"big": json.Number("12345678901234567890123"), "empty": json.Number(""),
	}},
	{"nested", map[string]any{"cart": map[string]any{"items": []any{map[string]any{"sku": "A1", "n": json.Number("2")}, []any{}, map[string]any{}}, "z": "1", "a": "2"}, "tags": []any{"a", nil, true, false}, "nilList": []any(nil), "nilMap": map[string]any(nil)}},
	{"escapes", map[string]any{"s": "line\nbreak\ttab \"q\" \\ / \b\f\r\x00\x1f\x7f", "k\u00e9y": "&<>", "emoji": "😀 ü", "ls": "a\u2028b\u2029c", "bad": "a\xc3\x28b\xff", "\xfekey": "x"}},
	{"escapes after eight plain bytes and more", map[string]any{"a long plain key\x01": "0123456789abcdef\n0123456789abcdef\"0123456789 \\ ü 0123456789abcdef\u2028 0123456789abcdef\xff 0123456789abcdef<&>0123456789"}},
	{"float falls back", map[string]any{"f": 1.5}},
	{"invalid number falls back", map[string]any{"n": json.Number("01")}},
}

func checkPropsJSON(t *testing.T, props map[string]any) {
	t.Helper()
	want, wantErr := marshalJSON(props)
	var keys []string
	got, ok := appendPropsJSON([]byte("prefix"), props, &keys)
	if len(keys) != 0 {
		t.Fatalf("scratch keys not released: %d left", len(keys))
	}
	if !ok {
		// Only what marshalJSON decides itself may fall back; the caller
		// then uses marshalJSON, so the row is the same either way.
		return
	}
	if wantErr != nil {
		t.Fatalf("encoded %q, marshalJSON fails: %v", got, wantErr)
	}
	if !bytes.HasPrefix(got, []byte("prefix")) || string(got[len("prefix"):]) != want {
		t.Fatalf("encoded\n%s\nwant\n%s", got, want)
	}
}

func TestAppendPropsJSONMatchesMarshal(t *testing.T) {
	for _, tc := range propsCases {
		t.Run(tc.name, func(t *testing.T) { checkPropsJSON(t, tc.props) })
	}
	var keys []string
	if _, ok := appendPropsJSON(nil, map[string]any{"f": 1.5}, &keys); ok {
		t.Error("a float64 must fall back to marshalJSON")
	}
	if _, ok := appendPropsJSON(nil, propsCases[2].props, &keys); !ok {
		t.Error("decoded properties must take the fast encoder")
	}
}

// FuzzAppendPropsJSON decodes arbitrary JSON as the worker does (UseNumber)
// and compares both encoders on it.
func FuzzAppendPropsJSON(f *testing.F) {
	f.Add([]byte(`{"a":{"b":[1,"\u00e9",{"c":null}]},"d":"\u2028\ud83d","e":-0.5e+10}`))
	f.Add([]byte(`{"s":"line\nbreak\u0000 \\ \"","k\u00e9":[true,false,null,[],{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var m map[string]any
		if dec.Decode(&m) != nil {
			// Raw strings, too: keys and values straight from the fuzzer.
			checkPropsJSON(t, map[string]any{string(data): string(data), "n": json.Number(data)})
			return
		}
		checkPropsJSON(t, m)
	})
}
