#!/usr/bin/env bash
# Proves deploy/Dockerfile's builder stage without Docker (these machines have no daemon and
# cannot pull base images): reads the builder stage's COPY lines, checks the root .dockerignore
# lets every file they name into the context, copies exactly those paths (tracked files only,
# as in a fresh clone) into an empty folder, runs the stage's last `cargo build` there with the
# Dockerfile's RUST_VERSION, then runs the binary's `--version`, `check` on the Kubernetes
# ConfigMap's routes.toml, and `healthcheck` against a closed port (which must fail).
#
# What it proves: the context holds everything the crate needs to build with --locked (a file
# the build reads but no COPY names fails here). What it does not: that the base images pull,
# that their digests are current, or the runtime stage (distroless; nothing runs in it).
#
#   bash deploy/build-image-context.sh
#
# Environment:
#   CARGO_BUILD_BUILD_DIR [target/ of this repository] where intermediate artifacts go. Sharing
#                      the repository's is sound: the copied crate is another package (another
#                      path), so it is always compiled from the copy; only registry
#                      dependencies' artifacts are reused.
#   CARGO_TARGET_DIR   [target/image-context] where the binary lands, apart from the repo's own.
#   IMAGE_BUILD_PROFILE [release] `dev` drops --release for a quick local run.
#   KEEP_CONTEXT=1     leave the folder for inspection.
# Exit status: 0 all good, 1 a problem (named), 2 a missing tool.
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$DEPLOY_DIR")
DOCKERFILE="$DEPLOY_DIR/Dockerfile"
command -v python3 >/dev/null || { echo "build-image-context: python3 not found" >&2; exit 2; }
command -v git >/dev/null || { echo "build-image-context: git not found" >&2; exit 2; }

ctx=$(mktemp -d)
if [ "${KEEP_CONTEXT:-0}" = 1 ]; then
  echo "context kept in $ctx"
else
  trap 'rm -rf "$ctx"' EXIT
fi

# Parse the Dockerfile and .dockerignore; copy; print the build command and RUST_VERSION.
plan=$(python3 - "$DOCKERFILE" "$REPO_ROOT/.dockerignore" "$REPO_ROOT" "$ctx" <<'PY'
import os, re, shutil, subprocess, sys

dockerfile, ignore_file, repo, ctx = sys.argv[1:5]

def die(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)

# Instructions, continuation lines joined, comments dropped.
instructions, cur = [], ""
for line in open(dockerfile, encoding="utf-8"):
    s = line.rstrip("\n")
    if not cur and (s.lstrip().startswith("#") or not s.strip()):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    cur += s
    instructions.append(cur.strip())
    cur = ""

args = {}
stage, stages = None, {}
for ins in instructions:
    word, _, rest = ins.partition(" ")
    word = word.upper()
    if word == "ARG" and stage is None:
        k, _, v = rest.partition("=")
        args[k.strip()] = v.strip()
    elif word == "FROM":
        m = re.search(r"\bAS\s+(\S+)\s*$", rest, re.I)
        stage = m.group(1) if m else f"stage{len(stages)}"
        stages[stage] = []
    elif stage is not None:
        stages[stage].append((word, rest))
if "builder" not in stages:
    die(f"{dockerfile}: no stage named builder")

# .dockerignore as Docker reads it: the last pattern matching a path or one of its parents wins.
patterns = []
if os.path.exists(ignore_file):
    for line in open(ignore_file, encoding="utf-8"):
        p = line.strip()
        if not p or p.startswith("#"):
            continue
        neg = p.startswith("!")
        p = p.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(p):
            if p.startswith("**", i):
                rx += ".*"; i += 2
            elif p[i] == "*":
                rx += "[^/]*"; i += 1
            elif p[i] == "?":
                rx += "[^/]"; i += 1
            else:
                rx += re.escape(p[i]); i += 1
        patterns.append((re.compile(rx + r"\Z"), neg))

def in_context(path):
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rx, neg in patterns:
        if any(rx.match(pre) for pre in prefixes):
            excluded = not neg
    return not excluded

workdir = "/"
copies = 0
for word, rest in stages["builder"]:
    if word == "WORKDIR":
        workdir = rest.strip()
    if word != "COPY":
        continue
    toks = rest.split()
    if any(t.startswith("--from") for t in toks):
        continue
    toks = [t for t in toks if not t.startswith("--")]
    *sources, dest = toks
    if dest in (".", "./") or dest.endswith("/"):
        into_dir = True
    else:
        into_dir = len(sources) > 1
    dest = os.path.normpath(os.path.join(ctx, dest.lstrip("/") if dest.startswith("/") else dest))
    if workdir != "/" and not rest.split()[-1].startswith("/"):
        pass  # relative destinations are relative to WORKDIR, which the folder stands for
    for src in sources:
        src = src.strip("/")
        files = subprocess.run(["git", "-C", repo, "ls-files", "--", src], capture_output=True,
                               text=True, check=True).stdout.split()
        if not files:
            die(f"COPY {src}: no such tracked file or folder in the repository")
        left_out = [f for f in files if not in_context(f)]
        if left_out:
            die(f"COPY {src}: .dockerignore keeps {left_out[:5]} out of the build context")
        is_dir = os.path.isdir(os.path.join(repo, src))
        for f in files:
            if is_dir:
                target = os.path.join(dest, os.path.relpath(f, src))
            elif into_dir:
                target = os.path.join(dest, os.path.basename(f))
            else:
                target = dest
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(repo, f), target)
            copies += 1

