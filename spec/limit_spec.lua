-- Global concurrency limits (issue 16, item 2): scheduler.limit(name,
-- { concurrency = N }).  The attack: several workers of both kinds
-- (concurrency 1: PostgreSQL's held claim transaction, SQLite's batch;
-- concurrency 3: the fetcher's leased claims, jobs claimed ahead of their
-- start) claim one limited name at once; their own records (each start
-- and done line, with its time: spec/support/worker.lua) never show more
-- than N of its jobs running together, and every job runs exactly once.
-- Then: a worker at the limit waits without spinning, a worker killed -9
-- while it holds the slot gives it back (its lease), an unlimited name
-- beside a full one is not held back, lifting a limit lets the waiting
-- jobs go, and the API and command refuse bad limits.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"
local limits = require "spec.support.limits"
local decode, schedule_n, dones, all_done_once, quiet, worker, peak = limits.decode, limits.schedule_n,
  limits.dones, limits.all_done_once, limits.quiet, limits.worker, limits.peak
local function figure(...) return limits.figure("limit", ...) end

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

describe("limit", function()
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  it("3 workers (concurrency 1, 3, 1) on a name limited to 2: never more than 2 at once, each job once",
    function()
    local s = helper.new()
    local L = helper.name("limited")
    assert.is_true(helper.ok(s:limit(L, { concurrency = 2 })))
    assert.is_false(s:limit(L, { concurrency = 2 })) -- unchanged
    local ids = schedule_n(s, L, 30)
    local procs = { worker(L, 1, 0.1), worker(L, 3, 0.1), worker(L, 1, 0.1) }
    assert.is_truthy(helper.wait_for(function() return all_done_once(procs, ids) end, 30),
      helper.describe_all(procs))
    helper.sleep(0.3) -- anything run twice would show
    assert.is_true(all_done_once(procs, ids), helper.describe_all(procs))
    local most = peak(procs, ids)
    local t0, t1 = math.huge, -math.huge
    for _, r in ipairs(helper.all_results(procs)) do
      if ids[r.id] then t0, t1 = math.min(t0, r.time), math.max(t1, r.time) end
    end
    figure("3 workers, limit 2, 30 jobs of 0.1 s: peak %d at once, first start to last end %.2f s (ideal 1.5 s)",
      most, t1 - t0)
    if os.getenv("LIMIT_TRACE") then
      for k, p in ipairs(procs) do
        for _, r in ipairs(p:results()) do io.stderr:write(("w%d %s %.3f\n"):format(k, r.event, r.time - t0)) end
      end
    end
    assert.is_true(most <= 2, ("%d jobs of the name ran at once"):format(most))
    assert.equals(2, most) -- the workers did use both slots
    for _, p in ipairs(procs) do quiet(p) end
  end)

  for _, concurrency in ipairs { 1, 3 } do
    it(("a worker (concurrency %d) killed -9 while it holds the only slot: it comes back with the lease")
      :format(concurrency), function()
      local s = helper.new()
      local L = helper.name("killed")
      helper.ok(s:limit(L, { concurrency = 1 }))
      local ids = schedule_n(s, L, 6)
      -- a's job outlasts the set-up however slow the machine (a is killed)
      local a = worker(L, concurrency, 60, { WORKER_LEASE = 2 })
      assert.is_truthy(helper.wait_for(function() return #a:events("start") >= 1 end, 10), a:describe())
      local b = worker(L, concurrency == 1 and 3 or 1, 0.1, { WORKER_LEASE = 2 })
      assert.is_truthy(b:wait_file("ready", 10), b:describe())
      -- b finds the name full, and waits for the slot without spinning
      helper.sleep(0.3)
      local c0 = b:cpu()
      helper.sleep(2)
      local used = b:cpu() - c0
      figure("a worker at the limit (concurrency %d) used %.2f s of CPU in 2 s", concurrency == 1 and 3 or 1, used)
      assert.is_true(used < 0.5, ("the worker at the limit used %.2f s of CPU in 2 s"):format(used))
      assert.equals(0, #b:events("start"), b:describe())
      a:kill("KILL")
      local killed = helper.now()
      assert.is_truthy(a:wait(5), a:describe())
      -- the slot is back within the lease (and the rescue's look)
      assert.is_truthy(helper.wait_for(function() return all_done_once({ b }, ids) end, 20),
        b:describe())
      local first = math.huge
      for _, r in ipairs(b:events("start")) do first = math.min(first, r.time) end
      -- within the lease and the rescue's look, with room for a slow
      -- machine; far below the 15 s of a worker's idle look
      assert.is_true(first - killed < 2 + 5, ("the slot came back %.1f s after the kill"):format(first - killed))
      local most = peak({ a, b }, ids, { [a:pid()] = killed })
      figure("killed -9 (concurrency %d, lease 2 s): the slot came back %.2f s after the kill; peak %d",
        concurrency, first - killed, most)
      assert.equals(1, most)
      quiet(b)
    end)
  end

  -- A worker that runs several jobs at once gives back the expired leases
  -- of dead workers once a second while it has jobs in flight (RESCUE_EVERY
  -- in csrc/fetcher.c).  The attack: it was idle first, with no lease of
  -- its names to watch, then busy; the worker that held the limit's only
  -- slot is killed -9.  It used to look again only once idle: busy, it left
  -- the dead worker's slot taken as long as its own jobs ran.
  it("a busy worker gives the slot of a worker killed -9 back within the lease, though it was idle first", function()
    local s = helper.new()
    local L, M = helper.name("dead_slot"), helper.name("busy")
    helper.ok(s:limit(L, { concurrency = 1 }))
    local extra = { WORKER_LEASE = 1 }
    -- both idle first, no lease anywhere
    local b = worker(L .. "," .. M, 2, 60, extra)
    local a = worker(L, 2, 60, extra)
    for _, p in ipairs({ a, b }) do assert.is_truthy(p:wait_file("ready"), p:describe()) end
    helper.sleep(0.5)
    -- b busy with M's 2 jobs of 60 s (no coroutine free: it cannot take L's)
    schedule_n(s, M, 2)
    assert.is_truthy(helper.wait_for(function() return #b:events("start") == 2 end, 10), b:describe())
    -- a takes L's only slot, and dies with it
    local id = next(schedule_n(s, L, 1))
    assert.is_truthy(helper.wait_for(function() return #a:events("start") == 1 end, 10), a:describe())
    a:kill("KILL")
    local killed = helper.now()
    assert.is_truthy(a:wait(5), a:describe())
    -- only b can give it back (its lease of 1 s, then a look once a second)
    local back = helper.wait_for(function() return helper.ok(s:job(id)).state == "scheduled" end, 15)
    local after = helper.now() - killed
    figure("a worker killed -9 with the only slot: a busy worker gave it back %.2f s after the kill (lease 1 s)", after)
    assert.is_truthy(back, ("the slot was not given back in %.1f s\n%s"):format(after, b:describe()))
    assert.is_true(after < 1 + 4, ("the slot came back %.1f s after the kill"):format(after))
    assert.equals(0, #b:events("done"))
  end)

  it("an unlimited name beside a full one is not held back; lifting the limit lets the rest go", function()
    local s = helper.new()
    local L, U = helper.name("full"), helper.name("free")
    helper.ok(s:limit(L, { concurrency = 1 }))
    local w = worker(L .. "," .. U, 3, 0.3)
    local w1 = worker(L .. "," .. U, 1, 0.3)
    local procs = { w, w1 }
    -- both ready before the jobs exist: a slow start (ASan, a loaded
    -- machine) must not leave U's jobs to one worker
    for _, p in ipairs(procs) do assert.is_truthy(p:wait_file("ready"), p:describe()) end
    -- L's 20 jobs take 6 s one at a time, U's 8 about a second on 3 slots
    local lids, uids = schedule_n(s, L, 20), schedule_n(s, U, 8)
    -- U's 8 jobs on 3 + 1 slots less L's one: done in about a second
    assert.is_truthy(helper.wait_for(function() return all_done_once(procs, uids) end, 10),
      helper.describe_all(procs))
    assert.is_true(peak(procs, uids) >= 2)
    figure("beside a full name: the unlimited name's 8 jobs of 0.3 s ran %d at once at most, done while"
      .. " %d of the limited name's 20 were", peak(procs, uids), count(dones(procs, lids)))
    local before = count(dones(procs, lids))
    assert.is_true(before < 20, "the limited name had run out")
    assert.equals(1, peak(procs, lids))
    -- no limit: the rest go together
    assert.is_true(helper.ok(s:limit(L, nil)))
    assert.is_false(s:limit(L, nil))
    for _, l in ipairs(helper.ok(s:limits())) do assert.not_equals(L, l.name) end
    assert.is_truthy(helper.wait_for(function() return all_done_once(procs, lids) end, 10),
      helper.describe_all(procs))
    assert.is_true(peak(procs, lids) >= 2, "the lifted limit still held")
    for _, p in ipairs(procs) do quiet(p) end
  end)

  -- A job due 0.5 s ahead in a free partition of a partitioned name starts
  -- on time beside a concurrent worker's job in flight: when the claim
  -- took the name's only due job, and when another due job waits for the
  -- slot of a full partition.  After a claim that took fewer jobs than it
  -- asked, the worker takes the due jobs left to wait for a slot without
  -- walking the partitions again (store_ops.next_wake: drained): a name
  -- with none left is not full.  A full name is looked at a second later
  -- (a slot freed by another worker), or at its next job's time if
  -- sooner: that job may be in a free partition.
  for _, waiting in ipairs { false, true } do
    it(("a job in a free partition starts on time beside a running one%s"):format(
      waiting and ", though a due job waits for the full partition" or ""), function()
      local s = helper.new()
      local P = helper.name("next")
      helper.ok(s:limit(P, { concurrency = 1, by = "tenant" }))
      local w = worker(P, 3, 0.1)
      assert.is_truthy(w:wait_file("ready"), w:describe())
      -- asleep, it is woken for the first job (the earliest of the name)
      local t0 = helper.now()
      local list = { { P, { tenant = "a", wait = 3 } }, { P, { tenant = "b" }, { delay = 0.5 } } }
      if waiting then list[3] = { P, { tenant = "a" } } end
      local ids = helper.ok(s:schedule_many(list))
      assert.is_truthy(helper.wait_for(function() return all_done_once({ w }, { [ids[2]] = true }) end, 10),
        w:describe())
      local started
      for _, r in ipairs(w:results()) do
        if r.id == ids[2] and r.event == "start" then started = r.time end
      end
      local late = started - (t0 + 0.5)
      figure("a job in a free partition%s started %.3f s after its time",
        waiting and " (a due job waiting)" or "", late)
      assert.is_true(late < 0.3, ("started %.3f s late: looked at a second later, as at the limit"):format(late))
      if waiting then assert.is_nil(dones({ w }, { [ids[3]] = true })[ids[3]], "the full partition's job ran") end
      quiet(w)
    end)
  end

  -- Another client's transaction holds a limit's row (an operator's UPDATE
  -- left open) for four leases, while three workers (two concurrent, one
  -- at concurrency 1) run the name's jobs, and a third worker runs another name's (busy from its
  -- start, it gives back any lease expired, once a second).  A concurrent
  -- worker renews its leases between its claims: a claim that waited for
  -- the lock as long as the other client held it let them expire, the
  -- third worker gave the jobs in flight back, and they ran again beside
  -- themselves.  A claim waits for the lock a quarter of the lease (a
  -- second at most), then takes nothing; the leases hold, no job starts twice, and the
  -- claims come back once the lock is let go.
  it("another client holds a limit's row for 4 leases: the jobs in flight keep their leases, none starts twice #postgresql",
    function()
    local s = helper.new()
    local L, U = helper.name("locked_limit"), helper.name("beside")
    helper.ok(s:limit(L, { concurrency = 4 }))
    local extra = { WORKER_LEASE = 1 }
    schedule_n(s, U, 2)
    local other = worker(U, 2, 60, extra)
    -- (7 coroutines for 4 slots: a worker with jobs in flight claims while
    -- the row is held; the one at concurrency 1, whose heartbeat thread
    -- renews, has its claim fail, says so, and tries again)
    local procs = { worker(L, 3, 6, extra), worker(L, 3, 6, extra), worker(L, 1, 0.1, extra) }
    for _, p in ipairs(procs) do assert.is_truthy(p:wait_file("ready"), p:describe()) end
    assert.is_truthy(helper.wait_for(function() return #other:events("start") == 2 end, 10), other:describe())
    local ids = schedule_n(s, L, 8)
    local function starts()
      local per, n = {}, 0
      for _, r in ipairs(helper.all_results(procs, "start")) do
        if ids[r.id] then per[r.id], n = (per[r.id] or 0) + 1, n + 1 end
      end
      return per, n
    end
    assert.is_truthy(helper.wait_for(function() return select(2, starts()) >= 4 end, 10),
      helper.describe_all(procs))
    local hold = 4
    local sqlfile = os.tmpname()
    helper.write_file(sqlfile, ("BEGIN; UPDATE scheduler.limits SET concurrency = concurrency WHERE name = %s;"
      .. " SELECT pg_sleep(%d); ROLLBACK;"):format(helper.literal(L), hold))
    helper.sh("psql -XAtq -v ON_ERROR_STOP=1 -f " .. helper.shquote(sqlfile) .. " >/dev/null 2>&1 &")
    assert.is_truthy(helper.wait_for(function()
      return helper.psql_int("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%'"
        .. " AND pid <> pg_backend_pid()") > 0
    end, 5))
    assert.is_truthy(helper.wait_for(function() return count(dones(procs, ids)) == 8 end, 40),
      helper.describe_all(procs))
    os.remove(sqlfile)
    for id, n in pairs(starts()) do assert.equals(1, n, "job " .. id .. " started " .. n .. " times") end
    assert.is_true(all_done_once(procs, ids))
    assert.is_true(peak(procs, ids) <= 4)
    assert.equals(0, #other:events("done")) -- (busy throughout: its jobs wait 60 s)
    -- (its jobs take 0.1 s: it claimed, at its look for a full name, while
    -- the row was held)
    assert.matches("lock timeout; retrying until it works", procs[3]:log(), 1, true)
  end)

  -- PARTITIONS: limit(name, { concurrency = N, by = ... }).  The attack:
  -- four workers of both kinds claim one name whose 100 partitions are
  -- each limited to 2, with a few hot partitions (20 jobs) among cold ones
  -- (3 jobs) and jobs without the field (partition ""); the limit is set
  -- after the jobs exist.  Per partition, the workers' own records never
  -- show more than 2 running together, and every job runs exactly once.
  it("4 workers (concurrency 1, 4, 1, 4) on 100 partitions limited to 2 each: never more than 2 at once in one",
    function()
    local s = helper.new()
    local L = helper.name("parted")
    local list, part_of = {}, {}
    for t = 1, 100 do
      for _ = 1, t <= 5 and 20 or 3 do list[#list + 1] = { L, { tenant = "t" .. t } } end
    end
    for _ = 1, 6 do list[#list + 1] = { L, { other = 1 } } end -- partition ""
    list[#list + 1] = { L, nil }
    local ids = {}
    for k, id in ipairs(helper.ok(s:schedule_many(list))) do
      ids[id] = true
      local payload = list[k][2]
      part_of[id] = payload and payload.tenant or ""
    end
    -- set once the jobs exist: it applies to them
    assert.is_true(helper.ok(s:limit(L, { concurrency = 2, by = "tenant" })))
    assert.is_false(s:limit(L, { concurrency = 2, by = "tenant" })) -- unchanged
    local l = helper.ok(s:limits())
    local mine
    for _, x in ipairs(l) do if x.name == L then mine = x end end
    assert.same({ name = L, concurrency = 2, by = "tenant" }, mine)
    local procs = { worker(L, 1, 0.02), worker(L, 4, 0.02), worker(L, 1, 0.02), worker(L, 4, 0.02) }
    local t0 = helper.now()
    assert.is_truthy(helper.wait_for(function() return all_done_once(procs, ids) end, 60),
      helper.describe_all(procs))
    local took = helper.now() - t0
    helper.sleep(0.3) -- anything run twice would show
    assert.is_true(all_done_once(procs, ids), helper.describe_all(procs))
    local parts = {}
    for id, p in pairs(part_of) do
      parts[p] = parts[p] or {}
      parts[p][id] = true
    end
    local most, at = 0, nil
    for p, set in pairs(parts) do
      local n = peak(procs, set)
      if n > most then most, at = n, p end
      assert.is_true(n <= 2, ("%d jobs of partition %q ran at once"):format(n, p))
    end
    figure("4 workers, 100 partitions limited to 2, %d jobs of 0.02 s: peak %d in one partition (%s),"
      .. " %d at once in all, drained in %.2f s", count(ids), most, at, peak(procs, ids), took)
    assert.equals(2, most) -- the hot partitions did use both slots
    for _, p in ipairs(procs) do quiet(p) end
  end)

  it("by = \"key\": jobs without a key share partition \"\", each key is its own", function()
    local s = helper.new()
    local L = helper.name("bykey")
    helper.ok(s:limit(L, { concurrency = 1, by = "key" }))
    local keyless, keyed = {}, {}
    for i = 1, 6 do
      keyless[helper.ok(s:schedule(L, { i = i }))] = true
      keyed[helper.ok(s:schedule(L, { i = i }, { key = L .. "-k" .. i }))] = true
    end
    local procs = { worker(L, 4, 0.2), worker(L, 1, 0.2) }
    local all = {}
    for id in pairs(keyless) do all[id] = true end
    for id in pairs(keyed) do all[id] = true end
    assert.is_truthy(helper.wait_for(function() return all_done_once(procs, all) end, 20),
      helper.describe_all(procs))
    assert.equals(1, peak(procs, keyless))
    assert.is_true(peak(procs, keyed) >= 2, "the keyed jobs did not run together")
    for _, p in ipairs(procs) do quiet(p) end
  end)

  -- FAIRNESS: a huge partition scheduled first and a small one after it,
  -- each limited far above what the worker runs (so that only the claim's
  -- order decides): the small one's jobs start within the first claims,
  -- not after the huge one's.
  for _, concurrency in ipairs { 1, 4 } do
    it(("fairness (concurrency %d): a partition of 3 jobs behind one of 2,000 starts within the first batches")
      :format(concurrency), function()
      local s = helper.new()
      local L = helper.name("fair")
      helper.ok(s:limit(L, { concurrency = 1000, by = "tenant" }))
      local list = {}
      for i = 1, 2000 do list[i] = { L, { tenant = "huge", i = i } } end
      local huge = {}
      for _, id in ipairs(helper.ok(s:schedule_many(list))) do huge[id] = true end
      local small = {}
      for i = 1, 3 do small[helper.ok(s:schedule(L, { tenant = "small", i = i }))] = true end
      local w = worker(L, concurrency, 0, { WORKER_BATCH_MAX = 20 })
      assert.is_truthy(helper.wait_for(function() return all_done_once({ w }, small) end, 20), w:describe())
      local starts = w:events("start")
      table.sort(starts, function(a, b) return a.time < b.time end)
      local last = 0
      for k, r in ipairs(starts) do if small[r.id] then last = k end end
      figure("fairness (concurrency %d): the small partition's 3rd job was start %d of %d", concurrency, last,
        #starts)
      -- round-robin: one of each partition per round, so the small one's
      -- third job is about the 6th start; a batch of 20 is the bound
      assert.is_true(last <= 3 + 20, ("the small partition's last job was start %d"):format(last))
      w:kill("TERM")
      w:wait(5)
    end)
  end

  it("refuses bad limits with a clear error", function()
    local s = helper.new()
    local L = helper.name("bad")
    helper.raises(function() s:limit(L, { concurrency = 0 }) end, "concurrency must be between 1")
    helper.raises(function() s:limit(L, { concurrency = -3 }) end, "concurrency must be between 1")
    helper.raises(function() s:limit(L, { concurrency = 1.5 }) end, "concurrency must be an integer")
    helper.raises(function() s:limit(L, { concurrency = "2" }) end, "concurrency must be an integer")
    helper.raises(function() s:limit(L, { concurrency = 2, max = 3 }) end, "unknown option max")
    helper.raises(function() s:limit(L, {}) end, "concurrency or rate is missing")
    helper.raises(function() s:limit(L, 5) end, "must be a table")
    helper.raises(function() s:limit(L, { concurrency = 2, by = 5 }) end, "by must be")
    helper.raises(function() s:limit(L, { concurrency = 2, by = "" }) end, "by must be 1 to 200 bytes")
    helper.raises(function() s:limit(L, { concurrency = 2, by = 'a"b' }) end, "by must be 1 to 200 bytes")
    helper.raises(function() s:limit(L, { concurrency = 2, by = ("x"):rep(201) }) end, "by must be 1 to 200")
    helper.raises(function() s:limit("", { concurrency = 2 }) end, "must not be empty")
    helper.raises(function() s:limit(nil, { concurrency = 2 }) end, "must be a string")
    assert.same({}, (function()
      local out = {}
      for _, l in ipairs(helper.ok(s:limits())) do if l.name == L then out[#out + 1] = l end end
      return out
    end)())
  end)

  it("the command limit and its column in stats", function()
    local L = helper.name("cli_limited")
    local r = cli.exec { "limit", L, "--concurrency", "5" }
    assert.equals(0, r.code, cli.describe(r))
    assert.equals(L .. " limited to 5 at once\n", r.out)
    r = cli.exec { "limit", L, "--concurrency", "5", "--json" }
    assert.same({ changed = false }, decode(r.out))
    r = cli.exec { "stats", "--json" }
    assert.equals(0, r.code, cli.describe(r))
    local row
    for _, x in ipairs(decode(r.out)) do if x.name == L then row = x end end
    assert.equals(5, row and row.concurrency) -- a limited name without jobs is listed
    r = cli.exec { "stats" }
    assert.is_truthy(r.out:find("LIMIT", 1, true), r.out)
    local line = r.out:match("[^\n]*" .. L:gsub("%p", "%%%0") .. "[^\n]*")
    assert.is_truthy(line and line:find("5%s*$"), r.out)
    r = cli.exec { "limit", L, "--concurrency", "5", "--by", "tenant" }
    assert.equals(0, r.code, cli.describe(r))
    assert.equals(L .. " limited to 5 at once per tenant\n", r.out)
    r = cli.exec { "stats", "--json" }
    for _, x in ipairs(decode(r.out)) do if x.name == L then row = x end end
    assert.equals("tenant", row and row.by)
    r = cli.exec { "stats" }
    line = r.out:match("[^\n]*" .. L:gsub("%p", "%%%0") .. "[^\n]*")
    assert.is_truthy(line and line:find("5 per tenant%s*$"), r.out)
    r = cli.exec { "limit", L, "--none" }
    assert.equals(L .. " is no longer limited\n", r.out)
    r = cli.exec { "limit", L, "--none" }
    assert.equals(L .. " was not limited\n", r.out)
    for _, bad in ipairs {
      { { "limit", L }, "missing --concurrency" },
      { { "limit", L, "--concurrency", "0" }, "" },
      { { "limit", L, "--concurrency", "1.5" }, "" },
      { { "limit", L, "--concurrency", "2", "--none" }, "exclude each other" },
      { { "limit", L, "--none", "--by", "tenant" }, "exclude each other" },
      { { "limit", L, "--concurrency", "2", "--by", "" }, "--by must be" },
      { { "limit", "", "--none" }, "NAME must not be empty" },
    } do
      r = cli.exec(bad[1])
      assert.equals(2, r.code, cli.describe(r))
      assert.is_truthy(r.err:find(bad[2], 1, true), cli.describe(r))
    end
  end)
end)
