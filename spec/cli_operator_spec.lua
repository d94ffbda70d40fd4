-- The operator's commands against hostile and bulky data (issue 17, items 2
-- and 3): every output path is linear in the size of the data, tables cut
-- long fields (--json and show give them whole); delete, bulk cancel and
-- purge report counts and never touch a running job; jobs/show say which
-- attempts limit the worker applies and where it comes from.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"
local json = require "dkjson"

local function decode(s)
  local v, _, err = json.decode(s, 1, json.null)
  if err then error("not JSON: " .. err .. "\n" .. s, 2) end
  return v
end

local function exec(...) return cli.exec({ ... }) end

local function assert_exit(code, r)
  assert.equals(code, r.code, cli.describe(r))
end

-- The longest line of a text.
local function widest(s)
  local w = 0
  for line in s:gmatch("[^\n]*") do w = math.max(w, utf8.len(line) or #line) end
  return w
end

describe("lua-scheduler with bulky data", function()
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  it("a 1 MB name, key and error list in well under a second (jobs, stats, show), cut in tables", function()
    -- made through the API (a command line cannot carry 1 MB), as anyone
    -- who can insert a job can; multibyte, with a newline and an escape
    local tag = helper.name("huge")
    -- (PostgreSQL's btree takes index entries up to 2704 bytes compressed:
    -- its name and key indexes refuse more, so there the name is as long
    -- as fits, 192 KB that compress well; quadratic, it took ~10 minutes)
    local size = helper.SQLITE and 1024 * 1024 or 192 * 1024
    local name = tag .. ("é\n\27["):rep(size // 5)
    local key = tag .. ("k"):rep(helper.SQLITE and 1024 * 1024 or 2000)
    local err = ("boom "):rep(200000) .. "\nsecond line"
    local s = helper.new()
    local id = helper.ok(s:schedule(name, { big = ("x"):rep(1024 * 1024) }, { key = key }))
    local other = helper.ok(s:schedule(tag .. "-small", nil, { delay = 3600 }))
    s:close()
    helper.sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = 2, last_error = %s"
      .. " WHERE id = %d"):format(helper.literal(err), id))
    finally(function()
      helper.sql(("DELETE FROM scheduler.jobs WHERE id IN (%d, %d)"):format(id, other))
    end)

    local function timed(...)
      local t, r = helper.timed(exec, ...)
      assert_exit(0, r)
      -- generous: quadratic layout took minutes for 100 KB; a subprocess
      -- start is ~30 ms
      assert.is_true(t < 1.5, ("%s took %.2f s"):format(table.concat({ ... }, " "), t))
      return r
    end

    local r = timed("stats")
    assert.is_true(#r.out < 10000, #r.out .. " bytes")
    assert.is_true(widest(r.out) < 200, r.out)
    assert.is_truthy(r.out:find(tag, 1, true), r.out)
    assert.is_falsy(r.out:find("\27", 1, true), "an escape reached the terminal")
    assert.is_truthy(r.out:find("...", 1, true), r.out)

    r = timed("jobs", "--limit", "0")
    assert.is_true(widest(r.out) < 300, r.out:sub(1, 2000))
    local line = r.out:match("\n(%s*" .. id .. " [^\n]*)")
    assert.is_truthy(line, r.out:sub(1, 2000))
    assert.matches("failed", line)
    assert.matches("boom boom", line) -- the error's first line, cut
    assert.is_falsy(line:find("second line", 1, true))

    r = timed("jobs", "--json", "--limit", "0")
    local whole
    for _, j in ipairs(decode(r.out)) do if j.id == id then whole = j end end
    assert.equals(name, whole.name)
    assert.equals(key, whole.key)
    assert.equals(err, whole.last_error)

    r = timed("show", tostring(id))
    assert.is_truthy(r.out:find(name, 1, true), "show gives the whole name")
    assert.is_truthy(r.out:find(key, 1, true), "show gives the whole key")
    assert.is_truthy(r.out:find("  second line", 1, true), "show gives the whole error")
    r = timed("show", tostring(id), "--json")
    assert.equals(name, decode(r.out).name)
    r = timed("stats", "--json")
    local found
    for _, row in ipairs(decode(r.out)) do if row.name == name then found = row end end
    assert.equals(1, found and found.failed)
  end)
end)
