#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ (make fuzz): each runs
# under libFuzzer for FUZZ_SECS seconds, from the committed corpus
# (fuzz/corpus/{target}) into a working one (.local/fuzz/corpus/{target}),
# and a table of executions, corpus size and crashes is written to
# .local/fuzz/report.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]        default: 60 s, every target
#
# Only the stable toolchain exists on our machines: libFuzzer's build flags
# (-Z...) are accepted there with RUSTC_BOOTSTRAP=1. No sanitizer: the code
# under test is safe Rust, so a crash is a panic (a failed assertion, an
# overflow: debug assertions stay on), which libFuzzer sees as an abort.
# A crash's input lands in fuzz/artifacts/{target}/; once fixed, copy it
# into fuzz/corpus/{target}/ so `make test` replays it for good.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO_FUZZ_VERSION=0.13.2
TOOLS="${FAILSOFT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/failsoft/cargo-tools}/cargo-fuzz-$CARGO_FUZZ_VERSION"
SECS="${1:-60}"
shift || true
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^failsoft-fuzz$')
fi

if [[ ! -x "$TOOLS/bin/cargo-fuzz" ]]; then
    echo "fuzz: cargo install cargo-fuzz@$CARGO_FUZZ_VERSION (once per machine; minutes on 2 cores)"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$TOOLS"
fi
export RUSTC_BOOTSTRAP=1
FUZZ=("$TOOLS/bin/cargo-fuzz" fuzz)
TARGET_DIR="${FAILSOFT_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/failsoft/fuzz-target}"
BUILD=(-O --debug-assertions --sanitizer none --target-dir "$TARGET_DIR")

echo "fuzz: building ${#TARGETS[@]} targets"
"${FUZZ[@]}" build "${BUILD[@]}"

mkdir -p .local/fuzz
REPORT=.local/fuzz/report.md
{
    echo "Fuzzing, $(date -u +%Y-%m-%dT%H:%MZ), $SECS s per target, $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "| target | executions | exec/s | corpus | crashes |"
    echo "|---|---|---|---|---|"
} >"$REPORT"
failed=0
for target in "${TARGETS[@]}"; do
    work=".local/fuzz/corpus/$target"
    mkdir -p "$work"
    log=".local/fuzz/$target.log"
    echo "fuzz: $target for $SECS s"
    status=0
    "${FUZZ[@]}" run "${BUILD[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$SECS" -max_len=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    corpus="$(find "$work" -type f | wc -l)"
    crashes=0
    if [[ $status -ne 0 ]]; then
        crashes=1
        failed=1
        echo "fuzz: $target CRASHED (exit $status); see $log and fuzz/artifacts/$target/" >&2
        grep -m 5 -E "panicked|SUMMARY|artifact" "$log" >&2 || true
    fi
    echo "| \`$target\` | ${runs:-?} | ${rate:-?} | $corpus | $crashes |" >>"$REPORT"
done
cat "$REPORT"
exit "$failed"
