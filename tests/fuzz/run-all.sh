#!/usr/bin/env bash
# Build every cargo-fuzz target and run each in turn, then print one line per target:
# executions, coverage (edges), features, corpus size and seconds.
#
#   tests/fuzz/run-all.sh SECONDS [TARGET...]     each target for SECONDS of wall time
#   tests/fuzz/run-all.sh -runs=N [TARGET...]     each target for N executions
#
# Every run is one job (one process, `-jobs` unused), under `nice -n 10`, with AddressSanitizer's allocation
# hooks bounding any single allocation to MALLOC_LIMIT_MB (default 64) and the process to
# RSS_LIMIT_MB (default 2048). Inputs: tests/fuzz/corpus/NAME (working corpus, not committed;
# new inputs go there), tests/fuzz/seeds/NAME (committed) and tests/fuzz/regressions/NAME.
# A crash stops that target's run and leaves its input in tests/fuzz/artifacts/NAME/; the
# script goes on with the next target and exits non-zero at the end. Logs: tests/fuzz/logs/.
# `channel_differential` (a few executions per second) runs only when named.
set -uo pipefail
cd "$(dirname "$0")/../.."
fuzz=tests/fuzz
if [ $# -lt 1 ]; then
    echo "usage: $0 SECONDS|-runs=N [TARGET...]" >&2
    exit 2
fi
case "$1" in
    -runs=*) limit=("$1") ;;
    *[!0-9]*) echo "SECONDS must be a whole number, or -runs=N" >&2; exit 2 ;;
    *) limit=("-max_total_time=$1") ;;
esac
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^    ("\([a-z0-9_]*\)", [a-z0-9_]*),$/\1/p' "$fuzz/targets/mod.rs")
fi
# Build once, then run the binaries themselves (FUZZ_BIN_DIR: binaries built earlier, e.g. a
# copy kept fixed while the sources change).
bin_dir=${FUZZ_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
    nice -n 10 cargo +nightly fuzz build --fuzz-dir "$fuzz" || exit 1
    bin_dir="$fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
fi
mkdir -p "$fuzz/logs"
failed=0
summary=()
for name in "${targets[@]}"; do
    mkdir -p "$fuzz/corpus/$name" "$fuzz/artifacts/$name"
    dirs=("$fuzz/corpus/$name" "$fuzz/seeds/$name")
    [ -d "$fuzz/regressions/$name" ] && dirs+=("$fuzz/regressions/$name")
    log="$fuzz/logs/$name.log"
    start=$(date +%s)
    nice -n 10 "$bin_dir/$name" "${limit[@]}" -print_final_stats=1 -max_len=4096 \
        -malloc_limit_mb="${MALLOC_LIMIT_MB:-64}" -rss_limit_mb="${RSS_LIMIT_MB:-2048}" \
        -artifact_prefix="$fuzz/artifacts/$name/" "${dirs[@]}" >"$log" 2>&1
    status=$?
    seconds=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
    verdict=ok
    if [ $status -ne 0 ]; then
        verdict="FAILED (exit $status, see $log)"
        failed=1
    fi
    line=$(printf '%-20s %12s execs %7s edges %7s features  corpus %-12s %6ss  %s' \
        "$name" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$seconds" "$verdict")
    echo "$line"
    summary+=("$line")
done
echo
echo "limit: ${limit[*]}"
printf '%s\n' "${summary[@]}"
exit $failed
