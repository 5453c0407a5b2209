package spool

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/segmentio/kafka-go"
)

type nopProducer struct{}

func (nopProducer) WriteMessages(context.Context, ...kafka.Message) error { return nil }

// BenchmarkHealthyWrite is the spool's cost on a request's way to a Kafka
// that takes every write: the spool empty, the write passed through with
// the deadline's context.
func BenchmarkHealthyWrite(b *testing.B) {
	msgs := request("a", 50)
	ctx := context.Background()
	b.Run("without spool", func(b *testing.B) {
		var p Producer = nopProducer{}
		b.ReportAllocs()
		for b.Loop() {
			_ = p.WriteMessages(ctx, msgs...)
		}
	})
	b.Run("with spool", func(b *testing.B) {
		cfg := DefaultConfig()
		cfg.Dir = filepath.Join(b.TempDir(), "spool")
		s, err := Open(cfg, nopProducer{}, 10*cfg.Deadline, Deps{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.ReportAllocs()
		for b.Loop() {
			if err := s.WriteMessages(ctx, msgs...); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHealthyWriteSharedDeadline is BenchmarkHealthyWrite/with_spool
// with the deadline already in the caller's context, as the collector
// passes it.
func BenchmarkHealthyWriteSharedDeadline(b *testing.B) {
	msgs := request("a", 50)
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(b.TempDir(), "spool")
	s, err := Open(cfg, nopProducer{}, 10*cfg.Deadline, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Deadline)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.WriteMessages(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
	}
}
