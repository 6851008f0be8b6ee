#!/usr/bin/env bash
# Side-by-side benchmark of mis-gateway against HAProxy at the same job and against the MIS
# directly, on loopback only. One command:   bench/run.sh
# Method and caveats: bench/README.md (follows shared/PERF.md).
#
# Every request to every target is a distinct booking: the seed body with a fresh slot and
# direction.guid per request (bench/unique.lua). A run in which any target answers more than
# 0.1% of its requests with anything but 2xx (or not at all) fails, printing the status mix.
#
# Environment knobs (defaults in brackets):
#   ROUNDS [3]          interleaved rounds (direct, haproxy, gateway) per phase
#   DURATION [10]       seconds per measured run (also the 1,000-connection phase)
#   RATE [8000]         total requests/s of the fixed-rate (paced) phase
#   RATE_THREADS [4]    wrk threads sharing RATE and CONNS in the fixed-rate phase
#   CONNS [64]          connections for the throughput and fixed-rate phases
#   BIG_CONNS [1000]    connections held in the memory phase
#   MIS_CONNS [64]      connections to the MIS at most, for HAProxy (server maxconn) and the
#                       gateway (max_connections) alike; more bookings queue for one
#   BIN                 an already-built mis-gateway binary (skips cargo build)
#   GATEWAY_RUST_LOG [info]  the gateway's RUST_LOG; its stderr (access log) goes to GATEWAY_LOG
#   GATEWAY_LOG [/dev/null]  where the gateway's log goes (a file fills fast: ~300 B/request)
#   OUT [bench/results/latest.json]
#   KEEP_TMP [0]        1 keeps the temp dir (configs, raw wrk output) for inspection
#   PIN_WORKERS [0]     1 holds each proxy thread to a CPU of its own, both alike: HAProxy by
#                       cpu-map (thread i on the i-th CPU of the mask), the gateway by
#                       --pin-workers (worker i likewise); 0 leaves both to the scheduler
#   STORE [memory]      redis: the gateway's idempotency store in a redis-server started here
#                       (REDIS_PORT [19161], no persistence), as replicas would share it
#   KEYED [0]           1 sends an Idempotency-Key (the request's fresh slot GUID) with every
#                       request to every target, so each booking claims and finishes a key
#   JOURNAL [off]       sqlite: the gateway keeps its booking journal (SQLite in $T/journal/)
#   JOURNAL_SYNC [full] the journal's `synchronous` (full: one fsync per group commit; normal)
#   MIS_DELAY_MS [0]    the MIS answers after this many ms (nginx's echo module, installed from
#                       Debian when needed), as a clinic's MIS would: with RATE=2000 the
#                       journal's cost at a fixed rate behind a 20 ms MIS
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-8000}
RATE_THREADS=${RATE_THREADS:-4}
CONNS=${CONNS:-64}
BIG_CONNS=${BIG_CONNS:-1000}
MIS_CONNS=${MIS_CONNS:-64}
GATEWAY_RUST_LOG=${GATEWAY_RUST_LOG:-info}
GATEWAY_LOG=${GATEWAY_LOG:-/dev/null}
KEEP_TMP=${KEEP_TMP:-0}
PIN_WORKERS=${PIN_WORKERS:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${OUT:-$HERE/results/latest.json}
SEED=$ROOT/tests/data/seed_request.json

MIS_PORT=19101
HAPROXY_PORT=18081
GATEWAY_PORT=18080
ADMIN_PORT=19090
PATH_=/dir/appointments
# portal:portal-demo (the integrator)
PORTAL_BASIC="Basic $(printf 'portal:portal-demo' | base64)"
TARGETS=(direct haproxy gateway)

# say, die, write_mis_config, write_gateway_config (shared with bench/callgrind.sh)
. "$HERE/lib.sh"
port_of() { case $1 in direct) echo $MIS_PORT ;; haproxy) echo $HAPROXY_PORT ;; gateway) echo $GATEWAY_PORT ;; esac; }
url_of() { echo "http://127.0.0.1:$(port_of "$1")$PATH_"; }

T0=$(date +%s)
[ -f "$SEED" ] || die "no seed request at $SEED"

