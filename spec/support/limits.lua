--- spec/support/limits.lua: what the limit specs (limit_spec.lua,
-- rate_limit_spec.lua) share: scheduling a batch of a name, the workers
-- they start (spec/support/worker.lua) and the checks on those workers'
-- own records.
--   local limits = require "spec.support.limits"
local helper = require "spec.helper"
local json = require "dkjson"
local assert = require "luassert"
local most_at_once = require "spec.support.overlap"

local M = {}

--- JSON text `s` decoded (the command's --json output); raises if it is not.
function M.decode(s)
  local v, _, err = json.decode(s, 1, json.null)
  if err then error("not JSON: " .. err .. "\n" .. s, 2) end
  return v
end

--- Schedule `n` jobs of `name` (payloads { i = k }); returns their ids as a set.
function M.schedule_n(s, name, n)
  local list = {}
  for i = 1, n do list[i] = { name, { i = i } } end
  local set = {}
  for _, id in ipairs(helper.ok(s:schedule_many(list))) do set[id] = true end
  return set
end

--- Done lines per job id among `ids`, all workers together.
function M.dones(procs, ids)
  local per = {}
  for _, r in ipairs(helper.all_results(procs, "done")) do
    if ids[r.id] then per[r.id] = (per[r.id] or 0) + 1 end
  end
  return per
end

--- Every job of `ids` done exactly once, all workers together.
function M.all_done_once(procs, ids)
  local per = M.dones(procs, ids)
  for id in pairs(ids) do if per[id] ~= 1 then return false end end
  return true
end

--- LIMIT_FIGURES=1: say a measured figure (README, Guarantees), tagged.
function M.figure(tag, fmt, ...)
  if os.getenv("LIMIT_FIGURES") then io.stderr:write(("\n[%s] " .. fmt .. "\n"):format(tag, ...)) end
end

--- The worker's log has no warning and no error.
function M.quiet(proc)
  local log = proc:log()
  assert.is_nil(log:find("warn", 1, true) or log:find("error", 1, true), proc:describe())
end

--- A worker of `names`: at concurrency 1 it blocks `seconds` in each job
-- (WORKER_SLEEP), a concurrent one waits that long in its cqueues loop
-- (WORKER_WAIT); `extra`: more of its environment.
function M.worker(names, concurrency, seconds, extra)
  local env = { WORKER_NAMES = names, WORKER_LOG = "stderr" }
  if concurrency > 1 then
    env.WORKER_CONCURRENCY = concurrency
    env.WORKER_WAIT = seconds
  else
    env.WORKER_SLEEP = seconds
  end
  for k, v in pairs(extra or {}) do env[k] = v end
  return helper.spawn(env)
end

--- The most jobs of `ids` running at once by the workers' own records: a
-- job runs from its start line to its done line, or, with no done line
-- (its worker was killed), to `ended[pid]` (the kill's time), else it
-- is still running.
function M.peak(procs, ids, ended)
  local intervals = {}
  for _, p in ipairs(procs) do
    local open = {}
    local function still(r) -- a run without its done line
      intervals[#intervals + 1] = { r.time, ended and ended[r.pid] or math.huge }
    end
    for _, r in ipairs(p:results()) do
      if ids[r.id] and r.event == "start" then
        if open[r.id] then still(open[r.id]) end
        open[r.id] = r
      elseif ids[r.id] and r.event == "done" and open[r.id] then
        intervals[#intervals + 1] = { open[r.id].time, r.time }
        open[r.id] = nil
      end
    end
    for _, r in pairs(open) do still(r) end
  end
  return most_at_once(intervals)
end

return M
