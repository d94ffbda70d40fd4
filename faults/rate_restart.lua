--- Issue 16, item 3: a rate limit (20 starts a second) while PostgreSQL
-- is restarted in immediate mode (a crash), then in fast mode
-- (faults/rate_limit.lua).
return require("faults.rate_limit").scenario {
  title = "a name limited to 20 starts a second; PostgreSQL restarted (immediate, then fast) meanwhile",
  name = "rate_restart", label = "raterestart",
  restarts = { { at = 2, mode = "immediate" }, { at = 5, mode = "fast" } },
}
