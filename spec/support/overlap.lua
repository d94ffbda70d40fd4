--- spec/support/overlap.lua: the most intervals open at once, the sweep
-- that checks a concurrency limit against an independent record of runs;
-- and the sliding windows that check a rate limit the same way.
--   local most_at_once = require "spec.support.overlap"
--   most_at_once { { start, stop }, ... }  --> the most open at once
--   most_at_once.windows(times, per)       --> most, fewest, span
--   most_at_once.most_in_window(times, per) --> most
-- An end and a start at the same instant do not overlap (a slot freed and
-- taken again is not two runs).  Used by spec/limit_spec.lua,
-- spec/rate_limit_spec.lua, the fault suite (faults/lib.lua's
-- lib.most_at_once; faults/ already requires test-only modules from
-- spec/) and the benchmark (bench/limits.lua, with dofile: bench/ runs
-- without the tree on package.path); each turns its own record into
-- intervals, or times.
local function most_at_once(intervals)
  local points = {}
  for _, iv in ipairs(intervals) do
    points[#points + 1] = { iv[1], 1 }
    points[#points + 1] = { iv[2], -1 }
  end
  table.sort(points, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local now, most = 0, 0
  for _, pt in ipairs(points) do
    now = now + pt[2]
    if now > most then most = now end
  end
  return most
end

--- The `times` (any order; not changed) in windows of `per` seconds: the
-- most in any window [t, t + per) (sliding: one starting at each time
-- holds every busiest one); the fewest in a window wholly inside the
-- saturated part, from `per` after the first time to the last (a window
-- (t, t + per] after each time there holds every emptiest one; nil when
-- the times span less than 2 per); and the span, first to last.
local function windows(times, per)
  local t = table.move(times, 1, #times, 1, {})
  table.sort(t)
  local most, fewest, j, k = 0, math.huge, 1, 1
  for i = 1, #t do
    while t[i] - t[j] >= per do j = j + 1 end
    most = math.max(most, i - j + 1)
  end
  for i = 1, #t do
    if t[i] >= t[1] + per and t[i] + per <= t[#t] then
      if k < i then k = i end
      while k + 1 <= #t and t[k + 1] <= t[i] + per do k = k + 1 end
      fewest = math.min(fewest, k - i)
    end
  end
  return most, fewest ~= math.huge and fewest or nil, #t > 0 and t[#t] - t[1] or 0
end

return setmetatable({
  windows = windows,
  most_in_window = function(times, per) return (windows(times, per)) end,
}, { __call = function(_, intervals) return most_at_once(intervals) end })
