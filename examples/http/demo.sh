#!/usr/bin/env bash
# examples/http/demo.sh SERVER [--seconds N] [--rounds N] [--connections N] [--idle N] [--svg PATH] [--json PATH]
# — the comparison that `tools/dev demo` prints: perfloc-http on perfloc and on the global heap, each in its
# own process with the same settings, driven by wrk on 127.0.0.1. --json PATH also writes each heap's row as
# a JSON line there (bench/run.py reads it: `tools/dev bench` runs this same comparison).
#
# Both servers start (one io_context thread each) and get a 1 s warm-up. Then ROUNDS rounds (default 3), each
# running `wrk -t1 -c CONNECTIONS -d SECONDS --latency` on GET /items?count=20 against the perfloc server, then
# against the global one: alternating, so that a change in the machine's load hits both alike. Requests/s, p50
# and p99 are the medians of the rounds. Heap calls per request = the server's malloc-level allocation count
# (--count-heap-calls, bench/heap_calls.hpp) over all rounds, divided by the requests it served meanwhile, both
# read from /stats (whose heap_calls leaves out the observers' own: the /stats answers and the mid-load
# picture). The warm-up opens as many connections as each round, so the rounds are a steady state for the
# connections too: Asio keeps a socket's reactor state in a pool that grows by one heap allocation for each
# connection beyond the most it has had open at once. Server CPU time per request = its user + system time
# over the rounds (/proc/PID/stat) over the same requests: unlike requests/s and latency, which follow the share
# of the CPUs that wrk and the neighbours leave the server, it says what a request costs it. Peak RSS (VmHWM)
# after the rounds; the perfloc server's just before its picture, in the middle of its last round (the picture
# pages in about 0.8 MiB of library code that the requests never run). Then,
# for each server, IDLE keep-alive connections (examples/http/idle_clients.py: one request each, then idle):
# its resident bytes (VmRSS) with them open, minus before, per connection. The perfloc server writes the top
# chunk's picture (SIGUSR1) in the middle of its last round and, at SIGTERM, prints the release hook's
# histogram of bytes per request and its report.
#
# On a 2-CPU machine the loaded server and wrk have a CPU each. Everything runs niced: on a shared machine the
# throughput figures move with the neighbours' load.
set -euo pipefail

server=$1
shift
seconds=3 rounds=3 connections=32 idle=10000 svg=top-chunk.svg json=
while (($#)); do
  case $1 in
    --seconds) seconds=$2 ;;
    --rounds) rounds=$2 ;;
    --connections) connections=$2 ;;
    --idle) idle=$2 ;;
    --svg) svg=$2 ;;
    --json) json=$2 ;;
    *)
      echo "usage: demo.sh SERVER [--seconds N] [--rounds N] [--connections N] [--idle N] [--svg PATH] [--json PATH]" >&2
      exit 2
      ;;
  esac
  shift 2
