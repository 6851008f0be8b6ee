#!/usr/bin/env bash
# Instructions and syscalls per booking of mis-gateway, by difference (PERF.md's method):
# the gateway runs under callgrind (then under strace -f -c) twice, once for N1 and once for N2
# fixed-count bookings from the unique-body driver (or h2load, see DRIVER), against nginx as the
# fixed MIS (same config as bench/run.sh, from bench/lib.sh). Start-up, the Argon2 of the warm-up
# booking and the shutdown are the same in both runs, so (total(N2) - total(N1)) / (N2 - N1) is
# the cost of one booking. Prints instructions/booking, syscalls/booking, the top functions
# (inclusive and self) of the N2 run, and the per-booking self cost grouped by concern.
#
#   bench/callgrind.sh                                   # BIN defaults to a cargo build like run.sh
#   BIN=/tmp/perf-target/release/mis-gateway bench/callgrind.sh
#
# Environment knobs (defaults in brackets):
#   N1 [1000], N2 [3000]     bookings in the two runs
#   CONC [8]                 connections (h2load --h1 -c CONC -t 1)
#   DRIVER [unique]          unique: bench/unique_driver.py, the seed body with a fresh slot and
#                            direction.guid per request, so every request is a booking.
#                            h2load: the seed body, identical for every request (PERF.md's method);
#                            the gateway refuses most of those as duplicates of one in flight
#                            (409/94091), so it measures a mix, mostly refusals.
#   TOOLS ["callgrind strace"]
#   GATEWAY_RUST_LOG [info]  the gateway's RUST_LOG (info: one access-log line per request)
#   GATEWAY_LOG [/dev/null]  where the gateway's stderr goes
#   TOP [25]                 functions listed from callgrind_annotate
#   OUTDIR [bench/results/callgrind-<time>]  callgrind files, annotations, summary.txt
#   MIS_PORT [19201], GATEWAY_PORT [18180], ADMIN_PORT [19190]  (not run.sh's, so both can coexist)
set -euo pipefail

N1=${N1:-1000}
N2=${N2:-3000}
CONC=${CONC:-8}
DRIVER=${DRIVER:-unique}
TOOLS=${TOOLS:-callgrind strace}
GATEWAY_RUST_LOG=${GATEWAY_RUST_LOG:-info}
GATEWAY_LOG=${GATEWAY_LOG:-/dev/null}
TOP=${TOP:-25}
MIS_PORT=${MIS_PORT:-19201}
GATEWAY_PORT=${GATEWAY_PORT:-18180}
ADMIN_PORT=${ADMIN_PORT:-19190}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SEED=$ROOT/tests/data/seed_request.json
OUTDIR=${OUTDIR:-$HERE/results/callgrind-$(date +%Y%m%dT%H%M%S)}
PORTAL_BASIC="Basic $(printf 'portal:portal-demo' | base64)"
URL=http://127.0.0.1:$GATEWAY_PORT/dir/appointments
SAY_TAG=callgrind
. "$HERE/lib.sh"

[ "$N2" -gt "$N1" ] || die "N2 ($N2) must be larger than N1 ($N1)"
case $DRIVER in h2load | unique) ;; *) die "DRIVER is h2load or unique, not $DRIVER" ;; esac

install_tools nginx:nginx h2load:nghttp2-client curl:curl jq:jq python3:python3 valgrind:valgrind strace:strace ss:iproute2

gateway_binary

T=$(mktemp -d /tmp/mis-gateway-callgrind.XXXXXX)
PIDS=()
GW=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in $GW "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in $GW "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ports_free $MIS_PORT $GATEWAY_PORT $ADMIN_PORT
mkdir -p "$OUTDIR"
cp "$BIN" "$T/mis-gateway"; BIN_SRC=$BIN; BIN=$T/mis-gateway
cp "$SEED" "$T/body.json"
write_mis_config
write_gateway_config

nginx -t -q -c "$T/nginx.conf" -p "$T" 2>/dev/null || nginx -t -c "$T/nginx.conf" -p "$T" || die "nginx config"
nginx -c "$T/nginx.conf" -p "$T" & PIDS+=($!)

listening() { [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]; }

# One run: the gateway under a tool, readiness by the listening socket (so no probe touches the
# gateway), one warm-up booking (Argon2, auth cache, pooled MIS connection), N bookings, SIGINT.
# run TOOL N -> the tool's output file is $OUTDIR/TOOL.N.out
run() {
  local tool=$1 n=$2 out=$OUTDIR/$1.$2.out pre code
  case $tool in
    callgrind) pre=(valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$out") ;;
    strace) pre=(strace -f -c -o "$out") ;;
  esac
  rm -f "$out"
  env RUST_LOG="$GATEWAY_RUST_LOG" "${pre[@]}" "$BIN" serve --config "$T/routes.toml" 2>>"$GATEWAY_LOG" >&2 &
  GW=$!
  for _ in $(seq 1200); do
    listening "$GATEWAY_PORT" && break
    kill -0 "$GW" 2>/dev/null || die "the gateway under $tool exited early"
    sleep 0.1
  done
  listening "$GATEWAY_PORT" || die "the gateway under $tool did not listen within 120 s"
  code=$(curl -sS -o "$T/warmup" -w '%{http_code}' --max-time 300 -H 'Content-Type: application/json' \
    -H "Authorization: $PORTAL_BASIC" --data-binary @"$T/body.json" "$URL") || code=000
  [ "$code" = 200 ] || die "$tool: warm-up booking answered $code: $(head -c 300 "$T/warmup")"
  [ "$(jq -r .slot "$T/warmup")" = "$SLOT" ] || die "$tool: warm-up answer is not the Appointment for the seed's slot"
  local t0 t1
  t0=$(date +%s.%N)
  if [ "$DRIVER" = h2load ]; then
    h2load --h1 -n "$n" -c "$CONC" -t 1 -d "$T/body.json" -H 'Content-Type: application/json' \
      -H "Authorization: $PORTAL_BASIC" "$URL" > "$OUTDIR/$tool.$n.load" 2>&1 || die "h2load: $(tail -5 "$OUTDIR/$tool.$n.load")"
  else
    python3 "$HERE/unique_driver.py" --url "$URL" --body "$T/body.json" --auth "$PORTAL_BASIC" \
      -n "$n" -c "$CONC" > "$OUTDIR/$tool.$n.load" 2>&1 || die "unique_driver: $(tail -5 "$OUTDIR/$tool.$n.load")"
  fi
  t1=$(date +%s.%N)
  # SIGINT to the gateway itself: under valgrind that is $GW; under strace it is strace's child
  # (strace itself would detach on SIGINT and leave the gateway running).
  local target=$GW
  [ "$tool" = strace ] && target=$(pgrep -P "$GW" | head -1)
  kill -INT "$target"
  wait "$GW" || say "$tool: the gateway exited with $?"
  GW=
  [ -s "$out" ] || die "$tool wrote no $out"
  say "$tool N=$n: $(grep -E '^status codes|^statuses' "$OUTDIR/$tool.$n.load" | head -1) in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
}

