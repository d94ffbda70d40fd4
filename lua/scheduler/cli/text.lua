--- scheduler.cli.text: what the command reads from and writes for people:
-- times (RFC 3339 / Unix seconds), durations ("1h30m"), relative times
-- ("in 5m", "3s late"), aligned tables, and ordered JSON documents (every
-- value is encoded by the project's JSON codec, scheduler.core.json_encode).

local core = require "scheduler.core"
local tz = require "scheduler.tz"

local text = {}

local floor, tointeger = math.floor, math.tointeger

---------------------------------------------------------------------------
-- reading
---------------------------------------------------------------------------

--- Parse TIME: RFC 3339 ("2026-11-24T09:00:00Z", "2026-11-24T10:00:00.5+01:00";
-- 't', 'z' and a space instead of 'T' are accepted) or Unix seconds
-- ("1795942800", "1795942800.25").  Returns Unix seconds or nil, reason.
function text.parse_time(s)
  if s:match("^%d+$") or s:match("^%d+%.%d+$") then return tonumber(s) end
  local y, mo, d, h, mi, sec, frac, rest =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then
    return nil, "expected RFC 3339 (like 2026-11-24T09:00:00Z or 2026-11-24T10:00:00+01:00)"
      .. " or Unix seconds"
  end
  if frac == "." then return nil, "a fraction of a second needs digits after the '.'" end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  local offset
  if rest == "Z" or rest == "z" then
    offset = 0
  else
    local sign, oh, om = rest:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil, "the time zone must be Z or an offset like +01:00" end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then return nil, "offset " .. rest .. " is out of range" end
    offset = (oh * 3600 + om * 60) * (sign == "-" and -1 or 1)
  end
  if mo < 1 or mo > 12 then return nil, "month " .. mo .. " is out of range" end
  if d < 1 or d > tz.days_in_month(y, mo) then return nil, "day " .. d .. " is out of range" end
  -- (second 60, a leap second, counts as the first second of the next minute)
  if h > 23 or mi > 59 or sec > 60 then return nil, "the time of day is out of range" end
  local t = tz.days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
  if frac ~= "" then t = t + tonumber("0" .. frac) end
  return t
end

local UNIT_SECONDS = { d = 86400, h = 3600, m = 60, s = 1 }
local UNIT_ORDER = { d = 1, h = 2, m = 3, s = 4 }

--- Parse DURATION: "90" (seconds), "90s", "5m", "2h", "1d", or combinations
-- in that order ("1h30m", "1d12h"); each number may have a fraction
-- ("1.5h").  Returns seconds or nil, reason.
function text.parse_duration(s)
  if s:match("^%d+$") or s:match("^%d+%.%d+$") then return tonumber(s) end
  if s == "" then return nil, "it is empty" end
  local total, pos, last = 0, 1, 0
  while pos <= #s do
    local num, unit, nxt = s:match("^(%d+%.?%d*)([dhms])()", pos)
    if not num or num:sub(-1) == "." then
      return nil, "expected a number of seconds or numbers with units d, h, m, s (like 90, 5m or 1h30m)"
    end
    if UNIT_ORDER[unit] <= last then
      return nil, "units must come in the order d, h, m, s, each at most once"
    end
    last = UNIT_ORDER[unit]
    total = total + tonumber(num) * UNIT_SECONDS[unit]
    pos = nxt
  end
  return total
end

--- Parse a whole number in [min, max]; nil, reason otherwise.
function text.parse_integer(s, min, max)
  local n = s:match("^[+-]?%d+$") and tointeger(tonumber(s))
  if not n then return nil, "expected a whole number" end
  if n < min or (max and n > max) then
    return nil, max and ("expected a number from %d to %d"):format(min, max)
      or ("expected a number of at least %d"):format(min)
  end
  return n
end

---------------------------------------------------------------------------
-- writing
---------------------------------------------------------------------------

--- "1h30m", "45s", "2d3h": the two largest units of a duration (rounded to
-- whole seconds).
function text.duration(seconds)
  local s = floor(seconds + 0.5)
  if s < 60 then return s .. "s" end
  local units = { { "d", 86400 }, { "h", 3600 }, { "m", 60 }, { "s", 1 } }
  for i, u in ipairs(units) do
    if s >= u[2] then
      local big, v = s // u[2], units[i + 1]
      local small = (s - big * u[2]) // v[2]
      return big .. u[1] .. (small > 0 and (small .. v[1]) or "")
    end
  end
end

--- Where `t` is relative to `now`: "in 5m", "now", "3s late" (`past` is the
-- word for a past time, default "late").
--- A rate limit as "N/DURATION": 100 per 60 s is "100/1m".
function text.rate(rate, per)
  local p = per == math.floor(per) and text.duration(per) or ("%gs"):format(per)
  return ("%d/%s"):format(rate, p)
end

--- A name's limits (a stats() row) as the LIMIT column says them: "5",
-- "100/1m", "5, 100/1m", each with " per FIELD" for partitions ("5 per
-- tenant"); "-": none.
function text.limit(r)
  local parts = {}
  if r.concurrency then parts[1] = tostring(r.concurrency) end
  if r.rate then parts[#parts + 1] = text.rate(r.rate, r.per) end
  if #parts == 0 then return "-" end
  return table.concat(parts, ", ") .. (r.by and (" per %s"):format(r.by) or "")
end

function text.relative(t, now, past)
  local d = t - now
  if d >= 0.5 then return "in " .. text.duration(d) end
  if d > -0.5 then return "now" end
  return text.duration(-d) .. " " .. (past or "late")
end

--- os.date(fmt, t) when its calendar holds t (whole seconds), else nil: a
-- stored time may be any double (a time far away, on SQLite), and os.date
-- takes only integers its calendar can hold.
function text.date(fmt, t)
  if t ~= t or t <= -2 ^ 53 or t >= 2 ^ 53 then return nil end
  local ok, s = pcall(os.date, fmt, floor(t))
  return ok and s or nil
end

-- A time no calendar holds, as the number it is.
local function number(t) return ("%.14g"):format(t) end

--- Local time "2026-11-24 10:00:00" (with_zone: " +0100" appended).
function text.local_time(t, with_zone)
  return text.date(with_zone and "%Y-%m-%d %H:%M:%S %z" or "%Y-%m-%d %H:%M:%S", t) or number(t)
end

--- RFC 3339 UTC with milliseconds: "2026-11-24T09:00:00.000Z".
function text.utc_time(t)
  local ms = t * 1000 + 0.5
  local s = text.date("!%Y-%m-%dT%H:%M:%S", ms // 1000)
  if not s then return number(t) end
  return s .. (".%03dZ"):format(floor(ms % 1000))
end

--- The first `max` characters (UTF-8 aware; bytes when s is not valid
-- UTF-8) of s: the prefix and whether anything was cut.  Linear in the
-- prefix, never in the rest of s (which may be megabytes).
local function prefix(s, max)
  if #s <= max then return s, false end
  if not utf8.len(s, 1, max) then return s:sub(1, max), true end -- not UTF-8: bytes
  local cut = utf8.offset(s, max + 1)
  if not cut or cut > #s then return s, false end
  return s:sub(1, cut - 1), true
end

--- `s` with every occurrence of each of `secrets` (plain text, a list)
-- replaced by ***, the longer ones first (a decoded form of a password may
-- be part of the written one).
function text.mask(s, secrets)
  s = tostring(s)
  local list = table.move(secrets or {}, 1, #(secrets or {}), 1, {})
  table.sort(list, function(a, b) return #a > #b end)
  for _, secret in ipairs(list) do
    if secret ~= "" then
      local parts, at = {}, 1
      while true do
        local i, j = s:find(secret, at, true)
        if not i then break end
        parts[#parts + 1] = s:sub(at, i - 1)
        parts[#parts + 1] = "***"
        at = j + 1
      end
      parts[#parts + 1] = s:sub(at)
      s = table.concat(parts)
    end
  end
  return s
end

--- The first line of s, cut to `max` characters with "...".
function text.first_line(s, max)
  if s == nil then return "" end
  s = tostring(s)
  local nl = s:find("\n", 1, true)
  local line = nl and s:sub(1, nl - 1) or s
  if max then
    local p, cut = prefix(line, max - 3)
    if cut and #line > #p + 3 then line = p .. "..." end
  end
  return line
end

-- Longest a table cell gets (in characters) unless the caller says otherwise:
-- the table stays readable, and its cost bounded, whatever the data; --json
-- and `show` give the whole value.
text.CELL_MAX = 60

--- A value for a table cell: control characters (a newline or tab in a name
-- or key would break the columns, an escape would drive the terminal) shown
-- as "?", as ls does, and cut to `max` characters (default text.CELL_MAX)
-- with "...".
function text.cell(s, max)
  max = max or text.CELL_MAX
  s = tostring(s)
  local p, cut = prefix(s, max)
  if cut then p = prefix(p, max - 3) .. "..." end
  return (p:gsub("[%c\127]", "?"))
end

--- s whole, with its control characters (but those in the string `keep`,
-- such as "\n\t") written as \xNN: what `show` prints, so that
-- a name or an error cannot drive the terminal (an escape sequence) or
-- pass for other lines.
function text.visible(s, keep)
  s = tostring(s)
  return (s:gsub("[%c\127]", function(c)
    if keep and keep:find(c, 1, true) then return c end
    return ("\\x%02x"):format(c:byte())
  end))
end

local function width(s)
  return utf8.len(s) or #s
end

--- The string without its trailing spaces (a plain loop: the pattern
-- "%s+$" is quadratic in a long run of spaces that does not end the text).
local function rtrim(s)
  local e = #s
  while e > 0 and s:byte(e) == 32 do e = e - 1 end
  return s:sub(1, e)
end

--- Render rows (arrays of strings) under `headers` as aligned columns; the
-- columns whose index is in `right` are right-aligned.  Every cell goes
-- through text.cell (`max[i]`: column i's limit, default text.CELL_MAX), so
-- the time and the width are linear in the rows, not in the data's length.
-- Returns the text (lines end with "\n"); trailing spaces are trimmed.
function text.table(headers, rows, right, max)
  right, max = right or {}, max or {}
  local widths, cells = {}, {}
  for i, h in ipairs(headers) do widths[i] = width(h) end
  for r, row in ipairs(rows) do
    local c = {}
    for i, cell in ipairs(row) do
      c[i] = text.cell(cell, max[i])
      if width(c[i]) > (widths[i] or 0) then widths[i] = width(c[i]) end
    end
    cells[r] = c
  end
  local out = {}
  local function line(row)
    local parts = {}
    for i, cell in ipairs(row) do
      local pad = (" "):rep(widths[i] - width(cell))
      parts[i] = right[i] and (pad .. cell) or (cell .. pad)
    end
    out[#out + 1] = rtrim(table.concat(parts, "  ")) .. "\n"
  end
  line(headers)
  for _, row in ipairs(cells) do line(row) end
  return table.concat(out)
end

---------------------------------------------------------------------------
-- JSON documents
---------------------------------------------------------------------------

-- Ordered objects, arrays and JSON null, for output.
local Object, Array = {}, {}
text.null = setmetatable({}, { __name = "json null" })

--- An object with keys in the given order: text.object("id", 5, "key", nil).
-- A nil value is written as null.
function text.object(...)
  local o = setmetatable({ n = select("#", ...) }, Object)
  for i = 1, o.n do o[i] = (select(i, ...)) end
  return o
end

--- An array of values.
function text.array(list)
  return setmetatable({ list = list }, Array)
end

--- s as valid UTF-8: each byte of an invalid sequence becomes U+FFFD.
-- Linear: each utf8.len call scans from the last bad byte to the next one.
function text.utf8(s)
  s = tostring(s)
  local ok, bad = utf8.len(s)
  if ok then return s end
  local parts, at = {}, 1
  while true do
    parts[#parts + 1] = s:sub(at, bad - 1)
    parts[#parts + 1] = "\u{FFFD}"
    at = bad + 1
    if at > #s then break end
    ok, bad = utf8.len(s, at)
    if ok then
      parts[#parts + 1] = s:sub(at)
      break
    end
  end
  return table.concat(parts)
end

-- JSON is UTF-8: a string that is not (a name or key SQLite stored, a
-- payload's text that does not decode) is written with U+FFFD for each
-- byte of an invalid sequence, as `show` writes "?" for a control byte.
local function write(v, out)
  local mt = getmetatable(v)
  if v == nil or v == text.null then
    out[#out + 1] = "null"
  elseif mt == Object then
    out[#out + 1] = "{"
    for i = 1, v.n, 2 do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = core.json_encode(text.utf8(v[i]))
      out[#out + 1] = ":"
      write(v[i + 1], out)
    end
    out[#out + 1] = "}"
  elseif mt == Array then
    out[#out + 1] = "["
    for i, item in ipairs(v.list) do
      if i > 1 then out[#out + 1] = "," end
      write(item, out)
    end
    out[#out + 1] = "]"
  elseif type(v) == "string" then
    out[#out + 1] = core.json_encode(text.utf8(v))
  else
    out[#out + 1] = core.json_encode(v)
  end
end

--- The JSON text of a value built from text.object/array, scalars and
-- plain Lua values (payloads, encoded by the project's JSON codec)
-- (one line, no trailing newline).
function text.json(v)
  local out = {}
  write(v, out)
  return table.concat(out)
end

return text
