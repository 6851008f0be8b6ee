#!/usr/bin/env python3
"""Reads the raw outputs of bench/run.sh (RUNS_DIR) and prints the table; writes OUT_JSON.

    summarize.py RUNS_DIR OUT_JSON
    summarize.py --check WRK_OUTPUT LABEL [--quiet]

Every run is wrk with bench/unique.lua, whose `done` hook prints one BENCH line: exact
percentiles in microseconds from wrk's per-microsecond latency histogram, socket errors, the
status of every response, and (paced runs) the sends that went out late. Every figure is the
median over rounds of that run's figure (e.g. median of the per-run p99s).

--check prints a run's status mix and exits 1 if more than 0.1% of its requests were answered
non-2xx or failed at the socket (run.sh then fails the whole run).
"""

import json
import math
import os
import re
import statistics
import sys
import time

TARGETS = ["direct", "haproxy", "gateway"]
# At most this share of a run's (and a phase's) requests may be answered non-2xx or fail.
MAX_BAD_SHARE = 0.001


def read_env(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            out[k] = v
    return out


# Meta values that are text even when they look like numbers: a short commit id such as
# 0271e62 parses as a float (2.71e+64), a sha256 prefix may be all digits.
TEXT_KEYS = {"git_head", "gateway_sha256", "gateway_bin", "gateway_version", "haproxy_version",
             "nginx_version", "wrk_version", "kernel", "loadavg_at_end", "gateway_rust_log"}


def num(k, v):
    if k in TEXT_KEYS:
        return v
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def wrk_run(path):
    text = open(path).read()
    m = re.search(r"^BENCH (.*)$", text, re.M)
    if not m:
        raise SystemExit(f"{path}: no BENCH line from wrk:\n{text[-500:]}")
    v = dict(kv.split("=", 1) for kv in m.group(1).split())
    statuses = {}
    if v["statuses"] != "none":
        statuses = {int(c): int(n) for c, n in (p.split(":") for p in v["statuses"].split(","))}
    v = {k: int(x) for k, x in v.items() if k != "statuses"}
    secs = v["duration_us"] / 1e6
    non_2xx = sum(n for c, n in statuses.items() if not 200 <= c < 300)
    # wrk's err_status counts answers >= 400, which are in non_2xx already: not added again.
    socket_errors = v["err_connect"] + v["err_read"] + v["err_write"] + v["err_timeout"]
    sent = v["requests"] + v["err_connect"] + v["err_read"] + v["err_write"]
    return {
        "rps": round(v["requests"] / secs, 1),
        "requests": v["requests"],
        "p50_ms": v["p50_us"] / 1e3,
        "p90_ms": v["p90_us"] / 1e3,
        "p99_ms": v["p99_us"] / 1e3,
        "p999_ms": v["p999_us"] / 1e3,
        "max_ms": v["max_us"] / 1e3,
        "statuses": statuses,
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
        "errors": non_2xx + socket_errors,
        "bad_share": (non_2xx + socket_errors) / sent if sent else 1.0,
        "late_sends": v["late"],
        "late_max_ms": v["late_max_us"] / 1e3,
    }


def mix_text(statuses):
    return ", ".join(f"{c}: {n}" for c, n in sorted(statuses.items())) or "no answers"


def check(path, label, quiet):
    r = wrk_run(path)
    bad = r["bad_share"] > MAX_BAD_SHARE
    if bad or not quiet:
        late = f", {r['late_sends']} sent late (max {r['late_max_ms']:.1f} ms)" if r["late_sends"] else ""
        print(f"  {label}: {r['rps']:.0f} rps, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms; "
              f"statuses {mix_text(r['statuses'])}; socket errors {r['socket_errors']}{late}"
              + (f"  <-- {100 * r['bad_share']:.2f}% not 2xx" if bad else ""))
    return 1 if bad else 0


def phase_mix(runs):
    mix = {}
    for r in runs:
        for c, n in r["statuses"].items():
            mix[c] = mix.get(c, 0) + n
    return mix


def bad_share(runs):
    bad = sum(r["errors"] for r in runs)
    total = sum(r["requests"] + r["socket_errors"] for r in runs)
    return bad / total if total else 1.0


def median_of(runs, key):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return round(statistics.median(vals), 4) if vals else None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main():
    if sys.argv[1] == "--check":
        return check(sys.argv[2], sys.argv[3], "--quiet" in sys.argv[4:])
    runs_dir, out_json = sys.argv[1], sys.argv[2]
    meta = {k: num(k, v) for k, v in read_env(os.path.join(runs_dir, "meta.env")).items()}
    rss = {k: num(k, v) for k, v in read_env(os.path.join(runs_dir, "rss.env")).items()}
    rounds, duration = meta["rounds"], meta["duration_s"]

    tp = {t: [wrk_run(os.path.join(runs_dir, f"tp-{r}-{t}.wrk")) for r in range(1, rounds + 1)] for t in TARGETS}
    fr = {t: [wrk_run(os.path.join(runs_dir, f"rate-{r}-{t}.wrk")) for r in range(1, rounds + 1)] for t in TARGETS}
    for runs in fr.values():
        for r in runs:
            r["achieved_rps"] = r["rps"]
            r["rate_kept"] = r["rps"] >= 0.95 * meta["rate_total"]
    big = {t: wrk_run(os.path.join(runs_dir, f"big-{t}.wrk")) for t in ("haproxy", "gateway")}

    med = {
        "throughput": {t: {k: median_of(tp[t], k) for k in ("rps", "p50_ms", "p99_ms")} for t in TARGETS},
        "fixed_rate": {t: {k: median_of(fr[t], k) for k in ("achieved_rps", "p50_ms", "p99_ms", "late_sends")}
                       for t in TARGETS},
    }
    ratios = {}
    for base in ("haproxy", "direct"):
        g, b = med["throughput"]["gateway"], med["throughput"][base]
        h, c = med["fixed_rate"]["gateway"], med["fixed_rate"][base]
        ratios[f"gateway/{base}"] = {
            "throughput_rps": ratio(g["rps"], b["rps"]),
            "throughput_p50": ratio(g["p50_ms"], b["p50_ms"]),
            "throughput_p99": ratio(g["p99_ms"], b["p99_ms"]),
            "fixed_rate_p50": ratio(h["p50_ms"], c["p50_ms"]),
            "fixed_rate_p99": ratio(h["p99_ms"], c["p99_ms"]),
        }
    errors = {
        "throughput": {t: sum(r["errors"] for r in tp[t]) for t in TARGETS},
        "fixed_rate": {t: sum(r["errors"] for r in fr[t]) for t in TARGETS},
        "big_conns": {t: big[t]["errors"] for t in big},
    }
    statuses = {
        "throughput": {t: phase_mix(tp[t]) for t in TARGETS},
        "fixed_rate": {t: phase_mix(fr[t]) for t in TARGETS},
        "big_conns": {t: phase_mix([big[t]]) for t in big},
    }
    too_bad = [f"{phase} {t}" for phase, runs in (("throughput", tp), ("fixed_rate", fr)) for t in TARGETS
               if bad_share(runs[t]) > MAX_BAD_SHARE]
    too_bad += [f"big_conns {t}" for t in big if bad_share([big[t]]) > MAX_BAD_SHARE]
    rate_missed = [t for t in TARGETS if not all(r["rate_kept"] for r in fr[t])]

    result = {
        "schema": 2,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "meta": meta,
        "median": med,
        "ratios": ratios,
        "rss_kib": {
            "gateway": {
                "vmhwm_after_checks": rss.get("gateway_vmhwm_after_checks_kib"),
                "vmhwm_after_runs": rss.get("gateway_vmhwm_after_runs_kib"),
                "vmrss_after_runs": rss.get("gateway_vmrss_after_runs_kib"),
                f"vmhwm_after_{meta['big_conns']}_conns": rss.get("gateway_vmhwm_after_big_kib"),
            },
            "haproxy": {
                "vmhwm_after_checks": rss.get("haproxy_vmhwm_after_checks_kib"),
                "vmhwm_after_runs": rss.get("haproxy_vmhwm_after_runs_kib"),
                f"vmhwm_after_{meta['big_conns']}_conns": rss.get("haproxy_vmhwm_after_big_kib"),
            },
        },
        "big_conns": big,
        "errors": errors,
        "statuses": statuses,
        "fixed_rate_not_kept": rate_missed,
        "runs": {"throughput": tp, "fixed_rate": fr},
    }
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    print()
    print(f"mis-gateway bench: {rounds} rounds x {duration}s, {meta['conns']} connections, "
          f"body {meta['body_bytes']} B, {meta['nproc']} CPUs, gateway {meta['git_head']} (RUST_LOG={meta['gateway_rust_log']})"
          + (", threads pinned (haproxy cpu-map, gateway --pin-workers)" if str(meta.get('pin_workers', 0)) == "1" else ""))
    print(f"every request a distinct booking (fresh slot + direction.guid) | medians over rounds | "
          f"throughput: wrk -t1 -c{meta['conns']} closed loop | fixed rate: wrk -t{meta['rate_threads']} "
          f"-c{meta['conns']} paced at {meta['rate_total']} rps | at most {meta.get('mis_conns', '?')} "
          f"connections to the MIS (haproxy server maxconn, gateway max_connections)")
    print()
    print(f"{'target':<16}{'rps':>10}{'p50 ms':>9}{'p99 ms':>9}  |{'@rate rps':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'late':>7}{'errors':>8}")
    for t in TARGETS:
        a, b = med["throughput"][t], med["fixed_rate"][t]
        print(f"{t:<16}{f(a['rps'], '.0f'):>10}{f(a['p50_ms'], '.3f'):>9}{f(a['p99_ms'], '.3f'):>9}  |"
              f"{f(b['achieved_rps'], '.0f'):>10}{f(b['p50_ms'], '.3f'):>9}{f(b['p99_ms'], '.3f'):>9}"
              f"{f(b['late_sends'], '.0f'):>7}{errors['throughput'][t] + errors['fixed_rate'][t]:>8}")
    for name, r in ratios.items():
        print(f"{name:<16}{f(r['throughput_rps'], '.2f') + 'x':>10}{f(r['throughput_p50'], '.2f') + 'x':>9}"
              f"{f(r['throughput_p99'], '.2f') + 'x':>9}  |{'':>10}{f(r['fixed_rate_p50'], '.2f') + 'x':>9}"
              f"{f(r['fixed_rate_p99'], '.2f') + 'x':>9}")
    print()
    bc = meta["big_conns"]
    print(f"{'VmHWM KiB':<16}{'checks':>10}{'runs':>9}{f'{bc} conns':>11}  | {bc}-connection run (wrk -t2)")
    for t, label in (("gateway", "gateway"), ("haproxy", "haproxy (ctx)")):
        r, w = result["rss_kib"][t], big[t]
        print(f"{label:<16}{r['vmhwm_after_checks']:>10}{r['vmhwm_after_runs']:>9}{r[f'vmhwm_after_{bc}_conns']:>11}  |"
              f" {w['rps']:.0f} rps, p99 {w['p99_ms']:.1f} ms, {w['errors']} errors")
    print()
    print("status mix (all rounds)")
    for phase, per in statuses.items():
        for t, mix in per.items():
            print(f"  {phase:<11}{t:<9}{mix_text(mix)}")
    if rate_missed:
        print(f"WARNING: fixed rate not kept (achieved < 95% of {meta['rate_total']} rps) in some run for: "
              f"{', '.join(rate_missed)}; their fixed-rate latencies understate queueing (see README)")
    if any(v for e in errors.values() for v in e.values()):
        print(f"WARNING: errors or non-2xx answers: {json.dumps(errors)}")
    print(f"load average at the end: {meta['loadavg_at_end']}")
    if too_bad:
        print(f"FAILED: more than {100 * MAX_BAD_SHARE:g}% of the requests not answered 2xx in: {', '.join(too_bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
