// Package loadgen drives a Veil collector over HTTP, on loopback only, with
// the requests mixpanel-browser sends: form POSTs to /track whose data= is
// the base64 of a JSON batch of realistic events. It measures what the
// collector accepts (events/s, requests/s, latency percentiles from an HDR
// histogram, errors by class) and, when given ClickHouse's HTTP address,
// how fast events become queryable in veil.events and with what lag.
//
// It can also start the server it drives, to measure ceilings on the same
// machine with the same load: a trivial net/http handler answering 1
// (Ceiling "http"), Veil's collector producing to an embedded Kafka
// broker with no worker and no ClickHouse beside it (Ceiling "collector"),
// or the collector's producer alone writing the collector's messages for
// each request into that broker, with no HTTP (Ceiling "kafka").
//
// Every run is bounded by Duration and/or Events and stops by itself.
package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/veilhq/veil/internal/devstack"
)

// Ceilings the load generator can start.
const (
	CeilingHTTP      = "http"      // a trivial handler answering 1
	CeilingCollector = "collector" // Veil's collector and an embedded broker, nothing else
	// CeilingCollectorSealed is CeilingCollector with the envelopes sealed
	// (seal.key_file), as `veil dev` runs it: the two side by side say
	// what sealing costs the collector.
	CeilingCollectorSealed = "collector-sealed"
	CeilingKafka           = "kafka" // the collector's producer and an embedded broker, no HTTP
)

// Rate units.
const (
	UnitEvents   = "events"
	UnitRequests = "requests"
)

// maxBatch is the collector's default limit on events per request.
const maxBatch = 2000

// Config is what one run does.
type Config struct {
	// Target is the collector's base URL, e.g. http://127.0.0.1:8080. It
	// must be a loopback address: the load generator refuses any other.
	Target string
	// Endpoints is the path of the endpoints.json a running `veil dev`
	// writes; its collector replaces Target, its clickhouse_http fills
	// ClickHouseHTTP unless that was given, and the token of the project
	// file beside it fills Token unless that was given.
	Endpoints string
	// Ceiling, when set, starts that server and drives it instead of
	// Target: CeilingHTTP, CeilingCollector or CeilingKafka. It runs in
	// this process, or, with CeilingOwnProcess (not for CeilingKafka,
	// which the generator calls directly), in a process of its own with
	// its niceness raised by CeilingNice, so that the generator gets the
	// CPU first when it needs it.
	Ceiling           string
	CeilingOwnProcess bool
	CeilingNice       int

	// Batch is the number of events per request: 50 is mixpanel-browser's
	// batch, 1 a single-event request.
	Batch int
	// Rate is the fixed arrival rate in RateUnit per second; 0 sends flat
	// out with Concurrency requests in flight.
	Rate     float64
	RateUnit string
	// Concurrency is the number of requests in flight at most (and the
	// number of connections).
	Concurrency int
	// Duration and Events bound the run; at least one must be set. Events
	// is rounded to whole requests of Batch events, the last one smaller.
	Duration time.Duration
	Events   int64
	// Warmup is excluded from the figures (connections opening, the
	// producer's first metadata requests); its requests still count
	// towards Events and end-to-end.
	Warmup time.Duration
	// Timeout bounds one request.
	Timeout time.Duration

	// ClickHouseHTTP, when set, is ClickHouse's HTTP address: the run
	// watches SELECT count() FROM Table grow and reports end-to-end
	// throughput and the accepted→queryable lag.
	ClickHouseHTTP string
	// ClickHouseUser and ClickHousePassword authenticate the count query
	// (with --endpoints: the analyst's, from the file endpoints.json
	// names). ClickHouse under `veil dev` answers nobody without them.
	ClickHouseUser     string
	ClickHousePassword string
	Table              string
	// WatchInterval is how often the count is sampled.
	WatchInterval time.Duration
	// Drain bounds how long, after the last request, the run waits for the
	// queryable count to catch up with what was accepted.
	Drain time.Duration

	// Token is the project token the events carry. A collector refuses
	// events whose token is not one of its projects'; the ceilings'
	// collectors take this one.
	Token string
	// Seed makes the generated events reproducible.
	Seed uint64
	// Templates is the number of distinct request bodies generated up
	// front (each request still gets fresh $insert_ids).
	Templates int
	// Progress is the interval of the live line on stderr; 0 turns it off.
	Progress time.Duration
	// JSON prints the report as JSON on stdout (the text report then goes
	// to stderr).
	JSON bool
	// CPUProfile, with a Ceiling, writes a CPU profile of the server's
	// process over the measured part of the run: of the server and the
	// load generator together, or, with CeilingOwnProcess, of the server's
	// process alone.
	CPUProfile string
}

// DefaultConfig returns a 10-second flat-out run of 50-event batches.
func DefaultConfig() Config {
	return Config{
		Target:      "http://127.0.0.1:8080",
		Batch:       50,
		RateUnit:    UnitEvents,
		Concurrency: 16,
		CeilingNice: 10,
		Duration:    10 * time.Second,
		Timeout:     30 * time.Second,
		Table:       "veil.events",
		// Fine enough for a lag target of 2 s; a count() on a few million
		// rows takes milliseconds.
		WatchInterval: 100 * time.Millisecond,
		Drain:         60 * time.Second,
		Token:         "loadgen",
		Seed:          1,
		Templates:     64,
		Progress:      time.Second,
	}
}

