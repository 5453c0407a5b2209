// Package forwarded decides what Veil believes about the client behind an
// HTTP connection: its address, the scheme it used and the host it asked
// for. A reverse proxy that ends the client's connection passes these on in
// X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host, but any client
// can send the same headers. They are believed only when the connection's
// peer is one of the trusted proxies (collector.trusted_proxies); from any
// other peer the address is the peer's and the scheme is the connection's
// (TLS or not). Every reader of these headers in Veil goes through
// Proxies, so the trust decision has one home.
//
// The standard Forwarded header (RFC 7239) is not read: the load balancers
// Veil runs behind send the X-Forwarded-* headers, and believing two
// spellings of the same claim would leave room for them to disagree.
package forwarded

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Proxies is the set of peers whose forwarding headers are believed. The
// zero value, and a nil *Proxies, trust no one.
type Proxies struct {
	prefixes []netip.Prefix
}

// ParsePrefix reads one trusted_proxies entry: an address or a CIDR prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// New returns the proxies of list, each an address or a CIDR prefix. The
// error names the index of the first entry that is neither; callers that
// validate their configuration first name the key themselves.
func New(list []string) (*Proxies, error) {
	p := &Proxies{prefixes: make([]netip.Prefix, 0, len(list))}
	for i, s := range list {
		pfx, err := ParsePrefix(s)
		if err != nil {
			return nil, &EntryError{Index: i}
		}
		p.prefixes = append(p.prefixes, pfx)
	}
	return p, nil
}

// EntryError says which entry of a proxy list is not an address or a CIDR
// prefix. It never repeats the entry.
type EntryError struct{ Index int }

func (e *EntryError) Error() string {
	return "trusted proxy entry " + strconv.Itoa(e.Index) + " is not an address or CIDR prefix"
}

// Trusts reports whether a is a trusted proxy.
func (p *Proxies) Trusts(a netip.Addr) bool {
	if p == nil {
		return false
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// Peer is the address at the other end of the connection, IPv4-mapped
// addresses unmapped; the zero Addr when RemoteAddr is not an address.
func Peer(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// fromTrusted reports whether the request's peer is a trusted proxy.
func (p *Proxies) fromTrusted(r *http.Request) bool {
	if p == nil || len(p.prefixes) == 0 {
		return false
	}
	return p.Trusts(Peer(r))
}

// ClientIP is the connection's peer or, when the peer is a trusted proxy,
// the right-most X-Forwarded-For address that is not a trusted proxy: every
// hop to its right was added by a proxy Veil trusts, every hop to its left
// was written by someone it does not.
func (p *Proxies) ClientIP(r *http.Request) netip.Addr {
	peer := Peer(r)
	if !peer.IsValid() || !p.Trusts(peer) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		// The comma-separated addresses, right to left.
		for rest, more := hops[i], true; more; {
			part := rest
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				part, rest = rest[j+1:], rest[:j]
			} else {
				more = false
			}
			a, err := netip.ParseAddr(strings.TrimSpace(part))
			if err != nil {
				return peer // a malformed hop: trust nothing before it
			}
			a = a.Unmap()
			if !p.Trusts(a) {
				return a
			}
		}
	}
	return peer
}

// lastValue is the right-most comma-separated value of a header: the one
// the nearest proxy wrote when proxies append to it. A client's own value
// of the header, passed along by a proxy that appends, stays to its left.
func lastValue(h http.Header, key string) string {
	vs := h.Values(key)
	if len(vs) == 0 {
		return ""
	}
	v := vs[len(vs)-1]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(v)
}

// Secure reports whether the client reached Veil over HTTPS: the
// connection is TLS, or a trusted proxy says so in X-Forwarded-Proto.
func (p *Proxies) Secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return p.fromTrusted(r) && strings.EqualFold(lastValue(r.Header, "X-Forwarded-Proto"), "https")
}

// Scheme is "https" when Secure, else "http".
func (p *Proxies) Scheme(r *http.Request) string {
	if p.Secure(r) {
		return "https"
	}
	return "http"
}

// Host is the host (and port) the client asked for: a trusted proxy's
// X-Forwarded-Host when it sent a well-formed one, else the request's Host.
func (p *Proxies) Host(r *http.Request) string {
	if p.fromTrusted(r) {
		if h := lastValue(r.Header, "X-Forwarded-Host"); h != "" && validHost(h) {
			return h
		}
	}
	return r.Host
}

// Origin is the origin the client addressed, as a browser serialises it in
// an Origin header: scheme://host[:port], lower case, the scheme's default
// port left out.
func (p *Proxies) Origin(r *http.Request) string {
	return normalOrigin(p.Scheme(r), p.Host(r))
}

// SameOrigin reports whether the URL or origin u (an Origin or Referer
// header's value) has the origin the client addressed. An opaque origin
// ("null") is never the same.
func (p *Proxies) SameOrigin(r *http.Request, u string) bool {
	if u == "" || u == "null" {
		return false
	}
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme == "" || pu.Host == "" || pu.User != nil {
		return false
	}
	return normalOrigin(strings.ToLower(pu.Scheme), pu.Host) == p.Origin(r)
}

func normalOrigin(scheme, host string) string {
	host = strings.ToLower(host)
	switch {
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	}
	return scheme + "://" + host
}

// validHost accepts what a Host header may hold: a name, an IPv4 address
// or a bracketed IPv6 address, with an optional port; nothing that would
// change the meaning of a URL built from it.
func validHost(h string) bool {
	if len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}
