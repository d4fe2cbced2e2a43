#!/usr/bin/env bash
# The official SDKs, unchanged, against `cocoon devnet` (the README's run command): the OpenAI and
# Anthropic Python packages and LangChain (tests/sdk/sdks.py) and the openai npm package
# (tests/sdk/openai.mjs), each pinned (requirements.txt, package-lock.json). The Python packages go
# into a venv under the cache directory, reused across runs; the npm package into
# tests/sdk/node_modules. The devnet runs with an empty HOME, as in tests/fresh-home.sh.
#
#   tests/sdk/run.sh                 # uses $CARGO_TARGET_DIR/release/cocoon (cargo build --release)
#
# Environment: COCOON_BIN, COCOON_WHEEL_DIR and DEADLINE_SECS as for tests/fresh-home.sh.
# It uses the devnet's default ports (8080, 8081, 4001, 9100-9104).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
bin=${COCOON_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/cocoon}
deadline_secs=${DEADLINE_SECS:-300}
cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/cocoon"
[ -x "$bin" ] || { echo "sdk: no binary at $bin (cargo build --release first)" >&2; exit 1; }

# The pinned packages (before HOME changes: pip and npm keep their caches in the real one).
venv=$cache/sdk-venv
if ! "$venv/bin/python" -c 'import openai, anthropic, langchain_openai' 2>/dev/null; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
(cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)

. tests/empty-home.sh sdk-home
fail() {
  echo "sdk: FAILED: $*" >&2
  tail -n 40 "$home/devnet.err" >&2 || true
  exit 1
}
"$bin" devnet >"$home/devnet.out" 2>"$home/devnet.err" &
pid=$!
until=$(( $(date +%s) + deadline_secs ))
until curl -sf http://127.0.0.1:8080/v1/models 2>/dev/null | grep -q smollm2-135m-instruct; do
  kill -0 "$pid" 2>/dev/null || fail "the devnet exited before serving its model"
  [ "$(date +%s)" -lt "$until" ] || fail "no model listed within ${deadline_secs}s"
  sleep 0.2
done
started=$(date +%s)
"$venv/bin/python" tests/sdk/sdks.py || fail "a Python SDK check failed"
node tests/sdk/openai.mjs || fail "a node SDK check failed"
echo "sdk: passed in $(( $(date +%s) - started ))s"
