package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/testsvc"
)

// postRaw sends payload as mixpanel-browser does (form data=, base64) with
// the given headers and cookies, and requires {"status":1}.
func postRaw(t *testing.T, s *stack, path string, payload any, hdr map[string]string, cookies ...*http.Cookie) {
	t.Helper()
	b, _ := json.Marshal(payload)
	body := url.Values{"data": {base64.StdEncoding.EncodeToString(b)}}.Encode()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPost, s.collector+path+sep+"verbose=1", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(got), `"status":1`) {
		t.Fatalf("%s answered %d %s", path, resp.StatusCode, got)
	}
}

// TestNoCanaryInAnyColumn sends events, profile updates and group updates
// carrying known PII in every position, then reads every column of every
// table of the database: no canary appears, and the non-PII data is there.
func TestNoCanaryInAnyColumn(t *testing.T) {
	s := newStack(t, func(c *app.Config) {
		c.Collector.TrustedProxies = []string{"127.0.0.1/32"}
		c.Deidentify.Policies.Default.GroupKeys = []string{"company"}
	})
	s.startCollector()
	s.startWorker(false)
	hdr := map[string]string{
		"X-Forwarded-For": "198.51.100.42",
		"User-Agent":      "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36 canary.alice@example.com",
		"Referer":         "https://mail.example/inbox/canary.alice@example.com",
	}
	now := time.Now().Unix()
	track := []map[string]any{{
		"event": "checkout",
		"properties": map[string]any{
			"token":                    "tok-shop",
			"distinct_id":              "user-canary-4711",
			"$device_id":               "device-canary-0815",
			"$user_id":                 "user-canary-4711",
			"time":                     now,
			"$insert_id":               "canary-1",
			"$email":                   "canary.alice@example.com",
			"$name":                    "Alice Canaryname",
			"$phone":                   "+14155550123",
			"ip":                       "203.0.113.99",
			"$current_url":             "https://shop.example/pay?email=canary.alice%40example.com&utm_campaign=winter#card=4111111111111111",
			"$referrer":                "https://mail.example/u/canary.alice@example.com",
			"note":                     "card 4111 1111 1111 1111, ssn 078-05-1120, iban GB82WEST12345698765432",
			"canary.alice@example.com": "an email as a property name",
			"nested": map[string]any{
				"server": "2001:db8::99",
				"auth":   "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ",
				"list":   []any{"+14155550123", "plain-value"},
			},
			"company": "group-canary-acme",
			"plan":    "premium",
			"amount":  42.5,
		},
	}}
	session := &http.Cookie{Name: "session", Value: "secret-cookie-canary"}
	postRaw(t, s, "/track", track, hdr, session)
	postRaw(t, s, "/engage", []map[string]any{
		{"$token": "tok-shop", "$distinct_id": "user-canary-4711", "$ip": "203.0.113.99", "$set": map[string]any{
			"$email": "canary.alice@example.com", "$name": "Alice Canaryname", "tier": "gold",
			"bio": "reach me at +14155550123", "homepage": "https://example.org/?u=canary.alice@example.com",
		}},
		{"$token": "tok-shop", "$distinct_id": "user-canary-4711", "$union": map[string]any{"emails": []any{"canary.alice@example.com"}}},
	}, hdr, session)
	postRaw(t, s, "/groups", []map[string]any{
		{"$token": "tok-shop", "$group_key": "company", "$group_id": "group-canary-acme", "$set": map[string]any{
			"owner_email": "canary.alice@example.com", "industry": "retail",
		}},
	}, hdr, session)

	conn := testsvc.Conn(t, s.cfg.Sink)
	db := s.cfg.Sink.Database
	testsvc.Eventually(t, 30*time.Second, "the event stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events WHERE event = 'checkout'") == 1
	})
	// Profile and group updates land in their own tables; wait until every
	// table with a project column has its rows.
	time.Sleep(2 * time.Second)

	ctx := context.Background()
	rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? AND engine NOT LIKE '%View'", db)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	var all strings.Builder
	total := 0
	for _, table := range tables {
		dump, n := dumpTable(t, conn, db+"."+table)
		total += n
		t.Logf("scanned %s: %d rows", table, n)
		all.WriteString(dump)
		for _, c := range testsvc.PIICanaries {
			for _, f := range testsvc.CanaryForms(c) {
				if strings.Contains(dump, f) || strings.Contains(strings.ToLower(dump), strings.ToLower(f)) {
					t.Errorf("table %s holds canary %q (as %q)", table, c, f)
				}
			}
		}
	}
	if total < 4 {
		t.Fatalf("only %d rows in %v: the updates were not stored", total, tables)
	}
	// The non-PII data is all there.
	for _, want := range []string{"premium", "42.5", "plain-value", "gold", "retail", "utm_campaign=winter", "Chrome", "Linux"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("non-PII value %q is missing from the database", want)
		}
	}
}

