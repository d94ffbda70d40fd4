--- scheduler.cli.listeners: finding and loading listener files.
--
-- A listener file is an ordinary Lua chunk that either calls
-- require("scheduler").on(name, fn [, opts]) or returns a table
-- { Name = function(payload, job) ... end, ... } (or both).  Loading runs
-- every file with `on` captured, so that nothing is registered until all
-- files loaded and no name is claimed twice; register() then hands the
-- captured listeners to a scheduler instance.
--
-- Recurring schedules.  `cron` (and `uncron`) are captured too: the
-- schedules a file declares belong to the files, under an owner tag (`run
-- --cron-owner`, default "default").  declare() (the supervisor, once at
-- start and at each reload; never the workers) declares them with that
-- owner and removes the schedules of that owner that no loaded file
-- declares any more, with the slot jobs they made that have not started.
-- Schedules declared from code (scheduler.cron outside listener files)
-- have no owner and are never removed here; those of another owner
-- neither.

local core = require "scheduler.core"
local scheduler = require "scheduler"

local listeners = {}

local function is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

--- The files named by `paths`: a file as is, a directory as its *.lua
-- files in sorted order.  Returns the list, or nil and a message naming the
-- path.
function listeners.files(paths)
  local files, seen = {}, {}
  local function add(f)
    if not seen[f] then
      seen[f] = true
      files[#files + 1] = f
    end
  end
  for _, path in ipairs(paths) do
    local is_dir, err = core.dir.is_dir(path)
    if is_dir == nil then
      return nil, ("cannot read listener file %s"):format(err)
    end
    if is_dir then
      local names, lerr = core.dir.list(path)
      if not names then return nil, ("cannot list directory %s"):format(lerr) end
      table.sort(names)
      local found = 0
      for _, name in ipairs(names) do
        local full = path:gsub("/+$", "") .. "/" .. name
        if name:match("%.lua$") and core.dir.is_dir(full) == false then
          add(full)
          found = found + 1
        end
      end
      if found == 0 then return nil, ("directory %s has no *.lua files"):format(path) end
    else
      add(path)
    end
  end
  return files
end

local function message_of(e)
  if type(e) ~= "string" then
    local ok, s = pcall(tostring, e)
    e = ok and s or "(error object is not a string)"
  end
  return e
end

--- Load `files` (from listeners.files).  Returns an array of
-- { name =, fn =, opts =, file = } in registration order, or nil and a
-- message: a syntax error names file:line, an error while running a file
-- names the file, a name registered twice names both places.
function listeners.load(files)
  local found, where = {}, {}
  local current
  local problem

  local function record(name, fn, opts, how)
    if problem then return end
    if type(name) ~= "string" or name == "" then
      problem = ("%s: %s: the listener name must be a non-empty string, got %s"):format(
        current, how, type(name) == "string" and "an empty string" or type(name))
      return
    end
    if not is_callable(fn) then
      problem = ("%s: listener %q must be a function, got %s"):format(current, name, type(fn))
      return
    end
    if where[name] then
      if where[name] == current then
        problem = ("listener %q is registered twice in %s"):format(name, current)
      else
        problem = ("listener %q is registered by two files: %s and %s"):format(name, where[name], current)
      end
      return
    end
    where[name] = current
    found[#found + 1] = { name = name, fn = fn, opts = opts, file = current }
  end

  local crons, cron_where, uncrons = {}, {}, {}
  local function record_cron(id, expr, name, payload, opts)
    if problem then return end
    if type(id) ~= "string" or id == "" then
      problem = ("%s: cron(): id must be a non-empty string"):format(current)
      return
    end
    if cron_where[id] then
      problem = ("recurring schedule %q is declared by two files: %s and %s"):format(id, cron_where[id],
        current)
      if cron_where[id] == current then
        problem = ("recurring schedule %q is declared twice in %s"):format(id, current)
      end
      return
    end
    if type(expr) ~= "string" then
      problem = ("%s: cron(%q): the expression must be a string"):format(current, id)
      return
    end
    if type(name) ~= "string" or name == "" then
      problem = ("%s: cron(%q): the job name must be a non-empty string"):format(current, id)
      return
    end
    if opts ~= nil and type(opts) ~= "table" then
      problem = ("%s: cron(%q): options must be a table"):format(current, id)
      return
    end
    if opts and opts.owner ~= nil then
      problem = ("%s: cron(%q): a listener file's schedules belong to its owner (run --cron-owner);"
        .. " remove the owner option"):format(current, id)
      return
    end
    -- the expression and zone now, so that a mistake names the file
    local ok, err = pcall(scheduler.next_times, expr, 1, { tz = opts and opts.tz })
    if not ok then
      problem = ("%s: cron(%q): %s"):format(current, id, tostring(err):gsub("^[^\n]-:%d+: ", ""))
      return
    end
    cron_where[id] = current
    crons[#crons + 1] = { id = id, expr = expr, name = name, payload = payload, opts = opts, file = current }
  end

  -- Capture the module-level functions a listener file may call while it
  -- loads; configure/run belong to the command.
  local saved = { on = scheduler.on, configure = scheduler.configure, run = scheduler.run,
    cron = scheduler.cron, uncron = scheduler.uncron }
  scheduler.on = function(name, fn, opts) record(name, fn, opts, "on()") end
  scheduler.cron = function(...)
    record_cron(...)
    return true
  end
  scheduler.uncron = function(id)
    if type(id) == "string" and id ~= "" then uncrons[#uncrons + 1] = id end
    return true
  end
  scheduler.configure = function()
    error("scheduler.configure is not available in a listener file: the lua-scheduler command"
      .. " configures the scheduler (--database, LUA_SCHEDULER_DATABASE)", 2)
  end
  scheduler.run = function()
    error("scheduler.run is not available in a listener file: the lua-scheduler command runs"
      .. " the listeners", 2)
  end
  local function restore()
    for k, v in pairs(saved) do scheduler[k] = v end
  end

  for _, file in ipairs(files) do
    local chunk, err = loadfile(file, "t")
    if not chunk then
      restore()
      return nil, err -- "file:line: message"
    end
    current = file
    local ok, ret = xpcall(chunk, message_of)
    if not ok then
      restore()
      local msg = tostring(ret)
      if not msg:find(file, 1, true) then msg = file .. ": " .. msg end
      return nil, "loading " .. msg
    end
    if ret ~= nil then
      if type(ret) ~= "table" then
        problem = problem or ("%s: a listener file returns nothing or a table of listeners, not a %s")
          :format(file, type(ret))
      else
        local names = {}
        for k in pairs(ret) do
          if type(k) ~= "string" then
            problem = problem or ("%s: the returned table has a key that is not a listener name: %s")
              :format(file, tostring(k))
          else
            names[#names + 1] = k
          end
        end
        table.sort(names)
        for _, name in ipairs(names) do record(name, ret[name], nil, "returned table") end
      end
    end
    if problem then
      restore()
      return nil, problem
    end
  end
  restore()
  if problem then return nil, problem end
  found.crons, found.uncrons = crons, uncrons
  if #found == 0 then
    return nil, "no listeners: " .. table.concat(files, ", ")
      .. " register none (call require(\"scheduler\").on(name, fn) or return { Name = fn })"
  end
  return found
end

--- Register loaded listeners on a scheduler instance (or the module, for
-- the default instance).  Returns true, or nil and a message naming the
-- file whose options were refused.
function listeners.register(found, target)
  for _, l in ipairs(found) do
    local ok, err = pcall(function()
      if target == scheduler then
        scheduler.on(l.name, l.fn, l.opts)
      else
        target:on(l.name, l.fn, l.opts)
      end
    end)
    if not ok then
      err = tostring(err):gsub("^[^\n]-:%d+: ", "") -- the position is this file's
      return nil, ("%s: listener %q: %s"):format(l.file, l.name, err)
    end
  end
  return true
end

--- Check the options the files passed to on() as a worker will register
-- them, on a scheduler instance that never connects.  Returns true, or nil
-- and a message naming the file.
function listeners.check(found, database)
  local ok, probe = pcall(scheduler.new, { database = database, log = false })
  if not ok then return true end -- a bad database string is reported on its own
  local done, err = listeners.register(found, probe)
  probe:close()
  return done, err
end

--- Declare the recurring schedules the files declared (found.crons) on
-- `api` (a scheduler instance) under `owner`, and remove those of `owner`
-- that they no longer declare, each with its slot jobs that have not
-- started (so that no job of it runs after this); `log(level, message)`
-- says what was removed.  A schedule declared last by code (no owner) or
-- by another owner is left alone.  Returns true, or nil and a message.
function listeners.declare(api, found, owner, log)
  local declared = {}
  for _, c in ipairs(found.crons or {}) do
    local opts = {}
    for k, v in pairs(c.opts or {}) do opts[k] = v end
    opts.owner = owner
    local ok, done, err = pcall(api.cron, api, c.id, c.expr, c.name, c.payload, opts)
    if not ok or not done then
      err = tostring(ok and err or done):gsub("^[^\n]-:%d+: ", "")
      return nil, ("%s: cron(%q): %s"):format(c.file, c.id, err)
    end
    declared[c.id] = true
  end
  for _, id in ipairs(found.uncrons or {}) do
    local done, err = api:uncron(id)
    if done == nil then return nil, err end
    if done then log("info", ("removed recurring schedule %q (uncron in a listener file)"):format(id)) end
  end
  local rows, err = api:crons()
  if not rows then return nil, err end
  for _, row in ipairs(rows) do
    if row.owner == owner and not declared[row.id] then
      local done, rerr = api:uncron(row.id, { owner = owner })
      if done == nil then return nil, rerr end
      if done then
        -- its slot jobs made ahead of time (key cron:<id>@<slot>), not started
        local cancelled = 0
        local jobs, jerr = api:jobs { name = row.name, state = "scheduled" }
        if not jobs then return nil, jerr end
        local prefix = "cron:" .. row.id .. "@"
        for _, j in ipairs(jobs) do
          if j.key and j.key:sub(1, #prefix) == prefix and j.key:sub(#prefix + 1):match("^%d+$")
              and j.attempt == 0 and api:cancel(j.id) then
            cancelled = cancelled + 1
          end
        end
        log("info", ("removed recurring schedule %q (%s, job %s; owner %s): no loaded listener file"
          .. " declares it any more%s"):format(row.id, row.expr, row.name, owner,
          cancelled > 0 and ("; cancelled %d slot job%s not started yet"):format(cancelled,
            cancelled == 1 and "" or "s") or ""))
      end
    end
  end
  return true
end

--- The names, for logs: "PayBills, SendEmail".
function listeners.names(found)
  local names = {}
  for _, l in ipairs(found) do names[#names + 1] = l.name end
  table.sort(names)
  return table.concat(names, ", ")
end

return listeners
