--- Scenario 4, database absent at start: `lua-scheduler run` is started
-- against a PostgreSQL cluster that does not exist yet.  It must wait,
-- saying so in its log, and start its workers and run jobs as soon as the
-- cluster is created and started (scripts/pgtmp start, on the port the
-- command was given).  SIGTERM while it waits stops it (exit 0).
local lib = require "faults.lib"
local core = require "scheduler.core"
local scheduler = require "scheduler"

--- A TCP port nobody listens on (from /proc/net/tcp*).
local function free_port()
  local used = {}
  for _, f in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    for port in (lib.read_file(f) or ""):gmatch("\n%s*%d+: [%x:]+:(%x+)") do used[tonumber(port, 16)] = true end
  end
  for _ = 1, 200 do
    local p = math.random(20000, 60000)
    if not used[p] then return p end
  end
  error("no free port")
end

return {
  title = "database absent at start: run waits, then starts when the cluster appears",
  recovery = "the new cluster is ready -> the first job runs",
  run = function(ctx, r)
    local dir = lib.tmpdir("absent-cluster")
    local port = free_port()
    local database = ("host=%s port=%d dbname=scheduler_test user=postgres"):format(dir, port)
    local records = lib.tmpdir("absent-records")
    local rec = lib.records(records)
    local sup = lib.start_run("absent", 2, records, { LUA_SCHEDULER_DATABASE = database })
    r:check(sup:wait_log("waiting for the database:", 1, 15), "run logs that it waits for the database", sup)
    lib.sleep(2)
    r:check(sup:alive(), "run is still waiting 2 s later (it did not exit)", sup)
    r:check(#sup:workers() == 0, "no worker started without a database", sup)

    lib.on_cleanup(function() lib.sh(("%s stop %s"):format(lib.q(lib.PGTMP), lib.q(dir))) end)
    local t_create = lib.now()
    local out, ok = lib.sh(("%s start %s --watch %d --port %d"):format(lib.q(lib.PGTMP), lib.q(dir),
      core.process.getpid(), port))
    local t_ready = lib.now()
    r:check(ok, "the cluster was created and started", nil)
    if not ok then
      r:note(out)
      return
    end
    r:note(("creating and starting the cluster took %.2f s"):format(t_ready - t_create))
    local ids = {}
    do
      local s <close> = scheduler.new { database = database, log = false }
      ids[1] = assert(s:schedule(lib.JOB, { seq = 1 }))
    end
    r.scheduled = 1
    local started = lib.wait_for(function() return sup:count_log("started: listeners") >= 2 end, 20, 0.01)
    r:check(started, "both workers started once the database answered", sup)
    rec:wait_all(ids, 20)
    rec:read()
    local run = rec.by_id[ids[1]] and rec.by_id[ids[1]][1]
    if run then r:recovered("cluster ready -> first job run", run.start - t_ready, "ready -> job") end
    r:check(sup:count_log("the database answered after") == 1, "run logged when the database answered", sup)
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function() return nil end)
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)

    -- SIGTERM while waiting
    local idle = lib.start_run("absent-stop", 1, records,
      { LUA_SCHEDULER_DATABASE = ("host=%s port=%d dbname=x user=postgres"):format(dir, port) })
    r:check(idle:wait_log("waiting for the database:", 1, 15), "a second run waits too", idle)
    idle:kill("TERM")
    r:check(idle:wait(10) == 0, "SIGTERM while waiting for the database: exit 0", idle)
  end,
}
