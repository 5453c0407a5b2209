package event

import (
	"fmt"
	"strconv"
	"testing"
	"unsafe"
)

func TestKnownProp(t *testing.T) {
	for id := 1; id < NumKnown; id++ {
		name := Known(id).Name()
		if got := LookupKnown(name); got != Known(id) {
			t.Fatalf("KnownProp(%q) = %d, want %d", name, got, id)
		}
	}
	for _, name := range []string{"", "$", "$o", "$OS", "os", "$os ", " $os", "$current_ur", "$current_urll",
		"$browser_versio", "mp_lib2", "ab_variant", "$initial_referring_domain_", "ip\x00", "\xffip"} {
		if got := LookupKnown(name); got != 0 {
			t.Fatalf("KnownProp(%q) = %d (%q), want 0", name, got, got.Name())
		}
	}
	// A name that differs from a known one in any one byte is not it,
	// wherever the byte is: in the words compared or between them.
	for id := 1; id < NumKnown; id++ {
		name := Known(id).Name()
		for i := range len(name) {
			b := []byte(name)
			b[i] ^= 0x01
			if got := LookupKnown(string(b)); got != 0 && got.Name() != string(b) {
				t.Fatalf("KnownProp(%q) = %d (%q)", b, got, got.Name())
			}
			if got := knownID(b); got != 0 && got.Name() != string(b) {
				t.Fatalf("knownID([]byte %q) = %d (%q)", b, got, got.Name())
			}
		}
		if got := knownID([]byte(name)); got != Known(id) {
			t.Fatalf("knownID([]byte %q) = %d, want %d", name, got, id)
		}
	}
	if Known(0).Name() != "" || Known(NumKnown).Name() != "" {
		t.Fatal("KnownPropName of an id out of range must be empty")
	}
}

// TestDecoderMarksKnownNames requires the Decoder to record the id of a
// known name however its key is written, and 0 for every other.
func TestDecoderMarksKnownNames(t *testing.T) {
	value := envelopeWith(`{"event":"E","properties":{"time":1,"$os":"Linux","\u0024browser":"Firefox","$OS":"x","mp_lib":"web","plan":"team","ip":"0"}}`)
	var ev Event
	if err := NewDecoder().Decode(value, &ev); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"$os": "$os", "$browser": "$browser", "$OS": "", "mp_lib": "mp_lib", "plan": "", "ip": "ip"}
	if ev.Properties.Len() != len(want) {
		t.Fatalf("%d props, want %d", ev.Properties.Len(), len(want))
	}
	for _, pr := range ev.Properties.All() {
		if got := pr.Known().Name(); got != want[pr.Name()] {
			t.Fatalf("%q: known as %q, want %q", pr.Name(), got, want[pr.Name()])
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

// TestMemoIntern: the Decoder's intern answers as the package's does,
// never with a view of the caller's bytes, for a value repeated or not,
// and for strings too long for the table.
func TestMemoIntern(t *testing.T) {
	var m memo
	buf := make([]byte, 600)
	for round := range 3 {
		for i, n := range []int{1, 2, 3, 7, 8, 9, 16, 17, 40, 512, 513, 600} {
			for j := range buf[:n] {
				buf[j] = byte('a' + (i+j)%26)
			}
			s := unsafe.String(&buf[0], n) // a view, as props point into the message
			want := string(buf[:n])
			col := Column(1 + round%2)
			got := m.intern(col, s)
			again := m.intern(col, s) // the value repeats
			buf[0] ^= 0xff            // the caller's bytes change; the strings must not
			if got != want || again != want {
				t.Fatalf("round %d: Intern of %d bytes = %.20q… then %.20q…, want %.20q…", round, n, got, again, want)
			}
			if n <= maxInternLen && got != Intern(want) {
				t.Fatalf("round %d: Intern of %d bytes differs from the package's", round, n)
			}
		}
	}
	if m.intern(ColumnOS, "") != "" {
		t.Fatal("an empty value is not interned as it is")
	}
}

// TestDecoderPredictsKeys sends, after a message, messages whose props
// start like it, differ from it in each way a key can (another name, a
// known name as the prefix of a longer one, the same name escaped, a name
// repeated, names swapped or shifted by one more, a shorter message near
// its end) to one Decoder: each must decode as Decode does and as it
// does on a Decoder of its own.
func TestDecoderPredictsKeys(t *testing.T) {
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
		reused := NewDecoder()
		checkDecoder(t, envelopeWith(`{"event":"E","properties":`+first+`}`), reused)
		checkDecoder(t, envelopeWith(`{"event":"E","properties":`+props+`}`), reused)
		checkDecoder(t, envelopeWith(`{"event":"E","properties":`+props+`}`), NewDecoder())
		var r, f Event
		reused = NewDecoder()
		reused.Decode(envelopeWith(`{"event":"E","properties":`+first+`}`), &r)
		errR := reused.Decode(envelopeWith(`{"event":"E","properties":`+props+`}`), &r)
		errF := NewDecoder().Decode(envelopeWith(`{"event":"E","properties":`+props+`}`), &f)
		if fmt.Sprint(errR) != fmt.Sprint(errF) {
			t.Fatalf("%s: error %v after the first message, %v alone", props, errR, errF)
		}
		if errR != nil {
			continue
		}
		if len(r.Properties.list) != len(f.Properties.list) {
			t.Fatalf("%s: %d props (error %v) after the first message, %d (error %v) alone", props, len(r.Properties.list), errR, len(f.Properties.list), errF)
		}
		for i, pr := range r.Properties.list {
			if g := f.Properties.list[i]; pr.name != g.name || pr.known != g.known || pr.flags != g.flags {
				t.Fatalf("%s: prop %d read as %q (known %d, flags %b) after the first message, %q (known %d, flags %b) alone",
					props, i, pr.name, pr.known, pr.flags, g.name, g.known, g.flags)
			}
		}
	}
}

// TestPredictedKeyComparesEveryByte changes each byte of each known name,
// in the place where the message before had that name: the key must
// then be read as the name it is, not as the one predicted.
func TestPredictedKeyComparesEveryByte(t *testing.T) {
	for id := knownInsertID + 1; int(id) < NumKnown; id++ { // the first three are taken out of the props
		name := Known(id).Name()
		first := envelopeWith(`{"event":"E","properties":{"time":1,"` + name + `":"v","x":1}}`)
		for i := 0; i < len(name); i++ {
			changed := []byte(name)
			changed[i] ^= 0x01
			if changed[i] == '"' || changed[i] == '\\' || changed[i] < ' ' {
				changed[i] = '#'
			}
			msg := envelopeWith(`{"event":"E","properties":{"time":1,"` + string(changed) + `":"v","x":1}}`)
			var reused, fresh Event
			d := NewDecoder()
			if err := d.Decode(first, &reused); err != nil {
				t.Fatal(err)
			}
			if err := d.Decode(msg, &reused); err != nil {
				t.Fatal(err)
			}
			if err := NewDecoder().Decode(msg, &fresh); err != nil {
				t.Fatal(err)
			}
			got, want := reused.Properties.list[1], fresh.Properties.list[1]
			if got.name != string(changed) || got.known != want.known {
				t.Fatalf("%q after %q: read as %q (known %d), want known %d", changed, name, got.name, got.known, want.known)
			}
		}
	}
}
