--- faults/lib.lua: what the fault scenarios share.  Clocks, files, psql,
-- background processes (the real `lua-scheduler` and helper programs), the
-- independent record of every job run, and statistics.
--
-- The record: the listener file faults/listeners/record.lua appends one line
-- per run to RECORDS/<pid>.log, with write(2) before the listener returns:
--   "<job id> <attempt> <worker pid> <start, host clock> <run_at> <seq>"
-- A line exists for every run that started, whatever happened to the worker
-- or the database afterwards; the scheduler's own tables are not consulted
-- to decide what ran.

local core = require "scheduler.core"
local system = require "system"
local overlap = require "spec.support.overlap"

local lib = {}

lib.ROOT = (arg and arg[0] or "faults/run.lua"):match("^(.*)/faults/[^/]*$") or "."
lib.BIN = lib.ROOT .. "/bin/lua-scheduler"
lib.LISTENERS = lib.ROOT .. "/faults/listeners"
lib.LUA = os.getenv("LUA") or "lua5.4"
lib.JOB = "fault" -- the job name every scenario uses (record.lua's listener)

---------------------------------------------------------------------------
-- clocks, files, shell
---------------------------------------------------------------------------

lib.now = system.gettime

function lib.sleep(s)
  local deadline = lib.now() + s
  while true do
    local left = deadline - lib.now()
    if left <= 0 then return end
    system.sleep(math.min(left, 0.05))
  end
end

--- Poll pred() every `interval` s until it returns a truthy value or
-- `timeout` s passed; returns its last result.
--- Job `id`'s row as s:jobs() lists it when a worker holds it on a lease
-- (its locked_until set), else nil: a job of a held batch reads as running
-- once its listener has run 10 ms, without a lease.
function lib.leased(s, id)
  local rows = s:jobs { id = id }
  local j = rows and rows[1]
  if j and j.state == "running" and j.locked_until then return j end
end

function lib.wait_for(pred, timeout, interval)
  local deadline = lib.now() + timeout
  while true do
    local v = pred()
    if v or lib.now() >= deadline then return v end
    lib.sleep(interval or 0.05)
  end
end

function lib.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function lib.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function lib.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

--- Run a shell command; returns its output (stdout and stderr) and success.
function lib.sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok and true or false
end

function lib.log(fmt, ...)
  io.stderr:write(string.format("[faults %6.1f s] ", lib.now() - lib.T0), string.format(fmt, ...), "\n")
end
lib.T0 = lib.now()

local tmp_root
--- A fresh directory under the run's temporary directory.
function lib.tmpdir(name)
  if not tmp_root then
    local out, ok = lib.sh("mktemp -d /tmp/lua-scheduler-faults.XXXXXX")
    assert(ok, out)
    tmp_root = out:gsub("%s+$", "")
    -- the postgres user (pgtmp as root) and workers must reach it
    lib.sh("chmod 755 " .. lib.q(tmp_root))
  end
  local dir = tmp_root .. "/" .. name
  assert(select(2, lib.sh("mkdir -p " .. lib.q(dir))))
  return dir
end

function lib.remove_tmp()
  if tmp_root then lib.sh("rm -rf " .. lib.q(tmp_root)) end
  tmp_root = nil
end

---------------------------------------------------------------------------
-- the test cluster (scripts/pgtmp)
---------------------------------------------------------------------------

lib.PGTMP = lib.ROOT .. "/scripts/pgtmp"
lib.PGBIN = os.getenv("PGTMP_BIN") or "/usr/lib/postgresql/15/bin"

--- Run SQL with psql as the cluster's superuser over its socket (or
-- `opts.conn`, a connection string); returns the output (unaligned,
-- tab-separated, tuples only) and success.
function lib.psql(sql, opts)
  opts = opts or {}
  local file = os.tmpname()
  lib.write_file(file, sql)
  local cmd = ("%s -X -q -A -t -F '\t' -v ON_ERROR_STOP=1 -f %s"):format(
    lib.q(lib.PGBIN .. "/psql"), lib.q(file))
  if opts.conn then cmd = cmd .. " " .. lib.q(opts.conn) end
  local out, ok = lib.sh(cmd)
  os.remove(file)
  if not ok and not opts.may_fail then error("psql failed:\n" .. out .. "\n-- SQL:\n" .. sql, 2) end
  return out, ok
