package seal_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/internal/keyfile"
	"github.com/veilhq/veil/internal/seal"
)

const canary = `{"event":"purchase","properties":{"distinct_id":"canary-7f3a@example.com","ip":"203.0.113.77","$user_agent":"CanaryBrowser/1.0"}}`

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func keys(t testing.TB, delay time.Duration, ks ...keyfile.Key) *seal.Keys {
	t.Helper()
	r, err := seal.NewRing(ks)
	if err != nil {
		t.Fatal(err)
	}
	k, err := seal.FromRing(r, delay)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	now := time.Now()
	sealed := k.Seal(nil, []byte(canary), now)
	if len(sealed) != len(canary)+seal.Overhead || !seal.IsSealed(sealed) {
		t.Fatalf("sealed %d bytes (sealed %v), want %d", len(sealed), seal.IsSealed(sealed), len(canary)+seal.Overhead)
	}
	for _, part := range []string{"canary-7f3a", "203.0.113.77", "CanaryBrowser", "purchase"} {
		if bytes.Contains(sealed, []byte(part)) {
			t.Fatalf("sealed message holds %q", part)
		}
	}
	got, err := k.Open(nil, sealed)
	if err != nil || string(got) != canary {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// Sealing twice gives two ciphertexts: every message has its nonce.
	if again := k.Seal(nil, []byte(canary), now); bytes.Equal(again[7:], sealed[7:]) {
		t.Fatal("two seals of one envelope are equal")
	}
	// In place: the envelope is read out of the message's own memory.
	msg := append([]byte(nil), sealed...)
	got, err = k.OpenInPlace(msg)
	if err != nil || string(got) != canary || &got[0] != &msg[seal.Overhead-16] {
		t.Fatalf("OpenInPlace = %q, %v", got, err)
	}
}

func TestOpenRefuses(t *testing.T) {
	k := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	sealed := k.Seal(nil, []byte(canary), time.Now())
	wrong := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(2)})
	later := keys(t, 0, keyfile.Key{Epoch: 2, Secret: secret(1)})
	flip := func(i int) []byte {
		b := append([]byte(nil), sealed...)
		b[i] ^= 1
		return b
	}
	for _, tc := range []struct {
		name   string
		k      *seal.Keys
		msg    []byte
		want   error
		reason string
	}{
		{"plain envelope", k, []byte(canary), seal.ErrNotSealed, "unsealed"},
		{"wrong key of the same epoch", wrong, sealed, seal.ErrOpen, "seal_open_failed"},
		{"epoch not held", later, sealed, seal.ErrUnknownEpoch, "seal_unknown_epoch"},
		{"altered ciphertext", k, flip(len(sealed) - 20), seal.ErrOpen, "seal_open_failed"},
		{"altered tag", k, flip(len(sealed) - 1), seal.ErrOpen, "seal_open_failed"},
		{"altered nonce", k, flip(10), seal.ErrOpen, "seal_open_failed"},
		{"epoch changed", k, flip(6), seal.ErrUnknownEpoch, "seal_unknown_epoch"},
		{"truncated", k, sealed[:seal.Overhead-1], seal.ErrMalformed, "seal_malformed"},
		{"unknown version", k, flip(2), seal.ErrMalformed, "seal_malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.k.Open(nil, tc.msg)
			if !errors.Is(err, tc.want) || seal.Reason(err) != tc.reason {
				t.Fatalf("Open = %v (%s), want %v (%s)", err, seal.Reason(err), tc.want, tc.reason)
			}
			if strings.Contains(err.Error(), "canary") {
				t.Fatalf("error quotes the message: %v", err)
			}
		})
	}
}

// TestNoncesUnique: no two messages of one process share a nonce.
func TestNoncesUnique(t *testing.T) {
	k := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	seen := map[string]bool{}
	now := time.Now()
	for range 100_000 {
		n := string(k.Seal(nil, nil, now)[7:19])
		if seen[n] {
			t.Fatal("a nonce repeated")
		}
		seen[n] = true
	}
}

