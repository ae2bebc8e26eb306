# Vigil: the two commands are `make demo` (a local three-node cluster that
# shows a failover) and `make test` (every test, installing what they need).

GO      ?= go
BIN     := bin/vigil
export PATH := $(PATH):/usr/local/go/bin
# Simulation seeds per `make test` run; `make test-long` runs many more.
SIM_SEEDS ?= 200

.PHONY: all build demo test test-short test-long deps bench vet fmt clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/vigil

deps:
	./scripts/deps.sh

demo: build
	./$(BIN) demo

test: deps build
	VIGIL_BIN=$(CURDIR)/$(BIN) VIGIL_SIM_SEEDS=$(SIM_SEEDS) $(GO) test -count=1 -timeout 20m ./...

test-short: build
	VIGIL_BIN=$(CURDIR)/$(BIN) $(GO) test -short -count=1 ./...

test-long: deps build
	VIGIL_BIN=$(CURDIR)/$(BIN) VIGIL_SIM_SEEDS=5000 $(GO) test -count=1 -timeout 60m ./...

bench: build
	VIGIL_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchmem ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

clean:
	rm -rf bin
