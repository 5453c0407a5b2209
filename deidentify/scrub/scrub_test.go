package scrub

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func mustNew(t testing.TB, cfg Config) *Scrubber {
	t.Helper()
	sc, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return sc
}

type scrubCase struct {
	name string
	in   string
	want string
	f    Finding
}

// runCases checks each case, and that scrubbing the output again changes
// nothing (idempotence).
func runCases(t *testing.T, sc *Scrubber, cases []scrubCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, f := sc.String(tc.in)
			if got != tc.want || f != tc.f {
				t.Fatalf("String(%q) = %q, %v; want %q, %v", tc.in, got, f, tc.want, tc.f)
			}
			if again, f2 := sc.String(got); again != got || f2 != 0 {
				t.Fatalf("not idempotent: String(%q) = %q, %v", got, again, f2)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"zero value", Config{}, ""},
		{"default", DefaultConfig(), ""},
		{"subset", Config{Detectors: []string{"email", "url"}}, ""},
		{"unknown detector", Config{Detectors: []string{"email", "ssn"}}, "deidentify.detectors[1] must be one of"},
		{"empty allow entry", Config{URLQueryAllow: []string{"utm_source", ""}}, "deidentify.url_query_allow[1] must not be empty"},
		{"allow entry with =", Config{URLQueryAllow: []string{"a=b"}}, "deidentify.url_query_allow[0] must be a plain parameter name"},
		{"allow entry with space", Config{URLQueryAllow: []string{"a b"}}, "deidentify.url_query_allow[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if _, nerr := New(tc.cfg); (err == nil) != (nerr == nil) {
				t.Fatalf("Validate and New disagree: %v vs %v", err, nerr)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestFindingNames(t *testing.T) {
	for _, tc := range []struct {
		f    Finding
		want []string
	}{
		{0, nil},
		{FindingEmail, []string{"email"}},
		{FindingURL | FindingEmail | FindingIP, []string{"email", "ip", "url"}},
		{findingAll, []string{"email", "phone", "card", "iban", "national_id", "ip", "token", "url"}},
	} {
		t.Run(tc.f.String(), func(t *testing.T) {
			if got := tc.f.Names(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Names() = %v, want %v", got, tc.want)
			}
		})
	}
	for i, n := range detectorNames {
		if detectorBit(n) != 1<<i || placeholder(1<<i) != placeholders[i] {
			t.Errorf("detector %q is not bit %d", n, i)
		}
	}
}

func TestEmail(t *testing.T) {
	runCases(t, mustNew(t, Config{}), []scrubCase{
		{"plain", "alice@example.com", "[email]", FindingEmail},
		{"in text", "contact alice.smith+tag@mail.example.co.uk today", "contact [email] today", FindingEmail},
		{"angle brackets", "Alice <alice@example.com>", "Alice <[email]>", FindingEmail},
		{"mailto", "mailto:alice@example.com", "mailto:[email]", FindingEmail},
		{"sentence end", "write to bob@example.org.", "write to [email].", FindingEmail},
		{"url-encoded", "alice%40example.com", "[email]", FindingEmail},
		{"url-encoded lower hex", "q=alice%40example.com&x", "q=[email]&x", FindingEmail},
		{"idn", "josé@exämple.de", "[email]", FindingEmail},
		{"ip literal", "root@[203.0.113.7]", "[email]", FindingEmail},
		{"two", "a@x.io,b@y.io", "[email],[email]", FindingEmail},
		{"trailing digit label dropped", "alice@example.com.42", "[email].42", FindingEmail},
		{"no domain dot", "user@localhost", "user@localhost", 0},
		{"handle", "@alice", "@alice", 0},
		{"numeric tld", "a@1.2", "a@1.2", 0},
		{"empty local", "@example.com", "@example.com", 0},
	})
}

func TestPhone(t *testing.T) {
	runCases(t, mustNew(t, Config{}), []scrubCase{
		{"e164", "+14155552671", "[phone]", FindingPhone},
		{"nanp parens", "(415) 555-2671", "[phone]", FindingPhone},
		{"nanp dashes", "415-555-2671", "[phone]", FindingPhone},
		{"nanp dots", "415.555.2671", "[phone]", FindingPhone},
		{"nanp with 1", "1-415-555-2671", "[phone]", FindingPhone},
		{"uk international", "+44 20 7946 0958", "[phone]", FindingPhone},
		{"uk international trunk", "+44 (0)20 7946 0958", "[phone]", FindingPhone},
		{"uk national", "call 020 7946 0958 now", "call [phone] now", FindingPhone},
		{"fr national", "01 23 45 67 89", "[phone]", FindingPhone},
		{"de national parens", "(030) 1234567", "[phone]", FindingPhone},
		{"bare nanp", "4155552671", "[phone]", FindingPhone},
		{"bare nanp with 1", "14155552671", "[phone]", FindingPhone},
		{"in text", "tel: +1 415 555 2671.", "tel: [phone].", FindingPhone},
		{"json-ish", `{"phone":"+33612345678"}`, `{"phone":"[phone]"}`, FindingPhone},
	})
}

func TestCard(t *testing.T) {
	runCases(t, mustNew(t, Config{}), []scrubCase{
		{"visa spaced", "4111 1111 1111 1111", "[card]", FindingCard},
		{"visa compact", "4111111111111111", "[card]", FindingCard},
		{"visa dashed", "4111-1111-1111-1111", "[card]", FindingCard},
		{"visa 13", "4222222222222", "[card]", FindingCard},
		{"mastercard", "5555555555554444", "[card]", FindingCard},
		{"mastercard 2-series", "2223003122003222", "[card]", FindingCard},
		{"amex", "3782 822463 10005", "[card]", FindingCard},
		{"discover", "6011111111111117", "[card]", FindingCard},
		{"in text", "card=4111111111111111;", "card=[card];", FindingCard},
		{"two cards", "4111111111111111,5555555555554444", "[card],[card]", FindingCard},
		{"group runs on", "4111 1111 1111 1111 2024", "[card] 2024", FindingCard},
		{"luhn fails", "4111111111111112", "4111111111111112", 0},
		{"too long", "41111111111111111111111", "41111111111111111111111", 0},
		{"letters touch", "x4111111111111111", "x4111111111111111", 0},
		{"decimal fraction", "0.4111111111111111", "0.4111111111111111", 0},
	})
}

func TestIBAN(t *testing.T) {
	runCases(t, mustNew(t, Config{}), []scrubCase{
		{"gb compact", "GB82WEST12345698765432", "[iban]", FindingIBAN},
		{"gb printed", "GB82 WEST 1234 5698 7654 32", "[iban]", FindingIBAN},
		{"de", "iban: DE89370400440532013000.", "iban: [iban].", FindingIBAN},
		{"no (shortest)", "NO9386011117947", "[iban]", FindingIBAN},
		{"checksum fails", "GB82WEST12345698765433", "GB82WEST12345698765433", 0},
		{"wrong length", "GB82WEST1234569876543", "GB82WEST1234569876543", 0},
		{"unknown country", "QQ82WEST12345698765432", "QQ82WEST12345698765432", 0},
	})
}

func TestNationalID(t *testing.T) {
	runCases(t, mustNew(t, Config{}), []scrubCase{
		{"ssn", "123-45-6789", "[national_id]", FindingNationalID},
		{"ssn spaced", "ssn 123 45 6789", "ssn [national_id]", FindingNationalID},
		{"ssn prefixed", "SSN-123-45-6789", "SSN-[national_id]", FindingNationalID},
		{"ssn area 000", "000-45-6789", "000-45-6789", 0},
		{"ssn area 666", "666-45-6789", "666-45-6789", 0},
		{"ssn area 9xx", "912-45-6789", "912-45-6789", 0},
		{"ssn group 00", "123-00-6789", "123-00-6789", 0},
		{"ssn continues", "123-45-6789-1", "123-45-6789-1", 0},
		{"nino", "AB123456C", "[national_id]", FindingNationalID},
		{"nino spaced", "NI: AB 12 34 56 C", "NI: [national_id]", FindingNationalID},
		{"nino bad prefix", "GB123456C", "GB123456C", 0},
		{"nino bad letter", "QQ123456C", "QQ123456C", 0},
		{"nino bad suffix", "AB123456E", "AB123456E", 0},
		{"sin", "130 692 544", "[national_id]", FindingNationalID},
		{"sin dashed", "130-692-544", "[national_id]", FindingNationalID},
		{"sin luhn fails", "130-692-545", "130-692-545", 0},
	})
}

func TestIP(t *testing.T) {
	runCases(t, mustNew(t, Config{}), []scrubCase{
		{"v4", "203.0.113.7", "[ip]", FindingIP},
		{"v4 with port", "203.0.113.7:8080", "[ip]:8080", FindingIP},
		{"v4 in text", "from 198.51.100.23, again", "from [ip], again", FindingIP},
		{"v6", "2001:db8::7", "[ip]", FindingIP},
		{"v6 full", "2001:0db8:0000:0000:0000:ff00:0042:8329", "[ip]", FindingIP},
		{"v6 loopback", "::1", "[ip]", FindingIP},
		{"v6 mapped", "::ffff:203.0.113.7", "[ip]", FindingIP},
		{"v6 bracketed", "[2001:db8::7]:443", "[[ip]]:443", FindingIP},
		{"v6 sentence", "addr 2001:db8::7.", "addr [ip].", FindingIP},
		{"v4 octet too big", "203.0.113.256", "203.0.113.256", 0},
		{"v4 leading zero", "203.0.113.07", "203.0.113.07", 0},
		{"five parts", "1.2.3.4.5", "1.2.3.4.5", 0},
		{"cpp scope", "std::vector", "std::vector", 0},
		{"unspecified", "a :: b", "a :: b", 0},
		{"mac address", "00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e", 0},
	})
}

func TestToken(t *testing.T) {
	runCases(t, mustNew(t, Config{}), []scrubCase{
		{"jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123", "[token]", FindingToken},
		{"jwt in header", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123", "Authorization: [token]", FindingToken},
		{"unsigned jwt", "t=eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "t=[token]", FindingToken},
		{"base64 json blob", "data=eyJldmVudCI6InBhZ2V2aWV3In0=", "data=[token]", FindingToken},
		{"bearer opaque", "Bearer 4f9a1c2e8b7d6a5f3e2c1b0a", "[token]", FindingToken},
		{"stripe", "key sk_live_51HxYzAbCdEf0123456789 used", "key [token] used", FindingToken},
		{"openai", "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12", "[token]", FindingToken},
		{"github", "ghp_0123456789abcdefABCDEF0123456789abcd", "[token]", FindingToken},
		{"aws", "AKIAIOSFODNN7EXAMPLE", "[token]", FindingToken},
		{"bearer prose", "Bearer bonds", "Bearer bonds", 0},
		{"short sk", "sk-learn", "sk-learn", 0},
		{"eyJ short", "eyJhbGci", "eyJhbGci", 0},
	})
}

// TestFalsePositives lists values analytics is full of. None may change.
func TestFalsePositives(t *testing.T) {
	sc := mustNew(t, Config{})
	for _, in := range []string{
		"19.99", "1299.00", "€1.299,00", "-42.5",
		"2024-05-01", "2024-05-01T12:30:00Z", "2024-05-01T12:30:00.123+02:00", "01/05/2024", "01.05.2024",
		"12:30:00", "12:30", "T+05:30",
		"1.2.3", "v1.2.3", "10.0.19041.1", "2.47.0", "1.2.3-beta.4",
		"0", "7", "42", "123456", "999999",
		"123e4567-e89b-12d3-a456-426614174000", "12345678-1234-1234-1234-123456789012",
		"d41d8cd98f00b204e9800998ecf8427e", "5f3a9c0b1234567890123456",
		"18c5b1f2e3d4a5-0b1c2d3e4f5a6b-26021051-1fa400-18c5b1f2e3d4a5",
		"1700000000000", "1700000000", "1700000000.123", "1700000000123456", "1700000000123456789",
		"$device:18c5b1f2e3d4a5-0b1c2d3e4f5a6b-26021051-1fa400-18c5b1f2e3d4a5",
		"1920x1080", "Mac OS X", "Chrome", "Sign Up Clicked", "mp_page_view", "$direct",
		"www.google.com", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
		"order #1234567", "SKU AB12-3456", "ISBN 978-3-16-148410-0",
		"std::string", "Foo::Bar::baz", "Chrome/120.0.0.0", "Mozilla/5.0 (Linux; Android 10; K) Chrome/120.0.0.0 Mobile", "note: done", "a:b:c",
		"", " ", "[email]", "[phone] [card] [iban] [national_id] [ip] [token]", "[email]#2",
	} {
		t.Run(in, func(t *testing.T) {
			if got, f := sc.String(in); got != in || f != 0 {
				t.Fatalf("String(%q) = %q, %v; want it unchanged", in, got, f)
			}
		})
	}
}

func TestURL(t *testing.T) {
	runCases(t, mustNew(t, Config{}), []scrubCase{
		{"clean", "https://example.com/pricing", "https://example.com/pricing", 0},
		{"clean with allowed query", "https://example.com/?utm_source=google&utm_medium=cpc", "https://example.com/?utm_source=google&utm_medium=cpc", 0},
		{"drop params", "https://example.com/p?utm_source=news&gclid=abc&q=shoes", "https://example.com/p?utm_source=news", FindingURL},
		{"drop all params", "https://example.com/p?q=shoes", "https://example.com/p", FindingURL},
		{"drop fragment", "https://example.com/app#/users/42", "https://example.com/app", FindingURL},
		{"drop userinfo", "https://user:secret@example.com/", "https://example.com/", FindingURL},
		{"email in path", "https://example.com/u/alice@example.com/edit", "https://example.com/u/[email]/edit", FindingEmail},
		{"encoded email in path", "https://example.com/u/alice%40example.com", "https://example.com/u/[email]", FindingEmail},
		{"encoded email param dropped", "https://example.com/?e=alice%40example.com", "https://example.com/", FindingURL},
		{"email in allowed value", "https://example.com/?utm_source=alice%40example.com", "https://example.com/?utm_source=[email]", FindingEmail},
		{"phone in encoded value", "https://example.com/?utm_term=call+%2B14155552671", "https://example.com/?utm_term=call+[phone]", FindingPhone},
		{"ip host", "http://203.0.113.7:8080/admin", "http://[ip]:8080/admin", FindingIP},
		{"ipv6 host", "http://[2001:db8::7]/", "http://[ip]/", FindingIP},
		{"in sentence", "Visit https://example.com/x?token=abc. Thanks", "Visit https://example.com/x. Thanks", FindingURL},
		{"in parens", "(see https://example.com/a?b=c)", "(see https://example.com/a)", FindingURL},
		{"wiki parens kept", "https://en.wikipedia.org/wiki/Foo_(bar)", "https://en.wikipedia.org/wiki/Foo_(bar)", 0},
		{"upper scheme", "HTTPS://EXAMPLE.COM/?A=1", "HTTPS://EXAMPLE.COM/", FindingURL},
		{"other scheme", "android-app://com.example/?ref=x", "android-app://com.example/", FindingURL},
		{"two urls", "https://a.example/?x=1 https://b.example/#y", "https://a.example/ https://b.example/", FindingURL},
		{"empty pair", "https://example.com/?&utm_source=a", "https://example.com/?utm_source=a", FindingURL},
		{"bare question mark is punctuation", "https://example.com/?", "https://example.com/?", 0},
		{"redirect in path", "https://example.com/r/https%3A%2F%2Fb.example%2F%3Fq%3D1", "https://example.com/r/https:%2F%2Fb.example%2F", FindingURL},
		{"path and params", "https://example.com/reset/alice@example.com?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc#x",
			"https://example.com/reset/[email]", FindingEmail | FindingURL},
		{"after a replacement", "4111111111111111.https://x.example/?q=secret", "[card].https://x.example/", FindingCard | FindingURL},
		{"broken escape", "https://example.com/alice@example.com%zz", "https://example.com/[email]%zz", FindingEmail},
	})
}

func TestURLAllowList(t *testing.T) {
	t.Run("custom", func(t *testing.T) {
		runCases(t, mustNew(t, Config{URLQueryAllow: []string{"page", "utm_source"}}), []scrubCase{
			{"keeps page", "https://example.com/?page=2&utm_medium=x&utm_source=y", "https://example.com/?page=2&utm_source=y", FindingURL},
		})
	})
	t.Run("none", func(t *testing.T) {
		runCases(t, mustNew(t, Config{URLQueryAllow: []string{}}), []scrubCase{
			{"drops utm", "https://example.com/?utm_source=y", "https://example.com/", FindingURL},
		})
	})
}

func TestDetectorsSubset(t *testing.T) {
	t.Run("email only", func(t *testing.T) {
		runCases(t, mustNew(t, Config{Detectors: []string{"email"}}), []scrubCase{
			{"mixed", "alice@example.com +14155552671 203.0.113.7", "[email] +14155552671 203.0.113.7", FindingEmail},
			{"url untouched", "https://example.com/?q=1", "https://example.com/?q=1", 0},
			{"email in url", "https://example.com/?e=alice%40example.com", "https://example.com/?e=[email]", FindingEmail},
		})
	})
	t.Run("no url", func(t *testing.T) {
		runCases(t, mustNew(t, Config{Detectors: []string{"email", "phone", "card", "iban", "national_id", "ip", "token"}}), []scrubCase{
			{"query kept", "https://example.com/?q=shoes#top", "https://example.com/?q=shoes#top", 0},
			{"ip host", "http://203.0.113.7/", "http://[ip]/", FindingIP},
		})
	})
}

func decodeJSON(t *testing.T, s string) any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return v
}

func TestValue(t *testing.T) {
	sc := mustNew(t, Config{})
	for _, tc := range []struct {
		name string
		in   string
		want string
		f    Finding
	}{
		{"scalars unchanged", `[1, 4111111111111111, 1.5, true, null, "x"]`, `[1, 4111111111111111, 1.5, true, null, "x"]`, 0},
		{"string", `"mail alice@example.com"`, `"mail [email]"`, FindingEmail},
		{"nested", `{"a":{"b":["x", {"c":"+14155552671"}]}, "n": 3}`, `{"a":{"b":["x", {"c":"[phone]"}]}, "n": 3}`, FindingPhone},
		{"mixpanel props", `{"$current_url":"https://shop.example/cart?coupon=X&utm_source=mail#pay","$referrer":"https://mail.example/u/alice@example.com","$browser":"Chrome","$screen_width":1920}`,
			`{"$current_url":"https://shop.example/cart?utm_source=mail","$referrer":"https://mail.example/u/[email]","$browser":"Chrome","$screen_width":1920}`, FindingURL | FindingEmail},
		{"key scrubbed", `{"alice@example.com": 1, "ok": 2}`, `{"[email]": 1, "ok": 2}`, FindingEmail},
		{"key collides with existing", `{"alice@example.com": 1, "[email]": 2}`, `{"[email]": 2, "[email]#2": 1}`, FindingEmail},
		{"keys collide with each other", `{"b@example.com": "b", "a@example.com": "a", "c@example.com": "c"}`,
			`{"[email]": "a", "[email]#2": "b", "[email]#3": "c"}`, FindingEmail},
		{"key and value", `{"bob@example.com": "+14155552671"}`, `{"[email]": "[phone]"}`, FindingEmail | FindingPhone},
		{"suffix taken", `{"a@example.com": 1, "b@example.com": 2, "[email]#2": 3}`, `{"[email]": 1, "[email]#2": 3, "[email]#3": 2}`, FindingEmail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, f := sc.Value(decodeJSON(t, tc.in))
			want := decodeJSON(t, tc.want)
			if !reflect.DeepEqual(got, want) || f != tc.f {
				gj, _ := json.Marshal(got)
				t.Fatalf("Value = %s, %v; want %s, %v", gj, f, tc.want, tc.f)
			}
			again, f2 := sc.Value(got)
			if !reflect.DeepEqual(again, want) || f2 != 0 {
				t.Fatalf("not idempotent: %v, %v", again, f2)
			}
		})
	}
	t.Run("float64 and foreign types pass", func(t *testing.T) {
		for _, v := range []any{float64(4111111111111111), int64(5), json.Number("4111111111111111"), false, nil, map[string]string{"a": "alice@example.com"}} {
			if got, f := sc.Value(v); !reflect.DeepEqual(got, v) || f != 0 {
				t.Fatalf("Value(%#v) = %#v, %v", v, got, f)
			}
		}
	})
	t.Run("mutates in place", func(t *testing.T) {
		m := map[string]any{"e": "alice@example.com"}
		out, _ := sc.Value(m)
		if m["e"] != "[email]" || reflect.ValueOf(out).Pointer() != reflect.ValueOf(m).Pointer() {
			t.Fatalf("map not scrubbed in place: %v", m)
		}
	})
}

// TestNoAlloc checks the fast path: strings with nothing to replace, clean
// maps and clean URLs cost no allocation.
func TestNoAlloc(t *testing.T) {
	sc := mustNew(t, Config{})
	m := map[string]any{
		"$browser": "Chrome", "$os": "Mac OS X", "$screen_width": json.Number("1920"), "price": "19.99",
		"date": "2024-05-01", "time": "12:30:00", "version": "1.2.3", "$insert_id": "123e4567-e89b-12d3-a456-426614174000",
		"ts": "1700000000000", "$current_url": "https://example.com/pricing?utm_source=google",
	}
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"short", "Sign Up Clicked"},
		{"version", "1.2.3"},
		{"timestamp", "1700000000000"},
		{"time", "12:30:00"},
		{"uuid", "123e4567-e89b-12d3-a456-426614174000"},
		{"clean url", "https://example.com/pricing?utm_source=google"},
		{"map", m},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, func() { sc.Value(tc.v) }); n != 0 {
				t.Fatalf("%v allocations, want 0", n)
			}
		})
	}
}