end

function lib.psql_value(sql, opts)
  return (lib.psql(sql, opts):match("^([^\n]*)"))
end

--- Restart the server: "fast" or "immediate".  Blocks until it accepts
-- connections again.
function lib.pg_restart(dir, mode)
  local out, ok = lib.sh(("%s restart %s %s"):format(lib.q(lib.PGTMP), lib.q(dir), mode))
  if not ok then error("pgtmp restart failed:\n" .. out) end
end

--- Restart the server on schedule: each x of `restarts` ({ at = s after
-- t0, mode = "fast" | "immediate" }) at t0 + x.at (or at once, when an
-- earlier one ran late), recording x.t_begin and x.t_end (the server
-- accepts connections again) for lib.cut_by_restart and the recovery
-- figures; `label` prefixes the log lines.
function lib.restart_at(ctx, restarts, t0, label)
  for _, x in ipairs(restarts) do
    lib.sleep(math.max(0, t0 + x.at - lib.now()))
    x.t_begin = lib.now()
    lib.pg_restart(ctx.pgdir, x.mode)
    x.t_end = lib.now()
    lib.log("%s: %s restart took %.2f s", label, x.mode, x.t_end - x.t_begin)
  end
  return restarts
end

--- Remove every job of the scenarios' name (a clean start).
function lib.clear_jobs()
  lib.psql(("DELETE FROM scheduler.jobs WHERE name = '%s'"):format(lib.JOB))
end

