-- bench/limits.lua: the benchmark's rows for limits (issue 16), loaded by
-- bench/run.lua (dofile), which passes its helpers:
--   dofile(BENCH .. "/limits.lua")(ctx).limits()   (and .limit_parts(), .rate())
--
-- Each row: a limited name run by WORKERS worker processes of CONCURRENCY
-- each, with more coroutines than the limit has slots (the limit, not the
-- workers, decides), on jobs each waiting JOB_WAIT (50 ms) on a cqueues
-- timer (bench/limited.lua).  The limit's ideal rate is its slots /
-- JOB_WAIT.  In the same run, rep by rep, the baseline: the same jobs, not
-- limited, on as many coroutines as the limit has slots.  From the
-- workers' own records (every listener call's id, start, end and
-- partition): each job ran exactly once, the most running at once (in
-- one partition) never exceeds the limit, and the rate from the first
-- start to the last end.
--
-- limits: a name limited to 5, 4 workers of concurrency 4 (16 coroutines
-- for 5 slots); ideal 100 jobs/s; baseline 1 worker of concurrency 5.
--
-- limit_parts: 100 partitions (`by = "tenant"`, the i-th job in tenant
-- i % 100) each limited to 2: 200 slots, 4 workers of concurrency 64 (256
-- coroutines: the workers could run 5,120 jobs/s, the limit 4,000);
-- baseline 4 workers of concurrency 50 (200 at once, not limited).  The
-- ideal is the limit's, 4,000 jobs/s, more than 2 shared cores give the
-- same jobs without a limit (the baseline: some 2,400 jobs/s), so the row
-- reports both ratios: against the ideal, and against the baseline, what
-- the machine gives the same jobs and slots.  Fewer partitions would bring
-- the ideal down but test the partitions less.  The rate depends on the
-- jobs due (a claim of a partitioned name reads all of them; see the
-- README's Performance section): --parts-jobs sets them.
--
-- rate: a name limited to 1,000 starts a second, jobs that return at once,
-- 4 workers of concurrency 32 (a claim takes up to the burst).  From the
-- workers' own records (each listener call's start): never more than
-- 1,000 starts in any one-second window, and at least 950 in each window
-- once saturated (from a second after the first start to the last).  In
-- the same run, rep by rep, the baseline: the same workers on the same
-- jobs, not limited (what they could do: the rate must be what holds them
-- back).
--
-- fairness: 1,000,000 jobs of one tenant and 10 of another; see fairness().

