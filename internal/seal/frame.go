package seal

import (
	"encoding/binary"
	"time"

	"github.com/pierrec/lz4/v4"
)

// A frame is the envelopes of one request that share a key (one user's
// events, in the order the client sent them), compressed together and
// sealed as one message:
//
//	0xA5 0x56 0x02 | epoch (4 bytes) | count (2 bytes) | nonce (12 bytes) | AES-256-GCM(codec (1 byte) | body) with its tag
//
// count is the number of envelopes; with the rest of the header it is the
// AEAD's additional data, so it cannot be changed without the open
// failing, and it lets a worker count the events of a frame it cannot
// open. codec 1 is an LZ4 block: body is uvarint(raw length) and the
// block; codec 0 is raw itself, for envelopes LZ4 does not shrink. raw is
// each envelope as uvarint(length) and its bytes.
//
// Sealed bytes do not compress, so sealing envelope by envelope took away
// the compression Kafka's batches gave a request's envelopes, which repeat
// the request's address, user agent, signals and project. A frame
// compresses them before sealing. It compresses only what one request
// sent, never two requests' bytes together: the length of a frame cannot
// tell one client anything about another's data.
const (
	frameVersion   = 0x02
	frameHeaderLen = 3 + 4 + 2
	// FrameOverhead is what a frame adds to its compressed body, in bytes.
	FrameOverhead = frameHeaderLen + nonceLen + tagLen + 1

	codecRaw = 0
	codecLZ4 = 1

	// FrameBytes is the most envelope bytes a frame takes before the
	// next envelope starts another: LZ4's window is 64 KiB, so larger
	// frames compress little better, and a worker holds one frame's
	// envelopes at a time. An envelope larger than this is a frame alone.
	FrameBytes = 256 << 10
	// MaxFrameEnvelopes is the most envelopes a frame holds.
	MaxFrameEnvelopes = 1<<16 - 1
	// maxFrameRaw bounds what a worker decompresses one frame into, so
	// that the length a frame declares never sizes memory beyond it. The
	// collector's largest request body (collector.limits.max_body_bytes,
	// 10 MiB by default) grows into envelopes well within it.
	maxFrameRaw = 64 << 20
)

// IsFrame reports whether b has a frame's header.
func IsFrame(b []byte) bool {
	return len(b) >= 3 && b[0] == magic0 && b[1] == magic1 && b[2] == frameVersion
}

// Count is the number of envelopes the message b holds as its header says:
// a frame's count, or 1. The count of a frame that was not opened is not
// yet authenticated; it is what metrics count for a message that cannot be
// opened.
func Count(b []byte) int {
	if len(b) >= frameHeaderLen && IsFrame(b) {
		return int(binary.BigEndian.Uint16(b[7:9]))
	}
	return 1
}

// Framer seals frames. It keeps a compressor and buffers from one frame to
// the next; it is not safe for concurrent use.
type Framer struct {
	Keys *Keys

	lz4  lz4.Compressor
	raw  []byte
	comp []byte
}

// Seal appends to dst the frame of envs, sealed under the sealing epoch at
// now. envs must hold 1 to MaxFrameEnvelopes envelopes.
func (f *Framer) Seal(dst []byte, envs [][]byte, now time.Time) []byte {
	raw := f.raw[:0]
	for _, e := range envs {
		raw = binary.AppendUvarint(raw, uint64(len(e)))
		raw = append(raw, e...)
	}
	f.raw = raw

	if need := 1 + binary.MaxVarintLen64 + lz4.CompressBlockBound(len(raw)); cap(f.comp) < need {
		f.comp = make([]byte, need)
	}
	body := f.comp[:cap(f.comp)]
	// One envelope alone shrinks by a fifth (its repetitions are across
	// envelopes: address, user agent, property names), which is not worth
	// the compression's time; two or more halve, fifty shrink tenfold.
	compressed := false
	if len(envs) > 1 {
		body[0] = codecLZ4
		h := 1 + binary.PutUvarint(body[1:], uint64(len(raw)))
		n, err := f.lz4.CompressBlock(raw, body[h:])
		if compressed = err == nil && n > 0 && h+n < 1+len(raw); compressed {
			body = body[:h+n]
		}
	}
	if !compressed {
		body = append(body[:0], codecRaw)
		body = append(body, raw...)
	}

	k := f.Keys
	r := k.ring.Load()
	epoch := r.SealingEpoch(now, k.delay)
	start := len(dst)
	dst = growTo(dst, FrameOverhead-1+len(body))
	dst = append(dst, magic0, magic1, frameVersion)
	dst = binary.BigEndian.AppendUint32(dst, epoch)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(envs)))
	dst = append(dst, k.prefix[:]...)
	dst = binary.BigEndian.AppendUint64(dst, k.ctr.Add(1))
	return r.aeads[epoch].Seal(dst, dst[start+frameHeaderLen:start+frameHeaderLen+nonceLen], body, dst[start:start+frameHeaderLen])
}

