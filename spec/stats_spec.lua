-- stats() (counts by state, lateness, completions of the last minute) and
-- schema_version().
local helper = require "spec.helper"

-- The stats() row of `name`, or nil.
local function row_of(s, name)
  for _, r in ipairs(helper.ok(s:stats())) do
    if r.name == name then return r end
  end
end

-- SQL adding `n` completions of `name` at Unix time `t`, as the backend
-- under test records them.
local function completions_at(name, t, n)
  if helper.SQLITE then
    return ("INSERT INTO scheduler_completions (second, name, jobs) VALUES (%d, %s, %d)")
      :format(math.floor(t), helper.literal(name), n)
  end
  return ("INSERT INTO scheduler.completions (at, name, jobs) VALUES (%s, %s, %d)")
    :format(helper.sql_time(t), helper.literal(name), n)
end

local COMPLETIONS = helper.SQLITE and "scheduler_completions" or "scheduler.completions"

describe("stats()", function()
  local s
  before_each(function() s = helper.new{ backoff = function() return 3600 end } end)
  after_each(helper.cleanup)

  it("counts each name's jobs by state and says how late its oldest due job is", function()
    local name = helper.name("stats")
    helper.schedule(s, name, nil, helper.now() - 30)
    helper.schedule(s, name, nil)
    helper.schedule(s, name, nil, { delay = 3600 })
    local f = helper.schedule(s, name, nil)
    helper.sql("UPDATE scheduler.jobs SET state = 'failed' WHERE id = " .. f)
    local r = row_of(s, name)
    assert.same({ name = name, due = 2, later = 1, running = 0, failed = 1, done_last_minute = 0,
      late = r.late, paused = false }, r)
    assert.is_true(r.late >= 29 and r.late < 60, tostring(r.late))

    local other = helper.name("stats-later")
    helper.schedule(s, other, nil, { delay = 60 })
    r = row_of(s, other)
    assert.equals(1, r.later)
    assert.is_nil(r.late) -- none due
  end)

  it("counts completions of the last minute, not cancels, retries or failures", function()
    local name = helper.name("stats-done")
    for i = 1, 5 do helper.schedule(s, name, i) end
    helper.schedule(s, name, "retry")
    helper.schedule(s, name, "fail", { max_attempts = 1 })
    assert.is_true(s:cancel(helper.schedule(s, name, "cancelled")))
    s:on(name, function(payload)
      if type(payload) == "string" then error(payload) end
    end)
    assert.equals(7, s:run{ drain = true })
    local r = row_of(s, name)
    assert.equals(5, r.done_last_minute)
    assert.equals(1, r.later) -- the retry, an hour ahead
    assert.equals(1, r.failed)
    -- a name with no job left still shows its completions
    local gone = helper.name("stats-gone")
    helper.schedule(s, gone, nil)
    s:on(gone, function() end)
    assert.equals(1, s:run{ drain = true })
    assert.same({ name = gone, due = 0, later = 0, running = 0, failed = 0, done_last_minute = 1, paused = false },
      row_of(s, gone))
  end)

  it("forgets completions after a minute and prunes old ones as new ones arrive", function()
    local name = helper.name("stats-old")
    local now = helper.now()
    helper.sql(completions_at(name, now - 20, 2))
    helper.sql(completions_at(name, now - 90, 7))
    helper.sql(completions_at(name, now - 600, 11)) -- (last: SQLite prunes when a bucket is added)
    assert.equals(2, row_of(s, name).done_last_minute)
    local count = "SELECT count(*) FROM " .. COMPLETIONS .. " WHERE name = " .. helper.literal(name)
    assert.equals(3, helper.sql_int(count))
    helper.schedule(s, name, nil)
    s:on(name, function() end)
    assert.equals(1, s:run{ drain = true })
    assert.equals(3, row_of(s, name).done_last_minute)
    -- the 10-minute-old row is gone, merged into the name's total (see
    -- metrics_spec); the 90-second-old one stays (kept 2 minutes)
    local merged = helper.SQLITE and " AND second = 0" or " AND at = '-infinity'"
    assert.equals(0, helper.sql_int(count .. " AND jobs = 11 AND NOT (1 = 1" .. merged .. ")"))
    assert.equals(1, helper.sql_int(count .. " AND jobs = 11" .. merged))
    assert.equals(1, helper.sql_int(count .. " AND jobs = 7"))
  end)

  it("counts the completions of several workers", function()
    local name = helper.name("stats-workers")
    local other = helper.new()
    for i = 1, 40 do helper.schedule(s, name, i) end
    local ran = 0
    s:on(name, function() ran = ran + 1; if ran == 10 then other:run{ drain = true } end end)
    other:on(name, function() end)
    assert.is_true(s:run{ drain = true } >= 10)
    helper.drain_until(s, function() return helper.count_jobs(name) == 0 end)
    assert.equals(40, row_of(s, name).done_last_minute)
  end)
