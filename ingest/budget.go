package ingest

import "sync/atomic"

// bodyBudget is the memory the bodies of all requests in flight may hold
// together (collector.limits.max_inflight_bytes). A request takes from it
// before its body's buffer grows and gives back what it took when it is
// answered.
type bodyBudget struct {
	max  int64
	held atomic.Int64
}

// take reserves n bytes, or reports that they do not fit. Requests
// racing for the last bytes may both be refused: a refusal is a 503 the
// SDKs retry, never more memory than the budget.
func (b *bodyBudget) take(n int64) bool {
	if b.held.Add(n) > b.max {
		b.held.Add(-n)
		return false
	}
	return true
}

func (b *bodyBudget) give(n int64) { b.held.Add(-n) }
