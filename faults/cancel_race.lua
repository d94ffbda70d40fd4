-- Scenario cancel_race (issue 14, item 4): cancel() against claims.  Under
-- `lua-scheduler run` (one worker: two would split the batch between
-- them as they claim at once), 30 rounds of a batch scheduled at once:
-- a slow job (0.3 s) and 40 quick ones, which wait in the worker's batch
-- (held by its claim transaction on PostgreSQL) while the slow one runs
-- (the quick ones keep the batch size large: it adapts to the jobs'
-- duration).
-- Meanwhile cancel() is called on a waiting one, then on the slow one
-- (each call returns once the worker answered or its transaction ended, by
-- when the others have run).  The rule, checked against the independent record: cancel returns
-- true only for a job that never runs, and false only for one that ran.
local lib = require "faults.lib"
local scheduler = require "scheduler"

return {
  title = "cancel racing claims: cancel jobs waiting in another worker's batch",
  recovery = "cancel() call: p50 / max",
  run = function(ctx, r)
    local rounds = math.max(5, math.floor(30 * math.min(1, ctx.scale)))
    lib.clear_jobs()
    local records = lib.tmpdir("cancel-records")
    local rec = lib.records(records)
    local sup = lib.start_run("cancel", 1, records)
    r:check(sup:wait_log("started: listeners", 1, 20), "the worker started", sup)
    local s <close> = scheduler.new { log = false }
    local all, answers, took = {}, {}, {}
    local yes, no = 0, 0
    for round = 1, rounds do
      local t = lib.now()
      local list = { { lib.JOB, { seq = round * 100, sleep = 0.3 }, { at = t - 1 } } }
      for i = 1, 40 do list[#list + 1] = { lib.JOB, { seq = round * 100 + i }, { at = t - 1 + i / 1000 } } end
      local ids = assert(s:schedule_many(list))
      table.move(ids, 1, #ids, #all + 1, all)
      lib.wait_for(function() rec:read(); return rec.by_id[ids[1]] end, 10, 0.005)
      for _, k in ipairs { 21, 1 } do
        local t0 = lib.now()
        local ok, err = s:cancel(ids[k])
        took[#took + 1] = lib.now() - t0
        r:check(err == nil, "cancel() answered" .. (err and (": " .. tostring(err)) or ""))
        answers[ids[k]] = ok
        if ok then yes = yes + 1 else no = no + 1 end
      end
    end
    lib.sleep(1)
    rec:read()
    local wrong = {}
    for id, ok in pairs(answers) do
      local ran = rec.by_id[id] ~= nil
      if ok == ran then wrong[#wrong + 1] = ("job %d: cancel %s but it %s"):format(id, tostring(ok),
        ran and "ran" or "never ran") end
    end
    for i = 1, math.min(5, #wrong) do r:note(wrong[i]) end
    r:check(#wrong == 0, ("cancel true: %d, never ran; false: %d, ran (%d wrong)"):format(yes, no, #wrong))
    r:check(yes == rounds, ("every job waiting in a batch was cancelled (%d of %d)"):format(yes, rounds))
    table.sort(took)
    r:recovered("cancel() call, median", took[math.ceil(#took / 2)], "p50")
    r:recovered("cancel() call, slowest", took[#took], "max")
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
    local expected = {}
    for _, id in ipairs(all) do
      if answers[id] ~= true then expected[#expected + 1] = id end
    end
    r.scheduled = #all
    local lost, dups = rec:check(expected)
    r:count(expected, rec, lost, dups, function() return nil end)
  end,
}
