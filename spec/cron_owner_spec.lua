-- Recurring schedules declared by listener files belong to them (issue 17,
-- item 5): `run` (its supervisor, once, at start and at each reload)
-- declares them under an owner (--cron-owner, LUA_SCHEDULER_CRON_OWNER,
-- default "default") and removes that owner's schedules that no loaded file
-- declares any more, with their slot jobs not started yet.  Schedules
-- declared from code (no owner) and those of another owner stay.  The
-- attack: remove a line, restart, and count by the listener's own record
-- that no job of the removed schedule runs.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"
local json = require "dkjson"

local decode = cli.decode

-- A listener file for `name` that records each call's payload in
-- `results` (one line each: the independent record) and declares the
-- schedules `crons` ({ id, payload } each, every second).
local function listener_file(path, name, results, crons)
  local lines = { ([[
local scheduler = require "scheduler"
scheduler.on(%q, function(payload, job)
  local f = assert(io.open(%q, "a"))
  f:write(tostring(payload), " ", tostring(job.key), "\n")
  f:close()
end)
]]):format(name, results) }
  for _, c in ipairs(crons) do
    lines[#lines + 1] = ("scheduler.cron(%q, '* * * * * *', %q, %q)\n"):format(c[1], name, c[2])
  end
  helper.write_file(path, table.concat(lines))
end

local function count(results, payload)
  local n = 0
  for line in (helper.read_file(results) or ""):gmatch("[^\n]+") do
    if line:match("^(%S+)") == payload then n = n + 1 end
  end
  return n
end

local function crons_by_id()
  local s = helper.new()
  local rows = helper.ok(s:crons())
  s:close()
  local by = {}
  for _, r in ipairs(rows) do by[r.id] = r end
  return by
end

local function occurrences(text, needle)
  local n, at = 0, 1
  while true do
    local i = text:find(needle, at, true)
    if not i then return n end
    n, at = n + 1, i + #needle
  end
end

describe("recurring schedules of listener files", function()
  local dir, name, results, file, ids

  before_each(function()
    dir = helper.tmpdir()
    name = helper.name("CronOwner")
    results = dir .. "/results"
    os.execute("mkdir -p " .. helper.shquote(dir .. "/listeners"))
    file = dir .. "/listeners/a.lua"
    ids = {}
  end)

  after_each(function()
    cli.cleanup()
    local s = helper.new()
    for _, id in ipairs(ids) do s:uncron(id) end
    s:close()
    helper.cleanup()
  end)

  local function id(label)
    local v = helper.name("cron-" .. label)
    ids[#ids + 1] = v
    return v
  end

  it("a schedule removed from the files is gone at the next start, and no job of it runs; code's and another owner's stay (--workers 2: one supervisor declares)", function()
    local keep, gone, code, theirs = id("keep"), id("gone"), id("code"), id("theirs")
    local other = helper.name("owner")
    local s = helper.new()
    assert.is_true(helper.ok(s:cron(code, "0 3 * * *", name)))
    assert.is_true(helper.ok(s:cron(theirs, "0 4 * * *", name, nil, { owner = other })))
    s:close()

    listener_file(file, name, results, { { keep, "keep" }, { gone, "gone" } })
    local c = cli.start { "run", "--workers", "2", dir .. "/listeners" }
    assert.is_true(c:wait_log("started: listeners", 2, 10), c:describe())
    assert.is_truthy(helper.wait_for(function()
      return count(results, "keep") >= 1 and count(results, "gone") >= 1
    end, 10), c:describe())
    local by = crons_by_id()
    assert.equals("default", by[keep].owner)
    assert.equals("default", by[gone].owner)
    assert.is_nil(by[code].owner)
    assert.equals(other, by[theirs].owner)
    c:kill("TERM")
    assert.equals(0, c:wait(10), c:describe())

    -- the line goes; the next start removes the schedule before any worker runs
    listener_file(file, name, results, { { keep, "keep" } })
    os.remove(results)
    c = cli.start { "run", "--workers", "2", dir .. "/listeners" }
    assert.is_true(c:wait_log("started: listeners", 2, 10), c:describe())
    assert.is_truthy(helper.wait_for(function() return count(results, "keep") >= 2 end, 10), c:describe())
    assert.equals(0, count(results, "gone"), helper.read_file(results))
    -- logged once, by the supervisor
    local err = c:err()
    assert.equals(1, occurrences(err, ("removed recurring schedule %q"):format(gone)), c:describe())
    assert.matches("%[supervisor [^\n]*removed recurring schedule", err)
    by = crons_by_id()
    assert.is_nil(by[gone])
    assert.equals("default", by[keep].owner)
    assert.is_table(by[code], "the code's schedule stays")
    assert.is_nil(by[code].owner)
    assert.equals(other, by[theirs].owner, "another owner's schedule stays")
    -- nothing of it waits either
    s = helper.new()
    for _, j in ipairs(helper.ok(s:jobs { name = name })) do
      assert.is_nil((j.key or ""):find("cron:" .. gone .. "@", 1, true), j.key)
    end
    s:close()
    -- cron list shows the owner
    local r = cli.exec { "cron", "list", "--json" }
    assert.equals(0, r.code, cli.describe(r))
    local owners = {}
    for _, row in ipairs(decode(r.out)) do owners[row.id] = row.owner end
    assert.equals("default", owners[keep])
    assert.equals(json.null, owners[code])
    assert.equals(other, owners[theirs])
    r = cli.exec { "cron", "list" }
    assert.matches("OWNER", r.out, 1, true)
    c:kill("TERM")
    assert.equals(0, c:wait(10), c:describe())
    assert.equals(0, count(results, "gone"), helper.read_file(results))
  end)

  it("rolling deploy: a worker still running the old files makes no job of a schedule the new start removed", function()
    local keep, gone = id("keep"), id("gone")
    local old_dir, new_dir = dir .. "/old", dir .. "/new"
    os.execute("mkdir -p " .. helper.shquote(old_dir) .. " " .. helper.shquote(new_dir))
    listener_file(old_dir .. "/a.lua", name, results, { { keep, "keep" }, { gone, "gone" } })
    listener_file(new_dir .. "/a.lua", name, results, { { keep, "keep" } })
    local old = cli.start { "run", old_dir }
    assert.is_true(old:wait_log("started: listeners", 1, 10), old:describe())
    assert.is_truthy(helper.wait_for(function() return count(results, "gone") >= 1 end, 10), old:describe())
    -- the new deployment starts while the old one runs on
    local new = cli.start { "run", new_dir }
    assert.is_true(new:wait_log("started: listeners", 1, 10), new:describe())
    assert.equals(1, occurrences(new:err(), ("removed recurring schedule %q"):format(gone)), new:describe())
    -- a slot job started before the removal may still be finishing
    helper.sleep(1)
    os.remove(results)
    assert.is_truthy(helper.wait_for(function() return count(results, "keep") >= 3 end, 10), new:describe())
    assert.equals(0, count(results, "gone"), helper.read_file(results))
    assert.is_nil(crons_by_id()[gone])
    assert.is_nil(old:exit_code(), "the old deployment still runs\n" .. old:describe())
    new:kill("TERM")
    old:kill("TERM")
    assert.equals(0, new:wait(10), new:describe())
    assert.equals(0, old:wait(10), old:describe())
  end)

  it("two deployments share the database by owner (LUA_SCHEDULER_CRON_OWNER, --cron-owner); a reload (SIGHUP) removes too", function()
    local a1, b1, b2 = id("a1"), id("b1"), id("b2")
    local owner_a, owner_b = helper.name("deploy-a"), helper.name("deploy-b")
    local file_a = dir .. "/a.lua"
    listener_file(file_a, name, results, { { a1, "a1" } })
    local ca = cli.start({ "run", file_a }, { env = { LUA_SCHEDULER_CRON_OWNER = owner_a } })
    assert.is_true(ca:wait_log("started: listeners", 1, 10), ca:describe())
    -- deployment B: other files, the same listener name, its own owner
    local name_b = helper.name("CronOwnerB")
    local results_b = dir .. "/results_b"
    listener_file(file, name_b, results_b, { { b1, "b1" }, { b2, "b2" } })
    local cb = cli.start { "run", "--cron-owner", owner_b, file }
    assert.is_true(cb:wait_log("started: listeners", 1, 10), cb:describe())
    local by = crons_by_id()
    assert.equals(owner_a, by[a1] and by[a1].owner)
    assert.equals(owner_b, by[b1] and by[b1].owner)
    -- B drops b2 and reloads: b2 goes, a1 (A's, not in B's files) stays
    listener_file(file, name_b, results_b, { { b1, "b1" } })
    cb:kill("HUP")
    assert.is_true(cb:wait_log("reload complete", 1, 10), cb:describe())
    assert.equals(1, occurrences(cb:err(), ("removed recurring schedule %q"):format(b2)), cb:describe())
    by = crons_by_id()
    assert.is_nil(by[b2])
    assert.equals(owner_b, by[b1].owner)
    assert.equals(owner_a, by[a1].owner)
    os.remove(results_b)
    assert.is_truthy(helper.wait_for(function() return count(results_b, "b1") >= 2 end, 10), cb:describe())
    assert.equals(0, count(results_b, "b2"), helper.read_file(results_b))
    assert.is_truthy(helper.wait_for(function() return count(results, "a1") >= 1 end, 10), ca:describe())
    cb:kill("TERM")
    ca:kill("TERM")
    assert.equals(0, cb:wait(10), cb:describe())
    assert.equals(0, ca:wait(10), ca:describe())
    assert.is_nil(ca:err():find("removed recurring schedule", 1, true), ca:describe())
  end)

  it("a bad declaration in a file is refused before the database is touched, naming the file", function()
    helper.write_file(file, ([[
local scheduler = require "scheduler"
scheduler.on(%q, function() end)
scheduler.cron("x", "*/0 * * * *", %q)
]]):format(name, name))
    local r = cli.exec { "run", "--database", "postgresql://nobody@127.0.0.1:1/none", file }
    assert.equals(2, r.code, cli.describe(r))
    assert.matches(file, r.err, 1, true)
    assert.matches("step must be at least 1", r.err, 1, true)
    helper.write_file(file, ([[
local scheduler = require "scheduler"
scheduler.on(%q, function() end)
scheduler.cron("x", "@hourly", %q)
scheduler.cron("x", "@daily", %q)
]]):format(name, name, name))
    r = cli.exec { "run", "--database", "postgresql://nobody@127.0.0.1:1/none", file }
    assert.equals(2, r.code, cli.describe(r))
    assert.matches('recurring schedule "x" is declared twice', r.err, 1, true)
  end)

  it("the API: uncron(id, {owner}) removes only a schedule of that owner", function()
    local x = id("x")
    local s = helper.new()
    assert.is_true(helper.ok(s:cron(x, "@hourly", name, nil, { owner = "o1" })))
    assert.is_false(s:uncron(x, { owner = "o2" }))
    assert.equals("o1", crons_by_id()[x].owner)
    -- code declares it again: it is code's now, the owner's removal misses it
    assert.is_true(helper.ok(s:cron(x, "@hourly", name)))
    assert.is_nil(crons_by_id()[x].owner)
    assert.is_false(s:uncron(x, { owner = "o1" }))
    assert.is_true(s:uncron(x))
    assert.has_error(function() s:cron(x, "@hourly", name, nil, { owner = "" }) end)
    s:close()
  end)
end)
