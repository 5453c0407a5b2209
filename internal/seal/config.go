package seal

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/veilhq/veil/internal/kafkax"
	"github.com/veilhq/veil/internal/keyfile"
)

// Config is the seal section of Veil's configuration: where the sealing
// keys are, shared by every collector and worker. Sealing is on when a key
// file or variable is set.
type Config struct {
	// KeyFile or KeyEnv (one of them) holds the keys in the key file
	// format (internal/keyfile), each at least 32 bytes. Never in this
	// file.
	KeyFile string `yaml:"key_file"`
	KeyEnv  string `yaml:"key_env"`
	// Reload is how often the key file is read again, so that a key added
	// to it is used without a restart.
	Reload time.Duration `yaml:"reload"`
	// ActivationDelay is how long after its creation time a key starts to
	// seal: every worker must have read it (within Reload) before any
	// collector seals with it, or their messages would not open.
	ActivationDelay time.Duration `yaml:"activation_delay"`
	// AcceptPlain lets a worker with keys take envelopes that are not
	// sealed, while collectors are being given keys. Off, such a message is
	// dead-lettered (sealed) with the reason "unsealed".
	AcceptPlain bool `yaml:"accept_plain"`
}

// DefaultConfig returns the defaults: sealing off until keys are given,
// the key file re-read every 10 s, a new key sealing a minute after it was
// made.
func DefaultConfig() Config {
	return Config{Reload: 10 * time.Second, ActivationDelay: time.Minute}
}

// Enabled reports whether keys are configured.
func (c Config) Enabled() bool { return c.KeyFile != "" || c.KeyEnv != "" }

// Source is where the keys are.
func (c Config) Source() keyfile.Source {
	return keyfile.Source{File: c.KeyFile, Env: c.KeyEnv, Setting: "seal.key"}
}

// Validate reports the first setting that is wrong, naming its key.
func (c Config) Validate() error {
	if c.KeyFile != "" && c.KeyEnv != "" {
		return errors.New("seal.key_file and seal.key_env are both set; set one")
	}
	switch {
	case c.Reload <= 0:
		return errors.New("seal.reload must be positive")
	case c.ActivationDelay < 0:
		return errors.New("seal.activation_delay must not be negative")
	case c.Enabled() && c.ActivationDelay < c.Reload:
		return errors.New("seal.activation_delay must be at least seal.reload, so that every worker reads a new key before it seals")
	}
	return nil
}

// Watch reloads the keys every cfg.Reload until ctx ends, logging each
// change of epochs and each key file that does not read, never a key.
func (k *Keys) Watch(ctx context.Context, every time.Duration, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := k.Reload()
		switch {
		case err != nil:
			log.Error("seal keys not reloaded; keeping the keys read before", zap.Error(err))
		case changed:
			log.Info("seal keys reloaded", zap.Uint32s("epochs", k.Ring().Epochs()))
		}
	}
}

// Producer seals every message it is given and replaces its key by the
// key's routing hash before handing it to Next. It keeps nothing of the
// caller's messages once WriteMessages returns.
type Producer struct {
	Keys *Keys
	Next kafkax.MessageWriter

	pool sync.Pool // *sealed, when Next releases what it is given
}

type sealed struct {
	buf  []byte
	msgs []kafka.Message
}

// ReleasesMessages says the caller's messages may be reused once
// WriteMessages has returned: they were copied, sealed.
func (p *Producer) ReleasesMessages() bool { return true }

// WriteMessages seals msgs and writes them to Next.
func (p *Producer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	s, _ := p.pool.Get().(*sealed)
	if s == nil {
		s = &sealed{}
	}
	size := 0
	for i := range msgs {
		size += len(msgs[i].Value) + Overhead + RouteSize
	}
	buf := slices.Grow(s.buf[:0], size)
	out := s.msgs[:0]
	now := time.Now()
	var lastKey, lastRoute []byte
	for i := range msgs {
		m := msgs[i]
		// One request's events mostly share their user, so their key.
		if lastRoute == nil || !bytes.Equal(m.Key, lastKey) {
			from := len(buf)
			buf = p.Keys.Route(buf, m.Key)
			lastKey, lastRoute = m.Key, buf[from:len(buf):len(buf)]
		}
		from := len(buf)
		buf = p.Keys.Seal(buf, m.Value, now)
		m.Key, m.Value = lastRoute, buf[from:len(buf):len(buf)]
		out = append(out, m)
	}
	err := p.Next.WriteMessages(ctx, out...)
	if err == nil && kafkax.ReleasesMessages(p.Next) {
		clear(out)
		s.buf, s.msgs = buf, out[:0]
		p.pool.Put(s)
	}
	return err
}

// GenerateKeyFile writes a new seal key file at path with one fresh key of
// epoch 1, readable by its owner only; it never overwrites (`veil dev`
// calls it on the first run).
func GenerateKeyFile(path string) error {
	return keyfile.Generate(path, "seal",
		"# Veil seal keys: EPOCH:BASE64KEY:CREATED. Every collector and worker needs\n"+
			"# the same file. Add a line with a higher epoch to rotate (it seals after\n"+
			"# seal.activation_delay); keep old lines while Kafka holds their messages.\n", MinKeyLen)
}
