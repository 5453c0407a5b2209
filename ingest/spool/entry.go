package spool

import (
	"encoding/binary"
	"errors"

	"github.com/segmentio/kafka-go"

	"github.com/veilhq/veil/internal/seal"
)

// An entry is one request's messages, kept together so that they are
// replayed together and in their order:
//
//	version (1 byte, entryVersion)
//	spooled at, Unix milliseconds (uvarint)
//	message count (uvarint)
//	per message: key length (uvarint), key, value length (uvarint), value
//
// The values are the envelopes exactly as the collector made them for
// Kafka: the raw topic and the spool hold the same bytes.
const entryVersion = 1

var errBadEntry = errors.New("spool: malformed entry")

// entrySize is the encoded size of msgs.
func entrySize(msgs []kafka.Message) int {
	n := 1 + binary.MaxVarintLen64 + binary.MaxVarintLen64
	for i := range msgs {
		n += 2*binary.MaxVarintLen64 + len(msgs[i].Key) + len(msgs[i].Value)
	}
	return n
}

// eventsOf is the number of events msgs hold: a sealed frame holds several
// (seal.Count), any other message one.
func eventsOf(msgs []kafka.Message) int64 {
	var n int64
	for i := range msgs {
		n += int64(seal.Count(msgs[i].Value))
	}
	return n
}

// entryEvents is the number of events of the entry b, for the figures: its
// messages' events, or, when it cannot be read, the messages its head
// counts (0 when that cannot be read either).
func entryEvents(b []byte) int64 {
	msgs, _, err := decodeEntry(nil, b)
	if err == nil {
		return eventsOf(msgs)
	}
	if _, count, _, err := entryHead(b); err == nil {
		return int64(count)
	}
	return 0
}

// appendEntry appends the encoding of msgs, spooled at ms, to dst.
func appendEntry(dst []byte, ms int64, msgs []kafka.Message) []byte {
	dst = append(dst, entryVersion)
	dst = binary.AppendUvarint(dst, uint64(ms))
	dst = binary.AppendUvarint(dst, uint64(len(msgs)))
	for i := range msgs {
		dst = binary.AppendUvarint(dst, uint64(len(msgs[i].Key)))
		dst = append(dst, msgs[i].Key...)
		dst = binary.AppendUvarint(dst, uint64(len(msgs[i].Value)))
		dst = append(dst, msgs[i].Value...)
	}
	return dst
}

// entryHead reads an entry's spooled time and message count.
func entryHead(b []byte) (ms int64, count int, rest []byte, err error) {
	if len(b) == 0 || b[0] != entryVersion {
		return 0, 0, nil, errBadEntry
	}
	b = b[1:]
	t, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, nil, errBadEntry
	}
	b = b[n:]
	c, n := binary.Uvarint(b)
	if n <= 0 || c > uint64(len(b)) { // each message takes at least two bytes
		return 0, 0, nil, errBadEntry
	}
	return int64(t), int(c), b[n:], nil
}

// decodeEntry appends an entry's messages to dst; their keys and values
// point into b.
func decodeEntry(dst []kafka.Message, b []byte) ([]kafka.Message, int64, error) {
	ms, count, b, err := entryHead(b)
	if err != nil {
		return dst, 0, err
	}
	field := func() ([]byte, bool) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return nil, false
		}
		f := b[n : n+int(l) : n+int(l)]
		b = b[n+int(l):]
		return f, true
	}
	for range count {
		k, ok := field()
		if !ok {
			return dst, 0, errBadEntry
		}
		v, ok := field()
		if !ok {
			return dst, 0, errBadEntry
		}
		if len(k) == 0 {
			k = nil
		}
		dst = append(dst, kafka.Message{Key: k, Value: v})
	}
	if len(b) != 0 {
		return dst, 0, errBadEntry
	}
	return dst, ms, nil
}