# ---------------------------------------------------------------- tools from Debian
install_tools haproxy:haproxy nginx:nginx wrk:wrk curl:curl jq:jq python3:python3
[ "${STORE:-memory}" = redis ] && install_tools redis-server:redis-server redis-cli:redis-tools

# ---------------------------------------------------------------- the gateway binary
gateway_binary
[ $((CONNS % RATE_THREADS)) = 0 ] || die "CONNS ($CONNS) must be a multiple of RATE_THREADS ($RATE_THREADS)"

# ---------------------------------------------------------------- temp dir, cleanup
T=$(mktemp -d /tmp/mis-gateway-bench.XXXXXX)
PIDS=()
LOADPID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$LOADPID" ] && kill -TERM "$LOADPID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP_TMP" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a load generator in the background and waits, so a signal reaches the trap at once.
load() { "$@" & LOADPID=$!; local rc=0; wait "$LOADPID" || rc=$?; LOADPID=; return $rc; }

# wrk with 1,000 connections and the servers need more than 1,024 descriptors; children inherit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((BIG_CONNS * 3)) ] ||
  die "ulimit -n is $(ulimit -n); need > $((BIG_CONNS * 3)) for the $BIG_CONNS-connection phase"

REDIS_PORT=${REDIS_PORT:-19161}
ports_free $MIS_PORT $HAPROXY_PORT $GATEWAY_PORT $ADMIN_PORT
[ "${STORE:-memory}" = redis ] && ports_free $REDIS_PORT

mkdir -p "$T/runs" "$T/nginx-tmp"
# A private copy: others may rebuild target/release while this runs.
cp "$BIN" "$T/mis-gateway"; BIN_SRC=$BIN; BIN=$T/mis-gateway
cp "$SEED" "$T/body.json"

# ---------------------------------------------------------------- nginx = the MIS
# $T/appointment.json (one fixed Appointment, no slot) and $T/nginx.conf; sets SLOT, LPU, APPT_GUID.
write_mis_config

# ---------------------------------------------------------------- unique bodies
# $T/body.tmpl for bench/unique.lua and $T/fresh.json, a body of fresh GUIDs (bench/lib.sh).
write_body_template

# ---------------------------------------------------------------- HAProxy at the same job
# $T/haproxy.cfg and $T/lpu.map (bench/lib.sh).
write_haproxy_config "$HAPROXY_PORT"

# ---------------------------------------------------------------- the gateway
# $T/routes.toml, checked with `mis-gateway check`; exports MIS_BENCH_PASSWORD.
write_gateway_config

# ---------------------------------------------------------------- start everything
nginx -t -q -c "$T/nginx.conf" -p "$T" 2>/dev/null || nginx -t -c "$T/nginx.conf" -p "$T" || die "nginx config"
haproxy -c -q -f "$T/haproxy.cfg" || die "haproxy config"
start_redis
nginx -c "$T/nginx.conf" -p "$T" & PIDS+=($!)
haproxy -db -f "$T/haproxy.cfg" & PIDS+=($!); HAPROXY_PID=$!
GATEWAY_ARGS=()
[ "$PIN_WORKERS" = 1 ] && GATEWAY_ARGS+=(--pin-workers)
env RUST_LOG="$GATEWAY_RUST_LOG" "$BIN" serve --config "$T/routes.toml" "${GATEWAY_ARGS[@]}" 2>>"$GATEWAY_LOG" >&2 &
PIDS+=($!); GATEWAY_PID=$!

book() { # target [authorization [body file]] -> prints the HTTP status; the body goes to $T/check-<target>
  curl -sS -o "$T/check-$1" -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
    -H "Authorization: ${2:-$PORTAL_BASIC}" --data-binary @"${3:-$T/body.json}" "$(url_of "$1")" 2>/dev/null || true
}

say "waiting for readiness (a booking that answers 200, at most 30 s per target)"
for t in "${TARGETS[@]}"; do
  ok=0
  for _ in $(seq 300); do
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || die "a server exited early (pid $p); see above"; done
    [ "$(book "$t")" = 200 ] && { ok=1; break; }
    sleep 0.1
  done
  [ $ok = 1 ] || die "$t did not answer a booking with 200 within 30 s: $(book "$t") $(head -c 300 "$T/check-$t")"
