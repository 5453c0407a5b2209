package enrich

import "github.com/veilhq/veil/event"

// propOf returns the value of the property named name, nil when there is
// none.
func propOf(p *event.Properties, name string) any {
	v, _ := p.Get(name)
	return v
}
