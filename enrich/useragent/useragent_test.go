package useragent

import (
	"regexp"
	"regexp/syntax"
	"strings"
	"sync"
	"testing"
)

const (
	chromeWindows   = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
	safariMac       = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15"
	safariIPhone    = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1"
	safariIPad      = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1"
	chromeAndroid   = "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36"
	firefoxLinux    = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
	edgeWindows     = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91"
	operaWindows    = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0"
	samsungInternet = "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36"
	chromeIOS       = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1"
	firefoxIOS      = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15"
	chromeOS        = "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
	androidStock    = "Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; GT-I9100 Build/IML74K) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30"
	ie11            = "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"
	facebookIOS     = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/444.0.0.36.111;FBBV/539123456;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.1;FBSS/3;FBCR/;FBID/phone;FBLC/en_US;FBOP/80]"
	firefoxAndroid  = "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0"

	googlebot        = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	googlebotMobile  = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.216 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	bingbot          = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
	curl             = "curl/8.5.0"
	pythonRequests   = "python-requests/2.31.0"
	headlessChrome   = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36"
	chromeLighthouse = "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse"
)

func newParser(t testing.TB) *Parser {
	t.Helper()
	p, err := New(DefaultConfig())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		ua   string
		want Info
	}{
		{"Chrome on Windows", chromeWindows, Info{"Chrome", "120", "Windows", "", false}},
		{"Safari on macOS", safariMac, Info{"Safari", "17.2", "Mac OS X", "", false}},
		{"Safari on iPhone", safariIPhone, Info{"Mobile Safari", "17.2", "iOS", "iPhone", false}},
		{"Safari on iPad", safariIPad, Info{"Mobile Safari", "16.6", "iOS", "iPad", false}},
		{"Chrome on Android", chromeAndroid, Info{"Chrome", "120", "Android", "Android", false}},
		{"Firefox on Linux", firefoxLinux, Info{"Firefox", "121", "Linux", "", false}},
		{"Edge on Windows", edgeWindows, Info{"Microsoft Edge", "120", "Windows", "", false}},
		{"Opera on Windows", operaWindows, Info{"Opera", "106", "Windows", "", false}},
		{"Samsung Internet", samsungInternet, Info{"Samsung Internet", "23", "Android", "Android", false}},
		{"Chrome on iOS", chromeIOS, Info{"Chrome iOS", "120", "iOS", "iPhone", false}},
		{"Firefox on iOS", firefoxIOS, Info{"Firefox iOS", "121", "iOS", "iPhone", false}},
		{"Firefox on Android", firefoxAndroid, Info{"Firefox", "121", "Android", "Android", false}},
		{"Chrome OS", chromeOS, Info{"Chrome", "120", "Chrome OS", "", false}},
		{"Android stock browser", androidStock, Info{"Android Mobile", "4", "Android", "Android", false}},
		{"Internet Explorer 11", ie11, Info{"Internet Explorer", "11", "Windows", "", false}},
		{"Facebook in-app on iPhone", facebookIOS, Info{"Facebook Mobile", "", "iOS", "iPhone", false}},

		{"Googlebot", googlebot, Info{"Googlebot", "2.1", "", "", true}},
		{"Googlebot smartphone", googlebotMobile, Info{"Googlebot", "2.1", "Android", "Android", true}},
		{"bingbot", bingbot, Info{"Bingbot", "2", "", "", true}},
		{"curl", curl, Info{"curl", "8.5", "", "", true}},
		{"python-requests", pythonRequests, Info{"python-requests", "2.31", "", "", true}},
		{"HeadlessChrome", headlessChrome, Info{"Chrome", "120", "Linux", "", true}},
		{"Lighthouse", chromeLighthouse, Info{"Chrome", "120", "Android", "Android", true}},

		{"empty", "", Info{}},
		{"blank", "  \t", Info{}},
		{"no product token", "just some words here", Info{}},
	}
	p := newParser(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Twice: the second answer comes from the cache.
			for i := range 2 {
				if got := p.Parse(tt.ua); got != tt.want {
					t.Fatalf("parse %d:\n got %+v\nwant %+v", i, got, tt.want)
				}
			}
		})
	}
}

