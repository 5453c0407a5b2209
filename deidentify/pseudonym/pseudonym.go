// Package pseudonym replaces identifiers (distinct_id, user ids) by keyed
// pseudonyms: HMAC-SHA256 under a secret key, hex-encoded and truncated to
// 128 bits.
//
// A keyed HMAC rather than a plain hash because identifiers are guessable:
// anyone can hash every e-mail address in a leaked list and look for
// matches, but without the key no one can compute a pseudonym, so the
// stored value reveals nothing. The key is the whole secret; it comes from a
// file or an environment variable, never from code, logs or the database,
// and no error or String method of this package prints it.
//
// Keys have epochs. The highest epoch is current and pseudonymises new
// events; older keys are kept so that rows written under them can still be
// found (a deletion request must reach them all). Rotating the key is
// adding a line with a higher epoch.
//
// In daily rotation (cookieless analytics) the key used for an event is
// derived from the current key and the event's UTC date, so one person's
// pseudonyms on two days cannot be linked, not even by Veil.
//
// Why 128 bits: two ids colliding would merge two people's events. For n
// distinct ids in one project the chance of any collision is about
// n²/2¹²⁹: 1.5·10⁻²¹ for a billion ids, 1.5·10⁻¹⁵ for a trillion. 64 bits
// would already give 2.7 % at a billion. Truncating an HMAC keeps it a
// pseudorandom function, and 32 hex characters fit a fixed-width column.
package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Size is the length of a pseudonym: 128 bits in lower-case hex.
const Size = 32

// MinKeyLen is the shortest key accepted, in bytes: the HMAC-SHA256 output
// size, below which the key and not the hash bounds the security.
const MinKeyLen = 32

// Rotation says how the key changes over time.
type Rotation string

// The rotations.
const (
	// RotateNone keeps one pseudonym per id and key epoch: the same person
	// has the same pseudonym on every day, which funnels and retention need.
	RotateNone Rotation = "none"
	// RotateDaily derives a new key every UTC day: pseudonyms of the same
	// id on different days are unlinkable (cookieless analytics).
	RotateDaily Rotation = "daily"
)

// Config chooses the rotation.
type Config struct {
	Rotate Rotation // "none" (the default when empty) or "daily"
}

// Validate reports a problem with c, naming the configuration key.
func (c Config) Validate() error {
	switch c.Rotate {
	case "", RotateNone, RotateDaily:
		return nil
	}
	return fmt.Errorf("deidentify.pseudonym_rotate must be %q or %q, got %q", RotateNone, RotateDaily, c.Rotate)
}

// Pseudonym is an id's pseudonym under the key of one epoch.
type Pseudonym struct {
	Epoch uint32
	Value string
}

// key is one epoch's secret with a pool of ready HMAC states. An HMAC
// keyed once keeps its pads precomputed, so reusing one saves the two key
// blocks' hashing and the allocations of hmac.New on every call.
type key struct {
	epoch   uint32
	secret  []byte
	created time.Time // zero when the key file does not say
	pool    sync.Pool // of *macState
}

type macState struct {
	mac hash.Hash
	buf []byte // project, NUL, id
	sum [sha256.Size]byte
}

// maxPooledBuf bounds the message buffer a pooled state keeps: one huge id
// must not pin memory for the life of the process.
const maxPooledBuf = 1 << 10

func newKey(epoch uint32, secret []byte, created time.Time) *key {
	k := &key{epoch: epoch, secret: append([]byte(nil), secret...), created: created}
	k.pool.New = func() any {
		m := hmac.New(sha256.New, k.secret)
		m.Reset() // precomputes the pads (crypto/hmac does it on first Reset)
		return &macState{mac: m, buf: make([]byte, 0, 128)}
	}
	return k
}

// pseudonymize computes the pseudonym of (project, id) under k. The
// message is project, a NUL, then id: project names are configuration and
// never hold a NUL, so no two (project, id) pairs give the same message.
func (k *key) pseudonymize(project, id string) string {
	st := k.pool.Get().(*macState)
	st.mac.Reset()
	st.buf = append(st.buf[:0], project...)
	st.buf = append(st.buf, 0)
	st.buf = append(st.buf, id...)
	st.mac.Write(st.buf)
	sum := st.mac.Sum(st.sum[:0])
	var out [Size]byte
	hex.Encode(out[:], sum[:Size/2])
	if cap(st.buf) > maxPooledBuf {
		st.buf = make([]byte, 0, 128)
	}
	k.pool.Put(st)
	return string(out[:])
}

// Keyring holds the keys of every epoch. It is immutable after it is made
// and safe for concurrent use.
type Keyring struct {
	keys   []*key // by descending epoch: keys[0] is current
	rotate Rotation
	days   *dayCache
}

func newKeyring(keys []*key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("pseudonym: no keys")
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].epoch > keys[j].epoch })
	return &Keyring{keys: keys, rotate: RotateNone, days: newDayCache()}, nil
}