// TestIsIPv6 cross-checks the hand-written parser against net/netip.
func TestIsIPv6(t *testing.T) {
	for _, s := range []string{
		"::1", "::", "1::", "2001:db8::7", "2001:db8:0:0:0:0:2:1", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::",
		"::1:2:3:4:5:6:7", "1::2::3", ":1", "1:", "12345::", "::ffff:203.0.113.7", "::ffff:203.0.113.256", "1:2:3:4:5:6:1.2.3.4",
		"1:2:3:4:5:6:7:1.2.3.4", "::1.2.3.4", "::01.2.3.4", "g::1", "12:30:00", "fe80::", "0:0::0", "1.2.3.4",
	} {
		t.Run(s, func(t *testing.T) {
			a, err := netip.ParseAddr(s)
			want := err == nil && a.Is6() && a.Zone() == "" && !a.IsUnspecified()
			if got := isIPv6(s); got != want {
				t.Fatalf("isIPv6(%q) = %v, netip says %v", s, got, want)
			}
		})
	}
}

// TestCleanURLCache checks the cache of clean URLs: a URL with personal
// data is rewritten every time and never stored (its clean output is), a
// clean one is stored from its second sighting on, and what the cache
// holds is only ever clean URLs.
func TestCleanURLCache(t *testing.T) {
	sc := mustNew(t, DefaultConfig())
	for _, tc := range []struct {
		url, want string
	}{
		{"https://www.bing.com/", "https://www.bing.com/"},
		{"https://shop.example.com/blog/how-to-choose-running-shoes", "https://shop.example.com/blog/how-to-choose-running-shoes"},
		{"https://shop.example.com/?utm_source=news", "https://shop.example.com/?utm_source=news"},
		{"https://shop.example.com/cart?email=alice%40example.com", "https://shop.example.com/cart"},
		{"https://shop.example.com/u/alice@example.com", "https://shop.example.com/u/[email]"},
		{"https://shop.example.com/#token", "https://shop.example.com/"},
		{"https://user:pw@shop.example.com/", "https://shop.example.com/"},
		{"https://203.0.113.7/", "https://[ip]/"},
		{"https://shop.example.com/?utm_source=alice%40example.com", "https://shop.example.com/?utm_source=[email]"},
		{"http://a.example/p", "http://a.example/p"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			// A scrubber of its own: the URLs of two cases could share a
			// slot of the cache, and then take turns in it.
			sc := mustNew(t, DefaultConfig())
			for i := range 4 {
				got, f := sc.String(tc.url)
				if got != tc.want || (f == 0) != (got == tc.url) {
					t.Fatalf("sighting %d: String = %q, %v, want %q", i+1, got, f, tc.want)
				}
				_, cached := sc.urls.lookup(tc.url)
				if want := tc.want == tc.url && i >= 1; cached != want {
					t.Fatalf("sighting %d: cached %v, want %v", i+1, cached, want)
				}
				// A rewritten URL's output, clean, enters in its place, so
				// that the next rewrite need not scan it again.
				if tc.want != tc.url && i >= 1 {
					if _, outCached := sc.urls.lookup(tc.want); !outCached {
						t.Fatalf("sighting %d: output not cached", i+1)
					}
				}
			}
		})
	}
	// Fill the cache well past its size with clean and rewritten URLs.
	for i := range 8 * cleanURLSlots {
		u := "https://a.example/p" + strings.Repeat("x", i%7) + "/" + strconv.Itoa(i%3000)
		if i%3 == 0 {
			u += "?q=" + strconv.Itoa(i)
		}
		sc.String(u)
		sc.String(u) // a second sighting: a clean URL enters
	}
	held := 0
	fresh := mustNew(t, DefaultConfig())
	for i := range sc.urls.slots {
		u := sc.urls.slots[i].url.Load()
		if u == nil {
			continue
		}
		held++
		if out, f := fresh.scrub(*u); out != *u || f != 0 {
			t.Fatalf("the cache holds %q, which String makes %q", *u, out)
		}
	}
	if held < cleanURLSlots/4 {
		t.Fatalf("the cache holds %d URLs, want at least %d", held, cleanURLSlots/4)
	}
}