// Validate reports the first invalid setting, naming its flag.
func (c Config) Validate() error {
	switch {
	case c.Ceiling != "" && c.Ceiling != CeilingHTTP && c.Ceiling != CeilingCollector && c.Ceiling != CeilingCollectorSealed && c.Ceiling != CeilingKafka:
		return errors.New("loadgen.ceiling must be http, collector or kafka")
	case c.Ceiling == CeilingKafka && c.CeilingOwnProcess:
		return errors.New("loadgen.ceiling kafka runs in the load generator's process: it has no HTTP to be driven over")
	case c.CeilingNice < 0 || c.CeilingNice > 19:
		return errors.New("loadgen.ceiling_nice must be between 0 and 19")
	case c.Ceiling == "" && c.Target == "":
		return errors.New("loadgen.target must be set (or loadgen.endpoints, or loadgen.ceiling)")
	case c.Batch < 1 || c.Batch > maxBatch:
		return fmt.Errorf("loadgen.batch must be between 1 and %d", maxBatch)
	case c.Rate < 0:
		return errors.New("loadgen.rate must not be negative")
	case c.RateUnit != UnitEvents && c.RateUnit != UnitRequests:
		return errors.New("loadgen.rate_unit must be events or requests")
	case c.Concurrency < 1:
		return errors.New("loadgen.concurrency must be positive")
	case c.Duration < 0 || c.Events < 0:
		return errors.New("loadgen.duration and loadgen.events must not be negative")
	case c.Duration == 0 && c.Events == 0:
		return errors.New("loadgen.duration or loadgen.events must bound the run")
	case c.Warmup < 0 || (c.Duration > 0 && c.Warmup >= c.Duration):
		return errors.New("loadgen.warmup must be shorter than loadgen.duration")
	case c.Timeout <= 0:
		return errors.New("loadgen.timeout must be positive")
	case c.ClickHouseHTTP != "" && (c.Table == "" || strings.ContainsAny(c.Table, " ;'\"`")):
		return errors.New("loadgen.table must be a plain table name such as veil.events")
	case c.WatchInterval <= 0 || c.Drain < 0:
		return errors.New("loadgen.watch_interval must be positive and loadgen.drain not negative")
	case c.Token == "":
		return errors.New("loadgen.token must be set (or loadgen.endpoints, beside a project.json)")
	case c.Templates < 1:
		return errors.New("loadgen.templates must be positive")
	case c.Progress < 0:
		return errors.New("loadgen.progress must not be negative")
	case c.CPUProfile != "" && c.Ceiling == "":
		return errors.New("loadgen.cpuprofile profiles the server it starts, so it needs loadgen.ceiling")
	}
	if c.Ceiling == "" {
		if err := checkLoopback("loadgen.target", c.Target); err != nil {
			return err
		}
	}
	if c.ClickHouseHTTP != "" {
		if err := checkLoopback("loadgen.clickhouse_http", c.ClickHouseHTTP); err != nil {
			return err
		}
	}
	return nil
}

// requestRate is the fixed rate in requests per second, or 0 for flat out.
func (c Config) requestRate() float64 {
	if c.RateUnit == UnitEvents {
		return c.Rate / float64(c.Batch)
	}
	return c.Rate
}

// checkLoopback accepts an http URL whose host is a loopback address
// literal or "localhost": load is only ever sent to this machine.
func checkLoopback(key, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("%s must be an http:// URL", key)
	}
	if !isLoopbackHost(u.Hostname()) {
		return fmt.Errorf("%s must be a loopback address (127.0.0.0/8, [::1] or localhost): load is only sent to this machine", key)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// endpointsFile is the part of `veil dev`'s endpoints.json the load
// generator reads.
type endpointsFile struct {
	Collector              string `json:"collector"`
	ClickHouseHTTP         string `json:"clickhouse_http"`
	ClickHouseUser         string `json:"clickhouse_user"`
	ClickHousePasswordFile string `json:"clickhouse_password_file"`
}

// resolveEndpoints fills Target, ClickHouseHTTP and Token from c.Endpoints
// and the project file beside it where they were not given.
func (c Config) resolveEndpoints() (Config, error) {
	if c.Endpoints == "" {
		return c, nil
	}
	b, err := os.ReadFile(c.Endpoints)
	if err != nil {
		return c, fmt.Errorf("loadgen.endpoints: %w (is `veil dev` running?)", err)
	}
	var ep endpointsFile
	if err := json.Unmarshal(b, &ep); err != nil {
		return c, fmt.Errorf("loadgen.endpoints: %s is not an endpoints file: %w", c.Endpoints, err)
	}
	if ep.Collector == "" {
		return c, fmt.Errorf("loadgen.endpoints: %s names no collector", c.Endpoints)
	}
	c.Target = ep.Collector
	if c.ClickHouseHTTP == "" && ep.ClickHouseHTTP != "" {
		c.ClickHouseHTTP = ep.ClickHouseHTTP
		c.ClickHouseUser = ep.ClickHouseUser
		if ep.ClickHousePasswordFile != "" {
			b, err := os.ReadFile(ep.ClickHousePasswordFile)
			if err != nil {
				return c, fmt.Errorf("loadgen.endpoints: ClickHouse password: %w", err)
			}
			c.ClickHousePassword = strings.TrimSpace(string(b))
		}
	}
	if c.Token == "" {
		p, err := devstack.ReadProject(filepath.Dir(c.Endpoints))
		if err != nil {
			return c, fmt.Errorf("loadgen.token: not given, and not read beside loadgen.endpoints: %w", err)
		}
		c.Token = p.Token
	}
	return c, nil
}
