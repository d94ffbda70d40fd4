--- Issue 16, item 3: a rate limit under attack, the builder of rate_kill
-- and rate_restart.  The job name is limited to RATE starts per PER
-- seconds (no concurrency limit), drained by limit_kill's supervisors
-- (2 workers at concurrency 1, 1 at concurrency 4: 6 coroutines for jobs
-- of 50 ms, so the rate holds them back), while workers are killed -9
-- (rate_kill) or PostgreSQL is restarted in immediate, then fast mode
-- (rate_restart).  The bucket's state is a committed row moved by each
-- claim (scheduler.limit_rates): a claim that dies with its worker or
-- its connection spent nothing, a committed one spent its tokens.
-- Counted from the listener's own record (each run's start): never more
-- than RATE starts in any window of 0.9 x PER (the specs' slack: a start
-- may lag its claim; the strict bound is on claims, at the database's
-- clock: spec/rate_limit_spec.lua); no job lost; every duplicate a run a
-- kill or a restart cut off; the rate resumes (a start within 5 s of each
-- attack's end) and the drain keeps most of the rule's rate.
local lib = require "faults.lib"
local limit_kill = require "faults.limit_kill"
local overlap = require "spec.support.overlap"

local RATE, PER = 20, 1

local M = {}

function M.scenario(o)
  return {
    title = o.title,
    recovery = ("never more than %d starts in %g s; the rate resumes after each %s"):format(RATE, 0.9 * PER,
      o.restarts and "restart" or "kill"),
    run = function(ctx, r)
      local rec, one, many, ids = limit_kill.setup(ctx, r, o.label, { limits = { rate = RATE, per = PER },
        jobs = 160 })
      r.scheduled = #ids
      local t0 = lib.now()
      local killed, ends, cut = {}, {}, nil
      if o.restarts then
        local restarts = {}
        for i, x in ipairs(o.restarts) do restarts[i] = { at = x.at, mode = x.mode } end
        lib.restart_at(ctx, restarts, t0, o.name)
        for _, x in ipairs(restarts) do
          ends[#ends + 1] = { what = x.mode .. " restart", at = x.t_end }
          r:recovered(x.mode .. ": server down", x.t_end - x.t_begin)
        end
        cut = lib.cut_by_restart(restarts, "its outcome cut off by a restart")
      else
        killed = limit_kill.kill_every_2s(rec, ids, one, many, t0, 60, 3)
        for _, at in pairs(killed) do ends[#ends + 1] = { what = "kill", at = at } end
        cut = lib.in_flight_at_kill(killed)
      end
      r:check(rec:wait_all(ids, 90), "every job ran", one)
      lib.sleep(1) -- would anything run twice?
      rec:read()
      local starts, last = {}, -math.huge
      for _, run in ipairs(rec.runs) do
        starts[#starts + 1] = run.start
        last = math.max(last, run.start)
      end
      local most = overlap.most_in_window(starts, 0.9 * PER)
      r:note(("%d starts; at most %d in any %g s (rate %d per %g s); first to last start %.2f s, at the rule's"
        .. " rate %.2f s"):format(#starts, most, 0.9 * PER, RATE, PER, last - t0, #ids * 1.03 * PER / RATE))
      r:check(most <= RATE, ("never more than %d starts in %g s (%d)"):format(RATE, 0.9 * PER, most))
      for _, x in ipairs(ends) do
        local first = math.huge
        for _, s in ipairs(starts) do if s > x.at then first = math.min(first, s) end end
        if first < math.huge then r:recovered(x.what .. " -> next start", first - x.at) end
        r:check(first < x.at + 5 or last <= x.at, x.what .. ": the rate resumed within 5 s")
      end
      if o.restarts then
        r:check(#one:workers() == 2 and #many:workers() == 1, "the workers reconnected by themselves", one)
      else
        local kills = 0
        for _ in pairs(killed) do kills = kills + 1 end
        r:check(kills >= 2, ("workers killed (%d)"):format(kills))
      end
      r:check(one:stop() == 0, "the supervisor at concurrency 1 stopped gracefully", one)
      r:check(many:stop() == 0, "the supervisor at concurrency 4 stopped gracefully", many)
      rec:read()
      local lost, dups = rec:check(ids)
      r:count(ids, rec, lost, dups, cut)
    end,
  }
end

return M
