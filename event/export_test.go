package event

// CollectorLayout reports whether the envelope value takes the Decoder's
// fast path for the layout the collector writes.
func CollectorLayout(value []byte) bool {
	p := scanner{b: value, view: true}
	if !p.lit('{') {
		return false
	}
	_, ok := p.collectorHead()
	return ok && p.i < len(value) && value[p.i] == '{'
}

// appendEach is Properties.AppendJSON one property at a time, without
// runs.
func appendEach(p *Properties) []byte {
	dst := []byte{'{'}
	n := 0
	for _, pr := range p.All() {
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst, _ = appendMember(dst, pr, new([]string))
	}
	return append(dst, '}')
}
