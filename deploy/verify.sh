#!/usr/bin/env bash
# Static checks of everything under deploy/: the systemd unit, the Kubernetes manifests and the
# Dockerfile, each against the others and against routes.toml. Installs nothing; needs
# `systemd-analyze` (package systemd) and python3 (3.11+, or older with `tomli`) with PyYAML.
# Touches nothing outside a temporary directory. Exit status 0 = all good, 1 = a mismatch,
# 2 = a missing tool.
#
#   bash deploy/verify.sh
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$DEPLOY_DIR")
UNIT="$DEPLOY_DIR/systemd/mis-gateway.service"
BINARY=/usr/local/bin/mis-gateway

missing() { echo "verify: $1" >&2; exit 2; }
command -v systemd-analyze >/dev/null || missing "systemd-analyze not found (apt-get install systemd)"
command -v python3 >/dev/null || missing "python3 not found"
python3 -c 'import yaml' 2>/dev/null || missing "python3 has no PyYAML (pip install pyyaml)"
python3 -c 'import tomllib' 2>/dev/null || python3 -c 'import tomli' 2>/dev/null \
  || missing "python3 has neither tomllib (3.11+) nor tomli (pip install tomli)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }

# ---- systemd: `systemd-analyze verify` on a copy whose ExecStart points at a stub, so this
# works where the real binary is not installed (verify refuses a unit whose binary is missing).
# verify does not look up User=, so no user needs to exist.
echo "== systemd"
if ! grep -q "^ExecStart=$BINARY serve " "$UNIT"; then
  fail "$UNIT: ExecStart must run $BINARY serve ..."
fi
mkdir -p "$tmp/bin" "$tmp/unit" "$tmp/sysroot/etc"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/mis-gateway"
chmod 0755 "$tmp/bin/mis-gateway"
sed "s#$BINARY#$tmp/bin/mis-gateway#g" "$UNIT" >"$tmp/unit/mis-gateway.service"
# verify prints nothing for a clean unit but still exits 0 on e.g. an unknown key, so any
# message about our unit counts as a failure. Messages about other units (the host's own
# configuration) are shown but do not fail the check.
set +e
out=$(systemd-analyze verify --man=no "$tmp/unit/mis-gateway.service" 2>&1)
rc=$?
set -e
ours=$(printf '%s\n' "$out" | grep -E 'mis-gateway' || true)
if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
  fail "systemd-analyze verify mis-gateway.service (exit $rc):"
  printf '%s\n' "$out" | sed "s#$tmp/unit/#deploy/systemd/#g; s#$tmp/bin/mis-gateway#$BINARY#g; s/^/    /"
