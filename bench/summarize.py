#!/usr/bin/env python3
"""Reads the raw outputs of bench/run.sh (RUNS_DIR) and prints the table; writes OUT_JSON.

Throughput runs: wrk's own numbers (the BENCH line its Lua `done` hook prints: exact
percentiles in microseconds from wrk's HdrHistogram). Fixed-rate runs: percentiles computed
here from h2load's --log-file, one line per request (h2load 1.52 prints no percentiles).
Every figure is the median over rounds of that run's figure (e.g. median of the per-run p99s).
"""

import json
import math
import os
import re
import statistics
import sys
import time

TARGETS = ["direct", "haproxy", "gateway"]


def read_env(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            out[k] = v
    return out


def num(v):
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
    v = {k: int(x) for k, x in (kv.split("=") for kv in m.group(1).split())}
    secs = v["duration_us"] / 1e6
    errors = sum(v[k] for k in v if k.startswith("err_"))
    return {
        "rps": round(v["requests"] / secs, 1),
        "requests": v["requests"],
        "p50_ms": v["p50_us"] / 1e3,
        "p90_ms": v["p90_us"] / 1e3,
        "p99_ms": v["p99_us"] / 1e3,
        "p999_ms": v["p999_us"] / 1e3,
        "max_ms": v["max_us"] / 1e3,
        "errors": errors,
        "non_2xx": v["err_status"],
    }


def pct(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return float("nan")
    k = max(0, math.ceil(p / 100 * len(sorted_vals)) - 1)
    return sorted_vals[k]


def h2load_run(log_path, out_path, target_rate):
    """Percentiles of the per-request latencies h2load logged (successful 200s only); the
    achieved rate is all logged requests over the span from the first start to the last end."""
    lat, bad, first, last = [], 0, None, None
    with open(log_path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            start, status, took = int(parts[0]), parts[1], int(parts[2])
            first = start if first is None else min(first, start)
            last = start + took if last is None else max(last, start + took)
            if status != "200":
                bad += 1
                continue
            lat.append(took)
    lat.sort()
    out = open(out_path).read()
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out, re.M)
    n = len(lat) + bad
    achieved = n / ((last - first) / 1e6) if n > 1 and last > first else 0.0
    missing = (int(m.group(1)) - n) if m else 0
    return {
        "achieved_rps": round(achieved, 1),
        "rate_kept": achieved >= 0.95 * target_rate and m is not None,
        "requests": n,
        "p50_ms": pct(lat, 50) / 1e3,
        "p90_ms": pct(lat, 90) / 1e3,
        "p99_ms": pct(lat, 99) / 1e3,
        "p999_ms": pct(lat, 99.9) / 1e3,
        "max_ms": (lat[-1] / 1e3) if lat else float("nan"),
        "errors": bad + (int(m.group(5)) if m else 0),
        "non_2xx": bad,
        "unfinished": missing,
    }


def median_of(runs, key):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return round(statistics.median(vals), 4) if vals else None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main():
    runs_dir, out_json = sys.argv[1], sys.argv[2]
    meta = {k: num(v) for k, v in read_env(os.path.join(runs_dir, "meta.env")).items()}
    rss = {k: num(v) for k, v in read_env(os.path.join(runs_dir, "rss.env")).items()}
    rounds, duration = meta["rounds"], meta["duration_s"]

    tp = {t: [wrk_run(os.path.join(runs_dir, f"tp-{r}-{t}.wrk")) for r in range(1, rounds + 1)] for t in TARGETS}
    fr = {
        t: [
            h2load_run(os.path.join(runs_dir, f"rate-{r}-{t}.log"), os.path.join(runs_dir, f"rate-{r}-{t}.out"),
                       meta["rate_total"])
            for r in range(1, rounds + 1)
        ]
        for t in TARGETS
    }
    big = {t: wrk_run(os.path.join(runs_dir, f"big-{t}.wrk")) for t in ("haproxy", "gateway")}

    med = {
        "throughput": {t: {k: median_of(tp[t], k) for k in ("rps", "p50_ms", "p99_ms")} for t in TARGETS},
        "fixed_rate": {t: {k: median_of(fr[t], k) for k in ("achieved_rps", "p50_ms", "p99_ms")} for t in TARGETS},
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
    rate_missed = [t for t in TARGETS if not all(r["rate_kept"] for r in fr[t])]

    result = {
        "schema": 1,
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
          f"body {meta['body_bytes']} B, {meta['nproc']} CPUs, gateway {meta['git_head']} (RUST_LOG={meta['gateway_rust_log']})")
    print(f"medians over rounds | throughput: wrk -t1 -c{meta['conns']} closed loop | "
          f"fixed rate: h2load {meta['rate_total']} rps open loop, staggered")
    print()
    print(f"{'target':<16}{'rps':>10}{'p50 ms':>9}{'p99 ms':>9}  |{'@rate rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for t in TARGETS:
        a, b = med["throughput"][t], med["fixed_rate"][t]
        print(f"{t:<16}{f(a['rps'], '.0f'):>10}{f(a['p50_ms'], '.3f'):>9}{f(a['p99_ms'], '.3f'):>9}  |"
              f"{f(b['achieved_rps'], '.0f'):>10}{f(b['p50_ms'], '.3f'):>9}{f(b['p99_ms'], '.3f'):>9}"
              f"{errors['throughput'][t] + errors['fixed_rate'][t]:>8}")
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
    if rate_missed:
        print(f"WARNING: fixed rate not kept (achieved < 95% of {meta['rate_total']} rps) in some run for: "
              f"{', '.join(rate_missed)}; their fixed-rate latencies understate queueing (see README)")
    if any(v for e in errors.values() for v in e.values()):
        print(f"WARNING: errors or non-2xx answers: {json.dumps(errors)}")
    print(f"load average at the end: {meta['loadavg_at_end']}")


if __name__ == "__main__":
    main()
