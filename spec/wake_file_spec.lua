-- The SQLite wake file (PATH-wake) is no way in (issue 14, item 9).  Someone
-- who can create files next to the database, but not write the database,
-- plants something at the wake path before a worker (here: running as root,
-- the dangerous case) opens it: a symbolic link to a file of another user,
-- to an /etc/passwd-like file, to a file that does not exist yet; a FIFO; a
-- directory; a file owned by another user; a hard link.  Each time the thing
-- planted and whatever it leads to must be left exactly as they were (not
-- written, not created, not chowned, no change of mode), the worker must say
-- why it does without the file, and jobs must still run: at once when due at
-- start, within the 15 s fallback check when scheduled while it sleeps.
-- Tagged #sqlite: `make test` runs it in the SQLite pass only.
local helper = require "spec.helper"

local shquote = helper.shquote
local ROOT = helper.sh("id -u"):match("%d+") == "0"
local NOBODY = tonumber((helper.sh("id -u nobody"):match("%d+"))) or 65534

--- Everything stat(1) says about a path, without following a final link,
--- and the file's contents (or link target), to compare before and after.
local function snapshot(path)
  local out = helper.sh(("stat -c '%%F|%%u|%%g|%%a|%%s|%%h|%%y|%%z|%%i' %s 2>/dev/null"):format(shquote(path)))
  local what = out:gsub("%s+$", "")
  if what == "" then return "absent" end
  local kind = what:match("^([^|]*)")
  local content
  if kind == "symbolic link" then
    content = "-> " .. helper.sh("readlink " .. shquote(path)):gsub("%s+$", "")
  elseif kind == "regular file" or kind:match("regular empty file") then
    content = helper.read_file(path)
  elseif kind == "directory" then
    content = helper.sh("ls -A " .. shquote(path))
  end
  return what .. "\n" .. tostring(content)
end

local function sh_ok(cmd)
  local out, ok = helper.sh(cmd .. " 2>&1")
  assert(ok, cmd .. ": " .. out)
end

--- A database path in a fresh directory, and its wake path.
local function new_paths()
  local dir = helper.tmpdir()
  return dir .. "/jobs.db", dir .. "/jobs.db-wake", dir
end

