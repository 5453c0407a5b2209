package event

// knownNames are the property names Mixpanel's SDKs and Veil's own stages
// use. The decoders recognise them as they read a key: DecodeFast shares
// the name's string instead of allocating one for every event, and
// DecodeRaw records it in Prop.Known, so that the stages decide what to do
// with such a prop from a table built once instead of comparing names.
// The list is fixed: names seen in traffic are never added, so no
// user-chosen text (a key may carry personal data) outlives its event.
// At most 255 names (Prop.Known is a byte); the order is free.
var knownNames = [...]string{
	PropDistinctID, PropTime, PropInsertID, PropToken, PropGroupKey, PropGroupID,
	"$os", "$browser", "$browser_version", "$current_url", "$screen_height", "$screen_width",
	"mp_lib", "$lib_version", "$device_id", "$user_id", "$device", "$initial_referrer",
	"$initial_referring_domain", "$referrer", "$referring_domain", "mp_sent_by_lib_version",
	"current_page_title", "current_domain", "current_url_path", "current_url_protocol",
	"current_url_search", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
	"$had_persisted_distinct_id", "$anon_distinct_id", "$identified_id", "$search_engine",
	"$city", "$region", "mp_country_code", "ip", "$ip", "$duration", "$event_type",
	"$mp_api_endpoint", "$mp_api_timestamp_ms", "mp_page_view", "$os_version", "$model",
	"$manufacturer", "$app_version", "$app_release", "$carrier", "$wifi", "$radio",
	"$app_build_number", "$app_version_string", "$lib", "$distinct_id_before_identity",
	"$anon_id", "$user_agent", "$screen_dpi", "$bluetooth_enabled", "$has_nfc",
	"$has_telephone", "$brand", "$google_play_services", "$ios_ifa", "$android_app_version",
	"$android_os", "$android_model", "$ios_version", "$ios_device_model", "$ios_app_version",
	"$timezone", "$language", "$locale", "$source", "$email", "$phone", "$name",
	"$first_name", "$last_name", "$created", "$avatar", "$opt_in", "gclid", "fbclid",
	"$search_keyword", "$title", "$url",
}

// The ids of the names finishRaw takes out of the props: the first three
// of knownNames, so that one compare passes over every other prop.
const (
	knownDistinctID = 1 + iota
	knownTime
	knownInsertID
)

// NumKnownProps is the number of known property names: Prop.Known is
// below it, and a table indexed by Prop.Known has NumKnownProps entries
// (entry 0 for names that are not known).
const NumKnownProps = len(knownNames) + 1

// KnownPropName returns the name of the known property id (1 ≤ id <
// NumKnownProps), "" for 0.
func KnownPropName(id uint8) string {
	if id == 0 || int(id) >= NumKnownProps {
		return ""
	}
	return knownNames[id-1]
}

// KnownProp returns the id of a known property name, as DecodeRaw records
// it in Prop.Known, or 0.
func KnownProp(name string) uint8 {
	return knownID(name)
}

// maxKnownLen is the longest known name.
const maxKnownLen = 32

// knownSlots is an open-addressing table from a cheap hash of a name to
// its id: most keys are settled by one load and a length compare.
var knownSlots = func() (t [256]uint8) {
	if len(knownNames) > 255 {
		panic("event: more than 255 known property names")
	}
	if knownNames[knownDistinctID-1] != PropDistinctID || knownNames[knownTime-1] != PropTime || knownNames[knownInsertID-1] != PropInsertID {
		panic("event: distinct_id, time and $insert_id must be the first known property names")
	}
	for i, k := range knownNames {
		if len(k) > maxKnownLen {
			panic("event: known property name longer than maxKnownLen: " + k)
		}
		if skipPlain([]byte(k), 0) != len(k) {
			panic("event: known property name is not plain ASCII: " + k) // predictedKey compares its text
		}
		h := knownHash(k)
		for t[h] != 0 {
			if knownNames[t[h]-1] == k {
				panic("event: known property name listed twice: " + k)
			}
			h++ // wraps around the 256 slots
		}
		t[h] = uint8(i + 1)
	}
	return t
}()

func knownHash[T string | []byte](k T) uint8 {
	n := len(k)
	return uint8(uint(n)*37 + uint(k[1])*5 + uint(k[n-1])*3 + uint(k[n-2]))
}

// knownID is KnownProp on the bytes of a name.
func knownID[T string | []byte](k T) uint8 {
	if len(k) < 2 || len(k) > maxKnownLen {
		return 0
	}
	for h := knownHash(k); ; h++ { // wraps around the 256 slots
		id := knownSlots[h]
		if id == 0 {
			return 0
		}
		if knownNames[id-1] == string(k) {
			return id
		}
	}
}
