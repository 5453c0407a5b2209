// Package view is the one place Veil uses unsafe: a string that shares the
// memory of a byte slice, and the bytes of a string, without a copy.
//
// The lifetime rule, for every caller: a view is valid only while the
// memory under it is neither modified nor reused. Veil takes views in two
// places, and each keeps that rule by who owns the memory:
//
//   - the worker's event.Decoder reads an event's strings as views of the
//     Kafka message; the message is not modified, and the views are used
//     until the worker reads the next message, by which time the sink has
//     copied what it keeps (sink.Batch.Append);
//   - the sink's batch writes its rows' strings into chunks of memory it
//     reuses only after Batch.Reset, which the worker calls once the
//     batch's insert has returned (the ClickHouse client has copied every
//     value into its own buffers by then).
//
// A view of a string's bytes (Bytes) is only ever read.
package view

import "unsafe"

// String returns b's bytes as a string, without a copy.
func String(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Bytes returns s's bytes, without a copy; they must not be modified.
func Bytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
