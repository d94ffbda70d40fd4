--- Scenario 8, secrets and least privilege.
--   - The workers connect over TCP with a password, as the least-privilege
--     role of the README (its SQL is taken from the README and run here):
--     DML on the scheduler schema, no DDL.  The role's privileges are
--     checked in the catalog, and DDL by it is refused.
--   - The password never appears in the logs (debug level, text and json),
--     in error messages (a wrong password, an unreachable server), in `ps`
--     and /proc/PID/cmdline of the supervisor and workers (a password given
--     with --database is hidden at start-up, with a warning), or in job()
--     and `show` output.  PGPASSFILE works instead of a password in the URL.
--   - sslmode passes through to libpq: against the server without TLS,
--     require fails with libpq's error and disable works; with TLS turned on
--     (a self-signed certificate), require gives TLS connections,
--     verify-full accepts the right root certificate and refuses another.
local lib = require "faults.lib"
local core = require "scheduler.core"
local scheduler = require "scheduler"

local ROLE = "scheduler_worker"

--- The README's least-privilege SQL block.
local function readme_sql()
  local readme = assert(lib.read_file(lib.ROOT .. "/README.md"))
  for block in readme:gmatch("```sql\n(.-)```") do
    if block:find("CREATE ROLE " .. ROLE, 1, true) then return block end
  end
end

