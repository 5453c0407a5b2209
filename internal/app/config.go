// Package app assembles Veil's roles (collector, worker, migrate) from one
// configuration file. cmd/veil parses flags and calls in here; the stages
// themselves live in their own packages.
package app

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	yaml "go.yaml.in/yaml/v3"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/enrich"
	"github.com/veilhq/veil/ingest"
	"github.com/veilhq/veil/internal/httpserve"
	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/policy"
	"github.com/veilhq/veil/privacy"
	"github.com/veilhq/veil/sink"
	"github.com/veilhq/veil/worker"
)

// LogConfig chooses the log level and format.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json (production) or console
}

// Config is the whole of Veil's configuration file.
type Config struct {
	Log        LogConfig        `yaml:"log"`
	Kafka      kafkax.Config    `yaml:"kafka"`
	Collector  ingest.Config    `yaml:"collector"`
	Worker     worker.Config    `yaml:"worker"`
	Enrich     enrich.Config    `yaml:"enrich"`
	Deidentify DeidentifyConfig `yaml:"deidentify"`
	Privacy    privacy.Config   `yaml:"privacy"`
	Sink       sink.Config      `yaml:"sink"`
	Seal       seal.Config      `yaml:"seal"`
	Admin      AdminConfig      `yaml:"admin"`
}

// DeidentifyConfig is where the pseudonymisation keys come from and each
// project's privacy policy.
type DeidentifyConfig struct {
	// The keys come from a file or an environment variable, never from this
	// file: see deidentify/pseudonym for the format.
	PseudonymKeyFile string     `yaml:"pseudonym_key_file"`
	PseudonymKeyEnv  string     `yaml:"pseudonym_key_env"`
	Policies         policy.Set `yaml:"policies"`
}

// KeySource names where the keys are.
func (d DeidentifyConfig) KeySource() pseudonym.Source {
	return pseudonym.Source{File: d.PseudonymKeyFile, Env: d.PseudonymKeyEnv}
}

// AdminConfig is the operations listeners: /metrics, /healthz and /readyz
// with the reason when not ready; the worker's also serves the privacy API.
type AdminConfig struct {
	// Listen is `veil worker`'s admin listener.
	Listen string `yaml:"listen"`
	// CollectorListen is `veil collector`'s; empty serves none. The
	// collector's own listener serves /metrics, /healthz and a /readyz
	// that says only whether it is ready: why not is for operators.
	CollectorListen string `yaml:"collector_listen"`
	// Server holds the admin listeners' timeouts, header limit and
	// connection cap, the same settings as collector.server.
	Server httpserve.Config `yaml:"server"`
}

// DefaultConfig returns every section's defaults.
func DefaultConfig() Config {
	return Config{
		Log:       LogConfig{Level: "info", Format: "json"},
		Kafka:     kafkax.DefaultConfig(),
		Collector: ingest.DefaultConfig(),
		Worker:    worker.DefaultConfig(),
		Enrich:    enrich.DefaultConfig(),
		Deidentify: DeidentifyConfig{
			PseudonymKeyEnv: "VEIL_PSEUDONYM_KEYS",
			Policies:        policy.DefaultSet(),
		},
		Privacy: privacy.DefaultConfig(),
		Sink:    sink.DefaultConfig(),
		Seal:    seal.DefaultConfig(),
		Admin: AdminConfig{
			Listen:          "127.0.0.1:9464",
			CollectorListen: "127.0.0.1:9465",
			Server:          httpserve.DefaultConfig(),
		},
	}
}

// Validate checks every section.
func (c Config) Validate() error {
	switch c.Log.Format {
	case "json", "console":
	default:
		return errors.New("log.format must be json or console")
	}
	if _, err := zapcore.ParseLevel(c.Log.Level); err != nil {
		return errors.New("log.level must be debug, info, warn or error")
	}
	for _, err := range []error{c.Kafka.Validate(), c.Collector.Validate(), c.Worker.Validate(), c.Enrich.Validate(),
		c.Deidentify.KeySource().Validate(), c.Deidentify.Policies.Validate(), c.Privacy.Validate(), c.Sink.Validate(),
		c.Seal.Validate(), c.Admin.Server.Validate("admin.server")} {
		if err != nil {
			return err
		}
	}
	return nil
}

// Load reads a YAML configuration file over the defaults. Unknown keys are
// errors, so a typo cannot silently fall back to a default. Secrets may be
// given as ${file:PATH} or ${env:NAME} in any value (secretref.go).
func Load(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	// Both key sources may not be set; a file in the configuration
	// replaces the default environment variable.
	if cfg.Deidentify.PseudonymKeyFile != "" && cfg.Deidentify.PseudonymKeyEnv == DefaultConfig().Deidentify.PseudonymKeyEnv {
		cfg.Deidentify.PseudonymKeyEnv = ""
	}
	if err := resolveSecretRefs(&cfg, osSecrets()); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.Deidentify.Policies.Inherit()
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// logSampling is how every Veil process samples its log, console or JSON:
// of the entries with the same level and message within a second, the
// first logSampleInitial are written and then one in logSampleThereafter.
// A flood of bad requests then writes a few hundred lines a second, not
// one per request; the rejected requests are counted in the metrics.
const (
	logSampleInitial    = 100
	logSampleThereafter = 1000
)

// NewLogger builds the process logger.
func NewLogger(c LogConfig) (*zap.Logger, error) {
	zc, err := loggerConfig(c)
	if err != nil {
		return nil, err
	}
	return zc.Build()
}

// loggerConfig is the zap configuration NewLogger builds from.
func loggerConfig(c LogConfig) (zap.Config, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return zap.Config{}, errors.New("log.level must be debug, info, warn or error")
	}
	var zc zap.Config
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		zc.DisableStacktrace = true
	} else {
		zc = zap.NewProductionConfig()
	}
	// zap's development configuration does not sample at all.
	zc.Sampling = &zap.SamplingConfig{Initial: logSampleInitial, Thereafter: logSampleThereafter}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	return zc, nil
}
