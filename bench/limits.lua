-- bench/limits.lua: the benchmark's rows for global concurrency limits
-- (issue 16), loaded by bench/run.lua (dofile), which passes its helpers:
--   dofile(BENCH .. "/limits.lua")(ctx).limits()
--
-- A name limited to LIMIT (5) at once, run by WORKERS (4) worker processes
-- of CONCURRENCY (4) each (16 coroutines for 5 slots: the limit, not the
-- workers, decides), cfg.limit_jobs jobs each waiting JOB_WAIT (50 ms) on a
-- cqueues timer (bench/limited.lua).  The ideal rate is LIMIT / JOB_WAIT
-- (100 jobs/s).  In the same run, rep by rep, the baseline: the same jobs,
-- not limited, run by one worker of concurrency LIMIT (the same 5 at once,
-- with no claim to share).  From the workers' own records (every listener
-- call's id, start and end): each job ran exactly once, the most running
-- at once never exceeds the limit, and the rate from the first start to
-- the last end.

return function(ctx)
  local cfg, sql, log, row, met, die, q = ctx.cfg, ctx.sql, ctx.log, ctx.row, ctx.met, ctx.die, ctx.q
  local median, commas, fmt_pct = ctx.median, ctx.commas, ctx.fmt_pct
  local expect, parse_result, finish = ctx.expect, ctx.parse_result, ctx.finish
  local read_file, write_file, scheduler = ctx.read_file, ctx.write_file, ctx.scheduler
  local BENCH, TMP = ctx.BENCH, ctx.TMP

  local NAME = "bench_limited"
  local LIMIT, WORKERS, CONCURRENCY, JOB_WAIT = 5, 4, 4, 0.05

  local function start(args)
    local parts = { "exec", q(cfg.lua), q(BENCH .. "/limited.lua"), "timer" }
    for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
    local p = assert(io.popen(table.concat(parts, " "), "r"))
    return { p = p, what = "limited.lua " .. table.concat(args, " ") }
  end

  --- The most intervals open at once (an end and a start at the same
  -- instant do not overlap).
  local function peak(intervals)
    local points = {}
    for _, iv in ipairs(intervals) do
      points[#points + 1] = { iv[2], 1 }
      points[#points + 1] = { iv[3], -1 }
    end
    table.sort(points, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    local now, most = 0, 0
    for _, p in ipairs(points) do
      now = now + p[2]
      if now > most then most = now end
    end
    return most
  end

  --- Run `n` workers of `concurrency` on `jobs` (default cfg.limit_jobs)
  -- jobs of NAME waiting `wait` (default JOB_WAIT) each, limited by
  -- `limit` (a limit() table, or nil: none); check the records; the
  -- figures, and the records.
  local function once(n, concurrency, limit, rep, jobs, wait)
    local N = jobs or cfg.limit_jobs
    ctx.fill_due("scheduler.jobs", N, NAME)
    local s <close> = scheduler.new { log = "warn" }
    assert(s:limit(NAME, limit) ~= nil)
    local go = TMP .. "/limits.go"
    os.remove(go)
    local procs = {}
    for i = 1, n do
      local out = ("%s/limits.%d.%d.%d"):format(TMP, rep, n, i)
      procs[i] = start { "name=" .. NAME, "concurrency=" .. concurrency, "wait=" .. (wait or JOB_WAIT),
        "go=" .. go, "out=" .. out, "seconds=" .. math.max(60, N // 10) }
      procs[i].out = out
    end
    for _, p in ipairs(procs) do expect(p, "READY") end
    write_file(go, "go\n")
    local intervals, per, errors, cpu = {}, {}, 0, 0
    for _, p in ipairs(procs) do
      local r = parse_result(expect(p, "RESULT"))
      finish(p)
      errors = errors + r.errors
      cpu = cpu + (tonumber(r.cpu_s) or 0)
      for id, t0, t1 in (read_file(p.out) or ""):gmatch("(%d+) (%S+) (%S+)\n") do
        intervals[#intervals + 1] = { id, tonumber(t0), tonumber(t1) }
        per[id] = (per[id] or 0) + 1
      end
      os.remove(p.out)
    end
    os.remove(go)
    assert(s:limit(NAME, nil) ~= nil)
    local ids, twice = 0, 0
    for _, c in pairs(per) do
      ids = ids + 1
      if c > 1 then twice = twice + 1 end
    end
    local left = ctx.count_jobs("name = '" .. NAME .. "'")
    if ids ~= N or twice ~= 0 or left ~= 0 or errors ~= 0 then
      die("limits (%d workers of %d, limit %s): %d of %d jobs ran, %d more than once, %d left, %d "
        .. "listener errors: every job must run exactly once", n, concurrency,
        tostring(limit and (limit.concurrency or limit.rate)), ids, N,
        twice, left, errors)
    end
    local first, last = math.huge, -math.huge
    for _, iv in ipairs(intervals) do
      first, last = math.min(first, iv[2]), math.max(last, iv[3])
    end
    return { rate = N / (last - first), most = peak(intervals), cpu = cpu }, intervals
  end

  --- The starts of `intervals` in windows of `per` seconds: the most in
  -- any window [t, t + per) (sliding: one starting at each start holds
  -- every busiest one), and the fewest in a window wholly inside the
  -- saturated part, from `per` after the first start to the last (a
  -- window (t, t + per] after each start there holds every emptiest one).
  local function windows(intervals, per)
    local t = {}
    for i, iv in ipairs(intervals) do t[i] = iv[2] end
    table.sort(t)
    local most, fewest, j, k = 0, math.huge, 1, 1
    for i = 1, #t do
      while t[i] - t[j] >= per do j = j + 1 end
      most = math.max(most, i - j + 1)
    end
    for i = 1, #t do
      if t[i] >= t[1] + per and t[i] + per <= t[#t] then
        if k < i then k = i end
        while k + 1 <= #t and t[k + 1] <= t[i] + per do k = k + 1 end
        fewest = math.min(fewest, k - i)
      end
    end
    return most, fewest ~= math.huge and fewest or nil, t[#t] - t[1]
  end

  local M = {}

  function M.limits()
    local ideal = LIMIT / JOB_WAIT
    local limited, base = {}, {}
    for rep = 1, cfg.reps do
      base[rep] = once(1, LIMIT, nil, rep)
      limited[rep] = once(WORKERS, CONCURRENCY, { concurrency = LIMIT }, rep)
      log("limits rep %d: limited %.1f jobs/s (most %d at once), baseline %.1f jobs/s (most %d)", rep,
        limited[rep].rate, limited[rep].most, base[rep].rate, base[rep].most)
    end
    local most = 0
    local lrates, brates, ratios = {}, {}, {}
    for rep = 1, cfg.reps do
      most = math.max(most, limited[rep].most)
      lrates[rep], brates[rep] = limited[rep].rate, base[rep].rate
      ratios[rep] = limited[rep].rate / base[rep].rate
    end
    local lrate, brate = median(lrates), median(brates)
    local label = ("%s jobs of %g ms, limit %d, %d workers of %d"):format(commas(cfg.limit_jobs),
      JOB_WAIT * 1000, LIMIT, WORKERS, CONCURRENCY)
    row("limits", "limits: " .. label .. ": most running at once (workers' own records)",
      tostring(most), "<= " .. LIMIT, "", met(most <= LIMIT))
    row("limits", "limits: " .. label .. ": rate", ("%.1f jobs/s"):format(lrate),
      (">= 80%% of the ideal %g/s"):format(ideal), fmt_pct(lrate / ideal) .. " of ideal",
      met(lrate >= 0.8 * ideal))
    row("limits", "  baseline: not limited, 1 worker of concurrency " .. LIMIT, ("%.1f jobs/s"):format(brate),
      "", fmt_pct(median(ratios)) .. " limited/baseline (median of reps)", nil)
    ctx.results.limits = { limited = limited, baseline = base, ideal = ideal, limit = LIMIT,
      workers = WORKERS, concurrency = CONCURRENCY, job_seconds = JOB_WAIT, jobs = cfg.limit_jobs }
    sql("TRUNCATE scheduler.jobs")
  end

  --- Rate limits (issue 16, item 3): a name limited to RATE starts a
  -- second, cfg.rate_jobs jobs that return at once, run by WORKERS worker
  -- processes of concurrency RCONC each (a claim takes up to the burst).  From the workers' own records (each
  -- listener call's start): never more than RATE starts in any one-second
  -- window, and at least 95% of RATE in each window once saturated (from
  -- a second after the first start to the last).  In the same run, rep by
  -- rep, the baseline: the same workers on the same jobs, not limited
  -- (what they could do: the rate must be what holds them back).
  function M.rate()
    local RATE, PER, RCONC = 1000, 1, 32
    local N = cfg.rate_jobs
    local most, fewest, rates, brates, cpus = 0, math.huge, {}, {}, {}
    for rep = 1, cfg.reps do
      local b = once(WORKERS, RCONC, nil, rep, N, 0)
      local r, intervals = once(WORKERS, RCONC, { rate = RATE, per = PER }, rep, N, 0)
      local m, f, span = windows(intervals, PER)
      most, fewest = math.max(most, m), math.min(fewest, f or math.huge)
      rates[rep], brates[rep], cpus[rep] = (N - 1) / span, b.rate, r.cpu / span
      log("rate rep %d: most %d starts in a second, fewest %s once saturated, %.0f starts/s, the workers' CPU "
        .. "%.2f s a second; baseline %.0f jobs/s (%.2f s of CPU in all)", rep, m, tostring(f), rates[rep],
        cpus[rep], b.rate, b.cpu)
    end
    local label = ("%s jobs, rate %d per %d s, %d workers of %d"):format(commas(N), RATE, PER, WORKERS,
      RCONC)
    row("rate", "rate: " .. label .. ": most starts in any 1 s window (workers' own records)",
      tostring(most), "<= " .. RATE, "", met(most <= RATE))
    local sat, enough = fewest ~= math.huge, nil
    if sat then enough = fewest >= 950 end
    row("rate", "rate: " .. label .. ": fewest starts in a 1 s window once saturated",
      sat and tostring(fewest) or "-", ">= 950", sat and "" or "no saturated window (too few jobs)",
      met(enough))
    row("rate", "rate: " .. label .. ": first to last start", ("%.0f starts/s"):format(median(rates)),
      "", "sustained by the rule: 962/s", nil)
    row("rate", "rate: " .. label .. ": the workers' CPU", ("%.2f s a second"):format(median(cpus)),
      "", "all 4 together, while the rate holds them", nil)
    row("rate", "  baseline: not limited, the same workers", ("%.0f jobs/s"):format(median(brates)),
      "", "", nil)
    ctx.results.rate = { most = most, fewest = sat and fewest or nil, rates = rates, cpu = cpus, baseline = brates,
      rate = RATE, per = PER, workers = WORKERS, concurrency = RCONC, jobs = N }
    sql("TRUNCATE scheduler.jobs")
  end

  return M
end
