package kafkax

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// Election chooses one process among many to do what must be done by one
// at a time (Veil's privacy task runner): the member of Group that Kafka
// assigns partition 0 of Topic, a topic of one partition. Kafka's group
// protocol gives each partition to exactly one member of a generation, and
// a member that dies or hangs loses it after its session timeout, when the
// others rejoin and one of them is given it. Nothing is read from the
// topic and nothing committed: only the assignment counts.
type Election struct {
	Brokers []string
	Topic   string
	Group   string
	// SessionTimeout, RebalanceTimeout and Heartbeat as the worker's:
	// how soon a dead leader is replaced.
	SessionTimeout, RebalanceTimeout, Heartbeat time.Duration
	// OnChange, when set, is told whenever this process is elected
	// (true) or is no longer (false), e.g. for a gauge.
	OnChange func(elected bool)
	Logger   *zap.Logger
}

// Run takes part in the election until ctx ends, calling lead with a
// context that ends when this process is no longer elected (a rebalance,
// a lost session) or ctx ends. Kafka's next generation begins only when
// lead has returned, so two processes never run it at once within the
// group's knowledge.
func (e Election) Run(ctx context.Context, lead func(ctx context.Context)) error {
	log := e.Logger
	if log == nil {
		log = zap.NewNop()
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                e.Group,
		Brokers:           e.Brokers,
		Topics:            []string{e.Topic},
		SessionTimeout:    e.SessionTimeout,
		RebalanceTimeout:  e.RebalanceTimeout,
		HeartbeatInterval: e.Heartbeat,
		JoinGroupBackoff:  time.Second,
		ErrorLogger:       ErrorLogger(log),
	})
	if err != nil {
		return err
	}
	defer cg.Close()
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return nil
			}
			log.Warn("joining the election failed; retrying", zap.String("group", e.Group), zap.Error(err))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		elected := false
		for _, a := range gen.Assignments[e.Topic] {
			elected = elected || a.ID == 0
		}
		if !elected {
			continue
		}
		gen.Start(func(gctx context.Context) {
			log.Info("elected", zap.String("group", e.Group), zap.Int32("generation", gen.ID))
			if e.OnChange != nil {
				e.OnChange(true)
			}
			defer func() {
				if e.OnChange != nil {
					e.OnChange(false)
				}
				log.Info("no longer elected", zap.String("group", e.Group), zap.Int32("generation", gen.ID))
			}()
			lead(gctx)
		})
	}
}
