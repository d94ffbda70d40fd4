--- scheduler.cli.db: the command's access to the database.
--
-- Job operations the Lua API has (schedule, cancel, retry, job, abandon) go
-- through a scheduler instance.  Listing, statistics, bulk retry and the
-- schema version go through scheduler.core.admin (csrc/admin_pg.c), an
-- INTERIM home until they are store operations; this file is the only one
-- to change then (the method names below are meant to stay).

local core = require "scheduler.core"
local scheduler = require "scheduler"
local errors = require "scheduler.cli.errors"

local db = {}
db.__index = db

--- A handle on `database` (nothing is opened until used).  `log` is the
-- scheduler instance's log option (default: no logging).
function db.new(database, log)
  return setmetatable({ database = database, log = log or false }, db)
end

--- The scheduler instance (raises a usage error for a malformed database
-- string: it is a bad --database value).
function db:api()
  if not self._api then
    local ok, s = pcall(scheduler.new, { database = self.database, log = self.log })
    if not ok then
      errors.usage("--database: " .. errors.strip(tostring(s):gsub("^scheduler: configure: ", "")))
    end
    self._api = s
  end
  return self._api
end

--- Connect now (creating or upgrading the schema), through the API.
-- Returns true, or nil and why ("cannot connect to the database: ...").
-- Reading a job that cannot exist is the cheapest operation that needs the
-- database.
function db:ping()
  local _, err = self:api():job(0)
  if err then return nil, (tostring(err):gsub("^scheduler: job: ", "")) end
  return true
end

--- The admin connection (connects now; a failure is a runtime failure).
-- On SQLite it is the store's own connection (store_sqlite.h).
function db:admin()
  if not self._admin then
    local a, err = core.admin(self.database)
    if not a then errors.failure(errors.strip(err)) end
    self._admin = a
  end
  return self._admin
end

local function check(v, err, ...)
  if v == nil then errors.failure(errors.strip(err)) end
  return v, err, ...
end

--- Jobs matching filter {state=, name=, id=, limit=}: an array and the
-- database clock.
function db:list(filter)
  return check(self:admin():list(filter))
end

--- Per-name statistics.
function db:stats()
  return check(self:admin():stats())
end

--- Retry every failed job (of `name`): retried, skipped.
function db:retry_failed(name)
  return check(self:admin():retry_failed(name))
end

--- Create or upgrade the schema; its version.
function db:schema_version()
  return check(self:admin():schema_version())
end

function db:close()
  if self._admin then self._admin:close() end
  if self._api then pcall(self._api.close, self._api) end
  self._admin, self._api = nil, nil
end

return db