builds = [m.group(0).strip() for word, rest in stages["builder"] if word == "RUN"
          for m in re.finditer(r"cargo build[^&|;\\]*", rest)]
if not builds:
    die("the builder stage runs no cargo build")
print(f"copied {copies} files", file=sys.stderr)
print(args.get("RUST_VERSION", ""))
print(builds[-1])
PY
) || exit 1
rust_version=$(sed -n 1p <<<"$plan")
build=$(sed -n 2p <<<"$plan")
echo "== builder stage: $build (toolchain ${rust_version:-default}) in a folder holding only the COPY paths"
( cd "$ctx" && find . -type f | sort | sed 's#^\./#    #' | awk 'NR<=12; END { if (NR>12) print "    ... " NR " files" }' )

profile=${IMAGE_BUILD_PROFILE:-release}
if [ "$profile" = dev ]; then
  build=${build/--release/}
  out=debug
else
  out=release
fi
export CARGO_BUILD_BUILD_DIR=${CARGO_BUILD_BUILD_DIR:-$REPO_ROOT/target}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target/image-context}
# The folder has no rust-toolchain.toml (neither has the image): use the Dockerfile's version.
if [ -n "$rust_version" ] && command -v rustup >/dev/null; then
  export RUSTUP_TOOLCHAIN=$rust_version
fi
# shellcheck disable=SC2086 # the command is split into words as the RUN line does
( cd "$ctx" && $build )
bin="$CARGO_TARGET_DIR/$out/mis-gateway"
[ "$bin" -nt "$ctx/Cargo.toml" ] || { echo "FAIL: $bin was not (re)built by the context's build"; exit 1; }

failed=0
version=$("$bin" --version)
if [[ $version =~ ^mis-gateway\ [0-9]+\.[0-9]+\.[0-9]+ ]]; then
  echo "ok: --version: $version"
else
  echo "FAIL: --version printed: $version"; failed=1
fi
cm="$ctx/configmap-routes.toml"
python3 -c 'import sys, yaml; d = next(yaml.safe_load_all(open(sys.argv[1]))); open(sys.argv[2], "w").write(d["data"]["routes.toml"])' \
  "$DEPLOY_DIR/kubernetes/configmap.yaml" "$cm"
# --no-secrets: the cluster's secrets are not here; their names are still checked.
if out=$("$bin" check --no-secrets --config "$cm" 2>&1); then
  echo "ok: check on the ConfigMap's routes.toml: $(head -n 1 <<<"$out" | sed "s#$ctx/##")"
else
  echo "FAIL: check on the ConfigMap's routes.toml:"; sed 's/^/    /' <<<"$out"; failed=1
fi
closed=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if "$bin" healthcheck --addr "127.0.0.1:$closed" --timeout-ms 2000 2>/dev/null; then
  echo "FAIL: healthcheck against a closed port exited 0"; failed=1
else
  echo "ok: healthcheck against a closed port fails"
fi
[ "$failed" -eq 0 ] || { echo "build-image-context: FAILED"; exit 1; }
echo "build-image-context: the Dockerfile's COPY paths build the gateway"
