package enrich

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/veilhq/veil/enrich/geo"
	"github.com/veilhq/veil/enrich/useragent"
	"github.com/veilhq/veil/event"
)

// Config is the enrich section of Veil's configuration.
type Config struct {
	// Geo names the MaxMind DB files (GeoIP2/GeoLite2 City or DB-IP Lite).
	// With none, geolocation is off: one warning at start, a metric, and
	// nothing else changes.
	Geo       geo.Config       `yaml:"geo"`
	UserAgent useragent.Config `yaml:"user_agent"`
}

// DefaultConfig returns the enrichment defaults.
func DefaultConfig() Config {
	return Config{Geo: geo.DefaultConfig(), UserAgent: useragent.DefaultConfig()}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if len(c.Geo.Paths) > 0 {
		if err := c.Geo.Validate(); err != nil {
			return errors.New("enrich." + err.Error())
		}
	}
	if err := c.UserAgent.Validate(); err != nil {
		return errors.New("enrich." + err.Error())
	}
	return nil
}

// Deps are the stage's collaborators.
type Deps struct {
	Logger  *zap.Logger
	Metrics prometheus.Registerer
	// DropBots reports whether a project drops bot traffic (else it is
	// flagged). Nil flags everywhere.
	DropBots func(project string) bool
}

// Geo lookup outcomes, the label values of veil_enrich_geo_lookups_total.
const (
	geoHit        = "hit"
	geoMiss       = "miss"
	geoSkipped    = "skipped" // ip=0, no IP, or the SDK set geo itself
	geoNoDatabase = "no_database"
)

// Enricher is the enrichment stage.
type Enricher struct {
	geo      *geo.Locator // nil: geolocation off
	ua       *useragent.Parser
	dropBots func(string) bool
	log      *zap.Logger
	lookups  *prometheus.CounterVec
	bots     *prometheus.CounterVec
	// The counters of lookups and bots by label, resolved once.
	geoHit, geoMiss, geoSkipped, geoNoDatabase prometheus.Counter
	botsFlagged, botsDropped                   prometheus.Counter
}

// New opens the geo databases and builds the user-agent parser.
func New(cfg Config, deps Deps) (*Enricher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	e := &Enricher{
		dropBots: deps.DropBots,
		log:      deps.Logger,
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_enrich_geo_lookups_total", Help: "IP geolocation lookups, by result.",
		}, []string{"result"}),
		bots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_enrich_bot_events_total", Help: "Events from crawlers and bots, by action (flagged or dropped).",
		}, []string{"action"}),
	}
	e.geoHit, e.geoMiss = e.lookups.WithLabelValues(geoHit), e.lookups.WithLabelValues(geoMiss)
	e.geoSkipped, e.geoNoDatabase = e.lookups.WithLabelValues(geoSkipped), e.lookups.WithLabelValues(geoNoDatabase)
	e.botsFlagged, e.botsDropped = e.bots.WithLabelValues("flagged"), e.bots.WithLabelValues("dropped")
	if deps.Metrics != nil {
		deps.Metrics.MustRegister(e.lookups, e.bots)
	}
	if e.dropBots == nil {
		e.dropBots = func(string) bool { return false }
	}
	var err error
	if len(cfg.Geo.Paths) > 0 {
		if e.geo, err = geo.NewLocator(cfg.Geo, deps.Logger.Named("geo")); err != nil {
			return nil, err
		}
	} else {
		deps.Logger.Warn("no geolocation database configured (enrich.geo.paths): events get no country, region or city")
	}
	if e.ua, err = useragent.New(cfg.UserAgent); err != nil {
		return nil, err
	}
	return e, nil
}

// Run reloads the geo databases when their files are replaced, until ctx
// ends.
func (e *Enricher) Run(ctx context.Context) error {
	if e.geo == nil {
		<-ctx.Done()
		return nil
	}
	return e.geo.Run(ctx)
}

// Close releases the geo databases.
func (e *Enricher) Close() {
	if e.geo != nil {
		e.geo.Close()
	}
}

// Apply enriches ev in place. It drops only bot traffic of projects that
// asked for it. It keeps no state of its own beyond the lookups' caches,
// which are safe for concurrent use, so one Enricher serves every
// goroutine.
func (e *Enricher) Apply(ev *event.Event) event.DropReason {
	promote(ev)
	e.locate(ev)
	if ev.UserAgent != "" {
		info := e.ua.Parse(ev.UserAgent)
		d := &ev.Device
		// What the SDK said about itself wins over what the header says.
		if d.Browser == "" && d.BrowserVersion == "" {
			d.Browser, d.BrowserVersion = info.Browser, info.BrowserVersion
		}
		if d.OS == "" {
			d.OS = info.OS
		}
		if d.Device == "" {
			d.Device = info.Device
		}
		if info.Bot {
			d.Bot = true
			if e.dropBots(ev.Project) {
				e.botsDropped.Inc()
				return event.DropBot
			}
			e.botsFlagged.Inc()
		}
	}
	return event.Keep
}

// locate fills ev.Geo from the IP, as Mixpanel does: the event property
// `ip` (or a profile's `$ip`) is used when present; ip=0 in the query, or
// `ip`/`$ip` set to 0, turns the lookup off; geo the SDK set explicitly
// wins.
func (e *Enricher) locate(ev *event.Event) {
	ip := ev.IP
	noGeo := ev.Signals.NoGeo
	for _, k := range [...]event.Known{propIP, propDollarIP} {
		if i := ev.Properties.Find(k); i >= 0 {
			ip, noGeo = ipProperty(ev.Properties.At(i), ip, noGeo)
		}
	}
	ev.IP = ip // the de-identification stage drops or truncates it
	g := &ev.Geo
	switch {
	case noGeo || !ip.IsValid() || (g.CountryCode != "" && g.Region != "" && g.City != ""):
		e.geoSkipped.Inc()
		return
	case e.geo == nil:
		e.geoNoDatabase.Inc()
		return
	}
	loc, ok := e.geo.Lookup(ip)
	if !ok {
		e.geoMiss.Inc()
		return
	}
	e.geoHit.Inc()
	if g.CountryCode == "" && g.Region == "" && g.City == "" {
		g.CountryCode, g.Region, g.City = loc.CountryCode, loc.Region, loc.City
		return
	}
	// The SDK set part of the location: keep it, fill in only what agrees
	// with it (a city from another country would be nonsense).
	if g.CountryCode == "" {
		g.CountryCode = loc.CountryCode
	}
	if g.CountryCode == loc.CountryCode {
		if g.Region == "" {
			g.Region = loc.Region
		}
		if g.Region == loc.Region && g.City == "" {
			g.City = loc.City
		}
	}
}
