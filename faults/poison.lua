-- Scenario poison (issue 14, item 1): a job that crashes its worker on
-- purpose (os.exit in its listener) among 1,500 no-op jobs due at once,
-- under `lua-scheduler run --workers 3` (batches of up to 500, claimed
-- ahead).  The innocents have max_attempts = 1: a single attempt charged
-- to one of them would fail it.  The poison has max_attempts = 3.  What
-- must hold, counted by the independent record: every innocent runs, none
-- fails, every run of one is its attempt 1; the poison ends failed with
-- attempt 3, after exactly three runs in quarantine (each alone, each
-- charged), plus the batch crash that sent it there (not charged: the
-- worker could not know which job of the batch crashed it).  Claims skip
-- a dead worker's batch until a rescue (here the supervisor's release)
-- has put it in quarantine; a claim in the instant between the dead
-- transaction's abort and its record's commit can still take it in a
-- batch once more (a second batch crash, also not charged: reported, and
-- at most two allowed).
local lib = require "faults.lib"
local scheduler = require "scheduler"

return {
  title = "poison job: os.exit in one of 1,500 jobs claimed in batches by 3 workers",
  recovery = "poison's first crash -> it is failed (3 quarantined crashes, innocents uncharged)",
  run = function(ctx, r)
    local n, at = ctx.size(1500), math.floor(ctx.size(1500) / 2)
    lib.clear_jobs()
    local records = lib.tmpdir("poison-records")
    local rec = lib.records(records)
    local sup = lib.start_run("poison", 3, records)
    r:check(sup:wait_log("started: listeners", 3, 20), "the 3 workers started", sup)
    local s <close> = scheduler.new { log = false }
    local list = {}
    for i = 1, n do
      list[i] = { lib.JOB, i == at and { seq = i, exit = 3 } or { seq = i },
        { max_attempts = i == at and 3 or 1 } }
    end
    local t0 = lib.now()
    local ids = assert(s:schedule_many(list)) -- one transaction: due at once
    local poison = ids[at]
    r.scheduled = #ids
    local innocents = {}
    for i, id in ipairs(ids) do
      if i ~= at then innocents[#innocents + 1] = id end
    end
    rec:wait_all(innocents, 90)
    local failed = lib.wait_for(function()
      local j = s:job(poison)
      return j and j.state == "failed" and j
    end, 90, 0.05)
    local t1 = lib.now()
    rec:read()
    r:check(failed, "the poison job ended failed", sup)
    if failed then
      r:check(failed.attempt == 3, ("after exactly its own 3 attempts (%d)"):format(failed.attempt))
      r:recovered("first crash -> the poison job failed", t1 - t0, "failed after")
    end
    local runs = rec.by_id[poison] or {}
    table.sort(runs, function(a, b) return a.start < b.start end)
    local charged = {}
    for _, run in ipairs(runs) do charged[#charged + 1] = run.attempt end
    r:note(("the poison ran %d times, attempts %s"):format(#runs, table.concat(charged, ",")))
    -- the batch crashes (attempt 1, not charged), then 1, 2, 3 alone
    local batch_crashes = #charged - 3
    local shape = batch_crashes >= 1 and table.concat(charged, ",", batch_crashes + 1) == "1,2,3"
    for i = 1, batch_crashes do shape = shape and charged[i] == 1 end
    r:check(shape, "its runs: attempt 1 in batch crashes (not charged), then attempts 1, 2, 3 in quarantine")
    r:note(("batch crashes before its quarantine: %d (1 expected; a second one is a claim in the"
      .. " instant between the dead worker's abort and its record's commit: see README)"):format(batch_crashes))
    r:check(batch_crashes <= 2, ("at most two batch crashes (%d)"):format(batch_crashes))
    local bad, failed_jobs = 0, assert(s:jobs { state = "failed", name = lib.JOB })
    for _, id in ipairs(innocents) do
      for _, run in ipairs(rec.by_id[id] or {}) do
        if run.attempt ~= 1 then bad = bad + 1 end
      end
    end
    r:check(bad == 0, ("no innocent job was charged an attempt (%d runs at attempt > 1)"):format(bad))
    r:check(#failed_jobs == 1 and failed_jobs[1].id == poison,
      ("no other job failed (%d failed in all)"):format(#failed_jobs))
    -- every duplicate of an innocent: a run by a worker that the poison
    -- killed (its batch came back, in quarantine)
    local crashed = {}
    for _, run in ipairs(runs) do crashed[run.pid] = run.start end
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function(list)
      for i = 1, #list - 1 do
        local t = crashed[list[i].pid]
        if not (t and list[i].start <= t + 0.05) then return nil end
      end
      return "in a batch the poison crashed"
    end)
  end,
}
