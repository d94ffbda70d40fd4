-- bench/run.lua: the lua-scheduler benchmark (issue 3).  Not a test: it
-- measures, prints a table and writes the same figures as JSON; the "met?"
-- column reports, it never fails the run.  It fails (exit 1) only when
-- something breaks: a process crashes, or a job is lost or runs twice.
--
-- Run it with `make bench` (which builds the module and starts a throwaway
-- PostgreSQL, as the tests do):
--
--   make bench                              full run: medians of 3 repetitions
--   make bench BENCH_ARGS=--smoke           tiny sizes, 1 repetition (CI)
--   make bench BENCH_ARGS="--reps 5 --only throughput,lateness"
--   make bench BENCH_ARGS="--only wait_timer,wait_http"   jobs that wait (issue 18),
--                                           graphile-worker beside them (bench/concurrent.lua)
--   make bench BENCH_ARGS="--only limits"   a name limited to 5 at once over 4 workers
--                                           (issue 16, bench/limits.lua)
--   make bench BENCH_ARGS="--only limit_parts"   100 partitions each limited to 2
--   make bench BENCH_ARGS="--only rate"     a name limited to 1,000 starts a second over
--                                           4 workers (issue 16, bench/limits.lua)
--
-- Directly, against a database of your own (it creates the schemas
-- `scheduler` and `bench` and TRUNCATEs scheduler.jobs: never point it at a
-- database that matters):
--   LUA_SCHEDULER_DATABASE=... PGHOST=... PGPORT=... PGDATABASE=... PGUSER=...
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' lua5.4 bench/run.lua --smoke
--
-- Processes: this driver (idle while measuring), worker processes
-- (bench/worker.lua, bench/waiter.lua, bench/limited.lua), producers (bench/producer.lua), psql
-- and pgbench; for the waiting rows an HTTP server (bench/http_server.lua)
-- and graphile-worker (node, bench/graphile).  All share the machine with
-- PostgreSQL; the driver only reads their results.

local scheduler = require "scheduler"
local sys = require "system"
local now = scheduler.now
local START_TIME = now()

local BENCH = (arg and arg[0] or "bench/run.lua"):match("^(.*)/[^/]*$") or "."
local ROOT = BENCH .. "/.."

---------------------------------------------------------------------------
-- options
---------------------------------------------------------------------------

local USAGE = [[
usage: lua5.4 bench/run.lua [options]
  --smoke          tiny sizes, 1 repetition: checks that everything runs (seconds)
  --reps N         repetitions of each measurement; the table shows medians (default 3)
  --only LIST      comma-separated sections: throughput,lateness,enqueue,startup,scale,bloat,
                   wait_timer,wait_http,limits,limit_parts,rate,fairness
  --jobs N         jobs drained in the throughput measurement (default 100000)
  --batch N        the worker's batch size, for the ceiling at its own batch size
                   (default: DEFAULT_BATCH in csrc/core.c)
  --wait-jobs N    jobs in the waiting rows, wait_timer and wait_http (default 10000)
  --limit-jobs N   jobs of 50 ms in the limits rows (default 1000)
  --parts-jobs N   jobs of 50 ms in the limit_parts rows (default 10000)
  --parts-workers N  worker processes in the limit_parts rows, sharing 256 coroutines
                   (the baseline: 200) (default 2, one per core of the reference machine)
  --rate-jobs N    jobs in the rate rows (default 10000: 10 s at 1,000 a second)
  --fair-jobs N    jobs waiting in one partition in the fairness rows (default 1000000)
  --no-graphile    do not run graphile-worker beside the waiting rows (it needs node,
                   and npm installs it into build/npm once)
  --json FILE      where to write the results (default bench/results.json)
  --note TEXT      a note stored with the results (e.g. "shared machine")
  --lua PATH       the Lua interpreter for worker processes (default lua5.4)
  --baseline DIR   also drain with one worker of the built checkout in DIR (its lua/,
                   build/ and bench/worker.lua), interleaved rep by rep with this one,
                   in a database of its own on the same server (`make bench BASELINE=REV`)
  --help]]

