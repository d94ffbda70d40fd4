--- scheduler.cli.listeners: finding and loading listener files.
--
-- A listener file is an ordinary Lua chunk that either calls
-- require("scheduler").on(name, fn [, opts]) or returns a table
-- { Name = function(payload, job) ... end, ... } (or both).  Loading runs
-- every file with `on` captured, so that nothing is registered until all
-- files loaded and no name is claimed twice; register() then hands the
-- captured listeners to a scheduler instance.

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

  -- Capture the module-level functions a listener file may call while it
  -- loads; configure/run belong to the command.
  local saved = { on = scheduler.on, configure = scheduler.configure, run = scheduler.run }
  scheduler.on = function(name, fn, opts) record(name, fn, opts, "on()") end
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

--- The names, for logs: "PayBills, SendEmail".
function listeners.names(found)
  local names = {}
  for _, l in ipairs(found) do names[#names + 1] = l.name end
  table.sort(names)
  return table.concat(names, ", ")
end

return listeners
