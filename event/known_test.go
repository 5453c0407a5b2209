package event

import (
	"fmt"
	"strconv"
	"testing"
	"unsafe"
)

func TestKnownProp(t *testing.T) {
	for id := 1; id < NumKnownProps; id++ {
		name := KnownPropName(uint8(id))
		if got := KnownProp(name); got != uint8(id) {
			t.Fatalf("KnownProp(%q) = %d, want %d", name, got, id)
		}
	}
	for _, name := range []string{"", "$", "$o", "$OS", "os", "$os ", " $os", "$current_ur", "$current_urll",
		"$browser_versio", "mp_lib2", "ab_variant", "$initial_referring_domain_", "ip\x00", "\xffip"} {
		if got := KnownProp(name); got != 0 {
			t.Fatalf("KnownProp(%q) = %d (%q), want 0", name, got, KnownPropName(got))
		}
	}
	// A name that differs from a known one in any one byte is not it,
	// wherever the byte is: in the words compared or between them.
	for id := 1; id < NumKnownProps; id++ {
		name := KnownPropName(uint8(id))
		for i := range len(name) {
			b := []byte(name)
			b[i] ^= 0x01
			if got := KnownProp(string(b)); got != 0 && KnownPropName(got) != string(b) {
				t.Fatalf("KnownProp(%q) = %d (%q)", b, got, KnownPropName(got))
			}
			if got := knownID(b); got != 0 && KnownPropName(got) != string(b) {
				t.Fatalf("knownID([]byte %q) = %d (%q)", b, got, KnownPropName(got))
			}
		}
		if got := knownID([]byte(name)); got != uint8(id) {
			t.Fatalf("knownID([]byte %q) = %d, want %d", name, got, id)
		}
	}
	if KnownPropName(0) != "" || KnownPropName(uint8(NumKnownProps)) != "" {
		t.Fatal("KnownPropName of an id out of range must be empty")
	}
}

// TestDecodeRawMarksKnownNames requires DecodeRaw to record the id of a
// known name however its key is written, and 0 for every other.
func TestDecodeRawMarksKnownNames(t *testing.T) {
	value := envelopeWith(`{"event":"E","properties":{"time":1,"$os":"Linux","\u0024browser":"Firefox","$OS":"x","mp_lib":"web","plan":"team","ip":"0"}}`)
	var ev Event
	if err := DecodeRaw(value, &ev); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"$os": "$os", "$browser": "$browser", "$OS": "", "mp_lib": "mp_lib", "plan": "", "ip": "ip"}
	if len(ev.Props) != len(want)+1 { // and time, dropped
		t.Fatalf("%d props, want %d", len(ev.Props), len(want)+1)
	}
	for _, pr := range ev.Props[1:] {
		if got := KnownPropName(pr.Known); got != want[pr.Key] {
			t.Fatalf("%q: known as %q, want %q", pr.Key, got, want[pr.Key])
		}
	}
}

// TestParseInt: the fast integer parse agrees with strconv.ParseInt, which
// json.Number.Int64 is, on every kind of number text.
func TestParseInt(t *testing.T) {
	for _, s := range []string{
		"0", "-0", "7", "-7", "1795376944995", "-1795376944995", "999999999999999999", "-999999999999999999",
		"1000000000000000000", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
		"-9223372036854775809", "1.5", "1e3", "-", "", "12a", "+1", "1_000", "0x10", "00012",
	} {
		want, err := strconv.ParseInt(s, 10, 64)
		got, ok := parseInt(s)
		if ok != (err == nil) || (ok && got != want) {
			t.Errorf("parseInt(%q) = %d, %v; strconv: %d, %v", s, got, ok, want, err)
		}
	}
}

