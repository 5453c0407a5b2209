package app

import (
	"context"

	"github.com/veilhq/veil/deidentify"
	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/enrich"
	"github.com/veilhq/veil/worker"
)

// Pipeline builds the worker's per-event stages, in the order the data
// flow fixes: policy, enrichment, de-identification.
type Pipeline struct {
	engine   *deidentify.Engine
	enricher *enrich.Enricher
}

// NewPipeline builds the stages from the configuration. registry may be nil
// (no opt-out registry, no deletions).
func NewPipeline(cfg Config, keys *pseudonym.Keyring, registry deidentify.Registry, deps Deps) (*Pipeline, error) {
	log := deps.Logger.Named("worker")
	dd := deidentify.Deps{Logger: log.Named("deidentify"), Metrics: deps.Registry, Keyring: keys, Registry: registry}
	engine, err := deidentify.New(cfg.Deidentify.Policies, dd)
	if err != nil {
		return nil, err
	}
	enr, err := enrich.New(cfg.Enrich, enrich.Deps{Logger: log.Named("enrich"), Metrics: deps.Registry, DropBots: engine.BotsDropped})
	if err != nil {
		return nil, err
	}
	return &Pipeline{engine: engine, enricher: enr}, nil
}

// NewStages returns the stages for one goroutine: a stage may keep memos
// from one event to the next, so every goroutine that runs them has its
// own, sharing the compiled policies, the databases and the caches.
func (p *Pipeline) NewStages() []worker.Stage {
	return []worker.Stage{
		worker.StageFunc(p.engine.PolicyStage),
		worker.StageFunc(p.enricher.Stage),
		p.engine.NewStage(),
	}
}

// Run keeps the stages' resources fresh (geo database reloads) until ctx
// ends.
func (p *Pipeline) Run(ctx context.Context) error { return p.enricher.Run(ctx) }

// Close releases the stages' resources.
func (p *Pipeline) Close() { p.enricher.Close() }
