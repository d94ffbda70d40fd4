--- Issue 16, item 2 with partitions across database restarts:
-- limit_restart (see there) with the name limited to 2 at once per tenant
-- (`by = "tenant"`), its jobs in two partitions: tenant "a" (even seq)
-- and no tenant (odd seq: partition "").  PostgreSQL is restarted in
-- immediate mode (a crash), then in fast mode, while both partitions are
-- at their limit: 4 slots for the workers' 6 coroutines (with
-- limit_kill_parts' 9 partitions, 18 slots for 6, the claims' round-robin
-- spreads the runs and no partition need ever be full).  Counted per
-- partition from the listener's own record: never more than 2 runs of one
-- partition at once, before, across and after the restarts (each
-- partition's running leases are committed rows, counted again by the
-- first claim after the server's return); no job lost; every duplicate a
-- run whose outcome a restart cut off; the same workers fill a
-- partition's 2 slots again.
local function part(i) return i % 2 == 0 and "a" or "" end

return require("faults.limit_restart").restart_scenario {
  title = "a name limited to 2 at once per tenant (2 partitions, both full); PostgreSQL restarted (immediate,"
    .. " then fast) meanwhile",
  name = "limit_restart_parts", label = "limitrestartparts", limit = 2, by = "tenant", part = part,
  payload = function(i) return { tenant = part(i) ~= "" and part(i) or nil } end,
  restarts = { { at = 2, mode = "immediate" }, { at = 5, mode = "fast" } },
}
