package bench

import (
	"encoding/json"
	"testing"

	"github.com/veilhq/veil/deidentify/scrub"
)

// mixpanelProps is what mixpanel-browser sends with a page view, as the
// worker decodes it (UseNumber): mostly clean strings and numbers, two URLs.
func mixpanelProps() map[string]any {
	return map[string]any{
		"$os":                       "Mac OS X",
		"$browser":                  "Chrome",
		"$browser_version":          json.Number("120"),
		"$device_id":                "18c5b1f2e3d4a5-0b1c2d3e4f5a6b-26021051-1fa400-18c5b1f2e3d4a5",
		"$current_url":              "https://shop.example.com/products/42?utm_source=newsletter&utm_medium=email&fbclid=IwAR3xYz&email=alice%40example.com",
		"$referrer":                 "https://www.google.com/",
		"$referring_domain":         "www.google.com",
		"$initial_referrer":         "$direct",
		"$initial_referring_domain": "$direct",
		"$screen_height":            json.Number("1080"),
		"$screen_width":             json.Number("1920"),
		"mp_lib":                    "web",
		"$lib_version":              "2.47.0",
		"$insert_id":                "k3j4h5g6f7d8s9a0",
		"time":                      json.Number("1700000000123"),
		"distinct_id":               "$device:18c5b1f2e3d4a5-0b1c2d3e4f5a6b-26021051-1fa400-18c5b1f2e3d4a5",
		"token":                     "d41d8cd98f00b204e9800998ecf8427e",
	}
}

func cleanProps() map[string]any {
	return map[string]any{
		"plan": "pro", "price": "19.99", "currency": "EUR", "date": "2024-05-01", "at": "12:30:00",
		"version": "1.2.3", "count": json.Number("42"), "ok": true, "page": "Pricing", "ab_variant": "B",
	}
}

func BenchmarkScrub(b *testing.B) {
	sc, err := scrub.New(scrub.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	strs := []struct{ name, in string }{
		{"clean_short", "Sign Up Clicked"},
		{"email", "contact alice.smith@example.com for access"},
		{"url_query", "https://shop.example.com/products/42?utm_source=newsletter&utm_medium=email&fbclid=IwAR3xYz&email=alice%40example.com#reviews"},
	}
	for _, s := range strs {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(s.in)))
			for b.Loop() {
				sc.String(s.in)
			}
		})
	}
	maps := []struct {
		name string
		mk   func() map[string]any
	}{
		{"clean_map_10", cleanProps},
		{"mixpanel_map_17", mixpanelProps},
	}
	for _, m := range maps {
		b.Run(m.name, func(b *testing.B) {
			b.ReportAllocs()
			// Value rewrites the map in place, so each iteration scrubs a
			// fresh copy; the copy is made outside the timer.
			src := m.mk()
			fresh := make([]map[string]any, 0, 1024)
			for b.Loop() {
				if len(fresh) == 0 {
					b.StopTimer()
					for range cap(fresh) {
						c := make(map[string]any, len(src))
						for k, v := range src {
							c[k] = v
						}
						fresh = append(fresh, c)
					}
					b.StartTimer()
				}
				sc.Value(fresh[len(fresh)-1])
				fresh = fresh[:len(fresh)-1]
			}
		})
	}
}