done

say "checking each target once, with a body of fresh GUIDs as the load sends"
FRESH_SLOT=$(jq -r .slot "$T/fresh.json")
for t in "${TARGETS[@]}"; do
  code=$(book "$t" "$PORTAL_BASIC" "$T/fresh.json")
  [ "$code" = 200 ] || die "$t: booking answered $code: $(head -c 300 "$T/check-$t")"
  got=$(jq -r .guid "$T/check-$t" 2>/dev/null) || got=
  [ "$got" = "$APPT_GUID" ] || die "$t: 200 but the answer is not the fixed Appointment: $(head -c 300 "$T/check-$t")"
  # nginx's answer has no slot; the gateway, having validated it, answers the requested one.
  if [ "$t" = gateway ]; then
    got=$(jq -r .slot "$T/check-$t" 2>/dev/null) || got=
    [ "$got" = "$FRESH_SLOT" ] || die "gateway: the answer's slot is $got, not the requested $FRESH_SLOT"
  fi
  printf '  %-8s 200  %s\n' "$t" "$(head -c 110 "$T/check-$t")..." >&2
done
# The proxies must really do the job: authenticate and route on the body.
for t in haproxy gateway; do
  code=$(book "$t" "Basic $(printf portal:wrong | base64)")
  [ "$code" = 401 ] || die "$t: a wrong password answered $code, not 401"
  jq '.direction.lpuToGuid = "00000000-0000-4000-8000-000000000000"' "$T/body.json" > "$T/unrouted.json"
  code=$(book "$t" "$PORTAL_BASIC" "$T/unrouted.json")
  case $code in 4??) ;; *) die "$t: an unrouted clinic answered $code, not 4xx: $(head -c 200 "$T/check-$t")" ;; esac
done
say "  haproxy and gateway refuse a wrong password (401) and an unrouted clinic (4xx)"
rss() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# Baseline: start-up plus the checks above, which ran Argon2 (m=19 MiB) twice in the gateway.
echo "gateway_vmhwm_after_checks_kib=$(rss "$GATEWAY_PID" VmHWM)" > "$T/runs/rss.env"
echo "haproxy_vmhwm_after_checks_kib=$(rss "$HAPROXY_PID" VmHWM)" >> "$T/runs/rss.env"

# ---------------------------------------------------------------- load
# bench/unique.lua builds every request from $T/body.tmpl with a fresh slot and direction.guid,
# counts the statuses and prints one BENCH line (summarize.py reads it). Closed loop unless
# BENCH_RATE (requests/s per wrk thread) is set, then paced (see the script and README).
export BENCH_TEMPLATE=$T/body.tmpl BENCH_AUTH=$PORTAL_BASIC BENCH_KEYED=${KEYED:-0}
LUA=$HERE/unique.lua
# check FILE LABEL: print the run's status mix; fail the whole run if more than 0.1% of its
# requests were answered non-2xx or not at all (so a run of refusals cannot pass for bookings).
check() {
  python3 "$HERE/summarize.py" --check "$1" "$2" ${3:+--quiet} >&2 ||
    die "$2: more than 0.1% of the requests were not answered 2xx (status mix above); the figures would not be bookings"
}
est=$(( ROUNDS * 3 * (DURATION + 1) + ROUNDS * 3 * (DURATION + 2) + 2 * (DURATION + 1) ))
say "measuring: ${ROUNDS} rounds x 3 targets x 2 phases of ${DURATION}s + ${BIG_CONNS}-connection phase (about ${est}s)"

# ---------------------------------------------------------------- phase 1: throughput (closed loop)
for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    f=$T/runs/tp-$r-$t.wrk
    load wrk -t 1 -c "$CONNS" -d "${DURATION}s" --timeout 10s --latency -s "$LUA" "$(url_of "$t")" > "$f" 2>&1 ||
      die "wrk against $t: $(tail -5 "$f")"
    check "$f" "throughput round $r $t"
  done
done

