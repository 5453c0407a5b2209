package kafkax

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/segmentio/kafka-go"
)

// Why a write to Kafka failed: the fixed label values of the collector's
// veil_collector_produce_errors_total{reason}. An operator reads from them
// whether the cluster lost its in-sync quorum, moved a leader, replicated
// too slowly, could not be reached, or was simply not done in time.
const (
	// ReasonNotEnoughReplicas: fewer in-sync replicas than the topic's
	// min.insync.replicas (two brokers of three down).
	ReasonNotEnoughReplicas = "not_enough_replicas"
	// ReasonNotLeader: the partition had no leader, or the broker asked
	// no longer led it (a leader election under way).
	ReasonNotLeader = "not_leader"
	// ReasonReplicationTimeout: the leader took the write but its
	// in-sync followers did not confirm it within the request's timeout
	// (a follower that died or hangs, until the cluster drops it from the
	// in-sync replicas).
	ReasonReplicationTimeout = "replication_timeout"
	// ReasonUnreachable: no connection to the broker, or it was lost.
	ReasonUnreachable = "unreachable"
	// ReasonTooLarge: a single event larger than the topic allows.
	ReasonTooLarge = "too_large"
	// ReasonTimeout: collector.produce_timeout passed with no failure
	// from Kafka to name (a broker that accepted the connection and
	// answered nothing).
	ReasonTimeout = "timeout"
	// ReasonOther: anything else.
	ReasonOther = "other"
)

// Reasons are every value ErrorReason returns, for a metric's fixed label
// set.
var Reasons = []string{ReasonNotEnoughReplicas, ReasonNotLeader, ReasonReplicationTimeout, ReasonUnreachable,
	ReasonTooLarge, ReasonTimeout, ReasonOther}

// ErrorReason classifies a failed write by the first cause it names, the
// broker's own error before a deadline that passed while retrying it.
func ErrorReason(err error) string {
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafka.NotEnoughReplicas, kafka.NotEnoughReplicasAfterAppend:
			return ReasonNotEnoughReplicas
		case kafka.NotLeaderForPartition, kafka.LeaderNotAvailable, kafka.FencedLeaderEpoch, kafka.UnknownLeaderEpoch,
			kafka.UnknownTopicOrPartition, kafka.BrokerNotAvailable, kafka.ReplicaNotAvailable:
			return ReasonNotLeader
		case kafka.RequestTimedOut:
			return ReasonReplicationTimeout
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge:
			return ReasonTooLarge
		}
		return ReasonOther
	}
	var nerr net.Error
	switch {
	case errors.As(err, &nerr) && !nerr.Timeout(), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return ReasonUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return ReasonTimeout
	}
	return ReasonOther
}
