-- scheduler.cron: cron expressions and next-fire-time computation, pure Lua.
--
-- Syntax (see cron.parse): 5 fields "minute hour day-of-month month
-- day-of-week", or 6 with a leading seconds field; macros @yearly/@annually,
-- @monthly, @weekly, @daily/@midnight, @hourly and @every <duration>.
--
-- Fire times are computed in local wall-clock arithmetic for a time zone
-- (scheduler.tz) and converted to UTC.  Where the zone's clock jumps, the
-- rule is Vixie cron's (cron.c, find_jobs: "wildcard" and "fixed-time"
-- jobs), which tells schedules apart by their time-of-day fields:
--   * an interval schedule, with a wildcard or a step in its second,
--     minute or hour field ("0 * * * *", "*/15 * * * *", "0 */2 * * *",
--     "*/10 30 1 * * *"), follows real time: it fires at every instant
--     whose wall time matches.  A fall-back's repeated hour runs in both
--     passes ("0 * * * *" in America/New_York fires at 01:00 EDT and 01:00
--     EST, one real hour apart; "*/15" keeps 15 real minutes), and wall
--     times a spring-forward skips do not exist, so they do not fire;
--   * a fixed-time schedule (only single values, lists and ranges in those
--     fields: "30 1 * * *", "0 9 * * mon-fri", "0 0,12 * * *") fires once
--     per wall time: a repeated wall time at its first occurrence only, a
--     skipped one at the transition instant (the first instant after the
--     gap; several such slots share it and it fires once).
-- Vixie cron looks at the minute and hour fields only; the seconds field is
-- a time-of-day field like them, so a wildcard or step there counts too.
-- The seconds field a 5-field expression lacks is 0, a fixed value.
-- "@every D" fires at the multiples of D seconds since the Unix epoch
-- (1970-01-01T00:00:00Z), independent of the time zone, so all workers agree
-- on the slots without shared state.  E.g. "@every 1h30m" fires at 00:00,
-- 01:30, 03:00 ... UTC on 1970-01-01 and continues that grid forever (it does
-- not restart at midnight).

local tz = require "scheduler.tz"

local days_from_civil, civil_from_days = tz.days_from_civil, tz.civil_from_days
local days_in_month, weekday = tz.days_in_month, tz.weekday
local type, tostring, tonumber, error, pcall = type, tostring, tonumber, error, pcall
local setmetatable, getmetatable, pairs, ipairs = setmetatable, getmetatable, pairs, ipairs
local math_type, math_floor, math_tointeger = math.type, math.floor, math.tointeger
local string_format = string.format
local os_time = os.time

local cron = {}

local MAX_EXPR_LEN = 1000        -- longer input is rejected outright
cron.MAX_N = 10000               -- cap for next_times' n
cron.HORIZON_YEARS = 10          -- next() gives up after this many years
                                 -- (the longest real gap, Feb 29 across a
                                 -- non-leap century year, is 8 years)
local MAX_EVERY = 3650 * 86400   -- "@every" at most 3650 days
local TIME_LIMIT = 2 ^ 53        -- |after| must be below this

-- quote(s) -> s in double quotes with control/non-ASCII bytes escaped and
-- long input shortened, for error messages.
local function quote(s)
  local shown = s
  if #shown > 80 then shown = shown:sub(1, 77) .. "..." end
  shown = shown:gsub("[%c\"\\\128-\255]", function(c)
    if c == "\"" or c == "\\" then return "\\" .. c end
    return string_format("\\%d", c:byte())
  end)
  return "\"" .. shown .. "\""
end

---------------------------------------------------------------------------
-- Field parsing
---------------------------------------------------------------------------

local MONTH_NAMES = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
                      jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }
local DOW_NAMES = { sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 }

-- Field specs, in the order of a 6-field expression.
local SECOND = { name = "second", min = 0, max = 59 }
local MINUTE = { name = "minute", min = 0, max = 59 }
local HOUR = { name = "hour", min = 0, max = 23 }
local DOM = { name = "day-of-month", min = 1, max = 31, question = true }
local MONTH = { name = "month", min = 1, max = 12, names = MONTH_NAMES }
local DOW = { name = "day-of-week", min = 0, max = 7, names = DOW_NAMES, question = true,
              span = 7 }         -- 0 and 7 are both Sunday: 7 distinct days

