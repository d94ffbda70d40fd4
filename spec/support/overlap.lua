--- spec/support/overlap.lua: the most intervals open at once, the sweep
-- that checks a concurrency limit against an independent record of runs.
--   local most_at_once = require "spec.support.overlap"
--   most_at_once { { start, stop }, ... }  --> the most open at once
-- An end and a start at the same instant do not overlap (a slot freed and
-- taken again is not two runs).  Used by spec/limit_spec.lua, the fault
-- suite (faults/lib.lua's lib.most_at_once; faults/ already requires
-- test-only modules from spec/) and the benchmark (bench/limits.lua, with
-- dofile: bench/ runs without the tree on package.path); each turns its
-- own record into intervals.
return function(intervals)
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
