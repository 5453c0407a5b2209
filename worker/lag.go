package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// probeLag sets veil_worker_consumer_lag_messages{partition} every
// LagInterval until ctx ends: the partition's high-water mark minus the
// group's committed offset, as the broker reports them. It is measured
// from outside the processing path on purpose: when ClickHouse refuses
// writes the processor is blocked and fetching has paused, and that is
// exactly when the lag must keep growing on the dashboards. Every member
// reports the whole group's lag, so dashboards take max by partition.
func (w *Worker) probeLag(ctx context.Context) {
	// A transport of its own, closed on return: the default one would keep
	// connections (and their goroutines) open after the worker stops.
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(w.kcfg.Brokers...), Timeout: 5 * time.Second, Transport: transport}
	t := time.NewTicker(w.cfg.LagInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lag, err := groupLag(ctx, client, w.cfg.GroupID, w.kcfg.RawTopic)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Debug("measuring consumer lag failed", zap.Error(err))
			}
			continue
		}
		for p, n := range lag {
			w.m.lag.WithLabelValues(strconv.Itoa(p)).Set(float64(n))
		}
	}
}

// groupLag returns, per partition of topic, the high-water mark minus the
// group's committed offset (minus the log start when nothing is committed).
func groupLag(ctx context.Context, c *kafka.Client, group, topic string) (map[int]int64, error) {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, errors.New("no metadata for the raw topic")
	}
	var reqs []kafka.OffsetRequest
	var parts []int
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
		parts = append(parts, p.ID)
	}
	lo, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	of, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, err
	}
	if of.Error != nil {
		return nil, of.Error
	}
	committed := map[int]int64{}
	for _, p := range of.Topics[topic] {
		committed[p.Partition] = p.CommittedOffset
	}
	out := map[int]int64{}
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("partition %d: %w", p.Partition, p.Error)
		}
		c, ok := committed[p.Partition]
		if !ok || c < 0 {
			c = p.FirstOffset
		}
		out[p.Partition] = max(0, p.LastOffset-c)
	}
	return out, nil
}
