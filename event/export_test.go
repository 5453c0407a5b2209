package event

// CollectorLayout reports whether the envelope value takes decodeTrack's
// fast path for the layout the collector writes.
func CollectorLayout(value []byte) bool {
	p := scanner{b: value, view: true}
	if !p.lit('{') {
		return false
	}
	_, ok := p.collectorHead()
	return ok && p.i < len(value) && value[p.i] == '{'
}
