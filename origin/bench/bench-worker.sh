#!/usr/bin/env bash
# `make bench-worker`: installs fauxqs and Node 22 (install-fauxqs.sh)
# under .local/bench, builds the binaries in release mode (without LTO, in
# their own target directory, so the shared debug and release builds are
# untouched) and runs the worker benchmark (tests/lab/examples/bench_worker.rs).
#
#   origin/bench/bench-worker.sh [--messages N] [--groups N] [--concurrency N]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH="$ROOT/.local/bench"
bash "$ROOT/origin/bench/install-fauxqs.sh"

export CARGO_TARGET_DIR="$ROOT/target/bench-worker"
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=3
cargo build --release -p failsoft-origin -p failsoft-lab -p failsoft-tests --bins
export PATH="$ROOT/.venv/bin:$PATH"
cargo run --release -p failsoft-lab --example bench_worker -- \
    --fauxqs "$BENCH/node_modules/fauxqs/dist/cli.js" --node "$BENCH/node_modules/.bin/node" "$@"