return function(ctx)
  local cfg, sql, log, row, met, die, q = ctx.cfg, ctx.sql, ctx.log, ctx.row, ctx.met, ctx.die, ctx.q
  local median, commas, fmt_pct = ctx.median, ctx.commas, ctx.fmt_pct
  local expect, parse_result, finish = ctx.expect, ctx.parse_result, ctx.finish
  local read_file, write_file, scheduler = ctx.read_file, ctx.write_file, ctx.scheduler
  local BENCH, TMP = ctx.BENCH, ctx.TMP
  -- the sweep the specs and the fault suite count overlaps with
  local most_at_once = dofile(BENCH .. "/../spec/support/overlap.lua")

  local NAME = "bench_limited"
  local JOB_WAIT = 0.05

  -- the rows: the limit, its slots, the workers, the baseline's workers
  -- and the jobs (cfg's key; `payload`: fill_due's SQL expression)
  local ROWS = {
    limits = { key = "limits", limit = { concurrency = 5 }, slots = 5, workers = 4, concurrency = 4,
      base_workers = 1, base_concurrency = 5, jobs = "limit_jobs",
      what = "limit 5" },
    limit_parts = { key = "limit_parts", limit = { concurrency = 2, by = "tenant" }, slots = 200,
      workers = 4, concurrency = 64, base_workers = 4, base_concurrency = 50, jobs = "parts_jobs",
      payload = "jsonb_build_object('tenant', 't' || i % 100)", parts = 100,
      what = "100 partitions (by tenant) each limited to 2" },
    rate = { key = "rate", limit = { rate = 1000, per = 1 }, workers = 4, concurrency = 32, wait = 0,
      jobs = "rate_jobs", what = "rate 1,000 per 1 s" },
  }

  local function start(args)
    local parts = { "exec", q(cfg.lua), q(BENCH .. "/limited.lua"), "timer" }
    for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
    local p = assert(io.popen(table.concat(parts, " "), "r"))
    return { p = p, what = "limited.lua " .. table.concat(args, " ") }
  end

  --- Run `n` workers of `concurrency` on the jobs of row `R` (limited to
  -- R.limit, or not: limited false), each waiting R.wait (default
  -- JOB_WAIT); check the records; the figures: the rate, the most running
  -- at once in one partition and the workers' CPU; and every start.
  local function once(R, n, concurrency, limited, rep)
    local N = cfg[R.jobs]
    ctx.fill_due("scheduler.jobs", N, NAME, nil, R.payload)
    local s <close> = scheduler.new { log = "warn" }
    assert(s:limit(NAME, limited and R.limit or nil) ~= nil)
    local go = TMP .. "/limits.go"
    os.remove(go)
    local procs = {}
    for i = 1, n do
      local out = ("%s/%s.%d.%d.%d"):format(TMP, R.key, rep, n, i)
      procs[i] = start { "name=" .. NAME, "concurrency=" .. concurrency, "wait=" .. (R.wait or JOB_WAIT),
        "go=" .. go, "out=" .. out, "seconds=" .. math.max(60, N // 10) }
      procs[i].out = out
    end
    for _, p in ipairs(procs) do expect(p, "READY") end
    write_file(go, "go\n")
    local by_part, per, starts, errors, cpu = {}, {}, {}, 0, 0
    local first, last = math.huge, -math.huge
    for _, p in ipairs(procs) do
      local r = parse_result(expect(p, "RESULT"))
      finish(p)
      errors = errors + r.errors
      cpu = cpu + (tonumber(r.cpu_s) or 0)
      for id, t0, t1, part in (read_file(p.out) or ""):gmatch("(%d+) (%S+) (%S+) ?(%S*)\n") do
        t0, t1 = tonumber(t0), tonumber(t1)
        by_part[part] = by_part[part] or {}
        table.insert(by_part[part], { t0, t1 })
        starts[#starts + 1] = t0
        per[id] = (per[id] or 0) + 1
        first, last = math.min(first, t0), math.max(last, t1)
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
      die("%s (%d workers of %d, %s): %d of %d jobs ran, %d more than once, %d left, %d "
        .. "listener errors: every job must run exactly once", R.key, n, concurrency,
        limited and R.what or "not limited", ids, N, twice, left, errors)
    end
    local most, parts = 0, 0
    for _, list in pairs(by_part) do
      most, parts = math.max(most, most_at_once(list)), parts + 1
    end
    return { rate = N / (last - first), most = most, parts = parts, cpu = cpu }, starts
  end

  --- The `starts` in windows of `per` seconds: the most in any window
  -- [t, t + per) (sliding: one starting at each start holds every busiest
  -- one), and the fewest in a window wholly inside the saturated part,
  -- from `per` after the first start to the last (a window (t, t + per]
  -- after each start there holds every emptiest one); and the span.
  local function windows(starts, per)
    local t = starts
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

  --- The row R: rep by rep the baseline and the limited run; the table's
  -- lines and the JSON.
  local function measure(R)
    local ideal = R.slots / JOB_WAIT
    local limit = R.limit.concurrency
    local limited, base = {}, {}
    for rep = 1, cfg.reps do
      base[rep] = once(R, R.base_workers, R.base_concurrency, false, rep)
      limited[rep] = once(R, R.workers, R.concurrency, true, rep)
      log("%s rep %d: limited %.1f jobs/s (most %d at once%s), baseline %.1f jobs/s (most %d)", R.key, rep,
        limited[rep].rate, limited[rep].most,
        R.parts and (" in one of %d partitions"):format(limited[rep].parts) or "", base[rep].rate,
        base[rep].most)
      if R.parts and limited[rep].parts ~= R.parts then
        die("%s: the jobs ran in %d partitions, not %d", R.key, limited[rep].parts, R.parts)
      end
    end
    local most = 0
    local lrates, brates, ratios = {}, {}, {}
    for rep = 1, cfg.reps do
      most = math.max(most, limited[rep].most)
      lrates[rep], brates[rep] = limited[rep].rate, base[rep].rate
      ratios[rep] = limited[rep].rate / base[rep].rate
    end
    local lrate, brate = median(lrates), median(brates)
    local label = ("%s: %s jobs of %g ms, %s, %d workers of %d"):format(R.key, commas(cfg[R.jobs]),
      JOB_WAIT * 1000, R.what, R.workers, R.concurrency)
    row(R.key, label .. ": most running at once" .. (R.parts and " in one partition" or "")
      .. " (workers' own records)", tostring(most), "<= " .. limit, "", met(most <= limit))
    row(R.key, label .. ": rate", ("%.1f jobs/s"):format(lrate),
      (">= 80%% of the ideal %s/s"):format(commas(ideal)), fmt_pct(lrate / ideal) .. " of ideal",
      met(lrate >= 0.8 * ideal))
    row(R.key, ("  baseline: not limited, %d worker%s of concurrency %d"):format(R.base_workers,
      R.base_workers > 1 and "s" or "", R.base_concurrency), ("%.1f jobs/s"):format(brate),
      "", fmt_pct(median(ratios)) .. " limited/baseline (median of reps)", nil)
    ctx.results[R.key] = { limited = limited, baseline = base, ideal = ideal, limit = limit, by = R.limit.by,
      partitions = R.parts, slots = R.slots, workers = R.workers, concurrency = R.concurrency,
      baseline_workers = R.base_workers, baseline_concurrency = R.base_concurrency,
      job_seconds = JOB_WAIT, jobs = cfg[R.jobs] }
    sql("TRUNCATE scheduler.jobs")
  end

  local function rate()
    local R = ROWS.rate
    local RATE, PER, WORKERS, RCONC = R.limit.rate, R.limit.per, R.workers, R.concurrency
    local N = cfg.rate_jobs
    local most, fewest, rates, brates, cpus = 0, math.huge, {}, {}, {}
    for rep = 1, cfg.reps do
      local b = once(R, WORKERS, RCONC, false, rep)
      local r, starts = once(R, WORKERS, RCONC, true, rep)
      local m, f, span = windows(starts, PER)
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

  --- FAIRNESS (issue 16, item 4): cfg.fair_jobs (1,000,000) jobs of one
  -- tenant wait, due, and 10 of another tenant come due after them; the
  -- name is limited by tenant far above what the worker runs (1,000 each),
  -- so only the claim's order decides.  One worker of concurrency FAIR_C
  -- runs jobs that return at once for FAIR_SECONDS.  From its own records:
  -- where the small tenant's last job started among all starts (round-
  -- robin: about the 20th; the issue's bound: 10 + a batch, the worker's
  -- concurrency), and the jobs/s.  In the same run, rep by rep, the
  -- baseline: the same with 10,000 waiting instead, so the ratio says
  -- whether a claim's cost grows with the jobs waiting.
  local FAIR_C, FAIR_SECONDS = 32, 5
  local function fair_once(N, rep)
    ctx.fill_due("scheduler.jobs", N, NAME, nil, "jsonb_build_object('tenant', 'huge', 'i', i)")
    local s <close> = scheduler.new { log = "warn" }
    assert(s:limit(NAME, nil) ~= nil)
    assert(s:limit(NAME, { concurrency = 1000, by = "tenant" }) ~= nil) -- writes the partitions
    local small = {}
    for i = 1, 10 do small[assert(s:schedule(NAME, { tenant = "small", i = i }))] = true end
    local go = TMP .. "/fair.go"
    os.remove(go)
    local out = ("%s/fair.%d.%d"):format(TMP, rep, N)
    local p = start { "name=" .. NAME, "concurrency=" .. FAIR_C, "wait=0", "go=" .. go, "out=" .. out,
      "seconds=" .. FAIR_SECONDS, "drain=0" }
    expect(p, "READY")
    write_file(go, "go\n")
    local r = parse_result(expect(p, "RESULT"))
    finish(p)
    os.remove(go)
    local starts, first, last = {}, math.huge, -math.huge
    for id, t0, t1 in (read_file(out) or ""):gmatch("(%d+) (%S+) (%S+) ?%S*\n") do
      starts[#starts + 1] = { id = tonumber(id), t = tonumber(t0) }
      first, last = math.min(first, tonumber(t0)), math.max(last, tonumber(t1))
    end
    os.remove(out)
    assert(s:limit(NAME, nil) ~= nil)
    sql("TRUNCATE scheduler.jobs")
    if r.errors ~= 0 then die("fairness: %d listener errors", r.errors) end
    table.sort(starts, function(a, b) return a.t < b.t end)
    local at, seen = nil, 0
    for k, x in ipairs(starts) do
      if small[x.id] then seen, at = seen + 1, k end
    end
    if seen ~= 10 then die("fairness (%d waiting): %d of the 10 small jobs ran in %d s", N, seen, FAIR_SECONDS) end
    return { last_small = at, rate = #starts / (last - first), ran = #starts }
  end

  local function fairness()
    local N, BASE = cfg.fair_jobs, math.min(10000, cfg.fair_jobs)
    local big, base = {}, {}
    for rep = 1, cfg.reps do
      base[rep] = fair_once(BASE, rep)
      big[rep] = fair_once(N, rep)
      log("fairness rep %d: %s waiting: the small tenant's 10th job was start %d, %.0f jobs/s; %s waiting: "
        .. "start %d, %.0f jobs/s", rep, commas(N), big[rep].last_small, big[rep].rate, commas(BASE),
        base[rep].last_small, base[rep].rate)
    end
    local worst, rates, brates, ratios = 0, {}, {}, {}
    for rep = 1, cfg.reps do
      worst = math.max(worst, big[rep].last_small)
      rates[rep], brates[rep] = big[rep].rate, base[rep].rate
      ratios[rep] = big[rep].rate / base[rep].rate
    end
    local label = ("fairness: %s jobs of one tenant waiting, 10 of another after them, limit 1,000 by tenant, "
      .. "1 worker of %d"):format(commas(N), FAIR_C)
    row("fairness", label .. ": the small tenant's last job, start number (worst rep)", tostring(worst),
      "<= " .. (10 + FAIR_C), "10 + a batch", met(worst <= 10 + FAIR_C))
    row("fairness", label .. ": jobs/s over " .. FAIR_SECONDS .. " s", ("%.0f jobs/s"):format(median(rates)),
      "", fmt_pct(median(ratios)) .. " of the same with " .. commas(BASE) .. " waiting", nil)
    row("fairness", ("  baseline: %s waiting"):format(commas(BASE)), ("%.0f jobs/s"):format(median(brates)),
      "", "", nil)
    ctx.results.fairness = { big = big, baseline = base, jobs = N, baseline_jobs = BASE, concurrency = FAIR_C,
      seconds = FAIR_SECONDS }
  end

  return {
    fairness = fairness,
    limits = function() measure(ROWS.limits) end,
    limit_parts = function() measure(ROWS.limit_parts) end,
    rate = rate,
  }
end
