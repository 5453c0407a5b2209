package seal

import (
	"bytes"
	"context"
	"errors"
	"runtime"
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

// Producer seals the messages it is given and replaces their key by the
// key's routing hash before handing them to Next. The messages of one
// WriteMessages call (one request's) that share a key are sealed together,
// compressed, as frames of up to FrameBytes, in the order they came (see
// Framer). It keeps nothing of the caller's messages once WriteMessages
// returns.
type Producer struct {
	Keys *Keys
	Next kafkax.MessageWriter

	pool sync.Pool // *sealed

	// framers are the frame sealers not in use. Each holds an LZ4 hash
	// table of 136 KiB, which a sync.Pool would drop at every garbage
	// collection and the next request would allocate and clear again: a
	// free list of its own keeps them, as many as calls ran at once.
	once    sync.Once
	framers chan *Framer
}

// sealed is one WriteMessages call's memory, reused when Next releases
// what it is given.
type sealed struct {
	framer *Framer
	buf    []byte
	msgs   []kafka.Message
	envs   [][]byte
	// The messages of each key, in order: groups in the order of their
	// first message, and next[i] the index of the message after i with
	// the same key (-1 after the last).
	groups []group
	next   []int32
	index  map[string]int32 // key → group, once there are many
}

type group struct {
	key         []byte
	first, last int32
}

// manyKeys is the number of keys past which a request's keys are found
// through a map rather than by comparing each.
const manyKeys = 8

// ReleasesMessages says the caller's messages may be reused once
// WriteMessages has returned: they were copied, sealed.
func (p *Producer) ReleasesMessages() bool { return true }

// WriteMessages seals msgs, frame by frame, and writes the frames to Next.
func (p *Producer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	s, _ := p.pool.Get().(*sealed)
	if s == nil {
		s = &sealed{}
	}
	p.once.Do(func() { p.framers = make(chan *Framer, 4*runtime.GOMAXPROCS(0)) })
	select {
	case s.framer = <-p.framers:
	default:
		s.framer = &Framer{Keys: p.Keys}
	}
	s.group(msgs)
	size := 0
	for i := range msgs {
		size += len(msgs[i].Value)
	}
	buf := slices.Grow(s.buf[:0], size/2+len(s.groups)*(FrameOverhead+RouteSize))
	out := s.msgs[:0]
	now := time.Now()
	for _, g := range s.groups {
		from := len(buf)
		buf = p.Keys.Route(buf, g.key)
		route := buf[from:len(buf):len(buf)]
		envs, bytes := s.envs[:0], 0
		for i := g.first; i >= 0; i = s.next[i] {
			v := msgs[i].Value
			if len(envs) > 0 && (bytes+len(v) > FrameBytes || len(envs) == MaxFrameEnvelopes) {
				buf, out = s.frame(buf, out, msgs[g.first], route, envs, now)
				envs, bytes = envs[:0], 0
			}
			envs = append(envs, v)
			bytes += len(v)
		}
		buf, out = s.frame(buf, out, msgs[g.first], route, envs, now)
		clear(envs)
		s.envs = envs[:0]
	}
	select {
	case p.framers <- s.framer:
	default:
	}
	s.framer = nil
	err := p.Next.WriteMessages(ctx, out...)
	if err == nil && kafkax.ReleasesMessages(p.Next) {
		clear(out)
		s.buf, s.msgs = buf, out[:0]
		// Nothing of the request's keys (its users) is kept.
		clear(s.groups)
		s.groups = s.groups[:0]
		clear(s.index)
		p.pool.Put(s)
	}
	return err
}

// frame appends the frame of envs to buf and its message, like first with
// the key route, to out.
func (s *sealed) frame(buf []byte, out []kafka.Message, first kafka.Message, route []byte, envs [][]byte, now time.Time) ([]byte, []kafka.Message) {
	from := len(buf)
	buf = s.framer.Seal(buf, envs, now)
	first.Key, first.Value = route, buf[from:len(buf):len(buf)]
	return buf, append(out, first)
}

// group sorts msgs by key into s.groups and s.next.
func (s *sealed) group(msgs []kafka.Message) {
	s.groups = s.groups[:0]
	s.next = slices.Grow(s.next[:0], len(msgs))[:len(msgs)]
	clear(s.index)
	last := -1 // the group of the message before
	for i := range msgs {
		key := msgs[i].Key
		g := -1
		switch {
		case last >= 0 && bytes.Equal(s.groups[last].key, key):
			// One request's events mostly share their user, so their key.
			g = last
		case len(s.groups) < manyKeys:
			for j := range s.groups {
				if bytes.Equal(s.groups[j].key, key) {
					g = j
					break
				}
			}
		default:
			if s.index == nil {
				s.index = make(map[string]int32)
			}
			if len(s.index) == 0 {
				for j := range s.groups {
					s.index[string(s.groups[j].key)] = int32(j)
				}
			}
			if j, ok := s.index[string(key)]; ok {
				g = int(j)
			}
		}
		s.next[i] = -1
		if g < 0 {
			g = len(s.groups)
			s.groups = append(s.groups, group{key: key, first: int32(i), last: int32(i)})
			if len(s.index) > 0 {
				s.index[string(key)] = int32(g)
			}
		} else {
			s.next[s.groups[g].last] = int32(i)
			s.groups[g].last = int32(i)
		}
		last = g
	}
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
