package kafkax

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// One embedded broker for the package; each test has topics of its own.
var cluster *kfake.Cluster

func TestMain(m *testing.M) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Close()
	os.Exit(code)
}

var topics atomic.Int64

// newTopic creates a topic of its own for one run of a test.
func newTopic(t *testing.T, partitions int) string {
	t.Helper()
	name := fmt.Sprintf("t%d", topics.Add(1))
	c := &kafka.Client{Addr: kafka.TCP(cluster.ListenAddrs()...)}
	res, err := c.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func testProducer(t *testing.T, topic string, cfg ProducerConfig) *Producer {
	t.Helper()
	p := NewProducer(cluster.ListenAddrs(), topic, cfg, nil)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// produceRequests counts the produce requests the broker gets for topic
// and the records in each; hold, when set, keeps the first one waiting
// until it is closed.
type produceRequests struct {
	mu      sync.Mutex
	records []int
}

func watchProduce(t *testing.T, topic string, hold chan struct{}) *produceRequests {
	t.Helper()
	pr := &produceRequests{}
	var stop atomic.Bool
	t.Cleanup(func() { stop.Store(true) })
	cluster.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if stop.Load() {
			cluster.DropControl()
			return nil, nil, false
		}
		n := 0
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic != topic {
				return nil, nil, false
			}
			for _, part := range tp.Partitions {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(part.Records); err == nil {
					n += int(b.NumRecords)
				}
			}
		}
		pr.mu.Lock()
		pr.records = append(pr.records, n)
		first := len(pr.records) == 1
		pr.mu.Unlock()
		if first && hold != nil {
			cluster.SleepControl(func() { <-hold })
		}
		return nil, nil, false
	})
	return pr
}

func (pr *produceRequests) get() []int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return append([]int(nil), pr.records...)
}

// readAll returns the values stored in partition of topic, in order.
func readAll(t *testing.T, topic string, partition int) []string {
	t.Helper()
	var out []string
	for _, m := range readMessages(t, cluster.ListenAddrs()[0], topic, partition) {
		out = append(out, string(m.Value))
	}
	return out
}

// readMessages returns the records stored in partition of topic, in
// order, asking the broker at addr for the partition's leader.
func readMessages(t *testing.T, addr, topic string, partition int) []kafka.Message {
	t.Helper()
	conn, err := kafka.DialLeader(context.Background(), "tcp", addr, topic, partition)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	last, err := conn.ReadLastOffset()
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for int64(len(out)) < last {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := conn.ReadBatch(1, 10<<20)
		for {
			m, err := b.ReadMessage()
			if err != nil {
				break
			}
			out = append(out, m)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("reading %s/%d at %d of %d: %v", topic, partition, len(out), last, err)
		}
	}
	return out
}

func messages(key string, values ...string) []kafka.Message {
	out := make([]kafka.Message, len(values))
	for i, v := range values {
		out[i] = kafka.Message{Key: []byte(key), Value: []byte(v)}
	}
	return out
}

