package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestImage builds the image as `make image` does, into a temporary
// directory, and checks what a user of `docker load` / `podman load` and of
// the Helm chart relies on: both views of the archive hold the same valid
// image, its configuration runs /veil as the non-root user with the
// listeners' ports, its labels carry the version, its files are the
// binary, the CA bundle and no shell, and the binary inside says its
// version.
func TestImage(t *testing.T) {
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Fatalf("the image is linux/amd64 or arm64; the test runs its binary, so it needs such a machine, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	const (
		version  = "v1.2.3-test"
		revision = "0123456789abcdef0123456789abcdef01234567"
		tag      = "veil:v1.2.3-test"
	)
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	spec := Spec{Version: version, Revision: revision, Created: created, Arch: runtime.GOARCH, Dir: "../..", Package: "./cmd/veil"}
	dir := t.TempDir()
	archive := filepath.Join(dir, "veil-image.tar")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	digest, err := BuildToFile(ctx, spec, tag, archive)
	if err != nil {
		t.Fatal(err)
	}

	entries := tarEntries(t, archive)
	t.Run("archive holds the OCI layout and Docker's manifest", func(t *testing.T) {
		for _, want := range []string{"oci-layout", "index.json", "manifest.json", "blobs/sha256/" + digest.Hex} {
			if _, ok := entries[want]; !ok {
				t.Errorf("archive lacks %s; it has %v", want, keys(entries))
			}
		}
		var index v1.IndexManifest
		if err := json.Unmarshal(entries["index.json"], &index); err != nil {
			t.Fatal(err)
		}
		if len(index.Manifests) != 1 || index.Manifests[0].Digest != digest ||
			index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3-test" ||
			index.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/veil:v1.2.3-test" {
			t.Fatalf("index.json = %s", entries["index.json"])
		}
	})

	// Docker's view: manifest.json, as docker load reads it.
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	docker, err := tarball.ImageFromPath(archive, &ref)
	if err != nil {
		t.Fatal(err)
	}
	// The OCI view: index.json and the blobs, as podman load reads it.
	layoutDir := filepath.Join(dir, "layout")
	extractAll(t, archive, layoutDir)
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	oci, err := idx.Image(digest)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("both views are the same valid image", func(t *testing.T) {
		// Every blob is what its name says; both views share them.
		for name, body := range entries {
			if hex, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && hex != "" {
				if got := fmt.Sprintf("%x", sha256.Sum256(body)); got != hex {
					t.Errorf("%s holds a blob of digest %s", name, got)
				}
			}
		}
		// validate.Fast checks the structure; layer contents are checked
		// against the config's diff_ids below, decompressed once.
		for view, img := range map[string]v1.Image{"docker": docker, "oci": oci} {
			if err := validate.Image(img, validate.Fast); err != nil {
				t.Errorf("%s view: %v", view, err)
			}
		}
		dc, _ := docker.ConfigName()
		oc, _ := oci.ConfigName()
		if dc != oc {
			t.Fatalf("config %s in manifest.json, %s in index.json", dc, oc)
		}
	})

	cf, err := oci.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("config", func(t *testing.T) {
		c := cf.Config
		checks := []struct {
			what      string
			got, want any
		}{
			{"os/arch", cf.OS + "/" + cf.Architecture, "linux/" + runtime.GOARCH},
			{"entrypoint", c.Entrypoint, []string{"/veil"}},
			{"user", c.User, "65532:65532"},
			{"exposed ports", keys(c.ExposedPorts), []string{"8080/tcp", "9464/tcp"}},
			{"env", c.Env, []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}},
			{"version label", c.Labels["org.opencontainers.image.version"], version},
			{"revision label", c.Labels["org.opencontainers.image.revision"], revision},
			{"created label", c.Labels["org.opencontainers.image.created"], "2026-03-01T12:00:00Z"},
			{"created", cf.Created.UTC(), created},
		}
		for _, ch := range checks {
			g, _ := json.Marshal(ch.got)
			w, _ := json.Marshal(ch.want)
			if !bytes.Equal(g, w) {
				t.Errorf("%s = %s, want %s", ch.what, g, w)
			}
		}
	})

	files := rootFS(t, oci, cf)
	t.Run("files", func(t *testing.T) {
		bin, ok := files["veil"]
		if !ok || bin.hdr.Mode&0o777 != 0o755 || bin.hdr.Uid != 0 {
			t.Fatalf("/veil missing or not a root-owned executable: %+v", bin.hdr)
		}
		for _, shell := range []string{"bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"} {
			if _, ok := files[shell]; ok {
				t.Errorf("image has /%s; it should hold no shell", shell)
			}
		}
		pool := x509.NewCertPool()
		ca := files["etc/ssl/certs/ca-certificates.crt"]
		if !pool.AppendCertsFromPEM(ca.body) || strings.Count(string(ca.body), "BEGIN CERTIFICATE") < 100 {
			t.Fatalf("CA bundle missing or nearly empty (%d bytes)", len(ca.body))
		}
		if !strings.Contains(string(files["etc/passwd"].body), "nonroot:x:65532:65532:") {
			t.Fatalf("/etc/passwd has no nonroot user: %q", files["etc/passwd"].body)
		}
		if d := files["var/lib/veil"]; d.hdr == nil || d.hdr.Typeflag != tar.TypeDir || d.hdr.Mode&0o7777 != 0o700 || d.hdr.Uid != 65532 || d.hdr.Gid != 65532 {
			t.Fatalf("/var/lib/veil, where the spool's volume is mounted, missing or not the nonroot user's alone: %+v", d.hdr)
		}
		if tmp := files["tmp"]; tmp.hdr == nil || tmp.hdr.Typeflag != tar.TypeDir || tmp.hdr.Mode&0o7777 != 0o1777 {
			t.Fatalf("/tmp missing or not world-writable and sticky")
		}
	})

	t.Run("the binary is static and says its version", func(t *testing.T) {
		path := filepath.Join(dir, "veil")
		if err := os.WriteFile(path, files["veil"].body, 0o755); err != nil {
			t.Fatal(err)
		}
		ef, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		libs, _ := ef.ImportedLibraries()
		interp := slices.ContainsFunc(ef.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
		ef.Close()
		if interp || len(libs) > 0 {
			t.Fatalf("veil is dynamically linked (interpreter %v, libraries %v)", interp, libs)
		}
		out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("veil --version: %v: %s", err, out)
		}
		if want := "veil v1.2.3-test (revision " + revision + ")\n"; string(out) != want {
			t.Fatalf("veil --version printed %q, want %q", out, want)
		}
	})

	t.Run("the same sources give the same archive", func(t *testing.T) {
		img, err := Image(spec, files["veil"].body)
		if err != nil {
			t.Fatal(err)
		}
		var again bytes.Buffer
		if err := WriteArchive(&again, img, tag, created); err != nil {
			t.Fatal(err)
		}
		first, err := os.ReadFile(archive)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, again.Bytes()) {
			t.Fatal("a second build of the same binary gives another archive")
		}
	})
}

