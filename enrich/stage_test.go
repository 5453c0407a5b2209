package enrich

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/veilhq/veil/enrich/geo/geotest"
	"github.com/veilhq/veil/event"
)

const (
	chromeUA    = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
	googlebotUA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)

func newEnricher(t *testing.T, withGeo bool, dropBots bool) (*Enricher, *prometheus.Registry) {
	t.Helper()
	cfg := DefaultConfig()
	if withGeo {
		p := filepath.Join(t.TempDir(), "city.mmdb")
		geotest.Write(t, p, geotest.Spec{Layout: geotest.GeoIP2, Records: []geotest.Record{
			{Network: "203.0.113.0/24", CountryCode: "DE", Region: "Berlin", City: "Berlin"},
			{Network: "2001:db8::/32", CountryCode: "JP", Region: "Tokyo", City: "Tokyo"},
		}})
		cfg.Geo.Paths = []string{p}
	}
	reg := prometheus.NewRegistry()
	e, err := New(cfg, Deps{Metrics: reg, DropBots: func(string) bool { return dropBots }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e, reg
}

func TestStage(t *testing.T) {
	e, _ := newEnricher(t, true, false)
	tests := []struct {
		name   string
		ev     event.Event
		want   event.Geo
		device event.Device
	}{
		{"ipv4 from the connection", event.Event{IP: netip.MustParseAddr("203.0.113.5"), Properties: event.PropertiesOf(map[string]any{})}, event.Geo{CountryCode: "DE", Region: "Berlin", City: "Berlin"}, event.Device{}},
		{"ipv6", event.Event{IP: netip.MustParseAddr("2001:db8::1"), Properties: event.PropertiesOf(map[string]any{})}, event.Geo{CountryCode: "JP", Region: "Tokyo", City: "Tokyo"}, event.Device{}},
		{"property ip wins over the connection", event.Event{IP: netip.MustParseAddr("192.0.2.1"), Properties: event.PropertiesOf(map[string]any{"ip": "203.0.113.9"})}, event.Geo{CountryCode: "DE", Region: "Berlin", City: "Berlin"}, event.Device{}},
		{"ip=0 in the query", event.Event{IP: netip.MustParseAddr("203.0.113.5"), Signals: event.Signals{NoGeo: true}, Properties: event.PropertiesOf(map[string]any{})}, event.Geo{}, event.Device{}},
		{"$ip 0 in the payload", event.Event{IP: netip.MustParseAddr("203.0.113.5"), Properties: event.PropertiesOf(map[string]any{"$ip": json.Number("0")})}, event.Geo{}, event.Device{}},
		{"SDK geo wins", event.Event{IP: netip.MustParseAddr("203.0.113.5"), Properties: event.PropertiesOf(map[string]any{"$city": "Hamburg", "$region": "Hamburg", "mp_country_code": "DE"})}, event.Geo{CountryCode: "DE", Region: "Hamburg", City: "Hamburg"}, event.Device{}},
		{"SDK country, other country's IP: only the country", event.Event{IP: netip.MustParseAddr("2001:db8::1"), Properties: event.PropertiesOf(map[string]any{"mp_country_code": "FR"})}, event.Geo{CountryCode: "FR"}, event.Device{}},
		{"miss", event.Event{IP: netip.MustParseAddr("192.0.2.1"), Properties: event.PropertiesOf(map[string]any{})}, event.Geo{}, event.Device{}},
		{"user agent", event.Event{UserAgent: chromeUA, Properties: event.PropertiesOf(map[string]any{})}, event.Geo{}, event.Device{Browser: "Chrome", BrowserVersion: "120", OS: "Windows"}},
		{"SDK device wins", event.Event{UserAgent: chromeUA, Properties: event.PropertiesOf(map[string]any{"$browser": "Firefox", "$browser_version": json.Number("121"), "$os": "Linux", "mp_lib": "web", "$lib_version": "2.55.0"})}, event.Geo{}, event.Device{Browser: "Firefox", BrowserVersion: "121", OS: "Linux", Lib: "web", LibVersion: "2.55.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := tt.ev
			if r := e.Apply(&ev); r != event.Keep {
				t.Fatalf("dropped: %s", r)
			}
			if ev.Geo != tt.want {
				t.Errorf("geo %+v, want %+v", ev.Geo, tt.want)
			}
			if ev.Device != tt.device {
				t.Errorf("device %+v, want %+v", ev.Device, tt.device)
			}
			for _, k := range []string{"$browser", "$os", "mp_lib", "$city", "mp_country_code"} {
				if _, ok := ev.Properties.Get(k); ok {
					t.Errorf("%s left in properties after promotion", k)
				}
			}
		})
	}
}

func TestBots(t *testing.T) {
	for _, drop := range []bool{false, true} {
		e, _ := newEnricher(t, false, drop)
		ev := event.Event{UserAgent: googlebotUA, Properties: event.PropertiesOf(map[string]any{})}
		r := e.Apply(&ev)
		action := "flagged"
		if drop {
			action = "dropped"
			if r != event.DropBot {
				t.Fatalf("bot not dropped: %q", r)
			}
		} else if r != event.Keep || !ev.Device.Bot {
			t.Fatalf("bot not flagged: %q %+v", r, ev.Device)
		}
		if n := testutil.ToFloat64(e.bots.WithLabelValues(action)); n != 1 {
			t.Fatalf("bots{%s} = %v", action, n)
		}
	}
}

func TestNoDatabase(t *testing.T) {
	e, _ := newEnricher(t, false, false)
	ev := event.Event{IP: netip.MustParseAddr("203.0.113.5"), Properties: event.PropertiesOf(map[string]any{})}
	e.Apply(&ev)
	if ev.Geo != (event.Geo{}) {
		t.Fatalf("geo without a database: %+v", ev.Geo)
	}
	if n := testutil.ToFloat64(e.lookups.WithLabelValues(geoNoDatabase)); n != 1 {
		t.Fatalf("lookups{no_database} = %v", n)
	}
}