local cfg = {
  reps = 3,
  jobs = 100000,            -- throughput: jobs drained
  batch = nil,              -- the worker's batch size: DEFAULT_BATCH in csrc/core.c, or 500
  lat_samples = 1000,       -- lateness: jobs per kind
  lat_interval = 0.005,     -- seconds between two schedule() calls
  fut_min = 0.5, fut_max = 2.0,
  enqueue = 10000,          -- schedule() one at a time
  insert_seconds = 3,       -- pgbench single-row INSERT run
  bulk = 100000, bulk_chunk = 1000,
  scale_small = 10000, scale_big = 1000000, scale_due = 20000,
  bloat = 1000000, bloat_rounds = 3,
  vacuum_wait = 90,         -- bloat: seconds to wait for autovacuum between rounds
  wait_jobs = 10000,        -- wait_timer, wait_http: jobs that wait 100 ms each
  wait_concurrency = 200,   -- their worker's concurrency
  graphile_jobs = 3000,     -- graphile-worker's run of the same shape
  limit_jobs = 1000,        -- limits: jobs of 50 ms (10 s at the limit's ideal rate)
  parts_jobs = 10000,       -- limit_parts: jobs of 50 ms in 100 partitions (2.5 s at the ideal rate)
  parts_workers = 2,        -- limit_parts: worker processes (see bench/limits.lua)
  rate_jobs = 10000,        -- rate: jobs at 1,000 starts a second (10 s)
  fair_jobs = 1000000,      -- fairness: jobs waiting in one partition
  no_graphile = false,
  json = BENCH .. "/results.json",
  lua = os.getenv("LUA") or "lua5.4",
  note = "",
  smoke = false,
}
local SMOKE = {
  reps = 1, jobs = 2000, lat_samples = 50, enqueue = 200, insert_seconds = 1,
  bulk = 2000, bulk_chunk = 500, scale_small = 1000, scale_big = 10000, scale_due = 2000,
  bloat = 10000, vacuum_wait = 0, wait_jobs = 500, wait_concurrency = 50, limit_jobs = 50,
  parts_jobs = 400, rate_jobs = 300, fair_jobs = 3000,
}
local SECTIONS = { "throughput", "lateness", "enqueue", "startup", "scale", "bloat", "wait_timer",
  "wait_http", "limits", "limit_parts", "rate", "fairness" }
local only

do
  local i, explicit = 1, {}
  local function value(name)
    i = i + 1
    if arg[i] == nil then
      io.stderr:write("bench: ", name, " needs a value\n", USAGE, "\n")
      os.exit(2)
    end
    return arg[i]
  end
  local function count(name)
    local v = math.tointeger(tonumber(value(name)))
    if not v or v < 1 then
      io.stderr:write("bench: ", name, " must be a positive integer\n")
      os.exit(2)
    end
    return v
  end
  while i <= #arg do
    local a = arg[i]
    if a == "--smoke" then cfg.smoke = true
    elseif a == "--reps" then explicit.reps = count(a)
    elseif a == "--jobs" then explicit.jobs = count(a)
    elseif a == "--batch" then explicit.batch = count(a)
    elseif a == "--wait-jobs" then explicit.wait_jobs = count(a)
    elseif a == "--limit-jobs" then explicit.limit_jobs = count(a)
    elseif a == "--parts-jobs" then explicit.parts_jobs = count(a)
    elseif a == "--parts-workers" then explicit.parts_workers = count(a)
    elseif a == "--rate-jobs" then explicit.rate_jobs = count(a)
    elseif a == "--fair-jobs" then explicit.fair_jobs = count(a)
    elseif a == "--no-graphile" then explicit.no_graphile = true
    elseif a == "--json" then explicit.json = value(a)
    elseif a == "--note" then explicit.note = value(a)
    elseif a == "--lua" then explicit.lua = value(a)
    elseif a == "--baseline" then explicit.baseline = value(a)
    elseif a == "--only" then
      only = {}
      for s in value(a):gmatch("[^,%s]+") do
        local known = false
        for _, k in ipairs(SECTIONS) do known = known or k == s end
        if not known then
          io.stderr:write("bench: unknown section ", s, "\n", USAGE, "\n")
          os.exit(2)
        end
        only[s] = true
      end
    elseif a == "--help" or a == "-h" then
      print(USAGE)
      os.exit(0)
    else
      io.stderr:write("bench: unknown argument ", a, "\n", USAGE, "\n")
      os.exit(2)
    end
    i = i + 1
  end
  if cfg.smoke then
    for k, v in pairs(SMOKE) do cfg[k] = v end
  end
  for k, v in pairs(explicit) do cfg[k] = v end
  if not cfg.batch then
    local f = io.open(ROOT .. "/csrc/core.c", "r")
    local src = f and f:read("a") or ""
    if f then f:close() end
    cfg.batch = math.tointeger(tonumber(src:match("#define%s+DEFAULT_BATCH%s+(%d+)"))) or 500
  end
end

local function wanted(section) return only == nil or only[section] == true end

---------------------------------------------------------------------------
-- processes, files, SQL
---------------------------------------------------------------------------

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local TMP
-- what else to undo on the way out (processes still running: by pid)
local on_cleanup = {}
local function cleanup()
  for i = #on_cleanup, 1, -1 do pcall(on_cleanup[i]) end
  on_cleanup = {}
  if TMP then os.execute("rm -rf " .. q(TMP)) end
  TMP = nil
end

local function die(fmt, ...)
  io.stderr:write("bench: ", string.format(fmt, ...), "\n")
  cleanup()
  os.exit(1)
end

local function need_env(name)
  local v = os.getenv(name)
  if not v or v == "" then
    die("%s is not set: run `make bench` (it starts a throwaway PostgreSQL and sets it)", name)
  end
  return v
end
need_env("LUA_SCHEDULER_DATABASE")
local PGBIN = os.getenv("PGTMP_BIN") or "/usr/lib/postgresql/15/bin"
local PSQL, PGBENCH = PGBIN .. "/psql", PGBIN .. "/pgbench"

local function capture(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

do
  local out, ok = capture("mktemp -d /tmp/lua-scheduler-bench.XXXXXX")
  if not ok then die("mktemp failed: %s", out) end
  TMP = out:gsub("%s+$", "")
end

local function write_file(path, data)
  local f = assert(io.open(path, "w"))
  f:write(data)
  f:close()
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Run SQL through psql (one session, autocommit, stop on the first error)
-- in the benchmark's database, or in `db`; returns the output: unaligned,
-- tab-separated, tuples only.
local function sql(text, db)
  local file = TMP .. "/q.sql"
  write_file(file, text)
  local out, ok = capture((db and "PGDATABASE=" .. q(db) .. " " or "") .. q(PSQL)
    .. " -X -q -A -t -F '\t' -v ON_ERROR_STOP=1 -f " .. q(file))
  if not ok then die("psql failed:\n%s\n-- SQL:\n%s", out, text) end
  return out
end

--- Like sql(), but returns output, ok instead of failing the run.
local function sql_try(text)
  local file = TMP .. "/q.sql"
  write_file(file, text)
  return capture(q(PSQL) .. " -X -q -A -t -F '\t' -v ON_ERROR_STOP=1 -f " .. q(file))
end

local function sql_row(text, db)
  local line = sql(text, db):match("[^\n]*")
  local row = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do row[#row + 1] = tonumber(field) or field end
  return row
end

local function sql_value(text, db) return sql_row(text, db)[1] end

local function sleep(s) if s > 0 then sys.sleep(s) end end

-- The baseline's database, the environment of its worker processes and its
-- revision (see --baseline), set by setup().
local BASELINE_DB, BASELINE_ENV, BASELINE_REV

--- Start `lua5.4 bench/<script> args...`, reading its stdout; with
-- `baseline`, the baseline checkout's script, module and database.
local function spawn(script, args, baseline)
  local parts = { "exec", q(cfg.lua), q(BENCH .. "/" .. script) }
  if baseline then
    parts = { "exec env", BASELINE_ENV, q(cfg.lua), q(cfg.baseline .. "/bench/" .. script) }
  end
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local p = assert(io.popen(table.concat(parts, " "), "r"))
  return { p = p, what = script .. " " .. table.concat(args, " ") }
end

--- Read lines until one starts with `prefix`; returns the rest of it.
local function expect(proc, prefix)
  while true do
    local line = proc.p:read("l")
    if line == nil then
      proc.p:close()
      die("%s: ended without printing %s", proc.what, prefix)
    end
    if line:sub(1, #prefix) == prefix then return line:sub(#prefix + 1) end
    io.stderr:write(line, "\n")
  end
end

local function parse_result(s)
  local r = {}
  for k, v in s:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
  return r
end

local function finish(proc)
  local ok, how, code = proc.p:close()
  if not ok then die("%s: exited with %s %s", proc.what, tostring(how), tostring(code)) end
end

--- Run a script to completion and return its RESULT.
local function run_script(script, args)
  local proc = spawn(script, args)
  local r = parse_result(expect(proc, "RESULT"))
  finish(proc)
  return r
end

--- pgbench -n -M prepared with the given script; returns
-- { tps =, processed =, elapsed = } (elapsed without connection time).
local function pgbench(script, o)
  local cmd = { q(PGBENCH), "-n", "-M", "prepared", "-f", q(BENCH .. "/" .. script),
    "-c", o.clients or 1, "-j", o.clients or 1 }
  if o.transactions then cmd[#cmd + 1] = "-t " .. o.transactions end
  if o.seconds then cmd[#cmd + 1] = "-T " .. o.seconds end
  for k, v in pairs(o.define or {}) do cmd[#cmd + 1] = "-D " .. q(k .. "=" .. v) end
  local out, ok = capture(table.concat(cmd, " "))
  local processed = tonumber(out:match("number of transactions actually processed: (%d+)"))
  local tps = tonumber(out:match("tps = ([%d.]+) %(without initial connection time%)"))
  if not ok or not processed or not tps then die("pgbench %s failed:\n%s", script, out) end
  if tonumber(out:match("number of failed transactions: (%d+)") or "0") > 0 then
    die("pgbench %s: failed transactions:\n%s", script, out)
  end
  return { tps = tps, processed = processed, elapsed = processed / tps }
end

---------------------------------------------------------------------------
-- statistics and formatting
---------------------------------------------------------------------------

local function sorted(t)
  local s = table.move(t, 1, #t, 1, {})
  table.sort(s)
  return s
end

local function median(t)
  if #t == 0 then return nil end
  local s = sorted(t)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

--- Nearest-rank percentile of an already sorted list.
local function pct(s, p)
  if #s == 0 then return nil end
  local k = math.ceil(p / 100 * #s)
  return s[math.max(1, math.min(#s, k))]
end

local function field(list, key)
  local out = {}
  for _, v in ipairs(list) do
    if v[key] ~= nil then out[#out + 1] = v[key] end
  end
  return out
end

local function commas(n)
  local s = string.format("%.0f", n)
  local neg = s:sub(1, 1) == "-"
  if neg then s = s:sub(2) end
  s = s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return (neg and "-" or "") .. s
end

local function fmt_rate(v) return v and (commas(v) .. " jobs/s") or "n/a" end
local function fmt_ms(v) return v and string.format("%.2f ms", v) or "n/a" end
local function fmt_mb(bytes) return bytes and string.format("%.1f MB", bytes / 1048576) or "n/a" end
local function fmt_pct(v) return v and string.format("%.0f%%", v * 100) or "n/a" end
local function fmt_x(v) return v and string.format("%.2fx", v) or "n/a" end

local function log(fmt, ...)
  io.stderr:write(string.format("[%6.1f s] ", now() - START_TIME), string.format(fmt, ...), "\n")
end

---------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return map[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function json(v, indent)
  indent = indent or ""
  local t = type(v)
  if v == nil then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%.0f", v) end
    return (string.format("%.4f", v):gsub("0+$", ""):gsub("%.$", ""))
  elseif t == "string" then return json_string(v)
  elseif t == "table" then
    local inner = indent .. "  "
    local n = #v
    local is_array = n > 0 or next(v) == nil
    if is_array and next(v) ~= nil then
      for k in pairs(v) do
        if math.type(k) ~= "integer" or k < 1 or k > n then is_array = false break end
      end
    end
    local parts = {}
    if is_array then
      if n == 0 then return "[]" end
      local simple = true
      for i = 1, n do
        parts[i] = json(v[i], inner)
        if type(v[i]) == "table" then simple = false end
      end
      if simple then return "[" .. table.concat(parts, ", ") .. "]" end
      return "[\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local val = v[k]
      if val == nil then val = v[tonumber(k)] end
      parts[#parts + 1] = json_string(k) .. ": " .. json(val, inner)
    end
    return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
  end
  return json_string(tostring(v))
end

---------------------------------------------------------------------------
-- the database side
---------------------------------------------------------------------------

local NOOP = "bench_noop"

--- Counters of the database and of scheduler.jobs (for per-job costs).
local function db_counters()
  local r = sql_row [[
    SELECT d.xact_commit, t.n_tup_ins, t.n_tup_upd, t.n_tup_del,
           pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),
           coalesce((SELECT h.n_tup_ins FROM pg_stat_user_tables h
                     WHERE h.relid = to_regclass('scheduler.history')), 0)
    FROM pg_stat_database d, pg_stat_user_tables t
    WHERE d.datname = current_database() AND t.relid = 'scheduler.jobs'::regclass]]
  return { commits = r[1], ins = r[2], upd = r[3], del = r[4], wal = r[5], hist_ins = r[6] }
end

--- Wait until no other client is connected (so that their statistics are
-- flushed: a backend writes them when it exits).
local function quiesce()
  for _ = 1, 100 do
    local n = sql_value [[SELECT count(*) FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()]]
    if n == 0 then break end
    sleep(0.05)
  end
  sleep(0.15)
end

--- TRUNCATE `tbl`, fill it with `n` no-op jobs due now, ANALYZE, CHECKPOINT
-- (each measurement starts from the same state: fresh rows, honest
-- statistics, no checkpoint pending).  `payload`: an SQL expression of the
-- i-th job's payload (i from 1 to n; default '{}').
local function fill_due(tbl, n, name, db, payload)
  sql(string.format([[
    TRUNCATE %s;
    INSERT INTO %s (name, payload, run_at)
      SELECT %s, %s, now() - interval '1 second' FROM generate_series(1, %d) AS i;
    ANALYZE %s;
    CHECKPOINT;]], tbl, tbl, "'" .. (name or NOOP) .. "'", payload or "'{}'::jsonb", n, tbl), db)
end

local function count_jobs(where, db)
  return sql_value("SELECT count(*) FROM scheduler.jobs WHERE " .. where, db)
end

--- Parse the C string literals (adjacent ones concatenate; identifiers are
-- looked up in `macros`) of src from position i up to a `}` or a newline
-- outside a literal (stop = "}" or "\n").  Returns the list of items
-- (strings, and numbers for integer tokens) or nil when it meets a token it
-- cannot read.
local function c_literals(src, i, stop, macros)
  local items, cur = {}, nil
  local function flush()
    if cur then items[#items + 1] = table.concat(cur) end
    cur = nil
  end
  while i <= #src do
    local ch = src:sub(i, i)
    if ch == '"' then
      local j = i + 1
      cur = cur or {}
      while true do
        local c = src:sub(j, j)
        if c == "" then return nil end
        if c == '"' then break end
        if c == "\\" then
          local e = src:sub(j + 1, j + 1)
          cur[#cur + 1] = ({ n = "\n", t = "\t" })[e] or e
          j = j + 2
        else
          cur[#cur + 1] = c
          j = j + 1
        end
      end
      i = j + 1
    elseif src:sub(i, i + 1) == "\\\n" then -- a continued #define line
      i = i + 2
    elseif ch == stop then
      break
    elseif src:sub(i, i + 1) == "/*" then
      i = (src:find("*/", i + 2, true) or #src) + 2
    elseif src:sub(i, i + 1) == "//" then
      i = (src:find("\n", i, true) or #src) + 1
    elseif ch == "," then
      flush()
      i = i + 1
    elseif ch:match("%d") then
      flush()
      local digits = src:match("^%d+", i)
      items[#items + 1] = tonumber(digits)
      i = i + #digits
    elseif ch:match("[%a_]") then
      local ident = src:match("^[%w_]+", i)
      if ident == "NULL" then -- an unprepared statement's name
        flush()
        items[#items + 1] = false
        i = i + 4
        goto continue
      end
      local v = macros and macros[ident]
      if not v then return nil end
      cur = cur or {}
      cur[#cur + 1] = v
      i = i + #ident
    else
      i = i + 1
    end
    ::continue::
  end
  flush()
  return items
end

-- The files of the PostgreSQL backend (csrc/store_pg_internal.h lists
-- them), the header first: its macros are used by the others.
local STORE_PG_FILES = { "store_pg_internal.h", "store_pg.c", "store_pg_enqueue.c",
  "store_pg_claim.c", "store_pg_crash.c", "store_pg_cancel.c", "store_pg_wake.c",
  "store_pg_operators.c", "store_pg_history.c" }

--- The SQL text of statement id (a Q_* of csrc/store_pg_internal.h) in the
-- backend's files (the worker's own statements, for EXPLAIN ANALYZE), its
-- parameter count and whether the worker prepares it; nil when the
-- source no longer has that shape.
local function store_source()
  local parts = {}
  for _, name in ipairs(STORE_PG_FILES) do
    local text = read_file(ROOT .. "/csrc/" .. name)
    if not text then return nil end
    parts[#parts + 1] = text
  end
  local src = table.concat(parts, "\n")
  local macros = {}
  for name, at in src:gmatch("\n#define%s+([%w_]+)[%s\\]+()\"") do
    local v = c_literals(src, at, "\n", macros)
    if v and #v == 1 and type(v[1]) == "string" then macros[name] = v[1] end
  end
  return src, macros
end

--- The SQL text of a string macro of the backend's files, or nil.
local function store_macro(name)
  local _, macros = store_source()
  return macros and macros[name]
end

local function store_query(id)
  local src, macros = store_source()
  if not src then return nil end
  -- const pg_query pgq_x = {Q_X, "name" or NULL, nparams, "sql"...};
  local at, past = src:find("= {%s*" .. id .. ",")
  if not at then return nil end
  local items = c_literals(src, past + 1, "}", macros)
  if not items or #items ~= 3 or type(items[2]) ~= "number" or type(items[3]) ~= "string" then
    return nil
  end
  return items[3], items[2], items[1] ~= false
end

--- EXPLAIN ANALYZE worker statement `id` (from csrc/store_pg*.c) 10 times
-- in one session, through a prepared statement as the worker runs it, so
-- the plan cache behaves the same: PostgreSQL plans the first 5 executions
-- with the actual parameters (custom plans) and may then switch to a generic
-- plan (o.generic: as the worker runs its claim, in a transaction with its
-- CLAIM_SETTINGS: generic plan, no sequential scan, no sort, no JIT;
-- o.name: the worker's one name, a constant of its text, as the worker
-- prepares it).  Each run is in a transaction that is rolled back
-- (o.commit: committed); o.pre (SQL) runs
-- and commits before each run, o.setup (SQL, may use psql's \gset) first in
-- it.  Returns { custom_ms = median of runs 1-5, steady_ms = median of runs
-- 6-10, seq_scan = the last plan scans scheduler.jobs sequentially, generic
-- = the last plan is generic } or nil (statement not found, or it failed:
-- the reason is logged).
local function explain(id, nparams, params, o)
  o = o or {}
  local text, n, prepared = store_query(id)
  if not text or n ~= nparams then
    log("note: cannot EXPLAIN %s: csrc/store_pg*.c changed shape (update bench/run.lua)", id)
    return nil
  end
  local settings = o.generic and store_macro("CLAIM_SETTINGS")
  if o.generic and not settings then
    log("note: cannot EXPLAIN %s: CLAIM_SETTINGS not found in csrc/store_pg_claim.c", id)
    return nil
  end
  if o.name then
    -- as csrc/store_pg_claim.c's pg_prepare_claim: one name, an equality; $1 unused
    local n
    text, n = text:gsub("= ANY %(%$1::text%[%]%)", function() return "= '" .. o.name .. "'::text" end)
    if n ~= 1 then
      log("note: cannot EXPLAIN %s: csrc/store_pg*.c changed shape (update bench/run.lua)", id)
      return nil
    end
    text = "(text[], integer, integer, float8, bigint) AS " .. text
  else
    text = "AS " .. text
  end
  local parts = { "PREPARE bench_q " .. text .. ";" }
  -- the worker runs some statements unprepared: planned with their actual
  -- parameters every time
  if not prepared then table.insert(parts, 1, "SET plan_cache_mode = force_custom_plan;") end
  for _ = 1, 10 do
    if o.pre then parts[#parts + 1] = o.pre end
    parts[#parts + 1] = "BEGIN;"
    if settings then parts[#parts + 1] = settings .. " \\g /dev/null" end
    if o.setup then parts[#parts + 1] = o.setup end
    parts[#parts + 1] = "EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF, VERBOSE OFF) EXECUTE bench_q("
      .. params .. ");"
    parts[#parts + 1] = o.commit and "COMMIT;" or "ROLLBACK;"
  end
  local out, ok = sql_try(table.concat(parts, "\n"))
  if not ok then
    log("note: EXPLAIN %s failed: %s", id, (out:match("ERROR:[^\n]*") or out):sub(1, 200))
    return nil
  end
  local times, plans, from = {}, {}, 1
  for plan, t, e in out:gmatch("()Execution Time: ([%d.]+) ms()") do
    times[#times + 1] = tonumber(t)
    plans[#plans + 1] = out:sub(from, plan)
    from = e
  end
  if #times < 10 then return nil end
  local last = plans[#plans]
  return {
    custom_ms = median(table.move(times, 1, 5, 1, {})),
    steady_ms = median(table.move(times, 6, 10, 1, {})),
    all_ms = times,
    seq_scan = last:find("Seq Scan on jobs") ~= nil,
    generic = prepared and last:find("%$%d") ~= nil,
  }
end

--- The claim (which deletes what it claims) of `limit` jobs, as the worker
-- runs it: generic plan, committed.  A claim whose transaction rolled back
-- would leave its rows to count as lost attempts, so each run claims
-- `limit` fresh jobs, due before every other one (none with `empty`).
local function explain_claim(limit, empty)
  local pre = not empty and string.format([[
    INSERT INTO scheduler.jobs (name, payload, run_at)
      SELECT '%s', '{}'::jsonb, now() - interval '1 hour' FROM generate_series(1, %d);]],
    NOOP, limit) or nil
  return explain("Q_CLAIM", 6, string.format("'{%s}', %d, NULL, NULL, NULL, 'bench'", NOOP, limit),
    { generic = true, commit = true, pre = pre, name = NOOP })
end

local function explain_wake()
  return explain("Q_WAKE", 1, string.format("'{%s}'", NOOP))
end

--- "custom / steady ms [generic] [seq scan!]" for an explain() result.
local function fmt_explain(e)
  if not e then return "n/a" end
  local flags = {}
  if e.generic then flags[#flags + 1] = "generic plan" end
  if e.seq_scan then flags[#flags + 1] = "seq scan!" end
  return string.format("%.2f / %.2f ms%s", e.custom_ms, e.steady_ms,
    #flags > 0 and (" (" .. table.concat(flags, ", ") .. ")") or "")
end

--- The worker's statement, timed by EXPLAIN ANALYZE on the table as it is:
-- a full claim.  (A batch whose jobs all succeeded ends with a bare COMMIT:
-- the claim deleted them and counted them for stats.)
local function statement_costs()
  return { claim = explain_claim(cfg.batch) }
end

local HAVE_PGSTATTUPLE = false

--- Sizes of scheduler.jobs: heap, indexes (each), total; with pgstattuple
-- (postgresql-contrib) also the exact live and dead tuple counts and the
-- free space in the heap.
local function sizes()
  local r = sql_row [[
    SELECT pg_relation_size('scheduler.jobs'), pg_indexes_size('scheduler.jobs'),
           pg_total_relation_size('scheduler.jobs'),
           coalesce(autovacuum_count, 0) + coalesce(vacuum_count, 0)
    FROM pg_stat_user_tables WHERE relid = 'scheduler.jobs'::regclass]]
  local per_index = {}
  for line in sql([[SELECT indexrelid::regclass::text, pg_relation_size(indexrelid)
                    FROM pg_index WHERE indrelid = 'scheduler.jobs'::regclass ORDER BY 1]])
      :gmatch("[^\n]+") do
    local name, size = line:match("^(.-)\t(%d+)$")
    if name then per_index[name:gsub("^scheduler%.", "")] = tonumber(size) end
  end
  local out = { heap = r[1], indexes = r[2], total = r[3], vacuums = r[4], per_index = per_index }
  if HAVE_PGSTATTUPLE then
    local t = sql_row [[SELECT tuple_count, dead_tuple_count, free_percent
                        FROM pgstattuple('scheduler.jobs')]]
    out.live_tuples, out.dead_tuples, out.free_percent = t[1], t[2], t[3]
  end
  return out
end

---------------------------------------------------------------------------
-- the measurements
---------------------------------------------------------------------------

--- Drain the jobs named `name` (due now, already inserted) with `nworkers`
-- worker processes started together.  Checks that each job ran once.
local function drain(nworkers, total, o)
  o = o or {}
  local name = o.name or NOOP
  local go = TMP .. "/go"
  os.remove(go)
  local c0
  if o.counters then
    quiesce()
    c0 = db_counters()
  end
  local procs = {}
  for i = 1, nworkers do
    local args = { "drain", "name=" .. name, "go=" .. go }
    if o.gaps then args[#args + 1] = "gaps=1" end
    if o.history then args[#args + 1] = "history=" .. o.history end
    procs[i] = spawn("worker.lua", args, o.baseline)
  end
  for i = 1, nworkers do expect(procs[i], "READY") end
  write_file(go, "go\n")
  local res = {}
  for i = 1, nworkers do
    res[i] = parse_result(expect(procs[i], "RESULT"))
    finish(procs[i])
  end
  os.remove(go)
  local ran, calls, t0, t1, rss, first = 0, 0, math.huge, -math.huge, 0, math.huge
  for _, r in ipairs(res) do
    ran, calls = ran + r.ran, calls + r.calls
    t0, t1 = math.min(t0, r.t0), math.max(t1, r.t1)
    rss = math.max(rss, r.rss_kb)
    if r.first > 0 then first = math.min(first, r.first) end
  end
  local left = count_jobs("name = '" .. name .. "' AND run_at <= now()", o.baseline and BASELINE_DB)
  if ran ~= total or calls ~= total or left ~= 0 then
    die("drain with %d worker(s): %d jobs, %d listener calls, %d counted by run(), %d left: "
      .. "every job must run exactly once", nworkers, total, calls, ran, left)
  end
  local out = {
    jobs = total, seconds = t1 - t0, rate = total / (t1 - t0), rss_kb = rss,
    first_claim_ms = (first - t0) * 1000, workers = nworkers,
  }
  if o.counters then
    quiesce()
    local c1 = db_counters()
    out.commits_per_1000 = (c1.commits - c0.commits) / total * 1000
    out.row_writes_per_job = ((c1.upd - c0.upd) + (c1.del - c0.del)) / total
    out.wal_bytes_per_job = (c1.wal - c0.wal) / total
    out.history_rows_per_job = (c1.hist_ins - c0.hist_ins) / total
  end
  if o.gaps and nworkers == 1 then
    local r = res[1]
    local batches = r.gaps + 1
    out.batches = batches
    out.avg_batch = total / batches
    out.gap_p50_ms = r.gap_p50 * 1000
    out.gap_max_ms = r.gap_max * 1000
    -- database time seen from the worker: before the first job, between
    -- batches, and after the last one (recording the last outcomes)
    out.db_seconds = (r.first - r.t0) + r.gap_sum + (r.t1 - r.last)
    out.lua_us_per_job = math.max(0, (r.t1 - r.t0) - out.db_seconds) / total * 1e6
    out.gap_mean_ms = r.gaps > 0 and r.gap_sum / r.gaps * 1000 or 0.0
    out.db_share = out.db_seconds / (r.t1 - r.t0)
  end
  return out
end

--- The raw claim-and-delete ceiling: rows/s deleting `rows` due rows with
-- pgbench, `n` per statement, `clients` connections, with the statement of
-- `script`.
local function ceiling_run(script, n, clients, rows)
  fill_due("bench.jobs", rows)
  local per_client = math.ceil(rows / (n * clients)) + 1
  local r = pgbench(script, { clients = clients, transactions = per_client, define = { n = n } })
  local left = sql_value("SELECT count(*) FROM bench.jobs")
  return (rows - left) / r.elapsed
end

--- Both forms of the statement (claim_delete.sql is issue 3's `id IN
-- (...)`, whose plan degrades to a sequential scan at large n;
-- claim_delete_any.sql keeps the index plan): the ceiling is the faster.
local function ceiling(n, clients, rows)
  local r_in = ceiling_run("claim_delete.sql", n, clients, rows)
  local r_any = ceiling_run("claim_delete_any.sql", n, clients, rows)
  return { rate = math.max(r_in, r_any), rate_in = r_in, rate_any = r_any, n = n, clients = clients }
end

local results = { meta = {}, table = {} }
local rows = results.table

--- A line of the table: measurement, value, target, ratio, met?.
local function row(section, label, value, target, ratio, met)
  rows[#rows + 1] = { section = section, measurement = label, value = value,
    target = target or "", ratio = ratio or "", met = met }
end

local function met(cond)
  if cond == nil then return nil end
  return cond and true or false
end

-- 1 + 2: throughput and the raw ceiling, interleaved rep by rep so that a
-- change of background load hits both alike.
local function section_throughput()
  local R, N = cfg.reps, cfg.jobs
  local CEIL = {
    { key = "n100_c1", n = 100, c = 1 },
    { key = "n100_c4", n = 100, c = 4 },
    { key = "own_c1", n = cfg.batch, c = 1 },
    { key = "own_c2", n = cfg.batch, c = 2 },
  }
  local ceil_runs, w_runs, base_runs, hist_runs = {}, { {}, {} }, {}, {}
  for _, c in ipairs(CEIL) do ceil_runs[c.key] = {} end
  for rep = 1, R do
    for _, c in ipairs(CEIL) do
      local r = ceiling(c.n, c.c, N)
      table.insert(ceil_runs[c.key], r)
      log("throughput %d/%d: ceiling n=%d clients=%d: %s (IN form %s, ANY(ARRAY) form %s)", rep, R,
        c.n, c.c, fmt_rate(r.rate), fmt_rate(r.rate_in), fmt_rate(r.rate_any))
    end
    for w = 1, 2 do
      fill_due("scheduler.jobs", N)
      local r = drain(w, N, { counters = true })
      table.insert(w_runs[w], r)
      log("throughput %d/%d: %d worker(s): %s", rep, R, w, fmt_rate(r.rate))
      if w == 1 and cfg.baseline then
        fill_due("scheduler.jobs", N, nil, BASELINE_DB)
        local b = drain(1, N, { baseline = true })
        table.insert(base_runs, b)
        log("throughput %d/%d: 1 worker of the baseline: %s", rep, R, fmt_rate(b.rate))
      end
      if w == 1 then
        -- the same drain with history on (issue 15), right after the one
        -- without: every job is kept (an empty history table to start)
        fill_due("scheduler.jobs", N)
        sql("TRUNCATE scheduler.history")
        local h = drain(1, N, { counters = true, history = "7d" })
        h.ratio = h.rate / r.rate
        local kept = sql_value("SELECT coalesce(sum(json_array_length(jobs::json)), 0) FROM scheduler.history")
        if kept ~= N then die("history on: %d jobs drained, %d kept: every job must be kept once", N, kept) end
        h.history_rows = sql_value("SELECT count(*) FROM scheduler.history")
        table.insert(hist_runs, h)
        log("throughput %d/%d: 1 worker, history on: %s (%s of off; %.0f WAL bytes/job vs %.0f)",
          rep, R, fmt_rate(h.rate), fmt_pct(h.ratio), h.wal_bytes_per_job, r.wal_bytes_per_job)
      end
    end
  end
  -- One more 1-worker drain that notes the pauses between batches: where
  -- the time goes (not part of the medians: the listener is not a pure no-op).
  fill_due("scheduler.jobs", N)
  local diag = drain(1, N, { gaps = true, counters = true })
  log("throughput: profile: %d batches of %.0f, %.2f ms between batches, %.2f us/job in Lua",
    diag.batches, diag.avg_batch, diag.gap_p50_ms, diag.lua_us_per_job)

  -- the worker's two statements on a table of N due jobs
  fill_due("scheduler.jobs", N)
  local st = statement_costs()
  log("throughput: at %s due: claim %s", commas(N), fmt_explain(st.claim))
  diag.statements = st

  local T = { ceiling = {}, workers_1 = {}, workers_2 = {}, profile = diag }
  for _, c in ipairs(CEIL) do
    local runs = ceil_runs[c.key]
    T.ceiling[c.key] = { n = c.n, clients = c.c, rate = median(field(runs, "rate")),
      rate_in = median(field(runs, "rate_in")), rate_any = median(field(runs, "rate_any")),
      runs = field(runs, "rate"), runs_in = field(runs, "rate_in"), runs_any = field(runs, "rate_any") }
  end
  for w = 1, 2 do
    local runs = w_runs[w]
    T["workers_" .. w] = {
      rate = median(field(runs, "rate")), runs = field(runs, "rate"),
      rss_kb = median(field(runs, "rss_kb")),
      first_claim_ms = median(field(runs, "first_claim_ms")),
      commits_per_1000 = median(field(runs, "commits_per_1000")),
      row_writes_per_job = median(field(runs, "row_writes_per_job")),
      wal_bytes_per_job = median(field(runs, "wal_bytes_per_job")),
    }
  end
  T.history_1 = {
    rate = median(field(hist_runs, "rate")), runs = field(hist_runs, "rate"),
    ratios = field(hist_runs, "ratio"), ratio = median(field(hist_runs, "ratio")),
    commits_per_1000 = median(field(hist_runs, "commits_per_1000")),
    row_writes_per_job = median(field(hist_runs, "row_writes_per_job")),
    wal_bytes_per_job = median(field(hist_runs, "wal_bytes_per_job")),
    history_rows_per_job = median(field(hist_runs, "history_rows_per_job")),
  }
  if cfg.baseline then
    T.baseline_1 = { dir = cfg.baseline, rate = median(field(base_runs, "rate")),
      runs = field(base_runs, "rate"), ratios = {} }
    for k, b in ipairs(base_runs) do T.baseline_1.ratios[k] = w_runs[1][k].rate / b.rate end
  end
  results.throughput = T
  local GRAPHILE = 68000
  local w1, w2 = T.workers_1.rate, T.workers_2.rate
  local c = T.ceiling
  row("throughput", string.format("1 worker, %s jobs", commas(N)), fmt_rate(w1), ">= 100,000",
    fmt_x(w1 / GRAPHILE) .. " graphile", met(w1 >= 100000))
  row("throughput", string.format("2 workers, %s jobs", commas(N)), fmt_rate(w2), ">= 100,000",
    fmt_x(w2 / GRAPHILE) .. " graphile", met(w2 >= 100000))
  do
    -- each rep's ratio is of two drains run back to back (see the baseline's)
    local h = T.history_1
    row("throughput", string.format("1 worker, history on, %s jobs (%.0f WAL bytes/job, off: %.0f)",
      commas(N), h.wal_bytes_per_job, T.workers_1.wal_bytes_per_job), fmt_rate(h.rate),
      "<= 25% slower", "off = " .. fmt_pct(h.ratio) .. " time x" .. string.format("%.2f", 1 / h.ratio),
      met(1 / h.ratio <= 1.25))
  end
  if T.baseline_1 then
    -- each rep's ratio is of two drains run back to back: the median ratio
    -- is what the machine's changing load disturbs least
    local ratio = median(T.baseline_1.ratios)
    row("throughput", string.format("1 worker of the baseline (%s), same run", BASELINE_REV),
      fmt_rate(T.baseline_1.rate), "this >= 90%", "1 worker = " .. fmt_pct(ratio), met(ratio >= 0.9))
  end
  local function ceil_label(x)
    return string.format("raw claim+delete n=%d, %d client%s (IN %.0fk, ANY %.0fk)", x.n, x.clients,
      x.clients > 1 and "s" or "", x.rate_in / 1000, x.rate_any / 1000)
  end
  row("ceiling", ceil_label(c.n100_c1), fmt_rate(c.n100_c1.rate), "",
    "1 worker = " .. fmt_pct(w1 / c.n100_c1.rate))
  row("ceiling", ceil_label(c.n100_c4), fmt_rate(c.n100_c4.rate), "",
    "2 workers = " .. fmt_pct(w2 / c.n100_c4.rate))
  row("ceiling", ceil_label(c.own_c1), fmt_rate(c.own_c1.rate), "1 worker >= 80%",
    "1 worker = " .. fmt_pct(w1 / c.own_c1.rate), met(w1 >= 0.8 * c.own_c1.rate))
  row("ceiling", ceil_label(c.own_c2), fmt_rate(c.own_c2.rate), "2 workers >= 80%",
    "2 workers = " .. fmt_pct(w2 / c.own_c2.rate), met(w2 >= 0.8 * c.own_c2.rate))
  row("profile", "DB commits per 1,000 jobs (1 worker)",
    string.format("%.1f", T.workers_1.commits_per_1000), "", "")
  row("profile", "row writes per job (updates + deletes)",
    string.format("%.2f", T.workers_1.row_writes_per_job), "", "ceiling: 1")
  row("profile", "WAL per job", string.format("%.0f B", T.workers_1.wal_bytes_per_job), "", "")
  row("profile", "jobs per batch (average)", string.format("%.0f", diag.avg_batch), "",
    string.format("%d batches", diag.batches))
  row("profile", "pause between batches (waiting for the database), p50 / mean",
    fmt_ms(diag.gap_p50_ms) .. " / " .. fmt_ms(diag.gap_mean_ms), "",
    string.format("%.0f%% of the drain", diag.db_share * 100))
  row("profile", "Lua+dispatch time per job", string.format("%.2f us", diag.lua_us_per_job), "", "")
  row("profile", string.format("claim (and delete) of %d among %s due", cfg.batch, commas(N)),
    fmt_explain(st.claim), "", "EXPLAIN: runs 1-5 / 6-10")
  row("profile", "run() start to first listener call", fmt_ms(T.workers_1.first_claim_ms), "", "")
end

-- 3: lateness of jobs scheduled one at a time, ~5 ms apart, by another process.
local function lateness_once(kind, rep)
  local K = cfg.lat_samples
  local name = "bench_late_" .. kind
  sql("TRUNCATE scheduler.jobs")
  local out = TMP .. "/lateness"
  os.remove(out)
  local dmin, dmax = 0, 0
  if kind == "future" then dmin, dmax = cfg.fut_min, cfg.fut_max end
  local seconds = K * cfg.lat_interval + dmax + 30
  local w = spawn("worker.lua", { "lateness", "name=" .. name, "expect=" .. K,
    "seconds=" .. seconds, "out=" .. out })
  expect(w, "READY")
  sleep(0.3) -- let it enter run() (LISTEN) before the first job
  run_script("producer.lua", { "pace", "name=" .. name, "count=" .. K,
    "interval=" .. cfg.lat_interval, "dmin=" .. dmin, "dmax=" .. dmax, "seed=" .. rep })
  local r = parse_result(expect(w, "RESULT"))
  finish(w)
  if r.got ~= K then die("lateness %s: %d of %d jobs ran within %.0f s", kind, r.got, K, seconds) end
  local samples = {}
  for v in (read_file(out) or ""):gmatch("[^\n]+") do samples[#samples + 1] = tonumber(v) end
  local s = sorted(samples)
  local sum = 0
  for _, v in ipairs(s) do sum = sum + v end
  return { p50 = pct(s, 50), p95 = pct(s, 95), p99 = pct(s, 99), max = s[#s], min = s[1],
    mean = sum / #s, n = #s }
end

local function section_lateness()
  local R = cfg.reps
  results.lateness = {}
  for _, kind in ipairs { "now", "future" } do
    local runs = {}
    for rep = 1, R do
      local r = lateness_once(kind, rep)
      runs[rep] = r
      log("lateness %d/%d: due %s: p50 %.2f p95 %.2f p99 %.2f max %.2f ms", rep, R, kind,
        r.p50, r.p95, r.p99, r.max)
    end
    local m = {}
    for _, k in ipairs { "p50", "p95", "p99", "max", "min", "mean" } do m[k] = median(field(runs, k)) end
    m.worst_max = math.max(table.unpack(field(runs, "max")))
    m.runs = runs
    results.lateness[kind] = m
    local label = kind == "now" and "due now" or
      string.format("due in %.1f-%.1f s", cfg.fut_min, cfg.fut_max)
    local what = string.format("lateness %s (%d jobs, %g ms apart)", label, cfg.lat_samples,
      cfg.lat_interval * 1000)
    row("lateness", what .. ", p50", fmt_ms(m.p50))
    row("lateness", what .. ", p95", fmt_ms(m.p95))
    row("lateness", what .. ", p99", fmt_ms(m.p99), "<= 2 ms", fmt_x(m.p99 / 2) .. " target",
      met(m.p99 <= 2))
    row("lateness", what .. ", max", fmt_ms(m.max), "<= 10 ms", fmt_x(m.max / 10) .. " target",
      met(m.max <= 10))
  end
end

-- 4: enqueue.
local function section_enqueue()
  local R = cfg.reps
  local runs = { insert = {}, schedule = {}, sqlsched = {}, trigger = {}, many = {}, bulksql = {} }
  local many_missing, many_error = false, nil
  for rep = 1, R do
    sql("TRUNCATE scheduler.jobs; TRUNCATE bench.jobs; CHECKPOINT;")
    local ins = pgbench("insert.sql", { seconds = cfg.insert_seconds })
    runs.insert[rep] = ins.tps
    sql("TRUNCATE bench.jobs; CHECKPOINT;")
    local r = run_script("producer.lua", { "enqueue", "name=bench_enqueue", "count=" .. cfg.enqueue })
    runs.schedule[rep] = r.count / r.elapsed
    if count_jobs("name = 'bench_enqueue'") ~= cfg.enqueue then
      die("enqueue: %d schedule() calls but not as many jobs", cfg.enqueue)
    end
    sql("TRUNCATE scheduler.jobs; CHECKPOINT;")
    runs.sqlsched[rep] = pgbench("schedule_sql.sql", { seconds = cfg.insert_seconds }).tps
    sql("TRUNCATE scheduler.jobs; CHECKPOINT;")
    runs.trigger[rep] = pgbench("insert_trigger.sql", { seconds = cfg.insert_seconds }).tps
    sql("TRUNCATE scheduler.jobs; CHECKPOINT;")
    local proc = spawn("producer.lua", { "bulk", "name=bench_many", "count=" .. cfg.bulk,
      "chunk=" .. cfg.bulk_chunk })
    local line = proc.p:read("a")
    local ok = proc.p:close()
    local m = parse_result(line:match("RESULT(.-)\n") or "")
    if m.missing == 1 then
      many_missing = true
    elseif not ok or not m.elapsed then
      many_error = (line:gsub("%s+$", ""):match("[^\n]*$")) or "failed"
      log("enqueue: schedule_many failed: %s", many_error)
    else
      if count_jobs("name = 'bench_many'") ~= cfg.bulk then
        die("enqueue: schedule_many returned %d ids but not as many jobs exist", cfg.bulk)
      end
      runs.many[rep] = m.count / m.elapsed
    end
    sql("TRUNCATE scheduler.jobs; CHECKPOINT;")
    local b = pgbench("bulk_insert.sql", { transactions = math.ceil(cfg.bulk / cfg.bulk_chunk),
      define = { chunk = cfg.bulk_chunk } })
    runs.bulksql[rep] = b.processed * cfg.bulk_chunk / b.elapsed
    sql("TRUNCATE scheduler.jobs;")
    log("enqueue %d/%d: INSERT %s, schedule() %s, SQL schedule() %s, INSERT with trigger %s, "
      .. "schedule_many %s, bulk SQL %s", rep, R, fmt_rate(ins.tps), fmt_rate(runs.schedule[rep]),
      fmt_rate(runs.sqlsched[rep]), fmt_rate(runs.trigger[rep]),
      many_missing and "n/a" or fmt_rate(runs.many[rep]),
      fmt_rate(runs.bulksql[rep]))
  end
  local E = {}
  for k, v in pairs(runs) do E[k] = { rate = median(v), runs = v } end
  E.many.missing = many_missing or nil
  E.many.error = many_error
  results.enqueue = E
  local ratio = E.schedule.rate / E.insert.rate
  row("enqueue", "schedule() one at a time (durable)", fmt_rate(E.schedule.rate),
    ">= 90% of INSERT", fmt_pct(ratio) .. " of INSERT", met(ratio >= 0.9))
  row("enqueue", "pgbench single-row INSERT (durable)", fmt_rate(E.insert.rate), "", "")
  row("enqueue", "  SQL scheduler.schedule() via pgbench", fmt_rate(E.sqlsched.rate), "",
    fmt_pct(E.sqlsched.rate / E.insert.rate) .. " of INSERT")
  row("enqueue", "  INSERT into scheduler.jobs (wake-up trigger)", fmt_rate(E.trigger.rate), "",
    fmt_pct(E.trigger.rate / E.insert.rate) .. " of INSERT")
  if many_missing then
    row("enqueue", "schedule_many(list)", "n/a (API missing)", ">= 150,000", "", false)
  elseif many_error then
    row("enqueue", "schedule_many(list)", "error: " .. many_error:sub(1, 60), ">= 150,000", "", false)
  else
    row("enqueue", string.format("schedule_many(list), lists of %s", commas(cfg.bulk_chunk)),
      fmt_rate(E.many.rate), ">= 150,000", fmt_x(E.many.rate / 95000) .. " graphile bulk",
      met(E.many.rate >= 150000))
  end
  row("enqueue", string.format("bulk INSERT...SELECT in SQL, %s per statement",
    commas(cfg.bulk_chunk)), fmt_rate(E.bulksql.rate), "", "reference")
end

-- 5: start to first job, and memory.
local function section_startup()
  local R = cfg.reps
  local runs = {}
  for rep = 1, R do
    sql([[TRUNCATE scheduler.jobs;
      INSERT INTO scheduler.jobs (name, payload, run_at) VALUES ('bench_first', '{}', now());]])
    local t_spawn = now()
    local r = run_script("worker.lua", { "first", "name=bench_first", "seconds=10" })
    if r.t_first < 0 then die("startup: the due job did not run within 10 s") end
    -- the floor: the same spawn of a bare interpreter (with the small
    -- luasystem module for its clock)
    local t_bare = now()
    local p = assert(io.popen("exec " .. q(cfg.lua) .. " -e " ..
      q("io.write(string.format('%.6f', require('system').gettime()))"), "r"))
    local bare = tonumber(p:read("a"))
    p:close()
    -- and what loading the module costs: the C module (libpq and the
    -- libraries it links) and the Lua part
    p = assert(io.popen("exec " .. q(cfg.lua) .. " -e " .. q([[
      local g = require("system").gettime
      local t0 = g(); require "scheduler.core"; local t1 = g(); require "scheduler"; local t2 = g()
      io.write(string.format("%.6f %.6f", t1 - t0, t2 - t1))]]), "r"))
    local core_s, lua_s = p:read("a"):match("^(%S+) (%S+)")
    p:close()
    runs[rep] = { first_ms = (r.t_first - t_spawn) * 1000, loaded_ms = (r.t_loaded - t_spawn) * 1000,
      rss_kb = r.rss_kb, bare_ms = bare and (bare - t_bare) * 1000,
      require_core_ms = tonumber(core_s) and tonumber(core_s) * 1000,
      require_lua_ms = tonumber(lua_s) and tonumber(lua_s) * 1000 }
    log("startup %d/%d: first job after %.1f ms (module loaded after %.1f ms; a bare lua5.4 "
      .. "starts in %.1f ms), RSS %d kB", rep, R, runs[rep].first_ms, runs[rep].loaded_ms,
      runs[rep].bare_ms or -1, r.rss_kb)
  end
  local S = { first_ms = median(field(runs, "first_ms")), loaded_ms = median(field(runs, "loaded_ms")),
    bare_ms = median(field(runs, "bare_ms")), rss_kb = median(field(runs, "rss_kb")),
    require_core_ms = median(field(runs, "require_core_ms")),
    require_lua_ms = median(field(runs, "require_lua_ms")), runs = runs }
  results.startup = S
  row("worker", "process start to first job run", fmt_ms(S.first_ms), "<= 20 ms",
    fmt_x(S.first_ms / 20) .. " target", met(S.first_ms <= 20))
  row("worker", "  of which: interpreter start + require \"scheduler\"", fmt_ms(S.loaded_ms), "",
    "bare lua5.4: " .. fmt_ms(S.bare_ms))
  row("worker", "    require \"scheduler.core\" (C module, libpq + deps)", fmt_ms(S.require_core_ms), "", "")
  row("worker", "    require \"scheduler\" (Lua part)", fmt_ms(S.require_lua_ms), "", "")
  row("worker", "  of which: configure + connect + first claim", fmt_ms(S.first_ms - S.loaded_ms), "", "")
  row("worker", "peak RSS after the first job", string.format("%.1f MB", S.rss_kb / 1024), "", "")
  local T = results.throughput
  if T then
    local rss = T.workers_1.rss_kb / 1024
    row("worker", string.format("peak RSS draining %s jobs", commas(cfg.jobs)),
      string.format("%.1f MB", rss), "<= 10 MB", fmt_x(rss / 10) .. " target", met(rss <= 10))
  end
end

-- 6: scale: drain throughput and claim latency with few vs many future jobs.
local function section_scale()
  local R, D = cfg.reps, cfg.scale_due
  results.scale = {}
  for _, case in ipairs { { key = "small", F = cfg.scale_small }, { key = "big", F = cfg.scale_big } } do
    local F = case.F
    sql(string.format([[
      TRUNCATE scheduler.jobs;
      INSERT INTO scheduler.jobs (name, payload, run_at)
        SELECT '%s', '{}'::jsonb, now() + interval '1 hour' + g * interval '1 second'
        FROM generate_series(1, %d) g;
      ANALYZE scheduler.jobs;]], NOOP, F))
    local runs = {}
    for rep = 1, R do
      sql(string.format([[
        INSERT INTO scheduler.jobs (name, payload, run_at)
          SELECT '%s', '{}'::jsonb, now() - interval '1 second' FROM generate_series(1, %d);
        ANALYZE scheduler.jobs; CHECKPOINT;]], NOOP, D))
      runs[rep] = drain(1, D, { gaps = true })
      local future = count_jobs("name = '" .. NOOP .. "' AND state = 'scheduled'")
      if future ~= F then die("scale: %d future jobs expected, %d found", F, future) end
      log("scale %d/%d: %s future + %s due: %s, %.2f ms between batches", rep, R, commas(F),
        commas(D), fmt_rate(runs[rep].rate), runs[rep].gap_p50_ms)
    end
    -- the statements themselves: a full batch among F future jobs, then the
    -- empty claim and the wake-up query of an idle worker
    sql(string.format([[
      INSERT INTO scheduler.jobs (name, payload, run_at)
        SELECT '%s', '{}'::jsonb, now() - interval '1 second' FROM generate_series(1, %d);
      ANALYZE scheduler.jobs;]], NOOP, cfg.batch))
    local st = statement_costs()
    sql("DELETE FROM scheduler.jobs WHERE run_at <= now(); ANALYZE scheduler.jobs;")
    st.empty_claim, st.wake = explain_claim(cfg.batch, true), explain_wake()
    local C = {
      future = F, due = D, rate = median(field(runs, "rate")), runs = field(runs, "rate"),
      gap_p50_ms = median(field(runs, "gap_p50_ms")), avg_batch = median(field(runs, "avg_batch")),
      statements = st,
    }
    results.scale[case.key] = C
    log("scale: %s future: claim %s, empty claim %s, wake %s", commas(F),
      fmt_explain(st.claim), fmt_explain(st.empty_claim), fmt_explain(st.wake))
  end
  local S, B = results.scale.small, results.scale.big
  for _, k in ipairs { "small", "big" } do
    local C = results.scale[k]
    local st = C.statements
    local f = commas(C.future)
    row("scale", string.format("drain %s due among %s future jobs", commas(C.due), f),
      fmt_rate(C.rate), "", k == "big" and (fmt_pct(B.rate / S.rate) .. " of the small case") or "")
    row("scale", string.format("  pause between batches in the worker, %s future", f),
      fmt_ms(C.gap_p50_ms), "", string.format("batches of %.0f", C.avg_batch))
    row("scale", string.format("  claim (and delete) of %d, %s future", cfg.batch, f), fmt_explain(st.claim), "",
      "EXPLAIN: runs 1-5 / 6-10")
    row("scale", string.format("  empty claim, %s future", f), fmt_explain(st.empty_claim), "", "")
    row("scale", string.format("  wake-up query, %s future", f), fmt_explain(st.wake), "", "")
  end
  local ratio = B.rate / S.rate
  row("scale", string.format("throughput at %s vs %s future", commas(B.future), commas(S.future)),
    fmt_pct(ratio), ">= 80%", "", met(ratio >= 0.8))
end

-- 6b: table and index sizes around draining many due jobs, twice: the
-- second round shows whether the space is reused or the table keeps growing.
local function section_bloat()
  local B = cfg.bloat
  local rounds = {}
  sql("TRUNCATE scheduler.jobs; CHECKPOINT;")
  local empty = sizes()
  for i = 1, cfg.bloat_rounds do
    local t0 = now()
    sql(string.format([[
      INSERT INTO scheduler.jobs (name, payload, run_at)
        SELECT '%s', '{}'::jsonb, now() - interval '1 second' FROM generate_series(1, %d);
      ANALYZE scheduler.jobs; CHECKPOINT;]], NOOP, B))
    local insert_s = now() - t0
    local filled = sizes()
    local d = drain(1, B)
    local drained = sizes()
    -- Before the next round, give autovacuum (the table's own settings,
    -- the cluster's default naptime of 1 min) the time it takes in
    -- production to make the space of the drained rows reusable.
    -- A vacuum that started during the drain does not count: it leaves
    -- the dead rows of the drain's end (and their index entries) behind;
    -- wait for one that ended after it and left few dead rows.
    local vacuumed_after
    if i < cfg.bloat_rounds and cfg.vacuum_wait > 0 then
      local t1 = now()
      while now() - t1 < cfg.vacuum_wait do
        sleep(1)
        local since = sql_row(string.format([[
          SELECT greatest(last_autovacuum, last_vacuum) > to_timestamp(%.6f)
            AND n_dead_tup < 10000
          FROM pg_stat_user_tables WHERE relid = 'scheduler.jobs'::regclass]], t1))
        if since[1] == "t" then
          vacuumed_after = now() - t1
          break
        end
      end
    end
    rounds[i] = { filled = filled, drained = drained, rate = d.rate, rss_kb = d.rss_kb,
      insert_seconds = insert_s, vacuumed_after = vacuumed_after }
    log("bloat round %d: %s jobs inserted in %.1f s, drained at %s; total size %s -> %s",
      i, commas(B), insert_s, fmt_rate(d.rate), fmt_mb(filled.total), fmt_mb(drained.total))
  end
  sql("VACUUM scheduler.jobs;")
  local vacuumed = sizes()
  results.bloat = { jobs = B, empty = empty, rounds = rounds, after_vacuum = vacuumed }
  for i, r in ipairs(rounds) do
    row("bloat", string.format("round %d: %s due jobs: heap / indexes", i, commas(B)),
      fmt_mb(r.filled.heap) .. " / " .. fmt_mb(r.filled.indexes), "", "")
    row("bloat", string.format("round %d: drained (%s): heap / indexes", i, fmt_rate(r.rate)),
      fmt_mb(r.drained.heap) .. " / " .. fmt_mb(r.drained.indexes), "",
      r.drained.dead_tuples and string.format("%s dead tuples", commas(r.drained.dead_tuples)) or "")
    if i < #rounds and cfg.vacuum_wait > 0 then
      row("bloat", string.format("autovacuum after round %d", i),
        r.vacuumed_after and string.format("after %.0f s", r.vacuumed_after)
          or string.format("not within %d s", cfg.vacuum_wait), "", "")
    end
  end
  -- A btree page emptied by a vacuum is reused only after the next one, so
  -- the indexes can reach twice the size of one round's, in round 2 or 3
  -- (as the vacuums fall); bounded means the last round no larger than the
  -- one before it, or the indexes at most twice round 1's.
  if #rounds >= 2 then
    row("bloat", string.format("size after round %d vs round 1", #rounds),
      fmt_x(rounds[#rounds].drained.total / rounds[1].drained.total), "", "")
  end
  if #rounds >= 3 then
    local last, first = rounds[#rounds].drained, rounds[1].drained
    local g = last.total / rounds[#rounds - 1].drained.total
    local twice = last.indexes <= 2.05 * first.indexes and last.heap <= 1.1 * first.heap
    row("bloat", string.format("size after round %d vs round %d", #rounds, #rounds - 1), fmt_x(g),
      "~1.0x, or indexes <= 2x round 1", twice and string.format("indexes %s round 1",
        fmt_x(last.indexes / first.indexes)) or "", met(g <= 1.1 or twice))
  end
  row("bloat", "after a plain VACUUM: heap / indexes",
    fmt_mb(vacuumed.heap) .. " / " .. fmt_mb(vacuumed.indexes), "", "")
end

---------------------------------------------------------------------------
-- main
---------------------------------------------------------------------------

local function first_line_of(path, pattern)
  local s = read_file(path) or ""
  return s:match(pattern)
end

local function meta()
  local cpus = 0
  for _ in (read_file("/proc/cpuinfo") or ""):gmatch("\nprocessor%s*:") do cpus = cpus + 1 end
  if (read_file("/proc/cpuinfo") or ""):match("^processor") then cpus = cpus + 1 end
  local git = capture("git -C " .. q(ROOT) .. " rev-parse --short HEAD"):gsub("%s+$", "")
  local dirty = capture("git -C " .. q(ROOT) .. " status --porcelain -- csrc lua"):match("%S") ~= nil
  local settings = sql_row [[SELECT current_setting('server_version'), current_setting('shared_buffers'),
    current_setting('synchronous_commit'), current_setting('fsync'), current_setting('wal_sync_method')]]
  return {
    date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    host = (read_file("/proc/sys/kernel/hostname") or "?"):gsub("%s+$", ""),
    cpu = first_line_of("/proc/cpuinfo", "model name%s*:%s*([^\n]+)"),
    cpus = cpus,
    mem_gb = math.floor((tonumber(first_line_of("/proc/meminfo", "MemTotal:%s*(%d+)")) or 0) / 1048576 + 0.5),
    kernel = (read_file("/proc/sys/kernel/osrelease") or "?"):gsub("%s+$", ""),
    loadavg_start = (read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)"),
    postgresql = settings[1], shared_buffers = settings[2], synchronous_commit = settings[3],
    fsync = settings[4], wal_sync_method = settings[5],
    connection = "Unix socket, same host",
    lua = _VERSION, scheduler = scheduler._VERSION,
    git = git .. (dirty and " (with uncommitted changes in csrc/ or lua/)" or ""),
    smoke = cfg.smoke, reps = cfg.reps, note = cfg.note ~= "" and cfg.note or nil,
    sizes = { jobs = cfg.jobs, batch = cfg.batch, lateness_samples = cfg.lat_samples,
      enqueue = cfg.enqueue, bulk = cfg.bulk, bulk_chunk = cfg.bulk_chunk,
      scale_small = cfg.scale_small, scale_big = cfg.scale_big, scale_due = cfg.scale_due,
      bloat = cfg.bloat, wait_jobs = cfg.wait_jobs, wait_concurrency = cfg.wait_concurrency,
      graphile_jobs = cfg.graphile_jobs, limit_jobs = cfg.limit_jobs,
      parts_jobs = cfg.parts_jobs, parts_workers = cfg.parts_workers, rate_jobs = cfg.rate_jobs,
      fair_jobs = cfg.fair_jobs },
  }
end

local function setup()
  if cfg.baseline then
    -- its own database, whose schema its module creates
    BASELINE_DB = "bench_baseline"
    sql("DROP DATABASE IF EXISTS bench_baseline")
    sql("CREATE DATABASE bench_baseline")
    local dsn = need_env("LUA_SCHEDULER_DATABASE")
    local base_dsn = dsn:gsub("dbname=%S+", "dbname=" .. BASELINE_DB)
    if base_dsn == dsn then die("--baseline: cannot find dbname= in LUA_SCHEDULER_DATABASE") end
    BASELINE_ENV = table.concat({
      q("LUA_PATH=" .. cfg.baseline .. "/lua/?.lua;" .. cfg.baseline .. "/lua/?/init.lua;;"),
      q("LUA_CPATH=" .. cfg.baseline .. "/build/?.so;;"),
      q("LUA_SCHEDULER_DATABASE=" .. base_dsn), q("PGDATABASE=" .. BASELINE_DB) }, " ")
    local out, ok = capture("env " .. BASELINE_ENV .. " " .. q(cfg.lua)
      .. " -e 'assert(require(\"scheduler\").new{ log = \"warn\" }:job(0) == nil)'")
    if not ok then die("--baseline: its module could not create its schema:\n%s", out) end
    -- `make bench BASELINE=REV` notes the revision it exported there
    BASELINE_REV = (read_file(cfg.baseline .. "/.rev") or cfg.baseline):gsub("%s+$", "")
  end
  -- the scheduler's schema (created on first use), then a copy of its
  -- table for pgbench
  local s <close> = scheduler.new { log = "warn" }
  assert(s:job(0) == nil)
  sql [[
    CREATE SCHEMA IF NOT EXISTS bench;
    DROP TABLE IF EXISTS bench.jobs;
    CREATE TABLE bench.jobs (LIKE scheduler.jobs INCLUDING ALL);
    TRUNCATE scheduler.jobs;]]
  local _, ok = capture(q(PSQL) .. " -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION IF NOT EXISTS pgstattuple'")
  HAVE_PGSTATTUPLE = ok and true or false
end

local function print_table()
  local head = { "measurement", "value", "target", "ratio", "met?" }
  local lines, w = {}, { 0, 0, 0, 0, 0 }
  for _, r in ipairs(rows) do
    local m = r.met == true and "yes" or r.met == false and "NO" or ""
    local cells = { r.measurement, r.value, r.target, r.ratio, m }
    lines[#lines + 1] = cells
    for i, c in ipairs(cells) do w[i] = math.max(w[i], utf8.len(c) or #c) end
  end
  for i, h in ipairs(head) do w[i] = math.max(w[i], #h) end
  local function fmt(cells)
    local out = {}
    for i, c in ipairs(cells) do
      local pad = w[i] - (utf8.len(c) or #c)
      out[i] = (i == 2 and string.rep(" ", pad) .. c) or (c .. string.rep(" ", pad))
    end
    return "| " .. table.concat(out, " | ") .. " |"
  end
  local sep = {}
  for i = 1, #w do sep[i] = string.rep("-", w[i]) end
  local M = results.meta
  print()
  print(string.format("lua-scheduler benchmark, %s, %s (%s), %d CPUs, %d GB, PostgreSQL %s (fsync %s, "
    .. "synchronous_commit %s), load %s", M.date, M.host, M.cpu or "?", M.cpus, M.mem_gb, M.postgresql,
    M.fsync, M.synchronous_commit, M.loadavg_start or "?"))
  print(string.format("%s; %s; %s%s", M.scheduler, M.git,
    cfg.smoke and "SMOKE run (tiny sizes, numbers mean nothing)" or
      string.format("medians of %d repetitions", cfg.reps),
    M.note and ("; note: " .. M.note) or ""))
  print()
  print(fmt(head))
  print("|-" .. table.concat(sep, "-|-") .. "-|")
  for _, l in ipairs(lines) do print(fmt(l)) end
end

local ok, err = xpcall(function()
  setup()
  results.meta = meta()
  log("benchmark: %s, reps %d", cfg.smoke and "smoke" or "full", cfg.reps)
  if wanted("throughput") then section_throughput() end
  if wanted("lateness") then section_lateness() end
  if wanted("enqueue") then section_enqueue() end
  if wanted("startup") then section_startup() end
  if wanted("scale") then section_scale() end
  if wanted("bloat") then section_bloat() end
  if wanted("wait_timer") or wanted("wait_http") then
    local waiting = dofile(BENCH .. "/concurrent.lua") {
      cfg = cfg, results = results, BENCH = BENCH, ROOT = ROOT, TMP = TMP, PSQL = PSQL,
      on_cleanup = function(fn) on_cleanup[#on_cleanup + 1] = fn end,
      sql = sql, count_jobs = count_jobs, fill_due = fill_due, capture = capture, q = q,
      expect = expect, parse_result = parse_result, finish = finish, die = die,
      read_file = read_file, write_file = write_file, sleep = sleep, now = now, log = log,
      row = row, met = met, median = median, field = field, commas = commas,
      fmt_rate = fmt_rate, fmt_pct = fmt_pct, fmt_x = fmt_x,
    }
    if wanted("wait_timer") then waiting.wait_timer() end
    if wanted("wait_http") then waiting.wait_http() end
  end
  if wanted("limits") or wanted("limit_parts") or wanted("rate") or wanted("fairness") then
    local limits = dofile(BENCH .. "/limits.lua") {
      cfg = cfg, results = results, BENCH = BENCH, TMP = TMP, scheduler = scheduler,
      sql = sql, count_jobs = count_jobs, fill_due = fill_due, q = q, expect = expect,
      parse_result = parse_result, finish = finish, die = die, read_file = read_file,
      write_file = write_file, log = log, row = row, met = met, median = median, commas = commas,
      fmt_pct = fmt_pct,
    }
    if wanted("limits") then limits.limits() end
    if wanted("limit_parts") then limits.limit_parts() end
    if wanted("rate") then limits.rate() end
    if wanted("fairness") then limits.fairness() end
  end
end, debug.traceback)
if not ok then die("%s", tostring(err)) end

results.meta.loadavg_end = (read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")
results.meta.seconds = now() - START_TIME
print_table()
write_file(cfg.json, json(results) .. "\n")
print()
print(string.format("%d rows; results written to %s; took %.0f s", #rows, cfg.json, results.meta.seconds))
cleanup()