--- Run `lua-scheduler args...` to completion with `env`; output (stdout
-- and stderr together) and success.
local function cli(args, env)
  local parts = { "env" }
  for k, v in pairs(env or {}) do parts[#parts + 1] = lib.q(k .. "=" .. v) end
  parts[#parts + 1] = lib.q(lib.LUA)
  parts[#parts + 1] = lib.q(lib.BIN)
  for _, a in ipairs(args) do parts[#parts + 1] = lib.q(a) end
  return lib.sh(table.concat(parts, " ") .. " </dev/null")
end

local function contains(text, s) return text:find(s, 1, true) ~= nil end

local function dump(v)
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = tostring(k) .. "=" .. dump(x) end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end

return {
  title = "secrets: no password in logs, errors, ps or job(); least-privilege role; sslmode",
  run = function(ctx, r)
    lib.clear_jobs()
    local port = assert(os.getenv("PGTMP_PORT"))
    local pw = ("Pw%08x@%04x"):format(math.random(0, 0x7fffffff), math.random(0, 0xffff))
    local enc = pw:gsub("@", "%%40") -- as written in a URL
    local url = ("postgresql://%s:%s@127.0.0.1:%s/scheduler_test"):format(ROLE, enc, port)
    local bare = ("postgresql://%s@127.0.0.1:%s/scheduler_test"):format(ROLE, port)
    local seen = {} -- every text a user could see: scanned for the password at the end
    local function saw(label, text) seen[#seen + 1] = { label = label, text = text or "" } end
    local records = lib.tmpdir("secrets-records")
    local rec = lib.records(records)
    local s <close> = scheduler.new { log = false } -- the owner, over the socket
    local ids = {}
    local tls_records

    -- the README's role
    local sql = readme_sql()
    if not r:check(sql, "the README has the least-privilege role's SQL") then return end
    local mine = sql:gsub("'change%-me'", "'" .. pw .. "'"):gsub("DATABASE app ", "DATABASE scheduler_test ")
    r:check(mine ~= sql, "the README's SQL has the placeholders 'change-me' and database app")
    lib.psql(mine)
    local priv = lib.psql(([[
      SELECT r.rolsuper OR r.rolcreatedb OR r.rolcreaterole OR r.rolreplication OR r.rolbypassrls,
             (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid),
             has_database_privilege(r.oid, current_database(), 'CREATE'),
             has_schema_privilege(r.oid, 'scheduler', 'CREATE'),
             has_schema_privilege(r.oid, 'public', 'CREATE'),
             has_schema_privilege(r.oid, 'scheduler', 'USAGE'),
             (SELECT bool_and(has_table_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE'))
                FROM pg_class c WHERE c.relnamespace = 'scheduler'::regnamespace AND c.relkind = 'r'),
             (SELECT bool_or(has_table_privilege(r.oid, c.oid, 'TRUNCATE, REFERENCES, TRIGGER'))
                FROM pg_class c WHERE c.relnamespace = 'scheduler'::regnamespace AND c.relkind = 'r'),
             (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid)
      FROM pg_roles r WHERE r.rolname = '%s']]):format(ROLE))
    r:check(priv:match("^f\t0\tf\tf\tf\tt\tt\tf\t0"), ("the role has DML on the scheduler schema and"
      .. " nothing else: no superuser/createdb/createrole/replication, no membership, no CREATE on"
      .. " the database or a schema, no TRUNCATE/REFERENCES/TRIGGER, owns nothing [%s]"):format(
      (priv:gsub("%s+$", ""):gsub("\t", " "))))
    local as_role = ("host=127.0.0.1 port=%s dbname=scheduler_test user=%s password=%s"):format(port, ROLE, pw)
    for _, ddl in ipairs { "CREATE TABLE scheduler.evil (x int)", "DROP TABLE scheduler.jobs",
      "ALTER TABLE scheduler.jobs ADD COLUMN evil int", "TRUNCATE scheduler.jobs",
      "CREATE TABLE public.evil (x int)" } do
      local out, ok = lib.psql(ddl, { conn = as_role, may_fail = true })
      r:check(not ok and (contains(out, "permission denied") or contains(out, "must be owner")),
        ("the role may not: %s"):format(ddl))
    end

    -- A: `run --database URL` (password on the command line), text logs at debug
    local sup = lib.start_run("secrets-text", 2, records, nil, { "--database", url, "--log-level", "debug" })
    r:check(sup:wait_log("started: listeners", 2, 20), "the workers started as " .. ROLE, sup)
    r:check(contains(sup:err(), "warning: the password in --database is visible"),
      "a password given with --database is warned about", sup)
    local pids = { sup.pid }
    for _, w in ipairs(sup:workers()) do pids[#pids + 1] = w end
    for _, pid in ipairs(pids) do
      local cmdline = (lib.read_file("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
      saw("/proc/" .. pid .. "/cmdline", cmdline)
    end
    local sup_cmd = (lib.read_file("/proc/" .. sup.pid .. "/cmdline") or ""):gsub("%z", " ")
    r:check(contains(sup_cmd, ("--database postgresql://%s:***@127.0.0.1"):format(ROLE)),
      "the supervisor's command line shows the URL with the password hidden: " .. sup_cmd:gsub("%s+$", ""))
    -- ps: the lines of the supervisor and its workers (not of this test's
    -- own shell wrapper, whose command line has the password, as a user's
    -- shell would)
    local ours = {}
    for _, pid in ipairs(pids) do ours[pid] = true end
    for _, cmd in ipairs { "ps -eo pid,args", "ps auxww" } do
      local lines = {}
      for line in lib.sh(cmd):gmatch("[^\n]+") do
        local pid = tonumber(line:match(cmd == "ps auxww" and "^%S+%s+(%d+)" or "^%s*(%d+)"))
        if pid and ours[pid] then lines[#lines + 1] = line end
      end
      r:check(#lines == #pids, ("%s shows the supervisor and its %d workers"):format(cmd, #pids - 1))
      saw(cmd, table.concat(lines, "\n"))
    end
    -- what the workers do: a job, a failing job (logged), a job whose worker is killed
    ids[#ids + 1] = assert(s:schedule(lib.JOB, { seq = 1 }))
    local failing = assert(s:schedule(lib.JOB, { seq = 2, fail = "boom: listener error" }, { max_attempts = 1 }))
    ids[#ids + 1] = failing
    local victim = assert(s:schedule(lib.JOB, { seq = 3, sleep = 30 }, { max_attempts = 1 }))
    ids[#ids + 1] = victim
    local vrun = lib.wait_for(function() rec:read(); return rec.by_id[victim] and rec.by_id[victim][1] end, 10)
    r:check(vrun, "the slow job started", sup)
    local conns = lib.psql(([[
      SELECT count(*) FILTER (WHERE usename = '%s'), count(*) FILTER (WHERE usename <> '%s')
      FROM pg_stat_activity WHERE application_name = 'lua-scheduler' AND client_addr IS NOT NULL]])
      :format(ROLE, ROLE))
    local mine_n, other_n = conns:match("^(%d+)\t(%d+)")
    r:check(tonumber(mine_n) >= 3 and tonumber(other_n) == 0, ("the supervisor and both workers are"
      .. " connected as %s, over TCP (%s of its connections, %s of others)"):format(ROLE, mine_n, other_n))
    if vrun then
      -- once its batch is settled (a second) the job is leased: the
      -- supervisor then releases it (fails it: one attempt) when its worker dies
      r:check(lib.wait_for(function() return lib.leased(s, victim) end, 5),
        "the slow job is leased", sup)
      core.process.kill(vrun.pid, "KILL")
      r:check(sup:wait_log(" held by worker ", 1, 10), "the killed worker's jobs were released", sup)
    end
    rec:wait_all({ ids[1], failing }, 10)
    lib.wait_for(function() local j = s:job(failing); return j and j.state == "failed" end, 10)
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
    saw("run --log-format text --log-level debug", sup:err() .. sup:out())

    -- job() and `show` on the failed jobs (their last_error)
    for _, id in ipairs { failing, victim } do
      local j = s:job(id)
      r:check(j and j.state == "failed" and j.last_error, ("job %d failed with a last_error"):format(id))
      saw("job(" .. id .. ")", dump(j))
      local out = cli({ "show", tostring(id), "--json" })
      saw("show " .. id .. " --json", out)
      saw("show " .. id, (cli({ "show", tostring(id) })))
    end
    saw("jobs --json", (cli({ "jobs", "--json", "--state", "failed" })))

    -- B: the database in the environment, json logs at debug
    local jrec = lib.tmpdir("secrets-records-json")
    sup = lib.start_run("secrets-json", 2, jrec, { LUA_SCHEDULER_DATABASE = url },
      { "--log-format", "json", "--log-level", "debug" })
    r:check(sup:wait_log('"message":"started: listeners', 2, 20), "json: the workers started", sup)
    r:check(not contains(sup:err(), "warning: the password"), "no warning with LUA_SCHEDULER_DATABASE", sup)
    -- a job that fails twice (logged at warn, then error), not counted below
    local retry = assert(s:schedule(lib.JOB, { seq = 4, fail = "boom again" }, { max_attempts = 2 }))
    r:check(lib.wait_for(function() local j = s:job(retry); return j and j.state == "failed" end, 20),
      "json: a job failed twice (max_attempts 2)", sup)
    local w = sup:workers()[1]
    if w then
      core.process.kill(w, "KILL")
      sup:wait_log("was killed by signal KILL", 1, 10)
    end
    r:check(sup:stop() == 0, "json: the supervisor stopped gracefully (exit 0)", sup)
    saw("run --log-format json --log-level debug", sup:err() .. sup:out())
    r:check(contains(sup:err(), '"level":"debug"') or contains(sup:err(), '"level":"warn"'),
      "json: the logs were captured", sup)
    local lines, objects = 0, 0
    for line in sup:err():gmatch("[^\n]*\n") do
      lines = lines + 1
      local v = core.json_decode(line)
      if type(v) == "table" and v.message and v.level then objects = objects + 1 end
    end
    r:check(lines > 0 and objects == lines, ("json: every line of the supervisor's and workers' stderr is"
      .. " one log object (%d of %d lines)"):format(objects, lines), sup)

    -- C: a wrong password and an unreachable server
    local wrong = ("postgresql://%s:wrong-%s@127.0.0.1:%s/scheduler_test"):format(ROLE, enc, port)
    local out, ok = cli({ "jobs" }, { LUA_SCHEDULER_DATABASE = wrong })
    r:check(not ok and contains(out, "password authentication failed"),
      "a wrong password: `jobs` exits 1 with libpq's reason")
    saw("jobs with a wrong password", out)
    out = cli({ "jobs", "--database", url:gsub(":" .. port .. "/", ":1/") .. "?connect_timeout=2" })
    saw("jobs against a closed port", out)
    sup = lib.start_run("secrets-wrong", 1, records, { LUA_SCHEDULER_DATABASE = wrong }, { "--log-level", "debug" })
    r:check(sup:wait_log("password authentication failed", 1, 15), "run waits, logging the authentication failure", sup)
    sup:stop()
    saw("run with a wrong password", sup:err())

    -- D: PGPASSFILE instead of a password in the URL
    local passfile = lib.tmpdir("secrets-pass") .. "/pgpass"
    lib.write_file(passfile, ("127.0.0.1:%s:scheduler_test:%s:%s\n"):format(port, ROLE, pw))
    lib.sh("chmod 600 " .. lib.q(passfile))
    out, ok = cli({ "jobs", "--database", bare, "--state", "failed" }, { PGPASSFILE = passfile })
    r:check(ok and not contains(out, "warning"), "PGPASSFILE: `jobs --database` with no password in the URL works")
    saw("jobs with PGPASSFILE", out)
    out, ok = cli({ "migrate" }, { LUA_SCHEDULER_DATABASE = url })
    r:check(ok and contains(out, "schema version"), ("the role may run `migrate` on a current schema (no DDL): %s")
      :format(out:gsub("%s+$", "")))

    -- E: sslmode
    out, ok = cli({ "jobs" }, { LUA_SCHEDULER_DATABASE = url .. "?sslmode=require" })
    r:check(not ok and contains(out, "server does not support SSL"),
      "sslmode=require against the server without TLS fails with libpq's error")
    saw("sslmode=require without TLS", out)
    out, ok = cli({ "jobs" }, { LUA_SCHEDULER_DATABASE = url .. "?sslmode=disable" })
    r:check(ok, "sslmode=disable works")
    local certs = lib.tmpdir("secrets-tls")
    local function self_signed(name)
      return lib.sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost"
        .. " -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s/%s.key -out %s/%s.crt"):format(
        lib.q(certs), name, lib.q(certs), name))
    end
    local gen_out, gen_ok = self_signed("server")
    self_signed("other")
    if r:check(gen_ok, "openssl made a self-signed certificate") then
      local data = os.getenv("PGTMP_DATA")
      local owner = lib.sh("stat -c %U " .. lib.q(data)):match("%S+")
      lib.sh(("install -m 600 -o %s %s/server.key %s/server.key && install -m 644 -o %s %s/server.crt %s/server.crt")
        :format(owner, lib.q(certs), lib.q(data), owner, lib.q(certs), lib.q(data)))
      lib.on_cleanup(function() lib.psql("ALTER SYSTEM RESET ssl; SELECT pg_reload_conf();") end)
      lib.psql("ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();")
      lib.wait_for(function() return lib.psql_value("SHOW ssl") == "on" end, 5)
      tls_records = lib.tmpdir("secrets-records-tls")
      local trecs = lib.records(tls_records)
      sup = lib.start_run("secrets-tls", 1, tls_records, { LUA_SCHEDULER_DATABASE = url .. "?sslmode=require" })
      r:check(sup:wait_log("started: listeners", 1, 20), "sslmode=require: the worker started", sup)
      local tls_job = assert(s:schedule(lib.JOB, { seq = 5 }))
      ids[#ids + 1] = tls_job
      r:check(trecs:wait_all({ tls_job }, 10), "sslmode=require: the worker ran a job", sup)
      local ssl = lib.psql(([[
        SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
        FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = '%s']]):format(ROLE))
      local on, off = ssl:match("^(%d+)\t(%d+)")
      r:check(tonumber(on) >= 2 and tonumber(off) == 0,
        ("sslmode=require: every connection of the supervisor and worker uses TLS (%s TLS, %s not)"):format(on, off))
      r:check(sup:stop() == 0, "sslmode=require: the supervisor stopped gracefully", sup)
      saw("run with sslmode=require", sup:err())
      out, ok = cli({ "jobs" }, { LUA_SCHEDULER_DATABASE = url .. "?sslmode=verify-full&sslrootcert=" .. certs .. "/server.crt" })
      r:check(ok, "sslmode=verify-full with the server's certificate as root works" .. (ok and "" or (": " .. out)))
      out, ok = cli({ "jobs" }, { LUA_SCHEDULER_DATABASE = url .. "?sslmode=verify-full&sslrootcert=" .. certs .. "/other.crt" })
      r:check(not ok and contains(out, "certificate verify failed"),
        "sslmode=verify-full with another root certificate fails with libpq's error")
      saw("verify-full with the wrong root", out)
    else
      r:note(gen_out)
    end

    -- the records: every job ran (the killed one once: max_attempts 1)
    rec:read()
    for _, dir in ipairs { jrec, tls_records } do
      for id, list in pairs(lib.records(dir):read().by_id) do
        rec.by_id[id] = rec.by_id[id] or {}
        for _, run in ipairs(list) do table.insert(rec.by_id[id], run) end
      end
    end
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function() return nil end)

    -- the scan
    local leaks = {}
    for _, x in ipairs(seen) do
      for _, secret in ipairs { pw, enc } do
        if contains(x.text, secret) then leaks[#leaks + 1] = x.label end
      end
    end
    r:check(#leaks == 0, ("the password appears in none of %d outputs (logs at debug in text and json,"
      .. " errors, ps, /proc/PID/cmdline, job(), show, jobs)%s"):format(#seen,
      #leaks > 0 and (": LEAKED in " .. table.concat(leaks, ", ")) or ""))
    local all = {}
    for _, x in ipairs(seen) do all[#all + 1] = x.text end
    all = table.concat(all, "\n")
    r:check(contains(all, "boom: listener error") and contains(all, "died while holding it")
      and contains(all, "password authentication failed"),
      "the scanned outputs hold the listener errors, the dead worker's job and the authentication failure")
  end,
}
