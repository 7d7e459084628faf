#!/usr/bin/env bash
# `make bench-worker`: installs fauxqs, dynalite and Node 22
# (install-fauxqs.sh) under .local/bench, builds the binaries in the drill
# profile (optimised, without LTO; the release and debug builds are
# untouched) and runs the worker benchmark (tests/lab/examples/bench_worker.rs).
#
#   origin/bench/bench-worker.sh [--messages N] [--groups N] [--concurrency N] [--dynamodb dynalite|moto]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH="$ROOT/.local/bench"
bash "$ROOT/origin/bench/install-fauxqs.sh"

cargo build --profile drill -p failsoft-origin -p failsoft-lab -p failsoft-tests --bins
export PATH="$ROOT/.venv/bin:$PATH" FAILSOFT_ROOT="$ROOT"
cargo run --profile drill -p failsoft-lab --example bench_worker -- \
    --fauxqs "$BENCH/node_modules/fauxqs/dist/cli.js" --node "$BENCH/node_modules/.bin/node" "$@"
