# Shared by bench/run.sh and bench/callgrind.sh (sourced, not run). Generates the configs of the
# fixed MIS (nginx) and of the gateway the same way for both.
#
# Expects, set by the caller: T (temp dir), SEED (the seed request), BIN (mis-gateway),
# MIS_PORT, GATEWAY_PORT, ADMIN_PORT. Sets SLOT, LPU and APPT_GUID.

say() { printf '[%s %s] %s\n' "${SAY_TAG:-bench}" "$(date +%T)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# install_tools CMD:PACKAGE...: installs from Debian the packages whose command is missing.
install_tools() {
  local need=() t
  for t in "$@"; do
    command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  local SUDO=
  [ "$(id -u)" = 0 ] || SUDO=sudo
  say "installing from Debian: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
}

# ports_free PORT...: dies if anything listens on one of these loopback ports.
ports_free() {
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "127.0.0.1:$p is already in use"; fi
  done
}

# start_redis: with STORE=redis, a redis-server on REDIS_PORT (no persistence, data in $T/redis)
# for the gateway's idempotency store; its pid is appended to PIDS.
start_redis() {
  [ "${STORE:-memory}" = redis ] || return 0
  mkdir -p "$T/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$T/redis" \
    >"$T/redis/log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
}

# journal_section: the [journal] section of the gateway's config (SQLite in $T/journal/,
# JOURNAL_SYNC's `synchronous`).
journal_section() {
  printf '\n[journal]\npath = "journal/journal.db"\nsynchronous = "%s"\n' "${JOURNAL_SYNC:-full}"
}

# gateway_binary: sets BIN to the release build (building it) unless BIN is given.
gateway_binary() {
  if [ -z "${BIN:-}" ]; then
    say "cargo build --release --locked --bin mis-gateway"
    (cd "$ROOT" && cargo build --release --locked --bin mis-gateway)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/mis-gateway
    case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
  fi
  [ -x "$BIN" ] || die "BIN=$BIN is not an executable"
}

# The fixed Appointment ($T/appointment.json) and the nginx config ($T/nginx.conf) of the MIS:
# nginx, worker_processes 1, `return 200` with that Appointment on 127.0.0.1:$MIS_PORT.
write_mis_config() {
  mkdir -p "$T/nginx-tmp"
  SLOT=$(jq -r .slot "$SEED")
  LPU=$(jq -r .direction.lpuToGuid "$SEED")
  APPT_GUID=ee5ae221-ddc8-40cf-a61b-4e7926a2501c

  # One fixed answer for every booking, and every booking has its own slot (the load scripts
  # send a fresh slot per request). The gateway refuses an Appointment for another slot than
  # asked, but accepts one WITHOUT `slot` and then answers the requested slot
  # (src/booking/normalize.rs, appointment()), so the fixed answer carries no `slot`. nginx cannot echo
  # the slot: it does not parse the body, and the gateway forwards no client header.
  jq -c --arg guid "$APPT_GUID" '{guid: $guid, number: "01",
          source: "Internet", createTime: "2019-07-23T12:50:00+03:00", direction: .direction}' \
    "$SEED" > "$T/appointment.json"
  grep -q "[\$']" "$T/appointment.json" && die "appointment JSON has \$ or ' (cannot go in nginx's return)"

  # MIS_DELAY_MS: the MIS answers after that long (nginx's echo module: echo_sleep, then the
  # same Appointment), as a clinic's MIS does; 0 answers at once with `return`.
  local load_echo="" answer
  if [ "${MIS_DELAY_MS:-0}" -gt 0 ]; then
    [ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ] || {
      local SUDO=
      [ "$(id -u)" = 0 ] || SUDO=sudo
      say "installing from Debian: libnginx-mod-http-echo"
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libnginx-mod-http-echo >/dev/null
    }
    load_echo="load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;"
    answer="echo_sleep $(awk -v ms="$MIS_DELAY_MS" 'BEGIN { printf "%.3f", ms / 1000 }');
      echo -n '$(cat "$T/appointment.json")';"
  else
    answer="return 200 '$(cat "$T/appointment.json")';"
  fi

  cat > "$T/nginx.conf" <<EOF
$load_echo
worker_processes 1;
daemon off;
pid $T/nginx.pid;
error_log $T/nginx-error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $T/nginx-tmp/body;
  proxy_temp_path $T/nginx-tmp/proxy;
  fastcgi_temp_path $T/nginx-tmp/fastcgi;
  uwsgi_temp_path $T/nginx-tmp/uwsgi;
  scgi_temp_path $T/nginx-tmp/scgi;
  # nginx 1.22 closes a keep-alive connection after 1,000 requests by default; a real MIS
  # behind a pool would not, so keep connections for the whole run for every target.
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:$MIS_PORT backlog=4096;
    location / {
      default_type application/json;
      $answer
    }
  }
}
EOF
}

