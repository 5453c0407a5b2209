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

// TestProducer: what reaches Kafka is sealed and routed by hash, one
// routing key per user, each user's events in one frame in the order they
// came; the caller's messages are left as they were.
func TestProducer(t *testing.T) {
	k := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	next := &kafkatest.Producer{Copy: true, Releases: true}
	p := &seal.Producer{Keys: k, Next: next}
	in := []kafka.Message{
		{Key: []byte("shop\x00canary-7f3a@example.com"), Value: []byte(canary)},
		{Key: []byte("shop\x00u2"), Value: []byte(`{"event":"c"}`)},
		{Key: []byte("shop\x00canary-7f3a@example.com"), Value: []byte(`{"event":"b"}`)},
	}
	want := [][]string{{canary, `{"event":"b"}`}, {`{"event":"c"}`}}
	wantKeys := [][]byte{in[0].Key, in[1].Key}
	for round := range 3 { // the pooled buffers are reused
		next.Reset()
		if err := p.WriteMessages(context.Background(), in...); err != nil {
			t.Fatal(err)
		}
		got := next.Messages()
		if len(got) != 2 || string(in[0].Value) != canary {
			t.Fatalf("round %d: %d messages written, want 2 frames", round, len(got))
		}
		for i, m := range got {
			if envs := openAll(t, k, m.Value); fmt.Sprint(envs) != fmt.Sprint(want[i]) {
				t.Fatalf("frame %d opens to %q, want %q", i, envs, want[i])
			}
			if seal.Count(m.Value) != len(want[i]) {
				t.Fatalf("frame %d counts %d", i, seal.Count(m.Value))
			}
			if !bytes.Equal(m.Key, k.Route(nil, wantKeys[i])) {
				t.Fatalf("frame %d key %x", i, m.Key)
			}
			if bytes.Contains(m.Key, []byte("canary")) || bytes.Contains(m.Value, []byte("canary")) {
				t.Fatalf("frame %d holds the canary", i)
			}
		}
	}
}

func openAll(t *testing.T, k *seal.Keys, b []byte) []string {
	t.Helper()
	envs, err := k.OpenAll(b)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = string(e)
	}
	return out
}

// TestProducerFrames: a request of many users gets a frame per user, each
// in order; a user's envelopes past FrameBytes start another frame; bytes
// LZ4 cannot shrink are framed as they are; nothing is lost or reordered.
func TestProducerFrames(t *testing.T) {
	k := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	next := &kafkatest.Producer{Copy: true, Releases: true}
	p := &seal.Producer{Keys: k, Next: next}
	random := make([]byte, 3000)
	for i := range random {
		random[i] = byte(i*7919 + i*i*31 + i>>3) // no run LZ4 finds
	}
	var in []kafka.Message
	for i := range 600 {
		user := fmt.Sprintf("u%d", i%20)
		if i >= 300 {
			user = "big" // 300 envelopes of about 1.1 KB: two frames
		}
		v := fmt.Sprintf(`{"event":"e%d","properties":{"distinct_id":%q,"pad":"%s"}}`, i, user, strings.Repeat("x", 1050))
		if i == 7 {
			v = string(random) // incompressible
		}
		in = append(in, kafka.Message{Key: []byte("shop\x00" + user), Value: []byte(v)})
	}
	if err := p.WriteMessages(context.Background(), in...); err != nil {
		t.Fatal(err)
	}
	byRoute := map[string][]string{}
	frames := 0
	for _, m := range next.Messages() {
		frames++
		envs := openAll(t, k, m.Value)
		size := 0
		for _, e := range envs {
			size += len(e)
		}
		if len(envs) > 1 && size > seal.FrameBytes {
			t.Fatalf("a frame of %d envelope bytes, above %d", size, seal.FrameBytes)
		}
		if len(m.Value) > size/2+seal.FrameOverhead+1500 {
			t.Fatalf("a frame of %d envelope bytes takes %d sealed: not compressed", size, len(m.Value))
		}
		byRoute[string(m.Key)] = append(byRoute[string(m.Key)], envs...)
	}
	if frames != 22 {
		t.Fatalf("%d frames, want 20 users' and 2 for the large one", frames)
	}
	want := map[string][]string{}
	for _, m := range in {
		r := string(k.Route(nil, m.Key))
		want[r] = append(want[r], string(m.Value))
	}
	if fmt.Sprint(byRoute) != fmt.Sprint(want) {
		t.Fatal("the frames do not hold each user's envelopes in order")
	}
}

