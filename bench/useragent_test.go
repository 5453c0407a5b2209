package bench

import (
	"testing"

	"github.com/veilhq/veil/enrich/useragent"
)

// uaBrowsers and uaBots are real user agents of the kinds a site sees most.
var (
	uaBrowsers = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
		"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
		"Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/444.0.0.36.111;FBBV/539123456;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.1;FBSS/3;FBCR/;FBID/phone;FBLC/en_US;FBOP/80]",
	}
	uaBots = []string{
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
		"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
		"curl/8.5.0",
		"python-requests/2.31.0",
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36",
	}
)

// BenchmarkUserAgent measures Parser.Parse, called once per event.
//
//   - cached: user agents already seen, the common case.
//   - uncached: a one-entry cache, so every call parses, checks the crawler
//     list and inserts: the cost of a user agent seen for the first time.
func BenchmarkUserAgent(b *testing.B) {
	all := append(append([]string(nil), uaBrowsers...), uaBots...)
	b.Run("cached", func(b *testing.B) {
		benchParse(b, useragent.DefaultConfig(), all)
	})
	b.Run("cached-parallel", func(b *testing.B) {
		p, err := useragent.New(useragent.DefaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		for _, ua := range all {
			p.Parse(ua)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				p.Parse(all[i%len(all)])
				i++
			}
		})
	})
	b.Run("uncached/browser", func(b *testing.B) {
		benchParse(b, useragent.Config{CacheSize: 1}, uaBrowsers)
	})
	b.Run("uncached/bot", func(b *testing.B) {
		benchParse(b, useragent.Config{CacheSize: 1}, uaBots)
	})
}

func benchParse(b *testing.B, cfg useragent.Config, uas []string) {
	p, err := useragent.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for _, ua := range uas {
		p.Parse(ua)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		p.Parse(uas[i])
		if i++; i == len(uas) {
			i = 0
		}
	}
}