done
heaps=(perfloc global)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
declare -A pid port
stop_all() {
  local p
  for p in "${pid[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop_all EXIT

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
# The CPU time a process has used (user + system), in clock ticks (fields 14 and 15 of /proc/PID/stat; the
# command name, field 2, is in parentheses and has no space here).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
stats() { curl -s "http://127.0.0.1:${port[$1]}/stats"; }
load() { nice -n 5 wrk -t1 -c"$connections" -d"$2" --latency "http://127.0.0.1:${port[$1]}/items?count=20"; }

echo "perfloc-http under wrk on 127.0.0.1: GET /items?count=20, ${connections} connections, ${rounds} rounds of" \
  "${seconds} s per heap, alternating (after a 1 s warm-up), then ${idle} idle keep-alive connections;" \
  "each server in its own process"
for heap in "${heaps[@]}"; do
  extra=()
  [[ $heap == perfloc ]] && extra=(--svg "$svg")
  # Made here, not by the redirection below: that happens in the child, which may not have run yet when the
  # loop first reads the file (sed on a missing file ends the script: a loaded machine lost runs to it).
  : >"$work/$heap.out"
  nice -n 5 "$server" --port 0 --threads 1 --heap "$heap" --count-heap-calls "${extra[@]}" >"$work/$heap.out" 2>&1 &
  pid[$heap]=$!
  for ((i = 0; i < 100; ++i)); do
    port[$heap]=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/$heap.out")
    [[ -n ${port[$heap]} ]] && break
    sleep 0.1
  done
  [[ -n ${port[$heap]} ]] || { cat "$work/$heap.out" >&2; echo "demo.sh: the $heap server did not start" >&2; exit 1; }
  load "$heap" 1s >/dev/null  # warm-up
  stats "$heap" >"$work/$heap.before"
  cpu_ticks "${pid[$heap]}" >"$work/$heap.cpu"
done

for ((round = 1; round <= rounds; ++round)); do
  echo "  round $round of $rounds..."
  for heap in "${heaps[@]}"; do
    picture=
    if [[ $heap == perfloc ]] && ((round == rounds)); then
      # The picture pages in library code the requests never run (about 0.8 MiB of libstdc++ and libc text,
      # resident from then on): the perfloc server's peak RSS is read just before it, in its last round.
      (
        sleep "$(awk -v s="$seconds" 'BEGIN { print s / 2 }')"
        status_kib "${pid[perfloc]}" VmHWM >"$work/perfloc.peak_before_picture"
        kill -USR1 "${pid[perfloc]}"
      ) &
      picture=$!
    fi
    load "$heap" "${seconds}s" >"$work/$heap.wrk"
    [[ -z $picture ]] || wait "$picture"
    awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }' "$work/$heap.wrk" >>"$work/$heap.rps"
    microseconds "$(awk '$1 == "50%" { print $2 }' "$work/$heap.wrk")" >>"$work/$heap.p50"
    microseconds "$(awk '$1 == "99%" { print $2 }' "$work/$heap.wrk")" >>"$work/$heap.p99"
  done
done

for heap in "${heaps[@]}"; do
  stats "$heap" >"$work/$heap.after"
  requests=$(($(json_number requests <"$work/$heap.after") - $(json_number requests <"$work/$heap.before")))
  calls=$(($(json_number heap_calls <"$work/$heap.after") - $(json_number heap_calls <"$work/$heap.before")))
  peak_kib=$(status_kib "${pid[$heap]}" VmHWM)
  [[ -s $work/$heap.peak_before_picture ]] && peak_kib=$(cat "$work/$heap.peak_before_picture")
  # The server's CPU time per request over the rounds: what a request costs the server, whatever the share
  # of the CPUs the neighbours and wrk leave it (requests/s and latency move with those).
  cpu_us=$(awk -v t="$(($(cpu_ticks "${pid[$heap]}") - $(cat "$work/$heap.cpu")))" -v hz="$(getconf CLK_TCK)" \
    -v r="$requests" 'BEGIN { printf "%.2f", (r > 0 ? t * 1e6 / hz / r : 0) }')

  # Idle keep-alive connections: resident bytes per connection.
  echo "  $idle idle connections to the $heap server..."
  rss_before=$(status_kib "${pid[$heap]}" VmRSS)
  mkfifo "$work/idle.in"
  nice -n 5 python3 "$here/idle_clients.py" "${port[$heap]}" "$idle" <"$work/idle.in" >"$work/idle.out" &
  clients=$!
  exec 5>"$work/idle.in"
  for ((i = 0; i < 1200; ++i)); do
    grep -q ready "$work/idle.out" 2>/dev/null && break
    kill -0 "$clients" 2>/dev/null || break
    sleep 0.1
  done
  grep -q ready "$work/idle.out" || { echo "demo.sh: the idle clients did not all connect" >&2; exit 1; }
  sleep 0.5
  rss_after=$(status_kib "${pid[$heap]}" VmRSS)
  exec 5>&-
  wait "$clients"
  rm -f "$work/idle.in"

  kill -TERM "${pid[$heap]}"
  status=0
  wait "${pid[$heap]}" || status=$?
  unset "pid[$heap]"
  ((status == 0)) || { cat "$work/$heap.out" >&2; echo "demo.sh: the $heap server exited with $status" >&2; exit 1; }
  printf '%s %s %s %s %s %s %s %s %s\n' "$heap" "$requests" "$(median <"$work/$heap.rps")" \
    "$(median <"$work/$heap.p50")" "$(median <"$work/$heap.p99")" "$calls" "$peak_kib" \
    "$(((rss_after - rss_before) * 1024 / idle))" "$cpu_us" >"$work/$heap.row"
