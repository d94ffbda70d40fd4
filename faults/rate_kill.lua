--- Issue 16, item 3: a rate limit (20 starts a second) while a random
-- worker is killed -9 every 2 s (faults/rate_limit.lua).
return require("faults.rate_limit").scenario {
  title = "a name limited to 20 starts a second; kill -9 of a random worker every 2 s",
  label = "ratekill",
}
