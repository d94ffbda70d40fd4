-- bench/sqlite_parts.lua: partitioned limits on SQLite (issue 16), which
-- bench/run.lua does not cover (it runs on PostgreSQL only).  Not a test:
-- it prints figures.  Run from the checkout, after `make build`:
--
--   lua5.4 bench/sqlite_parts.lua [BUILD...]
--   ROWS=claim,parts lua5.4 bench/sqlite_parts.lua ...   (some rows only)
--
-- BUILD: directories holding scheduler/core.so (default: build), each
-- measured in turn in the same run (say an older build copied aside, then
-- build: before and after).  Each row uses a new database file in a
-- temporary directory, removed at the end.  Rows, per build:
--   insert: 20,000 jobs of a name with no limit, schedule_many in batches
--     of 1,000, then 5,000 schedule() calls (jobs/s), then a drain of the
--     20,000 no-op jobs (run{drain=true}, one worker; jobs/s);
--   claim N: N due jobs (N = 10,000, 100,000) of a name limited to 2 by
--     tenant in 100 tenants, drained by one worker at concurrency 1 (a
--     claim takes one job of one partition) for 300 jobs: ms per claim;
--   parts: 100 tenants each limited to 2, 10,000 due jobs of 50 ms, 4
--     worker processes of concurrency 64 (bench/limited.lua, as the
--     limit_parts row of bench/run.lua): jobs/s from the first start to
--     the last end (ideal 4,000), the most running at once in one
--     partition (never above 2) and each job ran once; and the same jobs
--     unlimited on 4 workers of 50 (the baseline).

local BENCH = (arg and arg[0] or "bench/sqlite_parts.lua"):match("^(.*)/[^/]*$") or "."
local ROOT = BENCH .. "/.."
local builds = {}
for i = 1, #arg do builds[#builds + 1] = arg[i] end
if #builds == 0 then builds[1] = ROOT .. "/build" end
local base_path = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. package.path
local base_cpath = package.cpath
local most_at_once = dofile(BENCH .. "/../spec/support/overlap.lua")
local LUA = "lua5.4"
local ROWS = os.getenv("ROWS") or "insert,claim,parts"
local function wanted(row) return ("," .. ROWS .. ","):find("," .. row .. ",", 1, true) ~= nil end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end
local TMP = sh("mktemp -d /tmp/sqlite_parts.XXXXXX"):gsub("%s+$", "")

local function with_build(build, fn)
  package.path = base_path
  package.cpath = build .. "/?.so;" .. base_cpath
  for k in pairs(package.loaded) do
    if k == "scheduler" or k:match("^scheduler%.") then package.loaded[k] = nil end
  end
  local scheduler = require "scheduler"
  return fn(scheduler)
end

local file_n = 0
local function new_db()
  file_n = file_n + 1
  return "sqlite:" .. TMP .. "/db" .. file_n .. ".db"
end

local function insert_row(scheduler)
  local s = scheduler.new { database = new_db(), log = false }
  local name = "plain"
  local t0 = scheduler.now()
  for b = 0, 19 do
    local list = {}
    for i = 1, 1000 do list[i] = { name, { i = b * 1000 + i } } end
    assert(s:schedule_many(list))
  end
  local many = 20000 / (scheduler.now() - t0)
  t0 = scheduler.now()
  for i = 1, 5000 do assert(s:schedule("single", { i = i }, { delay = 3600 })) end
  local one = 5000 / (scheduler.now() - t0)
  local n = 0
  s:on(name, function() n = n + 1 end)
  t0 = scheduler.now()
  assert(s:run { drain = true })
  local drain = n / (scheduler.now() - t0)
  assert(n == 20000, n)
  s:close()
  return many, one, drain
end

