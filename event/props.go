package event

import (
	"encoding/json"
	"iter"
	"slices"
)

// PropKind is the JSON type of a property's value.
type PropKind uint8

// The kinds of JSON value a property holds.
const (
	PropString PropKind = iota + 1
	PropNumber
	PropBool
	PropNull
	PropObject
	PropArray
)

// Prop is one top-level property of an event. Stages read it through its
// methods and change it only through Properties (SetString, SetValue,
// Drop, Replace), so that what no stage changed is written as it came.
type Prop struct {
	name string
	// raw is the value's JSON text as the message holds it; nil when the
	// value was set, or read by the reference reader.
	raw []byte
	// str is a string's unescaped text, a number's text, or "true" or
	// "false".
	str string
	// val is an object or array as DecodeJSONValue returns it, when it
	// is not written from raw.
	val   any
	kind  PropKind
	known Known
	flags propFlags
	// start and end are where the member `"name":value` is in the
	// message, when it holds it in one piece (flagWhole).
	start, end int32
}

type propFlags uint8

const (
	// flagDropped: the property is not written.
	flagDropped propFlags = 1 << iota
	// flagText: the value is written from str or val, not raw (a stage
	// set it, it had escapes to normalise, or the reference reader read
	// it).
	flagText
	// flagPlainName: the name is written as it is between quotes.
	flagPlainName
	// flagWhole: the message holds `"name":raw` in one piece at start.
	flagWhole
	// flagNext: the member starts one byte, a comma, after the previous
	// property's value ends.
	flagNext
)

// Name is the property's name.
func (pr *Prop) Name() string { return pr.name }

// Known is the id of the name among the known properties, 0 for any
// other name.
func (pr *Prop) Known() Known { return pr.known }

// Kind is the value's JSON type.
func (pr *Prop) Kind() PropKind { return pr.kind }

// Text is a string's text, a number's text, or "true" or "false"; "" for
// null, objects and arrays.
func (pr *Prop) Text() string { return pr.str }

// JSON returns the value's JSON text as the message holds it, and false
// when it was set or read otherwise.
func (pr *Prop) JSON() ([]byte, bool) {
	return pr.raw, pr.raw != nil && pr.flags&flagText == 0
}

// Value returns the value as encoding/json decodes it into an any with
// UseNumber.
func (pr *Prop) Value() (any, bool) {
	switch pr.kind {
	case PropString:
		return pr.str, true
	case PropNumber:
		return json.Number(pr.str), true
	case PropBool:
		return pr.str == "true", true
	case PropNull:
		return nil, true
	}
	if pr.val != nil || pr.raw == nil {
		return pr.val, true
	}
	return DecodeJSONValue(pr.raw)
}

// asCame reports whether pr is written as its member came in the
// message, which holds it in one piece.
func (pr *Prop) asCame() bool {
	return pr.flags&(flagWhole|flagDropped|flagText) == flagWhole
}

// Properties are an event's top-level properties, in the order the SDK
// sent them (the reference reader's in the order of their names). The
// decoder's are views into the message it read and into its own memory:
// they are valid until the Decoder reads the next message, and the sink
// copies what it keeps.
type Properties struct {
	list []Prop
	// msg is the message the props' text points into.
	msg []byte
}

// Len is the number of properties kept.
func (p *Properties) Len() int {
	n := 0
	for i := range p.list {
		if p.list[i].flags&flagDropped == 0 {
			n++
		}
	}
	return n
}

// All yields the index and the property of each property kept.
func (p *Properties) All() iter.Seq2[int, *Prop] {
	return func(yield func(int, *Prop) bool) {
		for i := range p.list {
			if pr := &p.list[i]; pr.flags&flagDropped == 0 {
				if !yield(i, pr) {
					return
				}
			}
		}
	}
}

// At returns the property i, as All numbers them.
func (p *Properties) At(i int) *Prop { return &p.list[i] }

// Find returns the index of the kept property of the known id k, or -1.
func (p *Properties) Find(k Known) int {
	for i := range p.list {
		if pr := &p.list[i]; pr.known == k && pr.flags&flagDropped == 0 {
			return i
		}
	}
	return -1
}

// Index returns the index of the kept property named name, or -1.
func (p *Properties) Index(name string) int {
	for i := range p.list {
		if pr := &p.list[i]; pr.name == name && pr.flags&flagDropped == 0 {
			return i
		}
	}
	return -1
}

