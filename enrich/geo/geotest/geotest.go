// Package geotest writes small MaxMind DB files in the two layouts package
// geo reads, for tests and benchmarks. Real databases are too large to
// commit and their answers change monthly; these are exact.
package geotest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Record is one network and the location it maps to.
type Record struct {
	Network     string // CIDR, e.g. "192.0.2.0/24" or "2001:db8::/32"
	CountryCode string
	Region      string
	City        string
}

// Layouts, mirroring geo.SchemaGeoIP2 and geo.SchemaDBIPLite.
const (
	GeoIP2   = "geoip2"
	DBIPLite = "dbip-lite"
)

// Spec describes a database to write.
type Spec struct {
	Layout string // GeoIP2 or DBIPLite
	// DatabaseType defaults to "GeoLite2-City" for GeoIP2 and to
	// "city ipv4"/"city ipv6" for DBIPLite, as the real files say.
	DatabaseType string
	IPVersion    int // 4 or 6; 0 means 6
	Records      []Record
}

// Write builds spec and puts it at path atomically (write beside, then
// rename), the way a deploy should replace a database.
func Write(tb testing.TB, path string, spec Spec) {
	tb.Helper()
	if err := write(path, spec); err != nil {
		tb.Fatalf("geotest: %v", err)
	}
}

func write(path string, spec Spec) error {
	if spec.IPVersion == 0 {
		spec.IPVersion = 6
	}
	dt := spec.DatabaseType
	if dt == "" {
		switch spec.Layout {
		case GeoIP2:
			dt = "GeoLite2-City"
		case DBIPLite:
			dt = fmt.Sprintf("city ipv%d", spec.IPVersion)
		}
	}
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: dt,
		IPVersion:    spec.IPVersion,
		Languages:    []string{"en", "de"},
		// Tests use the documentation ranges (RFC 5737, RFC 3849), which
		// the writer otherwise refuses as reserved.
		IncludeReservedNetworks: true,
		// Like the real DB-IP Lite IPv6 file, which holds no IPv4 data,
		// not even aliases of it.
		DisableIPv4Aliasing: spec.Layout == DBIPLite,
	})
	if err != nil {
		return err
	}
	for _, r := range spec.Records {
		_, n, err := net.ParseCIDR(r.Network)
		if err != nil {
			return err
		}
		var v mmdbtype.DataType
		switch spec.Layout {
		case GeoIP2:
			v = geoip2Value(r)
		case DBIPLite:
			v = dbipValue(r)
		default:
			return fmt.Errorf("unknown layout %q", spec.Layout)
		}
		if err := tree.Insert(n, v); err != nil {
			return fmt.Errorf("insert %s: %w", r.Network, err)
		}
	}
	return writeTree(path, tree)
}

// WriteRaw writes records of any shape, for files in neither layout.
func WriteRaw(tb testing.TB, path, databaseType string, ipVersion int, nets map[string]mmdbtype.Map) {
	tb.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: databaseType, IPVersion: ipVersion, IncludeReservedNetworks: true})
	if err != nil {
		tb.Fatalf("geotest: %v", err)
	}
	for cidr, v := range nets {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			tb.Fatalf("geotest: %v", err)
		}
		if err := tree.Insert(n, v); err != nil {
			tb.Fatalf("geotest: insert %s: %v", cidr, err)
		}
	}
	if err := writeTree(path, tree); err != nil {
		tb.Fatalf("geotest: %v", err)
	}
}

func writeTree(path string, tree *mmdbwriter.Tree) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".geotest-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tree.WriteTo(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func names(s string) mmdbtype.Map {
	// A German name too, so a decoder that picked the wrong language or
	// took the first entry would be caught.
	return mmdbtype.Map{"de": mmdbtype.String(s + " (de)"), "en": mmdbtype.String(s)}
}

// geoip2Value shapes r like a GeoIP2 City record, with the fields Veil
// ignores present too, as in real files.
func geoip2Value(r Record) mmdbtype.Map {
	m := mmdbtype.Map{
		"continent": mmdbtype.Map{"code": mmdbtype.String("NA"), "geoname_id": mmdbtype.Uint32(6255149)},
		"location":  mmdbtype.Map{"latitude": mmdbtype.Float64(37.4), "longitude": mmdbtype.Float64(-122.1), "accuracy_radius": mmdbtype.Uint16(1000)},
	}
	if r.CountryCode != "" {
		m["country"] = mmdbtype.Map{"iso_code": mmdbtype.String(r.CountryCode), "geoname_id": mmdbtype.Uint32(1), "names": names("Country " + r.CountryCode)}
		m["registered_country"] = m["country"]
	}
	if r.Region != "" {
		m["subdivisions"] = mmdbtype.Slice{
			mmdbtype.Map{"iso_code": mmdbtype.String("R1"), "names": names(r.Region)},
			mmdbtype.Map{"iso_code": mmdbtype.String("R2"), "names": names("Second-level of " + r.Region)},
		}
	}
	if r.City != "" {
		m["city"] = mmdbtype.Map{"geoname_id": mmdbtype.Uint32(2), "names": names(r.City)}
	}
	return m
}

// dbipValue shapes r like an ip-location-db DB-IP Lite record: every field
// present, unknown ones as "".
func dbipValue(r Record) mmdbtype.Map {
	return mmdbtype.Map{
		"country_code": mmdbtype.String(r.CountryCode),
		"state1":       mmdbtype.String(r.Region),
		"state2":       mmdbtype.String(""),
		"city":         mmdbtype.String(r.City),
		"postcode":     mmdbtype.String(""),
		"latitude":     mmdbtype.Float32(48.8566),
		"longitude":    mmdbtype.Float32(2.3522),
		"timezone":     mmdbtype.String(""),
	}
}
