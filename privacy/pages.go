package privacy

import (
	"html/template"
	"net/http"
	"time"
)

// Pages serves /optout and /optin: a small page with one button that sets
// or clears the opt-out cookie on the collector's domain. Every event that
// carries the cookie is dropped by the workers.
type Pages struct {
	Cookie string
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}button{font-size:1rem;padding:.6rem 1.2rem}</style>
</head><body>
<h1>{{.Title}}</h1>
<p>{{.Status}}</p>
<p>{{.Explain}}</p>
<form method="post" action="{{.Action}}"><button type="submit">{{.Button}}</button></form>
</body></html>
`))

type page struct{ Title, Status, Explain, Action, Button string }

// Routes registers /optout and /optin on mux.
func (p Pages) Routes(mux *http.ServeMux) {
	mux.HandleFunc("/optout", p.serve(true))
	mux.HandleFunc("/optin", p.serve(false))
}

func (p Pages) serve(optOut bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(p.Cookie)
		out := err == nil && ck.Value != "" && ck.Value != "0"
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPost:
			c := &http.Cookie{Name: p.Cookie, Path: "/", HttpOnly: true}
			if optOut {
				c.Value = "1"
				// Long-lived: the choice should outlast the device's
				// other cookies. Ten years is what browsers allow at most
				// in practice (Chrome caps at 400 days and renews on visit).
				c.MaxAge = int((10 * 365 * 24 * time.Hour).Seconds())
			} else {
				c.Value = ""
				c.MaxAge = -1
			}
			if secure(r) {
				// SameSite=None lets the cookie travel with the SDK's
				// cross-site requests to the collector; browsers accept it
				// only with Secure.
				c.Secure = true
				c.SameSite = http.SameSiteNoneMode
			} else {
				c.SameSite = http.SameSiteLaxMode
			}
			http.SetCookie(w, c)
			out = optOut
		default:
			w.Header().Set("Allow", "GET, POST")
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
		pg.Status = "This browser is not opted out."
		if out {
			pg.Status = "This browser is opted out: its analytics events are not stored."
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = pageTmpl.Execute(w, pg)
	}
}

func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}
