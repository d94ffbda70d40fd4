-- Partitions by index (issue 16, items 2 and 4): a job of a name whose
-- limit has `by` carries its partition in a column (part) that an index
-- orders, so that a claim reads one due job per partition and priority,
-- not every due job of the name.  The column is written by the database
-- (an insert trigger, and limit() when `by` changes), so the attacks are
-- on what could leave it wrong: `by` changed after the jobs exist, jobs
-- inserted by another program with plain SQL, a limit lifted, on
-- PostgreSQL a transaction inserting jobs while `by` changes, and a
-- partition of 100,000 waiting jobs beside a small one (a claim that read
-- every due job took seconds; the small one's jobs must still start
-- among the first).  Each job must run exactly once, the limit must hold
-- per partition by the workers' own records.
local helper = require "spec.helper"
local limits = require "spec.support.limits"
local all_done_once, quiet, worker, peak = limits.all_done_once, limits.quiet, limits.worker, limits.peak

-- SQL for payload field `f` of scheduler.jobs' rows (helper.sql).
local function field(f)
  if helper.SQLITE then return ("json_extract(payload, '$.%s')"):format(f) end
  return ("payload ->> '%s'"):format(f)
end

-- The jobs of `name` whose part differs from `expected` (an SQL expression).
local function wrong_parts(name, expected)
  local differs = helper.SQLITE and ("part IS NOT " .. expected)
    or ("part IS DISTINCT FROM " .. expected)
  return helper.sql_int(("SELECT count(*) FROM scheduler.jobs WHERE name = %s AND %s")
    :format(helper.literal(name), differs))
end

-- Schedule `n` jobs of `name` with payload fields tenant and region;
-- returns their ids as a set, and each one's region.
local function schedule_regions(s, name, n)
  local list = {}
  for i = 1, n do list[i] = { name, { tenant = "t" .. i % 4, region = "r" .. i % 3, i = i } } end
  local ids, region = {}, {}
  for k, id in ipairs(helper.ok(s:schedule_many(list))) do
    ids[id], region[id] = true, list[k][2].region
  end
  return ids, region
end

-- The most of `ids` running at once in one group of `group_of`.
local function peak_per_group(procs, ids, group_of)
  local groups = {}
  for id in pairs(ids) do
    local g = group_of[id]
    groups[g] = groups[g] or {}
    groups[g][id] = true
  end
  local most = 0
  for _, set in pairs(groups) do most = math.max(most, peak(procs, set)) end
  return most
end

