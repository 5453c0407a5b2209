package ingest

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/veilhq/veil/internal/kafkax"
)

// Project is one analytics project the collector accepts events for.
type Project struct {
	Name string `yaml:"name"`
	// Token is the public project token SDKs put in every event.
	Token string `yaml:"token"`
	// Secret authenticates /import (HTTP Basic, secret as user name).
	Secret string `yaml:"secret"`
}

// Limits bound what one request and one event may be. Each is answered with
// a reason naming the limit when exceeded.
type Limits struct {
	MaxEventsPerRequest int           `yaml:"max_events_per_request"`
	MaxEventBytes       int           `yaml:"max_event_bytes"`
	MaxBodyBytes        int64         `yaml:"max_body_bytes"`
	MaxProperties       int           `yaml:"max_properties"`
	MaxDepth            int           `yaml:"max_depth"`
	MaxArrayLen         int           `yaml:"max_array_len"`
	TrackMaxAge         time.Duration `yaml:"track_max_age"`
	MaxFuture           time.Duration `yaml:"max_future"`
}

// Config is the collector section of Veil's configuration.
type Config struct {
	Listen string `yaml:"listen"`
	// TrustedProxies are the peers whose X-Forwarded-For is believed. The
	// client IP is the right-most address not in this list.
	TrustedProxies []string  `yaml:"trusted_proxies"`
	Projects       []Project `yaml:"projects"`
	// AcceptAnyToken takes events with any token into DefaultProject; it is
	// what `veil dev` uses, never a production setting.
	AcceptAnyToken bool   `yaml:"accept_any_token"`
	DefaultProject string `yaml:"default_project"`
	// OptOutCookie is the name of the opt-out cookie on the collector's domain.
	OptOutCookie   string              `yaml:"optout_cookie"`
	Limits         Limits              `yaml:"limits"`
	Producer       kafkax.WriterConfig `yaml:"producer"`
	ProduceTimeout time.Duration       `yaml:"produce_timeout"`
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// once the collector is asked to stop.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	TLSCert         string        `yaml:"tls_cert"`
	TLSKey          string        `yaml:"tls_key"`
}

// DefaultConfig returns the collector defaults, which follow Mixpanel's
// documented ingestion limits.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:8080",
		DefaultProject: "default",
		OptOutCookie:   "veil_optout",
		Limits: Limits{
			MaxEventsPerRequest: 2000,
			MaxEventBytes:       1 << 20,
			MaxBodyBytes:        10 << 20,
			MaxProperties:       255,
			MaxDepth:            3,
			MaxArrayLen:         255,
			TrackMaxAge:         5 * 24 * time.Hour,
			MaxFuture:           time.Hour,
		},
		Producer:        kafkax.DefaultWriterConfig(),
		ProduceTimeout:  10 * time.Second,
		ShutdownTimeout: 10 * time.Second,
	}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if c.Listen == "" {
		return errors.New("collector.listen must be set")
	}
	for i, p := range c.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			return fmt.Errorf("collector.trusted_proxies[%d] is not an address or CIDR prefix", i)
		}
	}
	if len(c.Projects) == 0 && !c.AcceptAnyToken {
		return errors.New("collector.projects must list at least one project (or set collector.accept_any_token)")
	}
	if c.AcceptAnyToken && c.DefaultProject == "" {
		return errors.New("collector.default_project must be set with collector.accept_any_token")
	}
	seen := map[string]bool{}
	for i, p := range c.Projects {
		switch {
		case p.Name == "":
			return fmt.Errorf("collector.projects[%d].name must be set", i)
		case p.Token == "":
			return fmt.Errorf("collector.projects[%d].token must be set", i)
		case seen[p.Token]:
			return fmt.Errorf("collector.projects[%d].token is used by another project", i)
		}
		seen[p.Token] = true
	}
	l := c.Limits
	switch {
	case c.OptOutCookie == "":
		return errors.New("collector.optout_cookie must be set")
	case l.MaxEventsPerRequest <= 0:
		return errors.New("collector.limits.max_events_per_request must be positive")
	case l.MaxEventBytes <= 0:
		return errors.New("collector.limits.max_event_bytes must be positive")
	case l.MaxBodyBytes <= 0:
		return errors.New("collector.limits.max_body_bytes must be positive")
	case l.MaxProperties <= 0:
		return errors.New("collector.limits.max_properties must be positive")
	case l.MaxDepth <= 0:
		return errors.New("collector.limits.max_depth must be positive")
	case l.MaxArrayLen <= 0:
		return errors.New("collector.limits.max_array_len must be positive")
	case l.TrackMaxAge <= 0:
		return errors.New("collector.limits.track_max_age must be positive")
	case l.MaxFuture < 0:
		return errors.New("collector.limits.max_future must not be negative")
	case c.ProduceTimeout <= 0:
		return errors.New("collector.produce_timeout must be positive")
	case c.ShutdownTimeout <= 0:
		return errors.New("collector.shutdown_timeout must be positive")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("collector.tls_cert and collector.tls_key must be set together")
	}
	return c.Producer.Validate()
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