// TestOpenerRefuses: a frame that was altered, sealed with another key or
// an epoch the worker has not read, or cut short, is refused whole with
// its reason; its count is still read from its header.
func TestOpenerRefuses(t *testing.T) {
	k := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	other := keys(t, 0, keyfile.Key{Epoch: 1, Secret: secret(2)})
	later := keys(t, 0, keyfile.Key{Epoch: 2, Secret: secret(1)})
	f := seal.Framer{Keys: k}
	envs := [][]byte{[]byte(canary), []byte(`{"event":"b"}`), []byte(`{"event":"c"}`)}
	frame := f.Seal(nil, envs, time.Now())
	if !seal.IsFrame(frame) || seal.Count(frame) != 3 || bytes.Contains(frame, []byte("canary")) {
		t.Fatalf("frame: IsFrame %v, Count %d", seal.IsFrame(frame), seal.Count(frame))
	}
	recount := bytes.Clone(frame)
	recount[8] = 2
	flipped := bytes.Clone(frame)
	flipped[len(flipped)-20] ^= 1
	for _, tc := range []struct {
		name string
		k    *seal.Keys
		msg  []byte
		want error
	}{
		{"count altered", k, recount, seal.ErrOpen},
		{"body altered", k, flipped, seal.ErrOpen},
		{"another key", other, frame, seal.ErrOpen},
		{"unknown epoch", later, frame, seal.ErrUnknownEpoch},
		{"cut short", k, frame[:seal.FrameOverhead-1], seal.ErrMalformed},
		{"plain", k, []byte(canary), seal.ErrNotSealed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := seal.Opener{Keys: tc.k}
			_, err := o.Open(bytes.Clone(tc.msg))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "canary") {
				t.Fatal("the error quotes the message")
			}
		})
	}
	// The opener reuses its buffer: a second frame does not disturb the
	// first's count, and an envelope sealed alone opens through it too.
	o := seal.Opener{Keys: k}
	for _, msg := range [][]byte{frame, k.Seal(nil, []byte(canary), time.Now()), frame} {
		got, err := o.Open(bytes.Clone(msg))
		if err != nil || got.Len() != seal.Count(msg) {
			t.Fatalf("Open = %d envelopes, %v", got.Len(), err)
		}
		first, _ := got.Next()
		if string(first) != canary {
			t.Fatalf("first envelope %q", first)
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
// user (1.1 KB envelopes) into its frame: what sealing adds to the
// collector per event (ns/event), the produce itself excluded, and the
// bytes Kafka is given per event (B/event).
func BenchmarkProducer(b *testing.B) {
	k := keys(b, 0, keyfile.Key{Epoch: 1, Secret: secret(1)})
	p := &seal.Producer{Keys: k, Next: &kafkatest.Producer{Discard: true, Releases: true}}
	msgs := make([]kafka.Message, 50)
	for i := range msgs {
		v := fmt.Sprintf(`{"project":"shop","endpoint":"track","ip":"203.0.113.77","event":{"event":"page_view","properties":{"distinct_id":"u-%d","n":%d,"pad":"%s"}}}`, 7, i, strings.Repeat("x", 950))
		msgs[i] = kafka.Message{Key: []byte("shop\x00u-7"), Value: []byte(v)}
	}
	next := &kafkatest.Producer{Copy: true, Releases: true}
	if err := (&seal.Producer{Keys: k, Next: next}).WriteMessages(context.Background(), msgs...); err != nil {
		b.Fatal(err)
	}
	bytes := 0
	for _, m := range next.Messages() {
		bytes += len(m.Key) + len(m.Value)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.WriteMessages(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/event")
	b.ReportMetric(float64(bytes)/float64(len(msgs)), "B/event")
}
