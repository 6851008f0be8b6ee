#!/usr/bin/env bash
# Contract test: schemathesis against the running demo, driven by docs/openapi.json.
#
# Usage: .ci/schemathesis.sh [BIN]   (BIN defaults to target/debug/mis-gateway; nothing is built)
#
# Copies routes.toml to a temporary directory with the demo's fixed ports (127.0.0.1:8080 gateway,
# :9090 admin, :9101/:9102 mock MIS) replaced by free loopback ports, starts `BIN demo --config
# COPY`, waits (30 s at most) for /readyz on the admin port, then runs schemathesis against the
# booking listener as the demo integrator (Basic portal:portal-demo). A trap kills the demo on exit.
#
# Checks: not_a_server_error (no 5xx), status_code_conformance, content_type_conformance,
# response_headers_conformance, response_schema_conformance (ST_CHECKS overrides, e.g. to explore).
#
# Edge decisions:
# - Not run: negative_data_rejection and positive_data_acceptance. They judge the input rules, not
#   the answers, and here they are noise: a schema-valid booking for an unrouted LPU is a 404
#   (94041), a slot booked twice is the MIS's 400 (4002), a reused Idempotency-Key with another
#   body a 422. tests/ checks the input rules against booking::REQUEST instead.
# - Routing hook: schemathesis invents random lpuToGuid values, which almost all end at 404, so the
#   MIS path and the 200 Appointment would go untested. A map_body hook (written to the temp dir)
#   points 3 bookings in 4 at an LPU of [routes]. It picks from the generated GUID, so a fixed seed
#   stays reproducible.
# - The demo's mock MIS books a slot once; later bookings of it get 400 with Message_code 4002.
#   The document covers both answers: 200, and 400 or `default` for a MIS's own codes.
# - Strings: the gateway caps modelled strings at 1024 *bytes*; the document says maxLength 1024
#   (characters) and explains that in the description. JSON Schema cannot count bytes.
# - schemathesis is pinned (SCHEMATHESIS_VERSION). The first run pip-installs it into a venv under
#   ~/.cache (or $SCHEMATHESIS_VENV), with a 120 s limit. That install is the only traffic beyond
#   loopback. SCHEMATHESIS=/path/to/st uses an existing install; its version is checked.
# - Only loopback during the run: proxy variables are unset for schemathesis, and the OTEL_* export
#   endpoints for the demo.
# - Bounded: phases examples, coverage, fuzzing and stateful (the booking's 200 links its guid to
#   the lookup and the cancel, so booked appointments are looked up and cancelled);
#   --max-examples 500 (ST_MAX_EXAMPLES); one worker (2 shared cores); a fixed --seed for
#   reproducible CI (ST_SEED=random or a number, to explore); `timeout 150` around the run.
#   The run takes about 20 s here, and the whole step (venv already there) under 30 s.
# - --generation-database none: no .hypothesis directory is left in the work tree.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
BIN=${1:-target/debug/mis-gateway}
DOC=docs/openapi.json
SEED_ARG=${ST_SEED:-20240611}
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-500}
RUN_TIMEOUT=${ST_TIMEOUT:-150}
started=$(date +%s)

if [[ ! -x "$BIN" ]]; then
  echo "schemathesis.sh: $BIN is not an executable; build it first (cargo build)" >&2
  exit 2
fi

# --- schemathesis, pinned --------------------------------------------------------------------
if [[ -n "${SCHEMATHESIS:-}" ]]; then
  ST=$SCHEMATHESIS
else
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/mis-gateway
  venv=${SCHEMATHESIS_VENV:-$cache/schemathesis-$SCHEMATHESIS_VERSION}
  ST=$venv/bin/st
  if [[ ! -x "$ST" ]]; then
    echo "== installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv"
    timeout 120 "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION"
  fi
fi
st_version=$("$ST" --version 2>&1 | awk '{print $NF}')
if [[ "$st_version" != "$SCHEMATHESIS_VERSION" ]]; then
  echo "schemathesis.sh: $ST is version $st_version, want $SCHEMATHESIS_VERSION" >&2
  exit 2
fi

# --- the demo on free loopback ports --------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/mis-gateway-st.XXXXXX")
demo_pid=
cleanup() {
  local rc=$?
  if [[ -n "$demo_pid" ]] && kill -0 "$demo_pid" 2>/dev/null; then
    kill "$demo_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$work/demo.log" ]]; then
    echo "== last lines of the demo's log" >&2
    tail -n 20 "$work/demo.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Four distinct free ports: all bound at once (port 0), read, then closed.
