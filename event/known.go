package event

// The known properties: the names Mixpanel's SDKs and Veil's own stages
// use, declared once, with what Veil does with each. The decoder
// recognises them as it reads a key and records the id (Prop.Known), so
// that a stage decides what to do with such a property from a table built
// once per policy instead of comparing names; enrichment moves the
// promoted ones into their columns (Role, Column), and the decoder gives
// those values a copy of their own, as they outlive the message.
//
// To promote a property to a column: give its row Role RolePromoted and
// the Column it fills (a new column needs a Column constant, its field in
// Event.Column and the sink's column). To make a property an identifier
// to pseudonymise: RoleIdentifier. The list is fixed in code: names seen
// in traffic never join it, so no user-chosen text (a key may carry
// personal data) outlives its event. At most 255 rows; the order is free
// but for the first three.
var knownProps = [...]KnownProp{
	// Taken out of the properties into Event fields by the decoders.
	{Name: PropDistinctID, Role: RoleEnvelope},
	{Name: PropTime, Role: RoleEnvelope},
	{Name: PropInsertID, Role: RoleEnvelope},

	{Name: "$browser", Role: RolePromoted, Column: ColumnBrowser},
	{Name: "$browser_version", Role: RolePromoted, Column: ColumnBrowserVersion},
	{Name: "$os", Role: RolePromoted, Column: ColumnOS},
	{Name: "$device", Role: RolePromoted, Column: ColumnDevice},
	{Name: "mp_lib", Role: RolePromoted, Column: ColumnLib},
	{Name: "$lib_version", Role: RolePromoted, Column: ColumnLibVersion},
	{Name: "$city", Role: RolePromoted, Column: ColumnCity},
	{Name: "$region", Role: RolePromoted, Column: ColumnRegion},
	{Name: "mp_country_code", Role: RolePromoted, Column: ColumnCountryCode},

	{Name: "$device_id", Role: RoleIdentifier},
	{Name: "$user_id", Role: RoleIdentifier},
	{Name: "$anon_distinct_id", Role: RoleIdentifier},
	{Name: "$distinct_id_before_identity", Role: RoleIdentifier},
	{Name: "$identified_id", Role: RoleIdentifier},
	{Name: "$anon_id", Role: RoleIdentifier},

	// The client's address as the SDK gives it: ip, then $ip, win over
	// the request's for geolocation.
	{Name: "ip", Role: RoleAddress},
	{Name: "$ip", Role: RoleAddress},

	{Name: PropToken}, {Name: PropGroupKey}, {Name: PropGroupID},
	{Name: "$current_url"}, {Name: "$screen_height"}, {Name: "$screen_width"},
	{Name: "$initial_referrer"}, {Name: "$initial_referring_domain"}, {Name: "$referrer"},
	{Name: "$referring_domain"}, {Name: "mp_sent_by_lib_version"}, {Name: "current_page_title"},
	{Name: "current_domain"}, {Name: "current_url_path"}, {Name: "current_url_protocol"},
	{Name: "current_url_search"}, {Name: "utm_source"}, {Name: "utm_medium"}, {Name: "utm_campaign"},
	{Name: "utm_term"}, {Name: "utm_content"}, {Name: "$had_persisted_distinct_id"},
	{Name: "$search_engine"}, {Name: "$duration"}, {Name: "$event_type"}, {Name: "$mp_api_endpoint"},
	{Name: "$mp_api_timestamp_ms"}, {Name: "mp_page_view"}, {Name: "$os_version"}, {Name: "$model"},
	{Name: "$manufacturer"}, {Name: "$app_version"}, {Name: "$app_release"}, {Name: "$carrier"},
	{Name: "$wifi"}, {Name: "$radio"}, {Name: "$app_build_number"}, {Name: "$app_version_string"},
	{Name: "$lib"}, {Name: "$user_agent"}, {Name: "$screen_dpi"}, {Name: "$bluetooth_enabled"},
	{Name: "$has_nfc"}, {Name: "$has_telephone"}, {Name: "$brand"}, {Name: "$google_play_services"},
	{Name: "$ios_ifa"}, {Name: "$android_app_version"}, {Name: "$android_os"}, {Name: "$android_model"},
	{Name: "$ios_version"}, {Name: "$ios_device_model"}, {Name: "$ios_app_version"}, {Name: "$timezone"},
	{Name: "$language"}, {Name: "$locale"}, {Name: "$source"}, {Name: "$email"}, {Name: "$phone"},
	{Name: "$name"}, {Name: "$first_name"}, {Name: "$last_name"}, {Name: "$created"}, {Name: "$avatar"},
	{Name: "$opt_in"}, {Name: "gclid"}, {Name: "fbclid"}, {Name: "$search_keyword"}, {Name: "$title"},
	{Name: "$url"},
}

