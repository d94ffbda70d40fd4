-- Payloads: every JSON-serializable Lua value comes back equal (and with the
-- same integer/float subtype) through job(id).payload and through the
-- listener's argument; values that cannot be serialized raise, naming the
-- problem, and leave no row behind.
local helper = require "spec.helper"

local function deep(n)
  local t = { leaf = "bottom", n = n }
  for i = n - 1, 1, -1 do t = { child = t, n = i } end
  return t
end

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- { label, value, subtype } -- subtype: math.type the value must come back as
local cases = {
  { "nil", nil },
  { "true", true },
  { "false", false },
  { "zero", 0, "integer" },
  { "an integer", 42, "integer" },
  { "a negative integer", -7, "integer" },
  { "math.maxinteger", math.maxinteger, "integer" },
  { "math.mininteger", math.mininteger, "integer" },
  { "2^53 + 1", 9007199254740993, "integer" },
  { "the float 0.1", 0.1, "float" },
  { "the float 1.0", 1.0, "float" },
  { "the float -2.5", -2.5, "float" },
  { "the float 0.0", 0.0, "float" },
  { "0.1 + 0.2 (17 significant digits)", 0.1 + 0.2, "float" },
  { "math.pi", math.pi, "float" },
  { "a tiny float", 1.5e-10, "float" },
  { "a huge float", 1e300 },
  { "an empty string", "" },
  { "quotes", [[she said "hi" and 'bye' `tick`]] },
  { "backslashes", [[C:\path\to\file \" \\ \n \u0041]] },
  { "unicode", "héllo wörld — 日本語 🎉 \u{10FFFF}" },
  { "control characters", "line1\nline2\ttab\rcr\1\31\127\b\f" },
  { "SQL", "'); DROP TABLE scheduler.jobs; -- " },
  { "dollar quotes and format strings", "$$ $tag$ %s %d %% ?" },
  { "a JSON-looking string", '{"a": 1, "b": [true, null]}' },
  { "a number-looking string", "42" },
  { "a float-looking string", "1.0" },
  { "the string null", "null" },
  { "the string true", "true" },
  { "an array", { 1, 2, 3 } },
  { "an array of mixed values", { 1, "two", 3.5, true, false, { x = 1 }, {} } },
  { "an array with holes", { 1, nil, 3, nil, 5 } },
  { "nested tables", { a = { b = { c = { 1, 2, { d = "e" } } } }, list = { { 1 }, { "x" } } } },
  { "string keys that look like numbers", { ["1"] = "a", ["2"] = "b", ["-3"] = "c" } },
  { "odd string keys", { ["quo\"te"] = 1, ["sp ace"] = 2, ["ünï"] = 3, [""] = 4, ["'; --"] = 5 } },
  { "an empty table", {} },
  { "a 1 MB string", string.rep("0123456789abcdef", 2 ^ 16) },
  { "a 1 MB string of awkward characters", string.rep("'\"\\\n€", 2 ^ 20 // 8) },
  { "a 10000-element array", range(10000) },
  { "50 levels of nesting", deep(50) },
}

-- Compare `got` with `want` including integer/float subtypes everywhere.
local function check_equal(want, got, path)
  path = path or "payload"
  if type(want) ~= type(got) then
    error(("%s: want %s (%s), got %s (%s)"):format(path, tostring(want), type(want),
      tostring(got), type(got)), 0)
  end
  if type(want) == "number" then
    if want ~= got then error(("%s: want %.17g, got %.17g"):format(path, want, got), 0) end
    if math.type(want) ~= math.type(got) and math.abs(want) < 1e15 then
      error(("%s: want a %s, got a %s"):format(path, math.type(want), math.type(got)), 0)
    end
  elseif type(want) == "table" then
    for k, v in pairs(want) do check_equal(v, got[k], path .. "[" .. ("%q"):format(k) .. "]") end
    for k in pairs(got) do
      if want[k] == nil then
        error(("%s: unexpected key %s (%s)"):format(path, tostring(k), type(k)), 0)
      end
    end
  elseif want ~= got then
    local function show(x)
      x = tostring(x)
      return #x > 80 and (("%q"):format(x:sub(1, 80)) .. "... (" .. #x .. " bytes)") or ("%q"):format(x)
    end
    error(("%s: want %s, got %s"):format(path, show(want), show(got)), 0)
  end
end

describe("payload", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(helper.cleanup)

  describe("round-trips through job(id).payload:", function()
    for _, case in ipairs(cases) do
      local label, value, subtype = case[1], case[2], case[3]
      it(label, function()
        local id = helper.schedule(s, helper.name("payload"), value, { delay = 3600 })
        local job = helper.ok(s:job(id))
        check_equal(value, job.payload)
        if subtype then assert.equals(subtype, math.type(job.payload)) end
      end)
    end
  end)

  describe("reaches the listener equal:", function()
    for _, case in ipairs(cases) do
      local label, value, subtype = case[1], case[2], case[3]
      it(label, function()
        local name = helper.name("payload-listener")
        local id = helper.schedule(s, name, value)
        local calls = {}
        s:on(name, function(...)
          calls[#calls + 1] = table.pack(...)
        end)
        assert.equals(1, s:run{ drain = true })
        assert.equals(1, #calls)
        local payload, job = calls[1][1], calls[1][2]
        check_equal(value, payload)
        if subtype then assert.equals(subtype, math.type(payload)) end
        assert.equals(id, job.id)
      end)
    end
  end)

  it("passes nil as an explicit first argument", function()
    local name = helper.name("nil-arg")
    helper.schedule(s, name, nil)
    local n, first, second
    s:on(name, function(...) n = select("#", ...); first, second = ... end)
    assert.equals(1, s:run{ drain = true })
    assert.is_true(n >= 2)
    assert.is_nil(first)
    assert.equals("table", type(second))
  end)

  it("gives every job its own payload table", function()
    local name = helper.name("fresh")
    local shared = { list = { 1 } }
    helper.schedule(s, name, shared)
    helper.schedule(s, name, shared)
    local seen = {}
    s:on(name, function(payload)
      seen[#seen + 1] = payload
      payload.list[#payload.list + 1] = "mutated"
    end)
    assert.equals(2, s:run{ drain = true })
    assert.same({ 1 }, shared.list)                -- the caller's table is untouched
    assert.same({ list = { 1, "mutated" } }, seen[1])
    assert.same({ list = { 1, "mutated" } }, seen[2])
    assert.are_not.equal(seen[1], seen[2])
  end)

  describe("that cannot be serialized raises, naming the problem, and stores nothing:", function()
    local name
    before_each(function() name = helper.name("unserializable") end)
    after_each(function() assert.equals(0, helper.count_jobs(name)) end)

    it("a function", function()
      helper.raises(function() s:schedule(name, print) end, "function")
    end)

    it("a function inside a table", function()
      helper.raises(function() s:schedule(name, { a = { b = function() end } }) end, "function")
    end)

    it("userdata", function()
      helper.raises(function() s:schedule(name, io.stdout) end, "userdata")
      helper.raises(function() s:schedule(name, { file = io.stderr }) end, "userdata")
    end)

    it("a coroutine", function()
      helper.raises(function() s:schedule(name, { co = coroutine.create(print) }) end, "thread")
    end)

    it("a cyclic table", function()
      local t = { a = 1 }
      t.self = t
      helper.raises(function() s:schedule(name, t) end, { "cycl", "circular", "recurs", "loop" })
      local a, b = {}, {}
      a[1] = b
      b[1] = a
      helper.raises(function() s:schedule(name, { a }) end, { "cycl", "circular", "recurs", "loop" })
    end)

    it("a table with mixed keys", function()
      helper.raises(function() s:schedule(name, { 1, 2, x = 3 }) end, { "mixed", "key" })
      helper.raises(function() s:schedule(name, { nested = { [1] = "a", b = "c" } }) end, { "mixed", "key" })
    end)

    it("a table with non-string, non-integer keys", function()
      helper.raises(function() s:schedule(name, { [true] = 1 }) end, "key")
      helper.raises(function() s:schedule(name, { [1.5] = 1 }) end, "key")
      helper.raises(function() s:schedule(name, { [{}] = 1 }) end, "key")
    end)

    it("NaN and infinities", function()
      helper.raises(function() s:schedule(name, 0 / 0) end)
      helper.raises(function() s:schedule(name, { x = math.huge }) end)
      helper.raises(function() s:schedule(name, { -math.huge }) end)
    end)
  end)

  it("with a NUL byte is stored verbatim or refused with nil, err and no row", function()
    local name = helper.name("nul-payload")
    local value = { s = "before\0after" }
    local ok, id, err = pcall(s.schedule, s, name, value)
    assert.is_true(ok, "schedule raised: " .. tostring(id))
    if id ~= nil then
      check_equal(value, helper.ok(s:job(id)).payload)
    else
      helper.runtime_error(id, err, "NUL in payload")
      assert.equals(0, helper.count_jobs(name))
    end
  end)

  it("is stored as JSON that SQL can read", function()
    local name = helper.name("jsonb")
    local id = helper.schedule(s, name, { to = "a@b.c", n = 3, tags = { "x", "y" } }, { delay = 3600 })
    -- the same SQL on both backends: jsonb operators on PostgreSQL, the JSON
    -- operators of SQLite (3.38+) on its TEXT column
    assert.equals("a@b.c|3|y", helper.sql(
      ("SELECT payload->>'to' || '|' || (payload->>'n') || '|' || (payload->'tags'->>1) FROM scheduler.jobs WHERE id = %d")
        :format(id)))
  end)
end)
