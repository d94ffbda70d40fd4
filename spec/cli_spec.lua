-- The `lua-scheduler` command, end to end: the real executable
-- (bin/lua-scheduler) in a subprocess against the test database, as a user
-- runs it.  Exit status: 0 success, 1 runtime failure, 2 usage error.  Every
-- process started here is stopped by cli.cleanup() (workers included).
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"
local json = require "dkjson"

local decode = cli.decode

local function exec(...) return cli.exec({ ... }) end

-- An exit status, with the output on failure.
local function assert_exit(code, r)
  assert.equals(code, r.code, cli.describe(r))
end

-- A usage error: exit 2, nothing on stdout, the message (every needle)
-- and the usage on stderr.
local function assert_usage(r, ...)
  assert_exit(2, r)
  assert.equals("", r.out, cli.describe(r))
  for i = 1, select("#", ...) do
    local needle = select(i, ...)
    assert.is_truthy(r.err:find(needle, 1, true), ("stderr lacks %q\n%s"):format(needle, cli.describe(r)))
  end
end

local after_db_line = cli.after_db_line

local function id_of(r)
  assert_exit(0, r)
  return assert(math.tointeger(tonumber(r.out:match("^(%d+)\n$"))), cli.describe(r))
end

-- The job as the API sees it (works on every backend), with due_in:
-- seconds until run_at on this host's clock (the database's, here).
local function job_row(id)
  local s = helper.new()
  local j, err = s:job(id)
  s:close()
  if err then error(err, 2) end
  if not j then return nil end
  j.due_in = j.run_at - helper.now()
  return j
end

local JOB_KEYS = { "attempt", "attempts_allowed", "attempts_allowed_from", "created_at", "id", "key",
  "last_error", "locked_by", "locked_until", "max_attempts", "name", "payload", "priority", "run_at", "state" }

