package ingest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/veilhq/veil/event/rules"
	"github.com/veilhq/veil/ingest/spool"
	"github.com/veilhq/veil/internal/forwarded"
	"github.com/veilhq/veil/internal/httpserve"
	"github.com/veilhq/veil/internal/kafkax"
)

// Project is one analytics project the collector accepts events for.
type Project struct {
	Name string `yaml:"name"`
	// ID is the project_id that /import clients authenticating with a
	// service account pass in the query string. It defaults to Name.
	ID string `yaml:"id"`
	// Token is the public project token SDKs put in every event and update.
	Token string `yaml:"token"`
	// Secret authenticates /import: HTTP Basic with the secret as user name
	// and an empty password. Optional; the token works there too.
	Secret string `yaml:"secret"`
}

// projectID is the id service-account requests name the project by.
func (p Project) projectID() string {
	if p.ID != "" {
		return p.ID
	}
	return p.Name
}

// ServiceAccount authenticates /import with HTTP Basic username:secret and
// a ?project_id= naming one of Projects.
type ServiceAccount struct {
	Username string `yaml:"username"`
	Secret   string `yaml:"secret"`
	// Projects lists the project ids (Project.ID, or the name when no id is
	// set) this account may import into.
	Projects []string `yaml:"projects"`
}

// Limits bound what one request and one event may be. Each is answered with
// a reason naming the limit when exceeded. The defaults are Mixpanel's.
type Limits struct {
	// Limits bound one event: its bytes, properties, nesting, lists and
	// time window. They are the rules (event/rules) the worker holds
	// every message of the raw topic to as well.
	rules.Limits `yaml:",inline"`
	// MaxEventsPerRequest bounds the events (or profile updates) of one request.
	MaxEventsPerRequest int `yaml:"max_events_per_request"`
	// MaxBodyBytes bounds a request body after decompression.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxInflightBytes bounds the memory the bodies of all requests in
	// flight hold together. A body's buffer grows as its bytes arrive,
	// never on the word of its Content-Length; a request whose next step
	// does not fit is answered 503 with Retry-After.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
	// RateLimit is the events per second each project may send, across all
	// endpoints, as a token bucket; 0 turns rate limiting off. Mixpanel's
	// documented ceiling is about 30000 events per second per project.
	RateLimit float64 `yaml:"rate_limit"`
	// RateBurst is the bucket's size. 0 means one second of RateLimit, and
	// never less than MaxEventsPerRequest, so that a full request can pass.
	RateBurst int `yaml:"rate_burst"`
}

// Config is the collector section of Veil's configuration.
type Config struct {
	Listen string `yaml:"listen"`
	// TrustedProxies are the peers (addresses or CIDR prefixes) whose
	// X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host are believed.
	// The client IP is the right-most X-Forwarded-For address not in this
	// list; from any other peer the headers are ignored.
	TrustedProxies  []string         `yaml:"trusted_proxies"`
	Projects        []Project        `yaml:"projects"`
	ServiceAccounts []ServiceAccount `yaml:"service_accounts"`
	// AcceptAnyToken takes events and profile updates (/track, /engage,
	// /groups) whose token is no project's into DefaultProject. The token
	// is public, so this only spares configuring it; /import still needs a
	// configured project's credentials, which are secrets: accepting any
	// would let a wrong one pass until production. Not a production
	// setting; `veil dev` does not use it either.
	AcceptAnyToken bool   `yaml:"accept_any_token"`
	DefaultProject string `yaml:"default_project"`
	// OptOutCookie is the name of the opt-out cookie on the collector's domain.
	OptOutCookie string `yaml:"optout_cookie"`
	// RedirectHosts, when it lists any, are the hosts a redirect= link may
	// send its visitor to: a name ("shop.example.com") or every subdomain
	// of one ("*.example.com"). Empty follows any http(s) URL, as Mixpanel
	// does, which lets anyone make a link on the collector's domain that
	// leads elsewhere.
	RedirectHosts  []string              `yaml:"redirect_hosts"`
	Limits         Limits                `yaml:"limits"`
	Producer       kafkax.ProducerConfig `yaml:"producer"`
	ProduceTimeout time.Duration         `yaml:"produce_timeout"`
	// Spool keeps the messages Kafka cannot take within
	// collector.spool.deadline on a local disk and answers success; off
	// without a directory (see the spool package).
	Spool spool.Config `yaml:"spool"`
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// once the collector is asked to stop.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLSCert and TLSKey, when set, serve HTTPS (HTTP/2 and HTTP/1.1).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Server holds the listener's timeouts, header limit and connection
	// cap, the same settings as admin.server.
	Server httpserve.Config `yaml:"server"`
}

