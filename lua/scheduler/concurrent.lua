--- scheduler.concurrent: the Lua half of a worker that runs several
-- listeners at once, each job in its own coroutine (the instance's
-- `concurrency` option).  The database half is a thread of the C core
-- (csrc/fetcher.h): it claims jobs for the free slots, renews their
-- leases and records their outcomes, so nothing here waits for the
-- database.  This module turns the jobs it claimed into listener calls,
-- started by the host loop's `spawn` function (scheduler.cqueues,
-- scheduler.luv), and hands their outcomes back.  Used through the
-- instance: s:step(), s:pollfd(), s:events(), s:timeout().

local core = require "scheduler.core"

local monotonic = core.process.monotonic

local M = {}

--- Recurring schedules become jobs this long before their slot (as in
-- csrc/loop.c's TICK_AHEAD); they are looked at at most once per TICK_EVERY
-- seconds while one is due.
local TICK_AHEAD = 1.0
local TICK_EVERY = 1.0

--- The default spawn: run fn in a new coroutine until it first yields; a
-- listener that waits resumes its coroutine from its own callbacks (luv,
-- or any loop the host drives).
local function spawn_coroutine(fn)
  local co = coroutine.create(fn)
  local ok, err = coroutine.resume(co)
  if not ok then error(err, 0) end
end

local function timeout_message(limit)
  -- the text of the time limit hook in csrc/dispatch.c
  return ("timeout: listener ran longer than %ss"):format(("%.14g"):format(limit))
end

--- Job e's listener returned (ok) or raised err: its outcome goes to the
-- fetcher, unless it was already ended (its time limit passed while it
-- waited).
local function land(f, e, ok, err)
  if e.ended then return end
  e.ended = true
  f.inflight[e] = nil
  f.n = f.n - 1
  local outcome, retry_in
  if e.keep then -- history: when it started and how long it ran
    outcome, retry_in = f.c:fetch_done(e.id, e.token, e.attempt, e.max, ok, err, e.keep,
      e.wall, monotonic() - e.started)
  else
    outcome, retry_in = f.c:fetch_done(e.id, e.token, e.attempt, e.max, ok, err)
  end
  -- the job's end, as csrc/loop.c logs it at concurrency 1: a failure
  -- and a snooze always, a success only when the log wants debug lines
  if f.log and (outcome ~= "done" or f.log_debug) then
    local took = monotonic() - e.started
    local name = e.job.name:sub(1, 80)
    local fields = { event = "job_end", job_id = e.id, name = e.job.name, attempt = e.attempt,
      duration = took, outcome = outcome, worker_id = f.worker_id }
    if outcome == "done" then
      f.log("debug", ("job %d (%s) done in %.3f s, attempt %d"):format(e.id, name, took, e.attempt),
        fields)
    elseif outcome == "snoozed" then
      fields.retry_in = retry_in
      f.log("info", ("job %d (%s) snoozed on attempt %d after %.3f s; again in %.1f s"):format(
        e.id, name, e.attempt, took, retry_in), fields)
    else
      local why = tostring(err):match("^[^\n]*")
      if outcome == "retry" then
        fields.retry_in = retry_in
        f.log("warn", ("job %d (%s) failed on attempt %d after %.3f s; retrying in %.1f s: %s"):format(
          e.id, name, e.attempt, took, retry_in, why), fields)
      else
        f.log("error", ("job %d (%s) failed on its last attempt (%d) after %.3f s: %s"):format(
          e.id, name, e.attempt, took, why), fields)
      end
    end
  end
end

local function job_body(f, e)
  local c = f.c
  if c:fetch_paused(e.job.name) then
    -- its name was paused since the claim (csrc/fetcher.h, fetcher_paused),
    -- and its turn came only now: it does not start, and goes back
    -- unattempted
    if not e.ended then
      e.ended = true
      f.inflight[e] = nil
      f.n = f.n - 1
      c:fetch_release(e.id, e.token)
    end
    return
  end
  local function listener()
    if e.limit > 0 then c:guard(e.limit) end
    local ok, err = xpcall(e.fn, f.handler, e.payload, e.job)
    if e.limit > 0 then c:unguard() end
    return ok, err
  end
  if f.call then
    -- the adapter's relay may fail itself (out of memory): the job must
    -- still land, or stop() would wait for it forever
    local r = table.pack(pcall(f.call, listener, e.deadline))
    if not r[1] then
      land(f, e, false, r[2])
    elseif r.n == 1 then
      land(f, e, false, timeout_message(e.limit)) -- abandoned while it waited
    else
      land(f, e, r[2], r[3])
    end
  else
    land(f, e, listener())
  end
end

--- Start the concurrent worker of scheduler instance `s` (its core `c`):
-- o.spawn(fn) starts a job's function (default: a plain coroutine);
-- o.release(fd), if given, is called before the worker's descriptor
-- closes; o.call(fn, deadline), if given, calls a listener so that it can
-- be abandoned when its deadline (monotonic) passes while it waits
-- (returning nothing then).  Returns true, or nil and an error message.
function M.start(s, c, concurrency, o, log)
  local ok, err = c:fetch_start(concurrency)
  if not ok then return nil, err end
  s._flight = {
    c = c, spawn = o.spawn or spawn_coroutine, release = o.release, call = o.call, log = log,
    log_debug = s._log_debug, worker_id = s._worker_id,
    waiter = o.waiter, waiting = {}, n_waiting = 0, handler = c:handler(),
    inflight = {}, n = 0, next_tick = nil, last_tick = -math.huge, stopping = false,
  }
  return true
end

--- Seconds until step() has work of its own (a job's time limit, a job
-- held for its rate's token, a recurring schedule), or nil.
function M.timeout(s)
  local f = s._flight
  if not f then return nil end
  local now, t = monotonic(), nil
  for e in pairs(f.inflight) do
    if e.deadline and (not t or e.deadline < t) then t = e.deadline end
  end
  if f.next_tick and not f.stopping then
    local tick = math.max(f.next_tick, f.last_tick + TICK_EVERY)
    if not t or tick < t then t = tick end
  end
  -- a job claimed ahead of its rate's token starts then (csrc/fetcher.h)
  local held = f.c:fetch_next_start()
  if held and (not t or now + held < t) then t = now + held end
  return t and math.max(0, t - now) or nil
end

--- Do what is ready: log the fetcher's news, turn due recurring schedules
-- into jobs, start the jobs it claimed, end those past their time limit.
-- Waits up to `timeout` seconds (default 0) for something to be ready.
-- Returns true while the worker runs, false once it has stopped and
-- everything is recorded (the instance can then run again or close).
function M.step(s, timeout)
  local f = s._flight
  if not f then return false end
  local c = f.c
  if timeout and timeout > 0 then
    local t = M.timeout(s)
    c:fetch_wait(t and math.min(t, timeout) or timeout)
  end
  local level, msg, cron_in = c:fetch_news()
  if level and f.log then f.log(level, msg) end
  local now = monotonic()
  f.next_tick = cron_in and now + cron_in - TICK_AHEAD or nil
  if f.next_tick and not f.stopping and now >= f.next_tick and now >= f.last_tick + TICK_EVERY then
    f.last_tick = now
    c:fetch_tick(TICK_AHEAD)
  end
  local answers = c:fetch_answers()
  for i = 1, #answers do
    local a = answers[i]
    local w = f.waiting[a[1]]
    if w then
      f.waiting[a[1]] = nil
      f.n_waiting = f.n_waiting - 1
      w.answer = a
      w.wake()
    end
  end
  local entries = c:fetch_take()
  for i = 1, #entries do
    local e = entries[i]
    f.inflight[e] = true
    f.n = f.n + 1
    if e.limit > 0 then e.deadline = now + e.limit end
    if f.log_debug and f.log then
      f.log("debug", ("job %d (%s) started, attempt %d"):format(e.id, e.job.name:sub(1, 80), e.attempt),
        { event = "job_start", job_id = e.id, name = e.job.name, attempt = e.attempt,
          worker_id = f.worker_id })
    end
    e.started = monotonic()
    f.spawn(function() job_body(f, e) end)
  end
  now = monotonic()
  for e in pairs(f.inflight) do
    -- waiting past its limit (its I/O never answered): it ends now; its
    -- coroutine, if it is ever resumed, raises at once (csrc/dispatch.c)
    if e.deadline and now > e.deadline then land(f, e, false, timeout_message(e.limit)) end
  end
  if f.stopping and f.n == 0 and f.n_waiting == 0 and c:fetch_settled() then
    local _, last = c:fetch_news()
    if last and f.log then f.log("warn", last) end
    -- the loop lets go of the descriptor before it is closed
    if f.release then f.release(c:fetch_fd()) end
    c:fetch_close()
    s._flight = nil
    return false
  end
  return true
end

--- schedule() from a coroutine of the loop: the fetcher sends it, and the
-- coroutine waits (f.waiter) until step() has its answer.  Returns what
-- schedule() returns.
function M.schedule(s, ...)
  local f = s._flight
  local seq = f.c:fetch_schedule(...)
  local w = f.waiter()
  f.waiting[seq] = w
  f.n_waiting = f.n_waiting + 1
  w.wait()
  local a = w.answer
  if not a then return nil, "scheduler: schedule: the worker stopped before the answer came" end
  if a[2] then return a[2] end
  return nil, a[3]
end

--- Stop gracefully: claim nothing more, hand back what was claimed and
-- not started, let the jobs in flight end; step() then returns false.
function M.stop(s)
  local f = s._flight
  if f then f.stopping = true end
end

return M