# The gateway's $T/routes.toml: integrator portal (the shipped routes.toml's hash of the demo
# password portal-demo, which is shorter than hash-password accepts), backend
# mis-bench -> the nginx above with login gateway / MIS_BENCH_PASSWORD=bench-secret (exported)
# max_in_flight 4096 and max_connections MIS_CONNS [64], one route for the seed's lpuToGuid. Checked with `mis-gateway check`.
write_gateway_config() {
  local hash
  MIS_CONNS=${MIS_CONNS:-64}
  hash=$(awk -F'"' '/^password_hash/ { print $2; exit }' "$ROOT/routes.toml")
  [ -n "$hash" ] || die "no password_hash in $ROOT/routes.toml"
  cat > "$T/routes.toml" <<EOF
[server]
listen = "127.0.0.1:$GATEWAY_PORT"
max_body_bytes = 65536

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[[integrators]]
login = "portal"
password_hash = "$hash"
lpus = ["*"]

[[backends]]
name = "mis-bench"
url = "http://127.0.0.1:$MIS_PORT"
login = "gateway"
password_env = "MIS_BENCH_PASSWORD"
timezone = "Europe/Moscow"
timeout_ms = 10000
# The default cap (64 bookings in flight, more shed with 503) would shed the 1,000-connection
# phase; HAProxy sheds nothing either (maxconn 4096), so the gateway admits as many.
max_in_flight = 4096
# At most $MIS_CONNS connections to the MIS, more bookings queue for one: what HAProxy's
# "server ... maxconn $MIS_CONNS" does in bench/run.sh, so both protect the MIS alike.
max_connections = $MIS_CONNS

[routes]
"$LPU" = "mis-bench"
EOF
  # JOURNAL=sqlite: the booking journal on, in a folder of its own (its WAL's writes then do
  # not reach the watcher of routes.toml's folder).
  # Otherwise it is turned off explicitly: a file without [journal] gets one beside it.
  if [ "${JOURNAL:-off}" = sqlite ]; then
    mkdir -p "$T/journal"
    journal_section >> "$T/routes.toml"
  else
    printf '\n[journal]\nenabled = false\n' >> "$T/routes.toml"
  fi
  # STORE=redis: the idempotency store (and the shared rate budget) in a redis-server run.sh
  # starts on REDIS_PORT, as replicas share it.
  if [ "${STORE:-memory}" = redis ]; then
    printf '\n[idempotency]\nstore = "redis://127.0.0.1:%s/0"\nfingerprint_key_env = "MIS_BENCH_FINGERPRINT_KEY"\n' \
      "$REDIS_PORT" >> "$T/routes.toml"
    export MIS_BENCH_FINGERPRINT_KEY=bench-fingerprint-key-0123456789
  fi
  export MIS_BENCH_PASSWORD=bench-secret
  "$BIN" check --config "$T/routes.toml" >/dev/null || die "the generated routes.toml does not pass mis-gateway check"
}

