package ingest

import (
	"github.com/veilhq/veil/event"
)

// envelopeWriter is event.EnvelopeWriter, the envelope format's writer,
// over the collector's normalised records.
type envelopeWriter struct{ event.EnvelopeWriter }

// newEnvelopeWriter prepares the envelopes of a request from env, whose
// Project and Event are ignored.
func newEnvelopeWriter(env *event.Envelope) *envelopeWriter {
	w := &envelopeWriter{}
	w.reset(env)
	return w
}

// reset prepares w for the envelopes of a request from env.
func (w *envelopeWriter) reset(env *event.Envelope) { w.Reset(env) }

// record is what n adds to the request's envelope.
func (n *normalized) record() event.Record {
	return event.Record{Project: n.project, IP: n.ip, NoGeo: n.noGeo, Event: n.object}
}

// write returns the envelope of one normalised record.
func (w *envelopeWriter) write(n *normalized) []byte {
	r := n.record()
	return w.Append(make([]byte, 0, w.Size(&r)), &r)
}

// sizeAll is about what the envelopes of a request's records take.
func (w *envelopeWriter) sizeAll(norm []normalized) int {
	total := 0
	for i := range norm {
		r := norm[i].record()
		total += w.Size(&r)
	}
	return total
}

// append appends the envelope of one normalised record to b.
func (w *envelopeWriter) append(b []byte, n *normalized) []byte {
	r := n.record()
	return w.Append(b, &r)
}
