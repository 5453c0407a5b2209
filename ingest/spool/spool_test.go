package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/veilhq/veil/internal/kafkatest"
	"github.com/veilhq/veil/internal/keyfile"
	"github.com/veilhq/veil/internal/seal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errBroker = kafka.NotEnoughReplicas

// newKafka is Kafka as the spool sees it: it stores copies of what it
// takes (the spool reuses nothing it was told is released).
func newKafka() *kafkatest.Producer {
	return &kafkatest.Producer{Copy: true, Releases: true}
}

// setKafka makes Kafka take writes, refuse them (down) with errBroker, or
// fall silent (down and hang) until each write's deadline, from the next
// write on.
func setKafka(k *kafkatest.Producer, down, hang bool) {
	if !down {
		k.SetStall(false)
		k.Fail(nil)
		return
	}
	if hang {
		k.Fail(nil)
		k.SetStall(true)
		return
	}
	k.SetStall(false)
	k.Fail(errBroker)
}

// values are the values Kafka stored, in order.
func values(k *kafkatest.Producer) []string {
	var out []string
	for _, m := range k.Messages() {
		out = append(out, string(m.Value))
	}
	return out
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "spool")
	cfg.Deadline = 50 * time.Millisecond
	return cfg
}

func open(t *testing.T, cfg Config, f Producer, reg prometheus.Registerer) *Spool {
	t.Helper()
	s, err := Open(cfg, f, time.Second, Deps{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run replays until the test ends.
func run(t *testing.T, s *Spool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func request(name string, n int) []kafka.Message {
	var msgs []kafka.Message
	for i := range n {
		msgs = append(msgs, kafka.Message{Key: []byte("shop\x00" + name), Value: []byte(fmt.Sprintf("%s-%d", name, i))})
	}
	return msgs
}

func waitEmpty(t *testing.T, s *Spool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _, _ := s.Held(); r == 0 {
			return
		}
		if time.Now().After(deadline) {
			r, e, b := s.Held()
			t.Fatalf("spool not drained: %d requests, %d events, %d bytes left", r, e, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSpoolAnswers(t *testing.T) {
	for _, tc := range []struct {
		name       string
		down, hang bool
		wantErr    error // nil, ErrSpooled
		reason     string
	}{
		{"kafka healthy: written, nothing spooled", false, false, nil, ""},
		{"kafka refuses: spooled", true, false, ErrSpooled, ReasonKafkaError},
		{"kafka silent past the deadline: spooled", true, true, ErrSpooled, ReasonDeadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newKafka()
			setKafka(f, tc.down, tc.hang)
			reg := prometheus.NewRegistry()
			s := open(t, testConfig(t), f, reg)
			defer s.Close()
			err := s.WriteMessages(context.Background(), request("a", 3)...)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("WriteMessages = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil && !errors.Is(err, errBroker) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("the error %v does not carry Kafka's", err)
			}
			reqs, events, _ := s.Held()
			wantHeld := int64(0)
			if tc.down {
				wantHeld = 3
			}
			if events != wantHeld || (reqs > 0) != tc.down {
				t.Errorf("held %d requests, %d events; want %d events", reqs, events, wantHeld)
			}
			for _, r := range []string{ReasonDeadline, ReasonKafkaError, ReasonBehind} {
				want := 0.0
				if r == tc.reason {
					want = 3
				}
				if got := testutil.ToFloat64(s.m.spooled.WithLabelValues(r)); got != want {
					t.Errorf("spooled{reason=%s} = %v, want %v", r, got, want)
				}
			}
			// Kafka back: the replayer sends them once, in order.
			setKafka(f, false, false)
			run(t, s)
			waitEmpty(t, s)
			if got := values(f); fmt.Sprint(got) != "[a-0 a-1 a-2]" {
				t.Errorf("Kafka holds %v", got)
			}
			if got := testutil.ToFloat64(s.m.replayed); got != float64(wantHeld) {
				t.Errorf("replayed = %v, want %v", got, wantHeld)
			}
		})
	}
}

// While the spool holds messages, later requests queue behind them, even
// with Kafka back, and reach Kafka after them; once it is empty, requests
// go straight to Kafka again.
func TestSpoolKeepsOrderBehindHeldMessages(t *testing.T) {
	f := newKafka()
	setKafka(f, true, false)
	reg := prometheus.NewRegistry()
	s := open(t, testConfig(t), f, reg)
	defer s.Close()
	ctx := context.Background()
	if err := s.WriteMessages(ctx, request("first", 2)...); !errors.Is(err, ErrSpooled) {
		t.Fatalf("first: %v", err)
	}
	setKafka(f, false, false)
	writesBefore := f.Writes()
	if err := s.WriteMessages(ctx, request("second", 2)...); err != nil {
		t.Fatalf("second: %v", err)
	}
	if f.Writes() != writesBefore {
		t.Errorf("the second request went to Kafka past the spooled first one")
	}
	if got := testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonBehind)); got != 2 {
		t.Errorf("spooled{reason=behind} = %v, want 2", got)
	}
	run(t, s)
	waitEmpty(t, s)
	if err := s.WriteMessages(ctx, request("third", 1)...); err != nil {
		t.Fatalf("third: %v", err)
	}
	if got := fmt.Sprint(values(f)); got != "[first-0 first-1 second-0 second-1 third-0]" {
		t.Errorf("Kafka holds %s", got)
	}
	if got := testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonBehind)); got != 2 {
		t.Errorf("the third request was spooled though the spool was empty")
	}
}

func TestSpoolBounds(t *testing.T) {
	t.Run("max_bytes: refused with 503's error, nothing spooled dropped", func(t *testing.T) {
		f := newKafka()
		setKafka(f, true, false)
		cfg := testConfig(t)
		one := int64(len(appendEntry(nil, time.Now().UnixMilli(), request("a", 10))))
		cfg.MaxBytes = 2*one + one/2
		cfg.SegmentBytes = int(one)
		s := open(t, cfg, f, prometheus.NewRegistry())
		defer s.Close()
		var answered []error
		for _, name := range []string{"a", "b", "c"} {
			answered = append(answered, s.WriteMessages(context.Background(), request(name, 10)...))
		}
		if !errors.Is(answered[0], ErrSpooled) || answered[1] != nil {
			t.Fatalf("first two: %v, %v; want spooled", answered[0], answered[1])
		}
		var re *RefusedError
		if !errors.As(answered[2], &re) || re.Reason != RefusedFull || re.Cause != nil || !errors.Is(answered[2], ErrRefused) {
			t.Fatalf("third: %v; want refused full, Kafka not tried", answered[2])
		}
		if got := testutil.ToFloat64(s.m.refused.WithLabelValues(RefusedFull)); got != 10 {
			t.Errorf("refused{reason=full} = %v, want 10", got)
		}
		setKafka(f, false, false)
		run(t, s)
		waitEmpty(t, s)
		if got := len(values(f)); got != 20 {
			t.Errorf("Kafka holds %d events, want the 20 spooled", got)
		}
	})
	t.Run("max_age: refused once the oldest is too old", func(t *testing.T) {
		f := newKafka()
		setKafka(f, true, false)
		cfg := testConfig(t)
		cfg.MaxAge = time.Minute
		now := time.Unix(1_800_000_000, 0)
		var mu sync.Mutex
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		s, err := Open(cfg, f, time.Second, Deps{Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.WriteMessages(context.Background(), request("a", 1)...); !errors.Is(err, ErrSpooled) {
			t.Fatal(err)
		}
		mu.Lock()
		now = now.Add(61 * time.Second)
		mu.Unlock()
		err = s.WriteMessages(context.Background(), request("b", 1)...)
		var re *RefusedError
		if !errors.As(err, &re) || re.Reason != RefusedTooOld {
			t.Fatalf("after max_age: %v, want refused too_old", err)
		}
		if s.Room() == nil {
			t.Error("Room says there is room past max_age")
		}
		if got := testutil.ToFloat64(s.m.refused.WithLabelValues(RefusedTooOld)); got != 1 {
			t.Errorf("refused{reason=too_old} = %v, want 1", got)
		}
	})
}

// A collector that dies with messages spooled replays them when it
// starts again, and only those.
func TestSpoolSurvivesRestart(t *testing.T) {
	f := newKafka()
	setKafka(f, true, false)
	cfg := testConfig(t)
	s := open(t, cfg, f, nil)
	for i := range 5 {
		if err := s.WriteMessages(context.Background(), request(strconv.Itoa(i), 2)...); err != nil && !errors.Is(err, ErrSpooled) {
			t.Fatal(err)
		}
	}
	// No Close: a crash. The log's files are what the next run sees.
	f2 := newKafka()
	s2 := open(t, cfg, f2, nil)
	defer s2.Close()
	if r, e, _ := s2.Held(); r != 5 || e != 10 {
		t.Fatalf("reopened spool holds %d requests, %d events; want 5, 10", r, e)
	}
	stop := run(t, s2)
	waitEmpty(t, s2)
	stop() // its last trim done
	want := "[0-0 0-1 1-0 1-1 2-0 2-1 3-0 3-1 4-0 4-1]"
	if got := fmt.Sprint(values(f2)); got != want {
		t.Errorf("replayed %s, want %s", got, want)
	}
	s.Close()
	// Replayed and trimmed: a third run finds nothing.
	s3 := open(t, cfg, newKafka(), nil)
	defer s3.Close()
	if r, _, _ := s3.Held(); r != 0 {
		t.Errorf("after the replay, %d requests left on disk", r)
	}
}

// An entry cut short by a power loss (its fsync never returned, so its
// request was never answered) is cut off; the entries before it are kept.
func TestSpoolRepairsTornTail(t *testing.T) {
	f := newKafka()
	setKafka(f, true, false)
	cfg := testConfig(t)
	s := open(t, cfg, f, nil)
	for _, name := range []string{"a", "b"} {
		_ = s.WriteMessages(context.Background(), request(name, 1)...)
	}
	s.Close()
	seg := filepath.Join(cfg.Dir, "00000000000000000001")
	fh, err := os.OpenFile(seg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fh.Write([]byte{200, 1, entryVersion, 7}) // a length of 200, 2 bytes of it
	fh.Close()
	f2 := newKafka()
	s2 := open(t, cfg, f2, nil)
	defer s2.Close()
	run(t, s2)
	waitEmpty(t, s2)
	if got := fmt.Sprint(values(f2)); got != "[a-0 b-0]" {
		t.Errorf("replayed %s", got)
	}
}

// The spool's directory and files are its owner's alone, also when an
// earlier run (or someone else) left them readable by others.
func TestSpoolFilesAreTheOwnersAlone(t *testing.T) {
	f := newKafka()
	setKafka(f, true, false)
	cfg := testConfig(t)
	s := open(t, cfg, f, nil)
	_ = s.WriteMessages(context.Background(), request("a", 1)...)
	s.Close()
	err := filepath.Walk(cfg.Dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return os.Chmod(path, 0o755)
		}
		return os.Chmod(path, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	s = open(t, cfg, f, nil)
	defer s.Close()
	_ = s.WriteMessages(context.Background(), request("b", 1)...)
	err = filepath.Walk(cfg.Dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Many concurrent clients, each sending its requests one after another,
// while Kafka comes and goes: every request answered success reaches
// Kafka, and each client's requests reach it in the order it sent them
// (a copy may come twice; the first copies are in order).
func TestSpoolUnderFlappingKafka(t *testing.T) {
	f := newKafka()
	cfg := testConfig(t)
	cfg.Deadline = 20 * time.Millisecond
	cfg.SegmentBytes = 4 << 10 // many segments, trimmed as they are replayed
	// A replay sent while Kafka is silent waits this long before it is
	// tried again.
	s, err := Open(cfg, f, 100*time.Millisecond, Deps{Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	run(t, s)
	stopFlap := make(chan struct{})
	flapped := make(chan struct{})
	go func() {
		defer close(flapped)
		// Up, silent, up long enough to drain, refusing, up.
		phases := []struct {
			down, hang bool
			d          time.Duration
		}{{false, false, 40 * time.Millisecond}, {true, true, 60 * time.Millisecond}, {false, false, 300 * time.Millisecond},
			{true, false, 60 * time.Millisecond}, {false, false, 300 * time.Millisecond}}
		for i := 0; ; i++ {
			p := phases[i%len(phases)]
			setKafka(f, p.down, p.hang)
			select {
			case <-stopFlap:
				setKafka(f, false, false)
				return
			case <-time.After(p.d):
			}
		}
	}()
	const clients, each = 8, 400
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				msgs := []kafka.Message{{Key: []byte(strconv.Itoa(c)), Value: []byte(fmt.Sprintf("%d/%03d", c, i))}}
				if err := s.WriteMessages(context.Background(), msgs...); err != nil && !errors.Is(err, ErrSpooled) {
					errs <- err
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(stopFlap)
	<-flapped
	close(errs)
	for err := range errs {
		t.Errorf("a request was not taken: %v", err)
	}
	waitEmpty(t, s)
	seen := map[string]bool{}
	next := make([]int, clients)
	for _, v := range values(f) {
		if seen[v] {
			continue
		}
		seen[v] = true
		var c, i int
		fmt.Sscanf(v, "%d/%d", &c, &i)
		if i != next[c] {
			t.Errorf("client %d: request %d reached Kafka before request %d", c, i, next[c])
		}
		next[c] = i + 1
	}
	if len(seen) != clients*each {
		t.Errorf("Kafka holds %d distinct requests, want %d", len(seen), clients*each)
	}
	// Which of Kafka's failures a request met depends on the machine's
	// pace; that some requests met one and others queued behind does not.
	if testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonDeadline))+testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonKafkaError)) == 0 ||
		testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonBehind)) == 0 {
		t.Error("no request was spooled after a failure, or none behind one: the test did not exercise the spool")
	}
	t.Logf("spooled %v (deadline %v, kafka_error %v, behind %v), replayed %v, %d writes to Kafka",
		testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonDeadline))+testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonKafkaError))+testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonBehind)),
		testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonDeadline)), testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonKafkaError)),
		testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonBehind)), testutil.ToFloat64(s.m.replayed), f.Writes())
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"off without a directory", func(c *Config) { c.Dir = ""; c.Deadline = 0 }, ""},
		{"defaults", func(c *Config) {}, ""},
		{"deadline", func(c *Config) { c.Deadline = 0 }, "collector.spool.deadline must be positive"},
		{"deadline past the produce timeout", func(c *Config) { c.Deadline = 10 * time.Second }, "collector.spool.deadline must be shorter than collector.produce_timeout"},
		{"max_bytes", func(c *Config) { c.MaxBytes = 0 }, "collector.spool.max_bytes must be positive"},
		{"max_age", func(c *Config) { c.MaxAge = -1 }, "collector.spool.max_age must be positive"},
		{"segment_bytes", func(c *Config) { c.SegmentBytes = 0 }, "collector.spool.segment_bytes must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Dir = "/var/lib/veil/spool"
			tc.edit(&c)
			err := c.Validate(10 * time.Second)
			if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestEntryRoundTrip(t *testing.T) {
	msgs := []kafka.Message{{Key: []byte("k"), Value: []byte("v1")}, {Value: []byte("")}, {Key: []byte("k2"), Value: []byte("{\"event\":\"x\"}")}}
	b := appendEntry(nil, 1234, msgs)
	if len(b) > entrySize(msgs) {
		t.Errorf("entry takes %d bytes, entrySize says %d", len(b), entrySize(msgs))
	}
	got, ms, err := decodeEntry(nil, b)
	if err != nil || ms != 1234 || len(got) != 3 || string(got[2].Value) != `{"event":"x"}` || got[1].Key != nil || string(got[0].Key) != "k" {
		t.Fatalf("decoded %v %d %v", got, ms, err)
	}
	for cut := range len(b) {
		if _, _, err := decodeEntry(nil, b[:cut]); err == nil {
			t.Errorf("an entry cut at %d of %d bytes decodes", cut, len(b))
		}
	}
}

// An entry that cannot be read back (a damaged disk) is skipped and
// counted; the entries around it are replayed and the figures return to
// zero.
func TestSpoolSkipsCorruptEntry(t *testing.T) {
	f := newKafka()
	setKafka(f, true, false)
	cfg := testConfig(t)
	s := open(t, cfg, f, nil)
	_ = s.WriteMessages(context.Background(), request("a", 1)...)
	s.Close()
	l, err := openLog(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	bad := appendEntry(nil, time.Now().UnixMilli(), request("bad", 3))
	bad = bad[:len(bad)-2] // its head says 3 messages; its body is cut
	last, _ := l.LastIndex()
	if err := l.Write(last+1, bad); err != nil {
		t.Fatal(err)
	}
	good := appendEntry(nil, time.Now().UnixMilli(), request("c", 1))
	if err := l.Write(last+2, good); err != nil {
		t.Fatal(err)
	}
	l.Close()
	f2 := newKafka()
	s2 := open(t, cfg, f2, prometheus.NewRegistry())
	defer s2.Close()
	if r, e, _ := s2.Held(); r != 3 || e != 5 {
		t.Fatalf("held %d requests, %d events; want 3, 5", r, e)
	}
	run(t, s2)
	waitEmpty(t, s2)
	if got := fmt.Sprint(values(f2)); got != "[a-0 c-0]" {
		t.Errorf("replayed %s", got)
	}
	if r, e, b := s2.Held(); r != 0 || e != 0 || b != 0 {
		t.Errorf("after the replay: %d requests, %d events, %d bytes held", r, e, b)
	}
	if got := testutil.ToFloat64(s2.m.replayErrors.WithLabelValues(ReasonCorrupt)); got != 1 {
		t.Errorf("replay errors{corrupt} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(s2.m.replayed); got != 2 {
		t.Errorf("replayed = %v, want 2", got)
	}
}

// TestSpoolCountsFramesEvents: a sealed frame holds a request's events of
// one user; the spool's figures count those events, not its messages,
// when it spools them, after a restart and when it replays them.
func TestSpoolCountsFramesEvents(t *testing.T) {
	r, err := seal.NewRing([]keyfile.Key{{Epoch: 1, Secret: bytes.Repeat([]byte{1}, seal.MinKeyLen)}})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := seal.FromRing(r, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := newKafka()
	setKafka(f, true, false)
	cfg := testConfig(t)
	reg := prometheus.NewRegistry()
	s := open(t, cfg, f, reg)
	// Two requests: 5 events of one user, and 3 events of two users.
	sealer := &seal.Producer{Keys: keys, Next: s}
	for _, req := range [][]kafka.Message{request("a", 5), append(request("b", 2), request("c", 1)...)} {
		if err := sealer.WriteMessages(context.Background(), req...); err != nil && !errors.Is(err, ErrSpooled) {
			t.Fatal(err)
		}
	}
	if r, e, _ := s.Held(); r != 2 || e != 8 {
		t.Fatalf("spool holds %d requests, %d events; want 2, 8", r, e)
	}
	if got := testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonKafkaError)) + testutil.ToFloat64(s.m.spooled.WithLabelValues(ReasonBehind)); got != 8 {
		t.Fatalf("spooled %v events, want 8", got)
	}
	// A crash, and a collector started on the same spool, with Kafka back.
	f2 := newKafka()
	reg2 := prometheus.NewRegistry()
	s2 := open(t, cfg, f2, reg2)
	defer s2.Close()
	if r, e, _ := s2.Held(); r != 2 || e != 8 {
		t.Fatalf("reopened spool holds %d requests, %d events; want 2, 8", r, e)
	}
	stop := run(t, s2)
	waitEmpty(t, s2)
	stop()
	if got := testutil.ToFloat64(s2.m.replayed); got != 8 {
		t.Fatalf("replayed %v events, want 8", got)
	}
	if n := len(f2.Messages()); n != 3 {
		t.Fatalf("Kafka took %d messages, want 3 frames", n)
	}
	s.Close()
}
