package app

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/veilhq/veil/worker"
)

// DeadLetters writes to out what the dead-letter topic holds: records and
// events by reason, with the oldest and newest record's time. It reads the
// records' headers only; nothing of their contents is shown.
func DeadLetters(ctx context.Context, cfg Config, out io.Writer) error {
	type row struct {
		records, events int
		oldest, newest  time.Time
	}
	rows := map[string]*row{}
	total := row{}
	err := worker.ScanDeadLetters(ctx, cfg.Kafka, func(d worker.DeadLetter) error {
		r := rows[d.Class]
		if r == nil {
			r = &row{oldest: d.Time, newest: d.Time}
			rows[d.Class] = r
		}
		for _, r := range []*row{r, &total} {
			r.records++
			r.events += d.Events
			if r.oldest.IsZero() || d.Time.Before(r.oldest) {
				r.oldest = d.Time
			}
			if d.Time.After(r.newest) {
				r.newest = d.Time
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "dead-letter topic %s: %d records, %d events\n", cfg.Kafka.DLQTopic, total.records, total.events)
	if total.records == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "reason\trecords\tevents\toldest\tnewest")
	reasons := make([]string, 0, len(rows))
	for k := range rows {
		reasons = append(reasons, k)
	}
	slices.Sort(reasons)
	for _, k := range reasons {
		r := rows[k]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", k, r.records, r.events, r.oldest.UTC().Format(time.RFC3339), r.newest.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// ReplayDeadLetters writes the dead-lettered records of reasons back to
// the raw topic (worker.ReplayDeadLetters) and says what it did on out.
func ReplayDeadLetters(ctx context.Context, cfg Config, reasons []string, dryRun bool, out io.Writer) error {
	res, err := worker.ReplayDeadLetters(ctx, cfg.Kafka, reasons, dryRun)
	verb := "replayed"
	if dryRun {
		verb = "would replay"
	}
	var by []string
	for _, r := range reasons {
		by = append(by, fmt.Sprintf("%s %d", r, res.EventsByReason[r]))
	}
	fmt.Fprintf(out, "%s %d records (%d events: %s) of the %d in %s to %s\n", verb, res.Records, res.Events, strings.Join(by, ", "), res.Scanned, cfg.Kafka.DLQTopic, cfg.Kafka.RawTopic)
	return err
}
