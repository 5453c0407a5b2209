// Package useragent turns a User-Agent header into Mixpanel's $browser,
// $browser_version, $os and $device, and says whether it is a bot.
//
// Parsing is github.com/mileusna/useragent; its names are mapped to the
// ones Mixpanel's JavaScript SDK reports, so that events enriched here group
// with events whose SDK set the properties itself. Bots are what that
// parser flags plus anything matching the crawler-user-agents list
// (crawlers.txt).
package useragent

import (
	"errors"
	"strconv"
	"strings"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	mua "github.com/mileusna/useragent"
)

// Info is what a user agent tells, in Mixpanel's property values.
type Info struct {
	// Browser is $browser: "Chrome", "Mobile Safari", "Safari", "Firefox",
	// "Microsoft Edge", "Opera", "Samsung Internet", "Chrome iOS",
	// "Firefox iOS", "Android Mobile"... Agents Mixpanel has no name for
	// (crawlers, HTTP libraries) keep the parser's name, e.g. "Googlebot"
	// or "curl".
	Browser string
	// BrowserVersion is $browser_version as the string of the number
	// Mixpanel sends: major.minor read as a decimal, so Chrome 120.0.6099
	// is "120" and Safari 17.2 is "17.2". Empty when there is none.
	BrowserVersion string
	// OS is $os: "Windows", "Mac OS X", "iOS", "Android", "Linux",
	// "Chrome OS", "Windows Phone", "BlackBerry"; others keep the parser's
	// name; empty when unknown.
	OS string
	// Device is $device: "iPhone", "iPad", "iPod Touch", "Android",
	// "Windows Phone", "BlackBerry", or "" for a desktop or unknown device.
	Device string
	// Bot is true for crawlers, headless browsers and HTTP tools.
	Bot bool
}

// Config is the user agent section of Veil's configuration.
type Config struct {
	// CacheSize is how many distinct user agents keep their parsed Info.
	// Traffic repeats a few thousand user agents (one per browser build and
	// device model), so a cache of that order answers nearly every event.
	CacheSize int `yaml:"cache_size"`
}

// DefaultConfig returns the user agent defaults.
func DefaultConfig() Config {
	return Config{CacheSize: 10_000}
}

// maxCacheSize bounds CacheSize: with maxLen-byte keys the cache then holds
// at most ~1 GiB, a limit no sane setting comes near.
const maxCacheSize = 1 << 20

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if c.CacheSize <= 0 || c.CacheSize > maxCacheSize {
		return errors.New("useragent.cache_size must be between 1 and 1048576")
	}
	return nil
}

// maxLen is how much of a user agent is read. Real ones stay under 500
// bytes; in-app browsers append the most and still fit. Longer input is
// truncated so a hostile header cannot make each cache entry, or a parse,
// arbitrarily large.
const maxLen = 1024

// Parser parses user agents, caching results. It is safe for concurrent use.
type Parser struct {
	cache    *lru.Cache[string, Info]
	crawlers *crawlerMatcher
	// last is the previous answer: the events of one request come one
	// after the other with the same user agent (and the worker shares
	// its string, so comparing it is one pointer compare).
	last struct {
		sync.Mutex
		ua   string
		info Info
	}
}

