// Package enrich is the worker's enrichment stage: it moves what the SDK
// said about the client into typed columns and fills in, from the request's
// IP and user agent, what the SDK did not say.
package enrich

import (
	"net/netip"

	"github.com/veilhq/veil/event"
)

// The client's address as the SDK gives it, in the order they apply: the
// later one wins where they disagree.
var (
	propIP       = event.LookupKnown("ip")
	propDollarIP = event.LookupKnown("$ip")
)

// promote moves SDK-provided device, library and geo properties (the
// known properties with a column, event.RolePromoted) into ev's typed
// fields and out of its properties: the column is their one home. Values
// the SDK set explicitly win over anything derived later, as in Mixpanel.
func promote(ev *event.Event) {
	props := &ev.Properties
	for i, pr := range props.All() {
		if pr.Known() == 0 {
			continue
		}
		kp := pr.Known().Prop()
		if kp.Role != event.RolePromoted {
			continue
		}
		switch pr.Kind() {
		case event.PropString, event.PropNumber, event.PropBool:
			*ev.Column(kp.Column) = pr.Text() // the decoder gave it a copy of its own
		}
		props.Drop(i)
	}
}

// ipProperty applies an `ip` or `$ip` property: the string "0", the
// number 0 or false turn the lookup off; an address is used (and turns it
// back on).
func ipProperty(pr *event.Prop, ip netip.Addr, noGeo bool) (netip.Addr, bool) {
	switch pr.Kind() {
	case event.PropString:
		if pr.Text() == "0" {
			return ip, true
		}
		if a, err := netip.ParseAddr(pr.Text()); err == nil {
			return a.Unmap(), false
		}
	case event.PropNumber:
		return ip, noGeo || pr.Text() == "0"
	case event.PropBool:
		return ip, noGeo || pr.Text() == "false"
	}
	return ip, noGeo
}