// DefaultConfig returns the collector defaults, which follow Mixpanel's
// documented ingestion limits. Rate limiting is off.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:8080",
		DefaultProject: "default",
		OptOutCookie:   "veil_optout",
		Limits: Limits{
			Limits:              rules.DefaultLimits(),
			MaxEventsPerRequest: 2000,
			MaxBodyBytes:        10 << 20,
			// 256 MiB: 25 bodies of the largest size at once, or
			// thousands of SDK batches (tens of KiB each). A request's
			// other working memory (decoded form and base64, envelopes)
			// is a small multiple of its body and lives only while it is
			// processed: size the collector's memory at 3-4 times this.
			MaxInflightBytes: 256 << 20,
		},
		Producer:        kafkax.DefaultProducerConfig(),
		ProduceTimeout:  10 * time.Second,
		Spool:           spool.DefaultConfig(),
		ShutdownTimeout: 10 * time.Second,
		Server:          httpserve.DefaultConfig(),
	}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if c.Listen == "" {
		return errors.New("collector.listen must be set")
	}
	for i, p := range c.TrustedProxies {
		if _, err := forwarded.ParsePrefix(p); err != nil {
			return fmt.Errorf("collector.trusted_proxies[%d] is not an address or CIDR prefix", i)
		}
	}
	if len(c.Projects) == 0 && !c.AcceptAnyToken {
		return errors.New("collector.projects must list at least one project (or set collector.accept_any_token)")
	}
	if c.AcceptAnyToken && c.DefaultProject == "" {
		return errors.New("collector.default_project must be set with collector.accept_any_token")
	}
	if err := c.validateProjects(); err != nil {
		return err
	}
	for i, h := range c.RedirectHosts {
		if !validRedirectHost(h) {
			return fmt.Errorf("collector.redirect_hosts[%d] must be a host name or *. and a domain", i)
		}
	}
	l := c.Limits
	if err := l.Limits.Validate("collector.limits"); err != nil {
		return err
	}
	switch {
	case c.OptOutCookie == "":
		return errors.New("collector.optout_cookie must be set")
	case l.MaxEventsPerRequest <= 0:
		return errors.New("collector.limits.max_events_per_request must be positive")
	case l.MaxBodyBytes <= 0:
		return errors.New("collector.limits.max_body_bytes must be positive")
	case l.MaxInflightBytes < l.MaxBodyBytes:
		return errors.New("collector.limits.max_inflight_bytes must be at least collector.limits.max_body_bytes, or a body of the largest size could never be read")
	case l.RateLimit < 0:
		return errors.New("collector.limits.rate_limit must not be negative")
	case l.RateBurst < 0:
		return errors.New("collector.limits.rate_burst must not be negative")
	case l.RateLimit > 0 && l.RateBurst > 0 && l.RateBurst < l.MaxEventsPerRequest:
		return errors.New("collector.limits.rate_burst must be at least collector.limits.max_events_per_request, or a full request could never pass")
	case c.ProduceTimeout <= 0:
		return errors.New("collector.produce_timeout must be positive")
	case c.ShutdownTimeout <= 0:
		return errors.New("collector.shutdown_timeout must be positive")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("collector.tls_cert and collector.tls_key must be set together")
	}
	if err := c.Server.Validate("collector.server"); err != nil {
		return err
	}
	if err := c.Spool.Validate(c.ProduceTimeout); err != nil {
		return err
	}
	return c.Producer.Validate()
}

func (c Config) validateProjects() error {
	names := map[string]bool{}
	ids := map[string]bool{}
	tokens := map[string]int{}
	for i, p := range c.Projects {
		if p.Token != "" {
			if _, dup := tokens[p.Token]; !dup {
				tokens[p.Token] = i
			}
		}
		switch {
		case p.Name == "":
			return fmt.Errorf("collector.projects[%d].name must be set", i)
		case names[p.Name]:
			return fmt.Errorf("collector.projects[%d].name is used by another project", i)
		case p.Token == "":
			return fmt.Errorf("collector.projects[%d].token must be set", i)
		case tokens[p.Token] != i:
			return fmt.Errorf("collector.projects[%d].token is used by another project", i)
		case ids[p.projectID()]:
			return fmt.Errorf("collector.projects[%d].id is used by another project", i)
		}
		names[p.Name] = true
		ids[p.projectID()] = true
	}
	secrets := map[string]bool{}
	for i, p := range c.Projects {
		if p.Secret == "" {
			continue
		}
		if secrets[p.Secret] {
			return fmt.Errorf("collector.projects[%d].secret is used by another project", i)
		}
		if j, ok := tokens[p.Secret]; ok && j != i {
			return fmt.Errorf("collector.projects[%d].secret is another project's token", i)
		}
		secrets[p.Secret] = true
	}
	users := map[string]bool{}
	for i, sa := range c.ServiceAccounts {
		switch {
		case sa.Username == "":
			return fmt.Errorf("collector.service_accounts[%d].username must be set", i)
		case users[sa.Username]:
			return fmt.Errorf("collector.service_accounts[%d].username is used by another account", i)
		case sa.Secret == "":
			return fmt.Errorf("collector.service_accounts[%d].secret must be set", i)
		case len(sa.Projects) == 0:
			return fmt.Errorf("collector.service_accounts[%d].projects must list at least one project id", i)
		}
		for j, id := range sa.Projects {
			if !ids[id] {
				return fmt.Errorf("collector.service_accounts[%d].projects[%d] is not the id of a configured project", i, j)
			}
		}
		users[sa.Username] = true
	}
	return nil
}

// validRedirectHost reports whether a redirect_hosts entry is a host name,
// optionally after "*.": letters, digits, '-' and '.', no empty label.
func validRedirectHost(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || strings.IndexFunc(label, func(r rune) bool {
			return !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) >= 0 {
			return false
		}
	}
	return true
}

// redirectAllowed reports whether redirect= may lead to host.
func (c Config) redirectAllowed(host string) bool {
	if len(c.RedirectHosts) == 0 {
		return true
	}
	host = strings.TrimSuffix(host, ".")
	for _, h := range c.RedirectHosts {
		if sub, ok := strings.CutPrefix(h, "*."); ok {
			if len(host) > len(sub) && strings.EqualFold(host[len(host)-len(sub):], sub) && host[len(host)-len(sub)-1] == '.' {
				return true
			}
		} else if strings.EqualFold(host, h) {
			return true
		}
	}
	return false
}

// rateBurst is the effective token-bucket size.
func (l Limits) rateBurst() int {
	if l.RateBurst > 0 {
		return l.RateBurst
	}
	b := int(l.RateLimit)
	if b < l.MaxEventsPerRequest {
		b = l.MaxEventsPerRequest
	}
	return b
}
