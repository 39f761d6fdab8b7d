#!/usr/bin/env bash
# tests/http/run.sh SERVER [ARGS...] — checks examples/http (perfloc-http) from outside, as its users would:
# with curl and raw sockets (bash's /dev/tcp). Starts `SERVER --port 0 --idle-timeout 3 ARGS...`, reads the
# port from its `listening on` line, then checks each endpoint, Expect: 100-continue, keep-alive, pipelining,
# connections left idle after requests of every kind (on a second server, `--idle-timeout 600 ARGS...`: what
# their chunks hold, and that they answer again), every bad input (malformed, oversized header, oversized body, slow sender, idle client, disconnects
# mid-request and mid-response), /stats back to its idle figures afterwards, and SIGTERM: the request in flight finishes,
# exit status 0, the report says "0 live chunks".
#
# No timed assertion: the waits below are bounded by counts of attempts, only to let the server notice a
# close; the timeouts are the server's own behaviour under test, with generous limits around them.
set -uo pipefail

server=$1
shift
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap '' PIPE  # writing to a connection the server closed is part of the test

# ---- Start ------------------------------------------------------------------------------------------------
start_server "$server" --port 0 --idle-timeout 3 "$@"
echo "server on port $port: $server $*"

# curl's status code, body in $work/body.
status_of() { curl -s -o "$work/body" -w '%{http_code}' "$@"; }
# The idle figures /stats reports about itself: one connection, one request.
idle_figures() { curl -s "$url/stats" | sed -E 's/.*("live_chunks":[0-9]+,"in_use_bytes":[0-9]+).*("chunks_by_label":\{[^}]*\}).*/\1 \2/'; }

baseline=$(idle_figures)
echo "idle figures: $baseline"
[[ $baseline == *'"live_chunks":'* ]] || fail "/stats answers with live_chunks: $baseline"

# ---- Endpoints ----------------------------------------------------------------------------------------------
check "GET /items?count=0 -> 200" 200 "$(status_of "$url/items?count=0")"
check "GET /items?count=0 body" '[]' "$(cat "$work/body")"
check "GET /items?count=3 body" '[{"id":0,"name":"item-0"},{"id":1,"name":"item-1"},{"id":2,"name":"item-2"}]' \
  "$(curl -s "$url/items?count=3")"
check "GET /items is application/json" 'application/json' \
  "$(curl -s -o /dev/null -w '%{content_type}' "$url/items?count=1")"
check "GET /items?count=10000 -> 200" 200 "$(status_of "$url/items?count=10000")"
check "count=10000: 10000 objects" 10000 "$(grep -o '{"id":' "$work/body" | wc -l)"
check "count=10000: the last is item-9999" '{"id":9999,"name":"item-9999"}]' "$(tail -c 31 "$work/body")"
check "GET /items?count=10001 -> 400" 400 "$(status_of "$url/items?count=10001")"
check "GET /items?count=-1 -> 400" 400 "$(status_of "$url/items?count=-1")"
check "GET /items?count=x -> 400" 400 "$(status_of "$url/items?count=x")"
check "POST /echo -> 200" 200 "$(status_of --data-binary 'hello, perfloc' "$url/echo")"
check "POST /echo body" 'hello, perfloc' "$(cat "$work/body")"
head -c 1048576 /dev/urandom >"$work/mib"
check "POST /echo of exactly 1 MiB -> 200" 200 "$(status_of -H 'Content-Type:' --data-binary @"$work/mib" "$url/echo")"
cmp -s "$work/mib" "$work/body" && pass "1 MiB echoed intact" || fail "1 MiB echo differs"
check "POST /echo chunked" 'abcdef' \
  "$(printf 'abcdef' | curl -s -H 'Transfer-Encoding: chunked' --data-binary @- "$url/echo")"
# Expect: 100-continue (RFC 9110 10.1.1): the server answers 100 before reading the body, or a final status
# without reading it. curl 7.88 sends Expect by itself only for bodies over 1 MiB; without a 100 it waits 1 s
# ("Done waiting for 100-continue") and sends the body anyway.
head -c 2048 /dev/urandom >"$work/2k"
curl -sv -H 'Expect: 100-continue' --data-binary @"$work/2k" -o "$work/body" "$url/echo" 2>"$work/verbose"
grep -q '^< HTTP/1.1 100 Continue' "$work/verbose" && ! grep -q 'Done waiting for 100-continue' "$work/verbose" &&
  pass "Expect: 100-continue -> 100 Continue before the body" ||
  fail "Expect: 100-continue: no 100 Continue: $(grep -E '^[<>*] (HTTP|Expect|Done)' "$work/verbose" | tr '\n' ' ')"
grep -q '^< HTTP/1.1 200 OK' "$work/verbose" && cmp -s "$work/2k" "$work/body" &&
  pass "Expect: 100-continue -> then 200 and the body echoed" || fail "Expect: 100-continue: no echo after 100"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n' >&3
