package devstack

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/internal/testsvc"
)

// sealCanaries are personal data a request carries in every place the
// envelope keeps it: identifiers, the address, the user agent, the
// cookie, property values.
var sealCanaries = []string{
	"user-canary-4711", "device-canary-0815", "canary.alice@example.com", "Alice Canaryname",
	"+14155550123", "203.0.113.99", "CanaryBrowser/7.1", "secret-cookie-canary",
}

// TestDevKafkaHoldsNoPersonalData: the embedded broker's data directory,
// which holds every record of the raw topic as veil dev keeps it on disk,
// holds none of the personal data of the events it carried, in any form:
// the collector sealed each envelope and keyed it by a hash of the user.
func TestDevKafkaHoldsNoPersonalData(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	token := readProject(t, dir).Token
	const events = 20
	var batch []map[string]any
	for i := range events {
		batch = append(batch, map[string]any{"event": "sealed_at_rest", "properties": map[string]any{
			"token": token, "distinct_id": "user-canary-4711", "$device_id": "device-canary-0815",
			"$insert_id": "sealed-" + string(rune('a'+i)), "$email": "canary.alice@example.com",
			"$name": "Alice Canaryname", "note": "call +14155550123", "plan": "premium",
		}})
	}
	b, _ := json.Marshal(batch)
	body := url.Values{"data": {base64.StdEncoding.EncodeToString(b)}}.Encode()
	req, _ := http.NewRequest(http.MethodPost, r.ep.Collector+"/track?ip=1", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "CanaryBrowser/7.1")
	req.Header.Set("X-Forwarded-For", "203.0.113.99")
	req.AddCookie(&http.Cookie{Name: "session", Value: "secret-cookie-canary"})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/track answered %d", resp.StatusCode)
	}
	deadline := time.Now().Add(30 * time.Second)
	for query(t, r.ep, "SELECT count() FROM veil.events WHERE event = 'sealed_at_rest'") != "20" {
		if time.Now().After(deadline) {
			t.Fatal("the events were not stored within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// An envelope written to the raw topic in the clear, by a producer
	// that is no collector: the worker refuses it and keeps it, sealed, in
	// the dead-letter topic.
	raw, dlq := app.DefaultConfig().Kafka.RawTopic, app.DefaultConfig().Kafka.DLQTopic
	plain := `{"project":"` + readProject(t, dir).ProjectID + `","endpoint":"track","ip":"203.0.113.99","event":{"event":"x","properties":{"distinct_id":"user-canary-4711","$email":"canary.alice@example.com"}}}`
	const plainKey = "user-canary-4711"
	w := &kafka.Writer{Addr: kafka.TCP(r.ep.Kafka), Topic: raw}
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte(plainKey), Value: []byte(plain)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var dead []kafka.Message
	for deadline := time.Now().Add(30 * time.Second); len(dead) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the plain envelope was not dead-lettered within 30 s")
		}
		dead = testsvc.Records(t, r.ep.Kafka, dlq)
	}
	if len(dead) != 1 || !seal.IsSealed(dead[0].Value) {
		t.Fatalf("%d dead-lettered records, the first sealed: %v", len(dead), len(dead) > 0 && seal.IsSealed(dead[0].Value))
	}
	if h := testsvc.Header(dead[0], "veil-reason"); h != "unsealed" {
		t.Fatalf("dead-letter reason %q, want unsealed", h)
	}
	recs := testsvc.Records(t, r.ep.Kafka, raw)
	sealed := 0
	for _, m := range append(recs, dead...) {
		if seal.IsSealed(m.Value) {
			sealed++
		} else if string(m.Value) == plain {
			continue // the one written in the clear
		}
		var b bytes.Buffer
		b.Write(m.Key)
		b.Write(m.Value)
		for _, h := range m.Headers {
			b.WriteString(h.Key)
			b.Write(h.Value)
		}
		scan(t, m.Topic+" record", b.Bytes())
	}
	// Every collector-written record of the raw topic is sealed; the one
	// written in the clear is the exception the scan must skip.
	if sealed != events+1 || len(recs) != events+1 {
		t.Fatalf("%d raw records and %d dead-lettered, %d sealed; want %d sealed", len(recs), len(dead), sealed, events+1)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	files, size := 0, 0
	err = filepath.WalkDir(filepath.Join(dir, "kafka"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		size += len(b)
		// All but the one record written in the clear.
		b = bytes.ReplaceAll(bytes.ReplaceAll(b, []byte(plain), nil), []byte(plainKey), nil)
		scan(t, strings.TrimPrefix(p, dir), b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if size == 0 {
		t.Fatal("the embedded broker's data directory is empty")
	}
	t.Logf("figures: %d raw-topic records and %d dead-lettered, all sealed by Veil, and the embedded broker's %d files (%d bytes): no canary", events, len(dead), files, size)
}

// scan fails the test for each canary b holds, in any of its forms.
func scan(t *testing.T, where string, b []byte) {
	t.Helper()
	for _, c := range sealCanaries {
		for _, f := range []string{c, strings.ToLower(c), url.QueryEscape(c), base64.StdEncoding.EncodeToString([]byte(c))} {
			if bytes.Contains(b, []byte(f)) {
				t.Errorf("%s holds %q", where, f)
			}
		}
	}
}