// KnownProp is one row of the known properties.
type KnownProp struct {
	Name   string
	Role   Role
	Column Column // the column a RolePromoted property fills
}

// Role says what Veil does with a known property beyond recognising it.
type Role uint8

// The roles of known properties.
const (
	RoleNone       Role = iota
	RoleEnvelope        // read into an Event field (distinct_id, time, $insert_id)
	RolePromoted        // moved into a column by enrichment
	RoleIdentifier      // replaced by its pseudonym
	RoleAddress         // the client's address for geolocation
)

// Column is an Event column a promoted property fills.
type Column uint8

// The columns promoted properties fill.
const (
	ColumnNone Column = iota
	ColumnBrowser
	ColumnBrowserVersion
	ColumnOS
	ColumnDevice
	ColumnLib
	ColumnLibVersion
	ColumnCity
	ColumnRegion
	ColumnCountryCode
	numColumns
)

// Column returns the field of ev that column c fills, nil for ColumnNone.
func (ev *Event) Column(c Column) *string {
	d, g := &ev.Device, &ev.Geo
	return [numColumns]*string{nil, &d.Browser, &d.BrowserVersion, &d.OS, &d.Device, &d.Lib, &d.LibVersion,
		&g.City, &g.Region, &g.CountryCode}[c]
}

// Known is the id of a known property name, 0 for any other name.
type Known uint8

// The ids of the names the decoder takes out of the props: the first
// three rows, so that one compare passes over every other prop.
const (
	knownDistinctID Known = 1 + iota
	knownTime
	knownInsertID
)

// NumKnown is the number of known ids: a table indexed by Known has
// NumKnown entries (entry 0 for names that are not known).
const NumKnown = len(knownProps) + 1

// LookupKnown returns the id of a known property name, or 0.
func LookupKnown(name string) Known { return knownID(name) }

// Name returns the known name, "" for 0.
func (k Known) Name() string { return k.Prop().Name }

// Prop returns the row of k; the zero row for 0 or an id out of range.
func (k Known) Prop() KnownProp {
	if k == 0 || int(k) >= NumKnown {
		return KnownProp{}
	}
	return knownProps[k-1]
}

// maxKnownLen is the longest known name.
const maxKnownLen = 32

// knownSlots is an open-addressing table from a cheap hash of a name to
// its id: most keys are settled by one load and a length compare. It and
// the checks below are the table's own consistency, worked out when the
// package loads.
var knownSlots = func() (t [256]Known) {
	if len(knownProps) > 255 {
		panic("event: more than 255 known property names")
	}
	if knownProps[knownDistinctID-1].Name != PropDistinctID || knownProps[knownTime-1].Name != PropTime || knownProps[knownInsertID-1].Name != PropInsertID {
		panic("event: distinct_id, time and $insert_id must be the first known property names")
	}
	for i, kp := range knownProps {
		k := kp.Name
		if len(k) > maxKnownLen || len(k) < 2 {
			panic("event: known property name of a length the table does not hold: " + k)
		}
		if (kp.Role == RolePromoted) != (kp.Column != ColumnNone) {
			panic("event: a promoted property needs a column, and only it: " + k)
		}
		if skipPlain([]byte(k), 0) != len(k) {
			panic("event: known property name is not plain ASCII: " + k) // predictedKey compares its text
		}
		h := knownHash(k)
		for t[h] != 0 {
			if knownProps[t[h]-1].Name == k {
				panic("event: known property name listed twice: " + k)
			}
			h++ // wraps around the 256 slots
		}
		t[h] = Known(i + 1)
	}
	return t
}()

func knownHash[T string | []byte](k T) uint8 {
	n := len(k)
	return uint8(uint(n)*37 + uint(k[1])*5 + uint(k[n-1])*3 + uint(k[n-2]))
}

// knownID is LookupKnown on the bytes of a name.
func knownID[T string | []byte](k T) Known {
	if len(k) < 2 || len(k) > maxKnownLen {
		return 0
	}
	for h := knownHash(k); ; h++ { // wraps around the 256 slots
		id := knownSlots[h]
		if id == 0 {
			return 0
		}
		if knownProps[id-1].Name == string(k) {
			return id
		}
	}
}
