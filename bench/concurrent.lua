-- bench/concurrent.lua: the benchmark's rows for jobs that wait (issue 18),
-- with graphile-worker measured in the same run on the same PostgreSQL.
-- Loaded by bench/run.lua (dofile), which passes its helpers:
--   local sections = dofile(BENCH .. "/concurrent.lua")(ctx)
--   sections.wait_timer(); sections.wait_http()
--
-- wait_timer: cfg.wait_jobs jobs (10,000), each waiting 100 ms on a
--   cqueues timer, run by one worker process (bench/waiter.lua: an
--   instance with concurrency cfg.wait_concurrency (200) in a cqueues loop
--   of its own).
-- wait_http: the same jobs, each a GET to a local HTTP server that answers
--   after 100 ms (bench/http_server.lua: lua-http on cqueues, its own
--   process, 127.0.0.1), made with lua-http's client.
-- Each: jobs/s from the first listener's start to the last one's end (the
-- worker's own record: every job id must end once, and no job may be left
-- in the database), the worker's peak RSS (VmHWM at its exit), its CPU
-- time, and the database connections it opened: the sessions PostgreSQL
-- counted while it ran (pg_stat_database.sessions, less the bench's own
-- psql sessions) and those seen at once (pg_stat_activity rows with its
-- application_name, PGAPPNAME, sampled every 50 ms).
-- graphile-worker (bench/graphile: the version pinned there, installed with
-- npm into build/npm) runs the same shape in the same run, rep by rep
-- after ours: cfg.graphile_jobs jobs (3,000), concurrency 24 and 64,
-- setTimeout(100) or a GET to the same server.  Without node or npm, or
-- if the install fails, its rows say "not measured (why)"; the run goes on.

