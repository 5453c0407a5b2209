package devstack

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/kafkacluster"
)

// TestDevApacheKafka: `veil dev --kafka apache --kafka-brokers 3` runs the
// pipeline on three Apache Kafka brokers, announces each with its pid,
// keeps three copies of the raw topic, stores an event, and leaves no
// broker process behind when it stops.
func TestDevApacheKafka(t *testing.T) {
	if _, err := kafkacluster.FindLibs(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	r := startWith(t, Options{Listen: "127.0.0.1:0", DataDir: dir, Kafka: KafkaApache, KafkaBrokers: 3}, 4*time.Minute)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = r.stop()
		}
	})

	if len(r.ep.KafkaNodes) != 3 {
		t.Fatalf("kafka_nodes: %+v, want 3 nodes", r.ep.KafkaNodes)
	}
	var addrs []string
	for i, n := range r.ep.KafkaNodes {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n.Pid))
		if n.ID != i+1 || n.Address == "" || err != nil || !strings.Contains(string(cmdline), "kafka.Kafka") {
			t.Fatalf("kafka node %+v is not a running broker (%v)", n, err)
		}
		addrs = append(addrs, n.Address)
	}
	if r.ep.Kafka != addrs[0] {
		t.Fatalf("kafka %q, want the first broker's address %q", r.ep.Kafka, addrs[0])
	}

	conn, err := kafka.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(app.DefaultConfig().Kafka.RawTopic)
	conn.Close()
	if err != nil || len(parts) == 0 {
		t.Fatalf("raw topic: %v %v", parts, err)
	}
	for _, p := range parts {
		if len(p.Replicas) != 3 {
			t.Fatalf("raw topic partition %d has %d replicas, want 3", p.ID, len(p.Replicas))
		}
	}

	token := readProject(t, dir).Token
	data := base64.StdEncoding.EncodeToString([]byte(`{"event":"dev_apache","properties":{"token":"` + token + `","distinct_id":"d1","$insert_id":"dev-apache-1"}}`))
	resp, err := http.Get(r.ep.Collector + "/track?data=" + url.QueryEscape(data))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "1" {
		t.Fatalf("track answered %q", body)
	}
	sent := time.Now()
	for query(t, r.ep, "SELECT count() FROM veil.events WHERE event = 'dev_apache'") != "1" {
		if time.Since(sent) > 30*time.Second {
			t.Fatal("row not queryable within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	stopped = true
	if err := r.stop(); err != nil {
		t.Fatalf("dev stopped with error: %v", err)
	}
	for _, n := range r.ep.KafkaNodes {
		if err := syscall.Kill(n.Pid, 0); err == nil {
			t.Errorf("kafka node %d (pid %d) still running after dev stopped", n.ID, n.Pid)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "endpoints.json")); !os.IsNotExist(err) {
		t.Fatal("endpoints.json left behind")
	}
}

// TestDevApacheKafkaWithoutJars: without the broker's jars, veil dev
// --kafka apache starts nothing and says what is missing and how to get it.
func TestDevApacheKafkaWithoutJars(t *testing.T) {
	t.Setenv(kafkacluster.LibsEnv, t.TempDir())
	dir := t.TempDir()
	err := Run(context.Background(), Options{Listen: "127.0.0.1:0", DataDir: dir, Kafka: KafkaApache, KafkaBrokers: 3}, zaptest.NewLogger(t), app.NewRegistry())
	if err == nil {
		t.Fatal("veil dev --kafka apache started without the jars")
	}
	for _, want := range []string{"kafka_2.13-" + kafkacluster.Version + ".jar", "make deps", "scripts/install-deps.sh"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "clickhouse")); !os.IsNotExist(err) {
		t.Error("ClickHouse was started anyway")
	}
}
