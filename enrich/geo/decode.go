package geo

import (
	"github.com/oschwald/maxminddb-golang/v2/mmdbdata"
)

// The record decoders below walk a record with the reader's cursor API and
// read only the three strings Veil wants, skipping everything else without
// decoding it. Decoding runs once per distinct record (see locationCache),
// but a cold cache after a reload or a burst of new networks runs it on the
// request path: against reflection decoding into tagged structs, this took
// a cache-missing lookup from ~1.55 µs and 3 allocations to ~1.3 µs and 1
// (the cache entry) in bench's synthetic/ipv4-cold.
//
// The strings read are copies, not views of the memory map, so a Location
// stays valid after its DB is closed.

// maxNameBytes bounds each string taken from a record. Real names are tens
// of bytes; the bound keeps a corrupt or hostile file from putting megabytes
// into every event's properties.
const maxNameBytes = 1024

// geoip2Location decodes the GeoIP2 City layout:
// country.iso_code, subdivisions[0].names.en, city.names.en.
type geoip2Location Location

func (l *geoip2Location) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	return eachEntry(c, func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		switch string(key) {
		case "country":
			return field(v, "iso_code", &l.CountryCode)
		case "subdivisions":
			return firstElement(v, func(v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
				return englishName(v, &l.Region)
			})
		case "city":
			return englishName(v, &l.City)
		}
		return v.Skip()
	})
}

// dbipLocation decodes the flat ip-location-db layout of DB-IP Lite:
// country_code, state1, city (also state2, postcode, latitude, longitude,
// timezone, which Veil does not use).
type dbipLocation Location

func (l *dbipLocation) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	return eachEntry(c, func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		switch string(key) {
		case "country_code":
			return readString(v, &l.CountryCode)
		case "state1":
			return readString(v, &l.Region)
		case "city":
			return readString(v, &l.City)
		}
		return v.Skip()
	})
}

// eachEntry calls f for each entry of the map at c; f must consume the value
// and return its successor.
func eachEntry(c mmdbdata.Cursor, f func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error)) (mmdbdata.Cursor, error) {
	m, err := c.Map()
	if err != nil {
		return mmdbdata.Cursor{}, mmdbdata.NormalizeUnmarshalError[Location](err)
	}
	var next mmdbdata.Cursor
	for {
		key, v, ok := m.Next(next)
		if !ok {
			break
		}
		if next, err = f(key, v); err != nil {
			return mmdbdata.Cursor{}, err
		}
	}
	return m.End()
}

// firstElement calls f on the first element of the slice at c and skips the
// rest.
func firstElement(c mmdbdata.Cursor, f func(v mmdbdata.Cursor) (mmdbdata.Cursor, error)) (mmdbdata.Cursor, error) {
	s, err := c.Slice()
	if err != nil {
		return mmdbdata.Cursor{}, mmdbdata.NormalizeUnmarshalError[[]Location](err)
	}
	var next mmdbdata.Cursor
	for {
		i, v, ok := s.Next(next)
		if !ok {
			break
		}
		if i == 0 {
			next, err = f(v)
		} else {
			next, err = v.Skip()
		}
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
	}
	return s.End()
}

// englishName reads names.en of the map at c into dst.
func englishName(c mmdbdata.Cursor, dst *string) (mmdbdata.Cursor, error) {
	return eachEntry(c, func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		if string(key) == "names" {
			return field(v, "en", dst)
		}
		return v.Skip()
	})
}

// field reads the string under name in the map at c into dst.
func field(c mmdbdata.Cursor, name string, dst *string) (mmdbdata.Cursor, error) {
	return eachEntry(c, func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		if string(key) == name {
			return readString(v, dst)
		}
		return v.Skip()
	})
}

func readString(c mmdbdata.Cursor, dst *string) (mmdbdata.Cursor, error) {
	s, next, err := c.ReadStringMaxSize(maxNameBytes)
	if err != nil {
		return mmdbdata.Cursor{}, mmdbdata.NormalizeUnmarshalError[string](err)
	}
	*dst = s
	return next, nil
}
