-- bench/child.lua: what the benchmark's child processes (worker.lua,
-- producer.lua) share: their key=value arguments and their RESULT line.
-- Loaded with dofile (bench/ is not a module path):
--   local opt, num, result = dofile(dir .. "/child.lua")("worker")

return function(who)
  local opt = {}
  for i = 2, #arg do
    local k, v = arg[i]:match("^([%w_]+)=(.*)$")
    if not k then
      io.stderr:write(who, ": bad argument: ", arg[i], "\n")
      os.exit(2)
    end
    opt[k] = v
  end

  --- Option k as a number (default when absent).
  local function num(k, default)
    local v = opt[k]
    if v == nil then return default end
    return assert(tonumber(v), who .. ": " .. k .. " must be a number")
  end

  --- Print "RESULT k=v ..." (keys sorted, floats with 6 decimals) to the driver.
  local function result(t)
    local parts = { "RESULT" }
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = t[k]
      if math.type(v) == "float" then v = string.format("%.6f", v) end
      parts[#parts + 1] = k .. "=" .. tostring(v)
    end
    io.stdout:write(table.concat(parts, " "), "\n")
    io.stdout:flush()
  end

  return opt, num, result
end
