package spool

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/veilhq/veil/internal/kafkatest"
)

// BenchmarkHealthyWrite is the spool's cost on a request's way to a Kafka
// that takes every write: the spool empty, the write passed through with
// the deadline's context.
func BenchmarkHealthyWrite(b *testing.B) {
	msgs := request("a", 50)
	ctx := context.Background()
	b.Run("without spool", func(b *testing.B) {
		var p Producer = &kafkatest.Producer{Discard: true}
		b.ReportAllocs()
		for b.Loop() {
			_ = p.WriteMessages(ctx, msgs...)
		}
	})
	b.Run("with spool", func(b *testing.B) {
		cfg := DefaultConfig()
		cfg.Dir = filepath.Join(b.TempDir(), "spool")
		s, err := Open(cfg, &kafkatest.Producer{Discard: true}, 10*cfg.Deadline, Deps{})
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
	s, err := Open(cfg, &kafkatest.Producer{Discard: true}, 10*cfg.Deadline, Deps{})
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

// BenchmarkSpooled is the spool taking requests while Kafka is away: each
// 50-event request appended behind the spooled ones and fsync'd, from 16
// concurrent callers that share fsyncs.
func BenchmarkSpooled(b *testing.B) {
	msgs := request("a", 50)
	for i := range msgs {
		msgs[i].Value = append(msgs[i].Value, make([]byte, 300)...) // an envelope's size
	}
	f := newKafka()
	setKafka(f, true, false)
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(b.TempDir(), "spool")
	cfg.MaxBytes = 1 << 40
	s, err := Open(cfg, f, 10*cfg.Deadline, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	_ = s.WriteMessages(context.Background(), msgs...) // Kafka refuses: spooled, the rest queue behind
	b.SetParallelism(8)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.WriteMessages(context.Background(), msgs...); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
