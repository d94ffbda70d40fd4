--- Issue 16, item 2 with partitions: limit_kill (see there) with the name
-- limited to 2 at once per tenant (`by = "tenant"`, 8 tenants, the job
-- with seq i in tenant i % 8, a ninth of them without a tenant: partition
-- ""), under the same kill -9 of a random worker every 2 s.  Counted per
-- partition from the listener's own record: never more than 2 runs of one
-- partition at once, no job lost, every duplicate a run in flight at a
-- kill.
local TENANTS = 8

-- the partition of the job with seq i (its payload's tenant, "" without)
local function part(i)
  if i % 9 == 0 then return "" end
  return "t" .. i % TENANTS
end

return require("faults.limit_kill").kill_scenario {
  title = "a name limited to 2 at once per tenant (9 partitions); kill -9 of a random worker every 2 s",
  label = "limitparts", limit = 2, by = "tenant", part = part,
  payload = function(i)
    local p = part(i)
    return { tenant = p ~= "" and p or nil }
  end,
}
