package privacy

import "time"

// SetRetentionClock lets tests fix the time retention is measured from.
func SetRetentionClock(r *Retention, now func() time.Time) { r.now = now }
