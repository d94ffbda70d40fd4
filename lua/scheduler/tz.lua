-- scheduler.tz: time zones for recurring jobs, in pure Lua 5.4.
--
-- Zones come from the system zone database (TZif files, versions 1-4, under
-- /usr/share/zoneinfo or $TZDIR), from the process's local zone ($TZ or
-- /etc/localtime), or from a POSIX TZ rule string.  Nothing here uses
-- os.time/os.date: all calendar arithmetic is integer civil-date math, so the
-- results do not depend on the process's own TZ setting.
--
-- Vocabulary used below:
--   instant / UTC seconds : seconds since 1970-01-01T00:00:00Z (leap seconds
--                           ignored, as in Unix time).
--   wall / local seconds  : seconds since 1970-01-01T00:00:00 "as if the wall
--                           clock were UTC", i.e. instant + UTC offset.
--   offset                : seconds EAST of UTC (Paris in winter = 3600).

local string_byte, string_sub, string_unpack = string.byte, string.sub, string.unpack
local math_floor, math_type, math_tointeger = math.floor, math.type, math.tointeger
local tostring, tonumber, type, error, pcall = tostring, tonumber, type, error, pcall
local setmetatable, getmetatable, pairs, ipairs = setmetatable, getmetatable, pairs, ipairs
local table_sort = table.sort
local os_getenv, io_open = os.getenv, io.open

local tz = {}

local DEFAULT_TZDIR = "/usr/share/zoneinfo"
local MAX_FILE_BYTES = 1024 * 1024     -- real TZif files are a few KB
local MAX_COUNT = 100000               -- per-section sanity bound

---------------------------------------------------------------------------
-- Civil calendar (proleptic Gregorian), after Howard Hinnant's algorithms.
-- Lua's // is floor division, so negative years/days work unchanged.
---------------------------------------------------------------------------

-- days_from_civil(y, m, d) -> days since 1970-01-01 (m 1..12, d 1..31).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- civil_from_days(z) -> y, m, d for z days since 1970-01-01.
local function civil_from_days(z)
  z = z + 719468
  local era = z // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end

-- is_leap(y) -> true for Gregorian leap years.
local function is_leap(y)
  return y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)
end

local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- days_in_month(y, m) -> 28..31.
local function days_in_month(y, m)
  if m == 2 and is_leap(y) then return 29 end
  return MONTH_DAYS[m]
end

-- weekday(days) -> 0 (Sunday) .. 6 (Saturday) for a day number.
local function weekday(days)
  return (days + 4) % 7          -- 1970-01-01 was a Thursday
end

tz.days_from_civil = days_from_civil
tz.civil_from_days = civil_from_days
tz.is_leap = is_leap
tz.days_in_month = days_in_month
tz.weekday = weekday

---------------------------------------------------------------------------
-- POSIX TZ rule strings (the TZif footer, or $TZ itself).
---------------------------------------------------------------------------

