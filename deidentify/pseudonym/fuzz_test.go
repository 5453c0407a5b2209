package pseudonym

import (
	"strings"
	"testing"
	"time"
)

func FuzzPseudonymize(f *testing.F) {
	f.Add("p1", "user-42", int64(1714521600), false)
	f.Add("", "alice@example.com", int64(0), true)
	f.Add("p\x00", "\x00", int64(-1), true)
	f.Add("p", "", int64(1<<62), true)
	f.Add("0123456789abcdef", "0123456789abcdef0123456789abcdef", int64(-1<<62), false)
	kr := mustKeyring(f, map[uint32][]byte{1: testKey(1), 2: testKey(2)})
	d := daily(f, kr)
	f.Fuzz(func(t *testing.T, project, id string, unix int64, rotate bool) {
		at := time.Unix(unix, 0)
		k := kr
		if rotate {
			k = d
		}
		v, epoch := k.PseudonymizeAt(project, id, at)
		if again, _ := k.PseudonymizeAt(project, id, at); again != v {
			t.Fatalf("not deterministic: %q then %q", v, again)
		}
		if id == "" {
			if v != "" || epoch != 0 {
				t.Fatalf("empty id gave %q, %d", v, epoch)
			}
			return
		}
		if !isPseudonym(v) || epoch != 2 {
			t.Fatalf("PseudonymizeAt = %q, %d; want 32 lower-case hex, epoch 2", v, epoch)
		}
		if len(id) >= 8 && strings.Contains(v, id) {
			t.Fatalf("pseudonym %q contains the id %q", v, id)
		}
		if !rotate {
			all := k.All(project, id)
			if len(all) != 2 || all[0].Value != v || all[1].Epoch != 1 || !isPseudonym(all[1].Value) {
				t.Fatalf("All = %v", all)
			}
		}
	})
}