return function(ctx)
  local cfg, sql, log, row, met, die, q = ctx.cfg, ctx.sql, ctx.log, ctx.row, ctx.met, ctx.die, ctx.q
  local median, field, commas, fmt_rate, fmt_pct, fmt_x = ctx.median, ctx.field, ctx.commas,
    ctx.fmt_rate, ctx.fmt_pct, ctx.fmt_x
  local capture, expect, parse_result, finish = ctx.capture, ctx.expect, ctx.parse_result, ctx.finish
  local read_file, write_file, sleep, now = ctx.read_file, ctx.write_file, ctx.sleep, ctx.now
  local BENCH, ROOT, TMP, PSQL = ctx.BENCH, ctx.ROOT, ctx.TMP, ctx.PSQL
  local results = ctx.results

  local WAIT = 0.1 -- seconds each job waits
  local NAME = "bench_wait"

  ---------------------------------------------------------------------------
  -- processes
  ---------------------------------------------------------------------------

  -- what is running that the bench must stop if it dies: pid -> what
  local running = {}
  ctx.on_cleanup(function()
    for pid in pairs(running) do os.execute("kill " .. pid .. " 2>/dev/null") end
  end)

  --- Start `cmd` (a shell command line, exec'd) with `env` (name -> value),
  -- reading its stdout, as run.lua's spawn does.  The workers end by
  -- themselves (each has a bound on its run); the server and the sampler
  -- are stopped by their pid (and by ctx.on_cleanup if the bench dies).
  local function start(what, env, cmd)
    local parts = { "exec env" }
    for k, v in pairs(env or {}) do parts[#parts + 1] = q(k .. "=" .. v) end
    parts[#parts + 1] = cmd
    local p = assert(io.popen(table.concat(parts, " "), "r"))
    return { p = p, what = what }
  end

  local function lua_cmd(script, args)
    local parts = { q(cfg.lua), q(BENCH .. "/" .. script) }
    for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
    return table.concat(parts, " ")
  end

  --- The local HTTP server: started once per section, stopped by its pid.
  local function start_server()
    local s = start("http_server.lua", nil, lua_cmd("http_server.lua", { "serve", "delay=" .. WAIT }))
    local r = parse_result(expect(s, "READY"))
    if not r.port or not r.pid then die("http_server.lua: no port or pid in its READY line") end
    s.port, s.pid = r.port, r.pid
    s.url = string.format("http://127.0.0.1:%d/", r.port)
    running[s.pid] = s.what
    return s
  end

  local function stop_server(s)
    os.execute("kill -TERM " .. s.pid)
    local r = parse_result(expect(s, "RESULT"))
    finish(s)
    running[s.pid] = nil
    return r
  end

  ---------------------------------------------------------------------------
  -- the database connections a process opens
  ---------------------------------------------------------------------------

  -- psql sessions the bench opened since the count began (each sql() call
  -- is one), to take them out of pg_stat_database.sessions
  local own = 0
  local function sql_own(text)
    own = own + 1
    return sql(text)
  end

  -- pg_stat_database.sessions (PostgreSQL 14 and later) counts a session
  -- when the backend flushes its statistics: after its first statement
  -- (so a read does not count its own session), and at the latest when
  -- it exits (after it left pg_stat_activity).
  local HAVE_SESSIONS
  local function have_sessions()
    if HAVE_SESSIONS == nil then
      HAVE_SESSIONS = tonumber(sql("SELECT current_setting('server_version_num')")) >= 140000
    end
    return HAVE_SESSIONS
  end
  local function sessions()
    return tonumber(sql_own("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"))
  end

  --- Wait until no other client is connected (at most 10 s), then for the
  -- last ones' statistics to be written.
  local function settle()
    local t = now() + 10
    while tonumber(sql_own([[SELECT count(*) FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()]])) > 0 do
      if now() > t then break end
      sleep(0.05)
    end
    sleep(0.25)
  end

  --- Start counting the connections of the processes with application_name
  -- `tag`: a psql that lists them every 50 ms (\watch) into a file, and
  -- the sessions counter.
  local function count_start(tag)
    local c = { tag = tag, out = TMP .. "/sampler." .. tag }
    if have_sessions() then
      settle()
      own = 0
      c.s0 = sessions()
    end
    local file = TMP .. "/sampler.sql"
    write_file(file, string.format([[
SELECT pid, extract(epoch FROM backend_start), extract(epoch FROM now())
FROM pg_stat_activity WHERE application_name = '%s'
UNION ALL SELECT 0, 0, extract(epoch FROM now()) \watch 0.05
]], tag))
    -- (now(): the sample's time, its transaction's; pid 0: a line per
    -- sample even when it sees none; its stderr, where psql notes the
    -- cancel that ends \watch, is dropped)
    local p = assert(io.popen("exec sh -c " .. q("echo $$; exec " .. q(PSQL)
      .. " -X -q -A -t -F ' ' -f " .. q(file) .. " -o " .. q(c.out) .. " 2>/dev/null"), "r"))
    c.pid = math.tointeger(tonumber(p:read("l")))
    if not c.pid then die("the connection sampler (psql) did not start") end
    c.p = p
    running[c.pid] = "psql sampler"
    own = own + 1
    -- its first sample before the process starts
    local t = now() + 5
    while not (read_file(c.out) or ""):find("\n") and now() < t do sleep(0.02) end
    return c
  end

  --- Stop counting (the process has exited): { opened = sessions counted
  -- (nil without the counter), seen = distinct backends in the samples,
  -- at_once = most in one sample }.
  local function count_stop(c)
    os.execute("kill -INT " .. c.pid)
    c.p:close()
    running[c.pid] = nil
    local backends, per_sample, seen, at_once = {}, {}, 0, 0
    for line in (read_file(c.out) or ""):gmatch("[^\n]+") do
      local pid, start, t = line:match("^(%d+) (%S+) (%S+)$")
      if pid and pid ~= "0" then
        local key = pid .. "@" .. start
        if not backends[key] then
          backends[key] = true
          seen = seen + 1
        end
        per_sample[t] = (per_sample[t] or 0) + 1
        if per_sample[t] > at_once then at_once = per_sample[t] end
      end
    end
    local opened
    if c.s0 then
      -- every backend of the process gone (a backend ends after its
      -- client), and their sessions counted
      settle()
      local s1 = sessions()
      opened = s1 - c.s0 - (own - 1) -- the read of s1 does not count itself
    end
    return { opened = opened, seen = seen, at_once = at_once }
  end

  ---------------------------------------------------------------------------
  -- one measurement
  ---------------------------------------------------------------------------

  --- Run one worker process to the end, stop counting its connections
  -- (counter: from count_start), and check its record: every job ran once
  -- (its own count, and none left in the database: `left`).  Returns its
  -- result; a failure ends the bench (die), or with `soft` (graphile-worker:
  -- not ours to fail the run) returns nil and why.
  local function measure(what, proc, count, counter, left, soft)
    local function fail(fmt, ...)
      if not soft then die(fmt, ...) end
      return nil, string.format(fmt, ...)
    end
    local r
    while true do
      local line = proc.p:read("l")
      if line == nil then break end
      if line:sub(1, 6) == "RESULT" then
        r = parse_result(line:sub(7))
      else
        io.stderr:write(line, "\n")
      end
    end
    local exited, how, code = proc.p:close()
    local conn = count_stop(counter)
    if not exited or not r then
      return fail("%s: exited with %s %s%s", what, tostring(how), tostring(code),
        r and "" or " without a result")
    end
    r.connections, r.connections_seen, r.connections_at_once = conn.opened, conn.seen, conn.at_once
    local l = left()
    if r.ran ~= count or r.dup ~= 0 or l ~= 0 then
      return fail("%s: %s of %d jobs ended, %s ended twice, %d left in the database: every job must "
        .. "run exactly once", what, tostring(r.ran), count, tostring(r.dup), l)
    end
    if r.errors ~= 0 then
      return fail("%s: %d listener calls failed (its stderr says why): the measurement is void", what,
        r.errors)
    end
    r.seconds = r.t_last - r.t_first
    r.rate = count / r.seconds
    r.cpu_us_per_job = r.cpu_s / count * 1e6
    return r
  end

  local function ours(kind, url, rep)
    local N, C = cfg.wait_jobs, cfg.wait_concurrency
    ctx.fill_due("scheduler.jobs", N, NAME)
    local tag = "bench_waiter_" .. kind .. "_" .. rep
    local c = count_start(tag)
    local args = { kind, "name=" .. NAME, "count=" .. N, "concurrency=" .. C,
      "seconds=" .. math.max(120, N // 50) }
    if url then args[#args + 1] = "url=" .. url end
    local proc = start("waiter.lua " .. kind, { PGAPPNAME = tag }, lua_cmd("waiter.lua", args))
    return measure("waiter.lua " .. kind, proc, N, c, function()
      return ctx.count_jobs("name = '" .. NAME .. "'")
    end)
  end

  ---------------------------------------------------------------------------
  -- graphile-worker
  ---------------------------------------------------------------------------

  local GRAPHILE_DIR = BENCH .. "/graphile"
  local NPM_DIR = ROOT .. "/build/npm"
  local graphile -- { version =, node = } once ready, or { skipped = why }

  local function last_line(s)
    return (s:gsub("%s+$", ""):match("[^\n]*$") or ""):sub(1, 120)
  end

  --- node, and the pinned graphile-worker in build/npm (npm ci from
  -- bench/graphile's lock file, only when that lock changed), and its
  -- schema in the benchmark's database; once per run.
  local function graphile_ready()
    if graphile then return graphile end
    local function skip(why)
      graphile = { skipped = why }
      log("graphile-worker: not measured: %s", why)
      return graphile
    end
    if cfg.smoke then return skip("--smoke") end
    if cfg.no_graphile then return skip("--no-graphile") end
    local pinned = (read_file(GRAPHILE_DIR .. "/package.json") or "")
      :match('"graphile%-worker"%s*:%s*"([^"]+)"')
    if not pinned then return skip("no pinned version in bench/graphile/package.json") end
    -- node and npm are only for this: installed here, not with the test deps
    local deps_out, deps_ok = capture(q(ROOT .. "/scripts/install-deps") .. " --bench 2>&1")
    if not deps_ok then log("graphile-worker: scripts/install-deps --bench: %s", last_line(deps_out)) end
    local node, ok = capture("node --version")
    if not ok then return skip("no node (scripts/install-deps --bench installs nodejs)") end
    local _, has_npm = capture("npm --version")
    local lock = read_file(GRAPHILE_DIR .. "/package-lock.json")
    if not lock then return skip("no bench/graphile/package-lock.json") end
    local installed = read_file(NPM_DIR .. "/node_modules/graphile-worker/package.json") or ""
    if read_file(NPM_DIR .. "/package-lock.json") ~= lock
        or installed:match('"version"%s*:%s*"([^"]+)"') ~= pinned then
      if not has_npm then return skip("no npm (scripts/install-deps --bench installs it)") end
      log("graphile-worker: installing %s with npm into %s", pinned, NPM_DIR)
      os.execute("mkdir -p " .. q(NPM_DIR))
      write_file(NPM_DIR .. "/package.json", read_file(GRAPHILE_DIR .. "/package.json"))
      write_file(NPM_DIR .. "/package-lock.json", lock)
      local out, done = capture("cd " .. q(NPM_DIR)
        .. " && timeout 600 npm ci --no-audit --no-fund --loglevel=error")
      if not done then
        os.remove(NPM_DIR .. "/package-lock.json") -- try again next time
        return skip("npm ci failed: " .. last_line(out))
      end
    end
    local proc = start("graphile migrate", nil, "node " .. q(GRAPHILE_DIR .. "/worker.mjs")
      .. " migrate " .. q("npm=" .. NPM_DIR) .. " 2>&1")
    local line = proc.p:read("a")
    local done = proc.p:close()
    local r = parse_result(line:match("RESULT(.-)\n") or "")
    if not done or not r.version then return skip("its migrations failed: " .. last_line(line)) end
    graphile = { version = r.version, node = node:gsub("%s+$", "") }
    log("graphile-worker %s on node %s, installed in %s", graphile.version, graphile.node, NPM_DIR)
    return graphile
  end

  local function graphile_left()
    return tonumber(sql("SELECT count(*) FROM graphile_worker._private_jobs"))
  end

  local function theirs(kind, url, concurrency, rep)
    local N = cfg.graphile_jobs
    sql(string.format([[
      DELETE FROM graphile_worker._private_jobs;
      SELECT count(*) FROM (SELECT graphile_worker.add_job('%s', '{}'::json)
                            FROM generate_series(1, %d)) j;
      ANALYZE graphile_worker._private_jobs;
      CHECKPOINT;]], NAME, N))
    local tag = string.format("bench_graphile_%s_%d_%d", kind, concurrency, rep)
    local c = count_start(tag)
    local args = { "run", "npm=" .. NPM_DIR, "name=" .. NAME, "count=" .. N,
      "concurrency=" .. concurrency, "wait=" .. kind, "seconds=" .. math.max(120, N // 10) }
    if url then args[#args + 1] = "url=" .. url end
    local parts = { "node", q(GRAPHILE_DIR .. "/worker.mjs") }
    for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
    local what = string.format("graphile-worker %s concurrency %d", kind, concurrency)
    local proc = start(what, { PGAPPNAME = tag }, table.concat(parts, " "))
    return measure(what, proc, N, c, graphile_left, true)
  end

  ---------------------------------------------------------------------------
  -- the sections
  ---------------------------------------------------------------------------

  local GRAPHILE_CONCURRENCY = { 24, 64 }

  local function most_of(runs, key)
    local v = field(runs, key)
    return #v > 0 and math.max(table.unpack(v)) or nil
  end

  --- Medians of the runs; the highest for connections and RSS too.
  local function summary(runs)
    return {
      rate = median(field(runs, "rate")), runs = field(runs, "rate"),
      rss_kb = median(field(runs, "rss_kb")), rss_kb_max = most_of(runs, "rss_kb"),
      cpu_us_per_job = median(field(runs, "cpu_us_per_job")),
      connections = most_of(runs, "connections"),
      connections_seen = most_of(runs, "connections_seen"),
      connections_at_once = most_of(runs, "connections_at_once"),
      most = most_of(runs, "most"),
      seconds = median(field(runs, "seconds")),
    }
  end

  local function fmt_conn(s)
    return string.format("%s (%d at once)", s.connections and tostring(s.connections) or "?",
      s.connections_at_once)
  end

  --- Measure one section: rep by rep, our worker then graphile-worker at
  -- each concurrency (so that a change of the machine's load hits all
  -- alike).  Returns its results (also in results[key]).
  local function measure_section(key, kind, url)
    local R, N, C = cfg.reps, cfg.wait_jobs, cfg.wait_concurrency
    local g = graphile_ready()
    local runs, gruns = {}, {}
    for _, gc in ipairs(GRAPHILE_CONCURRENCY) do gruns[gc] = {} end
    for rep = 1, R do
      local r = ours(kind, url, rep)
      runs[rep] = r
      log("%s %d/%d: %s jobs, concurrency %d: %s (%.2f s), at most %d at once, peak RSS %.1f MB, "
        .. "%.0f us CPU/job, %s connections (%d at once)", key, rep, R, commas(N), C, fmt_rate(r.rate),
        r.seconds, r.most, r.rss_kb / 1024, r.cpu_us_per_job, tostring(r.connections),
        r.connections_at_once)
      for _, gc in ipairs(g.version and GRAPHILE_CONCURRENCY or {}) do
        local gr, why = theirs(kind, url, gc, rep)
        if not gr then
          -- not measured from here on (this run)
          log("graphile-worker: %s", why)
          g = { skipped = why }
          graphile = g
          break
        end
        table.insert(gruns[gc], gr)
        log("%s %d/%d: graphile-worker %s, %s jobs, concurrency %d: %s (%.2f s), peak RSS %.1f MB, "
          .. "%.0f us CPU/job, %s connections (%d at once)", key, rep, R, g.version,
          commas(cfg.graphile_jobs), gc, fmt_rate(gr.rate), gr.seconds, gr.rss_kb / 1024,
          gr.cpu_us_per_job, tostring(gr.connections), gr.connections_at_once)
      end
    end
    local S = summary(runs)
    S.jobs, S.concurrency, S.ceiling = N, C, C / WAIT
    local out = { ours = S, graphile = {} }
    if g.version then
      out.graphile.version, out.graphile.node, out.graphile.jobs = g.version, g.node, cfg.graphile_jobs
      for _, gc in ipairs(GRAPHILE_CONCURRENCY) do
        out.graphile["c" .. gc] = summary(gruns[gc])
        out.graphile["c" .. gc].ceiling = gc / WAIT
      end
    else
      out.graphile.skipped = g.skipped
    end
    results[key] = out
    return out
  end

  --- The rows of a section.
  local function section_rows(key, kind, label, target, out)
    local S, C = out.ours, out.ours.concurrency
    local top = GRAPHILE_CONCURRENCY[#GRAPHILE_CONCURRENCY]
    local best = out.graphile["c" .. top]
    local ratio = string.format("%s of %s (%d / %g s)", fmt_pct(S.rate / S.ceiling), commas(S.ceiling),
      C, WAIT)
    if best then ratio = ratio .. string.format("; %s graphile c%d", fmt_x(S.rate / best.rate), top) end
    row(key, string.format("%s jobs %s, 1 worker, concurrency %d", commas(S.jobs), label, C),
      fmt_rate(S.rate), ">= " .. commas(target), ratio, met(S.rate >= target))
    if kind == "timer" then
      row(key, "  peak RSS of that worker", string.format("%.1f MB", S.rss_kb / 1024), "<= 25 MB",
        string.format("highest run: %.1f MB", S.rss_kb_max / 1024), met(S.rss_kb <= 25 * 1024))
      -- the issue's target: the claims' connection, plus the heartbeat's
      row(key, "  database connections the worker opened", fmt_conn(S), "<= 2 (claims + heartbeat)",
        "pg_stat_database.sessions; pg_stat_activity", met(S.connections ~= nil and S.connections <= 2))
    else
      row(key, "  peak RSS of that worker (with lua-http, luaossl)",
        string.format("%.1f MB", S.rss_kb / 1024), "", "")
      row(key, "  database connections the worker opened", fmt_conn(S), "", "")
    end
    row(key, "  worker CPU time per job (all its threads)", string.format("%.0f us", S.cpu_us_per_job), "",
      string.format("at most %d listeners at once", S.most))
    if out.server and out.server.cpu_us_per_request then
      row(key, "  the HTTP server's CPU time per request (lua-http, own process)",
        string.format("%.0f us", out.server.cpu_us_per_request), "",
        string.format("%s requests", commas(out.server.requests)))
    end
    local g = out.graphile
    if g.version then
      for _, gc in ipairs(GRAPHILE_CONCURRENCY) do
        local G = g["c" .. gc]
        row(key, string.format("graphile-worker %s, %s jobs %s, concurrency %d", g.version,
          commas(g.jobs), kind == "timer" and "setTimeout 100 ms" or "GET, same server", gc),
          fmt_rate(G.rate), "", string.format("%s of %s; RSS %.1f MB; %s connections (%d at once); "
            .. "%s us CPU/job", fmt_pct(G.rate / G.ceiling), commas(G.ceiling), G.rss_kb / 1024,
            G.connections and tostring(G.connections) or "?", G.connections_at_once,
            commas(G.cpu_us_per_job)))
      end
    else
      row(key, "graphile-worker, same shape", "not measured", "", g.skipped)
    end
  end

  local M = {}

  function M.wait_timer()
    local out = measure_section("wait_timer", "timer")
    section_rows("wait_timer", "timer", "waiting 100 ms on a cqueues timer", 1500, out)
  end

  function M.wait_http()
    local server = start_server()
    local ok, out = pcall(measure_section, "wait_http", "http", server.url)
    local sr = stop_server(server)
    if not ok then error(out, 0) end
    sr.cpu_us_per_request = sr.requests > 0 and sr.cpu_s / sr.requests * 1e6 or nil
    out.server = sr
    log("wait_http: the server answered %s requests (%d errors), %.1f s CPU, peak RSS %.1f MB",
      commas(sr.requests), sr.errors, sr.cpu_s, sr.rss_kb / 1024)
    if sr.errors > 0 then die("wait_http: the HTTP server reported %d errors", sr.errors) end
    section_rows("wait_http", "http", "each a GET answered after 100 ms (lua-http, loopback)", 1000, out)
  end

  return M
end
