# Entry points for developers and CI (.ci/run calls `make test`).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

CARGO ?= cargo
DEMO_ARGS ?=

# The tools scripts/setup.sh installs, for the tests and the demo that spawn them.
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/node_modules/.bin:$(PATH)
export WRANGLER_SEND_METRICS := false
ifdef CI
export CARGO_TERM_COLOR := never
endif

.PHONY: setup test demo bench fmt lint clean distclean

setup:
	bash scripts/setup.sh

# After the host build and tests, the policy crate must also build for an MCU
# (no_std) and both wasm hosts.
test: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace
	$(CARGO) build -p failsoft-shared --target thumbv7em-none-eabihf
	$(CARGO) build -p failsoft-shared --target wasm32-unknown-unknown
	$(CARGO) build -p failsoft-shared --target wasm32-wasip2

demo: setup
	$(CARGO) build --workspace --bins
	./target/debug/failsoft demo $(DEMO_ARGS)

bench:
	$(CARGO) bench -p failsoft-shared

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf .local

distclean: clean
	rm -rf .venv node_modules
