package loadgen

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// Requests are built from templates made once, up front, so that the load
// generator spends its CPU on sending rather than on encoding: a template
// is a batch's form body, data= and the URL-escaped base64 of its JSON, cut
// at each event's $insert_id. Each request gets fresh $insert_ids (the
// collector and ClickHouse deduplicate on them, so repeated ids would fold
// into one row and spoil the end-to-end count), and only those few bytes
// are encoded per request.
//
// Base64 encodes 3 bytes as 4 characters independently of their
// neighbours, so the JSON is laid out with each id slot starting at a
// multiple of 3 and 3·k bytes long: the encoding of the whole is then the
// concatenation of the encodings of its pieces, and so is the escaping.

// slotLen is the part of each $insert_id written per request: 5 characters
// naming the run and 10 base-36 digits counting its events.
const slotLen = 15

// template is one request body, less its ids.
type template struct {
	events int
	// segs are the escaped base64 pieces around the id slots: segs[i]
	// precedes event i's slot, the last one ends the body.
	segs [][]byte
	size int // the body's length
	ua   string
	xff  string
	// json is the batch with zeroed slots, kept for tests.
	json []byte
}

// appendBody appends the form body of t with ids first, first+1, … to dst.
func (t *template) appendBody(dst []byte, run *[5]byte, first uint64) []byte {
	dst = append(dst, "data="...)
	var slot [slotLen]byte
	var enc [slotLen / 3 * 4]byte
	copy(slot[:5], run[:])
	for i := 0; i < t.events; i++ {
		dst = append(dst, t.segs[i]...)
		putBase36(slot[5:], first+uint64(i))
		base64.StdEncoding.Encode(enc[:], slot[:])
		dst = appendEscaped(dst, enc[:])
	}
	return append(dst, t.segs[t.events]...)
}

// putBase36 writes n as len(dst) base-36 digits, zero-padded.
func putBase36(dst []byte, n uint64) {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = digits[n%36]
		n /= 36
	}
}

