--- Scenario wake_symlink (issue 14, item 9): `lua-scheduler run --workers 2`,
-- as root, on an SQLite database whose wake path (PATH-wake) someone who
-- can write the database's directory has made a symbolic link to an empty
-- file of another user (nobody, mode 666) before the database existed.
-- Following the link, a worker would write its byte into that file and chown
-- it to the database's owner (what the code did before this scenario
-- existed).  The target must be left exactly as it was (contents, owner,
-- mode, times), the link too, the workers must log why they do without the
-- file, and every job must run exactly once (independent record): 400
-- scheduled before the workers start and due over 3 s (the workers see them
-- when they look and sleep until each is due: on time), then 5 scheduled
-- one by one while the workers sleep, which only the 15 s fallback check
-- finds (the p99 and max of the lateness column are theirs).
local lib = require "faults.lib"
local scheduler = require "scheduler"

--- stat(1) of a path (not following a final link) and its contents.
local function snapshot(path)
  local info = lib.sh(("stat -c '%%F|%%u|%%g|%%a|%%s|%%h|%%y|%%z|%%i' %s"):format(lib.q(path))):gsub("%s+$", "")
  local kind = info:match("^([^|]*)")
  local content = kind == "symbolic link" and lib.sh("readlink " .. lib.q(path)) or lib.read_file(path)
  return info .. "\n" .. tostring(content)
end

return {
  title = "wake_symlink: SQLite wake path planted as a symlink to another user's file",
  run = function(ctx, r)
    local uid = lib.sh("id -u"):match("%d+")
    if not r:check(uid == "0", "runs as root (the case where a worker would chown what it opened)") then return end
    local nobody = lib.sh("id -u nobody"):match("%d+") or "65534"
    local dir = lib.tmpdir("wake-symlink")
    local db, wake, target = dir .. "/jobs.db", dir .. "/jobs.db-wake", dir .. "/nobodys-file"
    local out, ok = lib.sh(("touch %s && chown %s %s && chmod 666 %s && ln -s %s %s"):format(lib.q(target), nobody,
      lib.q(target), lib.q(target), lib.q(target), lib.q(wake)))
    if not r:check(ok, "planted " .. wake .. " -> " .. target .. " (owned by nobody, empty, mode 666) " .. out) then
      return
    end
    local target_before, link_before = snapshot(target), snapshot(wake)

    -- the first jobs, scheduled before the workers start (this creates the
    -- database): the workers see them when they look, and sleep until each
    -- is due
    local s <close> = scheduler.new { database = "sqlite:" .. db, log = false }
    local ids, due = {}, {}
    local t0 = lib.now()
    local list = {}
    for i = 1, 400 do list[i] = { lib.JOB, { seq = i }, t0 + 2 + 3 * (i - 1) / 399 } end
    local got = assert(s:schedule_many(list))
    for i, id in ipairs(got) do ids[#ids + 1] = id; due[id] = list[i][3] end
    local records = lib.tmpdir("wake-symlink-records")
    local rec = lib.records(records)
    local sup = lib.start_run("wake-symlink", 2, records, { LUA_SCHEDULER_DATABASE = "sqlite:" .. db })
    r:check(sup:wait_log("started: listeners", 1, 20), "the supervisor started", sup)
    r:check(rec:wait_all(ids, 20), "the 400 jobs due 2 to 5 s after they were scheduled ran", sup)
    -- now the workers sleep: jobs due at once are found by the fallback check
    for i = 1, 5 do
      lib.sleep(1)
      local id = assert(s:schedule(lib.JOB, { seq = 400 + i }))
      ids[#ids + 1] = id
      due[id] = lib.now()
    end
    r:check(rec:wait_all(ids, 15 + 10), "the 5 jobs scheduled while the workers slept ran (fallback check)", sup)
    lib.sleep(0.5) -- a duplicate would show by now
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
    rec:read()

    local late, known, slept = {}, {}, {}
    for i, id in ipairs(ids) do
      local run = rec.by_id[id] and rec.by_id[id][1]
      if run then
        late[#late + 1] = run.start - due[id]
        if i > 400 then slept[#slept + 1] = ("%.1f"):format(run.start - due[id]) else known[#known + 1] = late[#late] end
      end
    end
    r.lateness = lib.spread(late)
    r:note("the 400 jobs known to the workers: lateness " .. lib.fmt_spread(lib.spread(known)))
    r:note("the 5 jobs scheduled while the workers slept started after (s): " .. table.concat(slept, ", "))
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function() return nil end)
    r:check(snapshot(target) == target_before, "the link's target is untouched: contents, owner (nobody), mode, times")
    r:check(snapshot(wake) == link_before, "the planted link itself is untouched")
    local warned = sup:count_log("not using the wake-up file " .. wake .. ": it is a symbolic link")
    r:check(warned >= 1, ("the workers logged why they do without the wake file (%d lines)"):format(warned), sup)
  end,
}