local function fill_parts(s, name, n, by_tenant)
  if by_tenant ~= false then assert(s:limit(name, { concurrency = 2, by = "tenant" })) end
  for b = 0, n - 1, 5000 do
    local list = {}
    for i = b, math.min(n, b + 5000) - 1 do list[#list + 1] = { name, { tenant = "t" .. i % 100 } } end
    assert(s:schedule_many(list))
  end
end

local function claim_row(scheduler, n)
  local s = scheduler.new { database = new_db(), log = false }
  fill_parts(s, "parts", n)
  local done, K = 0, 300
  s:on("parts", function()
    done = done + 1
    if done >= K then s:stop() end
  end)
  local t0 = scheduler.now()
  assert(s:run { drain = true })
  local ms = (scheduler.now() - t0) / done * 1000
  s:close()
  return ms
end

local function parts_row(build, scheduler, limited)
  local db = new_db()
  local s = scheduler.new { database = db, log = false }
  fill_parts(s, "bench_limited", 10000, limited)
  s:close()
  local go = TMP .. "/go"
  os.remove(go)
  local env = ("LUA_SCHEDULER_DATABASE=%s LUA_PATH=%s LUA_CPATH=%s"):format(q(db), q(base_path),
    q(build .. "/?.so;" .. base_cpath))
  local procs = {}
  local workers, conc = 4, limited and 64 or 50
  for i = 1, workers do
    local out = ("%s/out.%d"):format(TMP, i)
    local p = assert(io.popen(("exec env %s %s %s timer name=bench_limited concurrency=%d wait=0.05"
      .. " go=%s out=%s seconds=300"):format(env, LUA, q(BENCH .. "/limited.lua"), conc, q(go), q(out))))
    procs[i] = { p = p, out = out }
  end
  for _, p in ipairs(procs) do assert(p.p:read("l") == "READY") end
  local f = assert(io.open(go, "w"))
  f:write("go\n")
  f:close()
  local first, last, per, ran, runs = math.huge, 0, {}, {}, 0
  for _, p in ipairs(procs) do
    local res = p.p:read("a")
    p.p:close()
    assert(res:find("RESULT", 1, true), res)
    for line in io.lines(p.out) do
      local id, a, b, tenant = line:match("^(%d+) (%S+) (%S+) (%S*)$")
      a, b = tonumber(a), tonumber(b)
      if a < first then first = a end
      if b > last then last = b end
      per[tenant] = per[tenant] or {}
      table.insert(per[tenant], { a, b })
      ran[id] = (ran[id] or 0) + 1
      runs = runs + 1
    end
  end
  local most = 0
  for _, ivs in pairs(per) do
    local m = most_at_once(ivs)
    if m > most then most = m end
  end
  local once = 0
  for _, k in pairs(ran) do if k == 1 then once = once + 1 end end
  return runs / (last - first), most, once, runs
end

-- the builds in turn, rep by rep (the machine's load moves between reps)
local REPS = tonumber(os.getenv("REPS") or 3)
for rep = 1, wanted("insert") and REPS or 0 do
  for _, build in ipairs(builds) do
    with_build(build, function(scheduler)
      local many, one, drain = insert_row(scheduler)
      print(("%s insert rep %d: schedule_many %.0f jobs/s, schedule %.0f jobs/s, drain %.0f jobs/s")
        :format(build, rep, many, one, drain))
    end)
  end
end
for _, build in ipairs(wanted("claim") and builds or {}) do
  with_build(build, function(scheduler)
    for _, n in ipairs { 10000, 100000 } do
      print(("%s claim with %d due in 100 partitions: %.2f ms a claim (job)"):format(build, n, claim_row(scheduler, n)))
    end
  end)
end
for _, build in ipairs(wanted("parts") and builds or {}) do
  with_build(build, function(scheduler)
    local rate, most, once, runs = parts_row(build, scheduler, true)
    print(("%s parts: 100 x 2, 10,000 jobs of 50 ms, 4 workers of 64: %.0f jobs/s (%.0f%% of 4,000),"
      .. " most at once in a partition %d, %d jobs once of %d runs"):format(build, rate, rate / 40, most, once, runs))
    rate, most, once, runs = parts_row(build, scheduler, false)
    print(("%s parts baseline (no limit, 4 workers of 50): %.0f jobs/s, %d jobs once of %d runs")
      :format(build, rate, once, runs))
  end)
end
os.execute("rm -rf " .. q(TMP))
