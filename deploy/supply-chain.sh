#!/usr/bin/env bash
# The supply-chain gate: `cargo deny check licenses bans sources` against deny.toml, and a
# CycloneDX SBOM of the gateway's dependency tree (cargo-cyclonedx), checked to name every
# crate the lock file resolves for the shipped binary.
#
# Not checked here: RustSec advisories (`cargo deny check advisories` needs the advisory
# database from GitHub, which these machines cannot fetch; run it where the network allows).
#
#   bash deploy/supply-chain.sh          # SBOM written to target/sbom/mis-gateway.cdx.json
#
# Needs cargo-deny and cargo-cyclonedx (`cargo install --locked cargo-deny cargo-cyclonedx`;
# .ci/run installs them when absent). Exit status 0 all good, 1 a finding, 2 a missing tool.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
for tool in cargo-deny cargo-cyclonedx; do
  command -v "$tool" >/dev/null || { echo "supply-chain: $tool not found (cargo install --locked $tool)" >&2; exit 2; }
done

echo "== cargo deny check licenses bans sources"
cargo deny --locked check licenses bans sources

echo "== CycloneDX SBOM"
out=${SBOM_DIR:-$REPO_ROOT/target/sbom}
mkdir -p "$out"
# Written next to Cargo.toml under a name of our own, then moved: the repository keeps none.
cargo cyclonedx --format json --spec-version 1.5 --override-filename mis-gateway.sbom
mv -f "$REPO_ROOT/mis-gateway.sbom.json" "$out/mis-gateway.cdx.json"
python3 - "$out/mis-gateway.cdx.json" <<'PY'
import json, subprocess, sys
bom = json.load(open(sys.argv[1]))
problems = []
if bom.get("bomFormat") != "CycloneDX":
    problems.append(f"bomFormat is {bom.get('bomFormat')!r}")
root = (bom.get("metadata") or {}).get("component") or {}
if root.get("name") != "mis-gateway":
    problems.append(f"metadata.component is {root.get('name')!r}, not mis-gateway")
listed = {(c.get("name"), c.get("version")) for c in bom.get("components") or []}
no_purl = [c.get("name") for c in bom.get("components") or [] if not (c.get("purl") or "").startswith("pkg:cargo/")]
# What the binary is built from: the normal (non-dev) dependency tree on this target.
tree = subprocess.run(
    ["cargo", "tree", "--locked", "--edges", "normal,build", "--prefix", "none", "--format", "{p}"],
    capture_output=True, text=True, check=True).stdout
needed = set()
for line in tree.splitlines():
    parts = line.split()
    if len(parts) >= 2 and parts[0] != "mis-gateway":
        needed.add((parts[0], parts[1].lstrip("v")))
missing = sorted(needed - listed)
if missing:
    problems.append(f"{len(missing)} crates of the build are not in the SBOM, e.g. {missing[:5]}")
if no_purl:
    problems.append(f"components without a pkg:cargo purl: {no_purl[:5]}")
for p in problems:
    print(f"FAIL: {p}")
if problems:
    sys.exit(1)
print(f"ok: {sys.argv[1]}: CycloneDX {bom.get('specVersion')}, {len(listed)} components, "
      f"all {len(needed)} crates of the build named")
PY
echo "supply-chain: all checks passed"
