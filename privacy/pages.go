package privacy

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/veilhq/veil/internal/forwarded"
)

// Pages serves /optout and /optin on the collector: a small page with one
// button that sets or clears the opt-out cookie on the collector's domain.
// Every event that carries the cookie is dropped by the workers.
//
// Only the user, on the page itself, may change the choice. A request that
// would change it (POST) is refused with 403 unless the browser says it
// comes from the page's own origin (Sec-Fetch-Site, Origin, Referer) and it
// carries the form's token, which must equal the token cookie the page set
// (a double-submit token). GET and HEAD only show the page. Every answer
// forbids framing, caching, sniffing and referrers.
type Pages struct {
	cookie  string
	proxies *forwarded.Proxies
	log     *zap.Logger
	refused *prometheus.CounterVec
}

// PagesDeps are the pages' collaborators.
type PagesDeps struct {
	Logger  *zap.Logger
	Metrics prometheus.Registerer
	// Proxies are the collector's trusted proxies: only they may say that
	// the client used HTTPS, or which host it asked for. Nil trusts none.
	Proxies *forwarded.Proxies
}

// Why a request to change the choice was refused: the values of
// veil_collector_optout_refused_total's reason label.
const (
	// RefusedCrossSite: Sec-Fetch-Site, Origin or Referer names another
	// origin than the page's.
	RefusedCrossSite = "cross_site"
	// RefusedNoOrigin: the request says nothing of where it came from
	// (no Sec-Fetch-Site, an absent or opaque Origin, no Referer).
	RefusedNoOrigin = "no_origin"
	// RefusedToken: the form's token is missing or does not match the
	// token cookie.
	RefusedToken = "token"
)

var refusedReasons = []string{RefusedCrossSite, RefusedNoOrigin, RefusedToken}

// refusedText is what the page tells the user, per reason.
var refusedText = map[string]string{
	RefusedCrossSite: "Your choice was not changed: the request came from another site. Only this page can change it.",
	RefusedNoOrigin:  "Your choice was not changed: your browser did not say where the request came from. Use the button below.",
	RefusedToken:     "Your choice was not changed: the form had expired. Use the button below.",
}

