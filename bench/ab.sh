#!/usr/bin/env bash
# CPU per booking of two or more targets, interleaved, on loopback:
#
#   bench/ab.sh BIN_A BIN_B             # two mis-gateway builds: one change, before and after
#   bench/ab.sh haproxy floor BIN       # the gateway against HAProxy and the hyper floor
#   bench/ab.sh BIN BIN+journal         # one build without and with its SQLite booking journal
#
# A target is a mis-gateway binary, `haproxy` (bench/run.sh's HAProxy at the same job) or
# `floor` (bench/hyper_floor.rs: the least a hyper/tokio proxy does to pass a booking on, built
# here unless FLOOR_BIN names it): the gateway's cost above the floor is what its own code costs.
# A binary followed by `+journal` runs with `[journal]` on (SQLite, JOURNAL_SYNC's `synchronous`,
# a fresh database each run); the journal's writer thread counts in the process's CPU time.
#
# For judging one change on a noisy machine, where back-to-back runs of the same binary differ
# by ±10%: each target's own CPU time per booking (user and kernel, from /proc/<pid>/stat) is
# read for the targets run one after the other, which see mostly the same noise (see
# bench/README.md: trust the rounds that agree, not a median alone).
# Each round starts every target afresh (same generated configs, nginx as the fixed MIS as in
# bench/run.sh), loads it with wrk and bench/unique.lua (every request a distinct booking) and
# prints rps and µs per booking; the end prints the medians over rounds and each target / A.
# A round in which more than 0.1% of the answers were not 2xx fails the run.
#
# Environment knobs (defaults in brackets):
#   ROUNDS [6]      rounds (each runs every target once)
#   DURATION [5]    seconds of load per run
#   CONNS [64]      connections; THREADS [2] wrk threads
#   GATEWAY_RUST_LOG [info]
#   JOURNAL_SYNC [full]  the `synchronous` of `+journal` targets (full or normal)
#   STORE [memory]  redis: the gateways' idempotency store in one redis-server started here
#                   (REDIS_PORT [19461], no persistence), as in bench/run.sh
#   KEYED [0]       1: every request carries an Idempotency-Key (its fresh slot GUID)
#   FLOOR_BIN       an already-built hyper_floor (skips cargo build --example hyper_floor)
#   MIS_PORT [19401], GATEWAY_PORT [18480], ADMIN_PORT [19490]  (not run.sh's or callgrind.sh's)
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: bench/ab.sh TARGET TARGET... (a mis-gateway binary, haproxy or floor)" >&2; exit 2; }
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
case " $* " in *" haproxy "*) install_tools haproxy:haproxy ;; esac
[ "${STORE:-memory}" = redis ] && install_tools redis-server:redis-server redis-cli:redis-tools
for b in "$@"; do
  case $b in
    haproxy) ;;
    floor)
      if [ -z "${FLOOR_BIN:-}" ]; then
        say "cargo build --release --locked --example hyper_floor"
        (cd "$ROOT" && cargo build --release --locked --example hyper_floor)
        FLOOR_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/hyper_floor
        case $FLOOR_BIN in /*) ;; *) FLOOR_BIN=$ROOT/$FLOOR_BIN ;; esac
      fi
      [ -x "$FLOOR_BIN" ] || die "FLOOR_BIN=$FLOOR_BIN is not an executable" ;;
    *) [ -x "${b%+journal}" ] || die "${b%+journal} is not an executable, haproxy or floor" ;;
  esac
done
REDIS_PORT=${REDIS_PORT:-19461}
ports_free "$MIS_PORT" "$GATEWAY_PORT" "$ADMIN_PORT"
[ "${STORE:-memory}" = redis ] && ports_free "$REDIS_PORT"

T=$(mktemp -d /tmp/mis-gateway-ab.XXXXXX)
NGINX=
GW=
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for p in $GW $NGINX "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Private copies: others may rebuild the originals meanwhile. Target i is $T/t<i>.
NAMES=()
KINDS=()
i=0
for b in "$@"; do
  i=$((i + 1))
  case $b in
    haproxy) NAMES+=(haproxy); KINDS+=(haproxy) ;;
    floor) cp "$FLOOR_BIN" "$T/t$i"; NAMES+=(floor); KINDS+=(floor) ;;
    *+journal) cp "${b%+journal}" "$T/t$i"; NAMES+=("$(basename "$b")"); KINDS+=(journal); BIN=$T/t$i ;;
    *) cp "$b" "$T/t$i"; NAMES+=("$(basename "$b")"); KINDS+=(gateway); BIN=$T/t$i ;;
  esac
done
cp "$SEED" "$T/body.json"
write_mis_config
# The gateway's config needs a mis-gateway binary (to hash the password and check the file).
if [ -n "${BIN:-}" ]; then
  JOURNAL=off write_gateway_config
  # The same file with the journal on, in a folder of its own (its WAL's writes then do not
  # reach the watcher of routes.toml's folder).
  grep -v -e '^\[journal\]$' -e '^enabled = false$' "$T/routes.toml" > "$T/routes-journal.toml"
  journal_section >> "$T/routes-journal.toml"
fi
write_haproxy_config "$GATEWAY_PORT"
write_body_template
nginx -c "$T/nginx.conf" -p "$T" & NGINX=$!
start_redis

booked() { # prints the status of one booking with a fresh body
  curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
    -H "Authorization: $PORTAL_BASIC" --data-binary @"$T/fresh.json" "$URL" 2>/dev/null || true
}
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

export BENCH_TEMPLATE=$T/body.tmpl BENCH_AUTH=$PORTAL_BASIC BENCH_KEYED=${KEYED:-0}
TCK=$(getconf CLK_TCK)
: > "$T/results"
say "$ROUNDS rounds x (A, B) x ${DURATION}s, wrk -t$THREADS -c$CONNS, RUST_LOG=$GATEWAY_RUST_LOG"
# start N: starts target N listening on GATEWAY_PORT; its pid in GW.
start() {
  case ${KINDS[$(($1 - 1))]} in
    haproxy) haproxy -db -f "$T/haproxy.cfg" 2>/dev/null & ;;
    floor) "$T/t$1" "127.0.0.1:$GATEWAY_PORT" "127.0.0.1:$MIS_PORT" \
      "Basic $(printf 'gateway:bench-secret' | base64)" "$(nproc)" 2>/dev/null & ;;
    journal) rm -rf "$T/journal"; mkdir -p "$T/journal"
      env RUST_LOG="$GATEWAY_RUST_LOG" "$T/t$1" serve --config "$T/routes-journal.toml" 2>/dev/null & ;;
    *) env RUST_LOG="$GATEWAY_RUST_LOG" "$T/t$1" serve --config "$T/routes.toml" 2>/dev/null & ;;
  esac
  GW=$!
}

say "$ROUNDS rounds x (${NAMES[*]}) x ${DURATION}s, wrk -t$THREADS -c$CONNS, RUST_LOG=$GATEWAY_RUST_LOG"
for r in $(seq "$ROUNDS"); do
  for x in $(seq $#); do
    name=${NAMES[$((x - 1))]}
    start "$x"
    # Ready once a booking answers 200 (the gateway's first one also runs Argon2, before the
    # clock starts).
    for _ in $(seq 300); do
      kill -0 "$GW" 2>/dev/null || die "$name exited at start"
      [ "$(booked)" = 200 ] && break
      sleep 0.1
    done
    [ "$(booked)" = 200 ] || die "$name did not answer a booking with 200 within 30 s"
    read -r u0 s0 < <(cpu_ticks "$GW")
    wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --timeout 10s -s "$HERE/unique.lua" "$URL" \
      > "$T/wrk-$r-$x" 2>&1 || die "wrk against $name: $(tail -5 "$T/wrk-$r-$x")"
    read -r u1 s1 < <(cpu_ticks "$GW")
    kill "$GW"; wait "$GW" 2>/dev/null || true; GW=
    python3 "$HERE/summarize.py" --check "$T/wrk-$r-$x" "round $r $name" --quiet >&2 ||
      die "round $r $name: more than 0.1% of the answers were not 2xx"
    n=$(grep -o 'requests=[0-9]*' "$T/wrk-$r-$x" | cut -d= -f2)
    rps=$(awk '/Requests\/sec/ { print $2 }' "$T/wrk-$r-$x")
    echo "$x $rps $n $((u1 - u0)) $((s1 - s0))" >> "$T/results"
    awk -v x="$name" -v r="$r" -v rps="$rps" -v n="$n" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v tck="$TCK" \
      'BEGIN { printf "  round %d %-14s %9.0f rps  user %6.2f us  sys %6.2f us  total %6.2f us per booking\n",
               r, x, rps, du * 1e6 / tck / n, ds * 1e6 / tck / n, (du + ds) * 1e6 / tck / n }' >&2
  done
done

python3 - "$T/results" "$TCK" "${NAMES[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
tck = float(sys.argv[2])
names = sys.argv[3:]
med = []
for x in range(1, len(names) + 1):
    rs = [r for r in rows if int(r[0]) == x]
    per = lambda i: statistics.median(int(r[i]) * 1e6 / tck / int(r[2]) for r in rs)
    med.append({"rps": statistics.median(float(r[1]) for r in rs), "user": per(3), "sys": per(4),
                "total": statistics.median((int(r[3]) + int(r[4])) * 1e6 / tck / int(r[2]) for r in rs)})
print(f"medians over {len(rows) // len(names)} rounds")
print(f"{'':4}{'target':32}{'rps':>10}{'user us':>10}{'sys us':>10}{'total us':>10}   / A: rps, user, total")
for i, (n, m) in enumerate(zip(names, med)):
    a = med[0]
    print(f"{chr(65 + i):4}{n[-32:]:32}{m['rps']:10.0f}{m['user']:10.2f}{m['sys']:10.2f}{m['total']:10.2f}"
          f"   {m['rps'] / a['rps']:.3f}x {m['user'] / a['user']:.3f}x {m['total'] / a['total']:.3f}x")
PY
