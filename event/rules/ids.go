package rules

import "math"

// placeholderIDs are the values Mixpanel refuses as a distinct_id and as a
// $insert_id, because they are what a broken client sends when it has no
// id: a null stringified, a default UUID, a boolean. Mixpanel documents
// them for /import ("to prevent accidental implementation mistakes, we
// disallow the following values for distinct_id"; "we also disallow any
// value for $insert_id from the list of invalid IDs provided for
// distinct_id") and applies the same limits to /track. Veil compares them
// without regard to ASCII case, so that Python's None and a NULL from SQL
// count as what they are.
var placeholderIDs = [...]string{
	"00000000-0000-0000-0000-000000000000",
	"anon", "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", "<nil>",
	"0", "-1", "true", "false", "[]", "{}",
}

// placeholderLens has bit n set when a placeholder is n bytes long, so
// that most ids are cleared by one test.
var placeholderLens = func() (m uint64) {
	for _, p := range placeholderIDs {
		m |= 1 << len(p)
	}
	return m
}()

// IsPlaceholderID reports whether id is one of the values Mixpanel refuses
// as an id ("null", "undefined", "0", …), in any ASCII case.
func IsPlaceholderID[T string | []byte](id T) bool {
	if len(id) >= 64 || placeholderLens&(1<<len(id)) == 0 {
		return false
	}
	for _, p := range placeholderIDs {
		if len(p) == len(id) && equalFoldASCII(id, p) {
			return true
		}
	}
	return false
}

func equalFoldASCII[T string | []byte](a T, b string) bool {
	for i := 0; i < len(b); i++ {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != b[i] {
			return false
		}
	}
	return true
}

// InsertIDSyntax reports whether id has the form Mixpanel requires of a
// $insert_id: 1 to 36 characters of A-Z, a-z, 0-9 and -.
func InsertIDSyntax[T string | []byte](id T) bool {
	if len(id) == 0 || len(id) > 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !insertIDByte[id[i]] {
			return false
		}
	}
	return true
}

// insertIDByte marks the bytes a $insert_id may hold: one load per byte
// instead of four range tests (the worker checks every event's).
var insertIDByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
	}
	return t
}()

// ValidInsertID reports whether id may be a $insert_id: its syntax, and
// not a placeholder.
func ValidInsertID[T string | []byte](id T) bool {
	return InsertIDSyntax(id) && !IsPlaceholderID(id)
}

// InsertID checks a $insert_id's text.
func InsertID[T string | []byte](id T) *Violation {
	switch {
	case !InsertIDSyntax(id):
		return violation("properties.$insert_id", ReasonInvalidInsertID, "$insert_id must be 1 to 36 characters of A-Z, a-z, 0-9 and -")
	case IsPlaceholderID(id):
		return violation("properties.$insert_id", ReasonInvalidInsertID, "$insert_id is a placeholder value Mixpanel refuses (such as null, undefined or 0)")
	}
	return nil
}

// DistinctID checks a distinct_id (or a profile update's $distinct_id,
// named by field) as text: at most 255 bytes, and not a placeholder. The
// empty id, an event of no user, is valid.
func DistinctID[T string | []byte](field string, id T) *Violation {
	switch {
	case len(id) > MaxIDLen:
		return violation(field, ReasonInvalidID, "%s exceeds %d bytes", fieldName(field), MaxIDLen)
	case IsPlaceholderID(id):
		return violation(field, ReasonInvalidID, "%s is a placeholder value Mixpanel refuses (such as null, undefined or 0); use \"\" for events of no user", fieldName(field))
	}
	return nil
}

// fieldName is the last part of a field path.
func fieldName(field string) string {
	for i := len(field) - 1; i >= 0; i-- {
		if field[i] == '.' {
			return field[i+1:]
		}
	}
	return field
}

// EventName checks an event's name, as text: present, at most 255 bytes,
// no control character.
func EventName[T string | []byte](name T) *Violation {
	switch {
	case len(name) == 0:
		return violation("event", ReasonMissingEvent, "event name is missing")
	case len(name) > MaxNameLen:
		return violation("event", ReasonMalformed, "event name exceeds %d bytes", MaxNameLen)
	case !ValidName(name):
		return violation("event", ReasonInvalidName, "event name holds a control character")
	}
	return nil
}

// ValidName reports whether s, an event or property name as text, holds
// no control character (Unicode's Cc: U+0000–U+001F, U+007F–U+009F).
// Names become column values, keys of JSON objects and labels in every
// tool that reads them; a NUL or an escape sequence in one is a client's
// mistake, never a name.
func ValidName[T string | []byte](s T) bool {
	i := 0
	// Eight bytes at a time while none is below 0x20, DEL or 0xC2 (the
	// lead byte of U+0080–U+00BF): names are mostly plain ASCII. Borrows
	// only carry upward, so a word flagged holds such a byte at or after
	// its lowest flag, and the byte loop below decides.
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		d, c2 := x^(swarLo*0x7f), x^(swarLo*0xc2)
		if ((x-swarLo*0x20)&^x|(d-swarLo)&^d|(c2-swarLo)&^c2)&swarHi != 0 {
			break
		}
	}
	for ; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == 0xc2 && i+1 < len(s) && s[i+1] >= 0x80 && s[i+1] <= 0x9f {
			return false
		}
	}
	return true
}

// FiniteNumber reports whether a JSON number's text is a finite float64,
// which every JSON reader can hold: 1e999 is valid JSON syntax, but
// encoding/json refuses it and other readers make it infinity. Integers
// beyond ±2^53 are finite and kept exactly as sent.
func FiniteNumber[T string | []byte](t T) bool {
	if len(t) <= 300 {
		// Without an exponent, fewer than 309 digits cannot overflow.
		exp := false
		for i := 0; i < len(t); i++ {
			if t[i] == 'e' || t[i] == 'E' {
				exp = true
				break
			}
		}
		if !exp {
			return true
		}
	}
	return !math.IsInf(parseFloat(string(t)), 0)
}