// New makes a Parser.
func New(cfg Config) (*Parser, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cache, err := lru.New[string, Info](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	crawlers, err := newCrawlerMatcher(crawlerPatterns)
	if err != nil {
		return nil, err
	}
	return &Parser{cache: cache, crawlers: crawlers}, nil
}

// Parse returns what ua tells. An empty ua gives the zero Info.
func (p *Parser) Parse(ua string) Info {
	if len(ua) > maxLen {
		ua = ua[:maxLen]
	}
	if strings.TrimSpace(ua) == "" {
		return Info{}
	}
	last := &p.last
	if last.TryLock() {
		if last.ua == ua {
			info := last.info
			last.Unlock()
			return info
		}
		last.Unlock()
	}
	info, ok := p.cache.Get(ua)
	if !ok {
		info = p.parse(ua)
		// Cloned because ua may be a slice of a whole request body, which
		// the cache would otherwise keep alive for as long as the entry
		// lives.
		ua = strings.Clone(ua)
		p.cache.Add(ua, info)
	}
	if last.TryLock() {
		last.ua, last.info = ua, info
		last.Unlock()
	}
	return info
}

func (p *Parser) parse(s string) Info {
	ua := mua.Parse(s)
	info := Info{
		Browser: browserName(ua),
		OS:      osName(ua.OS),
		Bot:     ua.Bot || p.crawlers.match(s),
	}
	version := ua.Version
	if ua.Name == "Trident" {
		// IE 11 dropped "MSIE"; the parser then reports the engine's
		// version (Trident/7.0), while Mixpanel reads the browser's (rv:11.0).
		if i := strings.Index(s, "rv:"); i >= 0 {
			version = s[i+len("rv:"):]
		}
	}
	info.BrowserVersion = mixpanelVersion(version)
	info.Device = deviceName(info.OS, s)
	return info
}

// browserName maps the parser's browser name to Mixpanel's. Mixpanel tells
// the iOS builds of Chrome and Firefox (CriOS, FxiOS) apart from the
// others, and Safari on a phone or tablet from desktop Safari.
func browserName(ua mua.UserAgent) string {
	ios := ua.OS == mua.IOS
	switch ua.Name {
	case mua.Chrome, mua.HeadlessChrome:
		if ios {
			return "Chrome iOS"
		}
		return "Chrome"
	case mua.Firefox:
		if ios {
			return "Firefox iOS"
		}
		return "Firefox"
	case mua.Safari:
		if ios {
			return "Mobile Safari"
		}
		return "Safari"
	case mua.Edge:
		return "Microsoft Edge"
	case mua.Opera:
		return "Opera"
	case mua.OperaMini:
		return "Opera Mini"
	case "Samsung Browser":
		return "Samsung Internet"
	case "Android browser":
		return "Android Mobile"
	case "Facebook App":
		return "Facebook Mobile"
	case mua.InternetExplorer, "Trident":
		return "Internet Explorer"
	}
	// The parser falls back to the whole user agent as the name when it
	// finds no product token; that is not a browser name, and a long free
	// text property is the last thing a privacy-first pipeline should copy
	// into every event.
	if ua.Name == ua.String || len(ua.Name) > maxNameLen {
		return ""
	}
	return ua.Name
}

// maxNameLen bounds a browser name passed through from the parser: product
// tokens are short ("Googlebot", "python-requests"), longer ones are junk.
const maxNameLen = 40

func osName(os string) string {
	switch os {
	case mua.MacOS:
		return "Mac OS X"
	case mua.ChromeOS, "CrOS":
		return "Chrome OS"
	}
	// Windows, iOS, Android, Linux, Windows Phone and BlackBerry are
	// already spelled as Mixpanel spells them; the parser names only a
	// fixed set, so nothing here is free text.
	return os
}

// deviceName follows Mixpanel's rule: the device is named only for phones
// and tablets whose platform says what they are.
func deviceName(os, ua string) string {
	switch os {
	case mua.IOS:
		switch {
		case strings.Contains(ua, "iPad"):
			return "iPad"
		case strings.Contains(ua, "iPod"):
			return "iPod Touch"
		}
		return "iPhone"
	case mua.Android:
		return "Android"
	case mua.WindowsPhone:
		return "Windows Phone"
	case mua.BlackBerry:
		return "BlackBerry"
	}
	return ""
}

// mixpanelVersion turns "120.0.6099.109" into "120" and "17.2" into "17.2":
// Mixpanel's SDK sends parseFloat(major.minor), a JSON number, and this is
// that number's shortest decimal form. Versions that are not numeric give "".
func mixpanelVersion(v string) string {
	end := 0
	dots := 0
	for end < len(v) {
		c := v[end]
		if c == '.' {
			if dots++; dots == 2 {
				break
			}
		} else if c < '0' || c > '9' {
			break
		}
		end++
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(v[:end], "."), 64)
	if err != nil {
		return ""
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
