# tests/http/common.sh — sourced by run.sh and heap_calls.sh: a scratch folder ($work), the checks'
# bookkeeping (pass, fail, check, $failures) and start_server. The server started last is killed on exit.
work=$(mktemp -d)
failures=0
pid=

cleanup() {
  [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  printf 'FAIL: %s\n' "$*"
  failures=$((failures + 1))
}
pass() { printf 'ok: %s\n' "$*"; }
check() {  # check NAME EXPECTED ACTUAL
  if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1: expected [$2], got [${3:0:300}]"; fi
}

# start_server COMMAND...: runs the server in the background (output in $work/out and $work/err) and sets pid,
# port and url from its `listening on` line; ends the script if that line does not come.
start_server() {
  # Emptied here, not by the redirection below: that happens in the child, which may not have run yet when the
  # loop first reads the file, and a server started before (heap_calls.sh starts two) left its line there.
  : >"$work/out"
  "$@" >"$work/out" 2>"$work/err" &
  pid=$!
  port=
  local i
  for ((i = 0; i < 600; ++i)); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/out")
    [[ -n $port ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $port ]] || { cat "$work/out" "$work/err"; echo "FAIL: no 'listening on' line"; exit 1; }
  url="http://127.0.0.1:$port"
}

# A raw exchange: sends $1 (printf format) on a new connection to $port, then reads until the server closes
# (at most 20 s: a server that never closes fails the check reading the output).
raw() {
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf "$1" >&3
  timeout 20 cat <&3
  exec 3<&-
}