// NewKeyring makes a keyring from keys by epoch, for tests and tools. The
// keys are copied. Epochs must be positive and keys at least MinKeyLen
// bytes.
func NewKeyring(keys map[uint32][]byte) (*Keyring, error) {
	ks := make([]*key, 0, len(keys))
	for e, secret := range keys {
		if e == 0 {
			return nil, errors.New("pseudonym: epoch 0 is not allowed; epochs start at 1")
		}
		if len(secret) < MinKeyLen {
			return nil, fmt.Errorf("pseudonym: key of epoch %d is %d bytes, want at least %d", e, len(secret), MinKeyLen)
		}
		ks = append(ks, newKey(e, secret, time.Time{}))
	}
	return newKeyring(ks)
}

// WithConfig returns a keyring sharing kr's keys that rotates as cfg says.
func (kr *Keyring) WithConfig(cfg Config) (*Keyring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := cfg.Rotate
	if r == "" {
		r = RotateNone
	}
	return &Keyring{keys: kr.keys, rotate: r, days: newDayCache()}, nil
}

// Rotation returns the keyring's rotation.
func (kr *Keyring) Rotation() Rotation { return kr.rotate }

// Epoch returns the current (highest) epoch.
func (kr *Keyring) Epoch() uint32 { return kr.keys[0].epoch }

// Epochs returns every epoch held, highest first.
func (kr *Keyring) Epochs() []uint32 {
	es := make([]uint32, len(kr.keys))
	for i, k := range kr.keys {
		es[i] = k.epoch
	}
	return es
}

// Created returns when the current key was made, if its key file line
// says (the optional third field); false otherwise.
func (kr *Keyring) Created() (time.Time, bool) {
	c := kr.keys[0].created
	return c, !c.IsZero()
}

// KeyAge returns how old the current key is at now, for the key-age
// metric; false when its creation time is unknown.
func (kr *Keyring) KeyAge(now time.Time) (time.Duration, bool) {
	c, ok := kr.Created()
	if !ok {
		return 0, false
	}
	return now.Sub(c), true
}

// String describes the keyring without its keys, so that printing one
// with any verb (%v, %+v, %#v) can never leak them.
func (kr *Keyring) String() string {
	var b strings.Builder
	b.WriteString("pseudonym.Keyring{rotate: ")
	b.WriteString(string(kr.rotate))
	b.WriteString(", epochs: [")
	for i, k := range kr.keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatUint(uint64(k.epoch), 10))
	}
	b.WriteString("]}")
	return b.String()
}

// GoString is String, for %#v.
func (kr *Keyring) GoString() string { return kr.String() }

// Pseudonymize returns the pseudonym of id in project under the current
// key, and the key's epoch. It ignores the rotation: it is for identifiers
// that must stay stable (profiles, deletion); events go through
// PseudonymizeAt. An empty id has no pseudonym: it returns "", 0.
func (kr *Keyring) Pseudonymize(project, id string) (string, uint32) {
	if id == "" {
		return "", 0
	}
	k := kr.keys[0]
	return k.pseudonymize(project, id), k.epoch
}

// PseudonymizeAt returns the pseudonym of id in project for an event at t,
// and the epoch of the key it derives from. Without rotation it is
// Pseudonymize; with daily rotation the key is HMAC(current key,
// "veil-day:" + t's UTC date as YYYY-MM-DD).
func (kr *Keyring) PseudonymizeAt(project, id string, t time.Time) (string, uint32) {
	if kr.rotate != RotateDaily {
		return kr.Pseudonymize(project, id)
	}
	if id == "" {
		return "", 0
	}
	k := kr.keys[0]
	return kr.days.get(k, dayNumber(t)).pseudonymize(project, id), k.epoch
}

// All returns the pseudonyms of id under every key held, current first,
// so a deletion request can find rows written before a key rotation. For a
// daily-rotating keyring use AllBetween. An empty id has none.
func (kr *Keyring) All(project, id string) []Pseudonym {
	if id == "" {
		return nil
	}
	ps := make([]Pseudonym, len(kr.keys))
	for i, k := range kr.keys {
		ps[i] = Pseudonym{Epoch: k.epoch, Value: k.pseudonymize(project, id)}
	}
	return ps
}

// MaxDays bounds AllBetween's range: ten years of days times the number of
// keys is already tens of thousands of HMACs.
const MaxDays = 3660

// AllBetween returns the pseudonyms of id for every UTC day from from to
// to (both included) under every key held: by day, then current key
// first. Without rotation it is All. It fails when to is before from or
// the range spans more than MaxDays days.
func (kr *Keyring) AllBetween(project, id string, from, to time.Time) ([]Pseudonym, error) {
	if kr.rotate != RotateDaily {
		return kr.All(project, id), nil
	}
	d0, d1 := dayNumber(from), dayNumber(to)
	if d1 < d0 {
		return nil, errors.New("pseudonym: AllBetween: to is before from")
	}
	if d1-d0+1 > MaxDays {
		return nil, fmt.Errorf("pseudonym: AllBetween: range spans %d days, at most %d", d1-d0+1, MaxDays)
	}
	if id == "" {
		return nil, nil
	}
	ps := make([]Pseudonym, 0, int(d1-d0+1)*len(kr.keys))
	for n := d0; n <= d1; n++ {
		for _, k := range kr.keys {
			// Not through the cache: a deletion sweep over years of days
			// would evict the days live traffic needs.
			ps = append(ps, Pseudonym{Epoch: k.epoch, Value: deriveDayKey(k, n).pseudonymize(project, id)})
		}
	}
	return ps, nil
}

