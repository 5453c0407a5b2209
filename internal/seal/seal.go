// Package seal keeps the personal data of Veil's Kafka messages out of
// Kafka: the collector seals every envelope with an AEAD key before it is
// produced, the worker opens it in memory, and a message's partition key
// is a keyed hash of the user instead of the user. The raw topic, the
// dead-letter topic, the brokers' disks and their backups, and the
// collector's spool then hold only ciphertext and routing hashes.
//
// A sealed message is
//
//	0xA5 0x56 0x01 | epoch (4 bytes, big-endian) | nonce (12 bytes) | AES-256-GCM(envelope) with its 16-byte tag
//
// The first seven bytes are the AEAD's additional data, so the epoch
// cannot be changed without the open failing. An envelope is JSON and
// starts with '{', so a sealed message is never mistaken for a plain one.
//
// Keys come from a key file (internal/keyfile: EPOCH:BASE64KEY[:CREATED]).
// Each line's secret yields, through HMAC-SHA256 with a fixed label, the
// AES-256 key of its epoch; the routing key comes from the line of the
// lowest epoch, so that adding a key does not move users between
// partitions. See docs/privacy.md for rotation.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veilhq/veil/internal/keyfile"
)

// MinKeyLen is the shortest secret a key file line may hold, in bytes.
const MinKeyLen = 32

const (
	magic0, magic1, version = 0xA5, 0x56, 0x01
	headerLen               = 3 + 4
	nonceLen                = 12
	tagLen                  = 16
	// Overhead is what sealing adds to an envelope, in bytes.
	Overhead = headerLen + nonceLen + tagLen
)

// Why a message could not be opened: fixed reasons, used as the
// dead-letter reason and a metric label.
var (
	ErrNotSealed    = errors.New("seal: the message is not sealed")
	ErrUnknownEpoch = errors.New("seal: the message is sealed with a key epoch this process does not have")
	ErrOpen         = errors.New("seal: the message does not open with the key of its epoch (a wrong key, or altered bytes)")
	ErrMalformed    = errors.New("seal: the sealed message is truncated or of an unknown version")
	ErrNoKeys       = errors.New("seal: the message is sealed and this worker has no seal keys (seal.key_file)")
)

// Reason is the fixed reason of an error of Open, for metric labels.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrNotSealed):
		return "unsealed"
	case errors.Is(err, ErrUnknownEpoch):
		return "seal_unknown_epoch"
	case errors.Is(err, ErrOpen):
		return "seal_open_failed"
	case errors.Is(err, ErrNoKeys):
		return "seal_no_keys"
	default:
		return "seal_malformed"
	}
}

// IsSealed reports whether b has a sealed message's header.
func IsSealed(b []byte) bool {
	return len(b) >= 3 && b[0] == magic0 && b[1] == magic1
}

// Ring is one reading of a key file: every epoch's AEAD, the epoch new
// messages are sealed with, and the routing key. It is immutable.
type Ring struct {
	aeads   map[uint32]cipher.AEAD
	epochs  []uint32 // ascending
	created map[uint32]time.Time
	route   []byte
	loaded  time.Time
}

// NewRing derives a ring from a key file's keys.
func NewRing(keys []keyfile.Key) (*Ring, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: no keys")
	}
	r := &Ring{aeads: make(map[uint32]cipher.AEAD, len(keys)), created: make(map[uint32]time.Time, len(keys)), loaded: time.Now()}
	lowest := keys[0]
	for _, k := range keys {
		if len(k.Secret) < MinKeyLen {
			return nil, fmt.Errorf("seal: the key of epoch %d is %d bytes, want at least %d", k.Epoch, len(k.Secret), MinKeyLen)
		}
		block, err := aes.NewCipher(derive(k.Secret, "veil seal aead v1"))
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		r.aeads[k.Epoch] = aead
		r.created[k.Epoch] = k.Created
		r.epochs = append(r.epochs, k.Epoch)
		if k.Epoch < lowest.Epoch {
			lowest = k
		}
	}
	slices.Sort(r.epochs)
	r.route = derive(lowest.Secret, "veil seal route v1")
	return r, nil
}

