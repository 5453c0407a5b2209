// Package enrich is the worker's enrichment stage: it moves what the SDK
// said about the client into typed columns and fills in, from the request's
// IP and user agent, what the SDK did not say.
package enrich

import (
	"encoding/json"
	"strconv"

	"github.com/veilhq/veil/event"
)

// promoted maps SDK properties to the typed columns they fill. The property
// is removed once promoted: the column is its one home.
var promoted = []struct {
	prop string
	dst  func(ev *event.Event) *string
}{
	{"$browser", func(ev *event.Event) *string { return &ev.Device.Browser }},
	{"$browser_version", func(ev *event.Event) *string { return &ev.Device.BrowserVersion }},
	{"$os", func(ev *event.Event) *string { return &ev.Device.OS }},
	{"$device", func(ev *event.Event) *string { return &ev.Device.Device }},
	{"mp_lib", func(ev *event.Event) *string { return &ev.Device.Lib }},
	{"$lib_version", func(ev *event.Event) *string { return &ev.Device.LibVersion }},
	{"$city", func(ev *event.Event) *string { return &ev.Geo.City }},
	{"$region", func(ev *event.Event) *string { return &ev.Geo.Region }},
	{"mp_country_code", func(ev *event.Event) *string { return &ev.Geo.CountryCode }},
}

// Promote moves SDK-provided device, library and geo properties into ev's
// typed fields. Values the SDK set explicitly win over anything derived
// later, as in Mixpanel.
func Promote(ev *event.Event) {
	promote(ev)
}

// promote is Promote; for an event whose properties are JSON text it also
// returns where its `ip` and `$ip` props are, found in the same pass, as
// locate takes them.
func promote(ev *event.Event) (ipAt [2]int) {
	if ev.Props != nil {
		return promoteRaw(ev)
	}
	for _, p := range promoted {
		v, ok := ev.Properties[p.prop]
		if !ok {
			continue
		}
		switch x := v.(type) {
		case string:
			*p.dst(ev) = x
		case json.Number:
			*p.dst(ev) = x.String()
		case bool:
			*p.dst(ev) = strconv.FormatBool(x)
		}
		delete(ev.Properties, p.prop)
	}
	return [2]int{-1, -1}
}

// promotedByKnown maps a known property id (event.KnownProp) to its
// index in promoted plus one: every promoted name is a known one, and the
// raw path finds them without comparing names.
var promotedByKnown = func() (t [event.NumKnownProps]uint8) {
	if len(promoted) >= event.InternFields {
		panic("enrich: more promoted properties than Event.InternField has fields")
	}
	for i, p := range promoted {
		id := event.KnownProp(p.prop)
		if id == 0 {
			panic("enrich: promoted property " + p.prop + " is not a known property name")
		}
		t[id] = uint8(i + 1)
	}
	return t
}()

// promoteRaw is Promote for an event whose properties are JSON text. The
// values become columns of the batch, so they are interned rather than
// left pointing into the message.
func promoteRaw(ev *event.Event) (ipAt [2]int) {
	ipAt = [2]int{-1, -1}
	for i := range ev.Props {
		pr := &ev.Props[i]
		pi := promotedByKnown[pr.Known]
		if pi == 0 || pr.Drop {
			if n := ipPropByKnown[pr.Known]; n != 0 && !pr.Drop && ipAt[n-1] < 0 {
				ipAt[n-1] = i
			}
			continue
		}
		p := &promoted[pi-1]
		switch pr.Kind {
		case event.PropString, event.PropNumber:
			*p.dst(ev) = ev.InternField(int(pi), pr.Str) // field 0 is the name
		case event.PropBool:
			*p.dst(ev) = strconv.FormatBool(pr.Raw[0] == 't')
		}
		pr.Drop = true
	}
	return ipAt
}