// TestProducerGroupsWhileInFlight holds the first produce request at the
// broker while ten more calls arrive: they must go out together in one
// request as soon as it is answered, each call's messages together and
// in order, and every call must return without error.
func TestProducerGroupsWhileInFlight(t *testing.T) {
	topic := newTopic(t, 1)
	hold := make(chan struct{})
	reqs := watchProduce(t, topic, hold)
	p := testProducer(t, topic, DefaultProducerConfig())
	ctx := context.Background()

	errs := make(chan error, 11)
	go func() { errs <- p.WriteMessages(ctx, messages("a", "a0")...) }()
	waitFor(t, "the first request at the broker", func() bool { return len(reqs.get()) == 1 })
	for i := range 10 {
		k := "b" + strconv.Itoa(i)
		go func() { errs <- p.WriteMessages(ctx, messages(k, k+".0", k+".1", k+".2")...) }()
	}
	q := p.parts[0]
	waitFor(t, "ten calls waiting", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.pending) == 10
	})
	close(hold)
	for range 11 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call still waits 10s after the first request was answered")
		}
	}
	if got := reqs.get(); fmt.Sprint(got) != "[1 30]" {
		t.Fatalf("records per produce request: %v, want [1 30]", got)
	}
	got := readAll(t, topic, 0)
	if len(got) != 31 || got[0] != "a0" {
		t.Fatalf("stored %d messages: %v", len(got), got)
	}
	for i := 1; i < 31; i += 3 {
		k := strings.TrimSuffix(got[i], ".0")
		if got[i] != k+".0" || got[i+1] != k+".1" || got[i+2] != k+".2" {
			t.Fatalf("a call's messages apart or out of order at %d: %v", i, got)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.busy || len(q.pending) != 0 {
		t.Fatalf("the partition stays busy (%v) with %d writes", q.busy, len(q.pending))
	}
}

// TestProducerCallerDeadline: a call whose context ends while it waits
// for its turn returns at once; its message is not sent, and the
// partition goes on with the writes after it.
func TestProducerCallerDeadline(t *testing.T) {
	topic := newTopic(t, 1)
	hold := make(chan struct{})
	reqs := watchProduce(t, topic, hold)
	p := testProducer(t, topic, DefaultProducerConfig())
	first := make(chan error, 1)
	go func() { first <- p.WriteMessages(context.Background(), messages("a", "a0")...) }()
	waitFor(t, "the first request at the broker", func() bool { return len(reqs.get()) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.WriteMessages(ctx, messages("b", "b0")...); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past its deadline returned %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the call past its deadline returned after %v", d)
	}
	later := make(chan error, 1)
	go func() { later <- p.WriteMessages(context.Background(), messages("c", "c0")...) }()
	close(hold)
	for _, ch := range []chan error{first, later} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, topic, 0); strings.Join(got, ",") != "a0,c0" {
		t.Fatalf("stored %v, want a0,c0", got)
	}
}

// TestProducerKeysKeepPartitionAndOrder writes from many goroutines at
// once, some calls spanning partitions: every message is stored once, in
// the partition kafka-go's Hash balancer gives its key, a key's messages in
// the order they were written.
func TestProducerKeysKeepPartitionAndOrder(t *testing.T) {
	topic := newTopic(t, 4)
	p := testProducer(t, topic, DefaultProducerConfig())
	const workers, calls = 24, 30
	var wg sync.WaitGroup
	errs := make(chan error, workers*calls)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range calls {
				var msgs []kafka.Message
				// Two keys per worker; every third call writes both.
				for _, k := range []string{fmt.Sprintf("w%d-x", w), fmt.Sprintf("w%d-y", w)} {
					if c%3 != 0 && k[len(k)-1] == 'y' {
						continue
					}
					msgs = append(msgs, messages(k, fmt.Sprintf("%s/%03d/0", k, c), fmt.Sprintf("%s/%03d/1", k, c))...)
				}
				if err := p.WriteMessages(context.Background(), msgs...); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var balancer kafka.Hash
	total := 0
	last := map[string]string{}
	for part := range 4 {
		for _, v := range readAll(t, topic, part) {
			total++
			k := v[:strings.IndexByte(v, '/')]
			if want := balancer.Balance(kafka.Message{Key: []byte(k)}, 0, 1, 2, 3); want != part {
				t.Fatalf("%s stored in partition %d, want %d", v, part, want)
			}
			if v <= last[k] {
				t.Fatalf("%s stored after %s", v, last[k])
			}
			last[k] = v
		}
	}
	// x: every call, y: calls 0, 3, …, 27; two messages each.
	if want := workers * (calls + calls/3) * 2; total != want {
		t.Fatalf("stored %d messages, want %d", total, want)
	}
}

// TestProducerSplitsLargeWrites: a write over max_batch or
// max_batch_bytes goes out in several requests, in order.
func TestProducerSplitsLargeWrites(t *testing.T) {
	topic := newTopic(t, 1)
	reqs := watchProduce(t, topic, nil)
	cfg := DefaultProducerConfig()
	cfg.MaxBatch, cfg.MaxBatchBytes = 10, 1000
	p := testProducer(t, topic, cfg)
	var values []string
	for i := range 25 {
		values = append(values, fmt.Sprintf("m%02d", i))
	}
	values = append(values, strings.Repeat("x", 600), strings.Repeat("y", 600))
	if err := p.WriteMessages(context.Background(), messages("k", values...)...); err != nil {
		t.Fatal(err)
	}
	if got := reqs.get(); fmt.Sprint(got) != "[10 10 6 1]" {
		t.Fatalf("records per produce request: %v, want [10 10 6 1]", got)
	}
	if got := readAll(t, topic, 0); strings.Join(got, ",") != strings.Join(values, ",") {
		t.Fatalf("stored %v", got)
	}
}

// TestProducerFailsWithoutBroker: with the broker answering nothing, a
// write fails within its attempts instead of hanging, and a closed
// producer refuses writes.
func TestProducerFailsWithoutBroker(t *testing.T) {
	cfg := DefaultProducerConfig()
	cfg.WriteTimeout, cfg.MaxAttempts = 300*time.Millisecond, 2
	topic := newTopic(t, 1)
	p := testProducer(t, topic, cfg)
	if err := p.WriteMessages(context.Background(), messages("k", "v")...); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	defer stop.Store(true)
	cluster.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if stop.Load() {
			cluster.DropControl()
			return nil, nil, false
		}
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == topic {
				return nil, errors.New("connection dropped"), true
			}
		}
		return nil, nil, false
	})
	start := time.Now()
	err := p.WriteMessages(context.Background(), messages("k", "lost")...)
	if err == nil {
		t.Fatal("a write the broker never acknowledged reported success")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the failed write took %v", d)
	}
	_ = p.Close()
	if err := p.WriteMessages(context.Background(), messages("k", "after")...); !errors.Is(err, errProducerClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestProducerConfigValidate: each invalid setting is refused with its
// key named.
func TestProducerConfigValidate(t *testing.T) {
	if err := DefaultProducerConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for key, bad := range map[string]func(*ProducerConfig){
		"producer.max_batch":       func(c *ProducerConfig) { c.MaxBatch = 0 },
		"producer.max_batch_bytes": func(c *ProducerConfig) { c.MaxBatchBytes = -1 },
		"producer.write_timeout":   func(c *ProducerConfig) { c.WriteTimeout = 0 },
		"producer.max_attempts":    func(c *ProducerConfig) { c.MaxAttempts = 0 },
		"producer.compression":     func(c *ProducerConfig) { c.Compression = "brotli" },
	} {
		c := DefaultProducerConfig()
		bad(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+" ") {
			t.Errorf("%s: %v", key, err)
		}
	}
}

// TestProducerRecoversAfterBrokerRestart: writes fail while the broker is
// down and succeed again once it is back on the same address.
func TestProducerRecoversAfterBrokerRestart(t *testing.T) {
	start := func(port int) *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(2, "restart"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := start(0)
	addr := first.ListenAddrs()[0]
	port, err := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultProducerConfig()
	cfg.WriteTimeout, cfg.MaxAttempts = 500*time.Millisecond, 2
	p := NewProducer([]string{addr}, "restart", cfg, nil)
	defer p.Close()
	if err := p.WriteMessages(context.Background(), messages("k", "before")...); err != nil {
		t.Fatal(err)
	}
	first.Close()
	if err := p.WriteMessages(context.Background(), messages("k", "down")...); err == nil {
		t.Fatal("a write with the broker down reported success")
	}
	second := start(port)
	defer second.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := p.WriteMessages(context.Background(), messages("k", "after")...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing 15s after the broker came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestProducerCodecs writes with each compression the configuration
// offers and reads the records back as a consumer would: keys, values,
// headers and times as written, a message without a time stamped with
// the time it was sent.
func TestProducerCodecs(t *testing.T) {
	stamped := time.Date(2026, 3, 4, 5, 6, 7, 8_000_000, time.UTC)
	for _, name := range []string{"none", "gzip", "snappy", "lz4", "zstd", "auto"} {
		t.Run(name, func(t *testing.T) {
			topic := newTopic(t, 1)
			cfg := DefaultProducerConfig()
			cfg.Compression = name
			p := testProducer(t, topic, cfg)
			before := time.Now().Truncate(time.Millisecond)
			in := []kafka.Message{
				{Key: []byte("k1"), Value: []byte(strings.Repeat("value one ", 40)), Time: stamped,
					Headers: []kafka.Header{{Key: "h", Value: []byte("1")}}},
				{Key: []byte("k1"), Value: []byte("value two")},
			}
			if err := p.WriteMessages(context.Background(), in...); err != nil {
				t.Fatal(err)
			}
			after := time.Now()
			out := readMessages(t, cluster.ListenAddrs()[0], topic, 0)
			if len(out) != 2 {
				t.Fatalf("read back %d records, want 2", len(out))
			}
			if string(out[0].Key) != "k1" || string(out[0].Value) != string(in[0].Value) ||
				len(out[0].Headers) != 1 || out[0].Headers[0].Key != "h" || string(out[0].Headers[0].Value) != "1" ||
				!out[0].Time.Equal(stamped) {
				t.Fatalf("first record read back as key %q value %q headers %v time %v", out[0].Key, out[0].Value, out[0].Headers, out[0].Time)
			}
			if string(out[1].Value) != "value two" || len(out[1].Headers) != 0 ||
				out[1].Time.Before(before) || out[1].Time.After(after) {
				t.Fatalf("second record read back as value %q headers %v time %v (sent between %v and %v)", out[1].Value, out[1].Headers, out[1].Time, before, after)
			}
			if in[1].Time != (time.Time{}) {
				t.Fatal("the caller's message was given a time")
			}
		})
	}
}

// TestProducerSplitsFarApartTimes: records whose times are more than 24.8
// days from the first of a request (a 32-bit varint of milliseconds) go
// in a request of their own, and each keeps its time exactly.
func TestProducerSplitsFarApartTimes(t *testing.T) {
	topic := newTopic(t, 1)
	reqs := watchProduce(t, topic, nil)
	p := testProducer(t, topic, DefaultProducerConfig())
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	times := []time.Time{
		base,
		base.Add(maxTimeDelta - time.Millisecond), // still with the first
		base.Add(maxTimeDelta),                    // starts the second request
		base.Add(maxTimeDelta + time.Hour),        // with it
		base,                                      // too far before it: a third
	}
	in := messages("k", "a", "b", "c", "d", "e")
	for i := range in {
		in[i].Time = times[i]
	}
	if err := p.WriteMessages(context.Background(), in...); err != nil {
		t.Fatal(err)
	}
	if got := reqs.get(); fmt.Sprint(got) != "[2 2 1]" {
		t.Fatalf("records per produce request: %v, want [2 2 1]", got)
	}
	out := readMessages(t, cluster.ListenAddrs()[0], topic, 0)
	if len(out) != len(in) {
		t.Fatalf("read back %d records, want %d", len(out), len(in))
	}
	for i, m := range out {
		if string(m.Value) != string(in[i].Value) || !m.Time.Equal(times[i]) {
			t.Errorf("record %d read back as %q at %v, want %q at %v", i, m.Value, m.Time, in[i].Value, times[i])
		}
	}
}

// TestProducerFollowsMovedLeader moves a partition's leadership to
// another broker between two writes: the second write, sent first to the
// old leader on the connection the producer keeps, is sent again to the
// new one and succeeds, and the partition holds both messages once, in
// order.
func TestProducerFollowsMovedLeader(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.Ports(0, 0, 0), kfake.SeedTopics(1, "moving"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := DefaultProducerConfig()
	cfg.WriteTimeout = 2 * time.Second
	p := NewProducer(c.ListenAddrs(), "moving", cfg, nil)
	defer p.Close()
	if err := p.WriteMessages(context.Background(), messages("k", "before")...); err != nil {
		t.Fatal(err)
	}
	from := c.LeaderFor("moving", 0)
	to := (from + 1) % 3
	if err := c.MoveTopicPartition("moving", 0, to); err != nil {
		t.Fatal(err)
	}
	if got := c.LeaderFor("moving", 0); got != to {
		t.Fatalf("leader is %d after the move to %d", got, to)
	}
	if err := p.WriteMessages(context.Background(), messages("k", "after")...); err != nil {
		t.Fatalf("write after the leader moved from %d to %d: %v", from, to, err)
	}
	var got []string
	for _, m := range readMessages(t, c.ListenAddrs()[0], "moving", 0) {
		got = append(got, string(m.Value))
	}
	if strings.Join(got, ",") != "before,after" {
		t.Fatalf("the partition holds %v, want before,after", got)
	}
}

// TestProducerCloseClosesConnections: Close waits for a write in flight,
// which still succeeds, then closes every partition's connection, the
// idle one's and the one that was sending; a write after Close is refused.
func TestProducerCloseClosesConnections(t *testing.T) {
	topic := newTopic(t, 2)
	hold := make(chan struct{})
	reqs := watchProduce(t, topic, hold)
	p := NewProducer(cluster.ListenAddrs(), topic, DefaultProducerConfig(), nil)
	var balancer kafka.Hash
	keyFor := func(part int) string {
		for i := 0; ; i++ {
			if k := "k" + strconv.Itoa(i); balancer.Balance(kafka.Message{Key: []byte(k)}, 0, 1) == part {
				return k
			}
		}
	}
	// Partition 1 is written to first (held at the broker until released),
	// then partition 0, whose write is answered.
	busyDone := make(chan error, 1)
	go func() { busyDone <- p.WriteMessages(context.Background(), messages(keyFor(1), "held")...) }()
	waitFor(t, "the held request at the broker", func() bool { return len(reqs.get()) == 1 })
	if err := p.WriteMessages(context.Background(), messages(keyFor(0), "idle")...); err != nil {
		t.Fatal(err)
	}
	conn := func(part int) *kafka.Conn {
		q := p.parts[part]
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.conn
	}
	if conn(0) == nil || conn(1) == nil {
		t.Fatal("a partition written to has no connection")
	}
	closed := make(chan struct{})
	go func() { _ = p.Close(); close(closed) }()
	waitFor(t, "Close to begin", p.closed.Load)
	if err := p.WriteMessages(context.Background(), messages(keyFor(0), "after")...); !errors.Is(err, errProducerClosed) {
		t.Fatalf("a write after Close began: %v", err)
	}
	// Close waits for the write in flight: it has not returned while the
	// broker holds the write, and returns once the broker answers. (The
	// caller's WriteMessages returns after the producer is done with the
	// write, so its result may come a moment after Close's.)
	select {
	case <-closed:
		t.Fatal("Close returned while the write in flight was held at the broker")
	case <-time.After(200 * time.Millisecond):
	}
	close(hold)
	<-closed
	select {
	case err := <-busyDone:
		if err != nil {
			t.Fatalf("the write in flight at Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write in flight at Close never returned")
	}
	if conn(0) != nil || conn(1) != nil {
		t.Fatal("a connection stays open after Close")
	}
	if got := readAll(t, topic, 1); strings.Join(got, ",") != "held" {
		t.Fatalf("partition 1 holds %v", got)
	}
}

// TestProducerCloseWaitsForGoneCallers: a call whose caller's context ended
// while it waited for its turn leaves a goroutine of the producer to take
// its turns (so that the writes queued behind it are sent). Close must wait
// for that goroutine: once Close has returned, no goroutine of the producer
// runs, and the write queued behind the gone caller's was sent.
func TestProducerCloseWaitsForGoneCallers(t *testing.T) {
	topic := newTopic(t, 1)
	hold := make(chan struct{})
	reqs := watchProduce(t, topic, hold)
	p := NewProducer(cluster.ListenAddrs(), topic, DefaultProducerConfig(), nil)
	first := make(chan error, 1)
	go func() { first <- p.WriteMessages(context.Background(), messages("a", "a0")...) }()
	waitFor(t, "the first request at the broker", func() bool { return len(reqs.get()) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.WriteMessages(ctx, messages("b", "b0")...); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past its deadline returned %v", err)
	}
	if producerGoroutines() != 1 {
		t.Fatalf("%d goroutines of the producer take the gone caller's turns, want 1", producerGoroutines())
	}
	later := make(chan error, 1)
	go func() { later <- p.WriteMessages(context.Background(), messages("c", "c0")...) }()
	waitFor(t, "the third call queued", func() bool {
		q := p.parts[0]
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.pending) == 2
	})

	closed := make(chan struct{})
	go func() { _ = p.Close(); close(closed) }()
	// The request held at the broker keeps every call under way; a Close
	// that returns meanwhile has left them running.
	select {
	case <-closed:
		t.Fatal("Close returned while a write it owns was held at the broker")
	case <-time.After(200 * time.Millisecond):
	}
	close(hold)
	<-closed
	// Its last step, after the call it ends is counted out, may still
	// be under way.
	waitFor(t, "the producer's goroutines to end after Close", func() bool { return producerGoroutines() == 0 })
	for _, ch := range []chan error{first, later} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatal("Close returned before a call under way")
		}
	}
	if got := readAll(t, topic, 0); strings.Join(got, ",") != "a0,c0" {
		t.Fatalf("stored %v, want a0,c0", got)
	}
}

// producerGoroutines counts the goroutines that a Producer's methods
// started and that still run.
func producerGoroutines() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "created by github.com/veilhq/veil/internal/kafkax.(*Producer).")
}

// muteBroker is a broker that takes connections and answers nothing, as a
// stopped (SIGSTOP) broker's kernel does; it is closed at cleanup.
func muteBroker(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestProducerPassesMuteBootstrapBroker: the first bootstrap broker takes
// connections and answers nothing (stopped, or its host cut off). The
// producer asks the next one within the same write: each broker has a
// share of producer.write_timeout, and the first broker that answered is
// asked first from then on. Before, the first broker used the whole
// timeout of every attempt, and every write failed until the cluster
// dropped it.
func TestProducerPassesMuteBootstrapBroker(t *testing.T) {
	topic := newTopic(t, 2)
	cfg := DefaultProducerConfig()
	cfg.WriteTimeout, cfg.MaxAttempts = 2*time.Second, 3
	p := NewProducer(append([]string{muteBroker(t)}, cluster.ListenAddrs()...), topic, cfg, nil)
	defer p.Close()
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := p.WriteMessages(ctx, messages("k"+strconv.Itoa(i), "v")...)
		cancel()
		if err != nil {
			t.Fatalf("write %d with a mute first broker: %v", i, err)
		}
	}
}

func TestErrorReason(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"not enough replicas", kafka.NotEnoughReplicas, ReasonNotEnoughReplicas},
		{"not enough replicas after append", kafka.NotEnoughReplicasAfterAppend, ReasonNotEnoughReplicas},
		{"not leader", fmt.Errorf("produce: %w", kafka.NotLeaderForPartition), ReasonNotLeader},
		{"leader not available", kafka.LeaderNotAvailable, ReasonNotLeader},
		{"broker's request timeout", kafka.RequestTimedOut, ReasonReplicationTimeout},
		{"too large", kafka.MessageSizeTooLarge, ReasonTooLarge},
		{"connection refused", refused, ReasonUnreachable},
		{"connection lost", io.EOF, ReasonUnreachable},
		{"deadline, nothing failed", &DeadlineError{Err: context.DeadlineExceeded}, ReasonTimeout},
		{"deadline while not enough replicas", &DeadlineError{Err: context.DeadlineExceeded, Cause: kafka.NotEnoughReplicas}, ReasonNotEnoughReplicas},
		{"deadline while unreachable", &DeadlineError{Err: context.DeadlineExceeded, Cause: refused}, ReasonUnreachable},
		{"other kafka error", kafka.InvalidTopic, ReasonOther},
		{"other", errors.New("boom"), ReasonOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ErrorReason(tt.err)
			if got != tt.want {
				t.Errorf("ErrorReason(%v) = %q, want %q", tt.err, got, tt.want)
			}
			if !slices.Contains(Reasons, got) {
				t.Errorf("%q is not among Reasons", got)
			}
		})
	}
}