func derive(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// Epochs lists the ring's epochs, ascending.
func (r *Ring) Epochs() []uint32 { return slices.Clone(r.epochs) }

// SealingEpoch is the epoch new messages are sealed with at now: the
// highest whose key was made at least delay before now (or whose line
// gives no creation time), so that every worker has read a new key before
// any collector seals with it; the lowest epoch if none is that old.
func (r *Ring) SealingEpoch(now time.Time, delay time.Duration) uint32 {
	for i := len(r.epochs) - 1; i >= 0; i-- {
		e := r.epochs[i]
		if c := r.created[e]; c.IsZero() || !now.Before(c.Add(delay)) {
			return e
		}
	}
	return r.epochs[0]
}

// Keys holds the current ring and re-reads its source on Reload. Safe for
// concurrent use.
type Keys struct {
	src   keyfile.Source
	delay time.Duration
	ring  atomic.Pointer[Ring]

	// The nonce of each sealed message is a random 4-byte prefix and a
	// 64-bit counter that starts at a random value: nonces never repeat
	// within a process, and two processes' ranges overlap with a
	// probability of about messages ÷ 2⁹⁶.
	prefix [4]byte
	ctr    atomic.Uint64

	routes sync.Pool
}

// Load reads the keys src names. delay is Config.ActivationDelay.
func Load(src keyfile.Source, delay time.Duration) (*Keys, error) {
	r, err := readRing(src)
	if err != nil {
		return nil, err
	}
	return newKeys(src, r, delay)
}

// readRing reads src into a ring; the secrets read are cleared once the
// ring's keys are derived from them.
func readRing(src keyfile.Source) (*Ring, error) {
	ks, err := src.Load(MinKeyLen)
	if err != nil {
		return nil, err
	}
	r, err := NewRing(ks)
	for _, k := range ks {
		clear(k.Secret)
	}
	return r, err
}

// FromRing makes Keys over a ring, for tests and tools; Reload is a no-op.
func FromRing(r *Ring, delay time.Duration) (*Keys, error) {
	return newKeys(keyfile.Source{}, r, delay)
}

func newKeys(src keyfile.Source, r *Ring, delay time.Duration) (*Keys, error) {
	k := &Keys{src: src, delay: delay}
	k.ring.Store(r)
	var seed [12]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("seal: nonce seed: %w", err)
	}
	copy(k.prefix[:], seed[:4])
	k.ctr.Store(binary.BigEndian.Uint64(seed[4:]))
	k.routes.New = func() any { return &router{} }
	return k, nil
}

// Ring returns the current ring.
func (k *Keys) Ring() *Ring { return k.ring.Load() }

// Reload reads the key file again and, if it parses, makes it the ring.
// A file that does not parse leaves the ring as it was; the error says
// why, never quoting a key. It reports whether the epochs changed.
func (k *Keys) Reload() (bool, error) {
	if k.src.File == "" && k.src.Env == "" {
		return false, nil
	}
	r, err := readRing(k.src)
	if err != nil {
		return false, err
	}
	old := k.ring.Swap(r)
	return !slices.Equal(old.epochs, r.epochs), nil
}

// Seal appends the sealed form of plain to dst, under the sealing epoch at
// now.
func (k *Keys) Seal(dst, plain []byte, now time.Time) []byte {
	r := k.ring.Load()
	epoch := r.SealingEpoch(now, k.delay)
	aead := r.aeads[epoch]
	n := len(dst)
	dst = slices.Grow(dst, Overhead+len(plain))
	dst = append(dst, magic0, magic1, version)
	dst = binary.BigEndian.AppendUint32(dst, epoch)
	dst = append(dst, k.prefix[:]...)
	dst = binary.BigEndian.AppendUint64(dst, k.ctr.Add(1))
	// The header and nonce are read from dst, before the part of it the
	// AEAD writes: the regions do not overlap.
	return aead.Seal(dst, dst[n+headerLen:n+headerLen+nonceLen], plain, dst[n:n+headerLen])
}

// Open appends the envelope sealed in b to dst. Its errors are ErrNotSealed,
// ErrMalformed, ErrUnknownEpoch and ErrOpen, with nothing of b in them.
// b is not changed.
func (k *Keys) Open(dst, b []byte) ([]byte, error) {
	if !IsSealed(b) {
		return dst, ErrNotSealed
	}
	if len(b) < Overhead || b[2] != version {
		return dst, ErrMalformed
	}
	epoch := binary.BigEndian.Uint32(b[3:headerLen])
	aead, ok := k.ring.Load().aeads[epoch]
	if !ok {
		return dst, ErrUnknownEpoch
	}
	// dst may be b's own ciphertext (OpenInPlace), which the AEAD
	// overwrites; the header and nonce before it are not.
	out, err := aead.Open(dst, b[headerLen:headerLen+nonceLen], b[headerLen+nonceLen:], b[:headerLen])
	if err != nil {
		return dst, ErrOpen
	}
	return out, nil
}

// RouteSize is the length of a routing key.
const RouteSize = 16

// Route appends the routing key of a message's key (project and user) to
// dst: the first 16 bytes of its HMAC-SHA256 under the routing key. The
// same user gets the same partition, and the key tells nobody who it is.
func (k *Keys) Route(dst, key []byte) []byte {
	r := k.ring.Load()
	rt := k.routes.Get().(*router)
	if rt.ring != r {
		rt.ring, rt.mac = r, hmac.New(sha256.New, r.route)
	}
	rt.mac.Reset()
	rt.mac.Write(key)
	rt.sum = rt.mac.Sum(rt.sum[:0])
	dst = append(dst, rt.sum[:RouteSize]...)
	k.routes.Put(rt)
	return dst
}

type router struct {
	ring *Ring
	mac  hash.Hash
	sum  []byte
}

// OpenInPlace opens the message b in place: the envelope is returned as a
// part of b's own memory, which it overwrites, so that what is read from
// it lives exactly as long as the message. On an error b may have been
// overwritten too; a caller that must keep the sealed bytes (to
// dead-letter them) copies them first.
func (k *Keys) OpenInPlace(b []byte) ([]byte, error) {
	if !IsSealed(b) {
		return nil, ErrNotSealed
	}
	if len(b) < Overhead {
		return nil, ErrMalformed
	}
	ct := b[headerLen+nonceLen:]
	return k.Open(ct[:0], b)
}