statuses() { grep -E '^status codes|^statuses' "$OUTDIR/$1.$2.load" | head -1; }

say "gateway $BIN_SRC ($(sha256sum "$BIN" | cut -c1-16)), RUST_LOG=$GATEWAY_RUST_LOG, driver $DRIVER, -c $CONC, N = $N1 and $N2"
for tool in $TOOLS; do
  run "$tool" "$N1"
  run "$tool" "$N2"
done

# ---------------------------------------------------------------- summary
{
  echo "git_head=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
  echo "gateway_bin=$BIN_SRC sha256=$(sha256sum "$BIN" | cut -c1-16)"
  echo "rust_log=$GATEWAY_RUST_LOG driver=$DRIVER conc=$CONC n1=$N1 n2=$N2 valgrind=$(valgrind --version) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
  for tool in $TOOLS; do
    echo "$tool N=$N1: $(statuses "$tool" "$N1")"
    echo "$tool N=$N2: $(statuses "$tool" "$N2")"
  done
  if cat "$OUTDIR"/*.load | grep -E '^status codes' | grep -qvE ' 0 3xx, 0 4xx, 0 5xx'; then
    echo "WARNING: not every request was a 200 booking, so the figures below are per request of a mix."
    echo "  With DRIVER=h2load every request carries the same referral and slot, and the gateway answers"
    echo "  409 (94091, duplicate in flight) to those that overlap; DRIVER=unique (the default) books every one."
  fi
  if [[ " $TOOLS " == *" callgrind "* ]]; then
    i1=$(awk '/^(summary|totals):/ {print $2; exit}' "$OUTDIR/callgrind.$N1.out")
    i2=$(awk '/^(summary|totals):/ {print $2; exit}' "$OUTDIR/callgrind.$N2.out")
    echo "instructions: N=$N1 $i1, N=$N2 $i2"
    awk -v a="$i1" -v b="$i2" -v n=$((N2 - N1)) 'BEGIN {printf "instructions/booking: %.0f\n", (b - a) / n}'
  fi
  if [[ " $TOOLS " == *" strace "* ]]; then
    s1=$(awk '$NF == "total" {print $(NF-2)}' "$OUTDIR/strace.$N1.out")
    s2=$(awk '$NF == "total" {print $(NF-2)}' "$OUTDIR/strace.$N2.out")
    echo "syscalls: N=$N1 $s1, N=$N2 $s2"
    awk -v a="$s1" -v b="$s2" -v n=$((N2 - N1)) 'BEGIN {printf "syscalls/booking: %.2f\n", (b - a) / n}'
    python3 "$HERE/callgrind_groups.py" strace "$OUTDIR/strace.$N1.out" "$OUTDIR/strace.$N2.out" $((N2 - N1))
  fi
} > "$OUTDIR/summary.txt"

if [[ " $TOOLS " == *" callgrind "* ]]; then
  for n in "$N1" "$N2"; do
    callgrind_annotate --threshold=100 "$OUTDIR/callgrind.$n.out" > "$OUTDIR/self.$n.txt"
    callgrind_annotate --threshold=100 --inclusive=yes "$OUTDIR/callgrind.$n.out" > "$OUTDIR/inclusive.$n.txt"
  done
  {
    echo
    echo "== per booking, by concern (self cost, difference N=$N2 - N=$N1, / $((N2 - N1))) =="
    python3 "$HERE/callgrind_groups.py" groups "$OUTDIR/self.$N1.txt" "$OUTDIR/self.$N2.txt" $((N2 - N1))
    echo
    echo "== per booking, inclusive cost of entry points (difference, / $((N2 - N1))) =="
    python3 "$HERE/callgrind_groups.py" entries "$OUTDIR/inclusive.$N1.txt" "$OUTDIR/inclusive.$N2.txt" $((N2 - N1))
    echo
    echo "== top $TOP by inclusive cost, N=$N2 run (callgrind_annotate --inclusive=yes) =="
    python3 "$HERE/callgrind_groups.py" top "$OUTDIR/inclusive.$N2.txt" "$TOP"
    echo
    echo "== top $TOP by self cost, N=$N2 run (callgrind_annotate) =="
    python3 "$HERE/callgrind_groups.py" top "$OUTDIR/self.$N2.txt" "$TOP"
  } >> "$OUTDIR/summary.txt"
fi
cat "$OUTDIR/summary.txt"
say "wrote $OUTDIR"
