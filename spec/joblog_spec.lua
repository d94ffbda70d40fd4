-- Per-job log lines (issue 17, item 4): a job's start (debug) and end
-- (debug for a success; warn/error for a failure, as before) carry the job
-- id, name, attempt, duration and outcome as fields; `run --log-format
-- json` puts them in each line's object, next to the worker; the text line
-- says the same.  At concurrency 1 (csrc/loop.c) and above (concurrent.lua).
-- The lines of successes are built only when the log wants debug lines:
-- a log function that did not ask for them is never called for them.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"

local decode = cli.decode

-- A listener file: each call is recorded in `results` ("<id> <attempt>"),
-- the independent record; payload "fail" raises (max_attempts 1: it fails
-- at once, at level error).
local function listener_file(path, name, results)
  helper.write_file(path, ([[
local scheduler = require "scheduler"
scheduler.on(%q, function(payload, job)
  local f = assert(io.open(%q, "a"))
  f:write(("%%d %%d\n"):format(job.id, job.attempt))
  f:close()
  if payload == "fail" then error("boom on purpose\nsecond line") end
end, { max_attempts = 1 })
]]):format(name, results))
end

local function ran(results)
  local n = 0
  for _ in (helper.read_file(results) or ""):gmatch("[^\n]+") do n = n + 1 end
  return n
end

describe("per-job log lines", function()
  local dir, name, results, file

  before_each(function()
    dir = helper.tmpdir()
    name = helper.name("JobLog")
    results = dir .. "/results"
    file = dir .. "/listeners.lua"
    listener_file(file, name, results)
  end)

  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  -- Run `run args... file` until the two jobs (one fine, one failing) ran
  -- and the failure was logged; stop it; the JSON lines of its stderr.
  local function run_two(args)
    local s = helper.new()
    local ok_id = helper.schedule(s, name, "fine")
    local bad_id = helper.schedule(s, name, "fail")
    s:close()
    local argv = { "run" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    argv[#argv + 1] = file
    local c = cli.start(argv)
    assert.is_true(c:wait_log("failed on its last attempt", 1, 15), c:describe())
    assert.is_truthy(helper.wait_for(function() return ran(results) >= 2 end, 10), c:describe())
    c:kill("TERM")
    assert.equals(0, c:wait(10), c:describe())
    return c, ok_id, bad_id
  end

  local function json_lines(c)
    local lines = {}
    for line in c:err():gmatch("[^\n]+") do lines[#lines + 1] = decode(line) end
    return lines
  end

  local function of_job(lines, id)
    local out = {}
    for _, l in ipairs(lines) do if l.job_id == id then out[#out + 1] = l end end
    return out
  end

  for _, concurrency in ipairs { 1, 3 } do
    it(("--log-level debug --log-format json: start and end of each job as fields (concurrency %d)")
      :format(concurrency), function()
      local c, ok_id, bad_id = run_two { "--log-format", "json", "--log-level", "debug",
        "--concurrency", tostring(concurrency) }
      assert.equals(2, ran(results), "each job ran once")
      local lines = json_lines(c)
      local ok_lines, bad_lines = of_job(lines, ok_id), of_job(lines, bad_id)
      assert.equals(2, #ok_lines, c:describe())
      assert.equals(2, #bad_lines, c:describe())
      local start, done = ok_lines[1], ok_lines[2]
      assert.equals("job_start", start.event)
      assert.equals("debug", start.level)
      assert.equals(name, start.job_name)
      assert.equals(1, start.attempt)
      assert.equals("worker", start.process)
      assert.equals(1, start.worker)
      assert.matches("^.+:%d+:%x+$", start.worker_id)
      assert.is_nil(start.duration)
      assert.equals("job_end", done.event)
      assert.equals("debug", done.level)
      assert.equals("done", done.outcome)
      assert.equals(1, done.attempt)
      assert.equals(start.worker_id, done.worker_id)
      assert.is_number(done.duration)
      assert.is_true(done.duration >= 0 and done.duration < 10, tostring(done.duration))
      assert.matches(("job %d (%s) done in"):format(ok_id, name), done.message, 1, true)
      local failed = bad_lines[2]
      assert.equals("job_end", failed.event)
      assert.equals("error", failed.level)
      assert.equals("failed", failed.outcome)
      assert.equals(1, failed.attempt)
      assert.is_number(failed.duration)
      -- the first line of the error, not its traceback
      assert.matches("boom on purpose", failed.message, 1, true)
      assert.is_nil(failed.message:find("second line", 1, true))
    end)
  end

  it("at the default level (info): no line for a start or a success; a failure's line has the fields", function()
    local c, ok_id, bad_id = run_two { "--log-format", "json", "--concurrency", "1" }
    local lines = json_lines(c)
    assert.equals(0, #of_job(lines, ok_id), c:describe())
    local bad = of_job(lines, bad_id)
    assert.equals(1, #bad, c:describe())
    assert.equals("failed", bad[1].outcome)
    assert.equals(name, bad[1].job_name)
    for _, l in ipairs(lines) do assert.is_nil(l.event == "job_start" or nil, c:describe()) end
  end)

  it("text format: the same lines, readable", function()
    local c, ok_id, bad_id = run_two { "--log-level", "debug" }
    local err = c:err()
    assert.matches(("debug [worker 1 "):format(), err, 1, true)
    assert.matches(("job %d (%s) started, attempt 1"):format(ok_id, name), err, 1, true)
    local done = ("job %d (%s) done in "):format(ok_id, name)
    local at = err:find(done, 1, true)
    assert.is_truthy(at, err)
    assert.matches("^%d+%.%d+ s, attempt 1\n", err:sub(at + #done))
    assert.matches(("job %d (%s) failed on its last attempt (1) after"):format(bad_id, name), err, 1, true)
  end)

  it("the API: a log function gets the fields; the success lines only with log_level = \"debug\"", function()
    for _, concurrency in ipairs { 1, 2 } do
      for _, level in ipairs { "debug", "info" } do
        local calls = {}
        local s = helper.new { concurrency = concurrency, log_level = level,
          log = function(lvl, msg, fields) calls[#calls + 1] = { lvl, msg, fields } end }
        local seen = 0
        s:on(name, function(payload) seen = seen + 1 if payload == "fail" then error("no") end end,
          { max_attempts = 1 })
        local a = helper.schedule(s, name, "fine")
        local b = helper.schedule(s, name, "fail")
        if concurrency == 1 then
          assert.equals(2, s:run { drain = true })
        else
          assert(s:start())
          assert.is_truthy(helper.wait_for(function()
            s:step(0.05)
            return seen == 2 and #calls >= (level == "debug" and 4 or 1)
          end, 10))
          s:stop()
          while s:step(0.05) do end
        end
        local by = {}
        for _, call in ipairs(calls) do
          local f = call[3]
          if f then
            assert.equals(s._worker_id, f.worker_id)
            by[#by + 1] = ("%s %d %s %s"):format(call[1], f.job_id, f.event, f.outcome or "-")
          end
        end
        table.sort(by)
        local want = level == "debug" and {
          ("debug %d job_end done"):format(a), ("debug %d job_start -"):format(a),
          ("debug %d job_start -"):format(b), ("error %d job_end failed"):format(b) }
          or { ("error %d job_end failed"):format(b) }
        table.sort(want)
        assert.same(want, by, ("concurrency %d, log_level %s"):format(concurrency, level))
        s:close()
      end
    end
  end)
end)
