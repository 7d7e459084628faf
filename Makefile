# Entry points for developers and CI (.ci/run calls `make test`).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

CARGO ?= cargo
DEMO_ARGS ?=

# The tools scripts/setup.sh installs, for the tests and the demo that spawn them.
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/node_modules/.bin:$(PATH)
# The checkout the binaries use (a shared target dir may hold ones built elsewhere).
export FAILSOFT_ROOT := $(CURDIR)
export WRANGLER_SEND_METRICS := false
# Miniflare would fetch the `Request.cf` placeholder from the internet.
export CLOUDFLARE_CF_FETCH_ENABLED := false
ifdef CI
export CARGO_TERM_COLOR := never
endif

.PHONY: setup setup-browser test demo bench fmt lint clean distclean
.PHONY: spin spin-lint spin-test-component size-spin
.PHONY: worker worker-lint size-worker size

# What builds, the demo, the drill and the tests need; no root.
setup:
	bash scripts/setup.sh rust python node wasm_bindgen

# The dashboard's headless-browser test (make test only) also needs Debian's
# chromium: installed with apt-get when missing, which takes root.
setup-browser:
	bash scripts/setup.sh chromium

# After the host build and tests, the policy crate must also build for an MCU
# (no_std) and both wasm hosts.
test: setup setup-browser
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --bins
	$(MAKE) --no-print-directory spin-lint spin-test-component
	$(MAKE) --no-print-directory worker-lint worker
	$(CARGO) test --workspace
	$(CARGO) build -p failsoft-shared --target thumbv7em-none-eabihf
	$(CARGO) build -p failsoft-shared --target wasm32-unknown-unknown
	$(CARGO) build -p failsoft-shared --target wasm32-wasip2

# The outage drill with the CRM down for 2 minutes, on the Worker host
# (EDGE=…), at half the default rates and with fewer new callers: a backlog
# moto's SQS drains well within the drill's 20 s promise (README, "See it
# heal"). `failsoft-lab demo` is still there: the short scripted tour.
demo: stack-build
	$(LAB) drill --edge $(EDGE) --outage 2m --lookups-per-sec 5 --cases-per-sec 1 --warm-customers 50 --warm-share 0.8 $(DEMO_ARGS)

bench:
	$(CARGO) bench -p failsoft-shared

# ── the local stack and the outage drill (README, "See it heal") ───────────
# EDGE=worker|spin|native: the edge host (the targets build what it needs);
# SQS=moto|fauxqs: what serves SQS (`make bench-worker` installs fauxqs);
# CRM_URL=…: `make up` in front of your own downstream, without the simulator.
# `make drill` takes OUTAGE=8m MODE=down|hang and DRILL_ARGS (failsoft-lab drill --help).
EDGE ?= worker
SQS ?= moto
MODE ?= down
OUTAGE ?= 8m
DRILL_ARGS ?=
# PROFILE=drill: the stack's binaries optimised (Cargo.toml's [profile.drill]);
# the default is the debug build the tests use.
PROFILE ?= dev
LAB := $(or $(CARGO_TARGET_DIR),target)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))/failsoft-lab
EDGE_BUILD = $(if $(filter worker,$(EDGE)),worker,$(if $(filter spin,$(EDGE)),spin-test-component))

.PHONY: up down drill stack-build

stack-build: setup
	$(CARGO) build --workspace --bins --profile $(PROFILE)
	$(if $(EDGE_BUILD),$(MAKE) --no-print-directory $(EDGE_BUILD))

up: stack-build
	$(LAB) up --edge $(EDGE) --sqs $(SQS) $(if $(CRM_URL),--crm-url '$(CRM_URL)')

down:
	$(LAB) down

drill: stack-build
	$(LAB) drill --edge $(EDGE) --sqs $(SQS) --mode $(MODE) --outage $(OUTAGE) $(DRILL_ARGS)

# What one SQS call costs in the lab's moto as a FIFO queue deepens
# (README, "moto's SQS"). MESSAGES: how deep (default 3000).
.PHONY: bench-moto
bench-moto: setup
	.venv/bin/python tests/lab/moto_depth.py $(or $(MESSAGES),3000)

