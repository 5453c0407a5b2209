package devstack

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
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

// TestDevKafkaHoldsNoPersonalData: the embedded broker's data directory,
// which holds every record of the raw topic as veil dev keeps it on disk,
// holds none of the personal data of the events it carried, in any form:
// the collector sealed the request's envelopes, compressed, in a frame
// keyed by a hash of the user.
func TestDevKafkaHoldsNoPersonalData(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	token := readProject(t, dir).Token
	// The canaries of the ClickHouse canary test, in the same places: the
	// identifiers, properties named like PII and free text holding it,
	// nested values, a group, the address, the user agent, the referrer
	// and a cookie.
	const events = 20
	var batch []map[string]any
	for i := range events {
		batch = append(batch, map[string]any{"event": "sealed_at_rest", "properties": map[string]any{
			"token": token, "distinct_id": "user-canary-4711", "$device_id": "device-canary-0815", "$user_id": "user-canary-4711",
			"$insert_id": fmt.Sprintf("sealed-%d", i), "$email": "canary.alice@example.com", "$name": "Alice Canaryname",
			"$phone": "+14155550123", "ip": "203.0.113.99",
			"$current_url":             "https://shop.example/pay?email=canary.alice%40example.com#card=4111111111111111",
			"note":                     "card 4111 1111 1111 1111, ssn 078-05-1120, iban GB82WEST12345698765432",
			"canary.alice@example.com": "an email as a property name",
			"nested": map[string]any{"server": "2001:db8::99", "auth": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ",
				"list": []any{"+14155550123", "plain-value"}},
			"company": "group-canary-acme", "plan": "premium",
		}})
	}
	b, _ := json.Marshal(batch)
	body := url.Values{"data": {base64.StdEncoding.EncodeToString(b)}}.Encode()
	req, _ := http.NewRequest(http.MethodPost, r.ep.Collector+"/track?ip=1", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36 canary.alice@example.com")
	req.Header.Set("Referer", "https://mail.example/inbox/canary.alice@example.com")
	req.Header.Set("X-Forwarded-For", "198.51.100.42")
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
	sealed, frames := 0, 0
	for _, m := range recs {
		if seal.IsFrame(m.Value) {
			frames++
			sealed += seal.Count(m.Value)
		}
	}
	for _, m := range append(recs, dead...) {
		if !seal.IsSealed(m.Value) && string(m.Value) == plain {
			continue // the one written in the clear
		}
		var b bytes.Buffer
		b.Write(m.Key)
		b.Write(m.Value)
		for _, h := range m.Headers {
			b.WriteString(h.Key)
			b.Write(h.Value)
		}
		scan(t, m.Topic+" record", b.Bytes(), token)
	}
	// Every collector-written record of the raw topic is sealed: the
	// request's 20 events, of one user, in one frame; the one written in
	// the clear is the exception the scan must skip.
	if sealed != events || frames != 1 || len(recs) != frames+1 {
		t.Fatalf("%d raw records, %d of them frames holding %d events; want one frame of %d and the plain record", len(recs), frames, sealed, events)
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
		scan(t, strings.TrimPrefix(p, dir), b, token)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if size == 0 {
		t.Fatal("the embedded broker's data directory is empty")
	}
	t.Logf("figures: %d events in %d sealed raw-topic frame and %d dead-lettered record sealed by Veil, and the embedded broker's %d files (%d bytes): no canary", sealed, frames, len(dead), files, size)
}

// scan fails the test for each canary b holds, in any of its forms, the
// dev project's token among them.
func scan(t *testing.T, where string, b []byte, token string) {
	t.Helper()
	for _, c := range append([]string{token}, testsvc.PIICanaries...) {
		for _, f := range append(testsvc.CanaryForms(c), base64.StdEncoding.EncodeToString([]byte(c))) {
			if bytes.Contains(b, []byte(f)) {
				t.Errorf("%s holds %q", where, f)
			}
		}
	}
}
