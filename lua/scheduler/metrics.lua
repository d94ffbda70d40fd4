--- scheduler.metrics: the scheduler's state as Prometheus metrics, in the
-- text exposition format (version 0.0.4).  `lua-scheduler metrics` prints
-- it; the web server serves it on /metrics.  Everything comes from the
-- database, so any process that can read it (a scrape of one host, a
-- cron job) exports the same figures for every worker of the database.
--
--   local metrics = require "scheduler.metrics"
--   local text = metrics.render(s)   -- s: a scheduler instance; raises if
--                                    -- the database cannot be read
--
-- What it exports, per job name (label `name`):
--   lua_scheduler_jobs{state}                          gauge: the queue
--   lua_scheduler_oldest_due_job_lateness_seconds      gauge
--   lua_scheduler_paused                               gauge, 0 or 1
--   lua_scheduler_jobs_completed_total                 counter
--   lua_scheduler_jobs_failed_total                    counter
--   lua_scheduler_listener_duration_seconds            histogram, from history
--   lua_scheduler_job_start_lateness_seconds           histogram, from history
-- The counters are kept in the database by the workers that finish the
-- jobs (see `totals` in the API and README "Metrics"); they never go down.
-- The histograms count the jobs history keeps (configure{history}) that
-- started, each once (s:durations()); without history they have no
-- samples.

local text = require "scheduler.cli.text"

local metrics = {}

metrics.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- The states of lua_scheduler_jobs, as stats() counts them.
local STATES = { "due", "later", "running", "failed" }

--- A label value as the text format writes it: backslash, double quote
-- and line feed escaped (the format's only escapes), valid UTF-8 as the
-- format requires (schedule() refuses other names, but another program
-- may write one into an SQLite file: each byte of an invalid sequence
-- reads U+FFFD).
local function label(v)
  return (text.utf8(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end
metrics.escape_label = label

local function number(v)
  if math.type(v) == "integer" then return ("%d"):format(v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(math.floor(v)) end
  return ("%.9g"):format(v)
end

--- The metrics of the database `s` (a scheduler instance) uses, as one
-- string.  Raises the API's error ("scheduler: stats: ...", no
-- credentials in it) when the database cannot be read: a scrape must
-- fail rather than export nothing (the web server answers 503).
function metrics.render(s)
  local stats, err = s:stats()
  if not stats then error(err, 0) end
  local totals
  totals, err = s:totals()
  if not totals then error(err, 0) end
  local durations, bounds, late_bounds = s:durations()
  if not durations then error(bounds, 0) end
  local out = {}
  local function add(...)
    for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end
  end
  local function head(name, kind, help)
    add("# HELP ", name, " ", help, "\n# TYPE ", name, " ", kind, "\n")
  end
  local function sample(metric, name, extra, value)
    add(metric, '{name="', label(name), '"', extra or "", "} ", number(value), "\n")
  end

  head("lua_scheduler_jobs", "gauge",
    "Jobs of a job name by state: due (waiting although due), later (waiting for their time), "
      .. "running (a listener has started them), failed (attempts used up, kept until retried or deleted).")
  for _, r in ipairs(stats) do
    for _, state in ipairs(STATES) do
      sample("lua_scheduler_jobs", r.name, ',state="' .. state .. '"', r[state])
    end
  end
  head("lua_scheduler_oldest_due_job_lateness_seconds", "gauge",
    "Seconds the oldest due job of a job name has waited past its time; 0 when none is due.")
  for _, r in ipairs(stats) do
    sample("lua_scheduler_oldest_due_job_lateness_seconds", r.name, nil, r.late or 0)
  end
  head("lua_scheduler_paused", "gauge", "1 when the job name is paused (lua-scheduler pause), else 0.")
  for _, r in ipairs(stats) do
    sample("lua_scheduler_paused", r.name, nil, r.paused and 1 or 0)
  end
  head("lua_scheduler_jobs_completed_total", "counter",
    "Jobs whose listener returned (done), by every worker of the database.")
  for _, r in ipairs(totals) do
    sample("lua_scheduler_jobs_completed_total", r.name, nil, r.done)
  end
  head("lua_scheduler_jobs_failed_total", "counter",
    "Jobs that failed for good (their last attempt failed, or the crash rule failed them), "
      .. "by every worker of the database; a retry and a later failure count again.")
  for _, r in ipairs(totals) do
    sample("lua_scheduler_jobs_failed_total", r.name, nil, r.failed)
  end
  -- a histogram per name: h(r) its {jobs, seconds}; rows without a
  -- sample (history written before lateness was) are left out
  local function histogram(metric, help, bucket_bounds, h)
    head(metric, "histogram", help)
    for _, r in ipairs(durations) do
      local jobs, sum = h(r).jobs, 0
      for _, n in ipairs(jobs) do sum = sum + n end
      if sum > 0 then
        sum = 0
        for k, le in ipairs(bucket_bounds) do
          sum = sum + jobs[k]
          sample(metric .. "_bucket", r.name, ',le="' .. number(le) .. '"', sum)
        end
        sum = sum + jobs[#bucket_bounds + 1]
        sample(metric .. "_bucket", r.name, ',le="+Inf"', sum)
        sample(metric .. "_sum", r.name, nil, h(r).seconds)
        sample(metric .. "_count", r.name, nil, sum)
      end
    end
  end
  histogram("lua_scheduler_listener_duration_seconds",
    "How long listeners ran (done and failed runs), counted from history: only jobs of names that "
      .. "keep history (configure{history}), each once.", bounds, function(r) return r end)
  histogram("lua_scheduler_job_start_lateness_seconds",
    "How long after its time (run_at; a retry's own) each listener started, 0 if before, counted "
      .. "from history: only jobs of names that keep history (configure{history}), each once.",
    late_bounds, function(r) return r.late end)
  return table.concat(out)
end

return metrics
