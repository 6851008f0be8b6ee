#!/usr/bin/env python3
"""Helpers of bench/callgrind.sh: reads callgrind_annotate and strace -c outputs.

  callgrind_groups.py top FILE N             the first N functions of a callgrind_annotate output
  callgrind_groups.py groups SELF1 SELF2 D   per-booking self cost by concern: (run2 - run1) / D
  callgrind_groups.py entries INCL1 INCL2 D  per concern, the functions with the largest
                                             per-booking inclusive cost: (run2 - run1) / D
  callgrind_groups.py strace S1 S2 D         per-booking calls of each syscall: (run2 - run1) / D

Functions are assigned to a concern by their symbol (crate path, or libc name). Self costs add
up to the whole; inclusive costs overlap (a caller includes its callees) and say what a concern
costs with everything it calls (allocation, formatting) but without double counting inside it.
"""
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$")

# (concern, regex on the function name), first match wins. Names are "file:function [object]"
# with "???" as file when there is no debug info.
GROUPS = [
    ("argon2/blake2 (auth cache miss)", r"\b(argon2|blake2)::"),
    ("auth cache (moka)", r"\bmoka::|mis_gateway::policy::auth::"),
    ("sha2/hmac (auth cache key, idempotency fingerprint)", r"\b(sha2|hmac|digest|block_buffer)::|sha256"),
    ("JSON parse/validate (mis_gateway::wire::json, booking::schema)", r"mis_gateway::(wire::json|booking::schema)::"),
    ("normalize/render (mis_gateway::booking::normalize, jiff)", r"mis_gateway::booking::normalize::|\bjiff::"),
    ("serde_json (request parse, MIS answer parse, render)", r"\bserde_json::|\bserde(_core)?::|\bryu::|\bitoa::"),
    ("OTel spans (tracing-opentelemetry, SDK trace, propagation)",
     r"\btracing_opentelemetry::|opentelemetry_sdk::(trace|propagation)|opentelemetry::(trace|propagation|context)|opentelemetry_http::"),
    ("metrics (opentelemetry SDK metrics)", r"opentelemetry_sdk::metrics|opentelemetry::metrics|\bprometheus::"),
    ("opentelemetry common (KeyValue, Value, attributes)", r"\bopentelemetry(_sdk)?::"),
    ("log formatting (tracing_subscriber::fmt)", r"tracing_subscriber::fmt|\bnu_ansi_term::|\bsharded_slab::.*fmt"),
    ("tracing core/registry/filter", r"\btracing_core::|\btracing::|tracing_subscriber::|\bsharded_slab::|\bthread_local::|\bmatchers::|\bregex_automata::"),
    ("core::fmt (formatting, any caller)", r"\bcore::fmt::|alloc::fmt::|<[^>]*as core::fmt::"),
    ("uuid/random (request ids)", r"\buuid::|\bgetrandom::|\brand::|\brand_core::|\bchacha"),
    ("hyper server/client, http", r"\bhyper(_util|_rustls)?::|\bhttp::|\bhttparse::|\bh2::|\bhttp_body(_util)?::|\btower(_http|_service)?::|\bwant::|\btry_lock::"),
    ("tokio scheduling/IO/timers", r"\btokio::|\bmio::|\bparking_lot|\bcrossbeam|std::sys::.*(futex|sync|thread)|std::thread::|\bfutures_util::|\bfutures_core::"),
    ("allocation (malloc/free)", r"\b(__libc_)?(malloc|free|realloc|calloc|cfree)\b|_int_(malloc|free|realloc)|malloc_consolidate|unlink_chunk|\btcache|\b__rust_(alloc|dealloc|realloc)|alloc::alloc::|alloc::raw_vec::|\bsysmalloc|arena_get|alloc_perturb"),
    ("libc memcpy/memcmp/memset/str*", r"\b(__)?mem(cpy|move|set|cmp|chr|rchr)|\bstr(len|cmp|chr)|__(nss_)?database|bcmp"),
    ("syscall wrappers (libc)", r"\b(__libc_)?(send|recv|sendto|recvfrom|read|write|writev|readv|epoll_wait|epoll_ctl|futex|syscall|clock_gettime|accept4?|close)\b|__GI_|__vdso|__kernel_vsyscall|_dl_vdso"),
    ("dynamic loader / start-up", r"\b_dl_|\bld-linux|do_lookup|check_match"),
    ("mis-gateway (other)", r"mis_gateway::"),
    ("Rust std/core/alloc (other)", r"\b(core|std|alloc)::|\bhashbrown::|\bbytes::|\bsmallvec::|\barc_swap::"),
]
GROUPS = [(name, re.compile(rx)) for name, rx in GROUPS]


