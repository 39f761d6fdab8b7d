#!/usr/bin/env bash
# tests/http/heap_calls.sh SERVER — issue 15's "0 heap calls per request in steady state", from outside: starts
# `SERVER --port 0 --threads 1 --count-heap-calls` on each heap, makes the same round of requests (every
# endpoint, bad input, keep-alive, pipelining, new connections one at a time) twice to warm it up, reads the
# process's heap calls from /stats, makes the round three more times and reads them again. The perfloc server
# must have made none in between; the global-heap server at least one per request, which shows that the count
# sees the requests' memory (else the first check would hold vacuously).
#
# One connection at a time, so that the rounds never have more connections open than the warm-up had: Asio
# keeps a socket's reactor state in a pool that grows by one heap allocation per connection beyond that
# (examples/http/demo.sh's warm-up does the same for wrk's connections). Exits 77 (skipped) when the server does
# not count (a sanitizer build: its runtime owns malloc).
set -uo pipefail

server=$1
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

head -c 100000 /dev/urandom >"$work/body"
# One round: 16 requests on 8 connections.
round() {
  local url=$1
  curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null "$url/items?count=0" \
    "$url/items?count=20" "$url/items?count=10000" "$url/nope" "$url/items?count=x" || return 1
  curl -s -o /dev/null --data-binary 'hello' "$url/echo" || return 1
  curl -s -o /dev/null -H 'Expect: 100-continue' --data-binary 'hello' "$url/echo" || return 1
  curl -s -o /dev/null -H 'Expect:' --data-binary @"$work/body" "$url/echo" || return 1
  printf 'abcdef' | curl -s -o /dev/null -H 'Transfer-Encoding: chunked' --data-binary @- "$url/echo" || return 1
  curl -s -o /dev/null "$url/stats" || return 1
  raw 'GET /items?count=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\npingGET /items?count=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >/dev/null
  raw 'NOT A REQUEST\r\n\r\n' >/dev/null
  return 0
}
requests_per_round=16
heap_calls() { curl -s "$1/stats" | sed -n 's/.*"heap_calls":\([0-9a-z]*\).*/\1/p'; }

for heap in perfloc global; do
  start_server "$server" --port 0 --threads 1 --heap "$heap" --count-heap-calls
  if [[ $(heap_calls "$url") == null ]]; then
    echo "skipped: the $heap server does not count heap calls (a sanitizer's runtime owns malloc)"
    exit 77
  fi
  round "$url" && round "$url" || fail "$heap: a warm-up request failed"
  before=$(heap_calls "$url")
  for ((r = 0; r < 3; ++r)); do round "$url" || fail "$heap: a request failed"; done
  after=$(heap_calls "$url")
  # An empty answer would read as 0 in the arithmetic below, and pass the perfloc check vacuously.
  if [[ ! $before =~ ^[0-9]+$ || ! $after =~ ^[0-9]+$ ]]; then
    fail "$heap: /stats gave no heap_calls ([$before], [$after])"
  else
    calls=$((after - before))
    echo "$heap server: $calls heap calls in 3 rounds of $requests_per_round requests (after two rounds of warm-up)"
    if [[ $heap == perfloc ]]; then
      ((calls == 0)) && pass "perfloc: no heap call in steady state" || fail "perfloc: $calls heap calls in steady state"
    else
      ((calls >= 3 * requests_per_round)) && pass "global: at least one heap call per request" ||
        fail "global: only $calls heap calls for $((3 * requests_per_round)) requests: the count misses them"
    fi
  fi
  kill -TERM "$pid"
  wait "$pid" || fail "$heap: exit status $?"
  pid=
done
echo "$failures failure(s)"
((failures == 0))
