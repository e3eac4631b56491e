# swift-cache-aside
#
#   make test     install what is missing, start throwaway PostgreSQL and Redis, run
#                 `swift test` against them, stop them
#   make demo     the same around `swift run -c release user-lookup`
#   make bench    the same around the release build of cache-bench
#
# With DATABASE_URL and REDIS_URL both set, test/demo/bench use those servers instead
# (e.g. after `docker compose up -d`, see docker-compose.yml).

SHELL := /bin/bash
.DEFAULT_GOAL := help

SWIFT ?= swift
SWIFT_TEST_FLAGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

DEBIAN_PACKAGES := libpq-dev libhiredis-dev libssl-dev openssl postgresql redis-server redis-tools pkg-config
BREW_PACKAGES := libpq hiredis openssl@3 postgresql@16 redis pkg-config

UNAME_S := $(shell uname -s)
ifeq ($(UNAME_S),Darwin)
# Homebrew's libpq and postgresql@16 are keg-only: make them visible to pkg-config
# (SwiftPM's system library targets) and to scripts/dev-services.
BREW_PREFIX := $(shell brew --prefix 2>/dev/null)
ifneq ($(BREW_PREFIX),)
export PKG_CONFIG_PATH := $(BREW_PREFIX)/opt/libpq/lib/pkgconfig$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))
export PATH := $(BREW_PREFIX)/opt/postgresql@16/bin:$(BREW_PREFIX)/opt/libpq/bin:$(PATH)
endif
endif

.PHONY: help deps services-up services-down build test demo bench clean

help:
	@echo 'Targets:'
	@echo '  make deps           install missing system packages (apt or Homebrew)'
	@echo '  make test           run the tests against throwaway PostgreSQL and Redis'
	@echo '  make demo           run the user-lookup demo (DEMO_ARGS="...")'
	@echo '  make bench          run cache-bench, release build (BENCH_ARGS="...")'
	@echo '  make build          swift build'
	@echo '  make services-up    start throwaway servers: eval "$$(make -s services-up)"'
	@echo '  make services-down  stop them and delete their data'
	@echo '  make clean          stop every instance of this checkout (dev-services down --all), delete .build'
	@echo
	@echo 'test, demo and bench use DATABASE_URL and REDIS_URL instead when both are set.'
	@echo 'SWIFT_TEST_FLAGS="..." passes flags to swift test (e.g. --filter Redis).'

# Installs only what is missing; quick and silent when everything is present.
deps:
	@set -euo pipefail; \
	if [ -f /etc/debian_version ] || command -v apt-get >/dev/null 2>&1; then \
		missing=; \
		for p in $(DEBIAN_PACKAGES); do \
			status=$$(dpkg-query -W -f='$${db:Status-Status}' "$$p" 2>/dev/null || true); \
			[ "$$status" = installed ] || missing="$$missing $$p"; \
		done; \
		if [ -n "$$missing" ]; then \
			sudo=; \
			if [ "$$(id -u)" -ne 0 ]; then \
				if command -v sudo >/dev/null 2>&1; then sudo=sudo; \
				else echo "deps: missing:$$missing, and not root and no sudo: install them as root" >&2; exit 1; fi; \
			fi; \
			echo "deps: installing$$missing" >&2; \
			$$sudo apt-get update; \
			$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
		fi; \
	elif [ "$$(uname -s)" = Darwin ]; then \
		if command -v brew >/dev/null 2>&1; then \
			for p in $(BREW_PACKAGES); do \
				brew list "$$p" >/dev/null 2>&1 || brew install "$$p"; \
			done; \
		else \
			echo "deps: Homebrew not found; install it (https://brew.sh), then run: brew install $(BREW_PACKAGES)" >&2; \
		fi; \
	else \
		echo "deps: unknown platform; install libpq, hiredis, PostgreSQL, Redis and pkg-config yourself" >&2; \
	fi

services-up:
	@scripts/dev-services up

services-down:
	@scripts/dev-services down

build:
	$(SWIFT) build

test: deps
	scripts/with-services --cluster $(SWIFT) test $(SWIFT_TEST_FLAGS)

demo: deps
	scripts/with-services $(SWIFT) run -c release user-lookup $(DEMO_ARGS)

bench: deps
	$(SWIFT) build -c release --product cache-bench
	@# PostgresNIO side by side: a package of its own, so that no consumer of the
	@# libraries resolves it. Its first build takes minutes; without it, its rows are skipped.
	$(SWIFT) build -c release --package-path Benchmarks/PostgresNIOBench || \
		echo 'bench: Benchmarks/PostgresNIOBench did not build: the PostgresNIO rows will be missing' >&2
	bin=$$($(SWIFT) build -c release --show-bin-path) && \
		scripts/with-services --cluster "$$bin/cache-bench" $(BENCH_ARGS)

clean:
	scripts/dev-services down --all
	rm -rf .build
