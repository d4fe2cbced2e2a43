#!/usr/bin/env bash
# Runs the README's quick-start and second-terminal commands as written, so the README cannot
# drift from the program. The commands are read from README.md's ```sh blocks (a line ending in a
# backslash continues on the next), never copied here:
#
# - `cargo run ...` starts a service (the devnet, the second node) in the background; it must keep
#   running until the end, then stop on SIGINT with exit status 0;
# - `cargo test ...` is skipped: it is the suite that runs this script;
# - `curl ...` is retried until its output shows what the README promises (see `expect`), or the
#   deadline passes; a curl command with no such promise here fails the script, so a new README
#   command gets a check.
#
#   tests/readme.sh                # README.md; README=other.md tests/readme.sh to try another copy
#
# Environment: HOME and XDG_DATA_HOME point at an empty temporary directory (a new user); the
# model cache is the caller's ($XDG_CACHE_HOME, else $HOME/.cache), so the model is fetched at most
# once. COCOON_WHEEL_DIR and DEADLINE_SECS (default 300) as in tests/fresh-home.sh. cargo builds
# into $CARGO_TARGET_DIR as usual (build first with `cargo build --release` to keep this short).
set -euo pipefail
cd "$(dirname "$0")/.."
readme=${README:-README.md}
deadline_secs=${DEADLINE_SECS:-300}
started=$(date +%s)

# cargo and rustup keep their homes; everything cocoon writes goes to a new, empty HOME.
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo} RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache}
home=$(mktemp -d "${TMPDIR:-/tmp}/cocoon-readme-home.XXXXXX")
export HOME=$home XDG_DATA_HOME=$home/.local/share XDG_CONFIG_HOME=$home/.config \
  XDG_STATE_HOME=$home/.local/state
unset XDG_RUNTIME_DIR RUST_LOG
if [ -n "${COCOON_WHEEL_DIR:-}" ]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS=$COCOON_WHEEL_DIR
fi
logs=$home/logs
mkdir "$logs"
# The README's second node keeps its data in /tmp/cocoon-extra: start it as new, as a reader would.
scratch=/tmp/cocoon-extra

pids=()
names=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$home" "$scratch"
}
trap cleanup EXIT
rm -rf "$scratch"

fail() {
  echo "readme: FAILED: $*" >&2
  for f in "$logs"/*; do echo "--- $f (last 30 lines)" >&2; tail -n 30 "$f" >&2; done
  exit 1
}

# The README's shell commands, one logical line each (NUL-terminated), in order.
commands() {
  python3 - "$readme" <<'PY'
import sys
lines, block = [], None
for raw in open(sys.argv[1], encoding="utf-8"):
    line = raw.rstrip("\n")
    if block is None:
        if line.strip() == "```sh":
            block = ""
        continue
    if line.strip() == "```":
        block = None
        continue
    block += line
    if block.endswith("\\"):
        block = block[:-1]
        continue
    if block.strip():
        lines.append(block.strip())
    block = ""
sys.stdout.write("".join(l + "\0" for l in lines))
PY
}

# What the README says a curl command shows: a pattern its output must contain.
expect() {
  case "$1" in
    *"/v1/chat/completions"*) echo 'data: [DONE]' ;;
    *"/v1/models"*) echo 'smollm2-135m-instruct' ;;
    *"/health"*) echo '"peer_id"' ;;
    *"/metrics"*) echo '# TYPE' ;;
    *) return 1 ;;
  esac
}

all_running() {
  local i
  for i in "${!pids[@]}"; do
    kill -0 "${pids[$i]}" 2>/dev/null || fail "'${names[$i]}' exited early"
  done
}

service() {
  local n=${#pids[@]}
  echo "readme: start: $1"
  bash -c "exec $1" >"$logs/service$n.out" 2>"$logs/service$n.err" &
  pids+=("$!")
  names+=("$1")
}

check() {
  local want out until
  want=$(expect "$1") || fail "no check for the README command '$1': add what it shows to expect() in tests/readme.sh"
  until=$(( $(date +%s) + deadline_secs ))
  while :; do
    all_running
    out=$(bash -c "$1" 2>&1) && [[ $out == *"$want"* ]] && break
    [ "$(date +%s)" -lt "$until" ] || fail "'$1' did not show '$want' within ${deadline_secs}s; last output: ${out:0:400}"
    sleep 0.5
  done
  echo "readme: ok: $1"
}

stop_all() {
  local i status until
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill -INT "${pids[$i]}"
    until=$(( $(date +%s) + deadline_secs ))
    while kill -0 "${pids[$i]}" 2>/dev/null; do
      [ "$(date +%s)" -lt "$until" ] || fail "'${names[$i]}' did not stop within ${deadline_secs}s of SIGINT"
      sleep 0.1
    done
    status=0
    wait "${pids[$i]}" || status=$?
    [ "$status" -eq 0 ] || fail "'${names[$i]}' exited $status after SIGINT"
    echo "readme: stopped: ${names[$i]}"
  done
  pids=()
}

ran=0
while IFS= read -r -d '' cmd; do
  case "$cmd" in
    "cargo test"*) echo "readme: skip (this suite runs it): $cmd" ;;
    "cargo run "*) service "$cmd" ;;
    "curl "*) check "$cmd" ;;
    *) fail "the README command '$cmd' is neither a service (cargo run), the tests nor a check (curl)" ;;
  esac
  ran=$((ran + 1))
done < <(commands)
[ "$ran" -ge 4 ] || fail "found only $ran commands in $readme"
all_running
stop_all
echo "readme: passed: $ran commands from $readme in $(( $(date +%s) - started ))s"
