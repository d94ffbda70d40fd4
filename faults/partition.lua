--- Scenario: a network partition (issue 14, item 6).  PostgreSQL and the
-- workers run in network namespaces that the scenario creates and removes
-- itself, joined by veth pairs to a bridge in a third namespace, the
-- switch.  The cut is made in the switch (the bridge port of the workers'
-- host is disabled), so neither end sees its own link go down and nothing
-- answers: no FIN, no RST, no ICMP, as when a cable is pulled between two
-- switches or a NAT forgets the connection.
--
--   db namespace       10.213.0.1  the cluster (scripts/pgtmp --listen), and
--                                  `lua-scheduler run --workers 1` (the other
--                                  worker, which stays connected)
--   worker namespace   10.213.0.2  `lua-scheduler run --workers 3`, cut off, and
--                                  an idle `lua-scheduler run --workers 1` (I:
--                                  a listener for a name no job has)
--   switch namespace               the bridge; its port to the worker host
--                                  is disabled for the cut
--
-- When the cut begins, the cut-off host holds: a long job on a lease
-- (worker A), a batch held by its claim transaction (worker X, which stays
-- alive) and another (worker Y, killed 2 s into the cut: a worker that dies
-- during the partition), while I sleeps on its socket.  The cut lasts 90 s (--scale shortens it, to
-- 50 s at least: the lease, 30 s, must end during it).  Every job must run
-- elsewhere within lease + 15 s of the cut, X and I must notice the cut
-- (log it) before the heal and reconnect after it, and A's late outcome for the long job (it finishes
-- after the network heals) must not touch the newer claim of the other
-- worker, which still runs it.  The server's row locks and sessions are
-- watched throughout (pgrowlocks, pg_stat_activity) and the server log says
-- what ended each session of the cut-off host.
--
-- Needs root and network namespaces (`ip netns`, a bridge): where they
-- cannot be created the scenario is skipped, saying why.  Whatever happens
-- (an error, Ctrl-C, the runner killed), the namespaces, their processes
-- and the cluster are removed: by the scenario's cleanup, or else by a
-- watchdog that waits for the runner to exit.
--
-- Knobs for experiments (not used by CI): FAULTS_PARTITION_SQL, SQL run as
-- the superuser once the cluster is up (e.g. "ALTER ROLE scheduler_pw SET
-- idle_in_transaction_session_timeout = 0" puts back a server default), and
-- FAULTS_PARTITION_PARAMS, added to the workers' connection URL (e.g.
-- "tcp_user_timeout=0&keepalives=0").
local lib = require "faults.lib"
local core = require "scheduler.core"
local scheduler = require "scheduler"

local NET = "10.213.0" -- private addresses, used only inside the scenario's namespaces
local DB_ADDR, WORKER_ADDR = NET .. ".1", NET .. ".2"
local LEASE = 30       -- lua-scheduler run's lease (the default)
local BOUND = LEASE + 15
local BATCH = 8        -- jobs in each held batch
local JOB_SLEEP = 0.3  -- seconds each of them takes

--- Run a shell command; raise with its output on failure.
local function sh(cmd)
  local out, ok = lib.sh(cmd)
  if not ok then error(("command failed: %s\n%s"):format(cmd, out), 2) end
  return out
end

--- Seconds since the epoch of a log line's "YYYY-MM-DDTHH:MM:SS.mmmZ".
local function log_time(line)
  local y, mo, d, h, mi, s = line:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d.]+)Z")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- days from 1970-01-01 (proleptic Gregorian), without the local time zone
  if mo <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end

--- The worker processes of a `lua-scheduler run`, from its log: slot ->
-- pid (the latest) and pid -> slot (all).
local function slots_of(proc)
  local by_slot, by_pid = {}, {}
  for slot, pid in proc:err():gmatch("started worker (%d+) %(pid (%d+)%)") do
    by_slot[tonumber(slot)] = tonumber(pid)
    by_pid[tonumber(pid)] = tonumber(slot)
  end
  return by_slot, by_pid
end

