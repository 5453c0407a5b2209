package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// testKey returns a deterministic 32-byte key distinct per seed.
func testKey(seed byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func mustKeyring(t testing.TB, keys map[uint32][]byte) *Keyring {
	t.Helper()
	kr, err := NewKeyring(keys)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return kr
}

func daily(t testing.TB, kr *Keyring) *Keyring {
	t.Helper()
	d, err := kr.WithConfig(Config{Rotate: RotateDaily})
	if err != nil {
		t.Fatalf("WithConfig: %v", err)
	}
	return d
}

// reference computes a pseudonym the slow, obvious way.
func reference(key []byte, project, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(project + "\x00" + id))
	return hex.EncodeToString(m.Sum(nil))[:Size]
}

func referenceDay(key []byte, date, project, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("veil-day:" + date))
	return reference(m.Sum(nil), project, id)
}

func isPseudonym(s string) bool {
	if len(s) != Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func TestPseudonymize(t *testing.T) {
	kr := mustKeyring(t, map[uint32][]byte{1: testKey(1)})
	for _, tc := range []struct{ project, id string }{
		{"p1", "user-42"},
		{"p1", "alice@example.com"},
		{"", "x"},
		{"p1", strings.Repeat("long", 1000)},
		{"p1", "\x00\xff"},
	} {
		t.Run(tc.project+"/"+tc.id[:min(len(tc.id), 16)], func(t *testing.T) {
			got, epoch := kr.Pseudonymize(tc.project, tc.id)
			if want := reference(testKey(1), tc.project, tc.id); got != want || epoch != 1 {
				t.Fatalf("Pseudonymize = %q, %d; want %q, 1", got, epoch, want)
			}
			if again, _ := kr.Pseudonymize(tc.project, tc.id); again != got {
				t.Fatalf("not deterministic: %q then %q", got, again)
			}
			if !isPseudonym(got) {
				t.Fatalf("%q is not 32 lower-case hex characters", got)
			}
		})
	}
	t.Run("empty id", func(t *testing.T) {
		if got, epoch := kr.Pseudonymize("p1", ""); got != "" || epoch != 0 {
			t.Fatalf("Pseudonymize of empty id = %q, %d", got, epoch)
		}
		if got := kr.All("p1", ""); got != nil {
			t.Fatalf("All of empty id = %v", got)
		}
	})
}

func TestDomainSeparation(t *testing.T) {
	kr := mustKeyring(t, map[uint32][]byte{1: testKey(1)})
	other := mustKeyring(t, map[uint32][]byte{1: testKey(2)})
	p := func(kr *Keyring, project, id string) string { v, _ := kr.Pseudonymize(project, id); return v }
	for _, tc := range []struct {
		name string
		a, b string
	}{
		{"project", p(kr, "p1", "u"), p(kr, "p2", "u")},
		{"boundary", p(kr, "ab", "c"), p(kr, "a", "bc")},
		{"id", p(kr, "p1", "u1"), p(kr, "p1", "u2")},
		{"key", p(kr, "p1", "u"), p(other, "p1", "u")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.a == tc.b {
				t.Fatalf("same pseudonym %q for different inputs", tc.a)
			}
		})
	}
}

func TestEpochs(t *testing.T) {
	old := mustKeyring(t, map[uint32][]byte{1: testKey(1)})
	rotated := mustKeyring(t, map[uint32][]byte{1: testKey(1), 2: testKey(2)})
	p1, e1 := old.Pseudonymize("p", "u")
	p2, e2 := rotated.Pseudonymize("p", "u")
	if e1 != 1 || e2 != 2 || p1 == p2 {
		t.Fatalf("after adding epoch 2: %q/%d then %q/%d", p1, e1, p2, e2)
	}
	all := rotated.All("p", "u")
	want := []Pseudonym{{Epoch: 2, Value: p2}, {Epoch: 1, Value: p1}}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("All = %v, want %v", all, want)
	}
	if got := rotated.Epochs(); fmt.Sprint(got) != "[2 1]" || rotated.Epoch() != 2 {
		t.Fatalf("Epochs = %v, Epoch = %d", got, rotated.Epoch())
	}
}

