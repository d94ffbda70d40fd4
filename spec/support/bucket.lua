-- spec/support/bucket.lua: a rate limit's bucket (csrc/store.h, limit:
-- RATES) replayed over recorded claims, shared by spec/rate_limit_spec.lua
-- and the benchmark's rate row (bench/limits.lua, which loads it with
-- dofile).  A claim takes the tokens due within 0.1 s too
-- (STORE_RATE_AHEAD), and the job k of a claim (from 1, in claim order)
-- starts at its token: tat + (k - B) * step, from the bucket's tat before
-- the claim or the claim's clock, whichever is later.
local M = {}

--- The tokens of recorded claims: `claims` a list of { at = the claim's
-- clock, ids = its jobs' ids }, in any order (sorted here: the claims by
-- `at`, each claim's ids ascending, the claim order of jobs of one
-- priority scheduled in turn); `burst` and `step` the rule's.  Returns
-- due (job id -> its token's time), lost (the tokens a bucket left full
-- lost: a claim that finds it full, tat past, lost what the time since
-- would have added) and full (the claims that found it full).
function M.replay(claims, burst, step)
  table.sort(claims, function(a, b) return a.at < b.at end)
  local tat, due, lost, full = -math.huge, {}, 0, 0
  for _, c in ipairs(claims) do
    if c.at > tat then
      if tat > -math.huge then lost = lost + (c.at - tat) / step end
      full = full + 1
      tat = c.at
    end
    table.sort(c.ids)
    for _, id in ipairs(c.ids) do
      tat = tat + step
      due[id] = math.max(c.at, tat - burst * step)
    end
  end
  return due, lost, full
end

return M