// TestParseBots checks agents that must count as bots and browsers that
// must not, beyond the exact cases above.
func TestParseBots(t *testing.T) {
	tests := []struct {
		ua  string
		bot bool
	}{
		{"Wget/1.21.4", true},
		{"Go-http-client/1.1", true},
		{"okhttp/4.12.0", true},
		{"axios/1.6.2", true},
		{"Python-urllib/3.11", true},
		{"Scrapy/2.11.0 (+https://scrapy.org)", true},
		{"libwww-perl/6.72", true},
		{"Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", true},
		{"DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", true},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; +https://openai.com/gptbot)", true},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", true},
		{"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", true},
		{"Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", true},
		{"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", true},
		{"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", true},
		{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)", true},
		{"Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", true},
		{"Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", true},

		{chromeWindows, false},
		{safariMac, false},
		{safariIPhone, false},
		{safariIPad, false},
		{chromeAndroid, false},
		{firefoxLinux, false},
		{edgeWindows, false},
		{operaWindows, false},
		{samsungInternet, false},
		{chromeIOS, false},
		{firefoxIOS, false},
		{firefoxAndroid, false},
		{chromeOS, false},
		{androidStock, false},
		{ie11, false},
		{facebookIOS, false},
		{"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 EdgA/120.0.2210.115", false},
		{"Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36", false},
		{"Mozilla/5.0 (Linux; Android 4.4.2; Nexus 5 Build/KOT49H) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/30.0.0.0 Mobile Safari/537.36", false},
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0", false},
		{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", false},
	}
	p := newParser(t)
	for _, tt := range tests {
		t.Run(tt.ua, func(t *testing.T) {
			if got := p.Parse(tt.ua).Bot; got != tt.bot {
				t.Fatalf("Bot = %v, want %v", got, tt.bot)
			}
		})
	}
}

func TestMixpanelVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"120.0.6099.109", "120"},
		{"17.2", "17.2"},
		{"17.10", "17.1"}, // parseFloat("17.10") is 17.1
		{"16.6.1", "16.6"},
		{"2.1", "2.1"},
		{"121.0", "121"},
		{"8", "8"},
		{"7~bl", "7"},
		{"FBIOS", ""},
		{"", ""},
		{".5", "0.5"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := mixpanelVersion(tt.in); got != tt.want {
				t.Fatalf("mixpanelVersion(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"default", DefaultConfig(), false},
		{"one entry", Config{CacheSize: 1}, false},
		{"zero", Config{CacheSize: 0}, true},
		{"negative", Config{CacheSize: -1}, true},
		{"absurd", Config{CacheSize: maxCacheSize + 1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "useragent.cache_size") {
				t.Fatalf("error %q does not name its key", err)
			}
			if _, nerr := New(tt.cfg); (nerr != nil) != tt.wantErr {
				t.Fatalf("New() = %v, want error: %v", nerr, tt.wantErr)
			}
		})
	}
}

