# maskpbx — the two commands of the README, and a few helpers.
SHELL := /bin/bash
GO ?= go
BIN := bin/maskpbx
PG_PORT ?= 55432
VAR := $(CURDIR)/var

.PHONY: all build run test readme-check deps vet bench clean pg-start pg-stop image

all: build

build:
	$(GO) build -o $(BIN) ./cmd/maskpbx

# Everything a fresh Debian machine lacks: SIPp (sip-tester) for the SIP
# tests, sox for audio checks, curl and jq for the README's commands. PostgreSQL's server is installed by
# deploy/pg.sh if missing.
deps:
	@./deploy/deps.sh

# make run: the whole system in one process with demo data. The build shows
# its progress; run.sh prints the demo's instructions once serve answers.
run:
	@GO=$(GO) ./deploy/build.sh $(BIN)
	@echo "make run: starting Postgres under $(VAR)/pg (127.0.0.1:$(PG_PORT))..." >&2
	@./deploy/pg.sh start $(VAR)/pg $(PG_PORT)
	@./deploy/run.sh $(BIN) $(PG_PORT)

# make image: the container image as bin/maskpbx-image.tar (docker-archive,
# no base image pulled, no daemon needed), loaded into podman or docker when
# one runs here.
image:
	@GO=$(GO) ./deploy/image.sh

pg-start:
	@./deploy/pg.sh start $(VAR)/pg $(PG_PORT)

pg-stop:
	@./deploy/pg.sh stop $(VAR)/pg

# staticcheck at a pinned release, built by the module proxy's copy (go run
# caches the build); per-package exceptions live in staticcheck.conf files.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# make vet: go vet, go.mod and go.sum as go mod tidy leaves them, staticcheck
# and gofmt.
vet:
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(GO) run $(STATICCHECK) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# make test: every test, against a throwaway Postgres cluster, embedded NATS
# and SIPp peers, all started by the tests themselves.
# Call control (pbx) runs under the race detector.
test: deps vet
	$(GO) test -race -count=1 -timeout 10m ./pbx/...
	$(GO) test -count=1 -timeout 25m $$($(GO) list ./... | grep -v '/maskpbx/pbx')
	@./deploy/readme-check.sh

# make readme-check: the README's commands against a make run of their own
# (on the demo's addresses: not while make run is up).
readme-check:
	@./deploy/readme-check.sh

bench: deps build
	@./deploy/bench.sh

clean:
	rm -rf bin
