package pseudonym

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

// Source says where the keys are: a file or an environment variable,
// exactly one. Both hold the key file format:
//
//	# comment
//	EPOCH:BASE64KEY[:RFC3339]
//
// one key per line; EPOCH is a positive integer, unique; BASE64KEY is
// standard base64 (padded or not) of at least MinKeyLen bytes; the optional
// third field is when the key was made, for the key-age metric. Blank
// lines and lines starting with '#' are ignored. The highest epoch is the
// current key.
type Source struct {
	File string // path of the key file (deidentify.pseudonym_key_file)
	Env  string // name of the environment variable (deidentify.pseudonym_key_env)
}

// Validate reports whether s names exactly one place.
func (s Source) Validate() error {
	switch {
	case s.File == "" && s.Env == "":
		return errors.New("deidentify.pseudonym_key_file or deidentify.pseudonym_key_env must be set")
	case s.File != "" && s.Env != "":
		return errors.New("deidentify.pseudonym_key_file and deidentify.pseudonym_key_env are both set; set one")
	}
	return nil
}

// LoadKeyring reads the keys src names. Errors name the configuration key
// and the line, never a key.
func LoadKeyring(src Source) (*Keyring, error) {
	if err := src.Validate(); err != nil {
		return nil, err
	}
	var data, where string
	if src.File != "" {
		where = "deidentify.pseudonym_key_file " + strconv.Quote(src.File)
		b, err := os.ReadFile(src.File)
		if err != nil {
			// The *PathError names the path and the cause, nothing read.
			return nil, fmt.Errorf("deidentify.pseudonym_key_file: %w", err)
		}
		data = string(b)
	} else {
		where = "deidentify.pseudonym_key_env $" + src.Env
		v, ok := os.LookupEnv(src.Env)
		if !ok || strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("%s: the variable is not set or empty", where)
		}
		data = v
	}
	keys, err := parseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return newKeyring(keys)
}

// parseKeys reads the key file format. Its errors say which line and what
// is wrong with it, and never quote the line: a malformed line may still be
// a key, or most of one.
func parseKeys(data string) ([]*key, error) {
	var keys []*key
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
		if len(secret) < MinKeyLen {
			return nil, fmt.Errorf("line %d: the key is %d bytes, want at least %d", no, len(secret), MinKeyLen)
		}
		var created time.Time
		if len(fields) == 3 {
			created, err = time.Parse(time.RFC3339, strings.TrimSpace(fields[2]))
			if err != nil {
				return nil, fmt.Errorf("line %d: the creation time is not RFC 3339", no)
			}
		}
		keys = append(keys, newKey(uint32(epoch), secret, created))
		clear(secret)
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	return keys, nil
}

// GenerateKeyFile writes a new key file at path holding one fresh random
// key of epoch 1, readable by its owner only (0600); the directory is made
// (0700) if missing. It never overwrites: if path exists it fails with an
// error matching fs.ErrExist. Dev mode calls it on first run.
func GenerateKeyFile(path string) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("pseudonym: create key directory: %w", err)
		}
	}
	secret := make([]byte, MinKeyLen)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("pseudonym: generate key: %w", err)
	}
	content := "# Veil pseudonym keys: EPOCH:BASE64KEY:CREATED. Add a line with a higher\n" +
		"# epoch to rotate; keep old lines so old rows can still be found.\n" +
		"1:" + base64.StdEncoding.EncodeToString(secret) + ":" + time.Now().UTC().Format(time.RFC3339) + "\n"
	clear(secret)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("pseudonym: create key file: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("pseudonym: write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("pseudonym: write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("pseudonym: write key file: %w", err)
	}
	return nil
}
