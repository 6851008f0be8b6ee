#!/usr/bin/env python3
"""Fixed-count booking driver for bench/callgrind.sh (DRIVER=unique).

Sends N POSTs of the seed body over C keep-alive HTTP/1.1 connections (one thread each, like
h2load -c C -t 1 closes its loop per connection), each with a fresh slot and a fresh
direction.guid (as bench/unique.lua does for run.sh), so that no two requests are the same
booking and the gateway books every one instead of refusing concurrent twins with 409/94091.
Everything else in the body is the seed's, and so is its length. The fixed MIS (bench/lib.sh)
answers an Appointment without a slot, which the gateway accepts for the requested slot.
Prints a status line in h2load's words ("status codes: ...") and exits non-zero if any request
failed at transport.
"""
import argparse
import http.client
import json
import threading
import urllib.parse
import uuid
from collections import Counter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--auth", required=True)
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("-c", type=int, default=8)
    a = ap.parse_args()

    raw = open(a.body, "rb").read()
    seed = json.loads(raw)
    slot, guid = seed["slot"].encode(), seed["direction"]["guid"].encode()
    # The slot and the direction's guid (not the docSender's, equal in the seed), replaced in
    # place: same bytes and length as the seed otherwise.
    s_at = raw.index(slot, raw.index(b'"slot"'))
    d_at = raw.index(guid, raw.index(b'"direction"'))
    assert s_at < d_at and len(slot) == len(guid) == 36
    u = urllib.parse.urlsplit(a.url)

    def body():
        s, d = str(uuid.uuid4()).encode(), str(uuid.uuid4()).encode()
        return raw[:s_at] + s + raw[s_at + 36:d_at] + d + raw[d_at + 36:]

    # Prebuilt bodies: the driver's own work stays out of the measured window's variance.
    bodies = [body() for _ in range(a.n)]
    b0 = json.loads(bodies[0])
    want = dict(seed, slot=b0["slot"], direction=dict(seed["direction"], guid=b0["direction"]["guid"]))
    assert b0 == want and b0["slot"] != seed["slot"] and len(bodies[0]) == len(raw)
    headers = {"Content-Type": "application/json", "Authorization": a.auth}
    lock = threading.Lock()
    statuses = Counter()
    errors = []
    nxt = [0]

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        while True:
            with lock:
                i = nxt[0]
                if i >= a.n:
                    break
                nxt[0] += 1
            try:
                conn.request("POST", u.path, body=bodies[i], headers=headers)
                r = conn.getresponse()
                r.read()
                with lock:
                    statuses[r.status] += 1
            except Exception as e:  # noqa: BLE001 - reported, the run fails
                with lock:
                    errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(a.c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    classes = Counter()
    for s, k in statuses.items():
        classes[s // 100] += k
    print(
        f"status codes: {classes[2]} 2xx, {classes[3]} 3xx, {classes[4]} 4xx, {classes[5]} 5xx"
        f" ({', '.join(f'{s}: {k}' for s, k in sorted(statuses.items()))})"
    )
    print(f"requests: {a.n} total, {sum(statuses.values())} answered, {len(errors)} errors")
    for e in errors[:5]:
        print("error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
