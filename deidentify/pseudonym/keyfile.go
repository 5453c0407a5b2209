package pseudonym

import (
	"github.com/veilhq/veil/internal/keyfile"
)

// Source says where the keys are: a file or an environment variable,
// exactly one, in the key file format of internal/keyfile (EPOCH:BASE64KEY
// with an optional creation time, for the key-age metric, one key a line,
// each at least MinKeyLen bytes). The highest epoch is the current key.
type Source struct {
	File string // path of the key file (deidentify.pseudonym_key_file)
	Env  string // name of the environment variable (deidentify.pseudonym_key_env)
}

func (s Source) keyfile() keyfile.Source {
	return keyfile.Source{File: s.File, Env: s.Env, Setting: "deidentify.pseudonym_key"}
}

// Validate reports whether s names exactly one place.
func (s Source) Validate() error { return s.keyfile().Validate() }

// LoadKeyring reads the keys src names. Errors name the configuration key
// and the line, never a key.
func LoadKeyring(src Source) (*Keyring, error) {
	ks, err := src.keyfile().Load(MinKeyLen)
	if err != nil {
		return nil, err
	}
	keys := make([]*key, 0, len(ks))
	for _, k := range ks {
		keys = append(keys, newKey(k.Epoch, k.Secret, k.Created))
		clear(k.Secret)
	}
	return newKeyring(keys)
}

// GenerateKeyFile writes a new key file at path holding one fresh random
// key of epoch 1, readable by its owner only (0600); the directory is made
// (0700) if missing. It never overwrites: if path exists it fails with an
// error matching fs.ErrExist. Dev mode calls it on first run.
func GenerateKeyFile(path string) error {
	return keyfile.Generate(path, "pseudonym",
		"# Veil pseudonym keys: EPOCH:BASE64KEY:CREATED. Add a line with a higher\n"+
			"# epoch to rotate; keep old lines so old rows can still be found.\n", MinKeyLen)
}