else
  [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    note (not our unit): /'
  echo "ok: systemd-analyze verify mis-gateway.service"
fi
# Type=notify: the gateway sends READY=1 itself (tests/notify.rs proves it does).
if grep -q '^Type=notify$' "$UNIT"; then
  echo "ok: Type=notify"
else
  fail "$UNIT: Type= must be notify (the gateway reports READY/RELOADING/STATUS)"
fi
# The seccomp filter as systemd builds it (assignments in order; the first decides allow- or
# deny-list; groups expanded by this systemd's own tables) must let --pin-workers place threads.
filters=$(sed -n 's/^SystemCallFilter=//p' "$UNIT")
if allowed=$(python3 - "$filters" <<'PY'
import subprocess, sys
def expand(name):
    if not name.startswith("@"):
        return {name}
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines()[1:]:
        w = line.strip()
        if w and not w.startswith("#"):
            found |= expand(w)
    return found
allow = None
for line in sys.argv[1].splitlines():
    deny = line.startswith("~")
    names = set().union(*(expand(n) for n in line.lstrip("~").split()))
    if allow is None:
        allow = (not deny, names)
        continue
    is_allow_list, set_ = allow
    if is_allow_list:
        set_ = set_ - names if deny else set_ | names
    else:
        set_ = set_ | names if deny else set_ - names
    allow = (is_allow_list, set_)
is_allow_list, set_ = allow
for call in ("sched_setaffinity", "sched_getaffinity"):
    if (call in set_) != is_allow_list:
        print(call)
PY
); then
  if [ -z "$allowed" ]; then
    echo "ok: SystemCallFilter= allows sched_setaffinity and sched_getaffinity (--pin-workers)"
  else
    fail "$UNIT: SystemCallFilter= refuses $(echo $allowed), which --pin-workers needs"
  fi
else
  fail "could not evaluate SystemCallFilter= with systemd-analyze syscall-filter"
fi
# The sysusers file, applied to an empty throw-away root.
if out=$(systemd-sysusers --root="$tmp/sysroot" "$DEPLOY_DIR/systemd/mis-gateway.sysusers.conf" 2>&1) \
   && grep -q '^mis-gateway:' "$tmp/sysroot/etc/passwd"; then
  echo "ok: mis-gateway.sysusers.conf creates user mis-gateway"
else
  fail "systemd-sysusers mis-gateway.sysusers.conf: ${out:-no mis-gateway user created}"
fi

# ---- Everything else in Python: YAML/TOML parsing and cross-references.
echo "== kubernetes, Dockerfile, cross-references"
set +e
python3 - "$DEPLOY_DIR" "$REPO_ROOT" <<'PY'
import os
import re
import sys

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

deploy, repo = sys.argv[1], sys.argv[2]
kdir = os.path.join(deploy, "kubernetes")
problems = []


def fail(msg):
    problems.append(msg)
    print(f"FAIL: {msg}")


def ok(msg):
    print(f"ok: {msg}")


def check(cond, good, bad):
    if cond:
        ok(good)
    else:
        fail(bad)
    return cond


def dig(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and p < len(obj):
            obj = obj[p]
        else:
            return default
        if obj is None:
            return default
    return obj


def selects(selector, labels):
    """A LabelSelector ({matchLabels, matchExpressions}) or a plain map (Service) vs labels."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        ml = selector.get("matchLabels") or {}
        exprs = selector.get("matchExpressions") or []
    else:
        ml, exprs = selector, []
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for e in exprs:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


# ---------- parse every YAML file ----------
objects = {}  # (kind, name) -> (file, obj)
kustomization = None
files = sorted(f for f in os.listdir(kdir) if f.endswith((".yaml", ".yml")))
for f in files:
    path = os.path.join(kdir, f)
    try:
        with open(path, encoding="utf-8") as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{f}: not valid YAML: {e}")
        continue
    if not docs:
        fail(f"{f}: no YAML document")
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            fail(f"{f}: a document without `kind`")
            continue
        if d["kind"] == "Kustomization":
            kustomization = (f, d)
            continue
        name = dig(d, "metadata", "name")
        if not d.get("apiVersion") or not name:
            fail(f"{f}: {d['kind']} without apiVersion or metadata.name")
            continue
        key = (d["kind"], name)
        if key in objects:
            fail(f"{f}: {d['kind']}/{name} is also defined in {objects[key][0]}")
        objects[key] = (f, d)
if not problems:
    ok(f"{len(files)} YAML files parse ({len(objects)} objects)")


def get(kind, name):
    return objects.get((kind, name), (None, None))[1]


def of_kind(kind):
    return [(n, o) for (k, n), (_, o) in objects.items() if k == kind]


# ---------- kustomization ----------
if kustomization is None:
    fail("kustomization.yaml: missing")
    namespace = None
else:
    kf, k = kustomization
    listed = [r for r in k.get("resources") or []]
    manifests = [f for f in files if f != kf]
    check(
        sorted(listed) == sorted(manifests),
        "kustomization.yaml lists every manifest",
        f"{kf}: resources {sorted(listed)} != manifest files {sorted(manifests)}",
    )
    namespace = k.get("namespace")
    ns_objects = [n for n, _ in of_kind("Namespace")]
    check(
        namespace in ns_objects,
        f"namespace {namespace} is defined",
        f"{kf}: namespace {namespace!r} is not among the Namespace objects {ns_objects}",
    )
    wrong = [
        f"{k_}/{n}" for (k_, n), (_, o) in objects.items()
        if dig(o, "metadata", "namespace") not in (None, namespace)
    ]
    check(not wrong, "no object pins another namespace",
          f"objects in a namespace other than {namespace}: {wrong}")

# ---------- Deployments: selectors ----------
deployments = dict(of_kind("Deployment"))
for name, d in deployments.items():
    sel = dig(d, "spec", "selector")
    labels = dig(d, "spec", "template", "metadata", "labels", default={})
    check(selects(sel, labels), f"Deployment {name}: selector matches its pod labels",
          f"Deployment {name}: selector {sel} does not match pod labels {labels}")

gw = get("Deployment", "mis-gateway")
if gw is None:
    fail("no Deployment mis-gateway")
    print(f"\n{len(problems)} problem(s)")
    sys.exit(1)

pod = dig(gw, "spec", "template", "spec", default={})
pod_labels = dig(gw, "spec", "template", "metadata", "labels", default={})
containers = pod.get("containers") or []
c = next((c for c in containers if c.get("name") == "mis-gateway"), containers[0] if containers else {})
ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}


def resolve(port):
    return ports.get(port) if isinstance(port, str) else port


check(ports.get("api") == 8080 and ports.get("admin") == 9090,
      "gateway container ports api=8080 admin=9090",
      f"gateway container ports must be api=8080 and admin=9090, found {ports}")

# ---------- security ----------
psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}


def eff(key):
    return csc.get(key, psc.get(key))


check(eff("runAsNonRoot") is True and eff("runAsUser") == 10001,
      "gateway runs as non-root uid 10001",
      f"gateway must set runAsNonRoot: true and runAsUser: 10001 (found {eff('runAsNonRoot')}, {eff('runAsUser')})")
check(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
      and "ALL" in (dig(csc, "capabilities", "drop", default=[]))
      and dig(csc, "seccompProfile", "type", default=dig(psc, "seccompProfile", "type")) == "RuntimeDefault",
      "gateway: read-only root, no privilege escalation, caps dropped, seccomp RuntimeDefault",
      "gateway container securityContext must set readOnlyRootFilesystem, allowPrivilegeEscalation: false, "
      "capabilities.drop [ALL] and seccompProfile RuntimeDefault")
strategy = dig(gw, "spec", "strategy", default={})
check(strategy.get("type") == "RollingUpdate" and dig(strategy, "rollingUpdate", "maxUnavailable") == 0,
      "gateway rolls out with maxUnavailable 0",
      f"gateway strategy must be RollingUpdate with maxUnavailable 0, found {strategy}")

# ---------- ConfigMaps and Secrets the Deployment references ----------
def has_key(obj, key):
    return key in (obj.get("data") or {}) or key in (obj.get("stringData") or {})


refs = []  # (kind, name, key or None, where)
for v in pod.get("volumes") or []:
    if "configMap" in v:
        refs.append(("ConfigMap", v["configMap"].get("name"), None, f"volume {v.get('name')}"))
        for it in v["configMap"].get("items") or []:
            refs.append(("ConfigMap", v["configMap"].get("name"), it.get("key"), f"volume {v.get('name')}"))
    if "secret" in v:
        refs.append(("Secret", v["secret"].get("secretName"), None, f"volume {v.get('name')}"))
for ctr in containers + (pod.get("initContainers") or []):
    for ef in ctr.get("envFrom") or []:
        if "configMapRef" in ef:
            refs.append(("ConfigMap", ef["configMapRef"].get("name"), None, "envFrom"))
        if "secretRef" in ef:
            refs.append(("Secret", ef["secretRef"].get("name"), None, "envFrom"))
    for e in ctr.get("env") or []:
        for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            r = dig(e, "valueFrom", field)
            if r:
                refs.append((kind, r.get("name"), r.get("key"), f"env {e.get('name')}"))
refs = list(dict.fromkeys(refs))
bad = []
for kind, name, key, where in refs:
    o = get(kind, name)
    if o is None:
        msg = f"{where}: {kind} {name} does not exist"
        if msg not in bad:
            bad.append(msg)
    elif key is not None and not has_key(o, key):
        bad.append(f"{where}: {kind} {name} has no key {key}")
check(refs and not bad, f"all {len(refs)} ConfigMap/Secret references of the gateway resolve",
      "gateway references: " + "; ".join(bad or ["none found"]))

# The config volume: a directory mount (no subPath) at /etc/mis-gateway holding routes.toml.
cm_volumes = {v.get("name"): v["configMap"].get("name") for v in pod.get("volumes") or [] if "configMap" in v}
mounts = [m for m in c.get("volumeMounts") or [] if m.get("name") in cm_volumes]
env = {e.get("name"): e.get("value") for e in c.get("env") or []}
config_path = env.get("MIS_GATEWAY_CONFIG", "/etc/mis-gateway/routes.toml")
routes_cm_name = None
for m in mounts:
    if m.get("subPath") or m.get("subPathExpr"):
        fail(f"ConfigMap volume {m.get('name')} is mounted with subPath: it would never see updates")
    if m.get("mountPath", "").rstrip("/") == os.path.dirname(config_path):
        routes_cm_name = cm_volumes[m.get("name")]
if not check(routes_cm_name is not None and not any(m.get("subPath") for m in mounts),
             f"routes ConfigMap {routes_cm_name} mounted as a directory at {os.path.dirname(config_path)}",
             f"no ConfigMap directory mount at {os.path.dirname(config_path)} (MIS_GATEWAY_CONFIG={config_path})"):
    routes_cm_name = None

# ---------- routes.toml inside the ConfigMap ----------
routes = {}
cm = get("ConfigMap", routes_cm_name) if routes_cm_name else None
fname = os.path.basename(config_path)
if cm is not None:
    text = (cm.get("data") or {}).get(fname)
    if text is None:
        fail(f"ConfigMap {routes_cm_name} has no key {fname}")
    else:
        try:
            routes = tomllib.loads(text)
            ok(f"ConfigMap {routes_cm_name}: {fname} parses as TOML")
        except tomllib.TOMLDecodeError as e:
            fail(f"ConfigMap {routes_cm_name}: {fname} is not valid TOML: {e}")


def split_addr(addr):
    m = re.fullmatch(r"\[?([^\]]*)\]?:(\d+)", addr or "")
    return (m.group(1), int(m.group(2))) if m else (None, None)


if routes:
    for section, port_name in (("server", "api"), ("admin", "admin")):
        host, port = split_addr(dig(routes, section, "listen"))
        check(host in ("0.0.0.0", "::") and port == ports.get(port_name),
              f"{section}.listen {host}:{port} is reachable on container port {port_name}",
              f"routes.toml {section}.listen must be 0.0.0.0:{ports.get(port_name)} (or [::]), "
              f"found {dig(routes, section, 'listen')!r}")
    # Every secret routes.toml names must be a key of a Secret the pod gets via envFrom.
    env_secrets = [get("Secret", ef["secretRef"].get("name")) or {} for ef in c.get("envFrom") or [] if "secretRef" in ef]
    wanted = [b.get("password_env") for b in routes.get("backends") or [] if b.get("password_env")]
    if dig(routes, "admin", "token_env"):
        wanted.append(routes["admin"]["token_env"])
    if dig(routes, "idempotency", "password_env"):
        wanted.append(routes["idempotency"]["password_env"])
    if dig(routes, "journal", "password_env"):
        wanted.append(routes["journal"]["password_env"])
    absent = [w for w in wanted if w not in env and not any(has_key(s, w) for s in env_secrets)]
    check(wanted and not absent, f"Secret provides {', '.join(wanted)}",
          f"routes.toml names environment variables no Secret provides: {absent or 'none named'}")
    # The idempotency store must be an in-namespace Service on the right port.
    store = dig(routes, "idempotency", "store")
    if store is not None:
        m = re.fullmatch(r"rediss?://(?:[^@/]*@)?([^:/]+)(?::(\d+))?(?:/\d*)?", store)
        svc_name = m.group(1).split(".")[0] if m else None
        svc_port = int(m.group(2) or 6379) if m else None
        svc = get("Service", svc_name) if svc_name else None
        svc_ports = [p.get("port") for p in dig(svc or {}, "spec", "ports", default=[])]
        check(svc is not None and svc_port in svc_ports,
              f"idempotency store {store} is Service {svc_name}:{svc_port}",
              f"idempotency.store {store!r}: no Service {svc_name} with port {svc_port} (ports {svc_ports})")
    # The booking journal is on by default, as journal.db beside routes.toml: here that is the
    # read-only ConfigMap mount (bookings would be refused), and replicas must share one journal
    # anyway. So: a PostgreSQL url, user and database named, no password in it.
    journal = routes.get("journal")
    jurl = dig(routes, "journal", "url")
    if not isinstance(journal, dict):
        fail("routes.toml has no [journal]: the default journal.db beside routes.toml sits in the "
             "read-only ConfigMap mount, so every booking would be refused; set [journal] url (PostgreSQL)")
    elif journal.get("enabled") is False:
        fail("routes.toml [journal] enabled = false: a restart would forget idempotency keys and a crash "
             "leave bookings unrecorded; set [journal] url (PostgreSQL)")
    elif jurl is None:
        fail(f"routes.toml [journal] has no url (path {journal.get('path')!r}): the replicas need one shared "
             "PostgreSQL journal, and the ConfigMap mount is read-only")
    else:
        m = re.fullmatch(r"postgres(?:ql)?://([^:@/]+)(:[^@/]*)?@([^:/?]+)(?::(\d+))?/([^/?]+)(?:\?.*)?", jurl)
        if not m or m.group(2):
            fail(f"journal.url {jurl!r}: must be postgres://USER@HOST[:PORT]/DATABASE, with no password")
        else:
            j_user, j_host, j_db = m.group(1), m.group(3), m.group(5)
            j_svc_name, j_port = j_host.split(".")[0], int(m.group(4) or 5432)
            j_svc = get("Service", j_svc_name)
            j_ports = [p.get("port") for p in dig(j_svc or {}, "spec", "ports", default=[])]
            if check(j_svc is not None and j_port in j_ports,
                     f"journal {jurl} is Service {j_svc_name}:{j_port}",
                     f"journal.url {jurl!r}: no Service {j_svc_name} with port {j_port} (ports {j_ports})"):
                # The server behind it creates that role and database with the password the
                # gateway sends (the official image's POSTGRES_* variables).
                backing = [d for d in deployments.values()
                           if selects(dig(j_svc, "spec", "selector"), dig(d, "spec", "template", "metadata", "labels", default={}))]
                pg_env, unresolved = {}, []
                for ctr in dig(backing[0] if backing else {}, "spec", "template", "spec", "containers", default=[]):
                    for e in ctr.get("env") or []:
                        ref = dig(e, "valueFrom", "secretKeyRef")
                        pg_env[e.get("name")] = ref.get("key") if ref else e.get("value")
                        if ref and not has_key(get("Secret", ref.get("name")) or {}, ref.get("key")):
                            unresolved.append(f"{ref.get('name')}/{ref.get('key')}")
                want_env = {"POSTGRES_USER": j_user, "POSTGRES_DB": j_db}
                if dig(routes, "journal", "password_env"):  # the Secret key both read
                    want_env["POSTGRES_PASSWORD"] = routes["journal"]["password_env"]
                wrong = {k: pg_env.get(k) for k, v in want_env.items() if pg_env.get(k) != v}
                check(backing and not wrong and not unresolved,
                      f"PostgreSQL behind {j_svc_name} creates role {j_user} and database {j_db}"
                      + (f", password from {want_env['POSTGRES_PASSWORD']}" if "POSTGRES_PASSWORD" in want_env else ""),
                      f"the PostgreSQL behind Service {j_svc_name} must set {want_env} (POSTGRES_PASSWORD "
                      f"from that Secret key), found {wrong if backing else 'no Deployment'}"
                      + (f"; Secret keys missing: {unresolved}" if unresolved else ""))

# ---------- probes ----------
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    hg = dig(c, probe, "httpGet", default={})
    check(hg.get("path") == path and resolve(hg.get("port")) == 9090,
          f"{probe}: GET {path} on admin port 9090",
          f"{probe} must be httpGet {path} on port 9090 (admin), found {hg or c.get(probe)}")
ann = dig(gw, "spec", "template", "metadata", "annotations", default={})
if "prometheus.io/port" in ann:
    check(str(ann["prometheus.io/port"]) == "9090", "prometheus.io/port is the admin port",
          f"prometheus.io/port {ann['prometheus.io/port']!r} is not the admin port 9090")

# ---------- shutdown budget ----------
pre = dig(c, "lifecycle", "preStop", default={})
sleep = None
if "sleep" in pre:
    sleep = dig(pre, "sleep", "seconds")
else:
    cmd = dig(pre, "exec", "command", default=[])
    nums = [a for a in cmd if re.fullmatch(r"\d+", str(a))]
    if cmd and "sleep" in os.path.basename(str(cmd[0])) + " ".join(map(str, cmd)) and nums:
        sleep = int(nums[-1])
drain_ms = dig(routes, "server", "drain_timeout_ms", default=30000)
grace = pod.get("terminationGracePeriodSeconds", 30)
if sleep is None:
    fail(f"gateway has no preStop sleep (found {pre})")
else:
    check(grace > sleep + drain_ms / 1000,
          f"terminationGracePeriodSeconds {grace} > preStop {sleep} s + drain {drain_ms / 1000:g} s",
          f"terminationGracePeriodSeconds {grace} must exceed preStop sleep {sleep} s + drain {drain_ms / 1000:g} s")

# ---------- Services ----------
for name, s in of_kind("Service"):
    sel = dig(s, "spec", "selector", default={})
    hits = [n for n, d in deployments.items() if selects(sel, dig(d, "spec", "template", "metadata", "labels", default={}))]
    if len(hits) != 1:
        fail(f"Service {name}: selector {sel} matches {len(hits)} Deployments' pods ({hits}), expected exactly 1")
        continue
    d = deployments[hits[0]]
    dports = {}
    for ctr in dig(d, "spec", "template", "spec", "containers", default=[]):
        for p in ctr.get("ports") or []:
            dports[p.get("name")] = p.get("containerPort")
    targets = []
    for p in dig(s, "spec", "ports", default=[]):
        t = p.get("targetPort", p.get("port"))
        t = dports.get(t) if isinstance(t, str) else t
        if t not in dports.values():
            fail(f"Service {name}: targetPort {p.get('targetPort')} is not a container port of {hits[0]} {dports}")
        targets.append(t)
    ok(f"Service {name} selects Deployment {hits[0]} (target ports {targets})")
    if hits[0] == "mis-gateway":
        check(9090 not in targets, f"Service {name} does not expose the admin port",
              f"Service {name} exposes the admin port 9090; it must stay in-cluster (pod IP only)")
gw_svc = get("Service", "mis-gateway")
check(gw_svc is not None and selects(dig(gw_svc, "spec", "selector"), pod_labels),
      "Service mis-gateway selects the gateway pods", "Service mis-gateway missing or not selecting the gateway pods")

# ---------- HPA ----------
hpas = of_kind("HorizontalPodAutoscaler")
min_replicas = None
for name, h in hpas:
    ref = dig(h, "spec", "scaleTargetRef", default={})
    check(h.get("apiVersion") == "autoscaling/v2" and ref.get("kind") == "Deployment"
          and ref.get("name") in deployments,
          f"HPA {name} targets Deployment {ref.get('name')}",
          f"HPA {name}: must be autoscaling/v2 targeting an existing Deployment, found {h.get('apiVersion')} {ref}")
    min_replicas = dig(h, "spec", "minReplicas", default=1)
    check(2 <= min_replicas <= dig(h, "spec", "maxReplicas", default=0),
          f"HPA {name}: {min_replicas}..{dig(h, 'spec', 'maxReplicas')} replicas",
          f"HPA {name}: need 2 <= minReplicas <= maxReplicas")
    target = deployments.get(ref.get("name")) or {}
    uses_cpu = any(dig(m, "resource", "name") == "cpu" for m in dig(h, "spec", "metrics", default=[]))
    no_req = [ctr.get("name") for ctr in dig(target, "spec", "template", "spec", "containers", default=[])
              if not dig(ctr, "resources", "requests", "cpu")]
    if uses_cpu:
        check(not no_req, f"HPA {name}: target containers request cpu",
              f"HPA {name} scales on cpu utilization but containers {no_req} have no cpu request")
check(any(dig(h, "spec", "scaleTargetRef", "name") == "mis-gateway" for _, h in hpas),
      "an HPA targets mis-gateway", "no HPA targets Deployment mis-gateway")

# ---------- PDB ----------
pdbs = of_kind("PodDisruptionBudget")
check(pdbs, f"{len(pdbs)} PodDisruptionBudget(s)", "no PodDisruptionBudget")
for name, p in pdbs:
    sel = dig(p, "spec", "selector")
    hits = [n for n, d in deployments.items() if selects(sel, dig(d, "spec", "template", "metadata", "labels", default={}))]
    check(hits == ["mis-gateway"], f"PDB {name} selects exactly the gateway pods",
          f"PDB {name}: selector {sel} matches Deployments {hits}, expected exactly [mis-gateway]")
    floor = min_replicas or dig(gw, "spec", "replicas", default=1)
    ma = dig(p, "spec", "minAvailable")
    if isinstance(ma, int):
        check(ma < floor, f"PDB {name}: minAvailable {ma} < {floor} replicas, so drains can evict",
              f"PDB {name}: minAvailable {ma} >= the minimum {floor} replicas; node drains would block")

# ---------- NetworkPolicies ----------
for name, n in of_kind("NetworkPolicy"):
    sels = [dig(n, "spec", "podSelector")] + [
        f.get("podSelector") for r in dig(n, "spec", "ingress", default=[]) for f in r.get("from") or []
        if f.get("podSelector")]
    dead = [s for s in sels if not any(selects(s, dig(d, "spec", "template", "metadata", "labels", default={}))
                                       for d in deployments.values())]
    check(not dead, f"NetworkPolicy {name}: every pod selector matches a Deployment",
          f"NetworkPolicy {name}: selectors match no pods: {dead}")

# The admin listener is reachable from the monitoring namespace only; the API from anywhere.
gw_policies = [(n, p) for n, p in of_kind("NetworkPolicy")
               if selects(dig(p, "spec", "podSelector"), pod_labels)
               and "Ingress" in (dig(p, "spec", "policyTypes", default=["Ingress"]))]
if not gw_policies:
    fail("no NetworkPolicy with policyTypes Ingress selects the gateway pods (the admin port would be open to the cluster)")
for name, p in gw_policies:
    api_open, admin_from = False, []
    for rule in dig(p, "spec", "ingress", default=[]):
        rule_ports = [resolve(x.get("port")) for x in rule.get("ports") or []]
        covers = lambda port: not rule_ports or None in rule_ports or port in rule_ports
        if covers(8080):
            api_open = True
        if covers(9090):
            admin_from.append(rule.get("from") or [])
    only_monitoring = all(
        peers and all(set(peer) == {"namespaceSelector"}
                      and dig(peer, "namespaceSelector", "matchLabels", default={}) == {"kubernetes.io/metadata.name": "monitoring"}
                      for peer in peers)
        for peers in admin_from)
    check(api_open, f"NetworkPolicy {name}: the API port 8080 is admitted",
          f"NetworkPolicy {name}: no rule admits the API port 8080")
    check(admin_from and only_monitoring, f"NetworkPolicy {name}: the admin port 9090 only from namespace monitoring",
          f"NetworkPolicy {name}: the admin port 9090 must be admitted only from the monitoring namespace, found {admin_from}")

# ---------- Dockerfile ----------
try:
    with open(os.path.join(deploy, "Dockerfile"), encoding="utf-8") as fh:
        dockerfile = fh.read()
    with open(os.path.join(repo, "rust-toolchain.toml"), "rb") as fh:
        channel = dig(tomllib.load(fh), "toolchain", "channel")
except OSError as e:
    fail(f"cannot read {e.filename}")
else:
    arg = re.search(r"^ARG RUST_VERSION=(\S+)", dockerfile, re.M)
    check(arg and arg.group(1) == channel, f"Dockerfile RUST_VERSION = rust-toolchain.toml channel {channel}",
          f"Dockerfile ARG RUST_VERSION {arg and arg.group(1)} != rust-toolchain.toml channel {channel}")
    exposed = {int(p.split("/")[0]) for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M) for p in line.split()}
    check({8080, 9090} <= exposed, "Dockerfile exposes 8080 and 9090", f"Dockerfile EXPOSE {exposed} lacks 8080/9090")
    user = re.findall(r"^USER (\d+)", dockerfile, re.M)
    check(user and int(user[-1]) == eff("runAsUser"), f"Dockerfile USER {user[-1] if user else None} = runAsUser",
          f"Dockerfile USER {user} != Deployment runAsUser {eff('runAsUser')}")
    hc = re.search(r"^HEALTHCHECK .*?(?<!\\)$", dockerfile, re.M | re.S)
    check(hc and '"healthcheck"' in hc.group(0) and "9090" in hc.group(0) and "/readyz" in hc.group(0),
          "Dockerfile HEALTHCHECK runs `mis-gateway healthcheck` on :9090/readyz",
          "Dockerfile HEALTHCHECK must run the binary's healthcheck against :9090/readyz (no shell in the image)")
    # Every base image pinned by digest: FROM lines name a stage, or an image with @sha256:,
    # directly or through an ARG whose default carries it.
    dargs = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.M))
    stages_seen, unpinned = set(), []
    for image, stage in re.findall(r"^FROM (\S+)(?: AS (\S+))?", dockerfile, re.M):
        expanded = re.sub(r"\$\{(\w+)\}", lambda m: dargs.get(m.group(1), ""), image)
        if image not in stages_seen and not re.search(r"@sha256:[0-9a-f]{64}$", expanded):
            unpinned.append(image)
        if stage:
            stages_seen.add(stage)
    check(not unpinned, "Dockerfile base images are pinned by digest",
          f"Dockerfile FROM without an @sha256: digest: {unpinned}")
    labels = set(re.findall(r"org\.opencontainers\.image\.(\w+)=", dockerfile))
    want = {"title", "description", "licenses", "version", "revision"}
    check(want <= labels, "Dockerfile sets the OCI labels " + ", ".join(sorted(want)),
          f"Dockerfile lacks OCI labels {sorted(want - labels)}")
    try:
        with open(os.path.join(repo, ".dockerignore"), encoding="utf-8") as fh:
            ignore = [l.strip() for l in fh if l.strip() and not l.startswith("#")]
        check(ignore[:1] == ["*"], ".dockerignore leaves out everything not re-included",
              ".dockerignore must start with `*` (an allow-list, so target/ and .git/ never reach the daemon)")
    except OSError:
        fail(".dockerignore missing at the repository root (the build context)")
    check(re.search(r"MIS_GATEWAY_CONFIG=/etc/mis-gateway/routes\.toml", dockerfile) is not None,
          "Dockerfile sets MIS_GATEWAY_CONFIG=/etc/mis-gateway/routes.toml",
          "Dockerfile must set ENV MIS_GATEWAY_CONFIG=/etc/mis-gateway/routes.toml")
    # The journal's writable place for [journal] path = "/var/lib/mis-gateway/journal.db" (the
    # config folder is mounted read-only): the runtime uid's directory, declared a VOLUME.
    owner = re.search(r"^COPY --from=\S+ --chown=(\d+)(?::\d+)? \S+ /var/lib/mis-gateway/?$", dockerfile, re.M)
    check(owner and user and owner.group(1) == user[-1]
          and re.search(r"^VOLUME .*/var/lib/mis-gateway\b", dockerfile, re.M),
          "Dockerfile: /var/lib/mis-gateway belongs to the runtime uid and is a VOLUME (the journal's place)",
          "Dockerfile must create /var/lib/mis-gateway owned by the USER uid (COPY --from=… --chown=) and declare it a VOLUME")

# ---------- supply chain: deny.toml (run by deploy/supply-chain.sh) ----------
try:
    with open(os.path.join(repo, "deny.toml"), "rb") as fh:
        deny = tomllib.load(fh)
except (OSError, tomllib.TOMLDecodeError) as e:
    fail(f"deny.toml: {e}")
else:
    banned = {d.get("crate", d.get("name")) if isinstance(d, dict) else d for d in dig(deny, "bans", "deny", default=[])}
    check({"aws-lc-sys", "openssl-sys"} <= banned, "deny.toml bans aws-lc-sys and openssl-sys (one TLS stack, ring)",
          f"deny.toml [bans] deny must list aws-lc-sys and openssl-sys, found {sorted(banned)}")
    src = dig(deny, "sources", default={})
    check(src.get("unknown-registry") == "deny" and src.get("unknown-git") == "deny",
          "deny.toml admits crates.io only (unknown registries and git sources denied)",
          f"deny.toml [sources] must deny unknown-registry and unknown-git, found {src}")
    allowed = set(dig(deny, "licenses", "allow", default=[]))
    copyleft = sorted(l for l in allowed if l.split()[0].startswith(("GPL", "AGPL", "LGPL", "MPL", "EUPL", "SSPL")))
    check(allowed and not copyleft, f"deny.toml allows {len(allowed)} permissive licences",
          f"deny.toml allows copyleft licences {copyleft} (or none at all)")
try:
    with open(os.path.join(repo, ".ci", "run"), encoding="utf-8") as fh:
        ci = fh.read()
    check("deploy/supply-chain.sh" in ci and "deploy/build-image-context.sh" in ci,
          ".ci/run runs the supply-chain gate and the image build-context check",
          ".ci/run must run deploy/supply-chain.sh and deploy/build-image-context.sh")
except OSError as e:
    fail(f".ci/run: {e}")

# ---------- systemd unit vs routes.toml ----------
with open(os.path.join(deploy, "systemd", "mis-gateway.service"), encoding="utf-8") as fh:
    unit = fh.read()
try:
    with open(os.path.join(repo, "routes.toml"), "rb") as fh:
        seed = tomllib.load(fh)
    host_drain = dig(seed, "server", "drain_timeout_ms", default=30000) / 1000
    # The journal is on by default beside routes.toml, which the unit makes read-only: the
    # install steps must point [journal] path into the unit's StateDirectory.
    check(re.search(r"^StateDirectory=mis-gateway$", unit, re.M)
          and re.search(r"^ReadOnlyPaths=/etc/mis-gateway$", unit, re.M)
          and 'path = "/var/lib/mis-gateway/journal.db"' in unit,
          "systemd: the header points [journal] path into StateDirectory /var/lib/mis-gateway",
          "systemd unit: needs StateDirectory=mis-gateway, ReadOnlyPaths=/etc/mis-gateway and the install step "
          "[journal] path = \"/var/lib/mis-gateway/journal.db\" (else the journal cannot be written)")
    stop = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M)
    check(stop and int(stop.group(1)) > host_drain,
          f"systemd TimeoutStopSec {stop and stop.group(1)} s > routes.toml drain {host_drain:g} s",
          f"systemd TimeoutStopSec must be whole seconds above routes.toml's drain ({host_drain:g} s)")
    with open(os.path.join(deploy, "systemd", "secrets.env.example"), encoding="utf-8") as fh:
        example = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", fh.read(), re.M))
    names = [b.get("password_env") for b in seed.get("backends") or [] if b.get("password_env")]
    check(set(names) <= example, "secrets.env.example covers routes.toml's password_env names",
          f"secrets.env.example lacks {sorted(set(names) - example)} named by routes.toml")
except (OSError, tomllib.TOMLDecodeError) as e:
    fail(f"routes.toml / secrets.env.example: {e}")

print()
if problems:
    print(f"{len(problems)} problem(s)")
    sys.exit(1)
PY
py=$?
set -e
[ "$py" -eq 0 ] || failed=1

# The cluster's routes.toml must pass the gateway's own validation (same code as a reload).
GW="${MIS_GATEWAY_BIN:-$REPO_ROOT/target/debug/mis-gateway}"
if [ -x "$GW" ]; then
  cm="$tmp/configmap-routes.toml"
  python3 -c 'import sys, yaml; d = next(yaml.safe_load_all(open(sys.argv[1]))); open(sys.argv[2], "w").write(d["data"]["routes.toml"])' \
    "$DEPLOY_DIR/kubernetes/configmap.yaml" "$cm"
  # --no-secrets: CI has none of the cluster's secrets; their names are still checked.
  if "$GW" check --no-secrets --config "$cm" >"$tmp/check.out" 2>&1; then
    echo "ok: the ConfigMap's routes.toml passes mis-gateway check"
  else
    fail "the ConfigMap's routes.toml fails mis-gateway check: $(cat "$tmp/check.out")"
  fi
else
  echo "note: $GW not built; the ConfigMap's routes.toml was not checked by the gateway"
fi

if [ "$failed" -ne 0 ]; then
  echo "verify: FAILED"
  exit 1
fi
echo "verify: all deploy checks passed"
