# Sourced by tests/fresh-home.sh and tests/sdk/run.sh: a new user's machine. HOME and the XDG base
# directories point at a new, empty directory, $home, removed on exit together with the process
# whose id the caller keeps in $pid; pip takes the development model's wheel from
# COCOON_WHEEL_DIR when that is set (the download code runs either way).
#   . tests/empty-home.sh NAME          # $home is ${TMPDIR:-/tmp}/cocoon-NAME.XXXXXX
home=$(mktemp -d "${TMPDIR:-/tmp}/cocoon-$1.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$home"
}
trap cleanup EXIT
export HOME=$home XDG_DATA_HOME=$home/.local/share XDG_CACHE_HOME=$home/.cache \
  XDG_CONFIG_HOME=$home/.config XDG_STATE_HOME=$home/.local/state
unset XDG_RUNTIME_DIR RUST_LOG
if [ -n "${COCOON_WHEEL_DIR:-}" ]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS=$COCOON_WHEEL_DIR
fi