// Get returns the value of the kept property named name.
func (p *Properties) Get(name string) (any, bool) {
	i := p.Index(name)
	if i < 0 {
		return nil, false
	}
	return p.list[i].Value()
}

// Drop removes property i.
func (p *Properties) Drop(i int) { p.list[i].flags |= flagDropped }

// SetString makes s the string value of property i.
func (p *Properties) SetString(i int, s string) {
	pr := &p.list[i]
	pr.str, pr.kind, pr.val = s, PropString, nil
	pr.flags |= flagText
}

// SetValue makes v, a value as DecodeJSONValue returns them, the value of
// property i.
func (p *Properties) SetValue(i int, v any) {
	pr := &p.list[i]
	pr.flags |= flagText
	setValue(pr, v)
}

func setValue(pr *Prop, v any) {
	pr.val = nil
	switch x := v.(type) {
	case string:
		pr.kind, pr.str = PropString, x
	case json.Number:
		pr.kind, pr.str = PropNumber, string(x)
	case bool:
		pr.kind, pr.str = PropBool, "false"
		if x {
			pr.str = "true"
		}
	case nil:
		pr.kind, pr.str = PropNull, ""
	case []any:
		pr.kind, pr.str, pr.val = PropArray, "", x
	default:
		pr.kind, pr.str, pr.val = PropObject, "", x
	}
}

// Map returns the kept properties as a map, as encoding/json decodes the
// object into an any with UseNumber, for a stage that works on names as a
// whole (renaming them). It reports false when a value does not decode.
func (p *Properties) Map() (map[string]any, bool) {
	m := make(map[string]any, len(p.list))
	for _, pr := range p.All() {
		v, ok := pr.Value()
		if !ok {
			return nil, false
		}
		m[pr.name] = v
	}
	return m, true
}

// Replace makes m the properties, in the order of their names.
func (p *Properties) Replace(m map[string]any) {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	list := p.list[:0]
	for _, k := range names {
		list = append(list, Prop{name: k, known: knownID(k), flags: flagText})
		setValue(&list[len(list)-1], m[k])
	}
	p.list, p.msg = list, nil
}

// SizeHint is about how many bytes AppendJSON writes: the message holds
// every kept property as it came, and what stages set is mostly as long.
// It is not a bound.
func (p *Properties) SizeHint() int { return len(p.msg) + 256 }

// AppendJSON appends the kept properties as a JSON object, in their
// order. A run of properties that came as they are, one after the other
// in the message, is written in one copy of the message's text; a value
// set or read otherwise is written as AppendJSON writes it, with keys as
// scratch space. It reports false when a value is not JSON-encodable.
func (p *Properties) AppendJSON(dst []byte, keys *[]string) ([]byte, bool) {
	dst = append(dst, '{')
	n := 0
	for i := 0; i < len(p.list); i++ {
		pr := &p.list[i]
		if pr.flags&flagDropped != 0 {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		if pr.asCame() {
			end := pr.end
			for i+1 < len(p.list) && p.list[i+1].asCame() && p.list[i+1].flags&flagNext != 0 {
				i++
				n++
				end = p.list[i].end
			}
			dst = append(dst, p.msg[pr.start:end]...)
			continue
		}
		var ok bool
		if dst, ok = appendMember(dst, pr, keys); !ok {
			return dst, false
		}
	}
	return append(dst, '}'), true
}

// appendMember appends pr's member, `"name":value`.
func appendMember(dst []byte, pr *Prop, keys *[]string) ([]byte, bool) {
	if pr.flags&flagPlainName != 0 {
		dst = append(dst, '"')
		dst = append(dst, pr.name...)
		dst = append(dst, '"')
	} else {
		dst = AppendJSONString(dst, pr.name)
	}
	dst = append(dst, ':')
	if pr.flags&flagText == 0 {
		return append(dst, pr.raw...), true
	}
	switch pr.kind {
	case PropString:
		return AppendJSONString(dst, pr.str), true
	case PropNumber, PropBool:
		return append(dst, pr.str...), true
	case PropNull:
		return append(dst, "null"...), true
	}
	if pr.val == nil && pr.raw != nil {
		return append(dst, pr.raw...), true
	}
	return AppendJSON(dst, pr.val, keys)
}

// PropertiesOf returns m as Properties, in the order of their names: for
// events built in code rather than read from a message.
func PropertiesOf(m map[string]any) Properties {
	var p Properties
	p.Replace(m)
	return p
}