// appendEscaped appends base64 text as encodeURIComponent leaves it, which
// is how mixpanel-browser puts it in a form: +, / and = are escaped.
func appendEscaped(dst, b64 []byte) []byte {
	for _, c := range b64 {
		switch c {
		case '+':
			dst = append(dst, "%2B"...)
		case '/':
			dst = append(dst, "%2F"...)
		case '=':
			dst = append(dst, "%3D"...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// generator makes the templates of a run and hands out $insert_ids.
type generator struct {
	full []*template // requests of Batch events
	rest *template   // the last request when Events is not a multiple of Batch
	run  [5]byte
	ids  atomic.Uint64
}

// newGenerator makes n templates of batch events each (a batch of 1 is sent
// as a bare object, as single-event requests are; larger ones as a list),
// plus one of rest events when rest > 0.
func newGenerator(seed uint64, n, batch, rest int, token string, now time.Time) *generator {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &generator{}
	// The run id keeps ids of successive runs into one table distinct.
	putBase36(g.run[:], uint64(now.UnixNano())^r.Uint64())
	for range n {
		g.full = append(g.full, makeTemplate(r, batch, token, now))
	}
	if rest > 0 {
		g.rest = makeTemplate(r, rest, token, now)
	}
	return g
}

// take reserves n consecutive ids and returns the first.
func (g *generator) take(n int) uint64 { return g.ids.Add(uint64(n)) - uint64(n) }

// client is the browser one template's events come from: mixpanel-browser
// batches the events of one page, so one batch has one user agent, one
// address and one device.
type client struct {
	ua, os, browser, browserVersion string
	device                          string // $device on mobile, else ""
	screenW, screenH                int
	ip                              string
	deviceID                        string
	userID                          string // "" while anonymous
	initialReferrer, initialDomain  string
}

// userAgents are real user agents, with what mixpanel-browser derives from
// each ($os, $browser, $browser_version, $device), weighted roughly by a
// consumer site's traffic; the last ones are bots, which Veil flags.
var userAgents = []struct {
	ua, os, browser, version, device string
	weight                           int
}{
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "Windows", "Chrome", "131", "", 30},
	{"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", "iOS", "Mobile Safari", "18.1", "iPhone", 20},
	{"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36", "Android", "Chrome", "131", "Android", 15},
	{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", "Mac OS X", "Safari", "18.1", "", 10},
	{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "Mac OS X", "Chrome", "131", "", 8},
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", "Windows", "Firefox", "133", "", 5},
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.51", "Windows", "Microsoft Edge", "131", "", 4},
	{"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", "Android", "Samsung Internet", "26", "Android", 3},
	{"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "Linux", "Firefox", "133", "", 2},
	{"Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.7 Mobile/15E148 Safari/604.1", "iOS", "Mobile Safari", "17.7", "iPad", 2},
	{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.6778.85 Safari/537.36", "Linux", "Chrome", "131", "", 1},
	{"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "", "", "", "", 1},
}

var uaWeights = func() (total int) {
	for _, u := range userAgents {
		total += u.weight
	}
	return total
}()

// docPrefixes are the documentation ranges (RFC 5737, RFC 3849): the only
// addresses the generated traffic claims to come from.
var docPrefixes = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

func randomIP(r *rand.Rand) netip.Addr {
	p := docPrefixes[r.IntN(len(docPrefixes))]
	a := p.Addr().AsSlice()
	for i := p.Bits() / 8; i < len(a); i++ {
		a[i] = byte(r.Uint32())
	}
	ip, _ := netip.AddrFromSlice(a)
	return ip
}

var referrers = []struct{ url, domain string }{
	{"$direct", "$direct"},
	{"https://www.google.com/", "www.google.com"},
	{"https://www.bing.com/", "www.bing.com"},
	{"https://news.example.org/article/2024/spring-deals", "news.example.org"},
	{"https://l.facebook.com/", "l.facebook.com"},
	{"https://t.co/", "t.co"},
}

func newClient(r *rand.Rand) client {
	w := r.IntN(uaWeights)
	u := userAgents[0]
	for _, x := range userAgents {
		if w < x.weight {
			u = x
			break
		}
		w -= x.weight
	}
	c := client{ua: u.ua, os: u.os, browser: u.browser, browserVersion: u.version, device: u.device}
	if u.device == "" {
		c.screenW, c.screenH = [...]int{1920, 1536, 1440, 2560, 1366}[r.IntN(5)], [...]int{1080, 864, 900, 1440, 768}[r.IntN(5)]
	} else {
		c.screenW, c.screenH = [...]int{390, 393, 412, 430, 820}[r.IntN(5)], [...]int{844, 852, 915, 932, 1180}[r.IntN(5)]
	}
	c.ip = randomIP(r).String()
	// mixpanel-browser's device id: hex time, random, screen and hex time.
	t := 0x18c00000000 + r.Int64N(1<<36)
	c.deviceID = fmt.Sprintf("%x-%014x-%08x-%x-%x", t, r.Uint64()>>8, r.Uint32(), c.screenW*c.screenH, t)
	if r.IntN(3) == 0 {
		c.userID = fmt.Sprintf("user-%d", 1+r.IntN(200000))
	}
	ref := referrers[r.IntN(len(referrers))]
	c.initialReferrer, c.initialDomain = ref.url, ref.domain
	return c
}

// eventNames are the events a shop's site sends, page views most.
var eventNames = []string{
	"$mp_web_page_view", "$mp_web_page_view", "$mp_web_page_view", "$mp_web_page_view",
	"Product Viewed", "Product Viewed", "Add To Cart", "Search", "Button Clicked",
	"Video Played", "Sign Up", "Checkout Started", "Purchase Completed",
}

var pages = []struct{ path, title string }{
	{"/", "Example Shop – Home"},
	{"/products/%d", "Trail Runner %d – Example Shop"},
	{"/category/shoes", "Schuhe & Größen – Example Shop"},
	{"/search", "Search results"},
	{"/cart", "Your cart"},
	{"/checkout/payment", "Checkout"},
	{"/blog/how-to-choose-running-shoes", "How to choose running shoes"},
}

var utms = []struct{ source, medium, campaign string }{
	{"newsletter", "email", "spring_sale"},
	{"google", "cpc", "brand_search"},
	{"facebook", "social", "retargeting_q2"},
}

// prop is one property, written in order.
type prop struct {
	key string
	val any // string, int, float64, bool, nil, []any, map[string]any, or slotValue
}

// slotValue marks the $insert_id, whose tail is written per request.
type slotValue struct{}

// floatValue is a float written with a fixed number of decimals, as
// JavaScript's JSON.stringify writes prices.
type floatValue struct {
	v    float64
	prec int
}

// eventProps returns one event's properties in the order mixpanel-browser
// writes them: its standard properties, the page's, then the event's own.
func eventProps(r *rand.Rand, c *client, name, token string, at time.Time) []prop {
	page := pages[r.IntN(len(pages))]
	path, title := page.path, page.title
	if page.path == "/products/%d" {
		id := 1000 + r.IntN(9000)
		path, title = fmt.Sprintf(page.path, id), fmt.Sprintf(page.title, id)
	}
	query := ""
	var utm *struct{ source, medium, campaign string }
	switch n := r.IntN(20); {
	case n < 6:
		u := utms[r.IntN(len(utms))]
		utm = &u
		query = fmt.Sprintf("?utm_source=%s&utm_medium=%s&utm_campaign=%s", u.source, u.medium, u.campaign)
	case n < 7:
		// Some sites put personal data in URLs; Veil's scrubber removes it.
		query = "?ref=mail&email=alice.smith%40example.com"
	case n < 10:
		query = fmt.Sprintf("?q=trail+runner&page=%d", 1+r.IntN(5))
	}
	url := "https://shop.example.com" + path + query

	distinct := "$device:" + c.deviceID
	if c.userID != "" {
		distinct = c.userID
	}
	ps := []prop{
		{"$os", c.os},
		{"$browser", c.browser},
		{"$current_url", url},
		{"$browser_version", json.Number(c.browserVersion)},
		{"$screen_height", c.screenH},
		{"$screen_width", c.screenW},
		{"mp_lib", "web"},
		{"$lib_version", "2.58.0"},
		{"$insert_id", slotValue{}},
		{"time", floatValue{float64(at.UnixMilli()) / 1000, 3}},
		{"distinct_id", distinct},
		{"$device_id", c.deviceID},
		{"$initial_referrer", c.initialReferrer},
		{"$initial_referring_domain", c.initialDomain},
	}
	if c.device != "" {
		ps = append(ps, prop{"$device", c.device})
	}
	if c.userID != "" {
		ps = append(ps, prop{"$user_id", c.userID})
	}
	if r.IntN(2) == 0 {
		ref := referrers[1+r.IntN(len(referrers)-1)]
		ps = append(ps, prop{"$referrer", ref.url}, prop{"$referring_domain", ref.domain})
	}
	if utm != nil {
		ps = append(ps, prop{"utm_source", utm.source}, prop{"utm_medium", utm.medium}, prop{"utm_campaign", utm.campaign})
	}
	if name == "$mp_web_page_view" {
		ps = append(ps,
			prop{"current_page_title", title},
			prop{"current_domain", "shop.example.com"},
			prop{"current_url_path", path},
			prop{"current_url_protocol", "https:"},
			prop{"current_url_search", query},
		)
	}
	ps = append(ps, prop{"token", token}, prop{"mp_sent_by_lib_version", "2.58.0"})

	// The event's own properties, up to 30 in all.
	own := customProps(r, name)
	want := len(ps) + r.IntN(len(own)+1)
	for _, p := range own {
		if len(ps) >= min(want, 30) {
			break
		}
		ps = append(ps, p)
	}
	return ps
}

func customProps(r *rand.Rand, name string) []prop {
	price := floatValue{float64(500+r.IntN(20000)) / 100, 2}
	common := []prop{
		{"logged_in", r.IntN(3) == 0},
		{"ab_variant", [...]string{"A", "B", "control"}[r.IntN(3)]},
		{"page_load_ms", 80 + r.IntN(2500)},
		{"experiment", map[string]any{"name": "new_checkout", "variant": [...]string{"on", "off"}[r.IntN(2)], "exposures": 1 + r.IntN(9)}},
		{"viewport", map[string]any{"w": 360 + r.IntN(1600), "h": 640 + r.IntN(800), "dpr": floatValue{1 + float64(r.IntN(3))/2, 1}}},
		{"referral_code", nil},
	}
	var own []prop
	switch name {
	case "Product Viewed", "Add To Cart":
		own = []prop{
			{"product_id", fmt.Sprintf("SKU-%06d", r.IntN(1000000))},
			{"price", price},
			{"currency", [...]string{"EUR", "USD", "GBP"}[r.IntN(3)]},
			{"quantity", 1 + r.IntN(4)},
			{"categories", []any{"shoes", "running", [...]string{"sale", "new", "outdoor"}[r.IntN(3)]}},
			{"cart", map[string]any{"items": 1 + r.IntN(6), "total": floatValue{float64(r.IntN(40000)) / 100, 2}, "coupon": nil}},
		}
	case "Search":
		own = []prop{
			{"query", [...]string{"trail runner", "waterproof jacket", "socks size 42", "Laufschuhe Größe 43"}[r.IntN(4)]},
			{"results", r.IntN(400)},
			{"filters", map[string]any{"color": "blue", "sizes": []any{41, 42, 43}, "in_stock": true}},
			{"sort", "relevance"},
		}
	case "Video Played":
		own = []prop{
			{"video_id", fmt.Sprintf("vid_%d", r.IntN(5000))},
			{"duration_s", floatValue{float64(r.IntN(60000)) / 100, 2}},
			{"position_s", r.IntN(300)},
			{"autoplay", r.IntN(2) == 0},
			{"quality", "1080p"},
		}
	case "Sign Up":
		own = []prop{
			{"plan", [...]string{"free", "pro", "team"}[r.IntN(3)]},
			{"method", [...]string{"email", "google", "apple"}[r.IntN(3)]},
			{"newsletter_opt_in", r.IntN(2) == 0},
		}
	case "Checkout Started", "Purchase Completed":
		own = []prop{
			{"order_id", fmt.Sprintf("ORD-%08d", r.IntN(100000000))},
			{"revenue", price},
			{"currency", "EUR"},
			{"items", []any{
				map[string]any{"sku": "SKU-001234", "qty": 1, "price": floatValue{89.95, 2}},
				map[string]any{"sku": "SKU-004321", "qty": 2, "price": floatValue{12.5, 2}},
			}},
			{"shipping", map[string]any{"method": "standard", "country": "DE", "cost": floatValue{4.9, 2}}},
			{"payment_method", [...]string{"card", "paypal", "invoice"}[r.IntN(3)]},
		}
	case "Button Clicked":
		own = []prop{
			{"button_id", fmt.Sprintf("btn-%d", r.IntN(40))},
			{"label", [...]string{"Add to wishlist", "Size guide", "Newsletter", "Chat with us"}[r.IntN(4)]},
			{"section", "pdp"},
		}
	}
	return append(own, common...)
}

// makeTemplate writes a batch of n events from one client and cuts its
// form body at the id slots.
func makeTemplate(r *rand.Rand, n int, token string, now time.Time) *template {
	c := newClient(r)
	var js []byte
	var slots []int // offsets of the slots in js
	if n > 1 {
		js = append(js, '[')
	}
	for i := range n {
		if i > 0 {
			js = append(js, ',')
		}
		name := eventNames[r.IntN(len(eventNames))]
		// mixpanel-browser flushes every few seconds; the events of a batch
		// happened over the last half minute.
		at := now.Add(-time.Duration(r.Int64N(int64(30 * time.Second))))
		js = append(js, `{"event":`...)
		js = appendJSON(js, name)
		js = append(js, `,"properties":{`...)
		for j, p := range eventProps(r, &c, name, token, at) {
			if j > 0 {
				js = append(js, ',')
			}
			js = appendJSON(js, p.key)
			js = append(js, ':')
			if _, ok := p.val.(slotValue); ok {
				// "$insert_id":"<filler><slot>": the filler (0–2 letters)
				// puts the slot on a multiple of 3.
				js = append(js, '"')
				for len(js)%3 != 0 {
					js = append(js, byte('a'+r.IntN(26)))
				}
				slots = append(slots, len(js))
				js = append(js, make([]byte, slotLen)...)
				js = append(js, '"')
				continue
			}
			js = appendJSON(js, p.val)
		}
		js = append(js, "}}"...)
	}
	if n > 1 {
		js = append(js, ']')
	}

	t := &template{events: n, ua: c.ua, xff: c.ip, json: js}
	prev := 0
	for _, s := range append(slots, len(js)) {
		seg := js[prev:s]
		enc := make([]byte, base64.StdEncoding.EncodedLen(len(seg)))
		base64.StdEncoding.Encode(enc, seg)
		t.segs = append(t.segs, appendEscaped(nil, enc))
		prev = s + slotLen
	}
	t.size = len("data=")
	for _, s := range t.segs {
		t.size += len(s)
	}
	t.size += n * (slotLen / 3 * 4) * 3 // the slots, escaped at worst
	return t
}

// appendJSON appends v as JSON, without HTML escaping, as a browser's
// JSON.stringify writes it.
func appendJSON(dst []byte, v any) []byte {
	switch x := v.(type) {
	case floatValue:
		return strconv.AppendFloat(dst, x.v, 'f', x.prec, 64)
	case string:
		return appendJSONString(dst, x)
	case []any:
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSON(dst, e)
		}
		return append(dst, ']')
	case map[string]any:
		// Sorted keys keep templates reproducible from the seed.
		dst = append(dst, '{')
		for i, k := range sortedKeys(x) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSON(dst, x[k])
		}
		return append(dst, '}')
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("loadgen: property value %T does not encode: %v", v, err))
	}
	return append(dst, b...)
}

func appendJSONString(dst []byte, s string) []byte {
	// json.Marshal would escape <, > and & for HTML; browsers do not.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Request is one generated request as a run sends it: a form POST to
// /track/?verbose=1&ip=1 with these headers.
type Request struct {
	Body         []byte // data=<URL-escaped base64 of the JSON>
	UserAgent    string
	ForwardedFor string
	Events       int
}

// Requests returns n requests of batch events each, built from the same
// templates a run uses (with distinct $insert_ids), for benchmarks and
// tests that want the load generator's payloads without its HTTP client.
func Requests(seed uint64, n, batch int, token string) []Request {
	g := newGenerator(seed, min(n, 64), batch, 0, token, time.Now())
	out := make([]Request, n)
	for i := range out {
		t := g.full[i%len(g.full)]
		out[i] = Request{
			Body:         t.appendBody(nil, &g.run, g.take(t.events)),
			UserAgent:    t.ua,
			ForwardedFor: t.xff,
			Events:       t.events,
		}
	}
	return out
}