--- Open the database with an instance whose warnings are collected, run a
--- due job through it, and return the warnings (one string).
local function run_one_job(db)
  local warnings = {}
  local s = helper.new { database = "sqlite:" .. db, log = function(level, msg)
    if level == "warn" then warnings[#warnings + 1] = msg end
  end }
  local name, ran = helper.name("wake"), 0
  local id = helper.schedule(s, name, "x")
  s:on(name, function() ran = ran + 1 end)
  assert.is_true(s:run { seconds = 0.3 })
  assert.equals(1, ran, "the job did not run")
  assert.is_nil(s:job(id))
  s:close()
  return table.concat(warnings, "\n")
end

describe("the SQLite wake file #sqlite", function()
  after_each(helper.cleanup)

  -- { what is planted, setup(wake, dir) -> paths to watch, words the warning says }
  local attacks = {
    { "a symbolic link to another user's file", function(wake, dir)
      local target = dir .. "/other-users-file"
      helper.write_file(target, "belongs to nobody\n")
      sh_ok(("chown %d %s && chmod 600 %s"):format(NOBODY, shquote(target), shquote(target)))
      sh_ok(("ln -s %s %s"):format(shquote(target), shquote(wake)))
      return { target }
    end, "symbolic link", true },
    { "a symbolic link to another user's empty file (the old code wrote it and chowned it)", function(wake, dir)
      local target = dir .. "/empty-of-nobody"
      sh_ok(("touch %s && chown %d %s && chmod 666 %s"):format(shquote(target), NOBODY, shquote(target),
        shquote(target)))
      sh_ok(("ln -s %s %s"):format(shquote(target), shquote(wake)))
      return { target }
    end, "symbolic link", true },
    { "a symbolic link to an /etc/passwd-like file of root's", function(wake, dir)
      local target = dir .. "/passwd"
      helper.write_file(target, "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/bin/false\n")
      sh_ok("chmod 644 " .. shquote(target))
      sh_ok(("ln -s %s %s"):format(shquote(target), shquote(wake)))
      return { target }
    end, "symbolic link" },
    { "a symbolic link to an empty file of root's, like /etc/cron.allow", function(wake, dir)
      local target = dir .. "/cron.allow"
      sh_ok("touch " .. shquote(target) .. " && chmod 644 " .. shquote(target))
      sh_ok(("ln -s %s %s"):format(shquote(target), shquote(wake)))
      return { target }
    end, "symbolic link" },
    { "a symbolic link to a file that does not exist yet (never created)", function(wake, dir)
      sh_ok("mkdir " .. shquote(dir .. "/etc.d"))
      local target = dir .. "/etc.d/planted"
      sh_ok(("ln -s %s %s"):format(shquote(target), shquote(wake)))
      return { target, dir .. "/etc.d" }
    end, "symbolic link" },
    { "a FIFO (opening it must not block)", function(wake)
      sh_ok("mkfifo " .. shquote(wake))
      return {}
    end, "FIFO" },
    { "a directory", function(wake)
      sh_ok("mkdir " .. shquote(wake))
      return {}
    end, "directory" },
    { "a file owned by another user (the old code wrote it and chowned it)", function(wake)
      sh_ok(("touch %s && chown %d %s && chmod 666 %s"):format(shquote(wake), NOBODY, shquote(wake),
        shquote(wake)))
      return {}
    end, "owned by uid " .. NOBODY, true },
    { "a hard link to an empty file elsewhere", function(wake, dir)
      local target = dir .. "/linked"
      sh_ok("touch " .. shquote(target) .. " && ln " .. shquote(target) .. " " .. shquote(wake))
      return { target }
    end, "hard links" },
  }
  for _, attack in ipairs(attacks) do
    local what, setup, says, needs_root = attack[1], attack[2], attack[3], attack[4]
    it(("planted at the wake path: %s; it is left untouched and jobs run"):format(what), function()
      if needs_root and not ROOT then
        pending("needs root (chown to nobody)")
        return
      end
      local db, wake, dir = new_paths()
      local watched = setup(wake, dir)
      table.insert(watched, 1, wake)
      local before = {}
      for i, p in ipairs(watched) do before[i] = snapshot(p) end
      local warnings = run_one_job(db)
      -- and a second instance on the same database, with the file now there
      local warnings2 = run_one_job(db)
      for i, p in ipairs(watched) do assert.equals(before[i], snapshot(p), p .. " was changed") end
      for _, w in ipairs { warnings, warnings2 } do
        assert.is_truthy(w:find("not using the wake-up file " .. wake, 1, true), "no warning: " .. w)
        assert.is_truthy(w:find(says, 1, true), ("the warning does not say %q: %s"):format(says, w))
        assert.is_truthy(w:find("within 15 s", 1, true), w)
      end
      assert.equals("ok", helper.sqlite("PRAGMA integrity_check", { path = db }))
    end)
  end

  it("a worker that creates the wake file gives it the database's owner (through its descriptor)", function()
    if not ROOT then
      pending("needs root (chown to nobody)")
      return
    end
    local db, wake = new_paths()
    assert.equals("", run_one_job(db)) -- creates the database, as root
    os.remove(wake)
    sh_ok(("chown %d %s && chmod 640 %s"):format(NOBODY, shquote(db), shquote(db)))
    assert.equals("", run_one_job(db))
    local info = snapshot(wake)
    assert.matches("^regular file|" .. NOBODY .. "|", info)
    assert.equals("\n", helper.read_file(wake))
    -- an existing wake file of the database's owner is used: no warning
    assert.equals("", run_one_job(db))
    assert.equals(info, snapshot(wake))
  end)

  it("an existing wake file of the database's owner is used as it is", function()
    local db, wake = new_paths()
    assert.equals("", run_one_job(db))
    local info = snapshot(wake)
    assert.matches("^regular file|", info)
    assert.equals("", run_one_job(db))
    assert.equals(info, snapshot(wake))
  end)

  describe("a sleeping worker #slow", function()
    it("without the file, wakes at its 15 s check; once the file is removed, at once again", function()
      local db, wake, dir = new_paths()
      local target = dir .. "/passwd"
      helper.write_file(target, "root:x:0:0:root:/root:/bin/bash\n")
      sh_ok(("ln -s %s %s"):format(shquote(target), shquote(wake)))
      local before = snapshot(target)
      local name = helper.name("sleeper")
      local p = helper.spawn { WORKER_NAMES = name, WORKER_MODE = "run", WORKER_DATABASE = "sqlite:" .. db }
      assert(p:wait_file("ready", 10), p:describe())
      helper.sleep(0.5) -- asleep
      local s = helper.new { database = "sqlite:" .. db }
      local t = helper.now()
      local id = helper.schedule(s, name, 1)
      local started = helper.wait_for(function() return p:events("start", id)[1] end, 15 + 5, 0.02)
      assert.is_truthy(started, "the job did not run within the fallback check\n" .. p:describe())
      local late = started.time - t
      assert.is_true(late < 15 + helper.SLACK, ("started %.2f s late"):format(late))
      assert.is_truthy(p:log():find("not using the wake-up file", 1, true), p:describe())
      assert.equals(before, snapshot(target))
      -- the operator removes the planted link: within WAKE_RETRY (15 s) the
      -- worker creates the file again and is woken at once from then on
      os.remove(wake)
      assert.is_truthy(helper.wait_for(function() return snapshot(wake):match("^regular file") end, 15 + 5, 0.1),
        "the worker did not create the wake file again\n" .. p:describe())
      s:close()
      s = helper.new { database = "sqlite:" .. db } -- a producer that finds the new file
      helper.sleep(0.3)
      t = helper.now()
      id = helper.schedule(s, name, 2)
      started = helper.wait_for(function() return p:events("start", id)[1] end, 5, 0.005)
      assert.is_truthy(started, p:describe())
      assert.is_true(started.time - t < 0.5, ("woken %.3f s after the job was scheduled"):format(started.time - t))
      assert.equals(before, snapshot(target))
    end)
  end)
end)
