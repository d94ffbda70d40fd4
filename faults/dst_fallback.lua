--- Scenario dst_fallback (issue 14, item 10): recurring schedules across
-- the fall-back of 2026-11-01 in America/New_York (02:00 EDT -> 01:00 EST,
-- at 06:00Z), run by real workers: `lua-scheduler run --workers 2` on an
-- SQLite database under libfaketime.  On SQLite the database's clock is the
-- host's, so the whole system, the database clock included, lives at that
-- date (on PostgreSQL the server's clock would stay in the present).
--
-- The clock is not sped up: libfaketime 0.9.10 scales ppoll()'s timeout
-- the wrong way under a speed-up (a worker then sleeps 60 times too long,
-- not 60 times less), and a stepped clock leaves a running worker's
-- recurring-schedule timer (monotonic) behind.  Instead the workers visit
-- every half hour of real time from 01:00 EDT (05:00Z) to 02:00 EST
-- (07:00Z): for each, `run` is started with a clock 4 s before the mark and
-- stopped 4 s after it, so the schedules' next slots carry over from one
-- visit to the next through the database, and the visit at 06:00Z runs
-- across the transition itself (01:59:56 EDT -> 01:00:04 EST).  Every slot
-- of these schedules falls on such a mark, so none falls between visits.
--
-- Three schedules, declared on the faked clock before the first visit,
-- each with its own payload tag:
--   hourly "0 * * * *"    an interval: 01:00 EDT, 01:00 EST, 02:00 EST
--   half   "*/30 * * * *" an interval: 30 real minutes apart through both passes
--   fixed  "30 1 * * *"   a fixed time: 01:30 EDT only, not 01:30 EST
-- The expected instants are hard-coded (GNU date, e.g. `TZ=America/New_York
-- date -d '2026-11-01 01:00 EST' +%s`), not computed by scheduler.cron.  The
-- runs are counted by the independent record (faults/listeners/record.lua:
-- one line per run, with the job's run_at and the payload's tag): each
-- expected slot exactly once, and no other slot.  `lua-scheduler cron next`
-- on the faked clock must print the same times.
local lib = require "faults.lib"

local ZONE = "America/New_York"
local H = 1793509200 -- 2026-11-01 01:00 EDT = 05:00Z
local MARKS = { H, H + 1800, H + 3600, H + 5400, H + 7200 } -- the visits: 05:00Z .. 07:00Z
local BEFORE, AFTER = 4, 4 -- seconds of each visit before and after its mark

local SCHEDULES = {
  { tag = 1, id = "dst-hourly", expr = "0 * * * *", label = "hourly \"0 * * * *\"",
    slots = { H, H + 3600, H + 7200 } },                    -- 01:00 EDT, 01:00 EST, 02:00 EST
  { tag = 2, id = "dst-half", expr = "*/30 * * * *", label = "half-hourly \"*/30 * * * *\"",
    slots = { H, H + 1800, H + 3600, H + 5400, H + 7200 } }, -- 01:00, 01:30 EDT, 01:00, 01:30, 02:00 EST
  { tag = 3, id = "dst-fixed", expr = "30 1 * * *", label = "fixed \"30 1 * * *\"",
    slots = { H + 1800 } },                                 -- 01:30 EDT only
}

local function hms(t) return os.date("!%H:%M:%SZ", math.floor(t)) end

--- The multi-threaded libfaketime (workers have a heartbeat thread).
local function libfaketime()
  local arch = lib.sh("gcc -print-multiarch"):match("[^\n]+") or "x86_64-linux-gnu"
  for _, path in ipairs { "/usr/lib/" .. arch .. "/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1" } do
    if lib.read_file(path) then return path end
  end
end

--- The environment of a process whose clock shows `t` now (and then runs
-- at the normal rate; the monotonic clock is left alone, as in clock_skew).
local function clock_at(lib_path, t)
  return { LD_PRELOAD = lib_path, FAKETIME = ("%+d"):format(math.floor(t - lib.now())),
    FAKETIME_DONT_FAKE_MONOTONIC = "1", FAKETIME_NO_CACHE = "1" }
end

local function env_prefix(env)
  local parts = { "env" }
  for k, v in pairs(env) do parts[#parts + 1] = lib.q(k .. "=" .. v) end
  return table.concat(parts, " ")
end

local DECLARE = [[
local scheduler = require "scheduler"
local s = assert(scheduler.new { log = false })
for entry in os.getenv("DST_CRONS"):gmatch("[^;]+") do
  local id, expr, tag = entry:match("^(.-)|(.-)|(%d+)$")
  assert(s:cron(id, expr, "fault", { seq = tonumber(tag) }, { tz = os.getenv("DST_ZONE") }))
end
s:close()
io.write("declared\n")
]]

return {
  title = "DST fall-back: interval schedules run in both repeated hours, fixed ones once (faked clock)",
  run = function(ctx, r)
    local lib_path = libfaketime()
    if not r:check(lib_path, "libfaketime is installed (scripts/install-deps)") then return end
    local db = "sqlite:" .. lib.tmpdir("dst") .. "/dst.db"
    local records = lib.tmpdir("dst-records")
    local rec = lib.records(records)

    -- declare the schedules on the faked clock, just before the first visit
    local crons = {}
    for _, s in ipairs(SCHEDULES) do crons[#crons + 1] = ("%s|%s|%d"):format(s.id, s.expr, s.tag) end
    local env = clock_at(lib_path, MARKS[1] - BEFORE - 1)
    env.LUA_SCHEDULER_DATABASE, env.DST_CRONS, env.DST_ZONE = db, table.concat(crons, ";"), ZONE
    local out, ok = lib.sh(("%s %s -e %s"):format(env_prefix(env), lib.q(lib.LUA), lib.q(DECLARE)))
    if not r:check(ok and out == "declared\n", "the schedules were declared at " .. hms(MARKS[1] - BEFORE - 1)
      .. ": " .. out:gsub("\n", " ")) then return end

    for i, mark in ipairs(MARKS) do
      local e = clock_at(lib_path, mark - BEFORE)
      e.LUA_SCHEDULER_DATABASE = db
      local sup = lib.start_run("dst" .. i, 2, records, e)
      local t_mark = lib.now() + BEFORE
      r:check(sup:wait_log("started: listeners", 1, 20), ("visit %s: the workers started"):format(hms(mark)), sup)
      lib.sleep(math.max(0, t_mark + AFTER - lib.now()))
      r:check(sup:stop() == 0, ("visit %s: the supervisor stopped gracefully (exit 0)"):format(hms(mark)), sup)
    end
    rec:read()

    -- the runs by schedule (payload tag) and slot (run_at)
    local keys, expected, by_key, late, unexpected = {}, {}, {}, {}, 0
    local tag_of = {}
    for _, s in ipairs(SCHEDULES) do
      tag_of[s.tag] = s
      for _, t in ipairs(s.slots) do
        local key = ("%s@%d"):format(s.id, t)
        keys[#keys + 1] = key
        expected[key] = true
      end
    end
    for _, run in ipairs(rec.runs) do
      local s = tag_of[run.seq]
      local slot = math.floor(run.run_at + 0.5)
      local key = ("%s@%d"):format(s and s.id or ("tag " .. run.seq), slot)
      by_key[key] = by_key[key] or {}
      table.insert(by_key[key], run)
      late[#late + 1] = run.start - run.run_at
      if not expected[key] then
        unexpected = unexpected + 1
        r:note(("UNEXPECTED run: %s (%s)"):format(key, hms(slot)))
      end
    end
    local lost, dups = {}, {}
    for _, key in ipairs(keys) do
      local list = by_key[key]
      if not list then lost[#lost + 1] = key elseif #list > 1 then dups[#dups + 1] = list end
    end
    r:count(keys, { by_id = by_key }, lost, dups, function() return nil end)
    for _, s in ipairs(SCHEDULES) do
      local ran = {}
      for _, t in ipairs(s.slots) do
        local list = by_key[("%s@%d"):format(s.id, t)]
        if list then ran[#ran + 1] = hms(t) .. (#list > 1 and (" x" .. #list) or "") end
      end
      r:note(("%s: ran at %s (expected %d slots)"):format(s.label, table.concat(ran, ", "), #s.slots))
    end
    r:check(unexpected == 0, ("no run outside the expected slots, 01:30 EST (06:30Z) of the fixed one "
      .. "included: %d"):format(unexpected))
    r:check(#lost == 0 and #dups == 0, "every expected slot ran exactly once")
    r.lateness = lib.spread(late)

    -- the command on the same kind of clock (00:50 EDT) prints the same times
    local function cron_next(expr, n)
      return lib.sh(("%s %s %s cron next %s --tz %s --count %d"):format(env_prefix(clock_at(lib_path, H - 600)),
        lib.q(lib.LUA), lib.q(lib.BIN), lib.q(expr), ZONE, n))
    end
    out, ok = cron_next("0 * * * *", 3)
    r:check(ok and out == "2026-11-01T01:00:00-04:00\n2026-11-01T01:00:00-05:00\n2026-11-01T02:00:00-05:00\n",
      "`cron next '0 * * * *' --tz America/New_York` at 00:50 EDT: 01:00 EDT, 01:00 EST, 02:00 EST: "
        .. out:gsub("\n", " "))
    out, ok = cron_next("30 1 * * *", 2)
    r:check(ok and out == "2026-11-01T01:30:00-04:00\n2026-11-02T01:30:00-05:00\n",
      "`cron next '30 1 * * *'`: 01:30 EDT, then the next day: " .. out:gsub("\n", " "))
  end,
}
