-- bench/rate_sqlite.lua: the benchmark's rate row (bench/limits.lua) on
-- SQLite, which bench/run.lua does not run (its rows fill and count with
-- psql):
--   make bench-rate-sqlite [BENCH_ARGS="--reps 3 --jobs 10000"]
-- 10,000 jobs of a name limited to 1,000 starts a second, 4 worker
-- processes of concurrency 32 (bench/limited.lua, listeners that return
-- at once) on a fresh SQLite file.  From the workers' own records: the
-- most starts in any second and the fewest in a saturated one (as the
-- PostgreSQL row); and the claims, at the database's clock (a trigger
-- records each job a claim takes, julianday('now'): milliseconds): the
-- most and fewest in a second, the tokens lost to a bucket left full (the
-- bucket replayed over the claims, with the rule that scheduler.rate's
-- store.h spells: a burst of 1, a token every 1.03 / N s; a claim takes
-- the tokens of the next 0.1 s too, each job held until its token) and
-- each start's lag behind its claim (its hold, up to 0.1 s, included).
-- Medians of the reps, and the load.  Needs the sqlite3 tool (as the
-- specs do).
local BENCH = arg[0]:match("^(.*)/") or "."
local scheduler = require "scheduler"
local overlap = dofile(BENCH .. "/../spec/support/overlap.lua")

local reps, N = 3, 10000
local i = 1
while arg[i] do
  if arg[i] == "--reps" then reps, i = assert(math.tointeger(tonumber(arg[i + 1])), "--reps N"), i + 2
  elseif arg[i] == "--jobs" then N, i = assert(math.tointeger(tonumber(arg[i + 1])), "--jobs N"), i + 2
  else error("usage: rate_sqlite.lua [--reps N] [--jobs N]") end
end
local RATE, PER, WORKERS, CONC = 1000, 1, 4, 32
local B = 1
local STEP = 1.03 * PER / (RATE - B + 1)

local function sh(c)
  local p = assert(io.popen(c))
  local o = p:read("a")
  p:close()
  return o
end
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local dir = sh("mktemp -d /tmp/rate-sqlite.XXXXXX"):gsub("%s+$", "")
local function median(t)
  local c = table.move(t, 1, #t, 1, {})
  table.sort(c)
  return #c == 0 and 0 / 0 or #c % 2 == 1 and c[(#c + 1) // 2] or (c[#c // 2] + c[#c // 2 + 1]) / 2
end

local function once(rep)
  local db = ("%s/rate.%d.db"):format(dir, rep)
  local s = scheduler.new { database = "sqlite:" .. db, log = "warn" }
  assert(s:limit("rated", { rate = RATE, per = PER }))
  local list = {}
  for k = 1, N do list[k] = { "rated", { i = k } } end
  assert(s:schedule_many(list))
  s:close()
  sh(("sqlite3 %s %s"):format(q(db), q("CREATE TABLE bench_claims (id INTEGER, at REAL);"
    .. " CREATE TRIGGER bench_claim AFTER UPDATE OF state ON scheduler_jobs"
    .. " WHEN OLD.state = 'scheduled' AND NEW.state = 'running'"
    .. " BEGIN INSERT INTO bench_claims VALUES (OLD.id, (julianday('now') - 2440587.5) * 86400.0); END;")))
  local go = dir .. "/go"
  os.remove(go)
  local procs = {}
  for w = 1, WORKERS do
    procs[w] = assert(io.popen(("LUA_SCHEDULER_DATABASE=%s %s %s timer name=rated concurrency=%d wait=0 go=%s out=%s seconds=%d")
      :format(q("sqlite:" .. db), q(arg[-1] or "lua5.4"), q(BENCH .. "/limited.lua"), CONC, q(go),
        q(("%s/out.%d"):format(dir, w)), math.max(60, N // 10))))
  end
  for _, p in ipairs(procs) do
    repeat local l = p:read("l") until l == nil or l:find("READY", 1, true)
  end
  io.open(go, "w"):close()
  for _, p in ipairs(procs) do p:read("a"); p:close() end
  local starts, start_of = {}, {}
  for w = 1, WORKERS do
    local f = assert(io.open(("%s/out.%d"):format(dir, w)))
    for id, t0 in f:read("a"):gmatch("(%d+) (%S+) %S+ ?%S*\n") do
      starts[#starts + 1] = tonumber(t0)
      start_of[tonumber(id)] = tonumber(t0)
    end
    f:close()
    os.remove(("%s/out.%d"):format(dir, w))
  end
  assert(#starts == N, ("%d of %d jobs ran"):format(#starts, N))
  local claims, lags = {}, {}
  for id, at in sh(("sqlite3 %s 'SELECT id, at FROM bench_claims ORDER BY at'"):format(q(db))):gmatch("(%d+)|(%S+)") do
    claims[#claims + 1] = tonumber(at)
    local s0 = start_of[tonumber(id)]
    if s0 then lags[#lags + 1] = s0 - tonumber(at) end
  end
  for _, x in ipairs { "", "-wal", "-shm", "-wake" } do os.remove(db .. x) end
  table.sort(lags)
  local tat, lost = -math.huge, 0
  for _, t in ipairs(claims) do
    if t > tat then
      if tat > -math.huge then lost = lost + (t - tat) / STEP end
      tat = t
    end
    tat = tat + STEP
  end
  local m, f, span = overlap.windows(starts, PER)
  local cm, cf, cspan = overlap.windows(claims, PER)
  local r = { most = m, fewest = f, rate = (N - 1) / span, cmost = cm, cfewest = cf, lost = lost / cspan,
    lag50 = lags[math.max(1, #lags // 2)], lag99 = lags[math.max(1, math.ceil(#lags * 0.99))], lagmax = lags[#lags] }
  print(("rep %d: starts: most %d, fewest %s in a second, %.0f a second; claims: most %d, fewest %s; %.1f tokens "
    .. "lost a second; start after claim %.1f ms (p99 %.1f, max %.1f)"):format(rep, m, tostring(f), r.rate, cm,
    tostring(cf), r.lost, r.lag50 * 1e3, r.lag99 * 1e3, r.lagmax * 1e3))
  return r
end

print(("rate on SQLite: %d jobs at %d per %g s, %d workers of %d; %d reps; %s"):format(N, RATE, PER, WORKERS, CONC,
  reps, (sh("uptime"):match("load average.*") or ""):gsub("%s+$", "")))
local all = {}
for rep = 1, reps do all[rep] = once(rep) end
local function col(k)
  local t = {}
  for _, r in ipairs(all) do t[#t + 1] = r[k] or 0 / 0 end
  return t
end
local most, fewest = 0, math.huge
for _, r in ipairs(all) do most, fewest = math.max(most, r.most), math.min(fewest, r.fewest or math.huge) end
print(("starts: most %d in a second (<= %d: %s), fewest %s once saturated (>= 950: %s; median %.0f), %.0f a second"
  .. " (the rule: %.0f)"):format(most, RATE, most <= RATE and "yes" or "NO", fewest == math.huge and "-" or fewest,
  fewest == math.huge and "-" or fewest >= 950 and "yes" or "NO", median(col("fewest")), median(col("rate")),
  PER / STEP))
print(("claims: most %.0f, fewest %.0f (medians); tokens lost %.1f a second; start after claim %.1f ms, p99 %.1f ms"
  .. " (medians)"):format(median(col("cmost")), median(col("cfewest")), median(col("lost")), median(col("lag50")) * 1e3,
  median(col("lag99")) * 1e3))
os.remove(dir .. "/go")
os.remove(dir)