-- value(spec, text) -> integer value of a number or name, or nil, reason.
local function value(spec, text)
  if text:match("^%d+$") then
    if #text > 6 then return nil, "value " .. text .. " out of range " .. spec.min .. "-" .. spec.max end
    local v = tonumber(text)
    if v < spec.min or v > spec.max then
      return nil, "value " .. text .. " out of range " .. spec.min .. "-" .. spec.max
    end
    return v
  end
  if spec.names and text:match("^%a%a%a$") then
    local v = spec.names[text:lower()]
    if v then return v end
  end
  if text == "" then return nil, "missing value" end
  return nil, "invalid value " .. quote(text)
end

-- parse_field(spec, text) -> set (table value -> true), star, interval, or
-- nil, reason.  star is true when the field is "*" or "?" (with no step, or
-- step 1); interval when any element of it is a wildcard or has a step
-- ("*", "*/15", "5/15", "0-30/10"): it repeats on the clock rather than
-- naming fixed times (see Schedule:next).
local function parse_field(spec, text)
  local set = {}
  local star, interval = false, false
  local span = spec.span or (spec.max - spec.min + 1)
  local n_items = 0
  for item in (text .. ","):gmatch("([^,]*),") do
    n_items = n_items + 1
    if item == "" then return nil, "empty list element" end
    local base, step_text = item:match("^([^/]*)/(.*)$")
    if not base then base = item end
    local step = 1
    if step_text then
      if not step_text:match("^%d+$") then
        return nil, "invalid step " .. quote(step_text)
      end
      step = #step_text <= 6 and tonumber(step_text) or span + 1
      if step < 1 then return nil, "step must be at least 1" end
      if step > span then return nil, "step must be at most " .. span end
    end
    if step_text or base == "*" or base == "?" then interval = true end
    local lo, hi
    if base == "*" or base == "?" then
      if base == "?" and not spec.question then
        return nil, "\"?\" is only allowed in day-of-month and day-of-week"
      end
      lo, hi = spec.min, spec.max
      if spec == DOW then hi = 6 end
      if step == 1 and item == text then star = true end
    else
      local a, b = base:match("^([^%-]*)%-(.*)$")
      local why
      if a then
        lo, why = value(spec, a)
        if not lo then return nil, why end
        hi, why = value(spec, b)
        if not hi then return nil, why end
        if lo > hi then
          return nil, "range " .. base .. " is reversed (start greater than end)"
        end
      else
        lo, why = value(spec, base)
        if not lo then return nil, why end
        hi = step_text and spec.max or lo      -- "5/15" = from 5 to max
      end
    end
    for v = lo, hi, step do
      if spec == DOW and v == 7 then v = 0 end
      set[v] = true
    end
  end
  return set, star, interval
end

-- build_next(set, min, max) -> table mapping v (min..max) to the smallest
-- member >= v, and the smallest member overall.
local function build_next(set, min, max)
  local nxt, cur = {}, nil
  for v = max, min, -1 do
    if set[v] then cur = v end
    nxt[v] = cur
  end
  return nxt, nxt[min]
end

---------------------------------------------------------------------------
-- Schedules
---------------------------------------------------------------------------

local Schedule = {}
Schedule.__index = Schedule
Schedule.__tostring = function(s) return s.expr end

local MACROS = {
  ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *",
  ["@monthly"] = "0 0 1 * *", ["@weekly"] = "0 0 * * 0",
  ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *",
  ["@hourly"] = "0 * * * *",
}

local DURATION_UNITS = { { "d", 86400 }, { "h", 3600 }, { "m", 60 }, { "s", 1 } }

