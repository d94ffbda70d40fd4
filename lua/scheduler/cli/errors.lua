--- scheduler.cli.errors: the two ways a command fails, as error values that
-- scheduler.cli.main turns into a message and an exit status.
--
--   usage(msg)    exit 2: bad command line (unknown flag, bad value, missing
--                 argument, unusable listener file); the usage is shown
--   failure(msg)  exit 1: the command could not do its work (database
--                 unreachable, no such job, ...)

local errors = {}

local Error = {}
Error.__index = Error
function Error:__tostring() return self.message end

--- A usage error (exit 2).  `show_usage` false: the message alone (e.g. a
-- syntax error in a listener file, where the synopsis would be noise).
function errors.usage(message, show_usage)
  error(setmetatable({ kind = "usage", message = message, show_usage = show_usage ~= false }, Error), 0)
end

--- A runtime failure (exit 1).
function errors.failure(message)
  error(setmetatable({ kind = "failure", message = message }, Error), 0)
end

--- The error value `e` if it is one of ours, else nil.
function errors.of(e)
  if getmetatable(e) == Error then return e end
  return nil
end

--- "scheduler: jobs: cannot connect ..." -> "jobs: cannot connect ..."
function errors.strip(msg)
  return (tostring(msg):gsub("^scheduler: ", ""))
end

return errors
