-- faults/run.lua: the fault suite (issue 5).  Real processes against a real
-- PostgreSQL: `lua-scheduler run` supervisors and workers, producers, kill
-- -9, server restarts, a skewed clock.  Every job run is counted by an
-- independent record (faults/listeners/record.lua), never by the
-- scheduler's own tables.
--
--   make test-faults                               every scenario, the issue's sizes
--   make test-faults FAULTS_ARGS="--only load,db_restart"
--   make test-faults FAULTS_ARGS="--scale 0.2"     smaller job counts (quicker, less telling)
--
-- `make test-faults` builds the module and starts a throwaway cluster
-- (scripts/pgtmp), which scenarios restart and reconfigure: never point this
-- at a database that matters.
--
-- It prints a table (scenario, scheduled, executed, lost, duplicates and
-- why, recovery times, lateness) and writes the same figures as JSON
-- (faults/results.json, git-ignored).  Exit status 1 if a scenario lost a
-- job, has a duplicate it cannot explain, or failed one of its checks.

package.path = (arg[0]:match("^(.*)/faults/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "faults.lib"

local SCENARIOS = {
  { "load", "faults.load" },
  { "worker_kill", "faults.worker_kill" },
  { "db_restart", "faults.db_restart" },
  { "db_absent", "faults.db_absent" },
  { "clock_skew", "faults.clock_skew" },
  { "secrets", "faults.secrets" },
  { "poison", "faults.poison" },
  { "outside_locks", "faults.outside_locks" },
  { "cancel_race", "faults.cancel_race" },
  { "stale_write", "faults.stale_write" },
  { "partition", "faults.partition" },
  { "wake_symlink", "faults.wake_symlink" },
  { "dst_fallback", "faults.dst_fallback" },
  { "lease_backlog", "faults.lease_backlog" },
  { "supervisor_kill", "faults.supervisor_kill" },
  { "escaped_error", "faults.escaped_error" },
  { "bulk_insert", "faults.bulk_insert" },
  { "limit_kill", "faults.limit_kill" },
  { "limit_restart", "faults.limit_restart" },
  { "limit_kill_parts", "faults.limit_kill_parts" },
  { "limit_restart_parts", "faults.limit_restart_parts" },
  { "rate_kill", "faults.rate_kill" },
  { "rate_restart", "faults.rate_restart" },
}

local USAGE = [[
usage: lua5.4 faults/run.lua [--only LIST] [--scale F] [--json FILE]
  --only LIST   comma-separated scenarios: load,worker_kill,db_restart,db_absent,clock_skew,
                secrets,poison,outside_locks,cancel_race,stale_write,partition,wake_symlink,
                dst_fallback,lease_backlog,supervisor_kill,escaped_error,bulk_insert,
                limit_kill,limit_restart,limit_kill_parts,
                limit_restart_parts,rate_kill,rate_restart
  --scale F     multiply the job counts by F (default 1: the issue's sizes)
  --json FILE   where to write the results (default faults/results.json)]]

local cfg = { scale = 1, json = lib.ROOT .. "/faults/results.json" }
local only
do
  local i = 1
  local function value()
    i = i + 1
    if not arg[i] then
      io.stderr:write(USAGE, "\n")
      os.exit(2)
    end
    return arg[i]
  end
  while arg[i] do
    local a = arg[i]
    if a == "--only" then
      only = {}
      for s in value():gmatch("[^,%s]+") do
        local known = false
        for _, sc in ipairs(SCENARIOS) do known = known or sc[1] == s end
        if not known then
          io.stderr:write("faults: unknown scenario ", s, "\n", USAGE, "\n")
          os.exit(2)
        end
        only[s] = true
      end
    elseif a == "--scale" then
      cfg.scale = tonumber(value())
      if not cfg.scale or cfg.scale <= 0 then
        io.stderr:write("faults: --scale must be a positive number\n")
        os.exit(2)
      end
    elseif a == "--json" then
      cfg.json = value()
    elseif a == "-h" or a == "--help" then
      print(USAGE)
      os.exit(0)
    else
      io.stderr:write("faults: unknown argument ", a, "\n", USAGE, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

for _, name in ipairs { "LUA_SCHEDULER_DATABASE", "PGTMP_DIR", "PGTMP_PORT", "PGTMP_BIN" } do
  if (os.getenv(name) or "") == "" then
    io.stderr:write("faults: ", name, " is not set: run `make test-faults` (it starts a throwaway",
      " PostgreSQL and sets it)\n")
    os.exit(2)
  end
end

---------------------------------------------------------------------------
-- a scenario's result
---------------------------------------------------------------------------

local Result = {}
Result.__index = Result

local function new_result(name, title)
  return setmetatable({
    name = name, title = title, scheduled = 0, executed = 0, runs = 0, lost = 0,
    duplicates = 0, reasons = {}, unexplained = 0, recovery = {}, checks = {}, notes = {},
  }, Result)
end

--- Record a check; `proc` (optional) is described when it fails.
function Result:check(ok, what, proc)
  ok = ok and true or false
  self.checks[#self.checks + 1] = { ok = ok, what = what }
  if not ok then
    lib.log("%s: FAILED: %s", self.name, what)
    if proc then io.stderr:write(proc:describe(), "\n") end
  end
  return ok
end

function Result:note(text)
  self.notes[#self.notes + 1] = text
  lib.log("%s: %s", self.name, text)
end

--- A recovery time (seconds).  With `short`, it also goes in the report
-- table's recovery column under that label.
function Result:recovered(what, seconds, short)
  self.recovery[#self.recovery + 1] = { what = what, seconds = seconds, short = short }
  lib.log("%s: %s: %.3f s", self.name, what, seconds)
end

--- Count the jobs `ids` against the record: executed, lost, and the
-- duplicates, each classified by explain(runs) -> reason, or nil when it
-- cannot be explained.
function Result:count(ids, rec, lost, dups, explain)
  self.scheduled = math.max(self.scheduled, #ids)
  local executed, runs = 0, 0
  for _, id in ipairs(ids) do
    local list = rec.by_id[id]
    if list then
      executed = executed + 1
      runs = runs + #list
    end
  end
  self.executed, self.runs = executed, runs
  self.lost = #lost
  if #lost > 0 then
    local show = {}
    for i = 1, math.min(10, #lost) do show[i] = tostring(lost[i]) end
    self:note(("LOST %d jobs, e.g. ids %s"):format(#lost, table.concat(show, ", ")))
  end
  for _, list in ipairs(dups) do
    self.duplicates = self.duplicates + #list - 1
    local reason = explain(list)
    if reason then
      self.reasons[reason] = (self.reasons[reason] or 0) + #list - 1
    else
      self.unexplained = self.unexplained + #list - 1
      if self.unexplained <= 5 then
        local parts = {}
        for _, run in ipairs(list) do
          parts[#parts + 1] = ("attempt %d by pid %d at %.3f"):format(run.attempt, run.pid, run.start)
        end
        self:note(("unexplained duplicate: job %d ran %d times: %s"):format(list[1].id, #list,
          table.concat(parts, "; ")))
      end
    end
  end
end

function Result:passed()
  if self.error or self.lost > 0 or self.unexplained > 0 then return false end
  for _, c in ipairs(self.checks) do
    if not c.ok then return false end
  end
  return true
end

---------------------------------------------------------------------------
-- run
---------------------------------------------------------------------------

local ctx = {
  scale = cfg.scale,
  pgdir = os.getenv("PGTMP_DIR"),
  database = os.getenv("LUA_SCHEDULER_DATABASE"),
}
--- A job count at the run's scale.
function ctx.size(n) return math.max(1, math.floor(n * cfg.scale + 0.5)) end

math.randomseed(os.time())
-- the schema, created by the owner role (the secrets scenario gives
-- workers a role that may not create it)
do
  local out, ok = lib.sh(("%s %s migrate"):format(lib.q(lib.LUA), lib.q(lib.BIN)))
  if not ok then
    io.stderr:write("faults: lua-scheduler migrate failed:\n", out)
    os.exit(1)
  end
end
local results = {}
local started = lib.now()
for _, sc in ipairs(SCENARIOS) do
  local name = sc[1]
  if not only or only[name] then
    local scenario = require(sc[2])
    local r = new_result(name, scenario.title)
    r.legend = scenario.recovery
    lib.log("== %s: %s", name, scenario.title)
    local t0 = lib.now()
    local ok, err = xpcall(scenario.run, debug.traceback, ctx, r)
    lib.stop_all()
    r.seconds = lib.now() - t0
    if not ok then
      r.error = tostring(err)
      lib.log("%s: ERROR: %s", name, r.error)
    end
    lib.log("%s: %s in %.1f s", name, r:passed() and "passed" or "FAILED", r.seconds)
    results[#results + 1] = r
  end
end
lib.remove_tmp()

---------------------------------------------------------------------------
-- report
---------------------------------------------------------------------------

local function dup_text(r)
  if r.duplicates == 0 then return "0" end
  local parts = {}
  for reason, n in pairs(r.reasons) do parts[#parts + 1] = ("%d %s"):format(n, reason) end
  table.sort(parts)
  if r.unexplained > 0 then parts[#parts + 1] = r.unexplained .. " UNEXPLAINED" end
  return ("%d (%s)"):format(r.duplicates, table.concat(parts, "; "))
end

local function recovery_text(r)
  local parts = {}
  for _, x in ipairs(r.recovery) do
    if x.short then parts[#parts + 1] = ("%s %.2f s"):format(x.short, x.seconds) end
  end
  return #parts > 0 and table.concat(parts, "; ") or "-"
end

local rows = { { "scenario", "scheduled", "executed", "lost", "duplicates (why)", "recovery",
  "lateness p50/p99/max", "result" } }
for _, r in ipairs(results) do
  rows[#rows + 1] = { r.name, lib.commas(r.scheduled), lib.commas(r.executed), tostring(r.lost),
    dup_text(r), recovery_text(r), lib.fmt_spread(r.lateness),
    r:passed() and (r.skipped and "skipped" or "ok") or "FAILED" }
end

local widths = {}
for _, row in ipairs(rows) do
  for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, #cell) end
end
local lines = {}
for k, row in ipairs(rows) do
  local cells = {}
  for i, cell in ipairs(row) do cells[i] = cell .. string.rep(" ", widths[i] - #cell) end
  lines[#lines + 1] = "| " .. table.concat(cells, " | ") .. " |"
  if k == 1 then
    local rule = {}
    for i = 1, #row do rule[i] = string.rep("-", widths[i]) end
    lines[#lines + 1] = "|-" .. table.concat(rule, "-|-") .. "-|"
  end
end
print()
print(("lua-scheduler fault suite (scale %g), %.0f s"):format(cfg.scale, lib.now() - started))
print(table.concat(lines, "\n"))
for _, r in ipairs(results) do
  if r.legend then print(("  recovery, %s: %s"):format(r.name, r.legend)) end
end
for _, r in ipairs(results) do
  print()
  print(("%s: %s"):format(r.name, r.title))
  for _, c in ipairs(r.checks) do print(("  [%s] %s"):format(c.ok and "ok" or "FAILED", c.what)) end
  for _, x in ipairs(r.recovery) do print(("  recovery: %s: %.3f s"):format(x.what, x.seconds)) end
  for _, n in ipairs(r.notes) do print("  - " .. n) end
  if r.error then print("  ERROR: " .. r.error) end
end

-- JSON
local function json(v, indent)
  indent = indent or ""
  local t = type(v)
  if v == nil then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return (("%.6f"):format(v):gsub("0+$", ""):gsub("%.$", ""))
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t" }
      return map[c] or ("\\u%04x"):format(c:byte())
    end) .. '"'
  end
  local inner = indent .. "  "
  local parts = {}
  if #v > 0 or next(v) == nil then
    if next(v) == nil then return "[]" end
    for i = 1, #v do parts[i] = inner .. json(v[i], inner) end
    return "[\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = inner .. json(k) .. ": " .. json(v[k], inner) end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

local out = { scale = cfg.scale, seconds = lib.now() - started, date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
  scenarios = {} }
for _, r in ipairs(results) do
  out.scenarios[#out.scenarios + 1] = {
    name = r.name, title = r.title, passed = r:passed(), skipped = r.skipped, seconds = r.seconds,
    scheduled = r.scheduled, executed = r.executed, runs = r.runs, lost = r.lost,
    duplicates = r.duplicates, duplicate_reasons = r.reasons, unexplained_duplicates = r.unexplained,
    recovery = r.recovery, lateness_ms = r.lateness, checks = r.checks, notes = r.notes, error = r.error,
  }
end
local f = io.open(cfg.json, "w")
if f then
  f:write(json(out), "\n")
  f:close()
  print("\nfigures written to " .. cfg.json)
end

-- the failures again, last: CI shows only the output's head and tail
local failed = 0
for _, r in ipairs(results) do
  if not r:passed() then
    failed = failed + 1
    print(("FAILED %s:"):format(r.name))
    for _, c in ipairs(r.checks) do
      if not c.ok then print("  " .. c.what) end
    end
    if r.error then print("  ERROR: " .. r.error) end
  end
end
print(("%d scenario%s passed, %d failed"):format(#results - failed, #results - failed == 1 and "" or "s",
  failed))
os.exit(failed == 0 and #results > 0 and 0 or 1)
