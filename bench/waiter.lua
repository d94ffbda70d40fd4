-- bench/waiter.lua: the worker process of the benchmark's waiting rows
-- (issue 18), spawned by bench/concurrent.lua as
-- `lua5.4 bench/waiter.lua MODE name=N count=K concurrency=C [url=U] [seconds=S]`.
--
-- One instance with `concurrency = C`, attached to a cqueues loop of its
-- own (scheduler.cqueues, the issue's contract), runs the K jobs named N
-- (already inserted, due now), each listener waiting without blocking:
--   timer   cqueues.sleep(0.1)
--   http    a GET of U with lua-http's client (http.request: a new
--           connection each, closed once the body is read)
-- and stops once K listeners have ended (or after S seconds).
--
-- Its own record, independent of the scheduler's counts: each listener
-- notes its job's id when it ends, and the times of the first start and
-- the last end.  Prints one line:
--   RESULT ran=K dup=D errors=E t_first=T t_last=T rss_kb=R cpu_s=S most=M
-- (dup: ends of a job id already seen; errors: listeners that raised
-- (then retried by policy: they end again later); most: listeners in
-- flight at once, at most).  Errors go to stderr and exit non-zero.

local scheduler = require "scheduler"
local opt, num, result, proc = dofile((arg[0]:match("^(.*)/") or ".") .. "/child.lua")("waiter")
local cqueues = require "cqueues"
local now = scheduler.now

local mode = arg[1]
local name = assert(opt.name, "waiter: name= is required")
local count = math.tointeger(num("count"))
local concurrency = math.tointeger(num("concurrency"))
local seconds = num("seconds", 600)

local wait
if mode == "timer" then
  wait = function() cqueues.sleep(0.1) end
elseif mode == "http" then
  proc.use_lua_http()
  local request = require "http.request"
  local url = assert(opt.url, "waiter: url= is required")
  wait = function()
    local headers, stream = request.new_from_uri(url):go(30)
    if not headers then error("GET " .. url .. ": " .. tostring(stream), 0) end
    -- (the request's connection is its own: lua-http closes it once the
    -- body is read)
    local body, err = stream:get_body_as_string(30)
    if not body then error("GET " .. url .. ": body: " .. tostring(err), 0) end
    if headers:get(":status") ~= "200" or body ~= "ok" then
      error("GET " .. url .. ": status " .. tostring(headers:get(":status")), 0)
    end
  end
else
  io.stderr:write("waiter: unknown mode ", tostring(mode), "\n")
  os.exit(2)
end

local s = scheduler.new { log = "warn", concurrency = concurrency }
local seen, ran, dup, errors = {}, 0, 0, 0
local t_first, t_last
local inflight, most = 0, 0
local done = require("cqueues.condition").new()

s:on(name, function(_, job)
  local t = now()
  if not t_first then t_first = t end
  inflight = inflight + 1
  if inflight > most then most = inflight end
  local ok, err = pcall(wait)
  inflight = inflight - 1
  if not ok then
    errors = errors + 1
    if errors <= 5 then io.stderr:write("waiter: job ", job.id, ": ", tostring(err), "\n") end
    error(err, 0)
  end
  t_last = now()
  if seen[job.id] then dup = dup + 1 end
  seen[job.id] = true
  ran = ran + 1
  if ran == count then
    s:stop()
    done:signal()
  end
end)

local cq = cqueues.new()
require("scheduler.cqueues").attach(s, cq)
-- the bound on the run: stop (gracefully) if the jobs are not done by then
cq:wrap(function()
  if not done:wait(seconds) then
    io.stderr:write(string.format("waiter: %d of %d jobs ended within %g s\n", ran, count, seconds))
    s:stop()
  end
end)
local ok, err = cq:loop()
if not ok then error("waiter: the loop failed: " .. tostring(err)) end
s:close()
result {
  ran = ran, dup = dup, errors = errors, most = most,
  t_first = t_first or -1.0, t_last = t_last or -1.0,
  rss_kb = proc.rss_kb(), cpu_s = proc.cpu_seconds(),
}
