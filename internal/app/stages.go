package app

import (
	"context"

	"github.com/veilhq/veil/deidentify"
	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/enrich"
	"github.com/veilhq/veil/policy"
	"github.com/veilhq/veil/worker"
)

// Pipeline builds the worker's per-event stages, in the order the data
// flow fixes: policy, enrichment, de-identification.
type Pipeline struct {
	policy   *policy.Stage
	enricher *enrich.Enricher
	engine   *deidentify.Engine
}

// NewPipeline builds the stages from the configuration. registry may be nil
// (no opt-out registry, no deletions).
func NewPipeline(cfg Config, keys *pseudonym.Keyring, registry policy.Registry, deps Deps) (*Pipeline, error) {
	log := deps.Logger.Named("worker")
	pol, err := policy.NewStage(cfg.Deidentify.Policies, policy.Deps{Keyring: keys, Registry: registry})
	if err != nil {
		return nil, err
	}
	dd := deidentify.Deps{Logger: log.Named("deidentify"), Metrics: deps.Registry, Keyring: keys}
	engine, err := deidentify.New(cfg.Deidentify.Policies, dd)
	if err != nil {
		return nil, err
	}
	enr, err := enrich.New(cfg.Enrich, enrich.Deps{Logger: log.Named("enrich"), Metrics: deps.Registry, DropBots: pol.BotsDropped})
	if err != nil {
		return nil, err
	}
	return &Pipeline{policy: pol, enricher: enr, engine: engine}, nil
}

// NewStages returns the stages for one goroutine: a stage may keep memos
// from one event to the next, so every goroutine that runs them has its
// own, sharing the compiled policies, the databases and the caches.
func (p *Pipeline) NewStages() []worker.Stage {
	return []worker.Stage{
		p.policy,
		p.enricher,
		p.engine.NewStage(),
	}
}

// Run keeps the stages' resources fresh (geo database reloads) until ctx
// ends.
func (p *Pipeline) Run(ctx context.Context) error { return p.enricher.Run(ctx) }

// Close releases the stages' resources.
func (p *Pipeline) Close() { p.enricher.Close() }
