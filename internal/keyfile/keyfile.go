// Package keyfile reads and writes Veil's key files: the pseudonym keys
// (deidentify.pseudonym_key_file) and the sealing keys of the Kafka
// envelopes (seal.key_file) share one format and one set of rules.
//
//	# comment
//	EPOCH:BASE64KEY[:RFC3339]
//
// One key per line. EPOCH is a positive integer, unique in the file;
// BASE64KEY is standard base64 (padded or not) of at least the caller's
// minimum length; the optional third field is when the key was made.
// Blank lines and lines starting with '#' are ignored. The highest epoch
// is the newest key.
//
// No error of this package quotes a line of a key file: a malformed line
// may still be a key, or most of one.
package keyfile

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Key is one line of a key file.
type Key struct {
	Epoch   uint32
	Secret  []byte
	Created time.Time // zero when the line gives none
}

// Source says where a key file is: a file or an environment variable
// holding the file's text, exactly one. Setting is the configuration key
// both are set under, without the suffix: "deidentify.pseudonym_key"
// for deidentify.pseudonym_key_file and deidentify.pseudonym_key_env.
type Source struct {
	File    string
	Env     string
	Setting string
}

// Validate reports whether s names exactly one place.
func (s Source) Validate() error {
	switch {
	case s.File == "" && s.Env == "":
		return fmt.Errorf("%s_file or %s_env must be set", s.Setting, s.Setting)
	case s.File != "" && s.Env != "":
		return fmt.Errorf("%s_file and %s_env are both set; set one", s.Setting, s.Setting)
	}
	return nil
}

// Load reads the keys s names, each at least minLen bytes. Errors name the
// configuration key and the line, never a key.
func (s Source) Load(minLen int) ([]Key, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var data, where string
	if s.File != "" {
		where = s.Setting + "_file " + strconv.Quote(s.File)
		b, err := os.ReadFile(s.File)
		if err != nil {
			// The *PathError names the path and the cause, nothing read.
			return nil, fmt.Errorf("%s_file: %w", s.Setting, err)
		}
		data = string(b)
		clear(b)
	} else {
		where = s.Setting + "_env $" + s.Env
		v, ok := os.LookupEnv(s.Env)
		if !ok || strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("%s: the variable is not set or empty", where)
		}
		data = v
	}
	keys, err := Parse(data, minLen)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return keys, nil
}

// Parse reads the key file format. Its errors say which line and what is
// wrong with it, and never quote the line.
func Parse(data string, minLen int) ([]Key, error) {
	var keys []Key
	seen := make(map[uint32]int) // epoch → line
	for no, line := range strings.Split(data, "\n") {
		no++
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.SplitN(line, ":", 3)
		if len(fields) < 2 {
			return nil, fmt.Errorf("line %d: want EPOCH:BASE64KEY[:RFC3339]", no)
		}
		epoch, err := strconv.ParseUint(strings.TrimSpace(fields[0]), 10, 32)
		if err != nil || epoch == 0 {
			return nil, fmt.Errorf("line %d: the epoch must be an integer from 1 to %d", no, uint32(1<<32-1))
		}
		if first, dup := seen[uint32(epoch)]; dup {
			return nil, fmt.Errorf("line %d: epoch %d is already defined on line %d", no, epoch, first)
		}
		seen[uint32(epoch)] = no
		b64 := strings.TrimSpace(fields[1])
		secret, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			secret, err = base64.RawStdEncoding.DecodeString(b64)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: the key is not valid standard base64", no)
		}
		if len(secret) < minLen {
			return nil, fmt.Errorf("line %d: the key is %d bytes, want at least %d", no, len(secret), minLen)
		}
		var created time.Time
		if len(fields) == 3 {
			created, err = time.Parse(time.RFC3339, strings.TrimSpace(fields[2]))
			if err != nil {
				return nil, fmt.Errorf("line %d: the creation time is not RFC 3339", no)
			}
		}
		keys = append(keys, Key{Epoch: uint32(epoch), Secret: secret, Created: created})
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	return keys, nil
}

// Generate writes a new key file at path holding header (comment lines,
// each starting with '#') and one fresh random key of epoch 1 and size
// bytes, readable by its owner only (0600); the directory is made (0700)
// if missing. It never overwrites: if path exists it fails with an error
// matching fs.ErrExist. what names the key file in errors ("pseudonym").
func Generate(path, what, header string, size int) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("%s: create key directory: %w", what, err)
		}
	}
	secret := make([]byte, size)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("%s: generate key: %w", what, err)
	}
	content := header + "1:" + base64.StdEncoding.EncodeToString(secret) + ":" + time.Now().UTC().Format(time.RFC3339) + "\n"
	clear(secret)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%s: create key file: %w", what, err)
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("%s: write key file: %w", what, err)
	}
	return nil
}