-- parse_duration(text) -> whole seconds, or nil, reason.  Accepts (lower
-- case; the caller folds case) e.g.
-- "90s", "5m", "1h30m", "2h", "1d", "1d2h3m4s": units d/h/m/s, each at most
-- once, largest first; total between 1 s and 3650 days.
local function parse_duration(text)
  if text == "" then return nil, "missing duration" end
  local total, pos, unit_i = 0, 1, 1
  while pos <= #text do
    local digits, unit = text:match("^(%d+)(%a?)", pos)
    if not digits then
      return nil, "invalid duration " .. quote(text) .. " (use whole d, h, m, s units, e.g. 1h30m; minimum 1s)"
    end
    if unit == "" then
      if pos + #digits > #text then
        return nil, "duration " .. quote(text) .. " needs a unit (d, h, m or s)"
      end
      return nil, "invalid duration " .. quote(text) .. " (use whole d, h, m, s units, e.g. 1h30m; minimum 1s)"
    end
    local found
    while unit_i <= #DURATION_UNITS do
      local u = DURATION_UNITS[unit_i]
      unit_i = unit_i + 1
      if u[1] == unit then found = u[2]; break end
    end
    if not found then
      return nil, "invalid duration " .. quote(text) .. " (units are d, h, m, s, largest first, each once)"
    end
    if #digits > 9 then return nil, "duration " .. quote(text) .. " is too long" end
    total = total + tonumber(digits) * found
    pos = pos + #digits + #unit
  end
  if total < 1 then return nil, "duration must be at least 1s" end
  if total > MAX_EVERY then return nil, "duration must be at most 3650d" end
  return total
end

-- fail(expr, msg) raises the standard parse error.
local function fail(expr, msg)
  error("scheduler: invalid cron expression " .. quote(expr) .. ": " .. msg, 0)
end