interim=
IFS= read -r -t 20 interim <&3
printf 'pong' >&3
final=$(timeout 20 cat <&3)
exec 3<&-
check "Expect: 100-continue (raw): 100 Continue before the body is sent" 'HTTP/1.1 100 Continue' "${interim%$'\r'}"
[[ $final == *'HTTP/1.1 200 OK'*pong ]] && pass "Expect: 100-continue (raw): then 200 and the body" ||
  fail "Expect: 100-continue (raw): then [$final]"
answer=$(raw 'POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nping')
check "Expect in HTTP/1.0 is ignored: no 100" 'HTTP/1.0 200 OK' "$(head -n1 <<<"$answer" | tr -d '\r')"
head -c 1048577 /dev/zero >"$work/too-big"
check "Expect: 100-continue with a body over 1 MiB -> 413, the body not sent" '413 0' \
  "$(curl -s -o /dev/null -w '%{http_code} %{size_upload}' -H 'Expect: 100-continue' --data-binary @"$work/too-big" \
    "$url/echo")"
check "GET /stats is application/json" 'application/json' \
  "$(curl -s -o /dev/null -w '%{content_type}' "$url/stats")"
stats=$(curl -s "$url/stats")
for key in live_chunks in_use_bytes committed_bytes chunks_by_label; do
  [[ $stats == *"\"$key\":"* ]] && pass "/stats has $key" || fail "/stats lacks $key: $stats"
done
check "GET /nope -> 404" 404 "$(status_of "$url/nope")"
check "POST /items -> 404" 404 "$(status_of -X POST "$url/items?count=1")"
check "GET /echo -> 404" 404 "$(status_of "$url/echo")"

