-- spec/support/cli_helper.lua: running the real `lua-scheduler` executable
-- for spec/cli_spec.lua, as a user would: `lua5.4 bin/lua-scheduler ...` in a
-- subprocess, with the environment of `make test` (LUA_PATH, LUA_CPATH,
-- LUA_SCHEDULER_DATABASE).
--
--   cli.exec(args [, opts])   run to completion: { code, out, err }
--   cli.start(args [, opts])  run in the background: a Cmd (see below);
--                             helper.cleanup() stops it and its workers
--   cli.listener_file(path, spec)  write a listener file that records what
--                             it runs (see the template below)
local helper = require "spec.helper"

local cli = {}

cli.BIN = "bin/lua-scheduler"

local shquote = helper.shquote

local function command_line(args, opts)
  local parts = {}
  if opts and opts.env then
    parts[#parts + 1] = "env"
    for _, name in ipairs(opts.unset or {}) do parts[#parts + 1] = "-u " .. shquote(name) end
    for k, v in pairs(opts.env) do parts[#parts + 1] = shquote(k .. "=" .. v) end
  elseif opts and opts.unset then
    parts[#parts + 1] = "env"
    for _, name in ipairs(opts.unset) do parts[#parts + 1] = "-u " .. shquote(name) end
  end
  parts[#parts + 1] = shquote(helper.LUA)
  parts[#parts + 1] = shquote(cli.BIN)
  for _, a in ipairs(args) do parts[#parts + 1] = shquote(a) end
  return table.concat(parts, " ")
end

--- Run `lua-scheduler args...` and wait: returns { code =, out =, err = }.
-- opts.env: variables to set; opts.unset: names to remove.
function cli.exec(args, opts)
  local dir = helper.tmpdir()
  local cmd = ("%s </dev/null >%s 2>%s; echo $?"):format(command_line(args, opts),
    shquote(dir .. "/out"), shquote(dir .. "/err"))
  local status = helper.sh(cmd)
  return {
    code = tonumber(status:match("(%d+)")),
    out = helper.read_file(dir .. "/out") or "",
    err = helper.read_file(dir .. "/err") or "",
  }
end

--- A description for assertion messages.
function cli.describe(r)
  return ("exit %s\n--- stdout:\n%s\n--- stderr:\n%s"):format(tostring(r.code), r.out, r.err)
end

local Cmd = {}
Cmd.__index = Cmd

cli.started = {}

--- Start `lua-scheduler args...` in the background; its stdout and stderr
-- go to files, its exit status to DIR/exit.  Returns a Cmd.
function cli.start(args, opts)
  local dir = helper.tmpdir()
  -- the inner shell records the pid at once and the exit status at the end
  local inner = ("%s & echo $! > %s; wait $!; echo $? > %s && mv %s %s"):format(
    command_line(args, opts), shquote(dir .. "/pid"),
    shquote(dir .. "/exit.tmp"), shquote(dir .. "/exit.tmp"), shquote(dir .. "/exit"))
  helper.sh(("sh -c %s </dev/null >%s 2>%s &"):format(shquote(inner), shquote(dir .. "/out"),
    shquote(dir .. "/err")))
  local c = setmetatable({ dir = dir, args = args }, Cmd)
  cli.started[#cli.started + 1] = c
  c.pid = helper.wait_for(function()
    local s = helper.read_file(dir .. "/pid")
    return s and tonumber(s:match("%d+"))
  end, 10)
  assert(c.pid, "lua-scheduler did not start")
  return c
end

function Cmd:out() return helper.read_file(self.dir .. "/out") or "" end
function Cmd:err() return helper.read_file(self.dir .. "/err") or "" end

--- The exit status (128+N when killed by signal N), or nil while running.
function Cmd:exit_code()
  local s = helper.read_file(self.dir .. "/exit")
  return s and tonumber(s:match("%d+"))
end

--- Wait up to `timeout` seconds for the exit; returns the status or nil.
function Cmd:wait(timeout)
  return helper.wait_for(function() return self:exit_code() end, timeout or 10)
end

function Cmd:kill(sig)
  return helper.kill(self.pid, sig)
end

--- The live worker processes (children of the supervisor).
function Cmd:workers()
  local out = {}
  for _, pid in ipairs(helper.children(self.pid)) do
    if helper.alive(pid) then out[#out + 1] = pid end
  end
  table.sort(out)
  return out
end

--- Wait until stderr contains `needle` `count` times (default 1); returns
-- true or false.
function Cmd:wait_log(needle, count, timeout)
  return helper.wait_for(function()
    local n = 0
    local pattern = needle:gsub("%p", "%%%0")
    for _ in self:err():gmatch(pattern) do n = n + 1 end
    return n >= (count or 1)
  end, timeout or 10) and true or false
end

function Cmd:describe()
  return ("lua-scheduler %s (pid %s, exit %s)\n--- stdout:\n%s\n--- stderr:\n%s"):format(
    table.concat(self.args, " "), tostring(self.pid), tostring(self:exit_code()), self:out(), self:err())
end

--- Stop it and every worker: a graceful stop, then a forced one (the
-- supervisor kills and reaps its workers), then SIGKILL for anything left.
function Cmd:destroy()
  if self:exit_code() ~= nil then return end
  if helper.alive(self.pid) then
    self:kill("TERM")
    if not self:wait(3) then
      self:kill("TERM")
      self:wait(3)
    end
  end
  if self:exit_code() == nil then
    for _, pid in ipairs(helper.children(self.pid)) do helper.kill(pid, "KILL") end
    helper.kill(self.pid, "KILL")
    self:wait(3)
  end
end

--- Stop everything cli.start started (call from after_each, before
-- helper.cleanup, which removes the directories).
function cli.cleanup()
  for i = #cli.started, 1, -1 do
    pcall(Cmd.destroy, cli.started[i])
    cli.started[i] = nil
  end
end

-- A listener file for `name` that appends "<id> <pid> <event> <attempt>
-- <tag>" lines (event start/done) to `results`, unbuffered.  A table payload
-- may hold: sleep (seconds, every attempt), wait (seconds, waited with
-- cqueues.sleep: under --concurrency), sleep_first (seconds, attempt 1
-- only), barrier = { dir = D, n = N } (after starting, wait up to 10 s until
-- N distinct processes have started a job).  spec: { name =, results =,
-- tag = (default "v1"), form = "on" | "table", extra = Lua code prepended }.
local TEMPLATE = [[
local scheduler = require "scheduler"
local system = require "system"
%s
local results = assert(io.open(%q, "a"))
results:setvbuf("no")
local f = assert(io.open("/proc/self/stat"))
local PID = tonumber(f:read("a"):match("^(%%d+)"))
f:close()
local function sleep(s)
  local deadline = system.gettime() + s
  while system.gettime() < deadline do system.sleep(0.02) end
end
local function distinct_starts()
  local seen, n = {}, 0
  local r = io.open(%q)
  for line in (r and r:read("a") or ""):gmatch("[^\n]+") do
    local pid, event = line:match("^%%d+ (%%d+) (%%a+)")
    if event == "start" and not seen[pid] then seen[pid] = true; n = n + 1 end
  end
  if r then r:close() end
  return n
end
local function listener(payload, job)
  results:write(("%%d %%d start %%d %%s\n"):format(job.id, PID, job.attempt, %q))
  if type(payload) == "table" then
    if payload.sleep then sleep(payload.sleep) end
    if payload.wait then require("cqueues").sleep(payload.wait) end
    if payload.sleep_first and job.attempt == 1 then sleep(payload.sleep_first) end
    if payload.barrier then
      local deadline = system.gettime() + 10
      while distinct_starts() < payload.barrier and system.gettime() < deadline do sleep(0.02) end
    end
  end
  results:write(("%%d %%d done %%d %%s\n"):format(job.id, PID, job.attempt, %q))
end
]]

function cli.listener_file(path, spec)
  local tag = spec.tag or "v1"
  local body = TEMPLATE:format(spec.extra or "", spec.results, spec.results, tag, tag)
  if spec.form == "table" then
    body = body .. ("return { [%q] = listener }\n"):format(spec.name)
  else
    body = body .. ("scheduler.on(%q, listener)\n"):format(spec.name)
  end
  helper.write_file(path, body)
end

--- stderr without the line every command that uses a database starts with
--- ("lua-scheduler: database sqlite:/... (from LUA_SCHEDULER_DATABASE)").
function cli.after_db_line(err)
  return (err:gsub("^lua%-scheduler: database [^\n]*\n", "", 1))
end

--- Parse a results file: list of { id, pid, event, attempt, tag }.
function cli.results(path)
  local out = {}
  for line in (helper.read_file(path) or ""):gmatch("[^\n]+") do
    local id, pid, event, attempt, tag = line:match("^(%d+) (%d+) (%a+) (%d+) (%S+)")
    if id then
      out[#out + 1] = { id = math.tointeger(tonumber(id)), pid = tonumber(pid), event = event,
        attempt = tonumber(attempt), tag = tag }
    end
  end
  return out
end

--- The results of one event (optionally for one job id).
function cli.events(path, event, id)
  local out = {}
  for _, r in ipairs(cli.results(path)) do
    if r.event == event and (id == nil or r.id == id) then out[#out + 1] = r end
  end
  return out
end

--- The JSON text s decoded (JSON null as json.null), or an error naming it.
function cli.decode(s)
  local v, _, err = require("dkjson").decode(s, 1, require("dkjson").null)
  if err then error("not JSON: " .. err .. "\n" .. s, 2) end
  return v
end

return cli
