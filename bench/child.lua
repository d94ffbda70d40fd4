-- bench/child.lua: what the benchmark's child processes (worker.lua,
-- producer.lua) share: their key=value arguments and their RESULT line.
-- Loaded with dofile (bench/ is not a module path):
--   local opt, num, result, proc = dofile(dir .. "/child.lua")("worker")

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

  --- What a child reports about itself: its peak RSS (VmHWM, kB) and its
  -- CPU time (user + system, all threads, seconds), from /proc/self.
  local proc = {}
  function proc.rss_kb()
    local f = io.open("/proc/self/status", "r")
    if not f then return -1 end
    local s = f:read("a")
    f:close()
    return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
  end
  function proc.cpu_seconds()
    local f = io.open("/proc/self/stat", "r")
    if not f then return -1.0 end
    local s = f:read("a")
    f:close()
    -- the fields after the command (in parentheses, may hold spaces):
    -- state is field 3, utime and stime are fields 14 and 15
    local fields = {}
    for x in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
    local tck = 100 -- sysconf(_SC_CLK_TCK): 100 on Linux
    local p = io.popen("getconf CLK_TCK 2>/dev/null")
    if p then
      tck = tonumber(p:read("a")) or tck
      p:close()
    end
    return (tonumber(fields[12]) + tonumber(fields[13])) / tck
  end
  --- This process's pid.
  function proc.pid()
    local f = assert(io.open("/proc/self/stat", "r"))
    local pid = f:read("a"):match("^(%d+)")
    f:close()
    return math.tointeger(tonumber(pid))
  end
  --- Make lua-http loadable: Debian's lua-http (0.4) and three of the
  -- pure-Lua modules it needs (basexx, lpeg_patterns, fifo) are installed
  -- for Lua 5.1-5.3 (5.1-5.2) only; it runs unchanged on 5.4 (its C
  -- dependencies, cqueues, luaossl and lpeg, are built for 5.4), so their
  -- directories go last in the path when it does not find them.
  function proc.use_lua_http()
    if package.searchpath("http.request", package.path) then return end
    local dirs = {}
    for _, v in ipairs { "5.3", "5.2" } do
      dirs[#dirs + 1] = "/usr/share/lua/" .. v .. "/?.lua;/usr/share/lua/" .. v .. "/?/init.lua"
    end
    package.path = package.path .. ";" .. table.concat(dirs, ";")
  end

  return opt, num, result, proc
end