done

echo
echo "perfloc server's output at SIGTERM:"
sed -e '/^listening on/d' -e 's/^/  /' "$work/perfloc.out"
echo
printf '%-8s %9s %11s %8s %8s %14s %10s %12s %11s\n' heap requests requests/s "p50 us" "p99 us" "heap calls/req" \
  "peak RSS" "idle B/conn" "CPU us/req"
for heap in "${heaps[@]}"; do
  read -r name requests rps p50 p99 calls peak idle_bytes cpu_us <"$work/$heap.row"
  printf '%-8s %9s %11.0f %8.0f %8.0f %14.3f %6s KiB %12s %11.2f\n' "$name" "$requests" "$rps" "$p50" "$p99" \
    "$(awk -v c="$calls" -v r="$requests" 'BEGIN { print (r > 0 ? c / r : 0) }')" "$peak" "$idle_bytes" "$cpu_us"
done
if [[ -n $json ]]; then
  : >"$json"
  for heap in "${heaps[@]}"; do
    read -r name requests rps p50 p99 calls peak idle_bytes cpu_us <"$work/$heap.row"
    printf '{"heap":"%s","requests":%s,"requests_per_s":%s,"p50_us":%s,"p99_us":%s,"heap_calls":%s,' \
      "$name" "$requests" "$rps" "$p50" "$p99" "$calls" >>"$json"
    printf '"peak_rss_kib":%s,"idle_bytes_per_connection":%s,"idle_connections":%s,"rounds":%s,"seconds":%s,' \
      "$peak" "$idle_bytes" "$idle" "$rounds" "$seconds" >>"$json"
    printf '"cpu_us_per_request":%s,"connections":%s}\n' "$cpu_us" "$connections" >>"$json"
  done
fi
read -r _ _ rps_p _ p99_p _ _ idle_p cpu_p <"$work/perfloc.row"
read -r _ _ rps_g _ p99_g _ _ idle_g cpu_g <"$work/global.row"
echo
awk -v a="$rps_p" -v b="$rps_g" -v c="$p99_p" -v d="$p99_g" -v e="$idle_p" -v f="$idle_g" -v g="$cpu_p" -v h="$cpu_g" 'BEGIN {
  printf "perfloc / global: throughput %.2fx (target >= 1.0), p99 %.2fx (target <= 1.0), idle bytes per connection %.2fx (target <= 1.0)\n",
         a / b, c / d, (f > 0 ? e / f : 0)
  printf "                  server CPU time per request %.2fx\n", (h > 0 ? g / h : 0) }'
echo "requests/s, p50, p99: medians of the ${rounds} rounds. heap calls/req: malloc-level allocations (malloc,"
echo "calloc, realloc, aligned) in the server process during the rounds (less /stats' and the mid-load picture's"
echo "own), per request served. idle B/conn: the server's resident memory (VmRSS) with ${idle} idle keep-alive"
echo "connections open, minus before, per connection. CPU us/req: the server's CPU time (user + system) over the"
echo "rounds, per request. Shared machine: throughput and latency move with the neighbours' load and wrk's share of"
echo "the CPUs; CPU time per request much less."
echo "The top chunk mid-load: $svg"