-- parse_posix(s) -> rule table, or nil, reason.
-- rule = { std_abbr, std_off, dst_abbr?, dst_off?, start?, finish?, cache }
-- where start/finish = { kind = "J"|"n"|"M", ..., time = seconds }.
local function parse_posix(s)
  local pos = 1
  local len = #s

  local function name()
    if string_sub(s, pos, pos) == "<" then
      local close = s:find(">", pos + 1, true)
      if not close then return nil end
      local n = string_sub(s, pos + 1, close - 1)
      if #n < 3 or not n:match("^[%w+%-]+$") then return nil end
      pos = close + 1
      return n
    end
    local n = s:match("^%a+", pos)
    if not n or #n < 3 then return nil end
    pos = pos + #n
    return n
  end

  -- [+-]hh[:mm[:ss]] -> seconds (sign applied), or nil.  max_h bounds hh.
  local function hms(max_h)
    local sign = 1
    local c = string_sub(s, pos, pos)
    if c == "+" then pos = pos + 1 elseif c == "-" then sign = -1; pos = pos + 1 end
    local h = s:match("^%d%d?%d?", pos)
    if not h then return nil end
    pos = pos + #h
    local total = tonumber(h) * 3600
    if tonumber(h) > max_h then return nil end
    for _, mult in ipairs({ 60, 1 }) do
      if string_sub(s, pos, pos) ~= ":" then break end
      local v = s:match("^%d%d?", pos + 1)
      if not v or tonumber(v) > 59 then return nil end
      pos = pos + 1 + #v
      total = total + tonumber(v) * mult
    end
    return sign * total
  end

  -- date[/time] -> rule point table, or nil.
  local function point()
    local p = {}
    local c = string_sub(s, pos, pos)
    if c == "J" then
      local n = s:match("^%d+", pos + 1)
      if not n or #n > 3 then return nil end
      pos = pos + 1 + #n
      p.kind, p.n = "J", tonumber(n)
      if p.n < 1 or p.n > 365 then return nil end
    elseif c == "M" then
      local m, w, d = s:match("^(%d%d?)%.(%d)%.(%d)", pos + 1)
      if not m then return nil end
      pos = pos + 1 + #m + 4
      p.kind, p.m, p.w, p.d = "M", tonumber(m), tonumber(w), tonumber(d)
      if p.m < 1 or p.m > 12 or p.w < 1 or p.w > 5 or p.d > 6 then return nil end
    else
      local n = s:match("^%d+", pos)
      if not n or #n > 3 then return nil end
      pos = pos + #n
      p.kind, p.n = "n", tonumber(n)
      if p.n > 365 then return nil end
    end
    p.time = 7200
    if string_sub(s, pos, pos) == "/" then
      pos = pos + 1
      p.time = hms(167)              -- RFC 8536 (v3+): -167..167 hours
      if not p.time then return nil end
    end
    return p
  end

  local r = { cache = {}, cache_size = 0 }
  r.std_abbr = name()
  if not r.std_abbr then return nil, "bad standard time name" end
  local off = hms(24)
  if not off then return nil, "bad standard time offset" end
  r.std_off = -off                   -- POSIX offsets count west of UTC
  if pos > len then return r end

  r.dst_abbr = name()
  if not r.dst_abbr then return nil, "bad daylight time name" end
  local c = string_sub(s, pos, pos)
  if c ~= "," and pos <= len then
    off = hms(24)
    if not off then return nil, "bad daylight time offset" end
    r.dst_off = -off
  else
    r.dst_off = r.std_off + 3600
  end
  if pos > len then
    -- No rule given: POSIX leaves it implementation-defined; like glibc, use
    -- the current US rule.
    r.start = { kind = "M", m = 3, w = 2, d = 0, time = 7200 }
    r.finish = { kind = "M", m = 11, w = 1, d = 0, time = 7200 }
    return r
  end
  if string_sub(s, pos, pos) ~= "," then return nil, "expected ',' before rule" end
  pos = pos + 1
  r.start = point()
  if not r.start then return nil, "bad daylight time start rule" end
  if string_sub(s, pos, pos) ~= "," then return nil, "expected ',' between rules" end
  pos = pos + 1
  r.finish = point()
  if not r.finish then return nil, "bad daylight time end rule" end
  if pos <= len then return nil, "trailing characters" end
  return r
end

-- rule_day(p, y) -> local day number (days since epoch) of rule point p in y.
local function rule_day(p, y)
  local jan1 = days_from_civil(y, 1, 1)
  if p.kind == "J" then                -- 1..365, Feb 29 never counted
    local d = jan1 + p.n - 1
    if p.n >= 60 and is_leap(y) then d = d + 1 end
    return d
  elseif p.kind == "n" then            -- 0..365, Feb 29 counted
    return jan1 + p.n
  end
  local first = days_from_civil(y, p.m, 1)
  local d = first + (p.d - weekday(first)) % 7 + (p.w - 1) * 7
  local last = first + days_in_month(y, p.m) - 1
  while d > last do d = d - 7 end     -- "5" means the last such weekday
  return d
end

-- rule_year(r, y) -> UTC instants of the DST start and end transitions in y.
local function rule_year(r, y)
  local c = r.cache[y]
  if c then return c[1], c[2] end
  local s = rule_day(r.start, y) * 86400 + r.start.time - r.std_off
  local e = rule_day(r.finish, y) * 86400 + r.finish.time - r.dst_off
  if r.cache_size >= 256 then r.cache, r.cache_size = {}, 0 end
  r.cache[y] = { s, e }
  r.cache_size = r.cache_size + 1
  return s, e
end

