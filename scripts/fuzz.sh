#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ for FUZZ_SECS seconds each (default
# 20; `make fuzz`, CI), or only the targets named as arguments:
#
#   scripts/fuzz.sh                      # every target, 20 s each
#   FUZZ_SECS=300 scripts/fuzz.sh ws_frame
#
# Installs cargo-fuzz when missing. New corpus entries go to fuzz/corpus/T
# (not committed) on top of the seeds in fuzz/seeds/T; a crash leaves its
# input in fuzz/artifacts/T and fails the run. Replay one with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run T fuzz/artifacts/T/crash-...`.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECS:-20}
# cargo-fuzz builds with -Zsanitizer=address and other unstable flags; this
# lets the stable toolchain accept them, so no nightly is needed.
export RUSTC_BOOTSTRAP=1
# Its own target dir, whatever CARGO_TARGET_DIR says: the instrumented build
# must not mix with the workspace's.
target_dir=fuzz/target
# Up to 20 kB: enough to cross the parsers' own limits (4 kB chunk-size
# lines, 1 kB WebSocket payloads), which libFuzzer's default of 4 kB is not.
max_len=20000

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz@0.13.2
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# The fuzzed crates are built with the dependency versions the workspace
# ships: its lock seeds the fuzz crate's, which only adds libFuzzer's own.
cp Cargo.lock fuzz/Cargo.lock

echo "fuzz: building ${#targets[@]} targets (release, debug assertions, AddressSanitizer)"
start=$SECONDS
cargo fuzz build --target-dir "$target_dir"
echo "fuzz: built in $((SECONDS - start)) s"

mkdir -p "$target_dir/logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    log="$target_dir/logs/$t.log"
    echo "fuzz: $t for ${secs} s (log: $log)"
    if cargo fuzz run --target-dir "$target_dir" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        summary+=("$(printf '%-20s %12s executions in %s s' "$t" "${runs:-?}" "$secs")")
    else
        tail -n 40 "$log"
        failed+=("$t")
        summary+=("$(printf '%-20s FAILED (see %s, fuzz/artifacts/%s)' "$t" "$log" "$t")")
    fi
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
