#!/usr/bin/env python3
"""The console's journal lookups at scale: builds a SQLite journal with the gateway's own schema
(the migrations in src/journal/sqlite.rs, applied in order) holding N booked records (default
1,000,000: distinct request ids, slots, referrals, appointments and trace ids), then times the
console's search (sqlite::SEARCH: request id, slot, referral, appointment or trace id, one OR of
indexed equalities), the appointment lookup (sqlite::BY_APPOINTMENT) and a filtered listing page,
each REPEAT times on random keys, and prints the median and the worst with the query plan.

Usage: python3 bench/journal_search.py [N] [REPEAT]   (writes a temporary database, ~0.6 GB)
"""
import os, random, re, sqlite3, statistics, sys, tempfile, time, uuid

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
REPEAT = int(sys.argv[2]) if len(sys.argv) > 2 else 200
here = os.path.dirname(os.path.abspath(__file__))
src = open(os.path.join(here, "..", "src", "journal", "sqlite.rs")).read()
migrations = re.findall(r'r#"(.*?)"#', src[src.index("const MIGRATIONS"):src.index("];", src.index("const MIGRATIONS"))], re.S)
columns = re.search(r'pub\(super\) const COLUMNS: &str = "(.*?)";', src, re.S).group(1)
columns = re.sub(r'\\\s*', '', columns)
def sql_const(name):
    m = re.search(r'const %s: &str = "(.*?)";' % name, src, re.S)
    return re.sub(r'\\\s*', '', m.group(1)).replace('\\"', '"')
search, by_appointment = sql_const("SEARCH_SQLITE"), sql_const("BY_APPOINTMENT")
index_sql = re.search(r'"INSERT OR IGNORE INTO journal_search(.*?)",\s*params', src, re.S).group(1)
index_sql = "INSERT OR IGNORE INTO journal_search" + re.sub(r'\\\s*', '', index_sql)

db = os.path.join(tempfile.mkdtemp(prefix="journal-search-"), "journal.db")
conn = sqlite3.connect(db)
conn.execute("PRAGMA journal_mode=WAL")
for m in migrations:
    conn.executescript(m)
print(f"sqlite {sqlite3.sqlite_version}; {len(migrations)} migrations; filling {N:,} records into {db}")
t0 = time.time()
keys = []
now_us = int(time.time() * 1e6)
batch = []
for i in range(N):
    rid, slot, direction, appt = (str(uuid.uuid4()) for _ in range(4))
    trace = uuid.uuid4().hex
    if i % (N // REPEAT or 1) == 0:
        keys.append((rid, slot, direction, appt, trace))
    batch.append((rid, now_us - (N - i) * 1000, "portal", str(uuid.uuid4()), f"mis-{i % 8}", slot,
                  direction, "booked", appt, str(i), 200, 900, trace))
    if len(batch) == 50_000:
        conn.executemany("INSERT INTO journal (request_id, time_us, integrator, lpu, backend, slot, "
                         "direction_guid, outcome, appointment_guid, appointment_number, status, total_us, trace_id) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
        conn.commit()
        batch = []
if batch:
    conn.executemany("INSERT INTO journal (request_id, time_us, integrator, lpu, backend, slot, "
                     "direction_guid, outcome, appointment_guid, appointment_number, status, total_us, trace_id) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
    conn.commit()
print(f"filled in {time.time() - t0:.0f} s")
# The writer's indexing (sqlite::index_some), all at once here; the last 1% left unindexed, as
# records written in the last second would be.
top = conn.execute("SELECT MAX(rowid) FROM journal").fetchone()[0]
mark = top - top // 100
t0 = time.time()
conn.execute(index_sql, (0, mark))
conn.execute("UPDATE journal_meta SET value = ? WHERE name = 'search_rowid'", (str(mark),))
conn.commit()
print(f"indexed {mark:,} records in {time.time() - t0:.0f} s; {os.path.getsize(db) / 2**20:.0f} MiB")

def timed(label, sql, args_of):
    plan = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args_of(keys[0]))]
    times = []
    for k in random.sample(keys, min(REPEAT, len(keys))):
        t = time.perf_counter()
        rows = conn.execute(sql, args_of(k)).fetchall()
        times.append((time.perf_counter() - t) * 1e3)
        assert rows, f"{label}: nothing found"
    used = sorted({m for p in plan for m in re.findall(r"USING (?:INDEX|COVERING INDEX) (\w+)", p)})
    print(f"{label:<26} median {statistics.median(times):7.3f} ms  worst {max(times):7.3f} ms  indexes: {', '.join(used) or 'none (scan)'}")

for idx, name in enumerate(["request id", "slot", "referral", "appointment", "trace id"]):
    timed(f"search by {name}", f"SELECT {columns}{search}", lambda k, idx=idx: (k[idx], mark))
timed("appointment lookup", f"SELECT {columns}{by_appointment}", lambda k: (k[3],))
timed("listing page (backend)", f"SELECT {columns} FROM journal WHERE backend = ? ORDER BY time_us DESC, request_id DESC LIMIT 51", lambda k: ("mis-3",))