// NewPages returns the pages for the opt-out cookie named cookie.
func NewPages(cookie string, deps PagesDeps) (*Pages, error) {
	if cookie == "" {
		return nil, errors.New("collector.optout_cookie must be set")
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	p := &Pages{
		cookie:  cookie,
		proxies: deps.Proxies,
		log:     deps.Logger,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_collector_optout_refused_total",
			Help: "Requests to /optout or /optin that would have changed the choice, refused, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range refusedReasons {
		p.refused.WithLabelValues(r)
	}
	if deps.Metrics != nil {
		if err := deps.Metrics.Register(p.refused); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// pageCSS is the page's only style. It is inline, allowed by its hash in
// the Content-Security-Policy, so the page needs no other resource.
const pageCSS = `body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}button{font-size:1rem;padding:.6rem 1.2rem}.refused{font-weight:bold}`

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>` + pageCSS + `</style>
</head><body>
<h1>{{.Title}}</h1>
{{if .Refused}}<p class="refused">{{.Refused}}</p>
{{end}}<p>{{.Status}}</p>
<p>{{.Explain}}</p>
<form method="post" action="{{.Action}}"><input type="hidden" name="` + tokenField + `" value="{{.Token}}"><button type="submit">{{.Button}}</button></form>
</body></html>
`))

// pageCSP allows the page nothing but its own style and posting its form
// to itself, and no one to frame it.
var pageCSP = func() string {
	sum := sha256.Sum256([]byte(pageCSS))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}()

type page struct{ Title, Status, Explain, Action, Button, Token, Refused string }

// Routes registers /optout and /optin on mux.
func (p *Pages) Routes(mux *http.ServeMux) {
	mux.HandleFunc("/optout", p.serve(true))
	mux.HandleFunc("/optin", p.serve(false))
}

// setHeaders puts the privacy page's protections on an answer: no framing
// (clickjacking the button), no caching (the page shows the choice and
// holds a token), no referrer (the page's address leaves with no request),
// no sniffing, and a policy that allows nothing the page does not use.
func setHeaders(h http.Header) {
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

func (p *Pages) serve(optOut bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		setHeaders(w.Header())
		ck, err := r.Cookie(p.cookie)
		out := err == nil && ck.Value != "" && ck.Value != "0"
		secure := p.proxies.Secure(r)
		code := http.StatusOK
		var refused string
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPost:
			if reason := p.check(w, r, secure); reason != "" {
				p.refused.WithLabelValues(reason).Inc()
				p.log.Debug("opt-out page refused to change the choice", zap.String("reason", reason))
				code, refused = http.StatusForbidden, refusedText[reason]
				break
			}
			http.SetCookie(w, p.choiceCookie(optOut, secure))
			out = optOut
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		pg := page{
			Title:   "Opt out of analytics",
			Explain: "Opting out sets a cookie on this browser. While it is there, no analytics event from this browser is stored. Clearing your cookies removes the choice.",
			Action:  "/optout",
			Button:  "Opt out",
		}
		if !optOut {
			pg = page{Title: "Opt back in to analytics", Explain: "Opting back in removes the opt-out cookie from this browser.", Action: "/optin", Button: "Opt in"}
		}
		pg.Token, pg.Refused = p.token(w, r, secure), refused
		pg.Status = "This browser is not opted out."
		if out {
			pg.Status = "This browser is opted out: its analytics events are not stored."
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(code)
		_ = pageTmpl.Execute(w, pg)
	}
}

// choiceCookie sets (opt out) or clears (opt in) the opt-out cookie.
func (p *Pages) choiceCookie(optOut, secure bool) *http.Cookie {
	c := &http.Cookie{Name: p.cookie, Path: "/", HttpOnly: true}
	if optOut {
		c.Value = "1"
		// Long-lived: the choice should outlast the device's other
		// cookies. Ten years is what browsers allow at most in practice
		// (Chrome caps at 400 days and renews on visit).
		c.MaxAge = int((10 * 365 * 24 * time.Hour).Seconds())
	} else {
		c.MaxAge = -1
	}
	if secure {
		// The cookie must travel with the SDK's cross-site requests to the
		// collector (XMLHttpRequest, sendBeacon, pixels from the customer's
		// site): that is how the workers learn of the choice. Browsers send
		// a cookie on cross-site requests only with SameSite=None, which
		// they accept only with Secure. The state change is protected by
		// the origin checks and the token instead.
		c.Secure = true
		c.SameSite = http.SameSiteNoneMode
	} else {
		// Over plain HTTP (development) browsers refuse SameSite=None; Lax
		// is the most that travels, with same-site requests only.
		c.SameSite = http.SameSiteLaxMode
	}
	return c
}

// tokenField is the form field that carries the token.
const tokenField = "veil_csrf"

// tokenLen is the length of a token: 32 random bytes in unpadded base64url.
const tokenLen = 43

// tokenCookie is the name of the cookie that holds the page's token. Over
// HTTPS it has the __Host- prefix: browsers then accept it only from this
// very host, over HTTPS, for Path=/ and without a Domain, so no other
// host of the same site (a subdomain) can plant a token of its choosing.
func (p *Pages) tokenCookie(secure bool) string {
	if secure {
		return "__Host-" + p.cookie + "_csrf"
	}
	return p.cookie + "_csrf"
}

// token returns the browser's page token, making and setting a new one
// when the browser has none.
func (p *Pages) token(w http.ResponseWriter, r *http.Request, secure bool) string {
	name := p.tokenCookie(secure)
	if ck, err := r.Cookie(name); err == nil && wellFormedToken(ck.Value) {
		return ck.Value
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	t := base64.RawURLEncoding.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: t, Path: "/", HttpOnly: true, Secure: secure,
		// Strict: the token cookie travels only with requests the page
		// itself makes, never with one another site starts.
		SameSite: http.SameSiteStrictMode,
	})
	return t
}

func wellFormedToken(s string) bool {
	if len(s) != tokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// maxFormBytes bounds the form: it holds one token.
const maxFormBytes = 4 << 10

// check returns why a request to change the choice must be refused, or ""
// when it comes from the page itself.
func (p *Pages) check(w http.ResponseWriter, r *http.Request, secure bool) string {
	if reason := p.checkOrigin(r); reason != "" {
		return reason
	}
	// The cookie as the browser sent it: a token the page only just
	// made for a browser that had none cannot match a form.
	ck, err := r.Cookie(p.tokenCookie(secure))
	if err != nil || !wellFormedToken(ck.Value) {
		return RefusedToken
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return RefusedToken
	}
	// From the body only: a token in the URL would be one another page
	// could have written into a link.
	got := r.PostForm.Get(tokenField)
	if subtle.ConstantTimeCompare([]byte(got), []byte(ck.Value)) != 1 {
		return RefusedToken
	}
	return ""
}

// checkOrigin returns why the browser's own account of where the request
// came from refuses it, or "" when the browser vouches for the page's
// origin. Browsers send Sec-Fetch-Site (same-origin, or none for what the
// user did in the browser itself) and Origin with every POST; as the page
// sets Referrer-Policy: no-referrer, its own form posts carry Origin: null
// and no Referer, so Sec-Fetch-Site is then the witness. A signal that
// names another origin refuses the request, whatever the others say; a
// request with no signal at all is refused too.
func (p *Pages) checkOrigin(r *http.Request) string {
	site := r.Header.Values("Sec-Fetch-Site")
	vouched := false
	switch {
	case len(site) == 0:
	case len(site) == 1 && (site[0] == "same-origin" || site[0] == "none"):
		vouched = true
	default: // cross-site, same-site, or anything unexpected
		return RefusedCrossSite
	}
	switch origins := r.Header.Values("Origin"); {
	case len(origins) > 1:
		return RefusedCrossSite
	case len(origins) == 1 && origins[0] != "null":
		if !p.proxies.SameOrigin(r, origins[0]) {
			return RefusedCrossSite
		}
		return ""
	}
	// No Origin, or an opaque one: the Referer, when sent, must be the
	// page's.
	if refs := r.Header.Values("Referer"); len(refs) > 0 {
		if len(refs) > 1 || !p.proxies.SameOrigin(r, refs[0]) {
			return RefusedCrossSite
		}
		return ""
	}
	if vouched {
		return ""
	}
	return RefusedNoOrigin
}
