//go:build race

package pseudonym

// The race detector makes sync.Pool drop pooled items at random, so the
// allocation counts are only checked without it.
func init() { raceEnabled = true }