def group_of(fn):
    for name, rx in GROUPS:
        # libc's syscall wrappers have plain C names; a Rust path with ::write is not one.
        if name.startswith("syscall wrappers") and "::" in fn:
            continue
        if rx.search(fn):
            return name
    return "other"


def read_annotate(path):
    """{function: cost} from a callgrind_annotate output (the function table only)."""
    out = {}
    started = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not started:
                if re.match(r"^\s*Ir\s+file:function", line):
                    started = True
                continue
            if line.startswith("-----") or not line.strip():
                if out:
                    if line.startswith("-----"):
                        break
                continue
            m = LINE.match(line)
            if not m:
                continue
            cost = int(m.group(1).replace(",", ""))
            fn = m.group(2).strip()
            if fn.startswith("PROGRAM TOTALS"):
                continue
            out[fn] = out.get(fn, 0) + cost
    return out


def total_of(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?PROGRAM TOTALS", line)
            if m:
                return int(m.group(1).replace(",", ""))
    return None


def short(fn, width=150):
    fn = re.sub(r"^\?\?\?:", "", fn)
    fn = re.sub(r" \[[^\]]*\]$", "", fn)
    return fn if len(fn) <= width else fn[: width - 1] + "…"


def cmd_top(path, n):
    total = total_of(path)
    rows = sorted(read_annotate(path).items(), key=lambda kv: -kv[1])[: int(n)]
    print(f"{'Ir':>15} {'%':>6}  function   [concern]")
    for fn, cost in rows:
        pct = 100.0 * cost / total if total else 0.0
        print(f"{cost:>15,} {pct:6.2f}  {short(fn)}   [{group_of(fn)}]")


def per_booking(p1, p2, d):
    a, b = read_annotate(p1), read_annotate(p2)
    return {fn: (b.get(fn, 0) - a.get(fn, 0)) / d for fn in set(a) | set(b)}, total_of(p1), total_of(p2)


def cmd_groups(p1, p2, d):
    d = float(d)
    diff, t1, t2 = per_booking(p1, p2, d)
    per = (t2 - t1) / d
    sums = defaultdict(float)
    top = defaultdict(list)
    for fn, c in diff.items():
        g = group_of(fn)
        sums[g] += c
        top[g].append((c, fn))
    print(f"total per booking: {per:,.0f} instructions (self costs below add up to it)")
    print(f"{'Ir/booking':>11} {'share':>6}  concern: largest self costs in it")
    for g, c in sorted(sums.items(), key=lambda kv: -kv[1]):
        best = sorted(top[g], reverse=True)[:3]
        names = "; ".join(f"{short(fn, 70)} {v:,.0f}" for v, fn in best if v > 0)
        print(f"{c:>11,.0f} {100 * c / per:5.1f}%  {g}: {names}")


def cmd_entries(p1, p2, d, per_group=6):
    d = float(d)
    diff, t1, t2 = per_booking(p1, p2, d)
    per = (t2 - t1) / d
    by = defaultdict(list)
    for fn, c in diff.items():
        by[group_of(fn)].append((c, fn))
    print(f"total per booking: {per:,.0f} instructions; inclusive costs overlap")
    for g, rows in sorted(by.items(), key=lambda kv: -max(c for c, _ in kv[1])):
        rows = sorted(rows, reverse=True)[:per_group]
        if rows[0][0] < per * 0.005:
            continue
        print(f"-- {g}")
        for c, fn in rows:
            if c >= per * 0.005:
                print(f"{c:>11,.0f} {100 * c / per:5.1f}%  {short(fn, 140)}")


def read_strace(path):
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
                # % time, seconds, usecs/call, calls, [errors], syscall
                calls = int(parts[3])
                out[parts[-1]] = out.get(parts[-1], 0) + calls
    return out


def cmd_strace(p1, p2, d):
    d = float(d)
    a, b = read_strace(p1), read_strace(p2)
    rows = sorted(((b.get(s, 0) - a.get(s, 0)) / d, s) for s in set(a) | set(b))
    print("syscalls per booking, by syscall (difference of the two runs):")
    for c, s in reversed(rows):
        if abs(c) >= 0.005:
            print(f"  {s:<16} {c:6.2f}")


def main():
    cmd, *args = sys.argv[1:]
    {"top": cmd_top, "groups": cmd_groups, "entries": cmd_entries, "strace": cmd_strace}[cmd](*args)


if __name__ == "__main__":
    main()