# The pre-warm sync's records/s and the worker's memory: `failsoft sync
# --once --full` of CUSTOMERS generated customers (default 1000000) into
# the native edge and moto's DynamoDB (README, "Performance").
# DYNAMO=dynalite: dynalite (npm, pinned in origin/bench/install-fauxqs.sh,
# under .local/bench) instead of moto, a faster stand-in for throughput.
.PHONY: bench-sync
bench-sync: setup
	$(CARGO) build --profile drill -p failsoft-origin -p failsoft-edge -p failsoft-tests \
		--bin failsoft --bin failsoft-edge --bin crm-sim
	$(if $(filter dynalite,$(DYNAMO)),bash origin/bench/install-fauxqs.sh)
	CARGO_TARGET_DIR=$(or $(CARGO_TARGET_DIR),$(CURDIR)/target) BENCH_PROFILE=drill \
		$(if $(filter dynalite,$(DYNAMO)),DYNALITE=$(CURDIR)/.local/bench/node_modules/.bin/dynalite) \
		.venv/bin/python tests/lab/sync_bench.py $(or $(CUSTOMERS),1000000) $(or $(RATE),50) $(or $(PAGE),1000)

# The origin worker's messages/s and CPU per message on a fast local SQS
# (fauxqs) and DynamoDB (dynalite), both on Node 22 under .local/bench.
# BENCH_ARGS: --messages N --groups N --concurrency N --dynamodb moto.
.PHONY: bench-worker
bench-worker: setup
	bash origin/bench/bench-worker.sh $(BENCH_ARGS)

# The drain at a rate-limited CRM's capacity (README, "Performance"):
# MESSAGES queued writes (default 2500) replayed to a CRM that allows LIMIT
# calls a second (default 100), its limit stated in headers, configured, or
# unknown; the stack's binaries in the drill profile.
.PHONY: bench-drain
bench-drain: setup
	bash origin/bench/install-fauxqs.sh
	$(CARGO) build --workspace --bins --profile drill
	$(CARGO) run --profile drill -p failsoft-lab --example bench_drain -- \
		--messages $(or $(MESSAGES),2500) --limit $(or $(LIMIT),100)

# The hot path against its limit (README, "Performance"): a cache hit on
# the native host beside a bare hyper server (edge/examples/bare_hyper.rs)
# and on the Worker beside a minimal JS Worker (edge/bench/js-worker),
# both measured with wrk in one run; CPU per lookup and RSS at 100k cached
# callers. BENCH_ARGS: --secs N --rounds N --keys N --no-worker.
.PHONY: bench-http
bench-http: setup
	bash scripts/setup.sh wrk
	$(CARGO) build --profile drill -p failsoft-edge -p failsoft-tests --bin failsoft-edge --bin crm-sim
	$(CARGO) build --profile drill -p failsoft-edge --example bare_hyper --features native
	$(MAKE) --no-print-directory worker
	$(CARGO) run --profile drill -p failsoft-lab --example bench_http -- $(BENCH_ARGS)

# The native KV's memory bound with the issue's 2,000,000 distinct keys
# (`make test` runs 200,000): prints the bytes charged, the entries held and
# the process's growth (edge/tests/kv_memory.rs; ~25 s).
.PHONY: test-kv-memory
test-kv-memory:
	$(CARGO) test -p failsoft-edge --test kv_memory -- --ignored --nocapture

# Coverage-guided fuzzing (README, "Fuzzing"): every target in fuzz/ under
# libFuzzer for FUZZ_SECS seconds (default 60), FUZZ_TARGETS to pick some;
# the report goes to .local/fuzz/report.md. make test only replays the
# committed corpora (and mutates them for a few seconds), without libFuzzer.
.PHONY: fuzz
fuzz:
	bash scripts/fuzz.sh $(or $(FUZZ_SECS),60) $(FUZZ_TARGETS)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# A stack `make up` started is stopped first (by its recorded PIDs), so
# removing .local never orphans its processes.
clean:
	if [[ -f .local/stack.pids ]]; then \
		if [[ -x $(LAB) ]]; then $(LAB) down; \
		else echo "make clean: .local/stack.pids lists a running stack and $(LAB) is not built; run make down first" >&2; exit 1; fi; \
	fi
	rm -rf .local $(WORKER_DIR)