func TestParseBoundsCache(t *testing.T) {
	p, err := New(Config{CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	huge := chromeWindows + strings.Repeat(" x", 10_000)
	if got := p.Parse(huge); got.Browser != "Chrome" {
		t.Fatalf("a long user agent parsed as %+v", got)
	}
	for _, ua := range []string{curl, bingbot, safariMac} {
		p.Parse(ua)
	}
	keys := p.cache.Keys()
	if len(keys) != 2 {
		t.Fatalf("cache holds %d entries, want its size, 2", len(keys))
	}
	for _, k := range p.cache.Keys() {
		if len(k) > maxLen {
			t.Fatalf("cache key of %d bytes, want at most %d", len(k), maxLen)
		}
	}
}

func TestParseConcurrent(t *testing.T) {
	p := newParser(t)
	uas := []string{chromeWindows, safariIPhone, googlebot, curl, edgeWindows, headlessChrome}
	want := make([]Info, len(uas))
	for i, ua := range uas {
		want[i] = newParser(t).Parse(ua)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				j := (i + g) % len(uas)
				if got := p.Parse(uas[j]); got != want[j] {
					t.Errorf("concurrent Parse(%q) = %+v, want %+v", uas[j], got, want[j])
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestCrawlerMatcherAgreesWithRegexps checks the fast matcher against the
// list's plain meaning: a user agent is a crawler iff some pattern, as a Go
// regexp, matches it.
func TestCrawlerMatcherAgreesWithRegexps(t *testing.T) {
	m, err := newCrawlerMatcher(crawlerPatterns)
	if err != nil {
		t.Fatal(err)
	}
	var all []*regexp.Regexp
	for _, line := range strings.Split(crawlerPatterns, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		all = append(all, regexp.MustCompile(line))
	}
	if len(all) < 1000 {
		t.Fatalf("only %d crawler patterns loaded", len(all))
	}
	naive := func(ua string) bool {
		for _, re := range all {
			if re.MatchString(ua) {
				return true
			}
		}
		return false
	}
	corpus := []string{
		chromeWindows, safariMac, safariIPhone, safariIPad, chromeAndroid, firefoxLinux, edgeWindows,
		operaWindows, samsungInternet, chromeIOS, firefoxIOS, chromeOS, androidStock, ie11, facebookIOS,
		googlebot, googlebotMobile, bingbot, curl, pythonRequests, headlessChrome, chromeLighthouse,
		"Wget/1.21.4", "wget/1.0", "foo curl/1", "AdsBot-Google", "AdsBot-Google-Mobile", "x AdsBot-Google (+x)",
		"Mozilla/5.0 (compatible; SISTRIX Crawler; http://crawler.sistrix.net/)", "Qualys SSL Labs",
		"SSL Labs x", "BlogTraffic/1.23 Feed-Fetcher", "ContextualBot/1 outcomes.net", "Chirp/1.0",
		"Netumo", "sentry/1.0", "xsentry/1.0", "", "a", "#",
	}
	for _, ua := range corpus {
		if got, want := m.match(ua), naive(ua); got != want {
			t.Errorf("match(%q) = %v, regexps say %v", ua, got, want)
		}
	}
	// Every plain-string pattern is found wherever it sits.
	for _, re := range all {
		lit, complete := re.LiteralPrefix()
		if !complete {
			continue
		}
		if ua := "Mozilla/5.0 (" + lit + ") x"; !m.match(ua) {
			t.Errorf("pattern %q not found in %q", re, ua)
		}
	}
}

func TestRequiredLiterals(t *testing.T) {
	tests := []struct {
		re   string
		want []string
	}{
		{"[wW]get", []string{"get"}},
		{"Chirp|gotosocial", []string{"Chirp", "gotosocial"}},
		{`(^| )sentry\/`, []string{"sentry/"}},
		{`BlogTraffic\/\d\.\d+ Feed-Fetcher`, []string{" Feed-Fetcher"}},
		{"x.*", []string{"x"}},
		{"(?i)bot", nil},
		{"[ab]c|d+", nil},
	}
	for _, tt := range tests {
		t.Run(tt.re, func(t *testing.T) {
			re, err := syntax.Parse(tt.re, syntax.Perl)
			if err != nil {
				t.Fatal(err)
			}
			if got := requiredLiterals(re.Simplify()); strings.Join(got, ",") != strings.Join(tt.want, ",") || (got == nil) != (tt.want == nil) {
				t.Fatalf("requiredLiterals(%s) = %q, want %q", tt.re, got, tt.want)
			}
		})
	}
}

func TestCrawlerMatcherSmallLists(t *testing.T) {
	tests := []struct {
		name, list string
		ua         string
		want       bool
	}{
		{"plain string", "Bot1\n", "a Bot1 b", true},
		{"plain string absent", "Bot1\n", "a Bot2 b", false},
		{"one-byte string", "Z\n", "aZb", true},
		{"prefiltered regexp", "[wW]get\n", "Wget/1", true},
		{"prefilter present, regexp fails", "^[wW]get\n", "x wget", false},
		{"regexp without prefilter", "(?i)spider\n", "SPIDER", true},
		{"comments and blanks skipped", "# Bot1\n\nBot2\n", "Bot1", false},
		{"spaces are part of a pattern", "^LCC \n", "LCC/1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := newCrawlerMatcher(tt.list)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.match(tt.ua); got != tt.want {
				t.Fatalf("match(%q) = %v, want %v", tt.ua, got, tt.want)
			}
		})
	}
	t.Run("empty list", func(t *testing.T) {
		if _, err := newCrawlerMatcher("# only a comment\n"); err == nil {
			t.Fatal("an empty crawler list was accepted")
		}
	})
	t.Run("bad pattern", func(t *testing.T) {
		if _, err := newCrawlerMatcher("ok\n(unclosed\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Fatalf("a bad pattern gave %v, want an error naming line 2", err)
		}
	})
}
