-- schedule_many: many jobs in one transaction, ids in order.
local helper = require "spec.helper"

describe("schedule_many", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(function() helper.cleanup() end)

  it("stores every job and returns their ids in order", function()
    local name = helper.name("many")
    local ids = helper.ok(s:schedule_many {
      { name, { n = 1 } },
      { name, "two", { delay = 60, priority = 3 } },
      { name, nil, helper.now() - 1 },
      { name, { n = 4 }, { key = helper.name("k"), max_attempts = 2 } },
    })
    assert.are.equal(4, #ids)
    assert.are.same({ n = 1 }, s:job(ids[1]).payload)
    assert.are.equal("two", s:job(ids[2]).payload)
    assert.are.equal(3, s:job(ids[2]).priority)
    assert.is_true(s:job(ids[2]).run_at > helper.now() + 50)
    assert.is_nil(s:job(ids[3]).payload)
    assert.are.equal(2, s:job(ids[4]).max_attempts)
    -- the due ones run, earliest run_at first (item 3 is a second in the past)
    local seen = {}
    s:on(name, function(_, job) seen[#seen + 1] = job.id end)
    assert.are.equal(3, s:run { drain = true })
    assert.are.equal(ids[3], seen[1])
    table.sort(seen)
    assert.are.same({ ids[1], ids[3], ids[4] }, seen)
  end)

  it("keeps the key rule: an unfinished job with the key wins", function()
    local name, key = helper.name("manykey"), helper.name("key")
    local first = helper.ok(s:schedule(name, nil, { delay = 60, key = key }))
    local ids = helper.ok(s:schedule_many { { name, 1, { key = key } }, { name, 2 }, { name, 3, { key = key } } })
    assert.are.equal(first, ids[1])
    assert.are.equal(first, ids[3])
    assert.are_not.equal(first, ids[2])
    assert.are.equal(2, helper.count_jobs(name))
  end)

  it("stores all of a large list (several statements, one transaction)", function()
    local name = helper.name("bulk")
    local list = {}
    for i = 1, 25000 do list[i] = { name, { i = i } } end
    local ids = helper.ok(s:schedule_many(list))
    assert.are.equal(25000, #ids)
    for i = 2, #ids do assert.is_true(ids[i] > ids[i - 1]) end
    assert.are.same({ i = 12345 }, s:job(ids[12345]).payload)
    assert.are.equal(25000, helper.count_jobs(name))
  end)

  it("stores none when one item cannot be stored", function()
    local name = helper.name("atomic")
    local list = { { name, 1 }, { name, 2 }, { name, "a\0b" } }
    local ids, err = s:schedule_many(list)
    helper.runtime_error(ids, err, "NUL")
    assert.are.equal(0, helper.count_jobs(name))
    -- a payload that cannot be encoded raises, naming the item, before storing
    local ok, msg = pcall(s.schedule_many, s, { { name, 1 }, { name, { f = print } } })
    assert.is_false(ok)
    assert.matches("items%[2%]%.payload%.f", msg)
    assert.are.equal(0, helper.count_jobs(name))
  end)

  it("accepts an empty list and rejects bad items", function()
    assert.are.same({}, helper.ok(s:schedule_many {}))
    assert.has_error(function() s:schedule_many("x") end)
    assert.has_error(function() s:schedule_many { "x" } end)
    assert.has_error(function() s:schedule_many { { "" } } end)
    assert.has_error(function() s:schedule_many { { "x", nil, { when = 1 } } } end)
    assert.has_error(function() s:schedule_many { { "x", nil, { priority = -1 } } } end)
  end)
end)
