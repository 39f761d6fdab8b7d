#!/usr/bin/env bash
# examples/http/demo.sh SERVER [--seconds N] [--connections N] [--idle N] [--svg PATH] — the comparison that
# `tools/dev demo` prints: perfloc-http on perfloc, then on the global heap, each in its own process with the
# same settings, driven by wrk on 127.0.0.1.
#
# For each heap: a 1 s warm-up, then `wrk -t1 -c CONNECTIONS -d SECONDS --latency` on GET /items?count=20
# (requests/s, p50, p99); heap calls per request = the server's malloc-level allocation count
# (--count-heap-calls, examples/http/malloc_count.cpp) over the measured run divided by the requests served in
# it, both read from /stats before and after; peak RSS (VmHWM) after the load; then IDLE keep-alive connections
# (examples/http/idle_clients.py: one request each, then idle): the server's resident bytes (VmRSS) after,
# minus before, per connection. The perfloc server writes the top chunk's picture (SIGUSR1) mid-load and, at
# SIGTERM, prints the release hook's histogram of bytes per request and its report.
#
# One io_context thread for the server, one wrk thread: on a 2-CPU machine they then have a CPU each. The
# runs are short, and niced: on a shared machine the throughput figures move with the neighbours' load.
set -euo pipefail

server=$1
shift
seconds=5 connections=32 idle=10000 svg=top-chunk.svg
while (($#)); do
  case $1 in
    --seconds) seconds=$2 ;;
    --connections) connections=$2 ;;
    --idle) idle=$2 ;;
    --svg) svg=$2 ;;
    *) echo "usage: demo.sh SERVER [--seconds N] [--connections N] [--idle N] [--svg PATH]" >&2; exit 2 ;;
  esac
  shift 2
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"' EXIT

# Each idle connection costs the server a descriptor and the client one: raise the soft limit if it is lower.
if (($(ulimit -n) < idle + 256)); then
  hard=$(ulimit -Hn)
  [[ $hard == unlimited ]] || ((hard >= idle + 256)) || {
    echo "demo.sh: $idle idle connections need $((idle + 256)) descriptors; the hard limit is $hard" >&2
    exit 1
  }
  echo "(raised the soft limit on open files from $(ulimit -n) to $((idle + 256)) for the idle connections)"
  ulimit -n $((idle + 256))
fi

