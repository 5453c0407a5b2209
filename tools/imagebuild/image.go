package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// The image's fixed shape. The ports are the defaults of collector.listen
// and admin.listen; the user is distroless' "nonroot".
const (
	binaryPath = "/veil"
	caBundle   = "/etc/ssl/certs/ca-certificates.crt"
	uid        = 65532
	userSpec   = "65532:65532"
)

var exposedPorts = []string{"8080/tcp", "9464/tcp"}

// Spec says which image to build.
type Spec struct {
	Version  string    // git describe
	Revision string    // git commit
	Created  time.Time // the commit's time, so a rebuild is byte-for-byte the same
	Arch     string    // GOARCH
	Dir      string    // module root
	Package  string    // the veil package, relative to Dir
}

func (s Spec) validate() error {
	switch {
	case s.Version == "":
		return errors.New("-version must be set")
	case s.Revision == "":
		return errors.New("-revision must be set")
	case s.Arch != "amd64" && s.Arch != "arm64":
		return errors.New("-arch must be amd64 or arm64")
	}
	return nil
}

// BuildToFile compiles veil, builds the image and writes its archive to
// out; it returns the image's manifest digest.
func BuildToFile(ctx context.Context, s Spec, tag, out string) (v1.Hash, error) {
	if err := s.validate(); err != nil {
		return v1.Hash{}, err
	}
	tmp, err := os.MkdirTemp("", "veil-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "veil")
	if err := CompileVeil(ctx, s, bin); err != nil {
		return v1.Hash{}, err
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := Image(s, binary)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return v1.Hash{}, err
	}
	f, err := os.Create(out)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := WriteArchive(f, img, tag, s.Created); err != nil {
		f.Close()
		return v1.Hash{}, err
	}
	if err := f.Close(); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// CompileVeil builds a static veil for linux/s.Arch with the version
// stamped in, as `veil --version` prints it.
func CompileVeil(ctx context.Context, s Spec, out string) error {
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.revision=%s", s.Version, s.Revision)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, s.Package)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+s.Arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", s.Package, err)
	}
	return nil
}

// Image assembles the image: a base layer (CA certificates, passwd, /tmp,
// /var/lib/veil)
// that changes only with the certificates, and a layer with the binary.
func Image(s Spec, binary []byte) (v1.Image, error) {
	base, err := layer(baseFiles(s.Created))
	if err != nil {
		return nil, err
	}
	app, err := layer([]file{{name: strings.TrimPrefix(binaryPath, "/"), mode: 0o755, body: binary, mtime: s.Created}})
	if err != nil {
		return nil, err
	}
	ports := map[string]struct{}{}
	for _, p := range exposedPorts {
		ports[p] = struct{}{}
	}
	cfg := &v1.ConfigFile{
		Architecture: s.Arch,
		OS:           "linux",
		Created:      v1.Time{Time: s.Created},
		Config: v1.Config{
			Entrypoint:   []string{binaryPath},
			Cmd:          []string{"--help"},
			User:         userSpec,
			WorkingDir:   "/",
			Env:          []string{"SSL_CERT_FILE=" + caBundle},
			ExposedPorts: ports,
			Labels: map[string]string{
				"org.opencontainers.image.title":       "veil",
				"org.opencontainers.image.description": "Privacy-first event ingestion: Mixpanel's API in, de-identified ClickHouse tables out.",
				"org.opencontainers.image.version":     s.Version,
				"org.opencontainers.image.revision":    s.Revision,
				"org.opencontainers.image.created":     s.Created.Format(time.RFC3339),
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: v1.Time{Time: s.Created}, CreatedBy: "imagebuild: CA certificates, passwd, /tmp"}},
		mutate.Addendum{Layer: app, History: v1.History{Created: v1.Time{Time: s.Created}, CreatedBy: "imagebuild: veil " + s.Version}},
	)
}

type file struct {
	name  string // without the leading slash
	dir   bool
	mode  int64
	uid   int
	body  []byte
	mtime time.Time
}

func baseFiles(mtime time.Time) []file {
	dir := func(name string, mode int64, uid int) file {
		return file{name: name, dir: true, mode: mode, uid: uid, mtime: mtime}
	}
	reg := func(name string, body []byte) file { return file{name: name, mode: 0o644, body: body, mtime: mtime} }
	return []file{
		dir("etc", 0o755, 0),
		reg("etc/passwd", fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, uid)),
		reg("etc/group", fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", uid)),
		reg("etc/nsswitch.conf", []byte("hosts: files dns\n")),
		dir("etc/ssl", 0o755, 0),
		dir("etc/ssl/certs", 0o755, 0),
		reg(strings.TrimPrefix(caBundle, "/"), caCertificates()),
		dir("home", 0o755, 0),
		dir("home/nonroot", 0o700, uid),
		dir("tmp", 0o1777, 0),
		// The collector's spool goes on a volume mounted here; a new
		// volume takes the directory's owner and mode from the image, so
		// that the collector, not root, owns it.
		dir("var", 0o755, 0),
		dir("var/lib", 0o755, 0),
		dir("var/lib/veil", 0o700, uid),
	}
}

// caCertificates is the Mozilla NSS root store as golang.org/x/crypto
// ships it (the source Debian's ca-certificates is made from), pinned by
// go.mod, so the image does not depend on the machine that builds it.
// Roots that NSS trusts only for certificates issued before a date are
// left out: a PEM bundle cannot carry that limit.
func caCertificates() []byte {
	var b bytes.Buffer
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate})
	}
	return b.Bytes()
}

// layer writes files into a gzip-compressed OCI layer with fixed times and
// owners, so that the same input gives the same digest.
func layer(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: f.mtime, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}
