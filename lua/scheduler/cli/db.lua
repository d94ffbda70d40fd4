--- scheduler.cli.db: the command's access to the database, through one
-- scheduler instance and its public API (nothing else).  A malformed
-- database string is a usage error (a bad --database value); a database
-- that fails is a runtime failure.

local scheduler = require "scheduler"
local errors = require "scheduler.cli.errors"

local db = {}
db.__index = db

--- A handle on `database` (nothing is opened until used).  `log` is the
-- scheduler instance's log option (default: no logging).
function db.new(database, log)
  return setmetatable({ database = database, log = log or false }, db)
end

--- The scheduler instance.
function db:api()
  if not self._api then
    local ok, s = pcall(scheduler.new, { database = self.database, log = self.log })
    if not ok then
      -- (the error names this file's line, scheduler.new's caller: not for people)
      local why = tostring(s):gsub("^[^\n]-:%d+: ", ""):gsub("^scheduler: configure: ", "")
      errors.usage("--database: " .. errors.strip(why))
    end
    self._api = s
  end
  return self._api
end

--- Connect now (creating or upgrading the schema), through the API.
-- Returns true, or nil and why ("cannot connect to the database: ...").
function db:ping()
  local version, err = self:api():schema_version()
  if version == nil then return nil, (tostring(err):gsub("^scheduler: [%w_]+: ", "")) end
  return true
end

--- v, ...: what an API call returned; a runtime failure (nil, err) ends the
-- command.
local function check(v, err, ...)
  if v == nil then errors.failure(errors.strip(err)) end
  return v, err, ...
end

--- Connect now, creating or upgrading the schema; its version.
function db:schema_version()
  return check(self:api():schema_version())
end

--- Jobs matching filter {state=, name=, id=, limit=}: an array and the
-- database clock.
function db:jobs(filter)
  return check(self:api():jobs(filter))
end

--- Per-name statistics.
function db:stats()
  return check(self:api():stats())
end

--- Retry every failed job (of `name`): retried, skipped.
function db:retry_failed(name)
  return check(self:api():retry_failed { name = name })
end

--- Remove the waiting and failed jobs {name=, state=, older_than=} selects:
-- how many.
function db:purge(filter)
  return check(self:api():purge(filter))
end

--- Pause (on true) or resume job name `name`: whether that changed it.
function db:pause(name, on)
  local api = self:api()
  if on then return check(api:pause(name)) end
  return check(api:resume(name))
end

--- Limit job name `name` to `concurrency` jobs at once, in each partition
-- `by` apart (nil: the whole name), and/or to `rate` starts per `per`
-- seconds (all nil: no limit): whether that changed it.
function db:limit(name, concurrency, by, rate, per)
  local some = concurrency or rate
  return check(self:api():limit(name, some and { concurrency = concurrency, by = by, rate = rate, per = per }
    or nil))
end

function db:close()
  if self._api then pcall(self._api.close, self._api) end
  self._api = nil
end

return db