// ---- Daily keys ----

const secondsPerDay = 24 * 60 * 60

// dayNumber returns the UTC day of t as days since 1970-01-01. It is the
// cache key; the date string is only formatted when a key is derived.
func dayNumber(t time.Time) int64 {
	sec := t.Unix()
	n := sec / secondsPerDay
	if sec%secondsPerDay < 0 {
		n-- // floor, for times before 1970
	}
	return n
}

// deriveDayKey returns the key of day n under k: HMAC(k, "veil-day:" +
// YYYY-MM-DD). The derived key is as long as an HMAC-SHA256 output.
func deriveDayKey(k *key, n int64) *key {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("veil-day:" + time.Unix(n*secondsPerDay, 0).UTC().Format(time.DateOnly)))
	return newKey(k.epoch, m.Sum(nil), k.created)
}

type dayID struct {
	epoch uint32
	n     int64
}

type dayEntry struct {
	id  dayID
	key *key
}

// dayCache keeps the derived keys of the days in use. Almost every event
// is of today, so the last key used is kept where a lookup needs no lock;
// other days go through a small map, cleared whole when it fills up
// (imports of old events touch many days, once each).
type dayCache struct {
	last atomic.Pointer[dayEntry]
	mu   sync.Mutex
	m    map[dayID]*key
}

const maxCachedDays = 64

func newDayCache() *dayCache { return &dayCache{m: make(map[dayID]*key)} }

func (c *dayCache) get(k *key, n int64) *key {
	id := dayID{epoch: k.epoch, n: n}
	if e := c.last.Load(); e != nil && e.id == id {
		return e.key
	}
	c.mu.Lock()
	dk, ok := c.m[id]
	if !ok {
		if len(c.m) >= maxCachedDays {
			clear(c.m)
		}
		dk = deriveDayKey(k, n)
		c.m[id] = dk
	}
	c.mu.Unlock()
	c.last.Store(&dayEntry{id: id, key: dk})
	return dk
}

// Memo remembers the pseudonyms a Keyring computed lately, so that a user's
// next events cost a map lookup instead of an HMAC: a batch holds many
// events of each user, and each event names them two or three times
// (distinct_id, $device_id, $user_id). The last few pseudonyms used are
// compared before the map is hashed, as the events of one request name
// the same ones. It holds raw identifiers, in the worker's memory only, at
// most size of them and the few recent ones; it is emptied when full.
// It is safe for concurrent use.
type Memo struct {
	kr   *Keyring
	size int
	mu   sync.Mutex
	m    map[memoKey]memoEntry
	// recent are the entries used last, recent[next] the one replaced
	// next.
	recent [memoRecent]memoEntry
	next   int
}

type memoKey struct {
	project, id string
	day         int64 // the UTC day under daily rotation, else noDay
}

// memoEntry is a pseudonym and its key, with the memo's own copies of the
// key's strings.
type memoEntry struct {
	k memoKey
	p string
}

// memoRecent is how many recent entries are compared before the map: the
// distinct_id, device id and user id of one user, and one more.
const memoRecent = 4

const noDay = math.MinInt64

// NewMemo returns a Memo of kr holding at most size pseudonyms.
func NewMemo(kr *Keyring, size int) *Memo {
	return &Memo{kr: kr, size: size, m: make(map[memoKey]memoEntry, min(size, 1<<12))}
}

// PseudonymizeAt is kr.PseudonymizeAt, remembered.
func (m *Memo) PseudonymizeAt(project, id string, t time.Time) (string, uint32) {
	if id == "" {
		return "", 0
	}
	k := memoKey{project: project, id: id, day: noDay}
	if m.kr.rotate == RotateDaily {
		k.day = dayNumber(t)
	}
	epoch := m.kr.keys[0].epoch
	m.mu.Lock()
	for i := range m.recent {
		if e := &m.recent[i]; e.k == k && e.p != "" {
			p := e.p
			m.mu.Unlock()
			return p, epoch
		}
	}
	e, ok := m.m[k]
	if ok {
		m.use(e)
	}
	m.mu.Unlock()
	if ok {
		return e.p, epoch
	}
	p, epoch := m.kr.PseudonymizeAt(project, id, t)
	// The strings may point into a message that is about to be let go.
	k.project, k.id = strings.Clone(project), strings.Clone(id)
	e = memoEntry{k: k, p: p}
	m.mu.Lock()
	if len(m.m) >= m.size {
		clear(m.m)
		clear(m.recent[:])
	}
	m.m[k] = e
	m.use(e)
	m.mu.Unlock()
	return p, epoch
}

// use makes e a recent entry. m.mu is held.
func (m *Memo) use(e memoEntry) {
	m.recent[m.next] = e
	m.next = (m.next + 1) % memoRecent
}