distclean: clean
	rm -rf .venv node_modules

# ── the Spin component (spin.toml) ─────────────────────────────────────────
# `spin` builds what spin.toml ships. The tests run it under `wasmtime serve`
# with a test-only shim (tests/support/spin-kv-shim: the key-value store and
# the variables Spin would provide) composed on top: `spin-test-component`.
SPIN_TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
SPIN_WASM := $(SPIN_TARGET_DIR)/wasm32-wasip2/release/failsoft_edge_spin.wasm
SPIN_TEST_DIR := $(SPIN_TARGET_DIR)/spin

spin: setup
	$(CARGO) build -p failsoft-edge-spin --target wasm32-wasip2 --release

# On the host the crate is empty, so the workspace's clippy never sees it.
spin-lint: setup
	$(CARGO) clippy -p failsoft-edge-spin --target wasm32-wasip2 -- -D warnings

# `wasm-tools compose` names a definition by its file name, which must be
# kebab-case. It also warns that it is deprecated in favour of `wac`, which is
# filtered out: `wac` has no PyPI package, and building it from crates.io
# would take minutes for what compose does in milliseconds.
spin-test-component: spin
	$(CARGO) build --manifest-path tests/support/spin-kv-shim/Cargo.toml --locked \
		--target wasm32-wasip2 --release --target-dir $(SPIN_TARGET_DIR)
	mkdir -p $(SPIN_TEST_DIR)
	cp $(SPIN_TARGET_DIR)/wasm32-wasip2/release/spin_kv_shim.wasm $(SPIN_TEST_DIR)/spin-kv-shim.wasm
	wasm-tools compose $(SPIN_WASM) -d $(SPIN_TEST_DIR)/spin-kv-shim.wasm \
		-o $(SPIN_TEST_DIR)/failsoft-edge-spin-with-shim.wasm 2>&1 | { grep -v -e deprecated -e wac -e '^$$' || true; }

size-spin: spin
	@printf '%-32s %9s %9s\n' artifact bytes gzip-9
	@printf '%-32s %9d %9d\n' 'spin: failsoft_edge_spin.wasm' \
		"$$(stat -c %s $(SPIN_WASM))" "$$(gzip -9c $(SPIN_WASM) | wc -c)"

# ── the Cloudflare Worker (wrangler.toml) ──────────────────────────────────
# `worker` runs what wrangler.toml's [build] runs (keep the two in step):
# worker-build with the wasm-bindgen CLI, wasm-opt and esbuild that
# scripts/setup.sh and npm installed, so nothing is downloaded. It is redone
# only when a source of the Worker changed.
WORKER_DIR := edge/worker/build
WORKER_WASM := $(WORKER_DIR)/index_bg.wasm
WORKER_SOURCES := $(shell find shared/src edge/src edge/worker/src -name '*.rs') \
	Cargo.toml Cargo.lock shared/Cargo.toml edge/Cargo.toml edge/worker/Cargo.toml

worker: setup $(WORKER_WASM)

$(WORKER_WASM): $(WORKER_SOURCES)
	cd edge/worker && WASM_BINDGEN_BIN=../../.local/bin/wasm-bindgen \
		WASM_OPT_BIN=../../node_modules/.bin/wasm-opt ESBUILD_BIN=../../node_modules/.bin/esbuild \
		../../.local/bin/worker-build --release
	touch $@

# On the host the crate is empty, so the workspace's clippy never sees it.
worker-lint: setup
	$(CARGO) clippy -p failsoft-edge-worker --target wasm32-unknown-unknown -- -D warnings

size-worker: worker
	@printf '%-32s %9s %9s\n' artifact bytes gzip-9
	@printf '%-32s %9d %9d\n' 'worker: index_bg.wasm' \
		"$$(stat -c %s $(WORKER_WASM))" "$$(gzip -9c $(WORKER_WASM) | wc -c)"

# The release .wasm of each Wasm host, raw and gzipped (the Worker's target:
# under 500 KiB gzipped; Cloudflare's free plan allows 3 MiB).
size: size-worker size-spin