-- cron.parse(expr) -> schedule; raises "scheduler: invalid cron expression
-- "<expr>": field N (<name>): <problem>" (or a whole-expression problem).
function cron.parse(expr)
  if type(expr) ~= "string" then
    error("scheduler: cron expression must be a string, got " .. type(expr), 0)
  end
  if #expr > MAX_EXPR_LEN then fail(expr, "expression too long (max " .. MAX_EXPR_LEN .. " bytes)") end
  local text = expr:match("^%s*(.-)%s*$")
  if text == "" then fail(expr, "empty expression") end

  local self = setmetatable({ expr = expr }, Schedule)

  if text:sub(1, 1) == "@" then
    local word, rest = text:match("^(@%S*)%s*(.*)$")
    word = word:lower()
    if word == "@every" then
      local seconds, why = parse_duration(rest:lower())
      if not seconds then fail(expr, why) end
      self.kind, self.every = "every", seconds
      return self
    end
    local fields = MACROS[word]
    if not fields then fail(expr, "unknown macro " .. quote(word)) end
    if rest ~= "" then fail(expr, "unexpected text after " .. word) end
    text = fields
  end

  local parts = {}
  for f in text:gmatch("[^ \t]+") do
    parts[#parts + 1] = f
    if #parts > 6 then break end
  end
  if #parts ~= 5 and #parts ~= 6 then
    fail(expr, "expected 5 or 6 fields, got " .. (#parts > 6 and "more than 6" or #parts))
  end
  local specs = #parts == 6 and { SECOND, MINUTE, HOUR, DOM, MONTH, DOW }
                or { MINUTE, HOUR, DOM, MONTH, DOW }
  local sets, stars, intervals = {}, {}, {}
  for i, spec in ipairs(specs) do
    local set, star, interval = parse_field(spec, parts[i])
    if not set then fail(expr, "field " .. i .. " (" .. spec.name .. "): " .. star) end
    sets[spec], stars[spec], intervals[spec] = set, star, interval
  end
  sets[SECOND] = sets[SECOND] or { [0] = true }

  self.kind = "cron"
  self.has_seconds = #parts == 6
  -- Vixie cron's rule for clock changes (see Schedule:next): a wildcard or
  -- a step in a time-of-day field makes an interval schedule, which follows
  -- real time; otherwise the schedule names fixed times of day
  self.interval = intervals[SECOND] or intervals[MINUTE] or intervals[HOUR] or false
  self.second_next = build_next(sets[SECOND], 0, 59)
  self.minute_next = build_next(sets[MINUTE], 0, 59)
  self.hour_next = build_next(sets[HOUR], 0, 23)
  self.dom_next = build_next(sets[DOM], 1, 31)
  local first_month
  self.month_next, first_month = build_next(sets[MONTH], 1, 12)
  self.first_month = first_month
  self.dom, self.dow = sets[DOM], sets[DOW]
  self.dom_star, self.dow_star = stars[DOM], stars[DOW]
  return self
end

-- cron.valid(expr) -> true, or false and the error message.
function cron.valid(expr)
  local ok, err = pcall(cron.parse, expr)
  if ok then return true end
  return false, err
end

-- day_ok(s, days, d) -> true if day number `days` (day-of-month d) matches:
-- with both day fields restricted, either may match; otherwise both must.
local function day_ok(s, days, d)
  if s.dom_star then return s.dow_star or s.dow[weekday(days)] == true end
  if s.dow_star then return s.dom[d] == true end
  return s.dom[d] == true or s.dow[weekday(days)] == true
end

-- next_wall(s, l, max_year) -> the smallest matching wall time >= l, or nil
-- if there is none before year max_year + 1.  Jumps field by field; every
-- iteration moves the candidate forward, at most ~400 per year.
local function next_wall(s, l, max_year)
  local days = l // 86400
  local rem = l - days * 86400
  local h, mi, sec = rem // 3600, rem % 3600 // 60, rem % 60
  local y, m, d = civil_from_days(days)
  while true do
    if y > max_year then return nil end
    if s.month_next[m] ~= m then
      local nm = s.month_next[m]
      if nm then m = nm else y, m = y + 1, s.first_month end
      d, h, mi, sec = 1, 0, 0, 0
    elseif d > days_in_month(y, m) then
      m = m + 1
      if m > 12 then y, m = y + 1, 1 end
      d, h, mi, sec = 1, 0, 0, 0
    else
      local dn = days_from_civil(y, m, d)
      if not day_ok(s, dn, d) then
        if s.dow_star then d = s.dom_next[d] or 32 else d = d + 1 end
        h, mi, sec = 0, 0, 0
      else
        local nh = s.hour_next[h]
        if not nh then
          d, h, mi, sec = d + 1, 0, 0, 0
        else
          if nh ~= h then h, mi, sec = nh, 0, 0 end
          local nmi = s.minute_next[mi]
          if not nmi then
            h, mi, sec = h + 1, 0, 0
            if h == 24 then d, h = d + 1, 0 end
          else
            if nmi ~= mi then mi, sec = nmi, 0 end
            local ns = s.second_next[sec]
            if ns then
              return dn * 86400 + h * 3600 + mi * 60 + ns
            end
            mi, sec = mi + 1, 0
            if mi == 60 then
              h, mi = h + 1, 0
              if h == 24 then d, h = d + 1, 0 end
            end
          end
        end
      end
    end
  end
end

-- check_after(after) -> integer floor(after); raises on bad input.
local function check_after(after, who)
  if type(after) ~= "number" then
    error("scheduler: " .. who .. ": time must be a number, got " .. type(after), 0)
  end
  if after ~= after or after >= TIME_LIMIT or after <= -TIME_LIMIT then
    error("scheduler: " .. who .. ": time out of range: " .. tostring(after), 0)
  end
  if math_type(after) == "integer" then return after end
  return math_tointeger(math_floor(after))
end

-- resolve_zone(zone) -> zone object for nil (UTC), a name, or a zone.
local function resolve_zone(zone, who)
  if zone == nil then return tz.utc end
  if type(zone) == "string" then return tz.get(zone) end
  if tz.is_zone(zone) then return zone end
  error("scheduler: " .. who .. ": time zone must be a name or a zone object, got " .. type(zone), 0)
end

-- next_real(s, a, zone, max_year) -> the first instant after the integer
-- instant a whose wall time in `zone` matches interval schedule s, or nil.
-- Real time is cut into spans of constant offset at the zone's
-- transitions; within a span the wall time grows with real time, so the
-- first matching wall time at or after the span's start is the answer if
-- it falls before the span's end; otherwise the next span is searched.  A
-- fall-back starts a span whose wall times repeat the previous span's, so
-- they match again; the wall times a spring-forward skips belong to no
-- span.
local function next_real(s, a, zone, max_year)
  local start = a + 1
  if zone.fixed then
    local w = next_wall(s, start + zone.fixed, max_year)
    return w and w - zone.fixed
  end
  -- each pass moves to the next transition (two a year): bound it anyway
  for _ = 1, 4 * (cron.HORIZON_YEARS + 1) + 100 do
    local o = zone:offset_at(start)
    local w = next_wall(s, start + o, max_year)
    if not w then return nil end
    local x = w - o
    local tr = zone:next_transition(start)
    if not tr or x < tr then return x end
    start = tr
  end
  return nil
end

-- schedule:next(after [, zone]) -> the first fire time (integer Unix seconds)
-- strictly after `after` (a number, may be fractional), with wall-clock
-- fields read in `zone` (tz object or name; default UTC), or nil if there is
-- none within cron.HORIZON_YEARS years.  DST handling: see the file header.
function Schedule:next(after, zone)
  local a = check_after(after, "next")
  zone = resolve_zone(zone, "next")
  if self.kind == "every" then
    local d = self.every
    return (a // d + 1) * d
  end
  local l = zone:wall_at(a) + 1
  local max_year = civil_from_days(l // 86400) + cron.HORIZON_YEARS
  if self.interval then return next_real(self, a, zone, max_year) end
  -- a fixed-time schedule:
  -- Walk candidate wall times in order; their instants (first occurrence, or
  -- the transition instant for a gap) never decrease, so the first one that
  -- is > after is the answer.  Each pass moves l forward; bound it anyway.
  for _ = 1, 10000 do
    local w = next_wall(self, l, max_year)
    if not w then return nil end
    local ts = zone:to_utc(w)
    local t1 = ts[1]
    if not t1 then                           -- skipped by a gap
      local t = zone:gap_end(w)
      if t > after then return t end
      l = w + 1                              -- not reached for sane zones
    elseif t1 > after then
      return t1
    elseif ts[2] then
      -- w is repeated and `after` lies in the second pass: every wall time of
      -- the repeated period already fired; resume at the first wall time
      -- after it (the transition instant + the earlier offset).
      local tr = zone:next_transition_in(t1, ts[2])
      local resume = tr and tr + zone:offset_at(t1) or w + 1
      l = resume > w and resume or w + 1
    else
      l = w + 1
    end
  end
  return nil
end

-- schedule:next_n(n, after [, zone]) -> array of up to n successive fire
-- times (fewer if the schedule stops firing within the horizon).
function Schedule:next_n(n, after, zone)
  zone = resolve_zone(zone, "next_n")
  local out = {}
  local t = after
  for i = 1, n do
    t = self:next(t, zone)
    if not t then break end
    out[i] = t
  end
  return out
end

local NEXT_TIMES_OPTS = { from = true, tz = true }

-- cron.next_times(expr, n [, opts]) -> array of the next n fire times
-- (integers, Unix seconds) strictly after opts.from (default os.time()), in
-- zone opts.tz ("UTC" default, "local", an IANA name, or a zone object).
-- n must be an integer 1..cron.MAX_N.  May return fewer than n times when
-- the schedule stops firing (e.g. "0 0 30 2 *" gives {}).
function cron.next_times(expr, n, opts)
  if type(expr) ~= "string" then
    error("scheduler: next_times: expression must be a string, got " .. type(expr), 0)
  end
  local ni = type(n) == "number" and math_tointeger(n)
  if not ni or ni < 1 then
    error("scheduler: next_times: n must be a positive integer, got " .. tostring(n), 0)
  end
  if ni > cron.MAX_N then
    error("scheduler: next_times: n must be at most " .. cron.MAX_N .. ", got " .. ni, 0)
  end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("scheduler: next_times: options must be a table, got " .. type(opts), 0)
  end
  for k in pairs(opts) do
    if not NEXT_TIMES_OPTS[k] then
      error("scheduler: next_times: unknown option " .. quote(tostring(k)), 0)
    end
  end
  local from = opts.from
  if from == nil then from = os_time() end
  if type(from) ~= "number" then
    error("scheduler: next_times: from must be a number, got " .. type(from), 0)
  end
  local zone = resolve_zone(opts.tz, "next_times")
  return cron.parse(expr):next_n(ni, from, zone)
end

-- cron.is_schedule(v) -> true if v is a parsed schedule.
function cron.is_schedule(v)
  return type(v) == "table" and getmetatable(v) == Schedule
end

return cron
