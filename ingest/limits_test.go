package ingest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// eventWith builds a /track event with n extra properties made by prop(i).
func eventWith(n int, prop func(i int) string) string {
	var b strings.Builder
	b.WriteString(`{"event":"e","properties":{"token":"tok-shop"`)
	for i := 0; i < n; i++ {
		b.WriteString(`,"p` + strconv.Itoa(i) + `":` + prop(i))
	}
	b.WriteString("}}")
	return b.String()
}

func objectWith(n int) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = `"k` + strconv.Itoa(i) + `":1`
	}
	return "{" + strings.Join(keys, ",") + "}"
}

func TestLimits(t *testing.T) {
	one := func(int) string { return "1" }
	nested := func(levels int) string {
		return eventWith(1, func(int) string {
			return strings.Repeat(`{"k":`, levels) + "1" + strings.Repeat("}", levels)
		})
	}
	list := func(n int) string {
		return eventWith(1, func(int) string { return "[" + strings.TrimSuffix(strings.Repeat("1,", n), ",") + "]" })
	}
	bigString := func(n int) string {
		return eventWith(1, func(int) string { return `"` + strings.Repeat("x", n) + `"` })
	}
	tests := []struct {
		name   string
		event  string
		reason string // "" when accepted
		msg    string
	}{
		{"254 properties", eventWith(254, one), "", ""},
		{"255 properties", eventWith(255, one), reasonTooManyProps, "event 0: properties: has 255 properties or more"},
		{"object with 254 keys", eventWith(1, func(int) string { return objectWith(254) }), "", ""},
		{"object with 255 keys", eventWith(1, func(int) string { return objectWith(255) }), reasonTooManyProps, "event 0: properties.p0: object has 255 keys or more"},
		{"objects 3 deep", nested(3), "", ""},
		{"objects 4 deep", nested(4), reasonTooDeep, "event 0: properties.p0: nested more than 3 levels deep"},
		{"lists 3 deep", eventWith(1, func(int) string { return "[[[1]]]" }), "", ""},
		{"lists 4 deep", eventWith(1, func(int) string { return "[[[[1]]]]" }), reasonTooDeep, "event 0: properties.p0: nested more than 3 levels deep"},
		{"list of 254", list(254), "", ""},
		{"list of 255", list(255), reasonArrayTooLong, "event 0: properties.p0: list has 255 items or more"},
		{"event just under 1 MB", bigString(1<<20 - 100), "", ""},
		{"event over 1 MB", bigString(1 << 20), reasonTooLarge, "event 0: event exceeds 1048576 bytes"},
		{"event name of 255 bytes", `{"event":"` + strings.Repeat("n", 255) + `","properties":{"token":"tok-shop"}}`, "", ""},
		{"event name of 256 bytes", `{"event":"` + strings.Repeat("n", 256) + `","properties":{"token":"tok-shop"}}`, reasonMalformed, "event 0: event: event name exceeds 255 bytes"},
		{"distinct_id of 256 bytes", `{"event":"e","properties":{"token":"tok-shop","distinct_id":"` + strings.Repeat("d", 256) + `"}}`, reasonInvalidID, "event 0: properties.distinct_id: distinct_id exceeds 255 bytes"},
		{"insert_id of 36", `{"event":"e","properties":{"token":"tok-shop","$insert_id":"` + strings.Repeat("a", 36) + `"}}`, "", ""},
		{"insert_id of 37", `{"event":"e","properties":{"token":"tok-shop","$insert_id":"` + strings.Repeat("a", 37) + `"}}`, reasonInvalidInsertID, "event 0: properties.$insert_id: $insert_id must be 1 to 36 characters of A-Z, a-z, 0-9 and -"},
		{"time in ms, 4 days old", fmt.Sprintf(`{"event":"e","properties":{"token":"tok-shop","time":%d}}`, fixedNow.Add(-96*time.Hour).UnixMilli()), "", ""},
		{"time in float seconds, 6 days old", fmt.Sprintf(`{"event":"e","properties":{"token":"tok-shop","time":%d.25}}`, fixedNow.Add(-144*time.Hour).Unix()), reasonTooOld, "event 0: properties.time: older than 5 days; send historical events to /import"},
		{"time 59 minutes ahead", fmt.Sprintf(`{"event":"e","properties":{"token":"tok-shop","time":%d}}`, fixedNow.Add(59*time.Minute).Unix()), "", ""},
		{"time a boolean", `{"event":"e","properties":{"token":"tok-shop","time":true}}`, reasonMalformed, "event 0: properties.time: time is not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, reg := newTestCollector(t, nil)
			resp := do(t, c, post("/track?verbose=1", "application/json", []byte(tt.event)))
			if tt.reason == "" {
				if resp.body != `{"status":1,"error":null}` || p.Len() != 1 {
					t.Fatalf("got %q, %d produced", resp.body, p.Len())
				}
				return
			}
			v := parseVerbose(t, resp.body)
			if v.Status != 0 || v.Error == nil || *v.Error != tt.msg || p.Len() != 0 {
				t.Fatalf("got %q, want error %q", resp.body, tt.msg)
			}
			if n := counter(t, reg, "veil_collector_events_rejected_total", tt.reason); n != 1 {
				t.Fatalf("%s counted %v", tt.reason, n)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	c, p, reg := newTestCollector(t, func(c *Config) {
		c.Limits.RateLimit = 100
		c.Limits.MaxEventsPerRequest = 50
		c.Limits.RateBurst = 60
	})
	now := fixedNow
	c.now = func() time.Time { return now }
	batch := func(n int) []byte {
		return []byte("[" + strings.TrimSuffix(strings.Repeat(evA+",", n), ",") + "]")
	}
	if resp := do(t, c, post("/track?verbose=1", "application/json", batch(50))); resp.body != `{"status":1,"error":null}` {
		t.Fatalf("first request: %d %q", resp.status, resp.body)
	}
	// 10 tokens left; 20 more events must wait 100 ms.
	resp := do(t, c, post("/track?verbose=1", "application/json", batch(20)))
	if resp.status != http.StatusTooManyRequests || resp.body != `{"status":0,"error":"Project exceeded rate limits. Please retry the request with exponential backoff."}` || resp.header.Get("Retry-After") != "1" {
		t.Fatalf("second request: %d %q Retry-After %q", resp.status, resp.body, resp.header.Get("Retry-After"))
	}
	if n := counter(t, reg, "veil_collector_events_rejected_total", reasonRateLimited); n != 20 {
		t.Fatalf("rate_limited counted %v, want 20", n)
	}
	// Import answers in its own shape; a refused request took no tokens.
	r := post("/import", "application/json", []byte(evImport))
	r.SetBasicAuth("sec-shop", "")
	if resp := do(t, c, r); resp.status != 200 {
		t.Fatalf("a request within the remaining tokens: %d %q", resp.status, resp.body)
	}
	r = post("/import", "application/json", batch(20))
	r.SetBasicAuth("sec-shop", "")
	if resp := do(t, c, r); resp.status != 429 || resp.body != `{"code":429,"error":"Project exceeded rate limits. Please retry the request with exponential backoff.","status":"Too Many Requests"}` {
		t.Fatalf("import: %d %q", resp.status, resp.body)
	}
	// Time refills the bucket.
	now = now.Add(time.Second)
	if resp := do(t, c, post("/track", "application/json", batch(50))); resp.status != 200 || resp.body != "1" {
		t.Fatalf("after a second: %d %q", resp.status, resp.body)
	}
	if n := p.Len(); n != 101 {
		t.Fatalf("produced %d, want 101", n)
	}
}

func TestRateLimitIsPerProject(t *testing.T) {
	c, p, _ := newTestCollector(t, func(c *Config) {
		c.Limits.RateLimit = 1
		c.Limits.MaxEventsPerRequest = 2
		c.Projects = append(c.Projects, Project{Name: "blog", Token: "tok-blog"})
	})
	other := strings.ReplaceAll(evA, "tok-shop", "tok-blog")
	do(t, c, post("/track", "application/json", []byte("["+evA+","+evA+"]")))
	if resp := do(t, c, post("/track", "application/json", []byte(other))); resp.status != 200 {
		t.Fatalf("another project was limited: %d", resp.status)
	}
	if resp := do(t, c, post("/track", "application/json", []byte(evA))); resp.status != 429 {
		t.Fatalf("status %d, want 429", resp.status)
	}
	if p.Len() != 3 {
		t.Fatalf("produced %d", p.Len())
	}
}

func TestRateLimitOffByDefault(t *testing.T) {
	c, _, _ := newTestCollector(t, nil)
	if c.limiter != nil {
		t.Fatal("rate limiting is on by default")
	}
	for i := 0; i < 5; i++ {
		if resp := do(t, c, post("/track", "application/json", []byte("["+strings.TrimSuffix(strings.Repeat(evA+",", 2000), ",")+"]"))); resp.status != 200 {
			t.Fatalf("status %d", resp.status)
		}
	}
}