end)

describe("schema_version()", function()
  after_each(helper.cleanup)

  it("is the number of applied migrations, at least 3 (completions)", function()
    local s = helper.new()
    local v = helper.ok(s:schema_version())
    assert.equals("integer", math.type(v))
    assert.equals(helper.sql_int("SELECT max(version) FROM scheduler.migrations"), v)
    assert.is_true(v >= 3)
  end)

  it("upgrades a database at version 5 that holds jobs to 18, and they run #postgresql", function()
    local dbname, database = helper.new_database("lua_scheduler_v5", finally)
    local old = helper.new{ database = database }
    assert.equals(18, helper.ok(old:schema_version()))
    old:close()
    -- the schema as version 5 left it: jobs_wake on (name, run_at), no
    -- claim tokens, quarantine or batch records (7), no suspects (8), no
    -- schedule owners (9), no paused names (10), no history (11), no limits (12),
    -- no partitions (13), no counters for metrics (14), no start lateness
    -- (15), no rates (16), no partition column (17), no holds for rates (18)
    helper.psql([[
      DROP INDEX scheduler.jobs_wake;
      CREATE INDEX jobs_wake ON scheduler.jobs (name, run_at) WHERE state = 'scheduled';
      DROP TRIGGER jobs_part ON scheduler.jobs;
      DROP FUNCTION scheduler.fill_part();
      DROP FUNCTION scheduler.part_heads(text);
      DROP FUNCTION scheduler.some_free(text[]);
      DROP FUNCTION scheduler.quarantine_due(text[]);
      ALTER TABLE scheduler.jobs DROP COLUMN claim, DROP COLUMN quarantined, DROP COLUMN suspects,
        DROP COLUMN part;
      DROP SEQUENCE scheduler.claim_tokens;
      DROP TABLE scheduler.batches;
      DROP TABLE scheduler.cancels;
      ALTER TABLE scheduler.crons DROP COLUMN owner;
      DROP TABLE scheduler.paused;
      DROP TABLE scheduler.history;
      DROP FUNCTION scheduler.limit_free(text[]);
      DROP FUNCTION scheduler.part(text, text, jsonb);
      DROP FUNCTION scheduler.at_limit(text, text, jsonb);
      DROP FUNCTION scheduler.rate_hold(bigint[]);
      DROP FUNCTION scheduler.rate_ahead();
      DROP FUNCTION scheduler.rate_look(integer, float8);
      DROP FUNCTION scheduler.rate_tokens(integer, float8, timestamptz, timestamptz);
      DROP FUNCTION scheduler.rate_step(integer, float8);
      DROP FUNCTION scheduler.rate_burst(integer);
      DROP TABLE scheduler.limit_rates;
      DROP TABLE scheduler.limits;
      DROP TABLE scheduler.failures;
      DROP TABLE scheduler.durations;
      DROP FUNCTION scheduler.count_failure() CASCADE;
      DELETE FROM scheduler.migrations WHERE version IN (6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18);
      SELECT scheduler.schedule('v5', to_jsonb(i)) FROM generate_series(1, 300) AS i;]],
      { dbname = dbname })
    local w = helper.new{ database = database }
    assert.equals(18, helper.ok(w:schema_version()))
    assert.equals("CREATE INDEX jobs_wake ON scheduler.jobs USING btree (name, run_at, id)"
      .. " WHERE (state = 'scheduled'::text)",
      helper.psql("SELECT pg_get_indexdef('scheduler.jobs_wake'::regclass)", { dbname = dbname }))
    local seen = {}
    w:on("v5", function(payload) seen[#seen + 1] = payload end)
    assert.equals(300, w:run{ drain = true })
    table.sort(seen)
    for i = 1, 300 do assert.equals(i, seen[i]) end
  end)

  it("returns nil, err when the database cannot be used", function()
    local s = helper.new { database = "sqlite:/nonexistent-dir/x.db" }
    helper.runtime_error(s:schema_version())
  end)
end)