# $T/haproxy.cfg and $T/lpu.map: HAProxy 2.6 at the gateway's job on 127.0.0.1:$1 (Basic auth,
# route on the body's direction.lpuToGuid, the MIS's credentials swapped in; bench/README.md),
# to the MIS on $MIS_PORT with at most MIS_CONNS [64] connections. Expects LPU (write_mis_config).
write_haproxy_config() {
  MIS_CONNS=${MIS_CONNS:-64}
  printf '%s backend_mis_bench\n' "$LPU" > "$T/lpu.map"
  # PIN_WORKERS=1: thread i on the i-th CPU of the mask, as the gateway's --pin-workers does.
  local cpu_map=""
  if [ "${PIN_WORKERS:-0}" = 1 ]; then
    local cpus n
    cpus=$(python3 -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')
    n=$(wc -w <<<"$cpus")
    cpu_map="  cpu-map auto:1/1-$n $cpus"
  fi
  cat > "$T/haproxy.cfg" <<EOF
global
  # default threads: HAProxy 2.6 starts one per available CPU. maxconn 4096 (> BIG_CONNS)
  # keeps its FD need (~2 per connection) under a hard descriptor limit of 20,000 (as on the 2-core machines).
  maxconn 4096
$cpu_map

defaults
  mode http
  maxconn 4096
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s

# insecure-password: a plain-text comparison, the closest match to the gateway's cached check of
# an already-verified Authorization header. HAProxy caches nothing, so a crypt(3) hash
# (e.g. \$6\$ sha512crypt) would cost thousands of SHA-512 rounds on every request.
userlist integrators
  user portal insecure-password portal-demo

frontend api
  bind 127.0.0.1:$1
  option http-buffer-request
  http-request auth realm mis-gateway unless { http_auth(integrators) }
  http-request set-var(txn.lpu) req.body,json_query('\$.direction.lpuToGuid')
  use_backend %[var(txn.lpu),map($T/lpu.map)]
  default_backend no_route

backend backend_mis_bench
  http-reuse always
  http-request set-header Authorization "Basic $(printf 'gateway:bench-secret' | base64)"
  # maxconn: at most MIS_CONNS connections to the MIS, the rest queue (the gateway's max_connections)
  server mis 127.0.0.1:$MIS_PORT maxconn $MIS_CONNS

backend no_route
  http-request return status 404 content-type application/json string '{"error":"no route"}'
EOF
}

# $T/body.tmpl for bench/unique.lua: the seed with its slot replaced by 36 'S' and its
# direction.guid by 36 'D' (the docSender's guid, equal in the seed, stays). Checked once here:
# filled with two fresh GUIDs it is the seed with exactly those two fields changed, same length.
# $T/fresh.json is such a body, for the start-up checks.
# Expects $T/body.json (the seed's bytes).
write_body_template() {
  python3 - "$T/body.json" "$T/body.tmpl" "$T/fresh.json" <<'PY' || die "cannot make the body template from $SEED"
import json, sys, uuid
raw = open(sys.argv[1], "rb").read()
seed = json.loads(raw)
slot, dguid = seed["slot"].encode(), seed["direction"]["guid"].encode()
assert len(slot) == 36 and len(dguid) == 36, "slot and direction.guid must be 36-character GUIDs"
s = raw.index(slot, raw.index(b'"slot"'))
d = raw.index(dguid, raw.index(b'"direction"'))
assert s < d, "the script expects the slot before the direction"
tmpl = raw[:s] + b"S" * 36 + raw[s + 36:d] + b"D" * 36 + raw[d + 36:]
assert tmpl.count(b"S" * 36) == 1 and tmpl.count(b"D" * 36) == 1
a, b = str(uuid.uuid4()), str(uuid.uuid4())
fresh = tmpl.replace(b"S" * 36, a.encode()).replace(b"D" * 36, b.encode())
want = json.loads(raw)
want["slot"], want["direction"]["guid"] = a, b
assert json.loads(fresh) == want and len(fresh) == len(raw)
open(sys.argv[2], "wb").write(tmpl)
open(sys.argv[3], "wb").write(fresh)
PY
}