func TestDailyRotation(t *testing.T) {
	kr := daily(t, mustKeyring(t, map[uint32][]byte{1: testKey(1), 3: testKey(3)}))
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	morning, _ := kr.PseudonymizeAt("p", "u", at("2024-05-01T00:00:00Z"))
	evening, epoch := kr.PseudonymizeAt("p", "u", at("2024-05-01T23:59:59Z"))
	// 2024-05-02 01:00 in UTC+14 is still 2024-05-01 in UTC.
	kiribati, _ := kr.PseudonymizeAt("p", "u", at("2024-05-02T01:00:00+14:00"))
	next, _ := kr.PseudonymizeAt("p", "u", at("2024-05-02T00:00:00Z"))
	before1970, _ := kr.PseudonymizeAt("p", "u", at("1969-12-31T23:00:00Z"))
	for _, tc := range []struct {
		name      string
		got, want string
	}{
		{"reference", morning, referenceDay(testKey(3), "2024-05-01", "p", "u")},
		{"same day", evening, morning},
		{"utc date", kiribati, morning},
		{"next day", next, referenceDay(testKey(3), "2024-05-02", "p", "u")},
		{"before 1970", before1970, referenceDay(testKey(3), "1969-12-31", "p", "u")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	if epoch != 3 || next == morning {
		t.Fatalf("epoch %d; next day %q vs %q", epoch, next, morning)
	}
	stable, _ := kr.Pseudonymize("p", "u")
	if stable == morning || stable != reference(testKey(3), "p", "u") {
		t.Fatalf("Pseudonymize on a daily keyring = %q, want the non-rotating %q", stable, reference(testKey(3), "p", "u"))
	}
	t.Run("none ignores time", func(t *testing.T) {
		none := mustKeyring(t, map[uint32][]byte{1: testKey(1)})
		a, _ := none.PseudonymizeAt("p", "u", at("2024-05-01T00:00:00Z"))
		b, _ := none.PseudonymizeAt("p", "u", at("2030-01-01T00:00:00Z"))
		if c, _ := none.Pseudonymize("p", "u"); a != b || a != c {
			t.Fatalf("non-rotating PseudonymizeAt varies: %q %q %q", a, b, c)
		}
	})
	t.Run("cache churn", func(t *testing.T) {
		// More days than the cache holds, twice: values must not change.
		base := at("2020-01-01T12:00:00Z")
		first := make([]string, 2*maxCachedDays)
		for round := 0; round < 2; round++ {
			for d := range first {
				v, _ := kr.PseudonymizeAt("p", "u", base.AddDate(0, 0, d))
				if round == 0 {
					first[d] = v
				} else if v != first[d] {
					t.Fatalf("day %d: %q then %q", d, first[d], v)
				}
			}
		}
	})
}

func TestAllBetween(t *testing.T) {
	kr := daily(t, mustKeyring(t, map[uint32][]byte{1: testKey(1), 2: testKey(2)}))
	from := time.Date(2024, 2, 28, 10, 0, 0, 0, time.UTC)
	to := time.Date(2024, 3, 1, 1, 0, 0, 0, time.UTC) // 2024 is a leap year: 3 days
	ps, err := kr.AllBetween("p", "u", from, to)
	if err != nil {
		t.Fatal(err)
	}
	var want []Pseudonym
	for _, date := range []string{"2024-02-28", "2024-02-29", "2024-03-01"} {
		want = append(want, Pseudonym{2, referenceDay(testKey(2), date, "p", "u")}, Pseudonym{1, referenceDay(testKey(1), date, "p", "u")})
	}
	if fmt.Sprint(ps) != fmt.Sprint(want) {
		t.Fatalf("AllBetween = %v\nwant %v", ps, want)
	}
	cur, _ := kr.PseudonymizeAt("p", "u", from)
	if ps[0].Value != cur {
		t.Fatalf("AllBetween does not contain PseudonymizeAt's value")
	}
	for _, tc := range []struct {
		name     string
		from, to time.Time
	}{
		{"reversed", to, from},
		{"too long", from, from.AddDate(11, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kr.AllBetween("p", "u", tc.from, tc.to); err == nil {
				t.Fatal("no error")
			}
		})
	}
	t.Run("non-rotating is All", func(t *testing.T) {
		none := mustKeyring(t, map[uint32][]byte{1: testKey(1)})
		ps, err := none.AllBetween("p", "u", from, to)
		if err != nil || fmt.Sprint(ps) != fmt.Sprint(none.All("p", "u")) {
			t.Fatalf("AllBetween = %v, %v", ps, err)
		}
	})
}

func TestConfigAndKeyringErrors(t *testing.T) {
	kr := mustKeyring(t, map[uint32][]byte{1: testKey(1)})
	if _, err := kr.WithConfig(Config{Rotate: "hourly"}); err == nil || !strings.Contains(err.Error(), "deidentify.pseudonym_rotate") {
		t.Fatalf("WithConfig(hourly) = %v", err)
	}
	for _, tc := range []struct {
		name string
		keys map[uint32][]byte
	}{
		{"none", nil},
		{"epoch 0", map[uint32][]byte{0: testKey(1)}},
		{"short key", map[uint32][]byte{1: testKey(1)[:31]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewKeyring(tc.keys); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func keyLine(epoch int, key []byte, extra string) string {
	return fmt.Sprintf("%d:%s%s", epoch, base64.StdEncoding.EncodeToString(key), extra)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKeyring(t *testing.T) {
	content := "# Veil keys\n\n" + keyLine(1, testKey(1), "") + "\r\n  " +
		keyLine(2, testKey(2), ":2024-05-01T00:00:00Z") + "  \n# trailing comment\n"
	check := func(t *testing.T, kr *Keyring) {
		t.Helper()
		if kr.Epoch() != 2 || fmt.Sprint(kr.Epochs()) != "[2 1]" {
			t.Fatalf("epochs %v", kr.Epochs())
		}
		if got, _ := kr.Pseudonymize("p", "u"); got != reference(testKey(2), "p", "u") {
			t.Fatalf("wrong current key")
		}
		created, ok := kr.Created()
		if !ok || !created.Equal(time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("Created = %v, %v", created, ok)
		}
		if age, ok := kr.KeyAge(created.Add(time.Hour)); !ok || age != time.Hour {
			t.Fatalf("KeyAge = %v, %v", age, ok)
		}
	}
	t.Run("file", func(t *testing.T) {
		kr, err := LoadKeyring(Source{File: writeFile(t, content)})
		if err != nil {
			t.Fatal(err)
		}
		check(t, kr)
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv("VEIL_TEST_PSEUDONYM_KEYS", content)
		kr, err := LoadKeyring(Source{Env: "VEIL_TEST_PSEUDONYM_KEYS"})
		if err != nil {
			t.Fatal(err)
		}
		check(t, kr)
	})
	t.Run("unpadded base64, no creation time", func(t *testing.T) {
		line := "7:" + base64.RawStdEncoding.EncodeToString(testKey(7)[:33-1]) // 32 bytes, no padding needed
		kr, err := LoadKeyring(Source{File: writeFile(t, line+"\n")})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := kr.KeyAge(time.Now()); ok {
			t.Fatal("KeyAge known without a creation time")
		}
	})
	t.Run("env unset", func(t *testing.T) {
		_, err := LoadKeyring(Source{Env: "VEIL_TEST_PSEUDONYM_UNSET"})
		if err == nil || !strings.Contains(err.Error(), "deidentify.pseudonym_key_env") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadKeyring(Source{File: filepath.Join(t.TempDir(), "nope")})
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "deidentify.pseudonym_key_file") {
			t.Fatalf("err = %v", err)
		}
	})
	for _, tc := range []struct {
		name string
		src  Source
	}{
		{"no source", Source{}},
		{"both sources", Source{File: "a", Env: "B"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LoadKeyring(tc.src); err == nil || !strings.Contains(err.Error(), "deidentify.pseudonym_key_") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestLoadKeyringMalformed(t *testing.T) {
	good := keyLine(1, testKey(1), "")
	secret := base64.StdEncoding.EncodeToString(testKey(9))
	for _, tc := range []struct {
		name    string
		content string
		want    string
	}{
		{"empty", "# nothing\n\n", "no keys"},
		{"no colon", good + "\n" + secret + "\n", "line 2: want EPOCH:BASE64KEY"},
		{"epoch zero", "0:" + secret, "line 1: the epoch must be"},
		{"epoch text", "one:" + secret, "line 1: the epoch must be"},
		{"epoch overflow", "4294967296:" + secret, "line 1: the epoch must be"},
		{"key in epoch field", secret + ":" + secret, "line 1: the epoch must be"},
		{"bad base64", "1:" + secret[:20] + "!!" + secret[22:], "line 1: the key is not valid"},
		{"short key", "# c\n1:" + base64.StdEncoding.EncodeToString(testKey(9)[:16]), "line 2: the key is 16 bytes, want at least 32"},
		{"duplicate epoch", good + "\n\n1:" + secret, "line 3: epoch 1 is already defined on line 1"},
		{"bad time", "1:" + secret + ":yesterday-" + secret[:10], "line 1: the creation time is not RFC 3339"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadKeyring(Source{File: writeFile(t, tc.content)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			msg := err.Error()
			for _, k := range []string{secret, good[2:], secret[:12], secret[22:34]} {
				if strings.Contains(msg, k) {
					t.Fatalf("error %q leaks key material", msg)
				}
			}
		})
	}
}

func TestGenerateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "pseudonym.key")
	before := time.Now().Add(-time.Second)
	if err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	if dst, _ := os.Stat(filepath.Dir(path)); dst.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, want 0700", dst.Mode().Perm())
	}
	kr, err := LoadKeyring(Source{File: path})
	if err != nil {
		t.Fatal(err)
	}
	if kr.Epoch() != 1 {
		t.Fatalf("epoch %d", kr.Epoch())
	}
	if c, ok := kr.Created(); !ok || c.Before(before.Truncate(time.Second)) || c.After(time.Now()) {
		t.Fatalf("created %v, %v", c, ok)
	}
	content, _ := os.ReadFile(path)
	if err := GenerateKeyFile(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second GenerateKeyFile = %v, want fs.ErrExist", err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(content) {
		t.Fatal("existing key file was changed")
	}
	other := filepath.Join(t.TempDir(), "k")
	if err := GenerateKeyFile(other); err != nil {
		t.Fatal(err)
	}
	kr2, _ := LoadKeyring(Source{File: other})
	a, _ := kr.Pseudonymize("p", "u")
	b, _ := kr2.Pseudonymize("p", "u")
	if a == b {
		t.Fatal("two generated keys agree")
	}
}

func TestKeyringNeverPrintsKeys(t *testing.T) {
	key := testKey(1)
	kr := daily(t, mustKeyring(t, map[uint32][]byte{1: key, 4: testKey(4)}))
	out := fmt.Sprintf("%v %+v %#v %s", kr, kr, kr, kr)
	for _, leak := range []string{string(key), hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key), fmt.Sprint(key)[1:20]} {
		if strings.Contains(out, leak) {
			t.Fatalf("formatted keyring %q shows the key", out)
		}
	}
	if !strings.Contains(out, "epochs: [4 1]") {
		t.Fatalf("formatted keyring %q", out)
	}
}

func TestConcurrent(t *testing.T) {
	kr := daily(t, mustKeyring(t, map[uint32][]byte{1: testKey(1)}))
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	want := make([]string, 10)
	for d := range want {
		want[d] = referenceDay(testKey(1), base.AddDate(0, 0, d).Format(time.DateOnly), "p", "u")
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				d := (i + g) % len(want)
				if v, _ := kr.PseudonymizeAt("p", "u", base.AddDate(0, 0, d)); v != want[d] {
					errs <- fmt.Sprintf("day %d: %q", d, v)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// raceEnabled is set by race_test.go.
var raceEnabled bool

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	kr := mustKeyring(t, map[uint32][]byte{1: testKey(1)})
	d := daily(t, kr)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"current", func() { kr.Pseudonymize("project", "user-1234567890") }},
		{"daily", func() { d.PseudonymizeAt("project", "user-1234567890", now) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tc.fn); n > 1 {
				t.Fatalf("%v allocations, want at most 1 (the result)", n)
			}
		})
	}
}

// TestMemoMatchesKeyring holds the memo to the keyring it remembers: the
// same pseudonym and epoch for every id, project and day, with and without
// daily rotation, across the memo emptying itself when full, and for ids
// whose bytes are reused by the caller afterwards. The ids come as events
// bring them, the same one again after another (distinct_id, $device_id,
// $user_id), so that the recent entries answer too.
func TestMemoMatchesKeyring(t *testing.T) {
	base := mustKeyring(t, map[uint32][]byte{1: testKey(1), 2: testKey(50)})
	for _, kr := range []*Keyring{base, daily(t, base)} {
		m := NewMemo(kr, 7)
		day := time.Date(2026, 11, 22, 23, 59, 59, 0, time.UTC)
		buf := []byte("user-00")
		for i := range 300 {
			n := i / 3
			if i%3 == 1 {
				n += 7
			}
			buf[5], buf[6] = byte('0'+n%10), byte('0'+n/10%3)
			// A view of buf, as the worker's ids point into the Kafka
			// message: the memo must keep its own copy.
			id := unsafe.String(&buf[0], len(buf))
			project := []string{"shop", "blog"}[n%2]
			at := day.Add(time.Duration(n%3) * time.Second) // crosses midnight
			got, gotEpoch := m.PseudonymizeAt(project, id, at)
			want, wantEpoch := kr.PseudonymizeAt(project, id, at)
			if got != want || gotEpoch != wantEpoch {
				t.Fatalf("rotation %s, %s/%s at %s: memo %s/%d, keyring %s/%d", kr.Rotation(), project, id, at, got, gotEpoch, want, wantEpoch)
			}
		}
		if p, e := m.PseudonymizeAt("shop", "", day); p != "" || e != 0 {
			t.Errorf("empty id: %q, %d", p, e)
		}
	}
	if a, _ := NewMemo(daily(t, base), 10).PseudonymizeAt("shop", "u", time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)); a == base.keys[0].pseudonymize("shop", "u") {
		t.Error("the daily memo gave the stable pseudonym")
	}
}
