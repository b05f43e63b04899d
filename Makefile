# fileflow — the README's commands: `make test` (all tests, installing what they need).
SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO          ?= go
BIN         := $(CURDIR)/bin
DIST        := $(CURDIR)/dist
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
ACTIONLINT  := github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
STACK       ?= dev
TESTFLAGS   ?=
TEST_LOG    := $(or $(TMPDIR),/tmp)/fileflow-test.log

.PHONY: all build package servers dev test chaos test-unit bench bench-go lint fmt tidy clean plan docs preview deploy

all: build

## build: compile everything for this machine
build:
	$(GO) build ./...

## package: reproducible Lambda zips (linux/arm64 `bootstrap`, provided.al2023) in dist/<name>.zip
package:
	$(GO) run ./cmd/fileflow package --out $(DIST)

## servers: install the local S3/SQS/DynamoDB-API servers (first run ~2 min, then instant)
servers:
	$(GO) run ./cmd/fileflow servers install

## dev: the whole pipeline locally (real handler binaries, local S3/SQS/DynamoDB) with a demo load
FILES ?= 1000
DEVFLAGS ?=
dev:
	$(GO) run ./cmd/fileflow dev --files $(FILES) $(DEVFLAGS)

## test: every test, including those against the local servers (installed and started by the tests),
## after a bounded run of every fuzz target (fuzz-smoke)
test: servers fuzz-smoke
	@status=0; $(GO) test -count=1 -timeout 20m -v $(TESTFLAGS) ./... 2>&1 | tee $(TEST_LOG) || status=$$?; \
	 passed=$$(grep -cE '^\s*--- PASS' $(TEST_LOG) || true); failed=$$(grep -cE '^\s*--- FAIL' $(TEST_LOG) || true); \
	 if [ "$$failed" != 0 ] || [ "$$status" != 0 ]; then echo; echo "failed:"; grep -E '^\s*--- FAIL|^FAIL\s|^panic:|^\s+Error:\s' $(TEST_LOG) | tail -n 40 || true; fi; \
	 echo; echo "$$passed passed, $$failed failed"; exit $$status

## chaos: the local pipeline under injected faults (10% of AWS calls, kills, duplicates,
## overwrites, deletes, poison, a DynamoDB restart), then an invariant report; non-zero on
## any violation. CHAOS_FILES (100000) files; CHAOS_SEED replays a seed; CHAOSFLAGS more flags
CHAOS_FILES ?= 100000
CHAOS_SEED  ?=
CHAOSFLAGS  ?=
chaos: servers
	$(GO) run ./cmd/fileflow chaos --files $(CHAOS_FILES) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOSFLAGS)

## test-unit: the fast tests that need no server
test-unit:
	$(GO) test -count=1 ./pkg/task/ ./pkg/retry/ ./pkg/process/ ./pkg/upload/ ./pkg/worker/ ./pkg/pipeline/ ./pkg/policy/ ./pkg/stage/ \
		./pkg/workload/ ./pkg/cost/ ./pkg/capacity/ ./pkg/progress/

## fuzz-smoke: every fuzz target for FUZZSMOKE (2s) from its seed corpus; a finding fails and is
## written to <pkg>/testdata/fuzz/<target>/ (commit it with the fix)
## fuzz: the same, FUZZTIME (60s) each
.PHONY: fuzz fuzz-smoke
FUZZSMOKE ?= 2s
FUZZTIME  ?= 60s
fuzz-smoke:
	GO=$(GO) FUZZTIME=$(FUZZSMOKE) .ci/fuzz

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) .ci/fuzz

## bench: the benchmark report on the local stack (not part of make test; ~18 min here):
## bench/report.json and docs/benchmarks.md with its charts in docs/bench/. BENCHFLAGS more
## flags (e.g. --scale 0.1 for a quick look, --skip fanout, --set fileflow:KEY=VALUE)
BENCHFLAGS ?=
bench: servers
	$(GO) run ./cmd/fileflow bench report $(BENCHFLAGS)

## bench-go: the Go micro-benchmarks (medians: COUNT=6, compare with benchstat)
COUNT ?= 1
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count $(COUNT) ./pkg/...

## lint: gofmt, go vet, staticcheck, actionlint (both installed from the module proxy into ./bin)
lint: $(BIN)/staticcheck $(BIN)/actionlint
	@unformatted=$$(gofmt -l .); \
	 if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...
	$(BIN)/actionlint .github/workflows/*.yml

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install $(STATICCHECK)

$(BIN)/actionlint:
	GOBIN=$(BIN) $(GO) install $(ACTIONLINT)

## plan: the stage's resources and policy findings, offline under Pulumi mocks (STACK=dev|prod)
plan:
	$(GO) run ./cmd/fileflow plan --stack $(STACK)

## docs: regenerate docs/architecture.md from the plans
docs:
	$(GO) run ./cmd/fileflow docs

## preview / deploy: the real thing (needs the Pulumi CLI and AWS credentials)
preview:
	pulumi preview --stack $(STACK) --policy-pack infra/policy

deploy:
	pulumi up --stack $(STACK) --policy-pack infra/policy

fmt:
	gofmt -w $$(git ls-files '*.go')

tidy:
	$(GO) mod tidy

clean:
	rm -rf $(BIN) $(DIST)
