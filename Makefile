# Every routine task. Targets loop over the modules of go.work, so a new
# module is picked up without editing this file.

SHELL := /bin/bash
MODULES := $(shell go list -m -f '{{.Dir}}' | sed 's|^$(CURDIR)/||')
PKGS := $(addsuffix /...,$(addprefix ./,$(MODULES)))
MAINS := $(sort $(dir $(wildcard services/*/main.go cmd/*/main.go)))
BIN := $(CURDIR)/bin
FUZZTIME ?= 10s

.PHONY: all build test lint fuzz tools deps up down bench bench-e2e clean help chaos

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build the six services and tenantctl into bin/
	@mkdir -p $(BIN)
	go build -o $(BIN)/ $(addprefix ./,$(MAINS))

test: deps tools ## run every test against real servers (installs what is missing first)
	scripts/test.sh $(PKGS)

lint: ## gofmt, go vet, staticcheck, no test-only dependency in a binary, no tracked file over 1 MB
	@unformatted=$$(gofmt -l $(MODULES)); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet $(PKGS)
	@if scripts/tools.sh --with-lint >/dev/null 2>&1 && [ -x $(BIN)/staticcheck ]; then \
		echo "$(BIN)/staticcheck $(PKGS)"; $(BIN)/staticcheck $(PKGS); \
	else echo "lint: staticcheck could not be installed; skipped"; fi
	scripts/check-prod-deps.sh $(MAINS)
	scripts/check-large-files.sh

fuzz: ## run each payload fuzz target for FUZZTIME (default 10s)
	@for f in $$(go test -list '^Fuzz' ./pkg/events | grep '^Fuzz'); do \
		echo "fuzz: $$f"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./pkg/events || exit 1; \
	done

tools: ## install pinned minio, nats, sops, helm and promtool into bin/ (built once per machine, then cached)
	scripts/tools.sh

deps: ## install Debian packages the tests need (postgresql, redis-server)
	scripts/install-deps.sh

bench: ## run benchmarks
	go test -run '^$$' -bench . -benchmem $(PKGS)

up: ## start the whole system locally under .dev/ (stores, NATS, six services); prints how to provision a demo tenant
	scripts/dev-up.sh

chaos: ## fault suite on the stack of `make up` (not in `make test`): load under SIGKILLs, then stores vs registry, audit, secrets; CHAOS_TENANTS=200 CHAOS_DEPROVISION=100 CHAOS_DURATION=10m
	CHAOS_ROOT=$(CURDIR) go run ./e2e/chaos

bench-e2e: ## on the stack of `make up`: stores alone vs the system in one run, prints the ratios (BENCH_SERIAL=7 BENCH_BURSTS=50,500 BENCH_FLAT_BURSTS=10 BENCH_FLAT_SIZE=100 BENCH_RECORDS=10000)
	BENCH_ROOT=$(CURDIR) go run ./e2e/bench

down: ## stop exactly what `make up` started
	scripts/dev-down.sh

clean: ## remove build output (keeps the tool cache)
	rm -rf $(BIN)/orchestrator $(BIN)/*-agent $(BIN)/audit-sink $(BIN)/tenantctl
