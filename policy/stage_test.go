package policy

import (
	"testing"
	"time"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/event"
)

func keyring(t testing.TB) *pseudonym.Keyring {
	t.Helper()
	kr, err := pseudonym.NewKeyring(map[uint32][]byte{1: []byte("0123456789abcdef0123456789abcdef"), 2: []byte("fedcba9876543210fedcba9876543210")})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

type fakeRegistry struct {
	out     map[string]bool
	deleted map[string]time.Time
	optIns  []string
}

func (f *fakeRegistry) OptedOut(project string, ids []pseudonym.Pseudonym) bool {
	for _, id := range ids {
		if f.out[project+"/"+id.Value] {
			return true
		}
	}
	return false
}

func (f *fakeRegistry) DeletedBefore(project string, ids []pseudonym.Pseudonym) (time.Time, bool) {
	for _, id := range ids {
		if t, ok := f.deleted[project+"/"+id.Value]; ok {
			return t, true
		}
	}
	return time.Time{}, false
}

func (f *fakeRegistry) OptIn(project, id string) { f.optIns = append(f.optIns, project+"/"+id) }

// canaryEvent is a kept track event of a user with an id.
func canaryEvent() *event.Event {
	return &event.Event{
		Kind: event.KindTrack, Project: "shop", Name: "checkout",
		DistinctID: "user-canary-7731", InsertID: "ins-1",
		Time: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), ReceivedAt: time.Date(2026, 11, 20, 10, 0, 1, 0, time.UTC),
	}
}

func TestRegistryAndDeletion(t *testing.T) {
	kr := keyring(t)
	old := kr.All("shop", "user-canary-7731")[1] // under the older key
	reg := &fakeRegistry{out: map[string]bool{"shop/" + old.Value: true}, deleted: map[string]time.Time{}}
	e, err := NewStage(DefaultSet(), Deps{Keyring: kr, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.Apply(canaryEvent()); r != event.DropOptOut {
		t.Fatalf("registered user (older key) not dropped: %q", r)
	}
	in := canaryEvent()
	in.Name = "$opt_in"
	if r := e.Apply(in); r != event.Keep || len(reg.optIns) != 1 {
		t.Fatalf("$opt_in: %q, opt-ins %v", r, reg.optIns)
	}

	reg.out = map[string]bool{}
	reg.deleted["shop/"+kr.All("shop", "user-canary-7731")[0].Value] = time.Date(2026, 11, 20, 10, 0, 1, 0, time.UTC)
	if r := e.Apply(canaryEvent()); r != event.DropDeleted {
		t.Fatalf("event received before the deletion request: %q", r)
	}
	later := canaryEvent()
	later.ReceivedAt = later.ReceivedAt.Add(time.Second)
	if r := e.Apply(later); r != event.Keep {
		t.Fatalf("event received after the deletion request: %q", r)
	}
}
