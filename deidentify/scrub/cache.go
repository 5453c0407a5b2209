package scrub

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
)

// cleanURLs remembers recent URLs that String left unchanged, so that the
// same referrer or page URL, sent with every event of a visit
// ($initial_referrer, $referrer, $current_url), is parsed and scanned once
// instead of every time.
//
// Only a URL in which the scrubber found nothing enters it: a URL that
// String would rewrite (a query parameter, a fragment, an e-mail in the
// path…) is never stored, so the cache holds nothing the scrubber counts
// as personal data, only text that is stored as it is anyway. A URL enters
// on its second sighting (the first only leaves its hash), so that a
// stream of distinct URLs costs no copies, and it replaces a URL that was
// looked up since the last attempt to replace it only at the attempt after
// (a second chance, as in a CLOCK cache), so that two URLs that share a
// slot do not keep evicting each other. The table is a fixed array of
// slots indexed by hash, read and written without a lock: a collision or a
// race only costs a scan, and a hit is an exact string comparison, so the
// answer is always String's own.
type cleanURLs struct {
	seed  maphash.Seed
	slots [cleanURLSlots]cleanURLSlot
}

type cleanURLSlot struct {
	url  atomic.Pointer[string]
	seen atomic.Uint64 // the hash of the last URL that missed here
	used atomic.Bool   // url was found since the last attempt to replace it
}

// cleanURLSlots bounds the cache: 1024 URLs of at most maxCleanURLLen
// bytes, 16 KB of slots per scrubber plus the URLs themselves; a site's
// hot pages and the search engines and sites that refer to it fit.
const cleanURLSlots = 1024

// maxCleanURLLen is the longest URL cached; longer ones are scanned each
// time.
const maxCleanURLLen = 512

func newCleanURLs() *cleanURLs {
	return &cleanURLs{seed: maphash.MakeSeed()}
}

// cacheable reports whether s has the shape of the URLs worth caching: an
// http(s) URL, as browsers send in referrers and page URLs.
func cacheable(s string) bool {
	return len(s) <= maxCleanURLLen && (strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://"))
}

// lookup reports whether s is known clean. It returns the hash for add.
func (c *cleanURLs) lookup(s string) (uint64, bool) {
	h := maphash.String(c.seed, s)
	slot := &c.slots[h%cleanURLSlots]
	if u := slot.url.Load(); u != nil && *u == s {
		if !slot.used.Load() { // a load first: most hits find it set
			slot.used.Store(true)
		}
		return h, true
	}
	return h, false
}

// add records that String leaves s, of hash h, unchanged.
func (c *cleanURLs) add(s string, h uint64) {
	slot := &c.slots[h%cleanURLSlots]
	if slot.seen.Swap(h) != h {
		return // first sighting
	}
	if slot.used.Swap(false) {
		return // the URL there is in use: it gets a second chance
	}
	u := strings.Clone(s) // s may point into a message that is reused
	slot.url.Store(&u)
}
