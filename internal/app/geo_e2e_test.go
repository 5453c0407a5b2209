package app_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/enrich/geo/geotest"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/testsvc"
)

// TestGeolocationEndToEnd: events sent with known IPs show the expected
// country, region and city in veil.events, the IPs appear nowhere in the
// database, and Mixpanel's rules hold (SDK geo wins, ip=0 turns the lookup
// off, a profile's $ip gives the profile its location).
func TestGeolocationEndToEnd(t *testing.T) {
	dir := t.TempDir()
	v4, v6 := filepath.Join(dir, "city-v4.mmdb"), filepath.Join(dir, "city-v6.mmdb")
	geotest.Write(t, v4, geotest.Spec{Layout: geotest.DBIPLite, IPVersion: 4, Records: []geotest.Record{
		{Network: "203.0.113.0/24", CountryCode: "DE", Region: "Berlin", City: "Berlin"},
		{Network: "198.51.100.0/24", CountryCode: "FR", Region: "Île-de-France", City: "Paris"},
	}})
	geotest.Write(t, v6, geotest.Spec{Layout: geotest.DBIPLite, IPVersion: 6, Records: []geotest.Record{
		{Network: "2001:db8::/32", CountryCode: "JP", Region: "Tokyo", City: "Tokyo"},
	}})
	s := newStack(t, func(c *app.Config) {
		c.Collector.TrustedProxies = []string{"127.0.0.1/32"}
		c.Enrich.Geo.Paths = []string{v4, v6}
	})
	s.startCollector()
	s.startWorker(false)

	send := func(name string, props map[string]any, xff, query string) {
		t.Helper()
		props["token"] = "tok-shop"
		props["distinct_id"] = "geo-user"
		props["$insert_id"] = strings.ReplaceAll(name, "_", "-")
		postRaw(t, s, "/track"+query, map[string]any{"event": name, "properties": props}, map[string]string{"X-Forwarded-For": xff})
	}
	send("v4_header", map[string]any{}, "203.0.113.7", "")
	send("v6_header", map[string]any{}, "2001:db8::7", "")
	send("ip_property", map[string]any{"ip": "198.51.100.9"}, "203.0.113.7", "")
	send("sdk_geo_wins", map[string]any{"$city": "Hamburg", "$region": "Hamburg", "mp_country_code": "DE"}, "203.0.113.7", "")
	send("ip_zero_query", map[string]any{}, "203.0.113.7", "?ip=0")
	send("ip_zero_property", map[string]any{"$ip": "0"}, "203.0.113.7", "")
	postRaw(t, s, "/engage", map[string]any{"$token": "tok-shop", "$distinct_id": "geo-user", "$ip": "2001:db8::7",
		"$set": map[string]any{"plan": "pro"}}, map[string]string{"X-Forwarded-For": "203.0.113.7"})

	conn := testsvc.Conn(t, s.cfg.Sink)
	db := s.cfg.Sink.Database
	testsvc.Eventually(t, 30*time.Second, "all events stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".events") == 6
	})
	want := map[string][3]string{
		"v4_header":        {"DE", "Berlin", "Berlin"},
		"v6_header":        {"JP", "Tokyo", "Tokyo"},
		"ip_property":      {"FR", "Île-de-France", "Paris"},
		"sdk_geo_wins":     {"DE", "Hamburg", "Hamburg"},
		"ip_zero_query":    {"", "", ""},
		"ip_zero_property": {"", "", ""},
	}
	rows, err := conn.Query(context.Background(), "SELECT event, country_code, region, city FROM "+db+".events")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ev, c, r, city string
		if err := rows.Scan(&ev, &c, &r, &city); err != nil {
			t.Fatal(err)
		}
		if got := [3]string{c, r, city}; got != want[ev] {
			t.Errorf("%s: geo %q, want %q", ev, got, want[ev])
		}
	}
	rows.Close()

	// The profile got its location from the update's $ip.
	testsvc.Eventually(t, 20*time.Second, "the profile update stored", func() bool {
		return testsvc.Count(t, conn, "SELECT count() FROM "+db+".profile_ops") == 1
	})
	var dump strings.Builder
	for _, table := range []string{"events", "profile_ops", "profile_state"} {
		d, _ := dumpTable(t, conn, db+"."+table)
		dump.WriteString(d)
	}
	profiles, _ := dumpTable(t, conn, db+".profile_ops")
	if !strings.Contains(profiles, "$country_code") || !strings.Contains(profiles, "JP") {
		t.Errorf("the profile update lacks its $country_code:\n%s", profiles)
	}
	for _, ip := range []string{"203.0.113.7", "2001:db8::7", "198.51.100.9", "203.0.113.0"} {
		if strings.Contains(dump.String(), ip) {
			t.Errorf("IP %s is stored", ip)
		}
	}
}