// TestEventIntern: an Event's intern answers as the package's does, never
// with a view of the caller's bytes, for a field's value repeated or not,
// and for strings too long for the table.
func TestEventIntern(t *testing.T) {
	var ev Event
	if err := DecodeRaw([]byte(`{"v":1,"kind":1,"project":"p","endpoint":"/track","received_at":1,"event":{"event":"e","properties":{"time":1}}}`), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.memo == nil {
		t.Fatal("DecodeRaw left the event without its memo")
	}
	buf := make([]byte, 600)
	for round := range 3 {
		for i, n := range []int{1, 2, 3, 7, 8, 9, 16, 17, 40, 512, 513, 600} {
			for j := range buf[:n] {
				buf[j] = byte('a' + (i+j)%26)
			}
			s := unsafe.String(&buf[0], n) // a view, as props point into the message
			want := string(buf[:n])
			got := ev.InternField(1+round%2, s)
			again := ev.InternField(1+round%2, s) // the field's value repeats
			buf[0] ^= 0xff                        // the caller's bytes change; the strings must not
			if got != want || again != want {
				t.Fatalf("round %d: Intern of %d bytes = %.20q… then %.20q…, want %.20q…", round, n, got, again, want)
			}
			if n <= maxInternLen && got != Intern(want) {
				t.Fatalf("round %d: Intern of %d bytes differs from the package's", round, n)
			}
		}
	}
	if ev.InternField(1, "") != "" || ev.InternField(InternFields, "x") != "x" {
		t.Fatal("an empty value or a field out of range is not interned as it is")
	}
}

// TestDecodeRawPredictsKeys sends, after a message, messages whose props
// start like it, differ from it in each way a key can (another name, a
// known name as the prefix of a longer one, the same name escaped, a name
// repeated, names swapped or shifted by one more, a shorter message near
// its end) to one reused Event: each must decode as Decode does and as it
// does on an Event of its own.
func TestDecodeRawPredictsKeys(t *testing.T) {
	const first = `{"time":1,"$os":"Linux","$browser":"Firefox","plan":"team","mp_lib":"web"}`
	for _, props := range []string{
		first,
		`{"time":1,"$os":"Linux","$browser":"Firefox","plan":"team","mp_lib":"web"}`,
		`{"time":1,"$os_extra":"Linux","$browser":"Firefox","plan":"team","mp_lib":"web"}`,
		`{"time":1,"\u0024os":"Linux","$browser":"Firefox","plan":"team","mp_lib":"web"}`,
		`{"time":1,"$browser":"Linux","$os":"Firefox","mp_lib":"web","plan":"team"}`,
		`{"time":1,"$device":"Mac","$os":"Linux","$browser":"Firefox","plan":"team","mp_lib":"web"}`,
		`{"$os":"Linux","time":1,"$browser":"Firefox","mp_lib":"web"}`,
		`{"time":1,"$os":"Linux","$os":"Firefox"}`,
		`{"time":1,"$os" :"Linux", "$browser":"Firefox"}`,
		`{"time":1,"$o`,
		`{"time":1,"$os":"Linux","$browser":"Firefox","plan":"team","mp_lib":"web","$lib_version":"2.58.0"}`,
	} {
		var fresh, reused Event
		checkRaw(t, envelopeWith(`{"event":"E","properties":`+first+`}`), &reused)
		checkRaw(t, envelopeWith(`{"event":"E","properties":`+props+`}`), &reused)
		checkRaw(t, envelopeWith(`{"event":"E","properties":`+props+`}`), &fresh)
		// checkRaw leaves the props materialized: read them again.
		reused, fresh = Event{}, Event{}
		DecodeRaw(envelopeWith(`{"event":"E","properties":`+first+`}`), &reused)
		errR := DecodeRaw(envelopeWith(`{"event":"E","properties":`+props+`}`), &reused)
		errF := DecodeRaw(envelopeWith(`{"event":"E","properties":`+props+`}`), &fresh)
		if fmt.Sprint(errR) != fmt.Sprint(errF) || len(reused.Props) != len(fresh.Props) {
			t.Fatalf("%s: %d props (error %v) after the first message, %d (error %v) alone", props, len(reused.Props), errR, len(fresh.Props), errF)
		}
		for i, pr := range reused.Props {
			if f := fresh.Props[i]; pr.Key != f.Key || pr.Known != f.Known || pr.PlainKey != f.PlainKey {
				t.Fatalf("%s: prop %d read as %q (known %d, plain %v) after the first message, %q (known %d, plain %v) alone",
					props, i, pr.Key, pr.Known, pr.PlainKey, f.Key, f.Known, f.PlainKey)
			}
		}
	}
}

// TestPredictedKeyComparesEveryByte changes each byte of each known name,
// in the place where the message before had that name: the key must
// then be read as the name it is, not as the one predicted.
func TestPredictedKeyComparesEveryByte(t *testing.T) {
	for id := knownInsertID + 1; id < NumKnownProps; id++ { // the first three are taken out of the props
		name := KnownPropName(uint8(id))
		first := envelopeWith(`{"event":"E","properties":{"time":1,"` + name + `":"v","x":1}}`)
		for i := 0; i < len(name); i++ {
			changed := []byte(name)
			changed[i] ^= 0x01
			if changed[i] == '"' || changed[i] == '\\' || changed[i] < ' ' {
				changed[i] = '#'
			}
			msg := envelopeWith(`{"event":"E","properties":{"time":1,"` + string(changed) + `":"v","x":1}}`)
			var reused, fresh Event
			if err := DecodeRaw(first, &reused); err != nil {
				t.Fatal(err)
			}
			if err := DecodeRaw(msg, &reused); err != nil {
				t.Fatal(err)
			}
			if err := DecodeRaw(msg, &fresh); err != nil {
				t.Fatal(err)
			}
			got, want := reused.Props[1], fresh.Props[1]
			if got.Key != string(changed) || got.Known != want.Known {
				t.Fatalf("%q after %q: read as %q (known %d), want known %d", changed, name, got.Key, got.Known, want.Known)
			}
		}
	}
}
