--- Scenario 6, clock skew: `lua-scheduler run` on a host whose clock is an
-- hour ahead, then an hour behind (libfaketime preloaded into the
-- supervisor and so into its workers; the monotonic clock is left alone, as
-- NTP would).  Jobs must run on the database's time: a job due now runs
-- now, jobs due in 2 s (given as a delay, as an absolute time, and by the
-- command `schedule --in 2s` on the skewed host) run 2 s later.
--
-- The worker's own clock is wrong, so the time a job ran is taken by this
-- driver (the true clock, which the database shares) when its record
-- appears (polled every 10 ms).
local lib = require "faults.lib"
local scheduler = require "scheduler"

--- The multi-threaded libfaketime (the worker has a heartbeat thread).
local function libfaketime()
  local arch = lib.sh("gcc -print-multiarch"):match("[^\n]+") or "x86_64-linux-gnu"
  for _, path in ipairs { "/usr/lib/" .. arch .. "/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1" } do
    if lib.read_file(path) then return path end
  end
end

return {
  title = "clock skew: a worker host an hour ahead, then behind",
  run = function(ctx, r)
    local lib_path = libfaketime()
    if not r:check(lib_path, "libfaketime is installed (scripts/install-deps)") then return end
    lib.clear_jobs()
    local all_ids, late = {}, {}
    local records = lib.tmpdir("skew-records")
    local rec = lib.records(records)
    for _, skew in ipairs { 3600, -3600 } do
      local label = skew > 0 and "an hour ahead" or "an hour behind"
      local env = { LD_PRELOAD = lib_path, FAKETIME = ("%+d"):format(skew), FAKETIME_DONT_FAKE_MONOTONIC = "1",
        FAKETIME_NO_CACHE = "1" }
      local sup = lib.start_run("skew" .. skew, 1, records, env)
      r:check(sup:wait_log("started: listeners", 1, 20), label .. ": the worker started", sup)
      lib.sleep(0.3)
      local s <close> = scheduler.new { log = false }
      local jobs = {}
      local function add(what, id, due) jobs[#jobs + 1] = { what = what, id = id, due = due } end
      local t = lib.now()
      add("due now", assert(s:schedule(lib.JOB, { seq = 1 })), t)
      t = lib.now()
      add("delay = 2", assert(s:schedule(lib.JOB, { seq = 2 }, { delay = 2 })), t + 2)
      t = lib.now()
      add("at = now + 2", assert(s:schedule(lib.JOB, { seq = 3 }, t + 2)), t + 2)
      -- the command on the skewed host: --in counts from the database's clock
      local t_cli = lib.now()
      local argv = { "env" }
      for k, v in pairs(env) do argv[#argv + 1] = lib.q(k .. "=" .. v) end
      local out, ok = lib.sh(table.concat(argv, " ") .. (" %s %s schedule fault '{\"seq\": 4}' --in 2s"):format(
        lib.q(lib.LUA), lib.q(lib.BIN)))
      -- (the id is the last line: the command names its database on stderr first)
      local cli_id = tonumber(out:match("^(%d+)\n$") or out:match("\n(%d+)\n$"))
      r:check(ok and cli_id, label .. ": `lua-scheduler schedule --in 2s` on the skewed host: id " .. tostring(cli_id))
      if cli_id then add("schedule --in 2s (skewed CLI)", cli_id, nil) end
      local ids = {}
      for _, j in ipairs(jobs) do ids[#ids + 1] = j.id; all_ids[#all_ids + 1] = j.id end
      lib.wait_for(function()
        rec:read()
        for _, id in ipairs(ids) do if not rec.by_id[id] then return false end end
        return true
      end, 10, 0.01)
      local offsets = {}
      for _, j in ipairs(jobs) do
        local run = rec.by_id[j.id] and rec.by_id[j.id][1]
        if r:check(run, ("%s: job %q ran"):format(label, j.what), sup) then
          -- run_at is the database's value; for the CLI job, due = t_cli + 2 give or take its start-up
          local due = j.due or run.run_at
          if j.due then
            r:check(math.abs(run.run_at - j.due) < 0.5, ("%s: %q has run_at %.2f s from the intended time")
              :format(label, j.what, run.run_at - j.due))
          else
            r:check(run.run_at - t_cli > 1.9 and run.run_at - t_cli < 4,
              ("%s: %q is due %.2f s after the command started"):format(label, j.what, run.run_at - t_cli))
          end
          local lateness = run.seen - due
          late[#late + 1] = lateness
          r:check(lateness > -0.05 and lateness < 1, ("%s: %q ran %.3f s after it was due")
            :format(label, j.what, lateness))
          offsets[#offsets + 1] = run.start - run.seen
        end
      end
      if #offsets > 0 then
        table.sort(offsets)
        local off = offsets[(#offsets + 1) // 2]
        r:note(("%s: the worker's clock read %+.1f s from the true time"):format(label, off))
        r:check(math.abs(off - skew) < 5, ("%s: the worker's clock really was skewed (%+.0f s)"):format(label, off))
      end
      r:check(sup:stop() == 0, label .. ": the supervisor stopped gracefully (exit 0)", sup)
    end
    rec:read()
    local lost, dups = rec:check(all_ids)
    r:count(all_ids, rec, lost, dups, function() return nil end)
    r.lateness = lib.spread(late)
  end,
}