json_number() { sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p"; }
# wrk's latency ("812.00us", "1.23ms", "1.01s") in microseconds.
microseconds() {
  awk -v t="$1" 'BEGIN { n = t + 0; if (t ~ /us$/) print n; else if (t ~ /ms$/) print n * 1000;
                         else if (t ~ /s$/) print n * 1000000; else print t }'
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

run() {  # run HEAP: prints one line of the table into $work/HEAP.row
  local heap=$1 port stats_before stats_after
  local out="$work/$heap.out" extra=()
  [[ $heap == perfloc ]] && extra=(--svg "$svg")
  nice -n 5 "$server" --port 0 --threads 1 --heap "$heap" --count-heap-calls "${extra[@]}" >"$out" 2>&1 &
  pid=$!
  for ((i = 0; i < 100; ++i)); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || { cat "$out" >&2; echo "demo.sh: the $heap server did not start" >&2; exit 1; }
  local url="http://127.0.0.1:$port/items?count=20"
  nice -n 5 wrk -t1 -c"$connections" -d1s "$url" >/dev/null  # warm-up
  stats_before=$(curl -s "http://127.0.0.1:$port/stats")
  local picture=
  if [[ $heap == perfloc ]]; then
    (sleep "$(awk -v s="$seconds" 'BEGIN { print s / 2 }')" && kill -USR1 "$pid") &
    picture=$!
  fi
  nice -n 5 wrk -t1 -c"$connections" -d"${seconds}s" --latency "$url" >"$work/$heap.wrk"
  [[ -z $picture ]] || wait "$picture"
  stats_after=$(curl -s "http://127.0.0.1:$port/stats")
  local requests calls peak_kib
  requests=$(($(json_number requests <<<"$stats_after") - $(json_number requests <<<"$stats_before")))
  calls=$(($(json_number heap_calls <<<"$stats_after") - $(json_number heap_calls <<<"$stats_before")))
  # The mid-load picture's own allocations are not the requests'.
  calls=$((calls - $(sed -n 's/.*the picture made \([0-9]*\) heap calls.*/\1/p' "$out" | head -n1 | grep . || echo 0)))
  peak_kib=$(status_kib "$pid" VmHWM)

  # Idle keep-alive connections: resident bytes per connection.
  local rss_before rss_after
  rss_before=$(status_kib "$pid" VmRSS)
  mkfifo "$work/idle.in"
  nice -n 5 python3 "$here/idle_clients.py" "$port" "$idle" <"$work/idle.in" >"$work/idle.out" &
  local clients=$!
  exec 5>"$work/idle.in"
  for ((i = 0; i < 1200; ++i)); do
    grep -q ready "$work/idle.out" 2>/dev/null && break
    kill -0 "$clients" 2>/dev/null || break
    sleep 0.1
  done
  grep -q ready "$work/idle.out" || { echo "demo.sh: the idle clients did not all connect" >&2; exit 1; }
  sleep 0.5
  rss_after=$(status_kib "$pid" VmRSS)
  exec 5>&-
  wait "$clients"
  rm -f "$work/idle.in"

  kill -TERM "$pid"
  local status=0
  wait "$pid" || status=$?
  pid=
  ((status == 0)) || { cat "$out" >&2; echo "demo.sh: the $heap server exited with $status" >&2; exit 1; }

  local rps p50 p99
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/$heap.wrk")
  p50=$(microseconds "$(awk '$1 == "50%" { print $2 }' "$work/$heap.wrk")")
  p99=$(microseconds "$(awk '$1 == "99%" { print $2 }' "$work/$heap.wrk")")
  printf '%s %s %s %s %s %s %s %s\n' "$heap" "$requests" "$rps" "$p50" "$p99" "$calls" "$peak_kib" \
    "$(((rss_after - rss_before) * 1024 / idle))" >"$work/$heap.row"
}

echo "perfloc-http under wrk on 127.0.0.1: GET /items?count=20, ${connections} connections, ${seconds} s per heap" \
  "(after a 1 s warm-up), then ${idle} idle keep-alive connections; each server in its own process"
for heap in perfloc global; do
  echo "  running the $heap server..."
  run "$heap"
done

echo
echo "perfloc server's output at SIGTERM:"
sed -e '/^listening on/d' -e 's/^/  /' "$work/perfloc.out"
echo
printf '%-8s %9s %11s %8s %8s %13s %10s %15s\n' heap requests requests/s "p50 us" "p99 us" "heap calls/req" \
  "peak RSS" "idle B/conn"
for heap in perfloc global; do
  read -r name requests rps p50 p99 calls peak idle_bytes <"$work/$heap.row"
  printf '%-8s %9s %11s %8.0f %8.0f %14.3f %6s KiB %15s\n' "$name" "$requests" "$rps" "$p50" "$p99" \
    "$(awk -v c="$calls" -v r="$requests" 'BEGIN { print (r > 0 ? c / r : 0) }')" "$peak" "$idle_bytes"
done
read -r _ _ rps_p _ p99_p _ _ idle_p <"$work/perfloc.row"
read -r _ _ rps_g _ p99_g _ _ idle_g <"$work/global.row"
echo
awk -v a="$rps_p" -v b="$rps_g" -v c="$p99_p" -v d="$p99_g" -v e="$idle_p" -v f="$idle_g" 'BEGIN {
  printf "perfloc / global: throughput %.2fx (target >= 1.0), p99 %.2fx (target <= 1.0), idle bytes per connection %.2fx (target <= 1.0)\n",
         a / b, c / d, (f > 0 ? e / f : 0) }'
echo "heap calls/req: malloc-level allocations (malloc, calloc, realloc, aligned) in the server process during"
echo "the measured run (less the mid-load picture's own), per request served. idle B/conn: the server's resident memory (VmRSS) with ${idle}"
echo "idle keep-alive connections open, minus before, per connection. Shared machine: throughput moves with load."
echo "The top chunk mid-load: $svg"