func TestSpecRejects(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"no version", Spec{Revision: "r", Arch: "amd64"}, "-version must be set"},
		{"no revision", Spec{Version: "v", Arch: "amd64"}, "-revision must be set"},
		{"unknown arch", Spec{Version: "v", Revision: "r", Arch: "mips"}, "-arch must be amd64 or arm64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.spec.validate(); err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("bad tag", func(t *testing.T) {
		img, err := Image(Spec{Version: "v", Revision: "r", Arch: "amd64"}, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteArchive(io.Discard, img, "veil:bad tag", time.Time{}); err == nil || !strings.HasPrefix(err.Error(), "-tag: ") {
			t.Fatalf("error %v, want a -tag error", err)
		}
	})
}

type entry struct {
	hdr  *tar.Header
	body []byte
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func readTar(t *testing.T, r io.Reader, each func(*tar.Header, []byte)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		each(h, body)
	}
}

func tarEntries(t *testing.T, path string) map[string][]byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]byte{}
	readTar(t, f, func(h *tar.Header, b []byte) { m[h.Name] = b })
	return m
}

func extractAll(t *testing.T, path, dir string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	readTar(t, f, func(h *tar.Header, b []byte) {
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

// rootFS is the image's root filesystem, as a container sees it (Veil's
// layers add files and never remove any), after checking that each layer
// is what the config's diff_ids say.
func rootFS(t *testing.T, img v1.Image, cf *v1.ConfigFile) map[string]entry {
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		t.Fatalf("%d layers, %d diff_ids", len(layers), len(cf.RootFS.DiffIDs))
	}
	m := map[string]entry{}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		readTar(t, io.TeeReader(rc, h), func(hdr *tar.Header, b []byte) { m[strings.TrimSuffix(hdr.Name, "/")] = entry{hdr, b} })
		_, _ = io.Copy(h, rc) // the tar's end-of-archive padding
		rc.Close()
		if got := fmt.Sprintf("sha256:%x", h.Sum(nil)); got != cf.RootFS.DiffIDs[i].String() {
			t.Fatalf("layer %d has diff_id %s, config says %s", i, got, cf.RootFS.DiffIDs[i])
		}
	}
	return m
}