// lowerWord, the prefilter's fast path, against its definition, at every
// length around its eight-byte steps and with each byte class at each
// place.
func TestLowerWord(t *testing.T) {
	naive := func(s string) bool {
		if s == "" {
			return false
		}
		for i := 0; i < len(s); i++ {
			if s[i] < 'a' || s[i] > 'z' {
				return false
			}
		}
		return true
	}
	for n := 0; n <= 17; n++ {
		base := []byte(strings.Repeat("abcxyzmq", 3)[:n])
		if got := lowerWord(string(base)); got != (n > 0) {
			t.Errorf("lowerWord(%q) = %v", base, got)
		}
		for i := 0; i < n; i++ {
			for _, c := range []byte{'`', '{', 'A', 'Z', '@', '0', '_', '-', ' ', 0, 0x7f, 0x80, 0xc3, 0xff} {
				b := append([]byte(nil), base...)
				b[i] = c
				if got, want := lowerWord(string(b)), naive(string(b)); got != want {
					t.Errorf("lowerWord(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
	// The fast path keeps the one trigger a lower-case word can hold.
	sc := mustNew(t, Config{})
	if !sc.mayContain("bearer") || !sc.mayContain("bearerabcdefghijklmnop") || sc.mayContain("exposures") {
		t.Error("mayContain's lower-case fast path")
	}
}
