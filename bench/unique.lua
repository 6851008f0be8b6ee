-- wrk script of bench/run.sh: every request is a distinct booking.
--
-- The body is the seed request with a fresh `slot` and a fresh `direction.guid` (random v4
-- GUIDs, 36 characters like the seed's, so every body has the seed's length) per request.
-- run.sh writes the template (BENCH_TEMPLATE): the seed body with the slot replaced by 36 'S'
-- and the direction's guid by 36 'D'. The whole request (request line, headers, body) is
-- formatted once in init() and cut around the two markers; request() only concatenates five
-- strings, so the generator's own cost per request stays small.
--
-- Environment:
--   BENCH_TEMPLATE   the body template (required)
--   BENCH_AUTH       the Authorization header (required)
--   BENCH_KEYED      1: every request also carries an Idempotency-Key, its fresh slot GUID
--   BENCH_RATE       requests/s of THIS wrk thread; set = paced mode (delay() below), unset =
--                    closed loop as fast as the connections go
--
-- Paced mode: wrk's delay() hook is asked, before each request, how many milliseconds to wait.
-- It hands out the thread's send schedule (one slot every 1/BENCH_RATE s) in order to whichever
-- connection frees up, so sends keep the schedule while at least one connection is idle. A slot
-- whose time has passed when a connection claims it (all connections were busy) is sent at once
-- and counted as late; wrk times every request from its actual send, so late sends are exactly
-- the coordinated omission this mode does not correct, and done() reports how many there were.
--
-- Every response's status is counted (response() hook); done() prints one `BENCH ...` line that
-- bench/summarize.py reads: exact percentiles from wrk's histogram, errors, the status mix, and
-- in paced mode the late sends.

local template_path = assert(os.getenv("BENCH_TEMPLATE"), "BENCH_TEMPLATE is not set")
local auth = assert(os.getenv("BENCH_AUTH"), "BENCH_AUTH is not set")
local rate = tonumber(os.getenv("BENCH_RATE") or "")

local f = assert(io.open(template_path, "rb"))
local template = f:read("*a")
f:close()

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = auth
local keyed = os.getenv("BENCH_KEYED") == "1"
if keyed then
  wrk.headers["Idempotency-Key"] = string.rep("K", 36)
end

-- A seed per Lua state: wrk runs one Lua state per thread, so each thread draws its own GUIDs.
do
  local u = assert(io.open("/dev/urandom", "rb"))
  local b = u:read(6)
  u:close()
  local s = 0
  for i = 1, #b do s = s * 256 + b:byte(i) end
  math.randomseed(s)
  math.random(); math.random()
end

local random, format = math.random, string.format

-- A v4 GUID: version nibble 4, variant 10xx.
local function guid()
  return format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x",
    random(0, 65535), random(0, 65535), random(0, 65535), random(0, 4095),
    random(32768, 49151), random(0, 65535), random(0, 65535), random(0, 65535))
end

local head, middle, tail, before_key, key_to_slot

function init(args)
  -- wrk.init has set the Host header by now; wrk.format adds Content-Length (the template's
  -- length, which every body keeps).
  local req = wrk.format(nil, nil, nil, template)
  local s = req:find(string.rep("S", 36), 1, true)
  local d = req:find(string.rep("D", 36), 1, true)
  assert(s and d and s < d, "the template has no slot marker before the direction marker")
  head, middle, tail = req:sub(1, s - 1), req:sub(s + 36, d - 1), req:sub(d + 36)
  if keyed then
    -- The key's marker is in the head (a header), before the body's slot.
    local k = head:find(string.rep("K", 36), 1, true)
    assert(k, "no Idempotency-Key marker in the request head")
    before_key, key_to_slot = head:sub(1, k - 1), head:sub(k + 36)
  end
end

function request()
  if keyed then
    local slot = guid()
    return before_key .. slot .. key_to_slot .. slot .. middle .. guid() .. tail
  end
  return head .. guid() .. middle .. guid() .. tail
end

statuses = {}

function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

late, late_max_us, claimed = 0, 0, 0

if rate then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_usec; } bench_timeval;
    int gettimeofday(bench_timeval *tv, void *tz);
  ]]
  local tv = ffi.new("bench_timeval")
  local function now_us()
    ffi.C.gettimeofday(tv, nil) -- the clock wrk and its event loop use
    return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
  end
  local interval = 1e6 / rate
  local due

  function delay()
    local now = now_us()
    due = due or now
    local d = due - now
    due = due + interval
    claimed = claimed + 1
    if d <= 0 then
      if d < -1000 then
        late = late + 1
        if -d > late_max_us then late_max_us = -d end
      end
      return 0
    end
    -- wrk's timers have millisecond resolution and fire at or after the millisecond asked for.
    return math.floor(d / 1000 + 0.5)
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local mix, late_sum, late_max, claimed_sum = {}, 0, 0, 0
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses") or {}) do mix[code] = (mix[code] or 0) + n end
    late_sum = late_sum + (t:get("late") or 0)
    late_max = math.max(late_max, t:get("late_max_us") or 0)
    claimed_sum = claimed_sum + (t:get("claimed") or 0)
  end
  local codes = {}
  for code in pairs(mix) do codes[#codes + 1] = code end
  table.sort(codes)
  local parts = {}
  for _, code in ipairs(codes) do parts[#parts + 1] = format("%d:%d", code, mix[code]) end
  local e = summary.errors
  io.write(format(
    "BENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d " ..
    "late=%d late_max_us=%d claimed=%d statuses=%s\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout,
    late_sum, late_max, claimed_sum, #parts > 0 and table.concat(parts, ",") or "none"))
end