--- Log lines of worker `slot` of `proc`, each { t = its time, text = the line }.
local function worker_lines(proc, slot)
  local out = {}
  local tag = ("[worker %d "):format(slot)
  for line in proc:err():gmatch("[^\n]+") do
    if line:find(tag, 1, true) then out[#out + 1] = { t = log_time(line), text = line } end
  end
  return out
end

--- The first of `lines` at or after `t0` with `pattern` (plain text), or
-- without one the first warning or error.
local function first_line(lines, t0, pattern)
  for _, l in ipairs(lines) do
    if l.t and l.t >= t0 then
      if pattern and l.text:find(pattern, 1, true) then return l end
      if not pattern and (l.text:find(" warn ", 1, true) or l.text:find(" error ", 1, true)) then
        return l
      end
    end
  end
  return nil
end

---------------------------------------------------------------------------
-- the network
---------------------------------------------------------------------------

--- Create the three namespaces, the bridge and the veth pairs.  Returns
-- the network, or nil and why when namespaces cannot be made here (the
-- scenario is then skipped).  Its cleanup is registered before anything
-- is created.
local function make_network(pgdir)
  local net = {}
  local id = core.process.getpid()
  local prefix = "lsp" .. id -- unique on this host while the runner lives
  net.sw, net.db, net.wk = prefix .. "s", prefix .. "d", prefix .. "w"
  net.db_if, net.wk_if = prefix .. "d0", prefix .. "w0" -- the hosts' ends
  net.sw_db, net.sw_wk = prefix .. "sd", prefix .. "sw" -- the switch's ends
  net.pgdir = pgdir

  local _, is_root = lib.sh('test "$(id -u)" = 0')
  if not is_root then return nil, "not root (network namespaces need root)" end
  local _, has_ip = lib.sh("command -v ip")
  if not has_ip then return nil, "no `ip` command (iproute2; scripts/install-deps installs it)" end

  -- The cleanup: the cluster, every process left in the namespaces (ours:
  -- nothing else can be in them), then the namespaces (their veths go with
  -- them).  The same script runs from the scenario's cleanup and from the
  -- watchdog, which runs it if the runner exits first (Ctrl-C, kill).
  local parts = {}
  if pgdir then parts[#parts + 1] = ("%s stop %s"):format(lib.q(lib.PGTMP), lib.q(pgdir)) end
  for _, ns in ipairs { net.wk, net.db, net.sw } do
    parts[#parts + 1] = ('p=$(ip netns pids %s 2>/dev/null); [ -z "$p" ] || kill -KILL $p'):format(ns)
  end
  parts[#parts + 1] = "sleep 0.2"
  for _, ns in ipairs { net.wk, net.db, net.sw } do
    parts[#parts + 1] = ("ip netns del %s"):format(ns)
  end
  local script = table.concat(parts, " >/dev/null 2>&1; ") .. " >/dev/null 2>&1; true"
  local wdir = lib.tmpdir("partition-watchdog")
  local wpid_file = wdir .. "/pid"
  lib.sh(("setsid sh -c %s </dev/null >/dev/null 2>&1 &"):format(lib.q(
    ("echo $$ > %s; tail --pid=%d -f /dev/null; %s"):format(lib.q(wpid_file), id, script))))
  local wpid = lib.wait_for(function()
    local s = lib.read_file(wpid_file)
    return s and tonumber(s:match("%d+"))
  end, 10, 0.01)
  assert(wpid, "the namespace watchdog did not start")
  net.cleanup = function()
    if net.cleaned then return end
    net.cleaned = true
    lib.sh(script)
    -- the watchdog: its own process group (setsid), its sh and tail
    lib.sh(("kill -TERM -- -%d"):format(wpid))
  end
  lib.on_cleanup(net.cleanup)

  -- leftovers of an earlier runner with the same pid (killed before its
  -- watchdog could run) would be in the way: the names are ours
  for _, ns in ipairs { net.sw, net.db, net.wk } do lib.sh(("ip netns del %s"):format(ns)) end
  local out, ok = lib.sh("ip netns add " .. net.sw)
  if not ok then return nil, "cannot create a network namespace: " .. out:gsub("%s+$", "") end
  sh("ip netns add " .. net.db)
  sh("ip netns add " .. net.wk)
  out, ok = lib.sh(("ip -n %s link add br0 type bridge"):format(net.sw))
  if not ok then return nil, "cannot create a bridge in a namespace: " .. out:gsub("%s+$", "") end
  sh(("ip link add %s netns %s type veth peer name %s netns %s"):format(net.db_if, net.db, net.sw_db, net.sw))
  sh(("ip link add %s netns %s type veth peer name %s netns %s"):format(net.wk_if, net.wk, net.sw_wk, net.sw))
  for _, ns in ipairs { net.sw, net.db, net.wk } do sh(("ip -n %s link set lo up"):format(ns)) end
  for _, port in ipairs { net.sw_db, net.sw_wk } do
    sh(("ip -n %s link set %s master br0"):format(net.sw, port))
    sh(("ip -n %s link set %s up"):format(net.sw, port))
  end
  sh(("ip -n %s link set br0 up"):format(net.sw))
  sh(("ip -n %s addr add %s/24 dev %s"):format(net.db, DB_ADDR, net.db_if))
  sh(("ip -n %s link set %s up"):format(net.db, net.db_if))
  sh(("ip -n %s addr add %s/24 dev %s"):format(net.wk, WORKER_ADDR, net.wk_if))
  sh(("ip -n %s link set %s up"):format(net.wk, net.wk_if))
  return net
end

--- Cut or heal the worker host's link, inside the switch: its bridge port
-- stops forwarding (STP state "disabled", set by hand: the bridge runs no
-- STP).  Both veth pairs stay up at both ends.
local function set_cut(net, cut)
  sh(("bridge -n %s link set dev %s state %d"):format(net.sw, net.sw_wk, cut and 0 or 3))
end

--- Link state of the hosts' own interfaces ("UP,LOWER_UP" while they see
-- a carrier).
local function link_flags(net)
  local function flags(ns, dev)
    return (sh(("ip -n %s -o link show dev %s"):format(ns, dev)):match("<([^>]*)>") or "?")
  end
  return flags(net.db, net.db_if), flags(net.wk, net.wk_if)
end

---------------------------------------------------------------------------
-- the scenario
---------------------------------------------------------------------------

return {
  title = "network partition of 90 s between PostgreSQL and a worker host (namespaces)",
  recovery = "the cut -> all jobs of the batch held by the live cut-off worker ran elsewhere"
    .. " (held), of the batch of the worker killed during the cut (held/killed), the leased"
    .. " job (leased); the cut -> the cut-off worker logs it (notice); the heal -> it runs"
    .. " jobs again (healed)",
  run = function(ctx, r)
    local cut_len = math.max(LEASE + 20, math.floor(90 * ctx.scale + 0.5))
    local pgdir = lib.tmpdir("partition-cluster")
    local net, why = make_network(pgdir)
    if not net then
      r.skipped = why
      r:note("SKIPPED: " .. why)
      return
    end
    local db_flags, wk_flags = link_flags(net)
    lib.log("partition: namespaces %s, %s, %s; links %s / %s", net.db, net.wk, net.sw, db_flags, wk_flags)

    -- the cluster, in the db namespace, listening on its address too
    sh(("ip netns exec %s %s start %s --listen %s/24"):format(net.db, lib.q(lib.PGTMP), lib.q(pgdir), DB_ADDR))
    local env = lib.read_file(pgdir .. "/env")
    local port = assert(env:match("PGTMP_PORT='(%d+)'"))
    local password = assert(env:match("PGTMP_PASSWORD='(%x+)'"))
    local localdb = ("host=%s port=%s dbname=scheduler_test user=postgres"):format(pgdir, port)
    local url = ("postgresql://scheduler_pw:%s@%s:%s/scheduler_test"):format(password, DB_ADDR, port)
    local params = os.getenv("FAULTS_PARTITION_PARAMS")
    if params and params ~= "" then url = url .. "?" .. params end
    -- the server says why each session ended (disconnections from new
    -- sessions on; "could not receive data from client" is a LOG line)
    lib.psql([[
      ALTER SYSTEM SET log_min_messages = 'log';
      ALTER SYSTEM SET log_disconnections = on;
      SELECT pg_reload_conf();
      CREATE EXTENSION pgrowlocks;]], { conn = localdb })
    local extra_sql = os.getenv("FAULTS_PARTITION_SQL")
    if extra_sql and extra_sql ~= "" then
      lib.psql(extra_sql, { conn = localdb })
      r:note("experiment: FAULTS_PARTITION_SQL = " .. extra_sql)
    end
    if params and params ~= "" then r:note("experiment: FAULTS_PARTITION_PARAMS = " .. params) end
    -- the schema, by the workers' role over TCP from the worker host (which
    -- checks the network too)
    sh(("ip netns exec %s env LUA_SCHEDULER_DATABASE=%s %s %s migrate"):format(net.wk, lib.q(url),
      lib.q(lib.LUA), lib.q(lib.BIN)))

    local s <close> = scheduler.new { database = localdb, log = false }
    local records = lib.tmpdir("partition-records")
    local hold = lib.tmpdir("partition-hold") -- <hold>/<pid> ends that worker's run of the long job
    local rec = lib.records(records)
    local wenv = { LUA_SCHEDULER_DATABASE = url }
    local cutoff = lib.start_run("partition-cutoff", 3, records, wenv, nil,
      { wrap = { "ip", "netns", "exec", net.wk } })
    if not r:check(cutoff:wait_log("started: listeners", 3, 30), "the 3 cut-off workers started", cutoff) then
      return
    end
    -- I: a worker of the cut-off host with nothing to do (its one listener
    -- is for a name no job has): asleep on its socket when the cut comes
    local idle_dir = lib.tmpdir("partition-idle-listeners")
    lib.write_file(idle_dir .. "/idle.lua", 'require("scheduler").on("partition-idle", function() end)\n')
    local idle = lib.start("partition-idle", { lib.LUA, lib.BIN, "run", "--workers", "1", idle_dir }, wenv,
      { wrap = { "ip", "netns", "exec", net.wk } })
    if not r:check(idle:wait_log("started: listeners", 1, 30), "the idle cut-off worker started", idle) then
      return
    end

    --- The earliest run of job `id` (for which pred(run) holds, if given).
    local function first_run(id, pred)
      rec:read()
      local first
      for _, run in ipairs(rec.by_id[id] or {}) do
        if (not pred or pred(run)) and (not first or run.start < first.start) then first = run end
      end
      return first
    end

    -- A: the long job, on a lease.  It waits for <hold>/<pid>.
    local long = assert(s:schedule(lib.JOB, { seq = 0, wait = hold, sleep = cut_len + 300 }))
    local a_run = lib.wait_for(function() return first_run(long) end, 20, 0.02)
    if not r:check(a_run ~= nil, "a cut-off worker started the long job", cutoff) then return end
    local leased = lib.wait_for(function() return lib.leased(s, long) end, 10, 0.05)
    r:check(leased, "the long job is on a lease (its batch settled) before the cut")

    -- X, then Y: a batch each, held by the claim transaction (a batch is
    -- settled after min(lease / 4, 1 s): the cut must come before that)
    local function batch(seq0)
      local list, t = {}, lib.now()
      for i = 1, BATCH do list[i] = { lib.JOB, { seq = seq0 + i, sleep = JOB_SLEEP }, t } end
      return assert(s:schedule_many(list))
    end
    local function started_by(ids, exclude)
      return lib.wait_for(function()
        rec:read()
        for _, id in ipairs(ids) do
          for _, run in ipairs(rec.by_id[id] or {}) do
            if not exclude[run.pid] then return run end
          end
        end
      end, 10, 0.01)
    end
    -- rows of `ids` locked (held by a claim transaction) now
    local function held(ids)
      local out = lib.psql(([[
        SELECT count(*) FROM pgrowlocks('scheduler.jobs') l JOIN scheduler.jobs j ON j.ctid = l.locked_row
        WHERE j.id = ANY ('{%s}')]]):format(table.concat(ids, ",")), { conn = localdb })
      return tonumber(out) or 0
    end
    -- Both idle workers may wake for X's batch and split it (each claim
    -- takes the rows the other has not locked yet): then Y starts its
    -- batch only after its share of X's, X's has been settled, and neither
    -- is what the cut must find.  Then wait for them to end, and again.
    local b1, b2, x_run, y_run
    for try = 1, 3 do
      b1 = batch(100 + 1000 * (try - 1))
      x_run = started_by(b1, { [a_run.pid] = true })
      if not r:check(x_run ~= nil, "a second cut-off worker started a batch", cutoff) then return end
      b2 = batch(200 + 1000 * (try - 1))
      y_run = started_by(b2, { [a_run.pid] = true, [x_run.pid] = true })
      if not r:check(y_run ~= nil, "a third cut-off worker started another batch", cutoff) then return end
      local hx, hy = held(b1), held(b2)
      if (hx == BATCH and hy == BATCH) or try == 3 then break end -- (else the check below fails)
      local why = ("try %d: the batches were split or settled before the cut (%d and %d of %d rows held): again")
        :format(try, hx, hy, BATCH)
      r:note(why)
      lib.log("partition: %s", why)
      local all = {}
      for _, id in ipairs(b1) do all[#all + 1] = id end
      for _, id in ipairs(b2) do all[#all + 1] = id end
      if not r:check(lib.wait_for(function()
        for _, id in ipairs(all) do
          if s:job(id) then return false end
        end
        return true
      end, 30, 0.05), "the split batches ran before the next try", cutoff) then return end
    end

    -- the cut
    local t_cut = lib.now()
    set_cut(net, true)
    lib.log("partition: cut after %.3f s (X's batch began %.3f s before, Y's %.3f s)", lib.now() - t_cut,
      t_cut - x_run.start, t_cut - y_run.start)
    local other = lib.start_run("partition-other", 1, records, wenv, nil,
      { wrap = { "ip", "netns", "exec", net.db } })

    local POLL_SQL = ([[
      WITH locked AS (
        SELECT j.id FROM pgrowlocks('scheduler.jobs') l JOIN scheduler.jobs j ON j.ctid = l.locked_row)
      SELECT 'x', count(*)::text FROM locked WHERE id = ANY ('{%s}')
      UNION ALL SELECT 'y', count(*)::text FROM locked WHERE id = ANY ('{%s}')
      UNION ALL SELECT 's', pid || ' ' || state FROM pg_stat_activity WHERE client_addr = '%s']])
      :format(table.concat(b1, ","), table.concat(b2, ","), WORKER_ADDR)
    local sessions, gone = {}, {} -- backend pid -> state at the cut / when it went
    local free = {}               -- 'x'/'y' -> when its batch's rows were no longer locked
    local function poll(first)
      local out = lib.psql(POLL_SQL, { conn = localdb })
      local now, seen = lib.now(), {}
      for k, v in out:gmatch("([xys])\t([^\n]*)") do
        if k == "s" then
          local pid, state = v:match("^(%d+) (.*)$")
          if pid then
            seen[pid] = true
            if first then sessions[pid] = state end
          end
        elseif first then
          free[k .. "_at_cut"] = tonumber(v)
        elseif tonumber(v) == 0 and not free[k] then
          free[k] = now
        end
      end
      for pid in pairs(sessions) do
        if not seen[pid] and not gone[pid] then gone[pid] = now end
      end
    end
    poll(true)
    local n_sessions = 0
    for _ in pairs(sessions) do n_sessions = n_sessions + 1 end
    r:check(free.x_at_cut == BATCH and free.y_at_cut == BATCH,
      ("at the cut both batches were held by their transactions (%s and %s of %d rows locked)")
      :format(tostring(free.x_at_cut), tostring(free.y_at_cut), BATCH))
    db_flags, wk_flags = link_flags(net)
    r:check(db_flags:find("LOWER_UP", 1, true) and wk_flags:find("LOWER_UP", 1, true),
      ("during the cut both hosts' links are up (%s / %s)"):format(db_flags, wk_flags))

    -- Y dies during the cut
    local killed, t_kill = false, nil
    while lib.now() < t_cut + cut_len do
      if not killed and lib.now() >= t_cut + 2 then
        t_kill = lib.now()
        killed = core.process.kill(y_run.pid, "KILL")
        r:check(killed, "worker Y was killed 2 s into the cut")
      end
      poll(false)
      lib.sleep(0.5)
    end

    -- the heal
    local t_heal = lib.now()
    set_cut(net, false)
    lib.log("partition: healed after %.1f s", t_heal - t_cut)
    rec:read()

    local _, cut_pids = slots_of(cutoff)
    local _, other_pids = slots_of(other)
    local x_slot = cut_pids[x_run.pid]
    local a_slot = cut_pids[a_run.pid]

    -- X reconnects; then A's run of the long job ends, after the other
    -- worker took it over: A's outcome is a late write on an old claim
    local x_back = lib.wait_for(function()
      return first_line(worker_lines(cutoff, x_slot), t_heal, "database available again")
    end, 60, 0.1)
    r:check(x_back ~= nil, "the cut-off worker X reconnected after the heal", cutoff)
    local long_other = first_run(long, function(run) return other_pids[run.pid] end)
    r:check(long_other ~= nil, "the other worker took over the long job during the cut")
    lib.write_file(hold .. "/" .. a_run.pid, "")
    -- jobs after the heal, one every 0.2 s, until A ran one (A's loop
    -- records its outcome before it claims: A's late write is then done)
    local post, a_post = {}, nil
    local t_post = lib.now()
    while lib.now() < t_post + 60 do
      post[#post + 1] = assert(s:schedule(lib.JOB, { seq = 1000 + #post, sleep = 0.05 }))
      lib.sleep(0.2)
      rec:read()
      for _, id in ipairs(post) do
        for _, run in ipairs(rec.by_id[id] or {}) do
          if run.pid == a_run.pid then a_post = run end
        end
      end
      if a_post then break end
    end
    r:check(a_post ~= nil, "worker A, cut off while it ran the long job, runs jobs after the heal", cutoff)
    local j = assert(s:jobs { id = long })[1]
    local other_id = other:err():match("%[worker 1 ([^%]]+)%]")
    r:check(j and j.state == "running" and j.locked_by == other_id
      and long_other and j.attempt == long_other.attempt,
      ("A's late outcome did not touch the newer claim: the long job is still %s by %s at attempt %s"
        .. " (the other worker %s runs attempt %s)"):format(j and j.state or "gone", j and j.locked_by or "-",
        j and tostring(j.attempt) or "-", tostring(other_id), long_other and tostring(long_other.attempt) or "-"))
    if long_other then lib.write_file(hold .. "/" .. long_other.pid, "") end
    r:check(lib.wait_for(function() return s:job(long) == nil end, 30, 0.1),
      "the other worker finished the long job")

    local ids = { long }
    for _, list in ipairs { b1, b2, post } do table.move(list, 1, #list, #ids + 1, ids) end
    rec:wait_all(ids, 60)
    lib.sleep(1) -- would anything run twice?
    rec:read()
    local left = lib.psql_value("SELECT count(*) || ' ' || count(*) FILTER (WHERE state = 'failed')"
      .. " FROM scheduler.jobs", { conn = localdb })
    r:check(left == "0 0", ("every job is done: none left, none failed (left, failed: %s)"):format(left))
    -- I retries its connection with a backoff of up to 5 s (+25% jitter,
    -- RECONNECT_MAX in csrc/loop.c) plus the connect: wait for it that long
    -- and more before it is stopped (the jobs above can all be done within
    -- 3 s of the heal, before its next try), rather than only as long as X
    -- and A took
    lib.wait_for(function()
      return first_line(worker_lines(idle, 1), t_heal, "database available again")
    end, 30, 0.1)
    r:check(other:stop() == 0, "the other worker stopped gracefully (exit 0)", other)
    r:check(idle:stop() == 0, "the idle cut-off worker stopped gracefully (exit 0)", idle)
    r:check(cutoff:stop() == 0, "the cut-off host's supervisor stopped gracefully (exit 0)", cutoff)

    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function(runs)
      -- each run but the last was on the cut-off host before the heal, and
      -- the next one elsewhere after the cut
      for i = 1, #runs - 1 do
        local a, b = runs[i], runs[i + 1]
        if not (cut_pids[a.pid] and a.start < t_heal and b.start > t_cut and b.pid ~= a.pid) then
          return nil
        end
      end
      return "on the cut-off host, then elsewhere"
    end)

    -- figures
    local function elsewhere(list)
      local first, last, n = math.huge, 0, 0
      for _, id in ipairs(list) do
        local run = first_run(id, function(x) return other_pids[x.pid] and x.start > t_cut end)
        if run then
          n = n + 1
          first, last = math.min(first, run.start), math.max(last, run.start)
        end
      end
      return n, first - t_cut, last - t_cut
    end
    local nx, fx, lx = elsewhere(b1)
    local ny, fy, ly = elsewhere(b2)
    r:check(nx == BATCH, ("every job of X's held batch ran on the other worker (%d of %d)"):format(nx, BATCH))
    r:check(ny == BATCH, ("every job of Y's held batch ran on the other worker (%d of %d)"):format(ny, BATCH))
    if nx > 0 then
      r:recovered("cut -> first job of the batch held by the live cut-off worker X ran elsewhere", fx)
      r:recovered("cut -> all of it ran elsewhere", lx, "held")
      r:check(lx <= BOUND, ("X's held batch ran elsewhere within lease + 15 s (%.1f s)"):format(lx))
    end
    if ny > 0 then
      r:recovered("cut -> all of the batch held by worker Y, killed 2 s into the cut, ran elsewhere", ly,
        "held/killed")
      r:check(ly <= BOUND, ("Y's held batch ran elsewhere within lease + 15 s (%.1f s)"):format(ly))
    end
    if long_other then
      r:recovered("cut -> the leased long job ran elsewhere", long_other.start - t_cut, "leased")
      r:check(long_other.start - t_cut <= BOUND,
        ("the leased job ran elsewhere within lease + 15 s (%.1f s)"):format(long_other.start - t_cut))
    end
    if free.x then r:recovered("cut -> the server freed the rows of X's batch", free.x - t_cut) end
    if free.y then r:recovered("cut -> the server freed the rows of Y's batch", free.y - t_cut) end
    r:check(free.x and free.y and free.x < t_heal and free.y < t_heal,
      "the server freed both batches' rows during the cut")

    -- the server side: what ended each session of the cut-off host
    local pglog = lib.read_file(pgdir .. "/postgres.log") or ""
    local ended = {}
    for pid, state in pairs(sessions) do
      local why = {}
      for line in pglog:gmatch("[^\n]+") do
        if line:find("[" .. pid .. "]", 1, true) and (line:find("FATAL", 1, true)
            or line:find("could not", 1, true) or line:find("connection to client", 1, true)) then
          why[#why + 1] = line:match("%] %S* ?(%u+:.*)$") or line
        end
      end
      ended[#ended + 1] = ("backend %s (%s at the cut): %s %s"):format(pid, state,
        gone[pid] and ("gone %.1f s after the cut"):format(gone[pid] - t_cut) or "still there at the heal",
        #why > 0 and ("[" .. table.concat(why, " | ") .. "]") or "")
    end
    table.sort(ended)
    r:note(("%d sessions of the cut-off host at the cut:"):format(n_sessions))
    for _, e in ipairs(ended) do r:note("  " .. e) end

    -- the cut-off worker X: when it noticed, when it was back
    local xl = worker_lines(cutoff, x_slot)
    local notice = first_line(xl, t_cut)
    if notice then
      r:recovered("cut -> X logs it: " .. notice.text:gsub("^%S+%s+%S+%s+", ""), notice.t - t_cut, "notice")
    end
    r:check(notice ~= nil and notice.t < t_heal, "X noticed the cut before the heal", cutoff)
    -- what X said, and when: from the cut to its reconnection
    local said = 0
    for _, l in ipairs(xl) do
      if l.t and l.t >= t_cut and said < 8 and (not x_back or l.t <= x_back.t) then
        said = said + 1
        r:note(("X at cut + %.1f s: %s"):format(l.t - t_cut, l.text:gsub("^%S+%s+", ""):match("^[^\n]*")))
      end
    end
    local x_last = 0
    for _, id in ipairs(b1) do
      for _, run in ipairs(rec.by_id[id] or {}) do
        if run.pid == x_run.pid then x_last = math.max(x_last, run.start) end
      end
    end
    r:recovered("cut -> X's last start of a job of its held batch", x_last - t_cut)
    if x_back then r:recovered("heal -> X logs \"database available again\"", x_back.t - t_heal) end
    local first_after = math.huge
    for _, run in ipairs(rec.runs) do
      if cut_pids[run.pid] and run.start > t_heal then first_after = math.min(first_after, run.start) end
    end
    if first_after < math.huge then
      r:recovered("heal -> the cut-off host runs a job", first_after - t_heal, "healed")
    end
    local il = worker_lines(idle, 1)
    local i_notice, i_back = first_line(il, t_cut), first_line(il, t_heal, "database available again")
    if i_notice then
      r:recovered("cut -> the idle cut-off worker I logs it: " .. i_notice.text:gsub("^%S+%s+%S+%s+", ""),
        i_notice.t - t_cut, "notice/idle")
    end
    r:check(i_notice ~= nil and i_notice.t < t_heal, "the idle worker I noticed the cut before the heal", idle)
    if i_back then r:recovered("heal -> I logs \"database available again\"", i_back.t - t_heal) end
    r:check(i_back ~= nil, "the idle worker I reconnected after the heal", idle)
    local al = worker_lines(cutoff, a_slot)
    local a_notice = first_line(al, t_cut)
    if a_notice then
      r:note(("A (blocked in the long job's listener) logged first, after the job: %s"):format(a_notice.text))
    end

    net.cleanup()
    local list = lib.sh("ip netns list")
    r:check(not list:find("lsp" .. core.process.getpid(), 1, true), "the namespaces are removed")
  end,
}