# ---- Keep-alive and pipelining ----------------------------------------------------------------------------
reuse=$(curl -sv "$url/items?count=1" "$url/items?count=2" -o /dev/null -o /dev/null 2>&1 | grep -c 'Re-using existing connection')
check "keep-alive: curl reuses the connection" 1 "$reuse"
pipelined=$(raw 'GET /items?count=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\npingGET /items?count=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
check "pipelining: three answers on one connection" 3 "$(grep -o 'HTTP/1.1 200 OK' <<<"$pipelined" | wc -l)"
[[ $pipelined == *'[{"id":0,"name":"item-0"}]'*ping*'{"id":1,"name":"item-1"}]' ]] &&
  pass "pipelining: the answers in order" || fail "pipelining: answers out of order: $pipelined"

# ---- Idle keep-alive connections: their connection chunk only, and nothing of their requests --------------
# On a server of their own, whose idle timeout (10 minutes) the checks cannot reach however loaded the machine
# (the main one closes idle connections after 3 s): in a subshell, which counts its own failures.
idle_connections() {
  trap '[[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"' EXIT
  work=$(mktemp -d)
  failures=0
  start_server "$server" --port 0 --idle-timeout 600 "$@"
  # answer FD: reads one answer (status line, header, Content-Length body) from connection FD; prints its status.
  answer_on() {
    local fd=$1 status= line length=0 body
    IFS= read -r -t 20 -u "$fd" status || return 1
    while IFS= read -r -t 20 -u "$fd" line; do
      line=${line%$'\r'}
      [[ -z $line ]] && break
      [[ ${line,,} == content-length:* ]] && length=${line#*: }
    done
    ((length == 0)) || read -r -N "$length" -t 20 -u "$fd" body || return 1
    printf '%s\n' "${status%$'\r'}"
  }
  figure() { sed -n "s/.*\"$1\":{[^}]*\"$2\":\([0-9]*\).*/\1/p"; }
  head -c 100000 /dev/zero | tr '\0' a >"$work/100k"
  # Seven connections, each left idle after requests of another kind: small and large answers, a large body
  # (read in several pieces), pipelining, Expect: 100-continue, 404, a 400 that keeps the connection.
  declare -a idle_fds
  for kind in small large body pipelined continue missing bad_count; do
    exec {fd}<>"/dev/tcp/127.0.0.1/$port"
    idle_fds+=("$fd")
    case $kind in
      small) printf 'GET /items?count=0 HTTP/1.1\r\nHost: x\r\n\r\n' >&$fd ;;
      large) printf 'GET /items?count=10000 HTTP/1.1\r\nHost: x\r\n\r\n' >&$fd ;;
      body) { printf 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n'; cat "$work/100k"; } >&$fd ;;
      pipelined) printf 'GET /items?count=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\npingGET /items?count=2 HTTP/1.1\r\nHost: x\r\n\r\n' >&$fd ;;
      continue) printf 'POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n' >&$fd ;;
      missing) printf 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n' >&$fd ;;
      bad_count) printf 'GET /items?count=x HTTP/1.1\r\nHost: x\r\n\r\n' >&$fd ;;
    esac
    statuses=$(answer_on "$fd")
    case $kind in
      pipelined) statuses+=" $(answer_on "$fd") $(answer_on "$fd")" ;;
      continue) printf 'pong' >&$fd && statuses+=" $(answer_on "$fd")" ;;
    esac
    expected='HTTP/1.1 200 OK'
    case $kind in
      pipelined) expected='HTTP/1.1 200 OK HTTP/1.1 200 OK HTTP/1.1 200 OK' ;;
      continue) expected='HTTP/1.1 100 Continue HTTP/1.1 200 OK' ;;
      missing) expected='HTTP/1.1 404 Not Found' ;;
      bad_count) expected='HTTP/1.1 400 Bad Request' ;;
    esac
    check "idle connection after a $kind request: answered" "$expected" "$statuses"
  done
  # The server releases a request's chunk after the answer's last bytes are written, possibly after the client
  # read them: ask again, up to 100 times, until /stats' own request chunk is the only one.
  for ((i = 0; i < 100; ++i)); do
    idle_stats=$(curl -s "$url/stats")
    [[ $idle_stats != *'"heap":"perfloc"'* || $(figure chunks_by_label request <<<"$idle_stats") == 1 ]] && break
    sleep 0.1
  done
  if [[ $idle_stats == *'"heap":"perfloc"'* ]]; then
    # /stats' own connection and request are the only other ones.
    check "idle connections: a connection chunk each (and /stats' own)" 8 "$(figure chunks_by_label connection <<<"$idle_stats")"
    check "idle connections: no request chunk but /stats' own" 1 "$(figure chunks_by_label request <<<"$idle_stats")"
    # Nothing a request used stays in its connection's chunk, and none ever held more than it holds idle: every
    # idle connection chunk, whatever its requests, holds what the largest peak of any of them is, so that the
    # chunks opened where connections start learn a first region that fits an idle connection. /stats' own
    # connection, in the middle of its request, holds less: its idle wait's memory went back to its chunk when
    # the wait completed. What it holds is measured below, once it is the only connection.
    in_use=$(figure in_use_by_label connection <<<"$idle_stats")
    peak=$(figure max_peak_by_label connection <<<"$idle_stats")
  fi
  # Idle, then a request: each connection still answers, and closes when asked.
  for fd in "${idle_fds[@]}"; do
    printf 'GET /items?count=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&$fd
    check "idle connection $fd, then a request: answered" 'HTTP/1.1 200 OK' "$(answer_on "$fd")"
    exec {fd}<&-
  done
  if [[ $idle_stats == *'"heap":"perfloc"'* ]]; then
    # The server closes the connections after their answers, possibly after the client read them: ask again,
    # up to 100 times, until /stats' own connection is the only one.
    for ((i = 0; i < 100; ++i)); do
      alone_stats=$(curl -s "$url/stats")
      (($(figure chunks_by_label connection <<<"$alone_stats") == 1)) && break
      sleep 0.1
    done
    stats_own=$(figure in_use_by_label connection <<<"$alone_stats")
    check "idle connections: /stats' own connection holds less than the largest peak" 1 "$((stats_own < peak))"
    check "idle connections: each holds its largest peak, whatever its requests (7 x max peak + /stats' own)" \
      "$((7 * peak + stats_own))" "$in_use"
  fi
  kill -TERM "$pid"
  wait "$pid" || fail "idle connections' server: exit status $?"
  pid=
  ((failures == 0)) || { echo "--- the idle connections' server's output:"; cat "$work/out" "$work/err"; }
  exit "$((failures < 100 ? failures : 100))"
}
(idle_connections "$@")
failures=$((failures + $?))