-- rule_offset(r, t) -> offset, is_dst, abbreviation at instant t under rule r.
-- Looks at the transitions of the neighbouring years and takes the latest one
-- at or before t; this handles both hemispheres, transition times outside
-- 0..24h (v3) and "DST all year" rules (end of y == start of y+1: start wins).
local function rule_offset(r, t)
  if not r.dst_abbr then return r.std_off, false, r.std_abbr end
  local y = civil_from_days(t // 86400)
  local best_t, best_y, best_dst
  for yy = y - 1, y + 1 do
    local s, e = rule_year(r, yy)
    -- ties: within a year the end wins (start == end means no DST); across
    -- years the later year wins (end of y == start of y+1: DST all year).
    if s <= t and (not best_t or s > best_t or (s == best_t and yy > best_y)) then
      best_t, best_y, best_dst = s, yy, true
    end
    if e <= t and (not best_t or e > best_t or (e == best_t and yy >= best_y)) then
      best_t, best_y, best_dst = e, yy, false
    end
  end
  if best_dst then return r.dst_off, true, r.dst_abbr end
  return r.std_off, false, r.std_abbr
end

---------------------------------------------------------------------------
-- Zone objects
---------------------------------------------------------------------------

local Zone = {}
Zone.__index = Zone
Zone.__tostring = function(z) return z.name end

-- to_int(t, what) -> t floored to an integer; raises on non-numbers, NaN,
-- infinities and values beyond +-2^53.
local LIMIT = 2 ^ 53
local function to_int(t, what)
  if type(t) ~= "number" then
    error("scheduler: " .. what .. " must be a number, got " .. type(t), 0)
  end
  if math_type(t) == "integer" then return t end
  if t ~= t or t >= LIMIT or t <= -LIMIT then
    error("scheduler: " .. what .. " is out of range: " .. tostring(t), 0)
  end
  return math_tointeger(math_floor(t))
end

-- new_zone(name, trans, tidx, types, rule) -> zone.
-- trans: ascending UTC instants; tidx[i]: 1-based index into types for the
-- time after trans[i]; types[k] = { off =, dst =, abbr = }; rule: POSIX rule
-- for instants at/after the last transition (or all instants if none).
local function new_zone(name, trans, tidx, types, rule)
  local z = setmetatable({ name = name, trans = trans, tidx = tidx,
                           types = types, rule = rule }, Zone)
  local seen, offsets = {}, {}
  local function add(o) if not seen[o] then seen[o] = true; offsets[#offsets + 1] = o end end
  for _, ty in ipairs(types) do add(ty.off) end
  if rule then add(rule.std_off); if rule.dst_off then add(rule.dst_off) end end
  table_sort(offsets)
  z.offsets = offsets           -- every offset this zone ever uses, ascending
  z.min_off, z.max_off = offsets[1], offsets[#offsets]
  -- fixed-offset zones get a fast path
  if #offsets == 1 then z.fixed = offsets[1] end
  return z
end

-- offset_of(z, t) -> offset, is_dst, abbr at integer instant t (internal).
local function offset_of(z, t)
  local tr = z.trans
  local n = #tr
  if n == 0 or t >= tr[n] then
    if z.rule then return rule_offset(z.rule, t) end
    if n == 0 then
      local ty = z.types[1]
      return ty.off, ty.dst, ty.abbr
    end
  elseif t < tr[1] then
    local ty = z.types[1]             -- RFC 8536: time type 0 before the first transition
    return ty.off, ty.dst, ty.abbr
  end
  -- largest i with tr[i] <= t
  local lo, hi = 1, n
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if tr[mid] <= t then lo = mid else hi = mid - 1 end
  end
  local ty = z.types[z.tidx[lo]]
  return ty.off, ty.dst, ty.abbr
end

-- zone:offset_at(utc_seconds) -> offset (seconds east of UTC), is_dst, abbr.
function Zone:offset_at(t)
  return offset_of(self, to_int(t, "offset_at: time"))
end

-- zone:wall_at(utc_seconds) -> local wall seconds shown at that instant.
function Zone:wall_at(t)
  t = to_int(t, "wall_at: time")
  return t + (offset_of(self, t))
end

-- zone:to_utc(local_seconds) -> sorted list of the UTC instants whose wall
-- time is local_seconds: {} in a gap (spring forward), {t} normally, {t1, t2}
-- in a repeated period (fall back).
function Zone:to_utc(l)
  l = to_int(l, "to_utc: local time")
  if self.fixed then return { l - self.fixed } end
  local out = {}
  local offsets = self.offsets
  for i = 1, #offsets do
    local o = offsets[i]
    local t = l - o
    if offset_of(self, t) == o then out[#out + 1] = t end
  end
  if #out > 1 then table_sort(out) end
  return out
end

-- zone:gap_end(local_seconds) -> for a wall time inside a gap (to_utc gives
-- {}), the instant of the transition that skips it, i.e. the first instant
-- whose wall time is later than local_seconds.  For a wall time that exists,
-- returns its first instant.
function Zone:gap_end(l)
  l = to_int(l, "gap_end: local time")
  local lo, hi
  for _, o in ipairs(self.offsets) do
    local t = l - o
    local w = t + (offset_of(self, t))
    if w == l then
      return self:to_utc(l)[1]
    elseif w < l then
      if not lo or t > lo then lo = t end
    elseif not hi or t < hi then
      hi = t
    end
  end
  if not lo or not hi or lo >= hi then
    lo, hi = l - self.max_off - 86400, l - self.min_off + 86400
  end
  -- invariant: wall(lo) < l < wall(hi); find the first t with wall(t) > l
  while hi - lo > 1 do
    local mid = (lo + hi) // 2
    if mid + (offset_of(self, mid)) > l then hi = mid else lo = mid end
  end
  return hi
end

-- zone:next_transition_in(a, b) -> the first instant t in (a, b] whose offset
-- differs from the offset at a, or nil if the offset is constant there.
-- Assumes at most one transition in the interval (callers use short ones).
function Zone:next_transition_in(a, b)
  a, b = to_int(a, "next_transition_in: start"), to_int(b, "next_transition_in: end")
  local o = offset_of(self, a)
  if b <= a or offset_of(self, b) == o then return nil end
  local lo, hi = a, b
  while hi - lo > 1 do
    local mid = (lo + hi) // 2
    if offset_of(self, mid) ~= o then hi = mid else lo = mid end
  end
  return hi
end

-- zone:next_transition(t) -> the first instant after t whose offset differs
-- from the offset at t, or nil if the offset never changes after t.  Unlike
-- next_transition_in it needs no bound and sees every change, also a DST
-- period shorter than the distance to a far-off slot.
function Zone:next_transition(t)
  t = to_int(t, "next_transition: time")
  if self.fixed then return nil end
  local o = offset_of(self, t)
  local tr = self.trans
  local n = #tr
  if n > 0 and t < tr[n] then
    -- the first table entry after t (binary search), then the first of
    -- those that changes the offset (consecutive entries may keep it: only
    -- the abbreviation or the DST flag changed)
    local lo, hi = 1, n
    while lo < hi do
      local mid = (lo + hi) // 2
      if tr[mid] > t then hi = mid else lo = mid + 1 end
    end
    for i = lo, n do
      if offset_of(self, tr[i]) ~= o then return tr[i] end
    end
  end
  local rule = self.rule
  if not rule or not rule.dst_abbr then return nil end
  -- the rule's transitions, from the end of the table on: a rule repeats
  -- every year, so if none of three years' changes the offset none will
  local from = n > 0 and tr[n] > t and tr[n] or t
  local y = civil_from_days(from // 86400)
  local cands = {}
  for yy = y - 1, y + 2 do
    local s, e = rule_year(rule, yy)
    cands[#cands + 1] = s
    cands[#cands + 1] = e
  end
  table_sort(cands)
  for _, x in ipairs(cands) do
    if x > t and (n == 0 or x >= tr[n]) and offset_of(self, x) ~= o then return x end
  end
  return nil
end

---------------------------------------------------------------------------
-- TZif reading (RFC 8536)
---------------------------------------------------------------------------

-- parse_tzif(data, name) -> zone, or nil, reason.
local function parse_tzif(data, name)
  if #data < 44 or string_sub(data, 1, 4) ~= "TZif" then return nil, "not a TZif file" end
  local function counts(p)
    -- isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
    return string_unpack(">I4I4I4I4I4I4", data, p + 20)
  end
  local version = string_byte(data, 5)
  local isut, isstd, leap, timecnt, typecnt, charcnt = counts(1)
  local body, tsize = 45, 4
  if version ~= 0 then                -- v2, v3, v4 (and later, read as v4)
    if timecnt > MAX_COUNT or typecnt > 256 or charcnt > MAX_COUNT
        or leap > MAX_COUNT or isut > 256 or isstd > 256 then
      return nil, "corrupt header"
    end
    local p2 = 45 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut
    if string_sub(data, p2, p2 + 3) ~= "TZif" then return nil, "missing second header" end
    isut, isstd, leap, timecnt, typecnt, charcnt = counts(p2)
    body, tsize = p2 + 44, 8
  end
  if typecnt == 0 or typecnt > 256 or timecnt > MAX_COUNT or charcnt > MAX_COUNT
      or leap > MAX_COUNT or (isut ~= 0 and isut ~= typecnt)
      or (isstd ~= 0 and isstd ~= typecnt) then
    return nil, "corrupt header"
  end
  local blen = timecnt * (tsize + 1) + typecnt * 6 + charcnt + leap * (tsize + 4) + isstd + isut
  if #data < body + blen - 1 then return nil, "truncated file" end

  local p = body
  local tfmt = tsize == 8 and ">i8" or ">i4"
  local trans, tidx = {}, {}
  for i = 1, timecnt do
    trans[i], p = string_unpack(tfmt, data, p)
    if i > 1 and trans[i] <= trans[i - 1] then return nil, "transitions out of order" end
  end
  for i = 1, timecnt do
    local k = string_byte(data, p)
    p = p + 1
    if k >= typecnt then return nil, "bad type index" end
    tidx[i] = k + 1
  end
  local raw = {}
  for k = 1, typecnt do
    local off, dst, ai
    off, dst, ai, p = string_unpack(">i4BB", data, p)
    if off < -89999 or off > 93599 then return nil, "bad UTC offset" end
    raw[k] = { off = off, dst = dst ~= 0, ai = ai }
  end
  local chars = string_sub(data, p, p + charcnt - 1)
  p = p + charcnt + leap * (tsize + 4) + isstd + isut   -- leap seconds ignored
  local types = {}
  for k, r in ipairs(raw) do
    local abbr = r.ai < charcnt and chars:match("^[^%z]*", r.ai + 1) or ""
    types[k] = { off = r.off, dst = r.dst, abbr = abbr }
  end

  local rule
  if tsize == 8 then
    local footer = data:match("^\n([^\n]*)\n", p)
    if footer and footer ~= "" then
      local why
      rule, why = parse_posix(footer)
      if not rule then return nil, "bad TZ string \"" .. footer .. "\": " .. why end
    end
  end
  return new_zone(name, trans, tidx, types, rule)
end

---------------------------------------------------------------------------
-- Zone lookup
---------------------------------------------------------------------------

local cache = {}

-- fixed_zone(name, off, abbr) -> a zone with a constant offset.
local function fixed_zone(name, off, abbr)
  return new_zone(name, {}, {}, { { off = off, dst = false, abbr = abbr } }, nil)
end

tz.utc = fixed_zone("UTC", 0, "UTC")
cache.UTC = tz.utc

-- valid_name(name) -> true for plausible IANA names (no "..", not absolute).
local function valid_name(name)
  if #name == 0 or #name > 255 then return false end
  if not name:match("^[%w_+%-./]+$") then return false end
  if name:sub(1, 1) == "/" or name:sub(-1) == "/" or name:find("//", 1, true) then return false end
  for part in name:gmatch("[^/]+") do
    if part:sub(1, 1) == "." then return false end   -- "..", ".", hidden files
  end
  return true
end

-- read_file(path) -> contents, or nil (missing, unreadable, directory, huge).
local function read_file(path)
  local f = io_open(path, "rb")
  if not f then return nil end
  local ok, data = pcall(f.read, f, MAX_FILE_BYTES + 1)
  f:close()
  if not ok or type(data) ~= "string" or #data > MAX_FILE_BYTES then return nil end
  return data
end

-- load_path(path, name) -> zone, or nil if the file is missing or not TZif;
-- raises for a TZif file that is corrupt.
local function load_path(path, name)
  local data = read_file(path)
  if not data or string_sub(data, 1, 4) ~= "TZif" then return nil end
  local z, why = parse_tzif(data, name)
  if not z then
    error("scheduler: invalid time zone file " .. path .. " for \"" .. name .. "\": " .. why, 0)
  end
  z.source = path
  return z
end

-- tzdir() -> the zone database directory ($TZDIR or /usr/share/zoneinfo).
local function tzdir()
  local d = os_getenv("TZDIR")
  if not d or d == "" then d = DEFAULT_TZDIR end
  return d
end

-- load_named(name) -> zone for an IANA name, or nil if unknown.
local function load_named(name)
  local path = tzdir() .. "/" .. name
  local z = cache[path]
  if not z then
    z = load_path(path, name)       -- misses are not cached (bounded cache)
    cache[path] = z
  end
  return z
end

-- load_local() -> the process's local zone, named "local".
-- $TZ (":" prefix stripped) may be an absolute file, a zone name, or a POSIX
-- rule string; empty $TZ (or "UTC") is UTC; unset $TZ means /etc/localtime, or UTC if
-- that does not exist.  A $TZ that is none of these raises.
local function load_local()
  local env = os_getenv("TZ")
  local key = "local\0" .. (env or "\0unset")
  local z = cache[key]
  if z then return z end
  if env == nil then
    z = load_path("/etc/localtime", "local") or fixed_zone("local", 0, "UTC")
  else
    local v = env:sub(1, 1) == ":" and env:sub(2) or env
    if v == "" or v == "UTC" then
      z = fixed_zone("local", 0, "UTC")
    elseif v:sub(1, 1) == "/" then
      z = load_path(v, "local")
    elseif valid_name(v) then
      local named = load_named(v)
      if named then
        z = new_zone("local", named.trans, named.tidx, named.types, named.rule)
        z.source = named.source
      end
    end
    if not z then
      local rule = parse_posix(v)
      if rule then z = new_zone("local", {}, {}, {
        { off = rule.std_off, dst = false, abbr = rule.std_abbr } }, rule)
      end
    end
    if not z then
      error("scheduler: unknown time zone \"local\" (TZ=\"" .. env .. "\")", 0)
    end
  end
  cache[key] = z
  return z
end

-- tz.get(name) -> zone for "UTC", "local" or an IANA name; raises
-- `scheduler: unknown time zone "X"` otherwise.  Zones are cached.
function tz.get(name)
  if type(name) ~= "string" then
    error("scheduler: time zone name must be a string, got " .. type(name), 0)
  end
  if name == "UTC" then return tz.utc end
  if name == "local" then return load_local() end
  local z = valid_name(name) and load_named(name)
  if not z then
    local shown = name:gsub("[%c\"\\\128-\255]", function(c) return ("\\%d"):format(c:byte()) end)
    error("scheduler: unknown time zone \"" .. shown .. "\"", 0)
  end
  return z
end

-- tz.from_posix(s [, name]) -> zone following POSIX TZ rule string s
-- (e.g. "CET-1CEST,M3.5.0,M10.5.0/3"); raises on a malformed string.
function tz.from_posix(s, name)
  if type(s) ~= "string" then
    error("scheduler: TZ rule must be a string, got " .. type(s), 0)
  end
  local rule, why = parse_posix(s)
  if not rule then error("scheduler: invalid TZ rule \"" .. s .. "\": " .. why, 0) end
  return new_zone(name or s, {}, {}, { { off = rule.std_off, dst = false, abbr = rule.std_abbr } }, rule)
end

-- tz.from_tzif(data [, name]) -> zone from the bytes of a TZif file; raises
-- on malformed data.
function tz.from_tzif(data, name)
  if type(data) ~= "string" then
    error("scheduler: TZif data must be a string, got " .. type(data), 0)
  end
  local z, why = parse_tzif(data, name or "tzif")
  if not z then error("scheduler: invalid TZif data: " .. why, 0) end
  return z
end

-- tz.is_zone(v) -> true if v is a zone object.
function tz.is_zone(v)
  return type(v) == "table" and getmetatable(v) == Zone
end

-- tz.clear_cache() -> forget loaded zones (for tests and long-lived
-- processes after a tzdata update).
function tz.clear_cache()
  for k in pairs(cache) do cache[k] = nil end
  cache.UTC = tz.utc
end

return tz
