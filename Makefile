# Veil: `make run` starts the whole pipeline on this machine; `make test`
# runs every check CI runs. Both install what is missing first.
GO       ?= go
BIN      := bin/veil
DATA_DIR ?= ./.veil
LISTEN   ?= 127.0.0.1:8080

.PHONY: run test deps build vet clean

deps:
	@scripts/install-deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/veil

run: deps build
	$(BIN) dev --listen $(LISTEN) --data-dir $(DATA_DIR)

vet:
	$(GO) vet ./...

test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...

clean:
	rm -rf bin