// TestActivationDelay: a key seals only once it is old enough for every
// worker to have read it; until then the one before it seals.
func TestActivationDelay(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	r, err := seal.NewRing([]keyfile.Key{
		{Epoch: 1, Secret: secret(1), Created: now.Add(-48 * time.Hour)},
		{Epoch: 2, Secret: secret(2), Created: now.Add(-30 * time.Second)},
		{Epoch: 3, Secret: secret(3)}, // no creation time: a line from before they were written
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SealingEpoch(now, time.Minute); got != 3 {
		t.Fatalf("epoch %d seals, want 3 (no creation time)", got)
	}
	r, _ = seal.NewRing([]keyfile.Key{
		{Epoch: 1, Secret: secret(1), Created: now.Add(-48 * time.Hour)},
		{Epoch: 2, Secret: secret(2), Created: now.Add(-30 * time.Second)},
	})
	for _, tc := range []struct {
		at   time.Time
		want uint32
	}{{now, 1}, {now.Add(29 * time.Second), 1}, {now.Add(30 * time.Second), 2}} {
		if got := r.SealingEpoch(tc.at, time.Minute); got != tc.want {
			t.Errorf("at %s epoch %d seals, want %d", tc.at, got, tc.want)
		}
	}
	// A single new key seals at once: there is no other.
	r, _ = seal.NewRing([]keyfile.Key{{Epoch: 5, Secret: secret(5), Created: now}})
	if got := r.SealingEpoch(now, time.Minute); got != 5 {
		t.Fatalf("epoch %d seals, want 5", got)
	}
}

func line(epoch uint32, s []byte, created time.Time) string {
	return fmt.Sprintf("%d:%s:%s\n", epoch, base64.StdEncoding.EncodeToString(s), created.UTC().Format(time.RFC3339))
}

// TestRotation: a key added to the file is read without a restart; the
// collector seals with it once it is old enough, the worker opens both
// epochs, and users keep their partitions.
func TestRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seal.keys")
	old := time.Now().Add(-time.Hour)
	if err := os.WriteFile(path, []byte(line(1, secret(1), old)), 0o600); err != nil {
		t.Fatal(err)
	}
	src := keyfile.Source{File: path, Setting: "seal.key"}
	collector, err := seal.Load(src, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	worker, err := seal.Load(src, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	route := collector.Route(nil, []byte("shop\x00user-1"))
	before := collector.Seal(nil, []byte(canary), time.Now())

	// Epoch 2 is added, made now.
	made := time.Now()
	if err := os.WriteFile(path, []byte(line(1, secret(1), old)+line(2, secret(2), made)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*seal.Keys{worker, collector} {
		if changed, err := k.Reload(); err != nil || !changed {
			t.Fatalf("Reload = %v, %v", changed, err)
		}
	}
	if changed, err := worker.Reload(); err != nil || changed {
		t.Fatalf("second Reload = %v, %v; want no change", changed, err)
	}
	// Not yet old enough: epoch 1 still seals.
	if got := collector.Seal(nil, nil, made.Add(30*time.Second)); got[6] != 1 {
		t.Fatalf("sealed with epoch %d before the activation delay, want 1", got[6])
	}
	after := collector.Seal(nil, []byte(canary), made.Add(2*time.Minute))
	if after[6] != 2 {
		t.Fatalf("sealed with epoch %d after the activation delay, want 2", after[6])
	}
	for name, msg := range map[string][]byte{"epoch 1": before, "epoch 2": after} {
		if got, err := worker.Open(nil, msg); err != nil || string(got) != canary {
			t.Fatalf("%s: Open = %q, %v", name, got, err)
		}
	}
	if got := collector.Route(nil, []byte("shop\x00user-1")); !bytes.Equal(got, route) {
		t.Fatal("adding a key moved a user to another routing key")
	}

	// A file that no longer parses keeps the keys read before.
	if err := os.WriteFile(path, []byte("1:not base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Reload(); err == nil || strings.Contains(err.Error(), "not base64!") {
		t.Fatalf("Reload of a broken file = %v", err)
	}
	if _, err := worker.Open(nil, after); err != nil {
		t.Fatalf("keys lost after a broken file: %v", err)
	}
}

func TestRoute(t *testing.T) {
	k := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	other := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(2)})
	a := k.Route(nil, []byte("shop\x00canary-7f3a@example.com"))
	if len(a) != seal.RouteSize || bytes.Contains(a, []byte("canary")) {
		t.Fatalf("route %x", a)
	}
	if !bytes.Equal(a, k.Route(nil, []byte("shop\x00canary-7f3a@example.com"))) {
		t.Fatal("one user, two routing keys")
	}
	if bytes.Equal(a, k.Route(nil, []byte("shop\x00someone-else"))) || bytes.Equal(a, other.Route(nil, []byte("shop\x00canary-7f3a@example.com"))) {
		t.Fatal("routing keys collide")
	}
}

// TestProducer: what reaches Kafka is sealed and routed by hash, in order,
// one routing key per user; the caller's messages are left as they were.
func TestProducer(t *testing.T) {
	k := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	next := &kafkatest.Producer{Copy: true, Releases: true}
	p := &seal.Producer{Keys: k, Next: next}
	in := []kafka.Message{
		{Key: []byte("shop\x00canary-7f3a@example.com"), Value: []byte(canary)},
		{Key: []byte("shop\x00canary-7f3a@example.com"), Value: []byte(`{"event":"b"}`)},
		{Key: []byte("shop\x00u2"), Value: []byte(`{"event":"c"}`)},
	}
	for round := range 3 { // the pooled buffers are reused
		next.Reset()
		if err := p.WriteMessages(context.Background(), in...); err != nil {
			t.Fatal(err)
		}
		got := next.Messages()
		if len(got) != 3 || string(in[0].Value) != canary {
			t.Fatalf("round %d: %d messages written", round, len(got))
		}
		for i, m := range got {
			got, err := k.Open(nil, m.Value)
			if err != nil || string(got) != string(in[i].Value) {
				t.Fatalf("message %d opens to %q, %v", i, got, err)
			}
			if !bytes.Equal(m.Key, k.Route(nil, in[i].Key)) {
				t.Fatalf("message %d key %x", i, m.Key)
			}
			if bytes.Contains(m.Key, []byte("canary")) || bytes.Contains(m.Value, []byte("canary")) {
				t.Fatalf("message %d holds the canary", i)
			}
		}
		if !bytes.Equal(got[0].Key, got[1].Key) || bytes.Equal(got[0].Key, got[2].Key) {
			t.Fatal("routing keys do not follow users")
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*seal.Config)
		want string
	}{
		{"defaults", func(*seal.Config) {}, ""},
		{"both", func(c *seal.Config) { c.KeyFile, c.KeyEnv = "f", "E" }, "seal.key_file and seal.key_env are both set"},
		{"reload", func(c *seal.Config) { c.Reload = 0 }, "seal.reload must be positive"},
		{"delay below reload", func(c *seal.Config) { c.KeyFile, c.ActivationDelay = "f", time.Second }, "seal.activation_delay must be at least seal.reload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := seal.DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

var sink []byte

// BenchmarkSeal seals and opens a mixpanel-browser-sized envelope.
func BenchmarkSeal(b *testing.B) {
	k := keys(b, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	env := bytes.Repeat([]byte("x"), 1100)
	now := time.Now()
	buf := make([]byte, 0, 2048)
	b.Run("seal", func(b *testing.B) {
		b.SetBytes(int64(len(env)))
		for b.Loop() {
			sink = k.Seal(buf[:0], env, now)
		}
	})
	sealed := k.Seal(nil, env, now)
	b.Run("open", func(b *testing.B) {
		b.SetBytes(int64(len(env)))
		for b.Loop() {
			sink, _ = k.Open(buf[:0], sealed)
		}
	})
	b.Run("route", func(b *testing.B) {
		key := []byte("shop\x00a-distinct-id-of-36-characters-00")
		for b.Loop() {
			sink = k.Route(buf[:0], key)
		}
	})
}

// BenchmarkProducer seals one mixpanel-browser request of 50 events of one
// user (1.1 KB envelopes): what sealing adds to the collector per event
// (ns/event), the produce itself excluded.
func BenchmarkProducer(b *testing.B) {
	k := keys(b, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	p := &seal.Producer{Keys: k, Next: &kafkatest.Producer{Discard: true, Releases: true}}
	msgs := make([]kafka.Message, 50)
	for i := range msgs {
		v := fmt.Sprintf(`{"project":"shop","endpoint":"track","ip":"203.0.113.77","event":{"event":"page_view","properties":{"distinct_id":"u-%d","n":%d,"pad":"%s"}}}`, 7, i, strings.Repeat("x", 950))
		msgs[i] = kafka.Message{Key: []byte("shop\x00u-7"), Value: []byte(v)}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.WriteMessages(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/event")
}
