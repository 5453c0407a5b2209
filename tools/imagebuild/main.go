// Command imagebuild builds Veil's container image without a container
// runtime: it compiles a static `veil` (CGO_ENABLED=0) with the version and
// revision stamped in, puts it on a root filesystem of CA certificates and
// a passwd entry for the non-root user, and writes one archive that both
// `docker load` and `podman load` take (see archive.go). `make image` runs
// it; it is a tool of its own so that the `veil` binary does not carry
// go-containerregistry.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"time"
)

func main() {
	var (
		spec    Spec
		out     string
		tag     string
		created int64
	)
	flag.StringVar(&spec.Version, "version", "", "Version of Veil (git describe); the image's org.opencontainers.image.version.")
	flag.StringVar(&spec.Revision, "revision", "", "Git commit the image is built from; org.opencontainers.image.revision.")
	flag.StringVar(&spec.Arch, "arch", "amd64", "GOARCH of the image (amd64 or arm64).")
	flag.StringVar(&spec.Package, "package", "./cmd/veil", "The veil package, from -dir.")
	flag.StringVar(&spec.Dir, "dir", ".", "Root of Veil's module.")
	flag.Int64Var(&created, "created", sourceDateEpoch(), "Creation time in Unix seconds (default $SOURCE_DATE_EPOCH, else 0): the same sources give the same image.")
	flag.StringVar(&tag, "tag", "", "Name the image is loaded as (default veil:VERSION).")
	flag.StringVar(&out, "out", "bin/veil-image.tar", "Archive to write.")
	flag.Parse()
	if tag == "" {
		tag = "veil:" + spec.Version
	}
	spec.Created = time.Unix(created, 0).UTC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	digest, err := BuildToFile(ctx, spec, tag, out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %s %s\nload it with: docker load -i %s   (or podman load -i %s)\n", out, tag, digest, out, out)
}

func sourceDateEpoch() int64 {
	n, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
