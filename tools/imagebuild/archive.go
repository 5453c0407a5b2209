package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// WriteArchive writes img as the archive `docker save` writes since Docker
// 25: an OCI image layout (oci-layout, index.json, blobs/sha256/…) that
// also carries Docker's manifest.json pointing at the same blobs. `podman
// load` reads it as an OCI archive, `docker load` of any version since 1.10
// reads manifest.json, and registries' tools (skopeo, crane, oras) read
// either. go-containerregistry's tarball.Write alone writes only the Docker
// half and layout.Write only a directory; each blob is stored once here.
func WriteArchive(w io.Writer, img v1.Image, tag string, mtime time.Time) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("-tag: %w", err)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	configName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	put := func(name string, body []byte) error {
		h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	layerPaths := make([]string, len(layers))
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		body, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		layerPaths[i] = blob(d)
		if err := put(layerPaths[i], body); err != nil {
			return err
		}
	}
	if err := put(blob(configName), config); err != nil {
		return err
	}
	if err := put(blob(digest), manifest); err != nil {
		return err
	}

	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIManifestSchema1,
			Digest:    digest,
			Size:      int64(len(manifest)),
			Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
			Annotations: map[string]string{
				// containerd's and Docker's name for the image, and the
				// OCI layout's (podman's) tag.
				"io.containerd.image.name":          containerdName(ref),
				"org.opencontainers.image.ref.name": ref.TagStr(),
			},
		}},
	}
	dockerManifest := tarball.Manifest{{Config: blob(configName), RepoTags: []string{ref.String()}, Layers: layerPaths}}
	for _, f := range []struct {
		name string
		v    any
	}{{"index.json", index}, {"manifest.json", dockerManifest}, {"oci-layout", map[string]string{"imageLayoutVersion": "1.0.0"}}} {
		var b bytes.Buffer
		if err := json.NewEncoder(&b).Encode(f.v); err != nil {
			return err
		}
		if err := put(f.name, bytes.TrimSuffix(b.Bytes(), []byte("\n"))); err != nil {
			return err
		}
	}
	return tw.Close()
}

// containerdName is the fully qualified name Docker records, e.g.
// docker.io/library/veil:1.2.0 for veil:1.2.0.
func containerdName(ref name.Tag) string {
	reg := ref.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + ref.RepositoryStr() + ":" + ref.TagStr()
}
