#!/usr/bin/env bash
# Replace the committed corpus of each TARGET (default: all) with a minimal one: the hand-made
# seeds (seeds/NAME/seed-*) plus the fewest inputs of the working corpus, the committed corpus and
# the regressions that reach every edge they reach (libFuzzer's merge, what `cargo fuzz cmin`
# runs, with the seeds kept; `-use_counters=0` counts edges, not hit counts, so a few hundred
# files at most stay). Run after `run-all.sh`, which builds the binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
fuzz=tests/fuzz
bin_dir=${FUZZ_BIN_DIR:-$fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^    ("\([a-z0-9_]*\)", [a-z0-9_]*),$/\1/p' "$fuzz/targets/mod.rs")
fi
for name in "${targets[@]}"; do
    out=$(mktemp -d)
    cp "$fuzz/seeds/$name"/seed-* "$out/"
    inputs=("$fuzz/seeds/$name")
    for d in "$fuzz/corpus/$name" "$fuzz/regressions/$name"; do [ -d "$d" ] && inputs+=("$d"); done
    nice -n 10 "$bin_dir/$name" -merge=1 -use_counters=0 -max_len=4096 "$out" "${inputs[@]}" \
        >"$out.log" 2>&1 || { cat "$out.log" >&2; exit 1; }
    find "$fuzz/seeds/$name" -type f ! -name 'seed-*' -delete
    find "$out" -type f ! -name 'seed-*' -exec cp {} "$fuzz/seeds/$name/" \;
    printf '%-20s %4s files %6s\n' "$name" "$(ls "$fuzz/seeds/$name" | wc -l)" "$(du -sh "$fuzz/seeds/$name" | cut -f1)"
    rm -rf "$out" "$out.log"
done