local function keys_of(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("lua-scheduler", function()
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  -- #slow: the memory run (.ci/run) leaves these out: each check starts
  -- the command anew (under ASan, a second or more each), and the paths
  -- they take through the C core are the API's, which the other specs
  -- take in-process; the `run` tests below stay in it (the supervisor)
  describe("command line #slow", function()
    it("has --help at every level (stdout, exit 0) and --version", function()
      local r = exec("--help")
      assert_exit(0, r)
      assert.matches("Usage: lua%-scheduler %[%-%-database URL%] COMMAND", r.out)
      assert.equals("", r.err)
      for _, cmd in ipairs { "run", "schedule", "jobs", "show", "cancel", "retry", "stats", "migrate" } do
        assert.matches("%f[%w]" .. cmd .. "%f[%W]", r.out)
        local h = exec(cmd, "--help")
        assert_exit(0, h)
        assert.is_truthy(h.out:find("Usage: lua-scheduler " .. cmd, 1, true), cli.describe(h))
        assert.is_truthy(h.out:find("--help", 1, true))
        assert.equals("", h.err)
      end
      local h = exec("cron", "--help")
      assert_exit(0, h)
      assert.matches("next", h.out)
      h = exec("cron", "next", "-h")
      assert_exit(0, h)
      assert.matches("Usage: lua%-scheduler cron next EXPR", h.out)
      -- help wins over anything else on the line
      assert_exit(0, exec("schedule", "--bogus", "--help"))

      local v = exec("--version")
      assert_exit(0, v)
      assert.matches("^lua%-scheduler %d+%.%d+%.%d+\n$", v.out)
    end)

    it("exits 2 with the usage for a missing or unknown command or flag", function()
      assert_usage(exec(), "missing COMMAND", "Usage: lua-scheduler")
      assert_usage(exec("frobnicate"), 'unknown command "frobnicate"', "Usage: lua-scheduler")
      assert_usage(exec("--frob"), "unknown option --frob")
      assert_usage(exec("jobs", "--bogus"), "lua-scheduler jobs: unknown option --bogus",
        "Usage: lua-scheduler jobs", "lua-scheduler jobs --help")
      assert_usage(exec("jobs", "--limit"), "--limit needs a value")
      assert_usage(exec("jobs", "--json=yes"), "--json takes no value")
      assert_usage(exec("jobs", "extra"), 'unexpected argument "extra"')
      assert_usage(exec("show"), "missing ID")
      assert_usage(exec("cron"), "missing subcommand")
      assert_usage(exec("cron", "later"), 'unknown subcommand "later"')
    end)

    it("names a bad TIME, DURATION, number or choice and shows the usage", function()
      assert_usage(exec("schedule", "X", "--at", "tomorrow"), '--at: bad TIME "tomorrow"', "RFC 3339",
        "Usage: lua-scheduler schedule")
      assert_usage(exec("schedule", "X", "--at", "2026-02-30T09:00:00Z"), "day 30 is out of range")
      assert_usage(exec("schedule", "X", "--at", "2026-11-24T09:00:00"), "Z or an offset")
      assert_usage(exec("schedule", "X", "--in", "5 minutes"), '--in: bad DURATION "5 minutes"')
      assert_usage(exec("schedule", "X", "--in", "30m1h"), "order d, h, m, s")
      assert_usage(exec("schedule", "X", "--in", "5m", "--at", "1795942800"), "--at or --in, not both")
      assert_usage(exec("schedule", "X", "--priority", "-1"), '--priority: bad P "-1"')
      assert_usage(exec("schedule", "X", "--max-attempts", "0"), '--max-attempts: bad N "0"')
      assert_usage(exec("schedule", ""), "NAME must not be empty")
      assert_usage(exec("jobs", "--state", "finished"), '--state: bad S "finished"', "scheduled, running, failed, done, cancelled")
      assert_usage(exec("jobs", "--limit", "ten"), '--limit: bad N "ten"')
      assert_usage(exec("show", "12abc"), 'ID: expected a job id (a positive integer), got "12abc"')
      assert_usage(exec("run", "--workers", "0", "x.lua"), '--workers: bad N "0"')
      assert_usage(exec("run", "--log-format", "xml", "x.lua"), '--log-format: bad F "xml"')
      assert_usage(exec("stats", "--interval", "1s"), "--interval goes with --watch")
    end)

    it("exits 2 for a PAYLOAD that is not JSON (a bare word is a string)", function()
      assert_usage(exec("schedule", "X", '{"to": }'), "PAYLOAD is not valid JSON",
        "invalid JSON at byte 7")
      assert_usage(exec("schedule", "X", "[1, 2"), "PAYLOAD is not valid JSON")
      assert_usage(exec("schedule", "X", "12abc"), "PAYLOAD is not valid JSON")
    end)

    it("exits 2 for a NAME, --key or bare-word PAYLOAD that is not valid UTF-8", function()
      assert_usage(exec("schedule", "X\xff"), "NAME is not valid UTF-8")
      assert_usage(exec("schedule", "X", "--key", "k\xc0\xaf"), "--key is not valid UTF-8")
      assert_usage(exec("schedule", "X", "caf\xe9"), "PAYLOAD is not valid UTF-8")
    end)

    it("exits 1 when the database is unreachable, without showing its password", function()
      assert_usage(exec("jobs", "--database", ""), "--database or LUA_SCHEDULER_DATABASE is empty")
      local r = exec("jobs", "--database", "postgresql://nobody:s3cret-pw@127.0.0.1:1/none?connect_timeout=2")
      assert_exit(1, r)
      assert.equals("", r.out)
      assert.matches("^lua%-scheduler: warning: the password in %-%-database is visible", r.err)
      -- the database is named, its password masked
      assert.is_truthy(r.err:find("\nlua-scheduler: database postgresql://nobody:***@127.0.0.1:1/none"
        .. "?connect_timeout=2 (from --database)\n", 1, true), r.err)
      assert.matches("\nlua%-scheduler: jobs: cannot connect to the database", r.err)
      assert.is_falsy(r.err:find("s3cret-pw", 1, true), "the password leaked: " .. r.err)
      r = exec("--database", "host=127.0.0.1 port=1 password=s3cret-pw connect_timeout=2", "stats")
      assert_exit(1, r)
      assert.is_truthy(r.err:find("database host=127.0.0.1 port=1 password=*** connect_timeout=2", 1, true), r.err)
      assert.is_falsy(r.err:find("s3cret-pw", 1, true), "the password leaked: " .. r.err)
    end)

    it("cron next: fire times in a zone, --json, and a bad expression", function()
      local r = exec("cron", "next", "0 9 * * 1-5", "--tz", "Europe/Paris", "--count", "3")
      assert_exit(0, r)
      local lines = {}
      for line in r.out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equals(3, #lines, r.out)
      for _, line in ipairs(lines) do assert.matches("^%d%d%d%d%-%d%d%-%d%dT09:00:00%+0[12]:00$", line) end
      r = exec("cron", "next", "@every 1h", "--count", "2", "--json")
      assert_exit(0, r)
      local list = decode(r.out)
      assert.equals(2, #list)
      assert.equals(3600, list[2].unix - list[1].unix)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:00:00Z$", list[1].time)
      assert_usage(exec("cron", "next", "61 * * * *"), "lua-scheduler cron next:", "61")
    end)

    it("cron list and cron remove: the schedules declared through the API", function()
      local id, name = helper.name("clicron"), helper.name("CliCron")
      local s = helper.new()
      assert.is_true(helper.ok(s:cron(id, "0 3 * * *", name, nil, { tz = "Europe/Paris" })))
      local r = exec("cron", "list")
      assert_exit(0, r)
      assert.matches(id, r.out, 1, true)
      assert.matches("Europe/Paris", r.out, 1, true)
      r = exec("cron", "list", "--json")
      assert_exit(0, r)
      local found
      for _, c in ipairs(decode(r.out)) do
        if c.id == id then found = c end
      end
      assert.is_table(found, r.out)
      assert.equals("0 3 * * *", found.expr)
      assert.equals(name, found.name)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT0[12]:00:00", found.next_at)
      r = exec("cron", "remove", id)
      assert_exit(0, r)
      r = exec("cron", "remove", id)
      assert_exit(1, r)
      assert.matches("no recurring schedule", r.err, 1, true)
      assert_usage(exec("cron", "remove"), "ID")
    end)
  end)

  describe("admin commands #slow", function()
    it("migrate creates or upgrades the schema and prints its version", function()
      local r = exec("migrate")
      assert_exit(0, r)
      local version = helper.sql_int("SELECT max(version) FROM scheduler.migrations")
      assert.equals("schema version " .. version .. "\n", r.out)
      r = exec("migrate", "--json")
      assert_exit(0, r)
      assert.same({ schema_version = version }, decode(r.out))
    end)

    it("schedule prints the id; PAYLOAD, --in, --at, --key, --priority and --max-attempts are stored", function()
      local name = helper.name("cli-schedule")
      local id = id_of(exec("schedule", name, '{"to": "ada@example.com", "n": [1, 2.5]}'))
      local row = assert(job_row(id))
      assert.equals(name, row.name)
      assert.equals("scheduled", row.state)
      assert.same({ to = "ada@example.com", n = { 1, 2.5 } }, row.payload)
      assert.is_true(row.due_in <= 0.01 and row.due_in > -5, tostring(row.due_in))

      id = id_of(exec("schedule", name, "hello", "--in", "1h30m"))
      row = job_row(id)
      assert.equals("hello", row.payload)
      assert.is_true(math.abs(row.due_in - 5400) < 5, tostring(row.due_in))

      id = id_of(exec("schedule", name, "--at", "2031-11-24T10:00:00.250+01:00", "--priority", "3",
        "--max-attempts", "7"))
      row = job_row(id)
      assert.is_nil(row.payload)
      assert.near(1953277200.25, row.run_at, 0.001)
      assert.equals(3, row.priority)
      assert.equals(7, row.max_attempts)

      id = id_of(exec("schedule", name, "42", "--at", "1953277200"))
      assert.equals(1953277200, math.floor(job_row(id).run_at + 0.5))
      assert.equals(42, job_row(id).payload)

      local key = helper.name("cli-key")
      local first = id_of(exec("schedule", name, "--key", key, "--in", "1d"))
      local r = exec("schedule", name, "--key", key, "--in", "2d", "--json")
      assert_exit(0, r)
      assert.same({ id = first }, decode(r.out))
      assert.equals(key, job_row(first).key)
    end)

    it("jobs lists a readable table, filters by --name and --state, and has --json", function()
      local name = helper.name("cli-jobs")
      local due = id_of(exec("schedule", name, '{"a": 1}'))
      local later = id_of(exec("schedule", name, "--in", "5m", "--key", helper.name("k")))
      local failed = id_of(exec("schedule", name))
      helper.sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = 3, max_attempts = 3,"
        .. " last_error = 'boom: disk full\nstack traceback: ...' WHERE id = %d"):format(failed))
      helper.sleep(1.1) -- the due job is now a second late

      local r = exec("jobs", "--name", name)
      assert_exit(0, r)
      local lines = {}
      for line in r.out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equals(4, #lines, r.out)
      assert.matches("^%s*ID%s+NAME%s+STATE%s+RUN AT%s+WHEN%s+ATTEMPT%s+LAST ERROR$", lines[1])
      local by_id = {}
      for i = 2, #lines do by_id[tonumber(lines[i]:match("^%s*(%d+)"))] = lines[i] end
      assert.matches("scheduled%s+%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%s+%d+s late%s+0/25%?$", by_id[due])
      assert.matches("scheduled%s+.-%s+in [45]m%d*s?%s+0/25%?$", by_id[later])
      assert.matches("failed%s+.-%s+3/3%s+boom: disk full$", by_id[failed])

      r = exec("jobs", "--name", name, "--state", "failed", "--json")
      assert_exit(0, r)
      local list = decode(r.out)
      assert.equals(1, #list)
      local j = list[1]
      assert.same(JOB_KEYS, keys_of(j))
      assert.equals(failed, j.id)
      assert.equals("failed", j.state)
      assert.equals(3, j.attempt)
      assert.equals(3, j.max_attempts)
      assert.equals("boom: disk full\nstack traceback: ...", j.last_error)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", j.run_at)
      assert.equals(json.null, j.payload)
      assert.equals(json.null, j.key)

      r = exec("jobs", "--name", name, "--json", "--limit", "2")
      assert_exit(0, r)
      assert.equals(2, #decode(r.out))
      assert.matches("only the first 2 jobs", r.err)
      local all = decode(exec("jobs", "--name", name, "--json", "--limit", "0").out)
      assert.equals(3, #all)
      assert.same({ a = 1 }, all[1].payload) -- run_at order: the due job first

      r = exec("jobs", "--name", helper.name("nothing"))
      assert_exit(0, r)
      assert.equals("", r.out)
      assert.equals("no jobs\n", after_db_line(r.err))
      assert.same({}, decode(exec("jobs", "--name", helper.name("nothing"), "--json").out))
    end)

    it("show prints one job, has --json, and exits 1 for an unknown id", function()
      local name = helper.name("cli-show")
      local id = id_of(exec("schedule", name, '{"x": [true, null, 3]}', "--in", "2h", "--key",
        helper.name("k"), "--priority", "2"))
      local r = exec("show", tostring(id))
      assert_exit(0, r)
      assert.matches("id%s+" .. id .. "\n", r.out)
      assert.matches("name%s+" .. name:gsub("%p", "%%%0") .. "\n", r.out)
      assert.matches("state%s+scheduled\n", r.out)
      assert.matches("run at%s+%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d [+-]%d%d%d%d %(in [12]h[%dms]*%)", r.out)
      assert.matches("attempt%s+0 of 25 %(the default, unless its listener sets max_attempts", r.out)
      assert.matches('payload%s+{"x":%[true,null,3%]}\n', r.out)
      assert.matches("created at%s+%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d", r.out)

      r = exec("show", tostring(id), "--json")
      assert_exit(0, r)
      local j = decode(r.out)
      assert.same(JOB_KEYS, keys_of(j))
      assert.equals(id, j.id)
      assert.equals(2, j.priority)
      assert.same({ x = { true, json.null, 3 } }, j.payload)

      r = exec("show", "999999999")
      assert_exit(1, r)
      assert.equals("", r.out)
      assert.matches("^lua%-scheduler: no job 999999999", after_db_line(r.err))
    end)

    it("cancel removes a waiting job; a running or unknown one is exit 1", function()
      local name = helper.name("cli-cancel")
      local id = id_of(exec("schedule", name, "--in", "1h"))
      local r = exec("cancel", tostring(id))
      assert_exit(0, r)
      assert.equals("cancelled job " .. id .. "\n", r.out)
      assert.is_nil(job_row(id))
      r = exec("cancel", tostring(id))
      assert_exit(1, r)
      assert.matches("no job " .. id, r.err)
      assert_usage(exec("cancel", "x"), 'ID: expected a job id')
    end)

    it("cancel leaves a running job alone (exit 1); show names its worker and lease", function()
      local name = helper.name("cli-cancel")
      local id = id_of(exec("schedule", name))
      helper.sql(("UPDATE scheduler.jobs SET state = 'running', attempt = 1, locked_by = 'elsewhere:1',"
        .. " locked_until = %s WHERE id = %d"):format(helper.sql_time(helper.now() + 3600), id))
      local r = exec("show", tostring(id))
      assert_exit(0, r)
      assert.matches("locked by%s+elsewhere:1\n", r.out)
      assert.matches("lease until%s+%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d", r.out)
      local j = decode(exec("show", tostring(id), "--json").out)
      assert.equals("elsewhere:1", j.locked_by)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", j.locked_until)
      r = exec("cancel", tostring(id))
      assert_exit(1, r)
      assert.matches("job " .. id .. " is running; only a waiting %(scheduled%) job can be cancelled", r.err)
      assert.equals("running", job_row(id).state)
      helper.sql("DELETE FROM scheduler.jobs WHERE id = " .. id)
    end)

    it("retry ID re-queues a failed job; retry --all-failed --name does all of them", function()
      local name = helper.name("cli-retry")
      local function failed_job(key)
        local args = { "schedule", name }
        if key then args[#args + 1] = "--key"; args[#args + 1] = key end
        local id = id_of(cli.exec(args))
        helper.sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = 25, last_error = 'boom'"
          .. " WHERE id = %d"):format(id))
        return id
      end
      local one = failed_job()
      local r = exec("retry", tostring(one))
      assert_exit(0, r)
      assert.equals("job " .. one .. " will run now\n", r.out)
      local row = job_row(one)
      assert.equals("scheduled", row.state)
      assert.equals(0, row.attempt)
      r = exec("retry", tostring(one))
      assert_exit(1, r)
      assert.matches("job " .. one .. " is scheduled, not failed", r.err)
      assert_usage(exec("retry"), "missing ID (or --all-failed)")
      assert_usage(exec("retry", "1", "--all-failed"), "ID or --all-failed, not both")
      assert_usage(exec("retry", "1", "--name", name), "--name goes with --all-failed")

      -- three failed jobs; one's key is held by an unfinished job, so it stays
      local key = helper.name("k")
      local a, b, c = failed_job(), failed_job(), failed_job(key)
      id_of(exec("schedule", name, "--key", key, "--in", "1h"))
      local other = helper.name("cli-retry-other")
      local untouched = id_of(exec("schedule", other))
      helper.sql("UPDATE scheduler.jobs SET state = 'failed' WHERE id = " .. untouched)
      r = exec("retry", "--all-failed", "--name", name, "--json")
      assert_exit(0, r)
      assert.same({ retried = 2, skipped = 1 }, decode(r.out))
      assert.matches("1 failed job kept: another unfinished job holds its key", r.err)
      assert.equals("scheduled", job_row(a).state)
      assert.equals("scheduled", job_row(b).state)
      assert.equals("failed", job_row(c).state)
      assert.equals("failed", job_row(untouched).state)
      r = exec("retry", "--all-failed", "--name", name)
      assert_exit(0, r)
      assert.equals("retried 0 failed jobs\n", r.out)
    end)

    it("stats shows counts by state, the oldest due job's lateness and throughput, with --json", function()
      local name = helper.name("cli-stats")
      -- three jobs completed just now
      local s = helper.new()
      for i = 1, 3 do helper.schedule(s, name, i) end
      s:on(name, function() end)
      assert.equals(3, s:run{ drain = true })
      s:off(name)
      id_of(exec("schedule", name))
      id_of(exec("schedule", name))
      id_of(exec("schedule", name, "--in", "1h"))
      local f = id_of(exec("schedule", name))
      helper.sql("UPDATE scheduler.jobs SET state = 'failed' WHERE id = " .. f)
      helper.sleep(1.1)
      local r = exec("stats")
      assert_exit(0, r)
      assert.matches("NAME%s+DUE%s+LATER%s+RUNNING%s+FAILED%s+OLDEST DUE%s+DONE/MIN%s+PAUSED%s+LIMIT\n", r.out)
      assert.matches(name:gsub("%p", "%%%0") .. "%s+2%s+1%s+0%s+1%s+%d+s%s+3%s+%-%s+%-\n", r.out)

      r = exec("stats", "--json")
      assert_exit(0, r)
      local mine
      for _, row in ipairs(decode(r.out)) do if row.name == name then mine = row end end
      assert.is_truthy(mine, r.out)
      assert.same({ "by", "concurrency", "done_last_minute", "due", "failed", "later", "name",
        "oldest_due_late_seconds", "paused", "per", "rate", "running" }, keys_of(mine))
      assert.equals(json.null, mine.concurrency) -- no limit
      assert.equals(json.null, mine.by)
      assert.is_false(mine.paused)
      assert.equals(2, mine.due)
      assert.equals(1, mine.later)
      assert.equals(0, mine.running)
      assert.equals(1, mine.failed)
      assert.is_true(mine.oldest_due_late_seconds >= 1 and mine.oldest_due_late_seconds < 30,
        tostring(mine.oldest_due_late_seconds))
      assert.equals(3, mine.done_last_minute)
    end)

    it("stats --watch refreshes until SIGTERM (one JSON array per line), then exits 0", function()
      local c = cli.start { "stats", "--watch", "--interval", "0.2", "--json" }
      assert.is_truthy(helper.wait_for(function()
        local _, n = c:out():gsub("\n", "")
        return n >= 3
      end, 10), c:describe())
      c:kill("TERM")
      assert.equals(0, c:wait(5), c:describe())
      for line in c:out():gmatch("[^\n]+") do assert.equals("table", type(decode(line))) end
    end)
  end)

  describe("run", function()
    local dir, results, name

    before_each(function()
      dir = helper.tmpdir()
      results = dir .. "/results"
      name = helper.name("cli-run")
    end)

    local function listeners_dir(spec)
      local d = dir .. "/listeners"
      os.execute("mkdir -p " .. helper.shquote(d))
      spec.name, spec.results = spec.name or name, spec.results or results
      cli.listener_file(d .. "/" .. (spec.file or "a.lua"), spec)
      return d
    end

    local function start(args)
      local c = cli.start(args)
      local n = 1
      for i, a in ipairs(args) do if a == "--workers" then n = tonumber(args[i + 1]) end end
      assert.is_true(c:wait_log("started: listeners", n, 10), c:describe())
      return c
    end

    it("refuses a missing file, a syntax error (file:line) and a duplicate name before touching the database", function()
      local unreachable = "postgresql://nobody@127.0.0.1:1/none"
      local r = exec("run", "--database", unreachable, dir .. "/missing.lua")
      assert_usage(r, dir .. "/missing.lua", "No such file or directory", "Usage: lua-scheduler run")

      helper.write_file(dir .. "/bad.lua", "local scheduler = require 'scheduler'\n\nscheduler.on('X', function()\n  retrun 1\nend)\n")
      r = exec("run", "--database", unreachable, dir .. "/bad.lua")
      assert_exit(2, r)
      assert.matches(dir:gsub("%p", "%%%0") .. "/bad%.lua:4:", r.err)

      cli.listener_file(dir .. "/one.lua", { name = name, results = results })
      cli.listener_file(dir .. "/two.lua", { name = name, results = results, form = "table" })
      r = exec("run", "--database", unreachable, dir .. "/one.lua", dir .. "/two.lua")
      assert_exit(2, r)
      assert.is_truthy(r.err:find(("listener %q is registered by two files: %s and %s"):format(
        name, dir .. "/one.lua", dir .. "/two.lua"), 1, true), cli.describe(r))

      helper.write_file(dir .. "/opts.lua", "require('scheduler').on('X', function() end, { max_attempt = 3 })\n")
      r = exec("run", "--database", unreachable, dir .. "/opts.lua")
      assert_exit(2, r)
      assert.matches('opts%.lua: listener "X": scheduler: on: unknown option "max_attempt"', r.err)

      helper.write_file(dir .. "/conf.lua", "require('scheduler').configure{ database = 'x' }\n")
      r = exec("run", "--database", unreachable, dir .. "/conf.lua")
      assert_exit(2, r)
      assert.matches("conf%.lua:1: scheduler%.configure is not available in a listener file", r.err)

      helper.write_file(dir .. "/none.lua", "return nil\n")
      r = exec("run", "--database", unreachable, dir .. "/none.lua")
      assert_exit(2, r)
      assert.matches("no listeners", r.err)

      os.execute("mkdir " .. helper.shquote(dir .. "/empty"))
      assert_usage(exec("run", dir .. "/empty"), "has no *.lua files")
      assert_usage(exec("run"), "missing PATH")
    end)

    it("runs both listener forms from a directory; --workers 3 spreads jobs over all three, each exactly once", function()
      local other = helper.name("cli-run-table")
      listeners_dir { file = "a.lua" }
      local d = listeners_dir { file = "b.lua", name = other, form = "table" }
      helper.write_file(d .. "/README.txt", "not loaded")
      local c = start { "run", "--workers", "3", d }
      assert.equals(3, #c:workers(), c:describe())
      local s = helper.new()

      -- each job waits until three processes run one: each of the first
      -- three goes to an idle worker
      local barrier = {}
      for i = 1, 3 do
        barrier[i] = helper.schedule(s, name, { barrier = 3 })
        assert.is_truthy(helper.wait_for(function() return #cli.events(results, "start") >= i end, 10),
          c:describe())
      end
      local ids = {}
      for i = 1, 30 do ids[i] = helper.schedule(s, i % 2 == 0 and name or other, { n = i }) end
      for _, id in ipairs(barrier) do ids[#ids + 1] = id end
      assert.is_truthy(helper.wait_for(function() return #cli.events(results, "done") >= #ids end, 20),
        c:describe())
      helper.sleep(0.3) -- nothing runs twice, even a little later

      local starts = helper.tally(cli.events(results, "start"), "id")
      local dones = helper.tally(cli.events(results, "done"), "id")
      for _, id in ipairs(ids) do
        assert.equals(1, starts[id], "job " .. id .. " started " .. tostring(starts[id]) .. " times")
        assert.equals(1, dones[id], "job " .. id .. " done " .. tostring(dones[id]) .. " times")
      end
      local pids = helper.tally(cli.events(results, "start"), "pid")
      local workers = c:workers()
      for _, pid in ipairs(workers) do
        assert.is_truthy(pids[pid], "worker " .. pid .. " ran nothing\n" .. c:describe())
      end
      local barrier_pids = {}
      for _, id in ipairs(barrier) do
        barrier_pids[cli.events(results, "start", id)[1].pid] = true
        assert.is_nil(job_row(id))
      end
      for _, pid in ipairs(workers) do assert.is_true(barrier_pids[pid], c:describe()) end
      c:kill("TERM")
      assert.equals(0, c:wait(10), c:describe())
      assert.same({}, c:workers())
    end)

    it("--concurrency 10 runs up to 10 jobs at once in each worker, each once; SIGTERM waits for them", function()
      local d = listeners_dir {}
      local c = start { "run", "--workers", "2", "--concurrency", "10", d }
      local s = helper.new()
      local ids = {}
      for i = 1, 60 do ids[i] = helper.schedule(s, name, { wait = 0.2, n = i }) end
      assert.is_truthy(helper.wait_for(function() return #cli.events(results, "done") >= 60 end, 30),
        c:describe())
      local starts = helper.tally(cli.events(results, "start"), "id")
      for _, id in ipairs(ids) do assert.equals(1, starts[id], "job " .. id) end
      -- the most jobs in flight at once in one worker, in the record's order
      local now, most = {}, 0
      for _, r in ipairs(cli.results(results)) do
        now[r.pid] = (now[r.pid] or 0) + (r.event == "start" and 1 or -1)
        if now[r.pid] > most then most = now[r.pid] end
      end
      assert.is_true(most <= 10 and most >= 5, "at most 10 at once per worker, saw " .. most)
      -- SIGTERM while jobs wait: they end, the rest stays unattempted
      for i = 1, 40 do ids[i] = helper.schedule(s, name, { wait = 1, n = i }) end
      assert.is_truthy(helper.wait_for(function() return #cli.events(results, "start") >= 80 end, 10),
        c:describe())
      c:kill("TERM")
      assert.equals(0, c:wait(15), c:describe())
      local done = #cli.events(results, "done")
      assert.equals(#cli.events(results, "start"), done, "every job started ran to its end")
      assert.equals(100 - done, helper.count_jobs(name))
    end)

    it("on SIGTERM lets the job in hand finish, keeps the waiting ones and exits 0; log lines carry the worker (JSON)", function()
      local d = listeners_dir {}
      local c = start { "run", "--log-format", "json", d }
      local s = helper.new()
      local long = helper.schedule(s, name, { sleep = 1.5 })
      assert.is_truthy(helper.wait_for(function() return cli.events(results, "start", long)[1] end, 10),
        c:describe())
      local waiting = helper.schedule(s, name, "next")
      c:kill("TERM")
      assert.equals(0, c:wait(10), c:describe())
      assert.equals(1, #cli.events(results, "done", long), c:describe())
      assert.is_nil(job_row(long))
      local row = job_row(waiting)
      assert.equals("scheduled", row.state)
      assert.equals(0, row.attempt)
      assert.equals(0, #cli.events(results, "start", waiting))

      local worker_lines = 0
      for line in c:err():gmatch("[^\n]+") do
        local entry = decode(line)
        assert.is_string(entry.time)
        assert.is_string(entry.message)
        assert.is_truthy(({ debug = 1, info = 1, warn = 1, error = 1 })[entry.level])
        assert.matches("^.+:%d+:%x+$", entry.worker_id)
        if entry.process == "worker" then
          worker_lines = worker_lines + 1
          assert.equals(1, entry.worker)
        else
          assert.equals("supervisor", entry.process)
        end
      end
      assert.is_true(worker_lines >= 2, c:err())
      assert_exit(0, exec("cancel", tostring(waiting)))
    end)

    it("replaces a worker killed with kill -9 and re-runs its job at once", function()
      local d = listeners_dir {}
      local c = start { "run", "--workers", "2", d }
      local before = c:workers()
      local s = helper.new()
      local id = helper.schedule(s, name, { sleep_first = 60 })
      local first = helper.wait_for(function() return cli.events(results, "start", id)[1] end, 10)
      assert.is_truthy(first, c:describe())
      -- leased once its batch is settled (after a second): the supervisor
      -- then releases it (a worker killed before that loses its row locks)
      assert.is_truthy(helper.wait_for(function() return helper.leased(s, id) end, 5))
      local killed_at = helper.now()
      assert.is_true(helper.kill(first.pid, "KILL"))

      local rerun = helper.wait_for(function()
        for _, e in ipairs(cli.events(results, "done", id)) do return e end
      end, 10)
      assert.is_truthy(rerun, c:describe())
      assert.equals(2, rerun.attempt)
      assert.is_true(helper.now() - killed_at < 5, "re-run after the lease, not at once")
      assert.is_true(c:wait_log("was killed by signal KILL"), c:describe())
      assert.is_true(c:wait_log("released 1 job held by worker"), c:describe())
      assert.is_truthy(helper.wait_for(function() return #c:workers() == 2 end, 5), c:describe())
      local after = c:workers()
      assert.is_falsy(helper.tally(after)[first.pid])
      assert.is_truthy(helper.tally(after)[before[1] == first.pid and before[2] or before[1]])
      assert.is_nil(job_row(id))
      c:kill("TERM")
      assert.equals(0, c:wait(10), c:describe())
    end)

    it("reloads changed listener files on SIGHUP, and keeps the workers when they no longer load", function()
      local d = listeners_dir { tag = "v1" }
      local c = start { "run", "--workers", "2", d }
      local old = c:workers()
      local s = helper.new()
      local id1 = helper.schedule(s, name)
      assert.is_truthy(helper.wait_for(function() return cli.events(results, "done", id1)[1] end, 10))
      assert.equals("v1", cli.events(results, "done", id1)[1].tag)

      helper.write_file(d .. "/a.lua", "this is not Lua\n")
      c:kill("HUP")
      assert.is_true(c:wait_log("reload failed, the running workers stay"), c:describe())
      assert.matches("a%.lua:1:", c:err())
      assert.same(old, c:workers())

      listeners_dir { tag = "v2" }
      c:kill("HUP")
      assert.is_true(c:wait_log("reload complete"), c:describe())
      local new = c:workers()
      assert.equals(2, #new)
      for _, pid in ipairs(old) do assert.is_falsy(helper.tally(new)[pid]) end
      local id2 = helper.schedule(s, name)
      assert.is_truthy(helper.wait_for(function() return cli.events(results, "done", id2)[1] end, 10),
        c:describe())
      assert.equals("v2", cli.events(results, "done", id2)[1].tag)
      c:kill("TERM")
      assert.equals(0, c:wait(10), c:describe())
    end)

    it("reports a worker crash loop and slows its restarts down", function()
      local marker = dir .. "/broken"
      local d = listeners_dir { extra = ("if io.open(%q) then error('cannot start: broken') end"):format(marker) }
      local c = start { "run", d }
      helper.write_file(marker, "")
      helper.kill(c:workers()[1], "KILL")
      assert.is_true(c:wait_log("is crash-looping", 1, 10), c:describe())
      local _, starts = c:err():gsub("started worker 1", "")
      helper.sleep(1)
      local _, later = c:err():gsub("started worker 1", "")
      assert.is_true(later - starts <= 1, "restarted " .. (later - starts) .. " times in 1 s")
      assert.matches("cannot start: broken", c:err())
      c:kill("TERM")
      assert.equals(0, c:wait(10), c:describe())
    end)

    it("waits #postgresql for a database that does not exist yet, then starts (SIGTERM while waiting: exit 0)", function()
      local dbname = helper.name("later"):gsub("[^%w]", "_"):lower()
      local database = helper.database_for(dbname)
      local d = listeners_dir {}
      local c = cli.start({ "run", "--workers", "2", d }, { env = { LUA_SCHEDULER_DATABASE = database } })
      finally(function()
        c:destroy()
        helper.psql("DROP DATABASE IF EXISTS " .. dbname .. " WITH (FORCE)")
      end)
      assert.is_true(c:wait_log("waiting for the database: "), c:describe())
      assert.matches(dbname .. '" does not exist', c:err())
      helper.sleep(1.5)
      assert.is_nil(c:exit_code(), c:describe())
      assert.same({}, c:workers())
      helper.psql("CREATE DATABASE " .. dbname)
      assert.is_true(c:wait_log("the database answered after"), c:describe())
      assert.is_true(c:wait_log("started: listeners", 2), c:describe())
      local s = helper.new{ database = database }
      local id = helper.schedule(s, name, "after the wait")
      assert.is_truthy(helper.wait_for(function() return cli.events(results, "done", id)[1] end, 10), c:describe())
      s:close()
      c:kill("TERM")
      assert.equals(0, c:wait(10), c:describe())

      local idle = cli.start({ "run", d }, { env = { LUA_SCHEDULER_DATABASE = helper.database_for(dbname .. "_never") } })
      assert.is_true(idle:wait_log("waiting for the database: "), idle:describe())
      idle:kill("TERM")
      assert.equals(0, idle:wait(10), idle:describe())
      assert.matches("stopped while waiting for the database", idle:err())
    end)

    it("hides #postgresql a password given with --database from ps, and warns", function()
      local password = "pw-" .. helper.name("hidden")
      local url = "postgresql://someone:" .. password .. "@127.0.0.1:1/x?connect_timeout=2"
      local c = cli.start { "run", "--database", url, listeners_dir {} }
      assert.is_true(c:wait_log("waiting for the database: "), c:describe())
      local cmdline = (helper.read_file("/proc/" .. c.pid .. "/cmdline") or ""):gsub("%z", " ")
      assert.is_falsy(cmdline:find(password, 1, true), cmdline)
      assert.is_truthy(cmdline:find("--database postgresql://someone:***@127.0.0.1:1/x?connect_timeout=2 ",
        1, true), cmdline)
      -- (without a preloaded sanitizer runtime: make test SANITIZE=1)
      local ps = helper.sh("env -u LD_PRELOAD ps -o args= -p " .. c.pid)
      assert.is_truthy(ps:find("someone:***@", 1, true), ps)
      assert.matches("warning: the password in %-%-database is visible", c:err())
      assert.is_falsy(c:err():find(password, 1, true), c:err())
      c:kill("TERM")
      assert.equals(0, c:wait(10), c:describe())
      -- no warning without a password on the command line
      local r = exec("jobs", "--limit", "1")
      assert_exit(0, r)
      assert.is_falsy(r.err:find("warning", 1, true), r.err)
    end)

    it("a second SIGTERM stops at once, releases the jobs in hand and exits 1", function()
      local d = listeners_dir {}
      local c = start { "run", d }
      local s = helper.new()
      local id = helper.schedule(s, name, { sleep_first = 60 })
      assert.is_truthy(helper.wait_for(function() return cli.events(results, "start", id)[1] end, 10))
      c:kill("TERM")
      assert.is_true(c:wait_log("stopping; waiting for 1 worker"), c:describe())
      c:kill("TERM")
      assert.equals(1, c:wait(10), c:describe())
      local row = job_row(id)
      assert.equals("scheduled", row.state)
      assert.is_true(row.due_in <= 0, "released, not waiting for its lease")
      assert_exit(0, exec("cancel", tostring(id)))
    end)
  end)

  describe("examples/copy_jobs.lua", function()
    it("copies the waiting jobs of an SQLite file into the database under test; running and failed ones stay", function()
      local path = helper.tmpdir() .. "/old.db"
      local from = "sqlite:" .. path
      local old = helper.new { database = from }
      local name, key = helper.name("copied"), helper.name("k")
      local later = helper.schedule(old, name, { to = "ada@example.com", n = { 1, 2.5 } },
        { delay = 3600, key = key, priority = 2, max_attempts = 4 })
      helper.schedule(old, name, "now")
      local running, failed = helper.schedule(old, name, "running"), helper.schedule(old, name, "failed")
      helper.sqlite(("UPDATE scheduler_jobs SET state = 'running', attempt = 1, locked_by = 'w:1',"
        .. " locked_until = %.0f WHERE id = %d"):format(helper.now() + 3600, running), { path = path })
      helper.sqlite("UPDATE scheduler_jobs SET state = 'failed' WHERE id = " .. failed, { path = path })

      local out, ok = helper.sh(("%s examples/copy_jobs.lua %s %s 2>&1"):format(helper.LUA,
        helper.shquote(from), helper.shquote(helper.DATABASE)))
      assert.is_truthy(ok, out)
      assert.equals("copied 2 waiting jobs from " .. from .. "\n", out)
      local rows = helper.ok(helper.new():jobs { name = name })
      assert.equals(2, #rows)
      assert.equals("now", rows[1].payload)
      assert.is_nil(rows[1].max_attempts)
      assert.same({ to = "ada@example.com", n = { 1, 2.5 } }, rows[2].payload)
      assert.equals(key, rows[2].key)
      assert.equals(2, rows[2].priority)
      assert.equals(4, rows[2].max_attempts)
      assert.near(helper.ok(old:job(later)).run_at, rows[2].run_at, 0.001)
      for _, j in ipairs(rows) do assert.equals("scheduled", j.state) end
    end)
  end)

  describe("the README's quick start", function()
    it("runs examples/listeners and examples/schedule_examples.sh: both jobs fire on time", function()
      local c = cli.start { "run", "examples/listeners" }
      assert.is_true(c:wait_log("started: listeners PayBills, SendEmail", 1, 10), c:describe())
      -- run names its database in its start line (issue 17)
      assert.matches("listeners PayBills, SendEmail; database [^\n]+ %(from LUA_SCHEDULER_DATABASE%) ready", c:err())
      if helper.SQLITE then
        assert.is_truthy(c:err():find("; database " .. helper.DATABASE .. " (from", 1, true), c:err())
      end
      local out = helper.sh("examples/schedule_examples.sh")
      local t0 = helper.now()
      local ids = {}
      for id in out:gmatch("(%d+)\n") do ids[#ids + 1] = tonumber(id) end
      assert.equals(2, #ids, out)
      assert.is_truthy(helper.wait_for(function() return c:out():find("paying 99.50 to ACME%-42") end, 10),
        c:describe())
      assert.is_true(helper.now() - t0 > 1, "ran early")
      assert.matches("sending e%-mail to ada@example%.com%s+%(%d+%.%d ms after its time%)", c:out())
      for _, id in ipairs(ids) do assert.is_nil(job_row(id)) end
      c:kill("TERM")
      assert.equals(0, c:wait(10), c:describe())
    end)
  end)
  -- issue 17, items 1, 6 and 9
  describe("where it looks", function()
    local root = helper.sh("pwd -P"):gsub("%s+$", "")

    -- Run lua-scheduler in `dir` (default: the checkout), with stdin from
    -- the file opts.stdin (default /dev/null); opts.env / opts.unset as
    -- cli.exec.  Returns { code, out, err }.
    local function run_in(dir, args, opts)
      opts = opts or {}
      local tmp = helper.tmpdir()
      local parts = { "cd", helper.shquote(dir or root), "&&", "env" }
      for _, name in ipairs(opts.unset or {}) do parts[#parts + 1] = "-u " .. helper.shquote(name) end
      for k, v in pairs(opts.env or {}) do parts[#parts + 1] = helper.shquote(k .. "=" .. v) end
      parts[#parts + 1] = helper.shquote(helper.LUA)
      parts[#parts + 1] = helper.shquote(root .. "/" .. cli.BIN)
      for _, a in ipairs(args) do parts[#parts + 1] = helper.shquote(a) end
      local status = helper.sh(("%s <%s >%s 2>%s; echo $?"):format(table.concat(parts, " "),
        helper.shquote(opts.stdin or "/dev/null"), helper.shquote(tmp .. "/out"), helper.shquote(tmp .. "/err")))
      return { code = tonumber(status:match("(%d+)")), out = helper.read_file(tmp .. "/out") or "",
        err = helper.read_file(tmp .. "/err") or "" }
    end

    local NO_ENV = { unset = { "LUA_SCHEDULER_DATABASE" } }

    it("never creates a database file from an admin command (exit 1, nothing created); migrate does and says where", function()
      local dir = helper.tmpdir()
      local real = helper.sh("cd " .. helper.shquote(dir) .. " && pwd -P"):gsub("%s+$", "")
      local commands = { { "jobs" }, { "jobs", "--json" }, { "schedule", "X" }, { "schedule", "X", "{}", "--in", "5m" },
        { "show", "1" }, { "cancel", "1" }, { "retry", "1" }, { "retry", "--all-failed" }, { "stats" },
        { "stats", "--json" }, { "cron", "list" }, { "cron", "remove", "x" } }
      for _, args in ipairs(commands) do
        local r = run_in(dir, args, NO_ENV)
        assert_exit(1, r)
        assert.equals("", r.out, cli.describe(r))
        assert.equals("lua-scheduler: no database at ./scheduler.db (set LUA_SCHEDULER_DATABASE or --database)\n",
          r.err)
        assert.is_nil(helper.read_file(dir .. "/scheduler.db"), table.concat(args, " ") .. " created scheduler.db")
      end
      -- a file named by --database or the environment that does not exist: the same
      local r = run_in(dir, { "--database", "sqlite:other.db", "schedule", "X" }, NO_ENV)
      assert_exit(1, r)
      assert.is_truthy(r.err:find("no database at other.db (from --database;", 1, true), r.err)
      r = run_in(dir, { "jobs" }, { env = { LUA_SCHEDULER_DATABASE = "sqlite:" .. dir .. "/env.db" } })
      assert_exit(1, r)
      assert.is_truthy(r.err:find("no database at " .. dir .. "/env.db (from LUA_SCHEDULER_DATABASE;", 1, true), r.err)
      assert.is_nil(helper.read_file(dir .. "/other.db"))
      assert.is_nil(helper.read_file(dir .. "/env.db"))

      -- migrate creates it, and names it by its absolute path
      r = run_in(dir, { "migrate" }, NO_ENV)
      assert_exit(0, r)
      local line = "lua-scheduler: database sqlite:" .. real
        .. "/scheduler.db (the default: neither --database nor LUA_SCHEDULER_DATABASE is set)\n"
      assert.equals(line, r.err)
      assert.is_truthy(helper.read_file(dir .. "/scheduler.db"))
      -- then the other commands use it, each saying so on stderr; --json is untouched
      local id = id_of(run_in(dir, { "schedule", "X", "{}" }, NO_ENV))
      r = run_in(dir, { "jobs", "--json" }, NO_ENV)
      assert_exit(0, r)
      assert.equals(line, r.err)
      local list = decode(r.out)
      assert.equals(1, #list)
      assert.equals(id, list[1].id)
    end)

    it("names the database of every command on stderr, stdout (--json) unaffected", function()
      local name = helper.name("Where")
      local r = exec("schedule", name, "--json")
      assert_exit(0, r)
      assert.is_number(decode(r.out).id)
      local line = r.err
      assert.matches("^lua%-scheduler: database [^\n]+ %(from LUA_SCHEDULER_DATABASE%)\n$", line)
      if helper.SQLITE then
        assert.equals("lua-scheduler: database " .. helper.DATABASE .. " (from LUA_SCHEDULER_DATABASE)\n", line)
      end
      for _, args in ipairs { { "jobs", "--name", name, "--json" }, { "stats", "--json" }, { "cron", "list", "--json" },
        { "show", tostring(decode(r.out).id), "--json" } } do
        local x = exec(table.unpack(args))
        assert_exit(0, x)
        assert.equals(line, x.err)
        decode(x.out)
      end
    end)

    it("takes --database before or after the command (after wins), and ignores it where no database is used", function()
      local db = assert(helper.DATABASE)
      local name = helper.name("Global")
      local id = id_of(cli.exec({ "--database", db, "schedule", name, "7" }, NO_ENV))
      local r = cli.exec({ "--database=" .. db, "jobs", "--name", name, "--json" }, NO_ENV)
      assert_exit(0, r)
      assert.equals(id, decode(r.out)[1].id)
      r = cli.exec({ "--database", "sqlite:/nonexistent/x.db", "show", tostring(id), "--database", db, "--json" }, NO_ENV)
      assert_exit(0, r)
      assert.equals(7, decode(r.out).payload)
      r = cli.exec({ "--database", db, "cron", "list", "--json" }, NO_ENV)
      assert_exit(0, r)
      r = cli.exec({ "--database", "sqlite:/nonexistent/x.db", "cron", "next", "@hourly", "--count", "1" }, NO_ENV)
      assert_exit(0, r)
      assert.equals("", r.err)
      r = cli.exec({ "--database", db, "--help" }, NO_ENV)
      assert_exit(0, r)
      assert.matches("Usage: lua%-scheduler %[%-%-database URL%] COMMAND", r.out)
      assert_usage(cli.exec({ "--database" }, NO_ENV), "--database needs a value")
      assert_usage(cli.exec({ "--database", db }, NO_ENV), "missing COMMAND")
      assert_usage(cli.exec({ "--databse", db, "jobs" }, NO_ENV), "unknown option --databse")
    end)

    it("takes PAYLOAD from stdin (-) and from a file (@path), 1 MB (past argv's 128 KB per string)", function()
      local dir = helper.tmpdir()
      local name = helper.name("BigPayload")
      local big = { text = ("x"):rep(1024 * 1024), list = {} }
      for i = 1, 1000 do big.list[i] = i end
      helper.write_file(dir .. "/big.json", json.encode(big))
      local from_stdin = id_of(run_in(nil, { "schedule", name, "-" }, { stdin = dir .. "/big.json" }))
      local from_file = id_of(exec("schedule", name, "@" .. dir .. "/big.json"))
      for _, id in ipairs { from_stdin, from_file } do
        local j = job_row(id)
        assert.equals(#big.text, #j.payload.text)
        assert.equals(big.text, j.payload.text)
        assert.same(big.list, j.payload.list)
      end
      -- a string that starts with @ is given as JSON
      assert.equals("@home", job_row(id_of(exec("schedule", name, '"@home"'))).payload)
      -- bad input: usage errors, nothing scheduled
      helper.write_file(dir .. "/bad.json", '{"a": }')
      assert_usage(run_in(nil, { "schedule", name, "-" }, { stdin = dir .. "/bad.json" }),
        "PAYLOAD from stdin is not valid JSON")
      assert_usage(exec("schedule", name, "-"), "PAYLOAD from stdin is not valid JSON") -- empty
      assert_usage(exec("schedule", name, "@" .. dir .. "/bad.json"), "PAYLOAD @" .. dir .. "/bad.json is not valid JSON")
      assert_usage(exec("schedule", name, "@" .. dir .. "/missing.json"), "cannot read the file", "No such file")
      assert_usage(exec("schedule", name, "@" .. dir), "cannot read the file") -- a directory
      assert.equals(3, helper.count_jobs(name))
    end)

    it("refuses an unsupported scheme, a due time after 9999, a payload nested deeper than 10,000 levels and a cron EXPR that never fires (exit 2)", function()
      local r = exec("jobs", "--database", "mysql://app@db.internal/app")
      assert_usage(r, 'unsupported database scheme "mysql"')
      assert.is_falsy(r.err:find("%.lua:%d"), "a source path: " .. r.err)
      assert.is_falsy(r.err:find("connection info string", 1, true), "libpq's parse error: " .. r.err)
      helper.raises(function() require("scheduler").new { database = "mysql://app@db.internal/app" } end,
        'unsupported database scheme "mysql"')
      local name = helper.name("Far")
      assert_usage(exec("schedule", name, "--in", "99999999999d"),
        '--in: bad DURATION "99999999999d": that is after the year 9999')
      assert_usage(exec("schedule", name, "--at", "253402300800"), "after the year 9999")
      -- the latest time is stored by both backends
      local id = id_of(exec("schedule", name, "--at", "9999-12-31T23:59:59Z"))
      assert.equals(253402300799, math.floor(job_row(id).run_at + 0.5))
      assert.equals(1, helper.count_jobs(name))
      -- the nesting limit is the same on both backends (PostgreSQL's jsonb
      -- refuses ~14,500 levels, SQLite used to take 20,000): 10,000
      local dir = helper.tmpdir()
      for _, n in ipairs { 10000, 10001, 15000 } do
        helper.write_file(("%s/%d.json"):format(dir, n), ("["):rep(n) .. ("]"):rep(n))
      end
      local deep = id_of(exec("schedule", name, "@" .. dir .. "/10000.json"))
      local v, depth = job_row(deep).payload, 0
      while type(v) == "table" do v, depth = v[1], depth + 1 end
      assert.equals(10000, depth)
      for _, n in ipairs { 10001, 15000 } do
        r = exec("schedule", name, ("@%s/%d.json"):format(dir, n))
        assert_exit(2, r)
        assert.equals("", r.out)
        assert.matches("PAYLOAD: payload[1]", r.err, 1, true)
        assert.matches("nesting deeper than 10000 levels", r.err, 1, true)
      end
      assert.equals(2, helper.count_jobs(name))

      r = exec("cron", "next", "0 0 31 2 *")
      assert_exit(2, r)
      assert.equals("", r.out)
      assert.matches('EXPR "0 0 31 2 *" never fires', r.err, 1, true)
      r = exec("cron", "next", "0 0 29 2 *", "--count", "1")
      assert_exit(0, r)
      assert.matches("^%d%d%d%d%-02%-29T00:00:00Z\n$", r.out)
    end)

    it("packaging: the rockspec's summary names both backends; the LuaRocks recipe says luarocks path", function()
      local rockspec = assert(helper.read_file(root .. "/rockspec/lua-scheduler-scm-1.rockspec"))
      local summary = rockspec:match('summary%s*=%s*"([^"]*)"')
      assert.matches("SQLite", summary)
      assert.matches("PostgreSQL", summary)
      local readme = assert(helper.read_file(root .. "/README.md"))
      local section = readme:match("\n## Installing with LuaRocks\n(.-)\n## ")
      assert.is_truthy(section)
      assert.is_truthy(section:find("luarocks path", 1, true), section)
      assert.is_truthy(section:find("--tree", 1, true), section)
    end)
  end)
end)
