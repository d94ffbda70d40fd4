-- Hostile input: names, keys, payloads and times built to break quoting,
-- encodings, limits and parsers.  Each is stored and returned exactly (by
-- job(id) and to the listener) or refused with a clear error: a raise for a
-- value no backend could hold the same way, nil, err for what the database
-- refuses; never a crash, never an injection.  payload_spec covers the
-- ordinary payload values (quotes, SQL, control characters, 1 MB strings,
-- unserializable values); this file covers names and keys, sizes, depths,
-- number edges and payloads written by other programs.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"

-- Names and keys that must come back byte for byte.
local HOSTILE = {
  { "quotes", [[it's "quoted" `x`]] },
  { "backslashes", [[C:\dir\ \\ \" \n \u0000 \]] },
  { "SQL", "x'); DROP TABLE scheduler.jobs; --" },
  { "SQL in double quotes", 'x"; DELETE FROM scheduler.jobs; --' },
  { "array literal syntax", '{a,"b"},NULL,\\}' },
  { "the word NULL", "NULL" },
  { "format strings and placeholders", "%s %d %n %% $1 $$ $tag$ ? :name" },
  { "LIKE and pattern characters", "%_[]*.^$()+-" },
  { "whitespace and control characters", " \t\r\n\1\31\127 " },
  { "unicode", "naïve — 日本語 🎉 \u{10FFFF}" },
  { "JSON", '{"name": [1, 2], "x": null}' },
  { "2 KB of quotes and backslashes", ("n\"'\\"):rep(512) },
}

-- Invalid UTF-8: a stray byte, an overlong '/', a surrogate, a truncated
-- sequence, a code point above U+10FFFF.
local BAD_UTF8 = { "\xff", "a\xc0\xafb", "\xed\xa0\x80", "end\xe2\x82", "\xf4\x90\x80\x80" }

local function nest(depth, make)
  local v = "bottom"
  for _ = 1, depth do v = make(v) end
  return v
end

-- Floats compared bit for bit (== cannot tell -0.0 from 0.0).
local function bits(x) return string.pack("<d", x) end

-- Equal values, subtypes and float bits, without recursion (the values
-- nest 10,000 deep).
local function assert_same(want, got)
  local stack = { { want, got, "payload" } }
  while #stack > 0 do
    local w, g, path = table.unpack(table.remove(stack))
    if type(w) ~= type(g) then error(("%s: want a %s, got a %s"):format(path, type(w), type(g)), 2) end
    if type(w) == "number" then
      if math.type(w) ~= math.type(g) or (math.type(w) == "float" and bits(w) ~= bits(g)) or w ~= g then
        error(("%s: want %s %.17g, got %s %.17g"):format(path, math.type(w), w, math.type(g), g), 2)
      end
    elseif type(w) == "table" then
      local n = 0
      for k, v in pairs(w) do
        n = n + 1
        stack[#stack + 1] = { v, g[k], path .. "[" .. tostring(k) .. "]" }
      end
      for _ in pairs(g) do n = n - 1 end
      if n ~= 0 then error(path .. ": not the same keys", 2) end
    elseif w ~= g then
      error(("%s: want %q, got %q"):format(path, tostring(w):sub(1, 80), tostring(g):sub(1, 80)), 2)
    end
  end
end

describe("hostile input", function()
  local s, sentinel
  before_each(function()
    s = helper.new{ backoff = function() return 60 end }
    sentinel = helper.schedule(s, helper.name("sentinel"), nil, { delay = 3600 })
  end)
  after_each(function()
    -- nothing injected: the table and the other jobs are still there
    assert.equals("scheduled", helper.ok(s:job(sentinel)).state)
    helper.cleanup()
  end)

  describe("names and keys are stored, claimed and returned exactly:", function()
    for _, case in ipairs(HOSTILE) do
      it(case[1], function()
        local name = case[2] .. helper.name("")
        local key = helper.name("") .. case[2]
        local id = helper.schedule(s, name, case[2], { key = key })
        local job = helper.ok(s:job(id))
        assert.equals(name, job.name)
        assert.equals(key, job.key)
        assert.equals(case[2], job.payload)
        -- the key still deduplicates, byte for byte
        assert.equals(id, helper.schedule(s, name, "again", { key = key }))
        local other = helper.schedule(s, name, "other", { key = key .. "\t" })
        assert.are_not.equal(id, other)
        -- a listener registered under that name gets both jobs
        local got = {}
        s:on(name, function(payload, j) got[j.id] = { payload = payload, name = j.name, key = j.key } end)
        assert.equals(2, s:run{ drain = true })
        assert.same({ payload = case[2], name = name, key = key }, got[id])
        assert.same({ payload = "other", name = name, key = key .. "\t" }, got[other])
        assert.equals(0, helper.count_jobs(name))
      end)
    end

    it("a recurring schedule's id and name", function()
      for _, case in ipairs(HOSTILE) do
        local id, name = helper.name("cron") .. case[2], case[2] .. helper.name("")
        helper.ok(s:cron(id, "0 0 1 1 *", name, case[2]))
        local found
        for _, c in ipairs(helper.ok(s:crons())) do
          if c.id == id then found = c end
        end
        assert.is_table(found, case[1])
        assert.equals(name, found.name)
        assert.equals(case[2], found.payload)
        assert.is_true(s:uncron(id))
      end
    end)
  end)

  describe("NUL bytes", function()
    it("in a name or a key: nil, err and no row", function()
      local name = helper.name("nul")
      local id, err = s:schedule(name .. "\0tail", 1)
      helper.runtime_error(id, err, "NUL in the name")
      assert.is_truthy(err:find("NUL", 1, true), err)
      id, err = s:schedule(name, 1, { key = "k\0" .. name })
      helper.runtime_error(id, err, "NUL in the key")
      assert.is_truthy(err:find("NUL", 1, true), err)
      assert.equals(0, helper.count_jobs(name))
    end)

    it("in a listener's name raise (no job could have it)", function()
      helper.raises(function() s:on("a\0b", function() end) end, "NUL")
      -- and the instance still claims its other jobs
      local name = helper.name("after-nul")
      helper.schedule(s, name, nil)
      s:on(name, function() end)
      assert.equals(1, s:run{ drain = true })
    end)
  end)

  describe("invalid UTF-8 raises, naming it", function()
    local fn = function() end
    for i, bad in ipairs(BAD_UTF8) do
      it(("(%d) in a name, a key, a listener's name, a payload string or key, a cron id"):format(i), function()
        local name = helper.name("utf8")
        helper.raises(function() s:schedule(name .. bad, 1) end, "UTF-8")
        helper.raises(function() s:schedule(name, 1, { key = bad }) end, "UTF-8")
        helper.raises(function() s:schedule_many{ { name .. bad, 1 } } end, "UTF-8")
        helper.raises(function() s:on(name .. bad, fn) end, "UTF-8")
        helper.raises(function() s:schedule(name, { list = { "ok", bad } }) end, "payload.list[2]", "UTF-8")
        helper.raises(function() s:schedule(name, { [bad] = 1 }) end, "UTF-8")
        helper.raises(function() s:cron(name .. bad, "* * * * *", name) end, "UTF-8")
        assert.equals(0, helper.count_jobs(name))
      end)
    end
  end)

  describe("sizes", function()
    it("a 10 MB payload string comes back exactly, to job() and to the listener", function()
      local name = helper.name("10mb")
      local big = ("\"\\'\n€xy"):rep(10 * 2 ^ 20 // 8)
      assert.is_true(#big >= 10 * 2 ^ 20 - 8)
      local id = helper.schedule(s, name, { big = big })
      assert.is_true(helper.ok(s:job(id)).payload.big == big, "job(id) changed the string")
      local got
      s:on(name, function(p) got = p.big end)
      assert.equals(1, s:run{ drain = true })
      assert.is_true(got == big, "the listener got another string")
    end)

    it("a 10 MB name or key is stored exactly or refused with nil, err", function()
      local big = ("n"):rep(10 * 2 ^ 20) .. helper.name("")
      for _, when in ipairs { {}, { key = big } } do
        local name = when.key and helper.name("bigkey") or big
        local ok, id, err = pcall(s.schedule, s, name, 1, when)
        assert.is_true(ok, tostring(id))
        if id then
          local job = helper.ok(s:job(id))
          assert.is_true(job.name == name and job.key == when.key, "not stored exactly")
          assert.is_true(s:cancel(id))
        else
          helper.runtime_error(id, err, "a 10 MB name or key")
        end
      end
    end)

    it("10,000 levels of arrays and of objects come back exactly", function()
      local name = helper.name("deep")
      local arrays = nest(10000, function(v) return { v } end)
      local objects = nest(10000, function(v) return { x = v, n = 1 } end)
      local ids = { helper.schedule(s, name, arrays), helper.schedule(s, name, objects) }
      assert_same(arrays, helper.ok(s:job(ids[1])).payload)
      assert_same(objects, helper.ok(s:job(ids[2])).payload)
      local got = {}
      s:on(name, function(p, job) got[job.id] = p end)
      assert.equals(2, s:run{ drain = true })
      assert_same(arrays, got[ids[1]])
      assert_same(objects, got[ids[2]])
    end)

    it("10,001 levels raise on both backends (PostgreSQL's jsonb refuses ~14,500), naming the limit", function()
      local name = helper.name("too-deep")
      for _, n in ipairs { 10001, 15000, 20001 } do
        helper.raises(function() s:schedule(name, nest(n, function(v) return { v } end)) end,
          "nesting deeper than 10000 levels")
        helper.raises(function() s:schedule_many { { name, nest(n, function(v) return { x = v } end) } } end,
          "nesting deeper than 10000 levels")
      end
      assert.equals(0, helper.count_jobs(name))
    end)
  end)

  describe("numbers", function()
    it("edge values come back bit for bit, integers as integers and floats as floats", function()
      local name = helper.name("numbers")
      local values = {
        math.maxinteger, math.mininteger, math.maxinteger - 1, -1, 0,
        2.0 ^ 63, -2.0 ^ 63, 2.0 ^ 64, 2.0 ^ 53, 2.0 ^ 53 + 2, 1e300, -1e308, 1.7976931348623157e308,
        5e-324, 2.2250738585072014e-308, 1e-300, 123456789.12345679, 1 / 3, 0.0,
      }
      local id = helper.schedule(s, name, values)
      assert_same(values, helper.ok(s:job(id)).payload)
      local got
      s:on(name, function(p) got = p end)
      assert.equals(1, s:run{ drain = true })
      assert_same(values, got)
    end)

    it("-0.0 comes back as the float 0.0 on every backend", function()
      local id = helper.schedule(s, helper.name("negzero"), { -0.0 }, { delay = 3600 })
      assert_same({ 0.0 }, helper.ok(s:job(id)).payload)
    end)

    it("NaN, infinities and out-of-range integers in times and options raise", function()
      local name = helper.name("bad-when")
      for _, when in ipairs {
        0 / 0, math.huge, -math.huge, { at = 0 / 0 }, { delay = math.huge }, { delay = -math.huge },
        { priority = math.maxinteger }, { priority = -1 }, { max_attempts = math.mininteger },
        { priority = 2.0 ^ 63 },
      } do
        helper.raises(function() s:schedule(name, 1, when) end)
      end
      assert.equals(0, helper.count_jobs(name))
    end)

    it("times far away are stored or refused with nil, err", function()
      local name = helper.name("far")
      for _, when in ipairs { { delay = 1e300 }, { at = 1e300 }, { at = -1e300 }, { delay = -1e300 } } do
        local ok, id, err = pcall(s.schedule, s, name, 1, when)
        assert.is_true(ok, tostring(id))
        if id then
          assert.equals("integer", math.type(id))
        else
          helper.runtime_error(id, err, "a far time")
        end
      end
    end)
  end)

  it("wake-up notifications of any shape from any client do not disturb a worker #postgresql", function()
    local name = helper.name("notify")
    helper.schedule(s, name, "first")
    local later
    local ran = {}
    s:on(name, function(payload)
      ran[#ran + 1] = { payload = payload, time = helper.now() }
      if payload == "first" then
        for _, junk in ipairs { "", " ", "x", "garbage " .. name, "-Infinity " .. name, "Infinity " .. name,
          "1e999 " .. name, ("9"):rep(400) .. " " .. name, "NaN " .. name, "-1 " .. name, "0 \\x'\"" } do
          helper.psql("SELECT pg_notify('scheduler', " .. helper.literal(junk) .. ")")
        end
        later = helper.now() + 0.5
        helper.schedule(s, name, "second", later)
      else
        s:stop()
      end
    end)
    assert.is_true(s:run{ seconds = 30 })
    assert.equals(0, helper.count_jobs(name),
      helper.sql("SELECT last_error FROM scheduler.jobs WHERE name = " .. helper.literal(name)))
    assert.equals(2, #ran)
    assert.equals("second", ran[2].payload)
    assert.is_true(ran[2].time >= later - 0.01 and ran[2].time < later + helper.SLACK,
      ("ran %.3f s after its time"):format(ran[2].time - later))
  end)

  describe("payloads written by another program", function()
    local function insert(name, json)
      return helper.sql_int(("INSERT INTO scheduler.jobs (name, payload) VALUES (%s, %s) RETURNING id")
        :format(helper.literal(name), helper.literal(json)))
    end

    local function check_refused(name, id, reason, stored)
      local called = false
      s:on(name, function() called = true end)
      assert.equals(1, s:run{ drain = true })
      assert.is_false(called, "the listener was called with an unreadable payload")
      -- job() shows the job: no payload, why, and the text as stored (the
      -- database's own rendering of it on PostgreSQL); jobs() lists it
      -- beside the others (one such row never fails a listing), and so
      -- do `show` and `jobs --json`
      local j = helper.ok(s:job(id))
      assert.is_nil(j.payload)
      assert.is_truthy(j.payload_error:find(reason, 1, true), j.payload_error)
      if helper.SQLITE then assert.equals(stored, j.payload_text) end
      helper.schedule(s, name, { fine = true }, { delay = 3600 })
      local listed = helper.ok(s:jobs { name = name })
      assert.equals(2, #listed)
      assert.equals(id, listed[1].id)
      assert.equals(j.payload_error, listed[1].payload_error)
      assert.same({ fine = true }, listed[2].payload)
      local shown = cli.exec { "show", tostring(id) }
      assert.equals(0, shown.code, cli.describe(shown))
      assert.is_truthy(shown.out:find("does not decode: " .. j.payload_error, 1, true), shown.out)
      local listing = cli.exec { "jobs", "--name", name, "--json" }
      assert.equals(0, listing.code, cli.describe(listing))
      local rows = cli.decode(listing.out)
      assert.equals(j.payload_error, rows[1].payload_error)
      -- (JSON is UTF-8: each byte of an invalid sequence reads U+FFFD)
      assert.equals(require("scheduler.cli.text").utf8(j.payload_text), rows[1].payload_text)
      -- the reason is its last error too; the job is kept
      local last = helper.sql("SELECT state || ' ' || last_error FROM scheduler.jobs WHERE id = " .. id)
      assert.is_truthy(last:find("^scheduled payload of job " .. id .. ": invalid JSON at byte %d+: " .. reason:gsub("%p", "%%%0")), last)
    end

    it("a number out of range fails the job with a clear error, never the worker", function()
      local name = helper.name("out-of-range")
      check_refused(name, insert(name, '{"n": 1e400}'), "number out of range", '{"n": 1e400}')
    end)

    it("text that is not JSON fails the job with a clear error #sqlite", function()
      for _, case in ipairs {
        { "not json", "unexpected character 'n'" },
        { '{"a": [1, 2', "unexpected end of input" },
        { '{"a": "\xff"}', "invalid UTF-8 in string" },
        { "[" .. ("["):rep(30000), "nesting deeper than 20000 levels" },
      } do
        local name = helper.name("not-json")
        check_refused(name, insert(name, case[1]), case[2], case[1])
      end
    end)
  end)
end)
