package bench

import (
	"testing"
	"time"

	"github.com/veilhq/veil/deidentify/pseudonym"
)

func BenchmarkPseudonymize(b *testing.B) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	kr, err := pseudonym.NewKeyring(map[uint32][]byte{1: key})
	if err != nil {
		b.Fatal(err)
	}
	daily, err := kr.WithConfig(pseudonym.Config{Rotate: pseudonym.RotateDaily})
	if err != nil {
		b.Fatal(err)
	}
	const project, id = "d41d8cd98f00b204e9800998ecf8427e", "$device:18c5b1f2e3d4a5-0b1c2d3e4f5a6b-26021051-1fa400-18c5b1f2e3d4a5"
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	b.Run("current_key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			kr.Pseudonymize(project, id)
		}
	})
	b.Run("daily_rotation", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			daily.PseudonymizeAt(project, id, at)
		}
	})
	b.Run("current_key_parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				kr.Pseudonymize(project, id)
			}
		})
	})
}