func growTo(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	return append(b[:len(b):len(b)], make([]byte, n)...)[:len(b)]
}

// Opener opens the messages of the raw and dead-letter topics, an envelope
// or a frame, into their envelopes. It keeps the buffer a frame is
// decompressed into from one message to the next: what Open returns is
// valid until the next Open. It is not safe for concurrent use.
type Opener struct {
	Keys *Keys
	raw  []byte
}

// Envelopes are the envelopes of one opened message, read with Next.
type Envelopes struct {
	rest []byte
	n    int
	one  bool
}

// Len is the number of envelopes left.
func (e *Envelopes) Len() int { return e.n }

// Next returns the next envelope, or false when there is none left.
func (e *Envelopes) Next() ([]byte, bool) {
	if e.n == 0 {
		return nil, false
	}
	e.n--
	if e.one {
		return e.rest, true
	}
	l, h := binary.Uvarint(e.rest) // checked by Open
	env := e.rest[h : h+int(l) : h+int(l)]
	e.rest = e.rest[h+int(l):]
	return env, true
}

// Open opens the sealed message b in place (b is overwritten, even when
// the open fails) and returns its envelopes. Its errors are those of
// Keys.Open, with nothing of b in them; a frame whose contents do not
// match its header is ErrMalformed.
func (o *Opener) Open(b []byte) (Envelopes, error) {
	if len(b) >= 3 && IsSealed(b) && b[2] == version {
		env, err := o.Keys.OpenInPlace(b)
		return Envelopes{rest: env, n: 1, one: true}, err
	}
	if !IsSealed(b) {
		return Envelopes{}, ErrNotSealed
	}
	if len(b) < FrameOverhead || b[2] != frameVersion {
		return Envelopes{}, ErrMalformed
	}
	count := int(binary.BigEndian.Uint16(b[7:9]))
	aead, ok := o.Keys.ring.Load().aeads[binary.BigEndian.Uint32(b[3:7])]
	if !ok {
		return Envelopes{}, ErrUnknownEpoch
	}
	ct := b[frameHeaderLen+nonceLen:]
	body, err := aead.Open(ct[:0], b[frameHeaderLen:frameHeaderLen+nonceLen], ct, b[:frameHeaderLen])
	if err != nil {
		return Envelopes{}, ErrOpen
	}
	var raw []byte
	switch body[0] {
	case codecRaw:
		raw = body[1:]
	case codecLZ4:
		l, h := binary.Uvarint(body[1:])
		// A frame holds at least one envelope, so its raw form is never
		// empty (and the decompressor must not be handed an empty buffer).
		if h <= 0 || l == 0 || l > maxFrameRaw {
			return Envelopes{}, ErrMalformed
		}
		if uint64(cap(o.raw)) < l {
			o.raw = make([]byte, l)
		}
		raw = o.raw[:l]
		n, err := lz4.UncompressBlock(body[1+h:], raw)
		if err != nil || n != int(l) {
			return Envelopes{}, ErrMalformed
		}
	default:
		return Envelopes{}, ErrMalformed
	}
	// Every length is checked here, so that Next need not, and a frame
	// is refused whole before any of its envelopes is handled.
	rest, n := raw, 0
	for len(rest) > 0 {
		l, h := binary.Uvarint(rest)
		if h <= 0 || l > uint64(len(rest)-h) {
			return Envelopes{}, ErrMalformed
		}
		rest = rest[h+int(l):]
		n++
	}
	if n != count || n == 0 {
		return Envelopes{}, ErrMalformed
	}
	return Envelopes{rest: raw, n: n}, nil
}

// OpenAll opens a copy of the message b and returns copies of its
// envelopes, for tools and tests that read a topic.
func (k *Keys) OpenAll(b []byte) ([][]byte, error) {
	o := Opener{Keys: k}
	envs, err := o.Open(append([]byte(nil), b...))
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, envs.Len())
	for env, ok := envs.Next(); ok; env, ok = envs.Next() {
		out = append(out, append([]byte(nil), env...))
	}
	return out, nil
}