--- Schedule n jobs with scheduler instance s, in lists of 1,000, due at
-- random times 1 to 1 + spread seconds from now; job i's payload is
-- { seq = i, sleep = sleep }.  Returns their ids and the start time.
function lib.schedule_spread(s, n, spread, sleep)
  local t0 = lib.now()
  local ids = {}
  for from = 1, n, 1000 do
    local list = {}
    for i = from, math.min(n, from + 999) do
      list[#list + 1] = { lib.JOB, { seq = i, sleep = sleep }, t0 + 1 + math.random() * spread }
    end
    local got = assert(s:schedule_many(list))
    table.move(got, 1, #got, #ids + 1, ids)
  end
  return ids, t0
end

---------------------------------------------------------------------------
-- background processes
---------------------------------------------------------------------------

local Proc = {}
Proc.__index = Proc
local procs = {}

--- Start argv in the background with `env` (NAME -> value, added to ours),
-- stdout and stderr to files in a fresh directory.  `opts.wrap` is a list
-- put before argv (e.g. faketime).  Returns a Proc.
function lib.start(label, argv, env, opts)
  local dir = lib.tmpdir("proc-" .. label .. "-" .. (#procs + 1))
  local parts = { "env" }
  for k, v in pairs(env or {}) do parts[#parts + 1] = lib.q(k .. "=" .. v) end
  for _, a in ipairs(opts and opts.wrap or {}) do parts[#parts + 1] = lib.q(a) end
  for _, a in ipairs(argv) do parts[#parts + 1] = lib.q(a) end
  local cmd = table.concat(parts, " ")
  local inner = ("%s </dev/null >%s 2>%s & echo $! > %s; wait $!; echo $? > %s.tmp && mv %s.tmp %s"):format(
    cmd, lib.q(dir .. "/out"), lib.q(dir .. "/err"), lib.q(dir .. "/pid"),
    lib.q(dir .. "/exit"), lib.q(dir .. "/exit"), lib.q(dir .. "/exit"))
  lib.sh(("sh -c %s </dev/null >/dev/null 2>&1 &"):format(lib.q(inner)))
  local p = setmetatable({ label = label, dir = dir }, Proc)
  p.pid = lib.wait_for(function()
    local s = lib.read_file(dir .. "/pid")
    return s and tonumber(s:match("%d+"))
  end, 10, 0.01)
  assert(p.pid, label .. " did not start")
  procs[#procs + 1] = p
  return p
end

--- `lua-scheduler run --workers n [extra...] faults/listeners` with the
-- record directory `records`.
function lib.start_run(label, n, records, env, extra, opts)
  local argv = { lib.LUA, lib.BIN, "run", "--workers", tostring(n) }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = lib.LISTENERS
  local e = { FAULTS_RECORDS = records }
  for k, v in pairs(env or {}) do e[k] = v end
  return lib.start(label, argv, e, opts)
end

function Proc:err() return lib.read_file(self.dir .. "/err") or "" end
function Proc:out() return lib.read_file(self.dir .. "/out") or "" end

function Proc:exit_code()
  local s = lib.read_file(self.dir .. "/exit")
  return s and tonumber(s:match("%d+"))
end

function Proc:alive() return lib.alive(self.pid) and self:exit_code() == nil end

--- Wait for the exit (at most `timeout` s); its status or nil.
function Proc:wait(timeout)
  return lib.wait_for(function() return self:exit_code() end, timeout, 0.02)
end

function Proc:kill(sig) return core.process.kill(self.pid, sig or "TERM") end

--- Count lines of stderr matching `pattern` (plain text).
function Proc:count_log(pattern)
  local n = 0
  for line in self:err():gmatch("[^\n]+") do
    if line:find(pattern, 1, true) then n = n + 1 end
  end
  return n
end

--- Wait until `n` (default 1) stderr lines contain `pattern`.
function Proc:wait_log(pattern, n, timeout)
  return lib.wait_for(function() return self:count_log(pattern) >= (n or 1) end, timeout or 10) and true
    or false
end

--- The pids of the worker processes of a supervisor (its children).
function Proc:workers()
  local out = {}
  local s = lib.read_file(("/proc/%d/task/%d/children"):format(self.pid, self.pid)) or ""
  for pid in s:gmatch("%d+") do out[#out + 1] = tonumber(pid) end
  table.sort(out)
  return out
end

function Proc:describe()
  local e = self:err()
  if #e > 3000 then e = "...\n" .. e:sub(-3000) end
  return ("%s (pid %d, exit %s)\n--- stderr:\n%s"):format(self.label, self.pid,
    tostring(self:exit_code()), e)
end

--- Stop gracefully (SIGTERM) and wait; kill if it does not exit.  Returns
-- the exit status.
function Proc:stop(timeout)
  if self:exit_code() == nil then
    self:kill("TERM")
    local code = self:wait(timeout or 20)
    if code then return code end
    for _, w in ipairs(self:workers()) do core.process.kill(w, "KILL") end
    self:kill("KILL")
  end
  return self:wait(5)
end

local cleanups = {}

--- Run fn() at the end of the scenario, whatever happens (a cluster to
-- remove, a setting to undo).
function lib.on_cleanup(fn) cleanups[#cleanups + 1] = fn end

--- Kill whatever is still running and run the cleanups (end of a
-- scenario, or an error).
function lib.stop_all()
  for _, p in ipairs(procs) do
    if p:exit_code() == nil and lib.alive(p.pid) then
      for _, w in ipairs(p:workers()) do core.process.kill(w, "KILL") end
      p:kill("KILL")
    end
  end
  for i = #cleanups, 1, -1 do
    pcall(cleanups[i])
    cleanups[i] = nil
  end
end

function lib.alive(pid)
  local stat = lib.read_file("/proc/" .. pid .. "/stat")
  local state = stat and stat:match("^.*%) (%S)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

---------------------------------------------------------------------------
-- the record of runs
---------------------------------------------------------------------------

local Records = {}
Records.__index = Records

--- A reader of the record directory `dir`: read() picks up new lines.
function lib.records(dir)
  return setmetatable({ dir = dir, offsets = {}, runs = {}, by_id = {}, seen = 0 }, Records)
end

function Records:read()
  local files = lib.sh("ls " .. lib.q(self.dir))
  local t = lib.now()
  for file in files:gmatch("[^\n]+") do
    if file:match("^%d+%.log$") then
      local path = self.dir .. "/" .. file
      local f = io.open(path, "rb")
      if f then
        f:seek("set", self.offsets[path] or 0)
        local data = f:read("a")
        -- only whole lines: a write may be in progress
        local upto = data:match("^.*()\n")
        if upto then
          for line in data:sub(1, upto):gmatch("[^\n]+") do
            local id, attempt, pid, start, run_at, seq = line:match("^(%d+) (%d+) (%d+) (%S+) (%S+) (%S+)$")
            if id then
              local r = { id = tonumber(id), attempt = tonumber(attempt), pid = tonumber(pid),
                start = tonumber(start), run_at = tonumber(run_at), seq = tonumber(seq),
                seen = t }
              self.runs[#self.runs + 1] = r
              local list = self.by_id[r.id]
              if not list then
                list = {}
                self.by_id[r.id] = list
                self.seen = self.seen + 1
              end
              list[#list + 1] = r
            end
          end
          self.offsets[path] = (self.offsets[path] or 0) + upto
        end
        f:close()
      end
    end
  end
  return self
end

--- The first run of job `id` that started after time t, waiting up to
-- `timeout` seconds for it; nil if none.
function Records:run_after(id, t, timeout)
  return lib.wait_for(function()
    self:read()
    for _, run in ipairs(self.by_id[id] or {}) do
      if run.start > t then return run end
    end
  end, timeout, 0.01)
end

--- Wait until every id in `ids` ran at least once (or `timeout` s).
function Records:wait_all(ids, timeout)
  return lib.wait_for(function()
    self:read()
    for _, id in ipairs(ids) do
      if not self.by_id[id] then return false end
    end
    return true
  end, timeout, 0.25)
end

--- Lost ids (never ran) among `ids`, and for every id that ran more than
-- once its runs in start order.
function Records:check(ids)
  local lost, dups = {}, {}
  for _, id in ipairs(ids) do
    local runs = self.by_id[id]
    if not runs then
      lost[#lost + 1] = id
    elseif #runs > 1 then
      table.sort(runs, function(a, b) return a.start < b.start end)
      dups[#dups + 1] = runs
    end
  end
  return lost, dups
end

--- The most of `runs` (Records runs) in progress at once: each lasts `length` seconds
-- from its start, or ends earlier at `cut(run)` when that returns a time
-- within it (its worker's kill); an end and a start at the same instant do
-- not overlap (spec/support/overlap.lua, the sweep the specs and the
-- benchmark use too).  Also returns the latest end.
function lib.most_at_once(runs, length, cut)
  local intervals, last = {}, -math.huge
  for _, run in ipairs(runs) do
    local stop = run.start + length
    local t = cut and cut(run)
    if t and t > run.start and t < stop then stop = t end
    intervals[#intervals + 1] = { run.start, stop }
    last = math.max(last, stop)
  end
  return overlap(intervals), last
end

--- For Result:count, the runs of a job that ran more than once explained
-- by kills (`killed`: worker pid -> when it was killed): every run but the
-- last was in flight in a worker killed after it began (a worker runs on
-- for an instant after kill(2) returns: runs it starts within KILL_LAG of
-- the kill count as before it).
lib.KILL_LAG = 0.01
function lib.in_flight_at_kill(killed)
  return function(runs)
    for i = 1, #runs - 1 do
      local t = killed[runs[i].pid]
      if not (t and runs[i].start < t + lib.KILL_LAG and runs[i + 1].start > t) then return nil end
    end
    return "in flight at a kill"
  end
end

--- The same for restarts of the server (`restarts`: a list of { t_begin,
-- t_end }): every run but the last began before a restart ended and the
-- next one after it began (a batch in hand when the server went away: its
-- transaction, row locks and outcomes, died with the connection).
function lib.cut_by_restart(restarts, why)
  return function(runs)
    for i = 1, #runs - 1 do
      local a, b = runs[i], runs[i + 1]
      local explained = false
      for _, x in ipairs(restarts) do
        if a.start < x.t_end and b.start > x.t_begin then explained = true end
      end
      if not explained then return nil end
    end
    return why
  end
end

---------------------------------------------------------------------------
-- statistics
---------------------------------------------------------------------------

--- p50/p99/max of a list of numbers (seconds), as milliseconds.
function lib.spread(values)
  if #values == 0 then return nil end
  local s = table.move(values, 1, #values, 1, {})
  table.sort(s)
  local function pct(p) return s[math.max(1, math.min(#s, math.ceil(p / 100 * #s)))] * 1000 end
  return { p50 = pct(50), p99 = pct(99), max = s[#s] * 1000, n = #s }
end

function lib.fmt_spread(sp)
  if not sp then return "-" end
  return ("%.1f / %.1f / %.1f ms"):format(sp.p50, sp.p99, sp.max)
end

function lib.commas(n)
  local s = string.format("%.0f", n)
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

return lib