# ---- Bad input ------------------------------------------------------------------------------------------------
answer=$(raw 'NOT A REQUEST\r\n\r\n')
check "malformed request line -> 400 and close" 'HTTP/1.1 400 Bad Request' "$(head -n1 <<<"$answer" | tr -d '\r')"
answer=$(raw 'GET /items?count=1 HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\nGET /items?count=1 HTTP/1.1\r\n\r\n')
check "malformed header -> 400" 'HTTP/1.1 400 Bad Request' "$(head -n1 <<<"$answer" | tr -d '\r')"
check "malformed header: the connection closes, no second answer" 1 "$(grep -c '^HTTP/1.1' <<<"$answer")"
answer=$(raw 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n')
check "bad Content-Length -> 400" 'HTTP/1.1 400 Bad Request' "$(head -n1 <<<"$answer" | tr -d '\r')"
big=$(head -c 9000 /dev/zero | tr '\0' a)
check "header section over 8 KiB -> 431" 431 "$(status_of -H "X-Big: $big" "$url/items?count=1")"
check "header section just under 8 KiB -> 200" 200 "$(status_of -H "X-Big: ${big:0:7900}" "$url/items?count=1")"
check "body over 1 MiB -> 413" 413 "$(status_of -H 'Expect:' --data-binary @"$work/too-big" "$url/echo")"
check "chunked body over 1 MiB -> 413" 413 \
  "$(status_of -H 'Expect:' -H 'Transfer-Encoding: chunked' --data-binary @"$work/too-big" "$url/echo")"

# A slow sender: the header a few bytes at a time, never complete within the idle timeout (3 s).
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /items?count=1 HTTP/1.1\r\n' >&3
for ((i = 0; i < 40; ++i)); do
  printf 'X-%d: y\r\n' "$i" >&3 2>/dev/null || break
  sleep 0.25
done
slow=$(timeout 20 cat <&3 2>/dev/null)
status=$?
exec 3<&-
check "slow header sender: closed without an answer" "0:" "$status:$slow"
# An idle client: connects and sends nothing.
exec 3<>"/dev/tcp/127.0.0.1/$port"
idle=$(timeout 20 cat <&3 2>/dev/null)
status=$?
exec 3<&-
check "idle client: closed after the idle timeout" "0:" "$status:$idle"
# An idle keep-alive connection after a request.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /items?count=1 HTTP/1.1\r\nHost: x\r\n\r\n' >&3
kept=$(timeout 20 cat <&3 2>/dev/null)
status=$?
exec 3<&-
check "idle keep-alive connection: one answer, then closed" "0:1" "$status:$(grep -c '^HTTP/1.1 200' <<<"$kept")"

# Disconnects: mid-header, mid-body, and mid-response (a large pipelined answer left unread).
for partial in 'GET /items?count=1 HTTP/1.1\r\nHo' 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc'; do
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf "$partial" >&3
  exec 3<&-
done
for ((c = 0; c < 4; ++c)); do
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  for ((i = 0; i < 30; ++i)); do printf 'GET /items?count=10000 HTTP/1.1\r\nHost: x\r\n\r\n' >&3; done
  head -c 1000 <&3 >/dev/null  # the answer has started
  exec 3<&-
done
# Many connections at once, each closed right away (the server may be anywhere in its work).
for ((c = 0; c < 20; ++c)); do
  curl -s -m 0.05 "$url/items?count=10000" -o /dev/null &
done
wait $(jobs -p | grep -v "^$pid\$") 2>/dev/null

# /stats back to its idle figures: every chunk of the connections above released. The server notices the
# closes on its own time: ask again, up to 100 times.
after=
for ((i = 0; i < 100; ++i)); do
  after=$(idle_figures)
  [[ $after == "$baseline" ]] && break
  sleep 0.1
done
check "/stats back to its idle figures after the bad input" "$baseline" "$after"

# ---- SIGTERM: the request in flight finishes, then exit 0 with no live chunk ------------------------------
exec 4<>"/dev/tcp/127.0.0.1/$port"  # an idle keep-alive connection: does not hold the shutdown
printf 'GET /items?count=1 HTTP/1.1\r\nHost: x\r\n\r\n' >&4
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab' >&3
# In flight: the server has started it (2 with the /stats request asking).
for ((i = 0; i < 100; ++i)); do
  [[ $(curl -s "$url/stats") == *'"in_flight":2'* ]] && break
  sleep 0.1
done
check "the unfinished request is in flight" 2 "$(curl -s "$url/stats" | sed -n 's/.*"in_flight":\([0-9]*\).*/\1/p')"
kill -TERM "$pid"
# Stops accepting: a new connection is refused once the signal is handled.
refused=no
for ((i = 0; i < 100; ++i)); do
  if ! (exec 5<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    refused=yes
    break
  fi
  sleep 0.1
done
check "SIGTERM: new connections refused" yes "$refused"
printf 'cde' >&3
in_flight=$(timeout 20 cat <&3)
exec 3<&- 4<&-
[[ $in_flight == 'HTTP/1.1 200 OK'* && $in_flight == *abcde ]] && pass "SIGTERM: the request in flight is answered" ||
  fail "SIGTERM: the request in flight got [$in_flight]"
[[ $in_flight == *'Connection: close'* ]] && pass "SIGTERM: its answer closes the connection" ||
  fail "SIGTERM: no Connection: close in [$in_flight]"
wait "$pid"
status=$?
pid=
check "SIGTERM: exit status" 0 "$status"
grep -q '^perfloc top chunk: 0 live chunks' "$work/out" && pass "SIGTERM: the report says 0 live chunks" ||
  fail "SIGTERM: report: $(cat "$work/out")"
[[ -s $work/err ]] && { echo "--- server's stderr:"; cat "$work/err"; }
((failures == 0)) || { echo "--- server's output:"; cat "$work/out"; }
echo "$failures failure(s)"
((failures == 0))