read -r API ADMIN MIS1 MIS2 < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
config=$work/routes.toml
sed -e "s/127\.0\.0\.1:8080\b/127.0.0.1:$API/g" \
    -e "s/127\.0\.0\.1:9090\b/127.0.0.1:$ADMIN/g" \
    -e "s/127\.0\.0\.1:9101\b/127.0.0.1:$MIS1/g" \
    -e "s/127\.0\.0\.1:9102\b/127.0.0.1:$MIS2/g" routes.toml > "$config"
for port in "$API" "$ADMIN" "$MIS1" "$MIS2"; do
  grep -q "127.0.0.1:$port\"" "$config" || {
    echo "schemathesis.sh: routes.toml no longer has the demo's fixed ports; update this script" >&2
    exit 2
  }
done

echo "== demo: gateway 127.0.0.1:$API, admin 127.0.0.1:$ADMIN, mock MIS :$MIS1 :$MIS2"
env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT TMPDIR="$work" \
  MIS_GATEWAY_LOG_FORMAT=json "$BIN" demo --config "$config" >"$work/demo.log" 2>&1 &
demo_pid=$!

ready=
for _ in $(seq 150); do   # 150 x 0.2 s = 30 s at most
  if ! kill -0 "$demo_pid" 2>/dev/null; then
    echo "schemathesis.sh: the demo exited before it was ready" >&2
    exit 1
  fi
  if curl -fsS --noproxy '*' --max-time 1 "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
[[ -n "$ready" ]] || { echo "schemathesis.sh: the demo was not ready within 30 s" >&2; exit 1; }

# --- schemathesis ---------------------------------------------------------------------------
# The routing hook (see the header): 3 bookings in 4 go to an LPU of [routes], the rest get 404.
routed=$(sed -n '/^\[routes\]/,/^\[/p' "$config" | grep -oE '^"[0-9a-fA-F-]{36}"' \
  | tr -d '"' | tr '\n' ' ')
[[ -n "$routed" ]] || { echo "schemathesis.sh: no [routes] in routes.toml" >&2; exit 2; }
cat >"$work/hooks.py" <<PY
import re
import schemathesis

ROUTED = "$routed".split()
GUID = re.compile(r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")


@schemathesis.hook
def map_body(context, body):
    direction = body.get("direction") if isinstance(body, dict) else None
    lpu = direction.get("lpuToGuid") if isinstance(direction, dict) else None
    if isinstance(lpu, str) and GUID.fullmatch(lpu):
        n = int(lpu.replace("-", ""), 16)
        if n % 4:
            direction["lpuToGuid"] = ROUTED[n % len(ROUTED)]
    return body
PY
auth=$(printf '%s' 'portal:portal-demo' | base64)
checks=not_a_server_error,status_code_conformance,content_type_conformance
checks=${ST_CHECKS:-$checks,response_headers_conformance,response_schema_conformance}
seed_opt=()
[[ "$SEED_ARG" == random ]] || seed_opt=(--seed "$SEED_ARG")
cmd=("$ST" run "$DOC"
  --url "http://127.0.0.1:$API"
  -H "Authorization: Basic $auth"
  --checks "$checks"
  --phases examples,coverage,fuzzing,stateful
  --max-examples "$MAX_EXAMPLES"
  "${seed_opt[@]}"
  --workers 1
  --request-timeout 15
  --generation-database none
  --no-color)
echo "== ${cmd[*]}" | sed "s/Basic $auth/Basic <portal:portal-demo>/"
set +e
env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY -u all_proxy \
  NO_PROXY='*' SCHEMATHESIS_HOOKS="$work/hooks.py" timeout "$RUN_TIMEOUT" "${cmd[@]}" 2>&1 \
  | tee "$work/st.log"
st_rc=${PIPESTATUS[0]}
set -e

# --- summary --------------------------------------------------------------------------------
statuses=$(python3 - "$work/demo.log" <<'PY'
import collections, json, sys
seen = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("target") == "access" and "status" in e:
        seen[f'{e["status"]}/{e.get("code") or "-"}'] += 1
print(", ".join(f"{k} x{v}" for k, v in sorted(seen.items())) or "none logged")
PY
)
case $st_rc in
  0) verdict=passed ;;
  124) verdict="TIMED OUT after ${RUN_TIMEOUT}s" ;;
  *) verdict="FAILED (exit $st_rc)" ;;
esac
echo
echo "== summary"
echo "schemathesis $st_version, seed $SEED_ARG, max-examples $MAX_EXAMPLES: $verdict"
echo "gateway answers (status/Message_code): $statuses"
echo "took $(( $(date +%s) - started ))s"
exit "$st_rc"
