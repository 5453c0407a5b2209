package seal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/keyfile"
)

// testKeys are keys of one epoch.
func testKeys(tb testing.TB) *Keys {
	tb.Helper()
	r, err := NewRing([]keyfile.Key{{Epoch: 1, Secret: bytes.Repeat([]byte{1}, 32)}})
	if err != nil {
		tb.Fatal(err)
	}
	k, err := FromRing(r, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// sealBody seals body as a frame of count envelopes, whatever body holds.
func sealBody(k *Keys, count uint16, body []byte) []byte {
	r := k.ring.Load()
	epoch := r.SealingEpoch(time.Now(), 0)
	dst := []byte{magic0, magic1, frameVersion}
	dst = binary.BigEndian.AppendUint32(dst, epoch)
	dst = binary.BigEndian.AppendUint16(dst, count)
	dst = append(dst, k.prefix[:]...)
	dst = binary.BigEndian.AppendUint64(dst, k.ctr.Add(1))
	return r.aeads[epoch].Seal(dst, dst[frameHeaderLen:frameHeaderLen+nonceLen], body, dst[:frameHeaderLen])
}

// TestOpenerRefusesMalformedFrames: a frame that opens but whose body does
// not hold what its header says (an unknown codec, a length past its end,
// more or fewer envelopes than counted, a decompressed length beyond the
// bound) is refused whole, before any envelope is read.
func TestOpenerRefusesMalformedFrames(t *testing.T) {
	k := testKeys(t)
	two := []byte{codecRaw, 1, 'a', 1, 'b'}
	huge := binary.AppendUvarint([]byte{codecLZ4}, maxFrameRaw+1)
	for _, tc := range []struct {
		name  string
		count uint16
		body  []byte
	}{
		{"unknown codec", 2, []byte{7, 1, 'a', 1, 'b'}},
		{"length past the end", 1, []byte{codecRaw, 9, 'a'}},
		{"fewer than counted", 3, two},
		{"more than counted", 1, two},
		{"none", 0, []byte{codecRaw}},
		{"declared length beyond the bound", 1, append(huge, 0, 0)},
		{"corrupt lz4 block", 1, []byte{codecLZ4, 5, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Opener{Keys: k}
			if _, err := o.Open(sealBody(k, tc.count, tc.body)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Open = %v, want ErrMalformed", err)
			}
			if cap(o.raw) > 1<<20 {
				t.Fatalf("the opener grew to %d bytes", cap(o.raw))
			}
		})
	}
	o := Opener{Keys: k}
	envs, err := o.Open(sealBody(k, 2, two))
	if err != nil || envs.Len() != 2 {
		t.Fatalf("Open = %d, %v", envs.Len(), err)
	}
}

// FuzzOpenFrame: whatever a frame's sealed body holds (the AEAD keeps
// anyone without the key from choosing it, but a collector's defect could),
// Open either refuses it whole or returns envelopes that lie within the
// body and number what its header says; it never panics or sizes memory
// past its bound.
func FuzzOpenFrame(f *testing.F) {
	k := testKeys(f)
	fr := Framer{Keys: k}
	good := fr.Seal(nil, [][]byte{[]byte(`{"a":1}`), []byte(`{"a":1}`), []byte(`{"b":2}`)}, time.Now())
	o := Opener{Keys: k}
	envs, err := o.Open(bytes.Clone(good))
	if err != nil || envs.Len() != 3 {
		f.Fatalf("Open = %d, %v", envs.Len(), err)
	}
	f.Add(uint16(2), []byte{codecRaw, 1, 'a', 1, 'b'})
	f.Add(uint16(1), []byte{codecLZ4, 5, 0x50, 'h', 'e', 'l', 'l', 'o'})
	f.Add(uint16(3), []byte{codecLZ4, 0xff, 0xff, 0xff, 0x1f, 0})
	f.Fuzz(func(t *testing.T, count uint16, body []byte) {
		o := Opener{Keys: k}
		envs, err := o.Open(sealBody(k, count, body))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Open = %v, want ErrMalformed", err)
			}
			return
		}
		if envs.Len() != int(count) || count == 0 {
			t.Fatalf("%d envelopes, header says %d", envs.Len(), count)
		}
		n := 0
		for _, ok := envs.Next(); ok; _, ok = envs.Next() {
			n++
		}
		if n != int(count) || cap(o.raw) > maxFrameRaw {
			t.Fatalf("read %d envelopes of %d; buffer %d", n, count, cap(o.raw))
		}
	})
}