// TestProducerDeadlineNamesCause: a write whose caller's deadline passes
// while the broker refuses it says why, for the collector's
// veil_collector_produce_errors_total{reason}.
func TestProducerDeadlineNamesCause(t *testing.T) {
	topic := newTopic(t, 1)
	cfg := DefaultProducerConfig()
	cfg.MaxAttempts = 1000
	p := testProducer(t, topic, cfg)
	var stop atomic.Bool
	defer stop.Store(true)
	cluster.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if stop.Load() {
			cluster.DropControl()
			return nil, nil, false
		}
		r := req.(*kmsg.ProduceRequest)
		if len(r.Topics) != 1 || r.Topics[0].Topic != topic {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = topic
		rp := kmsg.NewProduceResponseTopicPartition()
		rp.ErrorCode = int16(kafka.NotEnoughReplicas)
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	// Two callers: the one sending, and one queued behind it, whose
	// deadline passes while the first is retried.
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
			defer cancel()
			errs[i] = p.WriteMessages(ctx, messages("k", "v"+strconv.Itoa(i))...)
		}()
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	for i, err := range errs {
		if got := ErrorReason(err); got != ReasonNotEnoughReplicas {
			t.Errorf("caller %d: reason %q (%v), want %q", i, got, err, ReasonNotEnoughReplicas)
		}
	}
	var de *DeadlineError
	if !errors.As(errs[1], &de) || !errors.Is(errs[1], context.DeadlineExceeded) {
		t.Errorf("the queued caller's error %v is not its deadline", errs[1])
	}
}

// TestCompressionForEnvelopes: auto is lz4 for plain envelopes and none for
// sealed ones, whose bytes do not compress; a setting an operator chose is
// kept either way.
func TestCompressionForEnvelopes(t *testing.T) {
	for _, tc := range []struct {
		set    string
		sealed bool
		want   string
	}{
		{"auto", false, "lz4"}, {"auto", true, "none"},
		{"lz4", true, "lz4"}, {"zstd", false, "zstd"}, {"none", false, "none"},
	} {
		cfg := DefaultProducerConfig()
		if cfg.Compression != CompressionAuto {
			t.Fatalf("default compression %q, want auto", cfg.Compression)
		}
		cfg.Compression = tc.set
		if got := cfg.ForEnvelopes(tc.sealed).Compression; got != tc.want {
			t.Errorf("%s, sealed %v: %s, want %s", tc.set, tc.sealed, got, tc.want)
		}
	}
}
