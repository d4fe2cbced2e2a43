#!/usr/bin/env bash
# Writes the one-line fuzz_targets/NAME.rs and the [[bin]] entry in Cargo.toml for each NAME
# given (the body is `pub fn NAME(data: &[u8])` in targets/, listed in targets::TARGETS).
# With no argument, (re)writes them for every target in targets/mod.rs's TARGETS.
set -euo pipefail
cd "$(dirname "$0")"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    mapfile -t names < <(sed -n 's/^    ("\([a-z0-9_]*\)", [a-z0-9_]*),$/\1/p' targets/mod.rs)
fi
for name in "${names[@]}"; do
    cat > "fuzz_targets/$name.rs" <<RS
//! Fuzz target \`$name\`: the body is \`targets::$name\` (tests/fuzz/targets/), also replayed on
//! stable by tests/fuzz_corpora.rs. Written by tests/fuzz/new-target.sh.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cocoon_fuzz::$name(data));
RS
    if ! grep -q "^name = \"$name\"$" Cargo.toml; then
        printf '\n[[bin]]\nname = "%s"\npath = "fuzz_targets/%s.rs"\ntest = false\ndoc = false\nbench = false\n' \
            "$name" "$name" >> Cargo.toml
    fi
done
