package keyfile_test

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veilhq/veil/internal/keyfile"
)

func TestParse(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	raw := base64.RawStdEncoding.EncodeToString([]byte(strings.Repeat("r", 33)))
	for _, tc := range []struct {
		name, data string
		want       []uint32 // epochs, in file order
		err        string
	}{
		{"one", "1:" + key, []uint32{1}, ""},
		{"comments, blanks, unpadded, created", "# keys\n\n 2:" + raw + ":2026-12-01T00:00:00Z \n1:" + key + "\n", []uint32{2, 1}, ""},
		{"empty", "# nothing\n", nil, "no keys"},
		{"no colon", "1:" + key + "\n" + key, nil, "line 2: want EPOCH:BASE64KEY"},
		{"epoch zero", "0:" + key, nil, "line 1: the epoch must be an integer"},
		{"epoch twice", "3:" + key + "\n3:" + key, nil, "line 2: epoch 3 is already defined on line 1"},
		{"not base64", "1:" + key[:10] + "!", nil, "line 1: the key is not valid standard base64"},
		{"short", "1:" + base64.StdEncoding.EncodeToString([]byte("short")), nil, "line 1: the key is 5 bytes, want at least 32"},
		{"bad time", "1:" + key + ":yesterday", nil, "line 1: the creation time is not RFC 3339"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks, err := keyfile.Parse(tc.data, 32)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), key[:10]) {
					t.Fatalf("the error quotes the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []uint32
			for _, k := range ks {
				got = append(got, k.Epoch)
			}
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Fatalf("epochs %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSource(t *testing.T) {
	src := keyfile.Source{Setting: "seal.key"}
	if err := src.Validate(); err == nil || err.Error() != "seal.key_file or seal.key_env must be set" {
		t.Fatalf("neither: %v", err)
	}
	if err := (keyfile.Source{File: "f", Env: "E", Setting: "seal.key"}).Validate(); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Fatalf("both: %v", err)
	}
	t.Setenv("VEIL_TEST_KEYFILE", "7:"+base64.StdEncoding.EncodeToString(make([]byte, 32)))
	ks, err := keyfile.Source{Env: "VEIL_TEST_KEYFILE", Setting: "seal.key"}.Load(32)
	if err != nil || len(ks) != 1 || ks[0].Epoch != 7 {
		t.Fatalf("from the environment: %v, %v", ks, err)
	}
	_, err = keyfile.Source{File: filepath.Join(t.TempDir(), "missing"), Setting: "seal.key"}.Load(32)
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "seal.key_file: ") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestGenerate: a new key file is its owner's alone, loads, and is never
// overwritten.
func TestGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "seal.keys")
	before := time.Now().Add(-time.Second)
	if err := keyfile.Generate(path, "seal", "# a header\n", 32); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode().Perm(), err)
	}
	if dst, _ := os.Stat(filepath.Dir(path)); dst.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v", dst.Mode().Perm())
	}
	ks, err := keyfile.Source{File: path, Setting: "seal.key"}.Load(32)
	if err != nil || len(ks) != 1 || ks[0].Epoch != 1 || len(ks[0].Secret) != 32 || ks[0].Created.Before(before) {
		t.Fatalf("generated file loads as %+v, %v", ks, err)
	}
	if err := keyfile.Generate(path, "seal", "", 32); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Generate = %v, want fs.ErrExist", err)
	}
}