describe("partitions", function()
  after_each(helper.cleanup)

  it("by changed from tenant to region once the jobs wait: they move, and 1 at once per region holds",
    function()
    local s = helper.new()
    local L = helper.name("reparted")
    helper.ok(s:limit(L, { concurrency = 1, by = "tenant" }))
    local ids, region = schedule_regions(s, L, 30)
    assert.equals(0, wrong_parts(L, field("tenant")))
    helper.ok(s:limit(L, { concurrency = 1, by = "region" }))
    assert.equals(0, wrong_parts(L, field("region")))
    local procs = { worker(L, 3, 0.03), worker(L, 3, 0.03) }
    assert.is_truthy(helper.wait_for(function() return all_done_once(procs, ids) end, 30),
      helper.describe_all(procs))
    helper.sleep(0.2) -- anything run twice would show
    assert.is_true(all_done_once(procs, ids), helper.describe_all(procs))
    assert.equals(1, peak_per_group(procs, ids, region))
    for _, p in ipairs(procs) do quiet(p) end
  end)

  it("a job inserted with plain SQL into a partitioned name gets its partition and runs", function()
    local s = helper.new()
    local L = helper.name("sqlpart")
    helper.ok(s:limit(L, { concurrency = 1, by = "tenant" }))
    local ids, part = {}, {}
    for i = 1, 3 do
      local id = helper.sql_int(("INSERT INTO scheduler.jobs (name, payload) VALUES (%s, %s) RETURNING id")
        :format(helper.literal(L), helper.literal(('{"tenant": "plain", "i": %d}'):format(i))))
      ids[id], part[id] = true, "plain"
    end
    -- and one without the field: partition ""
    local other = helper.sql_int(("INSERT INTO scheduler.jobs (name, payload) VALUES (%s, '{}') RETURNING id")
      :format(helper.literal(L)))
    ids[other], part[other] = true, ""
    assert.equals(3, helper.sql_int(("SELECT count(*) FROM scheduler.jobs WHERE name = %s AND part = 'plain'")
      :format(helper.literal(L))))
    assert.equals(1, helper.sql_int(("SELECT count(*) FROM scheduler.jobs WHERE name = %s AND part = ''")
      :format(helper.literal(L))))
    local w = worker(L, 3, 0.02)
    assert.is_truthy(helper.wait_for(function() return all_done_once({ w }, ids) end, 20), w:describe())
    assert.equals(1, peak_per_group({ w }, ids, part))
    quiet(w)
  end)

  it("a limit lifted, or left without by, drops the partitions; set again, they come back", function()
    local s = helper.new()
    local L = helper.name("unparted")
    helper.ok(s:limit(L, { concurrency = 2, by = "tenant" }))
    schedule_regions(s, L, 12)
    helper.ok(s:limit(L, { concurrency = 2 }))
    assert.equals(12, helper.sql_int(("SELECT count(*) FROM scheduler.jobs WHERE name = %s AND part IS NULL")
      :format(helper.literal(L))))
    helper.ok(s:limit(L, { concurrency = 2, by = "region" }))
    assert.equals(0, wrong_parts(L, field("region")))
    helper.ok(s:limit(L, nil))
    assert.equals(12, helper.sql_int(("SELECT count(*) FROM scheduler.jobs WHERE name = %s AND part IS NULL")
      :format(helper.literal(L))))
    s:on(L, function() end)
    assert.equals(12, s:run{ drain = true })
  end)

  -- The race REPARTITION (csrc/store_pg_operators.c) closes: a
  -- transaction inserts jobs while the limit had no `by`, and commits
  -- after limit() set one.  Its trigger saw no `by`; limit() waits for it
  -- to end before it rewrites the partitions, so its jobs are not left
  -- outside the index (never claimed).  SQLite has one writer at a time:
  -- no such race.
  it("by set while another transaction inserts jobs: limit() waits for it, its jobs get partitions #postgresql",
    function()
    local s = helper.new()
    local L = helper.name("racepart")
    helper.ok(s:limit(L, { concurrency = 1 }))
    local dir = helper.tmpdir()
    local mark = helper.name("inserter"):gsub("%W", "_")
    helper.sh(("psql -qAt -c %s >%s/out 2>&1 &"):format(helper.shquote(
      ("BEGIN; INSERT INTO scheduler.jobs (name, payload) SELECT %s, jsonb_build_object('tenant', 't' || i %% 2)"
        .. " FROM generate_series(1, 20) AS i; SELECT pg_sleep(1.5) AS %s; COMMIT;")
        :format(helper.literal(L), mark)), dir))
    assert.is_truthy(helper.wait_for(function()
      return helper.psql_int(("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
        .. " AND query LIKE '%%%s%%'"):format(mark)) == 1
    end, 20, 0.02), "the inserting transaction never began: " .. tostring(helper.read_file(dir .. "/out")))
    local t0 = helper.now()
    helper.ok(s:limit(L, { concurrency = 1, by = "tenant" }))
    local waited = helper.now() - t0
    assert.equals(20, helper.psql_int(("SELECT count(*) FROM scheduler.jobs WHERE name = %s")
      :format(helper.literal(L))), "the inserting transaction had not committed when limit() returned")
    assert.equals(0, wrong_parts(L, field("tenant")))
    assert.is_true(waited > 0.5, ("limit() returned after %.2f s"):format(waited))
    local n = 0
    s:on(L, function() n = n + 1 end)
    s:run{ drain = true }
    assert.equals(20, n)
  end)

  -- FAIRNESS at scale (issue 16, item 4): 100,000 jobs of one tenant wait
  -- (scheduled first) and 10 of another after them; the limit is far
  -- above what the worker runs, so only the claim's order decides.  The
  -- small tenant's jobs are among the first starts (round-robin), and
  -- the first 500 jobs start within seconds: a claim that read every due
  -- job (100,000 a claim, as before the index) took the better part of a
  -- second, so 500 jobs in claims of at most 20 took a minute.
  -- (#slow: the memory run leaves it out; its C paths are the other
  -- tests' claims)
  it("100,000 waiting in one partition: 10 of another start among the first, and claims stay quick #slow",
    function()
    local s = helper.new()
    local L = helper.name("fairscale")
    helper.ok(s:limit(L, { concurrency = 1000, by = "tenant" }))
    local N = 100000
    local list = {}
    for i = 1, N do list[i] = { L, { tenant = "huge", i = i } } end
    helper.ok(s:schedule_many(list))
    list = nil
    local small = {}
    for i = 1, 10 do small[helper.ok(s:schedule(L, { tenant = "small", i = i }))] = true end
    local w = worker(L, 4, 0, { WORKER_BATCH_MAX = 20 })
    local t0 = helper.now()
    assert.is_truthy(helper.wait_for(function() return all_done_once({ w }, small) end, 60), w:describe())
    assert.is_truthy(helper.wait_for(function() return #w:events("done") >= 500 end, 60), w:describe())
    local took = helper.now() - t0
    local starts = w:events("start")
    table.sort(starts, function(a, b) return a.time < b.time end)
    local last = 0
    for k, r in ipairs(starts) do if small[r.id] then last = k end end
    limits.figure("partitions", "100,000 waiting: the small partition's 10th job was start %d; 500 jobs in %.2f s",
      last, took)
    -- one of each partition per round: the 10th small job is about the
    -- 20th start; a batch of 20 is the bound
    assert.is_true(last <= 10 + 20, ("the small partition's last job was start %d"):format(last))
    assert.is_true(took < 30, ("500 jobs took %.1f s"):format(took))
    w:kill("TERM")
    w:wait(10)
  end)
end)
