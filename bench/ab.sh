#!/usr/bin/env bash
# CPU per booking of two mis-gateway builds, interleaved, on loopback:
#
#   bench/ab.sh BIN_A BIN_B
#
# For judging one change on a noisy machine, where back-to-back runs of the same binary differ
# by ±10%: the gateway's own CPU time per booking (user and kernel, from /proc/<pid>/stat) is
# read for A and B run one after the other, which see mostly the same noise (see
# bench/README.md: trust the pairs that agree, not a median alone).
# Each round starts A then B afresh (same generated config, nginx as the fixed MIS as in
# bench/run.sh), loads it with wrk and bench/unique.lua (every request a distinct booking) and
# prints rps and µs per booking; the end prints the medians over rounds and B/A.
# A round in which more than 0.1% of the answers were not 2xx fails the run.
#
# Environment knobs (defaults in brackets):
#   ROUNDS [6]      A/B pairs
#   DURATION [5]    seconds of load per run
#   CONNS [64]      connections; THREADS [2] wrk threads
#   GATEWAY_RUST_LOG [info]
#   MIS_PORT [19401], GATEWAY_PORT [18480], ADMIN_PORT [19490]  (not run.sh's or callgrind.sh's)
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: bench/ab.sh BIN_A BIN_B" >&2; exit 2; }
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
GATEWAY_RUST_LOG=${GATEWAY_RUST_LOG:-info}
MIS_PORT=${MIS_PORT:-19401}
GATEWAY_PORT=${GATEWAY_PORT:-18480}
ADMIN_PORT=${ADMIN_PORT:-19490}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SEED=$ROOT/tests/data/seed_request.json
URL=http://127.0.0.1:$GATEWAY_PORT/dir/appointments
PORTAL_BASIC="Basic $(printf 'portal:portal-demo' | base64)"
SAY_TAG=ab
. "$HERE/lib.sh"

install_tools nginx:nginx wrk:wrk curl:curl jq:jq python3:python3
for b in "$1" "$2"; do [ -x "$b" ] || die "$b is not an executable"; done
ports_free "$MIS_PORT" "$GATEWAY_PORT" "$ADMIN_PORT"

T=$(mktemp -d /tmp/mis-gateway-ab.XXXXXX)
NGINX=
GW=
cleanup() {
  trap - EXIT INT TERM
  for p in $GW $NGINX; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Private copies: others may rebuild the originals meanwhile.
cp "$1" "$T/a"; cp "$2" "$T/b"
cp "$SEED" "$T/body.json"
BIN=$T/a
write_mis_config
write_gateway_config
write_body_template
nginx -c "$T/nginx.conf" -p "$T" & NGINX=$!

booked() { # prints the status of one booking with a fresh body
  curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
    -H "Authorization: $PORTAL_BASIC" --data-binary @"$T/fresh.json" "$URL" 2>/dev/null || true
}
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

export BENCH_TEMPLATE=$T/body.tmpl BENCH_AUTH=$PORTAL_BASIC
TCK=$(getconf CLK_TCK)
: > "$T/results"
say "$ROUNDS rounds x (A, B) x ${DURATION}s, wrk -t$THREADS -c$CONNS, RUST_LOG=$GATEWAY_RUST_LOG"
for r in $(seq "$ROUNDS"); do
  for x in a b; do
    env RUST_LOG="$GATEWAY_RUST_LOG" "$T/$x" serve --config "$T/routes.toml" 2>/dev/null &
    GW=$!
    # Ready once a booking answers 200 (the first one also runs Argon2, before the clock starts).
    for _ in $(seq 300); do
      kill -0 "$GW" 2>/dev/null || die "gateway $x exited at start"
      [ "$(booked)" = 200 ] && break
      sleep 0.1
    done
    [ "$(booked)" = 200 ] || die "gateway $x did not answer a booking with 200 within 30 s"
    read -r u0 s0 < <(cpu_ticks "$GW")
    wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --timeout 10s -s "$HERE/unique.lua" "$URL" \
      > "$T/wrk-$r-$x" 2>&1 || die "wrk against $x: $(tail -5 "$T/wrk-$r-$x")"
    read -r u1 s1 < <(cpu_ticks "$GW")
    kill "$GW"; wait "$GW" 2>/dev/null || true; GW=
    python3 "$HERE/summarize.py" --check "$T/wrk-$r-$x" "round $r $x" --quiet >&2 ||
      die "round $r $x: more than 0.1% of the answers were not 2xx"
    n=$(grep -o 'requests=[0-9]*' "$T/wrk-$r-$x" | cut -d= -f2)
    rps=$(awk '/Requests\/sec/ { print $2 }' "$T/wrk-$r-$x")
    echo "$x $rps $n $((u1 - u0)) $((s1 - s0))" >> "$T/results"
    awk -v x="$x" -v r="$r" -v rps="$rps" -v n="$n" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v tck="$TCK" \
      'BEGIN { printf "  round %d %s: %9.0f rps  user %6.2f us  sys %6.2f us  total %6.2f us per booking\n",
               r, toupper(x), rps, du * 1e6 / tck / n, ds * 1e6 / tck / n, (du + ds) * 1e6 / tck / n }' >&2
  done
done

python3 - "$T/results" "$TCK" "$1" "$2" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
tck = float(sys.argv[2])
med = {}
for x in ("a", "b"):
    rs = [r for r in rows if r[0] == x]
    per = lambda i: statistics.median(int(r[i]) * 1e6 / tck / int(r[2]) for r in rs)
    med[x] = {"rps": statistics.median(float(r[1]) for r in rs), "user": per(3), "sys": per(4),
              "total": statistics.median((int(r[3]) + int(r[4])) * 1e6 / tck / int(r[2]) for r in rs)}
print(f"medians over {len(rows) // 2} rounds (A = {sys.argv[3]}, B = {sys.argv[4]})")
print(f"{'':6}{'rps':>10}{'user us':>10}{'sys us':>10}{'total us':>10}")
for x in ("a", "b"):
    m = med[x]
    print(f"{x.upper():6}{m['rps']:10.0f}{m['user']:10.2f}{m['sys']:10.2f}{m['total']:10.2f}")
a, b = med["a"], med["b"]
print(f"{'B/A':6}{b['rps'] / a['rps']:9.3f}x{b['user'] / a['user']:9.3f}x{b['sys'] / a['sys']:9.3f}x{b['total'] / a['total']:9.3f}x")
PY