// dumpTable renders every value of every row of table as text.
func dumpTable(t *testing.T, conn driver.Conn, table string) (string, int) {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT * FROM "+table)
	if err != nil {
		t.Fatalf("%s: %v", table, err)
	}
	defer rows.Close()
	cols := rows.ColumnTypes()
	var b strings.Builder
	n := 0
	for rows.Next() {
		vals := make([]any, len(cols))
		for i, c := range cols {
			vals[i] = reflect.New(c.ScanType()).Interface()
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		for i := range vals {
			fmt.Fprintf(&b, "%v\t", reflect.ValueOf(vals[i]).Elem().Interface())
		}
		b.WriteByte('\n')
		n++
	}
	return b.String(), n
}

// TestGroupProfilesKeepTheirName: a group profile is a company's, and its
// name is what analysts group by. /groups keeps $name and name, scrubbed
// like any free text, and drops what is a person's; a people profile
// still loses its $name.
func TestGroupProfilesKeepTheirName(t *testing.T) {
	s := startStack(t)
	postRaw(t, s, "/groups", []map[string]any{
		{"$token": "tok-shop", "$group_key": "company", "$group_id": "acme-1", "$set": map[string]any{
			"$name": "Acme Corp", "name": "Acme", "industry": "retail", "$email": "ceo@acme.example", "$first_name": "Alice",
		}},
		{"$token": "tok-shop", "$group_key": "company", "$group_id": "acme-2", "$set": map[string]any{
			"$name": "Acme billing@acme.example",
		}},
	}, nil)
	postRaw(t, s, "/engage", []map[string]any{
		{"$token": "tok-shop", "$distinct_id": "user-1", "$set": map[string]any{"$name": "Alice Liddell", "name": "Alice", "tier": "gold"}},
	}, nil)

	conn := testsvc.Conn(t, s.cfg.Sink)
	db := s.cfg.Sink.Database
	// profiles lists each profile's live properties, one profile a line,
	// sorted: ids are pseudonyms, so the profiles are told apart by content.
	// $last_seen is the time of the update, which Veil sets on people.
	profiles := func(view, id string) string {
		rows, err := conn.Query(context.Background(), "SELECT "+id+", property, value FROM "+db+"."+view+" WHERE project = 'shop' AND property != '$last_seen' ORDER BY "+id+", property")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		props := map[string][]string{}
		for rows.Next() {
			var who, p, v string
			if err := rows.Scan(&who, &p, &v); err != nil {
				t.Fatal(err)
			}
			props[who] = append(props[who], p+"="+v)
		}
		var lines []string
		for _, l := range props {
			lines = append(lines, strings.Join(l, " "))
		}
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	testsvc.Eventually(t, 30*time.Second, "the group and people state stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".groups WHERE property = 'industry'") == 1 &&
			testsvc.Count(t, conn, "SELECT count() FROM "+db+".profiles WHERE property = 'tier'") == 1
	})
	time.Sleep(500 * time.Millisecond)
	for _, tt := range []struct{ name, view, id, want string }{
		{"groups keep $name and name, scrubbed", "groups", "group_id", "$name=Acme Corp industry=retail name=Acme\n$name=Acme [email]"},
		{"people lose $name and name", "profiles", "distinct_id", "tier=gold"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := profiles(tt.view, tt.id); got != tt.want {
				t.Fatalf("%s holds\n%s\nwant\n%s", tt.view, got, tt.want)
			}
		})
	}
}