# ---------------------------------------------------------------- phase 2: fixed rate (paced)
# wrk's delay() hook paces the sends: each of RATE_THREADS threads hands out its own schedule
# (RATE/RATE_THREADS requests/s) to whichever of its CONNS/RATE_THREADS connections is free
# (bench/unique.lua). wrk's timers tick in milliseconds, so the sends of one millisecond leave
# together; several threads, whose ticks fall at different points of the millisecond, make these
# groups smaller (RATE/1000/RATE_THREADS = 2 requests by default). A paced closed loop: a send
# due while every connection is busy goes late and is timed from when it went (counted as late).
# Each run is preceded by an unrecorded second at the same rate, which opens the proxies'
# upstream connections (HAProxy drops idle server connections between runs).
RATE_PER_THREAD=$(awk -v r="$RATE" -v n="$RATE_THREADS" 'BEGIN { printf "%.6g", r / n }')
for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    f=$T/runs/rate-$r-$t.wrk
    load env BENCH_RATE="$RATE_PER_THREAD" wrk -t "$RATE_THREADS" -c "$CONNS" -d 1s --timeout 10s -s "$LUA" \
      "$(url_of "$t")" > "$f.warmup" 2>&1 || die "wrk warm-up against $t: $(tail -5 "$f.warmup")"
    check "$f.warmup" "fixed-rate warm-up round $r $t" quiet
    load env BENCH_RATE="$RATE_PER_THREAD" wrk -t "$RATE_THREADS" -c "$CONNS" -d "${DURATION}s" --timeout 10s --latency \
      -s "$LUA" "$(url_of "$t")" > "$f" 2>&1 || die "wrk (paced) against $t: $(tail -5 "$f")"
    check "$f" "fixed-rate round $r $t"
  done
done

{
  echo "gateway_vmhwm_after_runs_kib=$(rss "$GATEWAY_PID" VmHWM)"
  echo "gateway_vmrss_after_runs_kib=$(rss "$GATEWAY_PID" VmRSS)"
  echo "haproxy_vmhwm_after_runs_kib=$(rss "$HAPROXY_PID" VmHWM)"
} >> "$T/runs/rss.env"

# ---------------------------------------------------------------- phase 3: 1,000 keep-alive connections
for t in haproxy gateway; do
  f=$T/runs/big-$t.wrk
  load wrk -t 2 -c "$BIG_CONNS" -d "${DURATION}s" --timeout 10s --latency -s "$LUA" "$(url_of "$t")" > "$f" 2>&1 ||
    die "wrk -c $BIG_CONNS against $t: $(tail -5 "$f")"
  check "$f" "$BIG_CONNS connections $t"
  pid=$GATEWAY_PID; [ $t = haproxy ] && pid=$HAPROXY_PID
  echo "${t}_vmhwm_after_big_kib=$(rss "$pid" VmHWM)" >> "$T/runs/rss.env"
  say "$BIG_CONNS connections $t: VmHWM $(rss "$pid" VmHWM) KiB"
done
for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || die "a server died during the runs (pid $p)"; done

# ---------------------------------------------------------------- summary
{
  echo "rounds=$ROUNDS"; echo "duration_s=$DURATION"; echo "rate_total=$RATE"; echo "rate_threads=$RATE_THREADS"
  echo "conns=$CONNS"; echo "big_conns=$BIG_CONNS"; echo "mis_conns=$MIS_CONNS"; echo "gateway_rust_log=$GATEWAY_RUST_LOG"; echo "pin_workers=$PIN_WORKERS"
  echo "gateway_bin=$BIN_SRC"; echo "gateway_sha256=$(sha256sum "$BIN" | cut -c1-16)"; echo "gateway_version=$("$BIN" --version 2>/dev/null | head -1)"
  echo "git_head=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
  echo "haproxy_version=$(haproxy -v | head -1 | awk '{print $3}')"
  echo "nginx_version=$(nginx -v 2>&1 | sed 's/.*nginx\///')"
  echo "wrk_version=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "nproc=$(nproc)"; echo "kernel=$(uname -r)"
  echo "loadavg_at_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "body_bytes=$(wc -c < "$T/body.json")"
  echo "elapsed_s=$(( $(date +%s) - T0 ))"
} > "$T/runs/meta.env"
mkdir -p "$(dirname "$OUT")"
python3 "$HERE/summarize.py" "$T/runs" "$OUT"
say "wrote $OUT; whole run $(( $(date +%s) - T0 )) s"
