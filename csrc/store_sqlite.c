/*
 * store_sqlite.c: the SQLite backend.  Every SQL string of the project's
 * SQLite side lives here: the schema migrations and the statements of the
 * store interface.  Same semantics as store_pg.c (see README "Guarantees"),
 * for one host: one database file shared by any number of processes, or an
 * in-process memory database.
 *
 * Design:
 * - the tables are scheduler_jobs, scheduler_crons, scheduler_completions
 *   and scheduler_migrations (prefixed, so the file may also hold an
 *   application's own tables).
 *   Times are Unix seconds as REAL on the host clock (CLOCK_REALTIME), which
 *   is "the database clock" of a one-host database; C reads the clock and
 *   binds it, SQL never calls julianday() (milliseconds only).
 * - a job is 'scheduled', 'running' (leased until locked_until) or 'failed';
 *   a claim increments `attempt` and gets a token (claim) that every later
 *   write about that run is fenced on, as on PostgreSQL; crashes are
 *   charged by the rule of store.h (claim).
 * - durability: WAL journal with synchronous=FULL: a transaction is on disk
 *   (fsync of the WAL) when COMMIT returns, so schedule() returns an id only
 *   for a job that survives a crash of the process, of the OS or power loss.
 * - concurrency: every write is one short BEGIN IMMEDIATE transaction (the
 *   write lock is taken up front, so a transaction never fails half-way with
 *   SQLITE_BUSY_SNAPSHOT), and no Lua runs inside one.  Readers never block
 *   in WAL mode.  A busy handler that polls every fraction of a millisecond
 *   waits for the lock up to BUSY_TIMEOUT, so SQLITE_BUSY never reaches
 *   callers while the lock holders are lua-scheduler processes; after a
 *   write, a writer that sees another process waiting for the lock pauses
 *   until that process got it (see yield_to_waiters), so a busy producer
 *   never starves a worker's claim.
 * - wake-ups: there is no LISTEN/NOTIFY.  Writes that make a job runnable
 *   (schedule, retry, a retried or handed-back job, a rescued lease, a cron
 *   slot, a recurring schedule declared or moved) "ring" the side file
 *   <db>-wake after COMMIT by reading one byte of it; run() watches that
 *   file with inotify (IN_ACCESS), so an idle worker sleeps in poll() and
 *   wakes within a millisecond of a commit by another process, with no
 *   polling.  `PRAGMA data_version` then tells whether another connection
 *   changed anything, and if so indexed queries per listener name give the
 *   earliest run_at and next slot.  Programs that write the file
 *   without this library are seen at the loop's fallback check (15 s).
 *   Others may be able to create files in the database's directory, so the
 *   wake file is checked before it is used, and is never a way to make a
 *   worker write or chown a file that is not the wake file (see open_wake).
 * - sqlite::memory: uses SQLite's memdb VFS with a name shared by the
 *   store's connections (the heartbeat thread opens its own), so an
 *   in-memory database works across the two threads; it lives as long as a
 *   connection to it is open, which is why disconnect() keeps it.
 * - NUL bytes in names, keys and payloads are refused like on PostgreSQL,
 *   so a program behaves the same on both backends.
 */
#define _GNU_SOURCE /* F_OFD_SETLK (Linux open file description locks) */
#include "store_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/inotify.h>
#endif

#include "clock.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* Seconds a statement waits for another connection's write lock before it
 * gives up with an error.  lua-scheduler holds the lock for milliseconds;
 * only another program's long transaction can reach this. */
#define BUSY_TIMEOUT 30.0
/* The side file whose reads wake sleeping workers. */
#define WAKE_SUFFIX "-wake"
/* After a checkpoint the WAL file is cut back to this size. */
#define WAL_SIZE_LIMIT "67108864"

/* ------------------------------------------------------------------ */
/* Schema                                                              */

/* The partition of job `j` for a limit by `by` (store.h, limit:
 * PARTITIONS): its key, or a top-level payload field as text ('$."by"':
 * by has no '"' or '\\', store_check_by), "" when it has none. */
#define PART(j, by)                                                                          \
  "CASE WHEN " by " = 'key' THEN coalesce(" j ".key, '') ELSE coalesce(CAST(CASE WHEN"      \
  " json_valid(" j ".payload) THEN json_extract(" j ".payload, '$.\"' || " by " || '\"')"   \
  " END AS TEXT), '') END"

/* Versions match store_pg.c's: the same number means the same features. */
static const char *const migrations[] = {
    /* 1: jobs.  AUTOINCREMENT: an id is never reused, so job(id) of a
     * finished job stays nil and (id, attempt) fences stay unique.  The
     * defaults let other programs insert a job with plain SQL. */
    "CREATE TABLE scheduler_jobs ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL CHECK (name <> ''),"
    "  payload TEXT,"
    "  run_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),"
    "  priority INTEGER NOT NULL DEFAULT 0 CHECK (priority >= 0),"
    "  attempt INTEGER NOT NULL DEFAULT 0,"
    "  max_attempts INTEGER CHECK (max_attempts >= 1),"
    "  state TEXT NOT NULL DEFAULT 'scheduled'"
    "    CHECK (state IN ('scheduled', 'running', 'failed')),"
    "  key TEXT,"
    "  locked_by TEXT,"
    "  locked_until REAL,"
    "  last_error TEXT,"
    "  created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)"
    ");"
    /* claim order among due jobs */
    "CREATE INDEX scheduler_jobs_due ON scheduler_jobs (priority, run_at, id)"
    "  WHERE state = 'scheduled';"
    /* next due job per listener name (the worker's wake-up time) */
    "CREATE INDEX scheduler_jobs_wake ON scheduler_jobs (name, run_at)"
    "  WHERE state = 'scheduled';"
    /* expired leases */
    "CREATE INDEX scheduler_jobs_lease ON scheduler_jobs (locked_until)"
    "  WHERE state = 'running';"
    /* at most one unfinished job per key */
    "CREATE UNIQUE INDEX scheduler_jobs_key ON scheduler_jobs (key)"
    "  WHERE key IS NOT NULL AND state <> 'failed';",
    /* 2: recurring schedules; next_at advances by compare-and-set. */
    "CREATE TABLE scheduler_crons ("
    "  id TEXT PRIMARY KEY,"
    "  expr TEXT NOT NULL,"
    "  tz TEXT NOT NULL,"
    "  name TEXT NOT NULL CHECK (name <> ''),"
    "  payload TEXT,"
    "  priority INTEGER NOT NULL DEFAULT 0 CHECK (priority >= 0),"
    "  max_attempts INTEGER CHECK (max_attempts >= 1),"
    "  catch_up INTEGER NOT NULL DEFAULT 1,"
    "  backfill REAL,"
    "  next_at REAL NOT NULL,"
    "  fired_at REAL,"
    "  updated_at REAL NOT NULL"
    ");"
    "CREATE INDEX scheduler_crons_next ON scheduler_crons (name, next_at);",
    /* 3: completions per second (Unix) and name, for stats' throughput.
     * The worker that records a batch's outcomes adds the batch's count
     * per name (one upsert per name and batch, in the same transaction;
     * SQLite has only row triggers, which would cost a write per job); a
     * new bucket prunes those older than two minutes, so the table stays a
     * few pages. */
    "CREATE TABLE scheduler_completions ("
    "  second INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  jobs INTEGER NOT NULL,"
    "  PRIMARY KEY (second, name)"
    ") WITHOUT ROWID;"
    "CREATE TRIGGER scheduler_completions_prune AFTER INSERT ON scheduler_completions BEGIN"
    "  DELETE FROM scheduler_completions WHERE second < NEW.second - 120;"
    "END;",
    /* 4: crashes recorded, not inferred (store.h, claim).  claim: the token
     * of the claim that leases a job, from the one-row counter
     * scheduler_claim_tokens (leases taken before this migration get the
     * negative of their id, which the counter never gives); quarantined:
     * the job came back from a batch whose worker died, and runs alone. */
    "ALTER TABLE scheduler_jobs ADD COLUMN claim INTEGER;"
    "ALTER TABLE scheduler_jobs ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;"
    "UPDATE scheduler_jobs SET claim = -id WHERE state = 'running';"
    "CREATE TABLE scheduler_claim_tokens (last INTEGER NOT NULL);"
    "INSERT INTO scheduler_claim_tokens (last) VALUES (0);"
    "CREATE INDEX scheduler_jobs_quarantine ON scheduler_jobs (priority, run_at, id)"
    "  WHERE quarantined AND state = 'scheduled';"
    /* cancel() of a job a worker leases and has not started: its request,
     * and the worker's answer (see sq_cancel) */
    "CREATE TABLE scheduler_cancels ("
    "  job_id INTEGER PRIMARY KEY,"
    "  verdict TEXT CHECK (verdict IN ('cancelled', 'started')),"
    "  at REAL NOT NULL"
    ");",
    /* 5: suspects: how many jobs were in the crash a quarantined job came
     * back from; a concurrent worker runs half as many together (store.h,
     * claim_leased: by halves). */
    "ALTER TABLE scheduler_jobs ADD COLUMN suspects INTEGER;",
    /* 6: who declared a recurring schedule (store.h, store_cron.owner):
     * the owner tag of the listener files, or NULL for code (every
     * schedule declared before this migration too). */
    "ALTER TABLE scheduler_crons ADD COLUMN owner TEXT;",
    /* 7: paused job names (store.h, pause): the claims skip their jobs. */
    "CREATE TABLE scheduler_paused ("
    "  name TEXT PRIMARY KEY,"
    "  at REAL NOT NULL"
    ");",
    /* 8: history (store_outcome.keep): the finished jobs one write kept
     * (a batch's outcomes, a cancel), one row, in a table of their own,
     * so that the jobs table, its indexes and the claims are the same with
     * history on or off.  jobs: a JSON array of one array per job, as
     * PostgreSQL's (store_pg_history.c): [id, name, key, payload, state,
     * attempt, priority, started_at, duration, last_error, keep]; worker:
     * who ran them; min_id, max_id: the range of their ids (job(id));
     * kept_until: the latest expiry among them (pruning). */
    "CREATE TABLE scheduler_history ("
    "  min_id INTEGER NOT NULL,"
    "  max_id INTEGER NOT NULL,"
    "  finished_at REAL NOT NULL,"
    "  kept_until REAL NOT NULL,"
    "  worker TEXT,"
    "  jobs TEXT NOT NULL"
    ");"
    "CREATE INDEX scheduler_history_ids ON scheduler_history (max_id);"
    "CREATE INDEX scheduler_history_finished ON scheduler_history (finished_at);"
    "CREATE INDEX scheduler_history_kept ON scheduler_history (kept_until);",
    /* 9: concurrency limits (store.h, limit): at most `concurrency` jobs
     * of the name running at once, all workers together (claims count
     * them inside their write transaction: see load_limits). */
    "CREATE TABLE scheduler_limits ("
    "  name TEXT PRIMARY KEY,"
    "  concurrency INTEGER NOT NULL CHECK (concurrency >= 1),"
    "  at REAL NOT NULL"
    ");",
    /* 10: partitions of a limit (store.h, limit: PARTITIONS): by NULL,
     * the whole name; "key", the job's key; else a top-level payload
     * field (PART reads it from the job at claim time).  turn: the
     * partition a claim took its last job from (round-robin from there). */
    "ALTER TABLE scheduler_limits ADD COLUMN by TEXT; ALTER TABLE scheduler_limits ADD COLUMN turn TEXT;",
    /* 11: counters for metrics (store.h, totals).  Completions: the
     * buckets older than two minutes are merged into the bucket of second
     * 0 (one per name) instead of dropped, so a name's sum is its count
     * ever.  Failures: a counter per name, which a trigger adds to when a
     * job fails for good (every failure is an UPDATE here; WHEN keeps the
     * trigger from running for any other row). */
    "DROP TRIGGER scheduler_completions_prune;"
    "CREATE TRIGGER scheduler_completions_prune AFTER INSERT ON scheduler_completions"
    "  WHEN NEW.second > 0 BEGIN"
    "  INSERT INTO scheduler_completions (second, name, jobs)"
    "    SELECT 0, name, sum(jobs) FROM scheduler_completions"
    "    WHERE second > 0 AND second < NEW.second - 120 GROUP BY name"
    "    ON CONFLICT (second, name) DO UPDATE SET jobs = jobs + excluded.jobs;"
    "  DELETE FROM scheduler_completions WHERE second > 0 AND second < NEW.second - 120;"
    "END;"
    "CREATE TABLE scheduler_failures ("
    "  name TEXT PRIMARY KEY,"
    "  jobs INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TRIGGER scheduler_jobs_failed AFTER UPDATE OF state ON scheduler_jobs"
    "  WHEN NEW.state = 'failed' AND OLD.state <> 'failed' BEGIN"
    "  INSERT INTO scheduler_failures (name, jobs) VALUES (NEW.name, 1)"
    "    ON CONFLICT (name) DO UPDATE SET jobs = jobs + 1;"
    "END;"
    /* listener durations (store.h, durations), counted from history rows
     * once each, kept apart so that pruning takes nothing from them */
    "ALTER TABLE scheduler_history ADD COLUMN counted INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX scheduler_history_uncounted ON scheduler_history (counted) WHERE counted = 0;"
    "CREATE TABLE scheduler_durations ("
    "  name TEXT NOT NULL,"
    "  bucket INTEGER NOT NULL,"
    "  jobs INTEGER NOT NULL,"
    "  seconds REAL NOT NULL,"
    "  PRIMARY KEY (name, bucket)"
    ") WITHOUT ROWID;",
    /* 12: start lateness for metrics (store.h, durations): counted from
     * the same history rows into the same table, its rows told apart by
     * kind (the rows before: durations); a key of its own, so rebuilt */
    "CREATE TABLE scheduler_durations_new ("
    "  kind TEXT NOT NULL CHECK (kind IN ('duration', 'lateness')),"
    "  name TEXT NOT NULL,"
    "  bucket INTEGER NOT NULL,"
    "  jobs INTEGER NOT NULL,"
    "  seconds REAL NOT NULL,"
    "  PRIMARY KEY (name, kind, bucket)"
    ") WITHOUT ROWID;"
    "INSERT INTO scheduler_durations_new (kind, name, bucket, jobs, seconds)"
    "  SELECT 'duration', name, bucket, jobs, seconds FROM scheduler_durations;"
    "DROP TABLE scheduler_durations;"
    "ALTER TABLE scheduler_durations_new RENAME TO scheduler_durations;",
    /* 13: rate limits (store.h, limit: RATES): a limit has a concurrency,
     * a rate (rate claims per `per` seconds) or both; tat is its bucket
     * (GCRA: the theoretical arrival time, Unix seconds; NULL: full),
     * moved by the claims inside their write transaction (see
     * load_limits); a partitioned rate's buckets are rows of
     * scheduler_limit_rates (see part_pick).  concurrency may now be NULL: SQLite alters no
     * constraint, so the table is made again. */
    "CREATE TABLE scheduler_limits_new ("
    "  name TEXT PRIMARY KEY,"
    "  concurrency INTEGER CHECK (concurrency >= 1),"
    "  at REAL NOT NULL,"
    "  by TEXT,"
    "  turn TEXT,"
    "  rate INTEGER CHECK (rate >= 1),"
    "  per REAL CHECK (per > 0),"
    "  tat REAL,"
    "  CHECK (concurrency IS NOT NULL OR rate IS NOT NULL),"
    "  CHECK ((rate IS NULL) = (per IS NULL))"
    ");"
    "INSERT INTO scheduler_limits_new (name, concurrency, at, by, turn)"
    "  SELECT name, concurrency, at, by, turn FROM scheduler_limits;"
    "DROP TABLE scheduler_limits;"
    "ALTER TABLE scheduler_limits_new RENAME TO scheduler_limits;"
    /* the buckets of a partitioned rate, one per partition (no row, or a
     * tat past: full), gone with their limit */
    "CREATE TABLE scheduler_limit_rates ("
    "  name TEXT NOT NULL,"
    "  part TEXT NOT NULL,"
    "  tat REAL NOT NULL,"
    "  PRIMARY KEY (name, part)"
    ") WITHOUT ROWID;"
    "CREATE TRIGGER scheduler_limits_gone AFTER DELETE ON scheduler_limits BEGIN"
    "  DELETE FROM scheduler_limit_rates WHERE name = OLD.name;"
    "END;",
    /* 14: the partition kept with the job (store.h, limit: PARTITIONS), so
     * that a claim reads a partitioned name's partitions by index
     * (Q_PART_PICK) instead of numbering every due job: part is PART of
     * the job under its name's `by` (never NULL then), NULL for a name
     * whose limit has no `by` or that has none.  The index is partial, so
     * an unlimited name's insert writes nothing more.  Set by triggers
     * (PART_TRIGGERS), so that every insert is covered (schedule,
     * schedule_many, cron, other programs' plain SQL), which exist only
     * while a limit has a `by` (part_triggers): a row trigger costs every
     * insert some 2 us of CPU, WHEN or not (a third more than the insert
     * without it).
     * sq_limit_set rewrites part when `by` changes, in its write
     * transaction. */
    "ALTER TABLE scheduler_jobs ADD COLUMN part TEXT;"
    "UPDATE scheduler_jobs SET part = (SELECT " PART("scheduler_jobs", "l.by")
    "  FROM scheduler_limits l WHERE l.name = scheduler_jobs.name)"
    " WHERE name IN (SELECT name FROM scheduler_limits WHERE by IS NOT NULL);"
    "CREATE INDEX scheduler_jobs_part ON scheduler_jobs (name, part, priority, run_at, id)"
    "  WHERE state = 'scheduled' AND part IS NOT NULL;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* The triggers that keep scheduler_jobs.part (migration 14) while some
 * limit has a `by` (part_triggers): at every insert (WHEN: a job of a
 * partitioned name that has none yet), and when another program rewrites
 * a job's key or payload (the library never does: an UPDATE that sets
 * neither does not run it). */
#define PART_TRIGGER_SET                                                                     \
  " BEGIN UPDATE scheduler_jobs SET part = (SELECT " PART("NEW", "l.by")                    \
  "  FROM scheduler_limits l WHERE l.name = NEW.name) WHERE id = NEW.id; END;"
#define PART_TRIGGERS                                                                        \
  "CREATE TRIGGER IF NOT EXISTS scheduler_jobs_part_insert AFTER INSERT ON scheduler_jobs"   \
  "  WHEN NEW.part IS NULL AND EXISTS (SELECT 1 FROM scheduler_limits l"                     \
  "   WHERE l.name = NEW.name AND l.by IS NOT NULL)" PART_TRIGGER_SET                        \
  "CREATE TRIGGER IF NOT EXISTS scheduler_jobs_part_update"                                  \
  "  AFTER UPDATE OF key, payload ON scheduler_jobs WHEN EXISTS (SELECT 1"                   \
  "   FROM scheduler_limits l WHERE l.name = NEW.name AND l.by IS NOT NULL)" PART_TRIGGER_SET
#define PART_TRIGGERS_DROP                                                                   \
  "DROP TRIGGER IF EXISTS scheduler_jobs_part_insert;"                                       \
  "DROP TRIGGER IF EXISTS scheduler_jobs_part_update;"

/* ------------------------------------------------------------------ */
/* Statements (prepared lazily, once per connection)                   */

enum {
  Q_BEGIN, Q_COMMIT, Q_ROLLBACK, Q_DATA_VERSION, Q_SYNC_NORMAL, Q_SYNC_FULL,
  Q_KEY_FIND, Q_INSERT, Q_CANCEL, Q_CANCEL_LOOK, Q_CANCEL_ASK, Q_CANCEL_END, Q_ASKED,
  Q_IS_ASKED, Q_VERDICT, Q_DROP_ASKED, Q_RETRY, Q_GET,
  Q_NEXT_PRIORITY, Q_DUE, Q_QUARANTINED, Q_TOKEN, Q_TAKE, Q_DONE_NAME, Q_DONE, Q_COMPLETED, Q_AGAIN, Q_BACK, Q_HEARTBEAT,
  Q_ANY_EXPIRED, Q_SUSPECTS_EXPIRED, Q_SUSPECTS_OF, Q_RESCUE, Q_ABANDON,
  Q_WAKE_DUE, Q_WAKE_LATER, Q_WAKE_LEASE, Q_WAKE_CRON,
  Q_CRON_GET, Q_CRON_INSERT, Q_CRON_UPDATE, Q_CRON_REMOVE, Q_CRON_LIST, Q_CRON_DUE,
  Q_CRON_CAS, Q_CRON_ROW, Q_LIST, Q_STATS, Q_FAILED, Q_RETRY_FAILED, Q_REMOVE,
  Q_PAUSE, Q_RESUME, Q_PAUSED, Q_SNOOZE,
  Q_HIST_KEEP, Q_HIST_CANCEL, Q_HIST_LIST, Q_PRUNE,
  Q_LIMIT, Q_UNLIMIT, Q_LIMIT_BY, Q_PART_SET, Q_LIMITS, Q_PART_PICK, Q_PART_FULL, Q_PART_TURN,
  Q_RATE_TAKE, Q_RATE_PART, Q_RATE_PRUNE, Q_RATE_NEXT_PART,
  Q_TOTALS, Q_DURATIONS_COUNT, Q_DURATIONS_DONE, Q_DURATIONS, Q_COUNT
};

#define JOB_COLUMNS "id, name, payload, run_at, attempt, max_attempts, key, priority"

#define CRON_COLUMNS                                                                  \
  "id, expr, tz, name, payload, priority, max_attempts, catch_up, backfill, next_at, owner"

static const char *const queries[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_DATA_VERSION] = "PRAGMA data_version",
    [Q_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
    [Q_SYNC_FULL] = "PRAGMA synchronous = FULL",
    /* "key IS NOT NULL AND state <> 'failed'": the partial unique index */
    [Q_KEY_FIND] = "SELECT id FROM scheduler_jobs"
                   " WHERE key = ?1 AND key IS NOT NULL AND state <> 'failed'",
    [Q_INSERT] = "INSERT INTO scheduler_jobs"
                 " (name, payload, run_at, key, priority, max_attempts, created_at)"
                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_CANCEL] = "DELETE FROM scheduler_jobs WHERE id = ?1 AND state = 'scheduled'",
    /* cancel() of a leased job: its state and the worker's answer */
    [Q_CANCEL_LOOK] = "SELECT j.state, c.verdict FROM (SELECT ?1 AS id) AS x"
                      " LEFT JOIN scheduler_jobs j ON j.id = x.id"
                      " LEFT JOIN scheduler_cancels c ON c.job_id = x.id",
    [Q_CANCEL_ASK] = "INSERT INTO scheduler_cancels (job_id, at) VALUES (?1, ?2)"
                     " ON CONFLICT (job_id) DO NOTHING",
    [Q_CANCEL_END] = "DELETE FROM scheduler_cancels WHERE job_id = ?1",
    [Q_ASKED] = "SELECT job_id FROM scheduler_cancels WHERE verdict IS NULL",
    [Q_IS_ASKED] = "SELECT 1 FROM scheduler_cancels WHERE job_id = ?1 AND verdict IS NULL",
    [Q_VERDICT] = "UPDATE scheduler_cancels SET verdict = ?2 WHERE job_id = ?1 AND verdict IS NULL",
    /* leases that rescue (?1 now) or abandon (?1 worker) give back: the
     * asked-for ones are dropped instead (see sq_cancel) */
    [Q_DROP_ASKED] = "DELETE FROM scheduler_jobs WHERE state = 'running'"
                     " AND ((?1 IS NOT NULL AND locked_until < ?1) OR locked_by = ?2)"
                     " AND id IN (SELECT job_id FROM scheduler_cancels WHERE verdict IS NULL)"
                     " RETURNING id",
    [Q_RETRY] = "UPDATE scheduler_jobs SET state = 'scheduled', run_at = ?2, attempt = 0"
                " WHERE id = ?1 AND state = 'failed'",
    [Q_GET] = "SELECT " JOB_COLUMNS ", state, last_error FROM scheduler_jobs WHERE id = ?1",
    /* Claims walk the distinct priorities (an index seek each), then take
     * each priority's due range in (run_at, id) order: future jobs are
     * never scanned. */
    [Q_NEXT_PRIORITY] = "SELECT min(priority) FROM scheduler_jobs"
                        " WHERE state = 'scheduled' AND priority > ?1",
    [Q_DUE] = "SELECT " JOB_COLUMNS " FROM scheduler_jobs INDEXED BY scheduler_jobs_due"
              " WHERE state = 'scheduled' AND priority = ?1 AND run_at <= ?2"
              "  AND NOT quarantined ORDER BY run_at, id",
    /* quarantined jobs are claimed alone, first (store.h, claim) */
    [Q_QUARANTINED] = "SELECT " JOB_COLUMNS ", suspects FROM scheduler_jobs"
                      " INDEXED BY scheduler_jobs_quarantine"
                      " WHERE quarantined AND state = 'scheduled' AND run_at <= ?1"
                      " ORDER BY priority, run_at, id",
    [Q_TOKEN] = "UPDATE scheduler_claim_tokens SET last = last + 1 RETURNING last",
    [Q_TAKE] = "UPDATE scheduler_jobs SET state = 'running', attempt = attempt + 1,"
               " locked_by = ?2, locked_until = ?3, claim = ?4"
               " WHERE id = ?1 AND state = 'scheduled'",
    /* every write about a claim is fenced on (id, token) */
    [Q_DONE_NAME] = "SELECT name FROM scheduler_jobs"
                    " WHERE id = ?1 AND claim = ?2 AND state = 'running'",
    [Q_DONE] = "DELETE FROM scheduler_jobs WHERE id = ?1 AND claim = ?2 AND state = 'running'",
    /* ?1 second, ?2 name, ?3 jobs completed */
    [Q_COMPLETED] = "INSERT INTO scheduler_completions (second, name, jobs) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT (second, name) DO UPDATE SET jobs = jobs + excluded.jobs",
    /* ?3: the new run_at, NULL for a job that failed for good */
    [Q_AGAIN] = "UPDATE scheduler_jobs SET"
                " state = CASE WHEN ?3 IS NULL THEN 'failed' ELSE 'scheduled' END,"
                " run_at = coalesce(?3, run_at), last_error = ?4,"
                " locked_by = NULL, locked_until = NULL, claim = NULL, quarantined = 0,"
                " suspects = NULL"
                " WHERE id = ?1 AND claim = ?2 AND state = 'running'",
    [Q_BACK] = "UPDATE scheduler_jobs SET state = 'scheduled', attempt = attempt - 1,"
               " locked_by = NULL, locked_until = NULL, claim = NULL"
               " WHERE id = ?1 AND claim = ?2 AND state = 'running'",
    [Q_HEARTBEAT] = "UPDATE scheduler_jobs SET locked_until = ?3"
                    " WHERE id = ?1 AND claim = ?2 AND state = 'running'",
    [Q_ANY_EXPIRED] = "SELECT 1 FROM scheduler_jobs"
                      " WHERE state = 'running' AND locked_until < ?1 LIMIT 1",
    /* The crash rule (store.h, rescue): a worker's leases of one expiry
     * are a group; a lease alone counts its attempt (failed when used
     * up); the jobs of a group of several are not charged and go to
     * quarantine.  Q_RESCUE: the expired leases (?1 now); Q_ABANDON:
     * those of worker ?1.  ?2 the default max_attempts. */
#define SHARED_CLAIM                                                                         \
  " (locked_by, locked_until) IN (SELECT g.locked_by, g.locked_until FROM scheduler_jobs g"  \
  "   WHERE g.state = 'running' GROUP BY g.locked_by, g.locked_until HAVING count(*) > 1)"  \
  /* evaluated once, before any row changes */
#define GIVE_BACK(where, why)                                                                \
  "UPDATE scheduler_jobs SET"                                                                \
  " quarantined = quarantined OR" SHARED_CLAIM ","                                           \
  " attempt = CASE WHEN" SHARED_CLAIM " THEN attempt - 1 ELSE attempt END,"                 \
  " state = CASE WHEN NOT" SHARED_CLAIM                                                      \
  "   AND attempt >= coalesce(max_attempts, scheduler_listener_max(name), ?2)"               \
  "   THEN 'failed' ELSE 'scheduled' END,"                                                   \
  " last_error = CASE WHEN" SHARED_CLAIM " THEN last_error ELSE " why " END,"               \
  " locked_by = NULL, locked_until = NULL, claim = NULL"                                     \
  " WHERE state = 'running' AND " where
  /* Before GIVE_BACK, in its transaction: the size of each group of
   * several, in its jobs (the count sees no row changed yet) */
#define SUSPECTS(where)                                                                      \
  "UPDATE scheduler_jobs SET suspects = (SELECT count(*) FROM scheduler_jobs g"              \
  "  WHERE g.state = 'running' AND g.locked_by = scheduler_jobs.locked_by"                   \
  "    AND g.locked_until = scheduler_jobs.locked_until)"                                    \
  " WHERE state = 'running' AND " where " AND" SHARED_CLAIM
    [Q_SUSPECTS_EXPIRED] = SUSPECTS("locked_until < ?1"),
    [Q_SUSPECTS_OF] = SUSPECTS("locked_by = ?1"),
    [Q_RESCUE] = GIVE_BACK("locked_until < ?1",
                           "'lease expired: worker ' || coalesce(locked_by, '?') ||"
                           " ' stopped renewing it (it died, hung or lost its connection)'"),
    [Q_ABANDON] = GIVE_BACK("locked_by = ?1", "'worker ' || locked_by || ' died while holding it'"),
    [Q_WAKE_DUE] = "SELECT min(run_at) FROM scheduler_jobs"
                   " WHERE state = 'scheduled' AND name = ?1",
    /* a full partitioned name's next job not due yet (min_over_names) */
    [Q_WAKE_LATER] = "SELECT min(run_at) FROM scheduler_jobs"
                     " WHERE state = 'scheduled' AND name = ?1 AND run_at > ?2",
    [Q_WAKE_LEASE] = "SELECT min(locked_until) FROM scheduler_jobs"
                     " WHERE state = 'running' AND name = ?1",
    [Q_WAKE_CRON] = "SELECT min(next_at) FROM scheduler_crons WHERE name = ?1",
    [Q_CRON_GET] = "SELECT expr = ?2 AND tz = ?3, name = ?4 FROM scheduler_crons WHERE id = ?1",
    [Q_CRON_INSERT] = "INSERT INTO scheduler_crons (id, expr, tz, name, payload, priority,"
                      " max_attempts, catch_up, backfill, next_at, updated_at, owner)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?13)",
    /* ?12: keep next_at (same expression and zone) */
    [Q_CRON_UPDATE] = "UPDATE scheduler_crons SET expr = ?2, tz = ?3, name = ?4, payload = ?5,"
                      " priority = ?6, max_attempts = ?7, catch_up = ?8, backfill = ?9,"
                      " next_at = CASE WHEN ?12 THEN next_at ELSE ?10 END, updated_at = ?11,"
                      " owner = ?13 WHERE id = ?1",
    /* ?2: the owner it must have (NULL: any) */
    [Q_CRON_REMOVE] = "DELETE FROM scheduler_crons WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)",
    [Q_CRON_LIST] = "SELECT " CRON_COLUMNS " FROM scheduler_crons ORDER BY id",
    [Q_CRON_DUE] = "SELECT " CRON_COLUMNS " FROM scheduler_crons WHERE next_at <= ?1",
    [Q_CRON_CAS] = "UPDATE scheduler_crons SET next_at = ?3, fired_at = ?4"
                   " WHERE id = ?1 AND next_at = ?2",
    [Q_CRON_ROW] = "SELECT name, payload, priority, max_attempts FROM scheduler_crons"
                   " WHERE id = ?1",
    /* The operators' statements.  ?1 state, ?2 name, ?3 id, ?4 limit (NULL:
     * none; LIMIT -1 is none in SQLite). */
    [Q_LIST] = "SELECT id, name, state, run_at, attempt, max_attempts, priority, key,"
               " locked_by, locked_until, created_at, last_error, payload"
               " FROM scheduler_jobs"
               " WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR name = ?2)"
               "  AND (?3 IS NULL OR id = ?3)"
               " ORDER BY run_at, id LIMIT coalesce(?4, -1)",
    /* ?1 now.  Per name: counts by state, how late the oldest due job is,
     * and the completions of the last 60 seconds (names with none left
     * included). */
    [Q_STATS] = "SELECT name, total(due), total(later), total(running), total(failed),"
                " ?1 - min(oldest), total(done) FROM ("
                "  SELECT name, state = 'scheduled' AND run_at <= ?1 AS due,"
                "   state = 'scheduled' AND run_at > ?1 AS later, state = 'running' AS running,"
                "   state = 'failed' AS failed,"
                "   CASE WHEN state = 'scheduled' AND run_at <= ?1 THEN run_at END AS oldest,"
                "   0 AS done FROM scheduler_jobs"
                "  UNION ALL"
                "  SELECT name, 0, 0, 0, 0, NULL, jobs FROM scheduler_completions"
                "  WHERE second > ?1 - 60"
                " ) GROUP BY name ORDER BY name",
    [Q_FAILED] = "SELECT count(*) FROM scheduler_jobs"
                 " WHERE state = 'failed' AND (?1 IS NULL OR name = ?1)",
    /* ?1 name (NULL: all), ?2 now.  As retry(id), for every failed job whose
     * key no unfinished job holds; of several failed jobs with one key, the
     * newest. */
    [Q_RETRY_FAILED] = "UPDATE scheduler_jobs SET state = 'scheduled', run_at = ?2, attempt = 0"
                       " WHERE id IN (SELECT j.id FROM scheduler_jobs j"
                       "  WHERE j.state = 'failed' AND (?1 IS NULL OR j.name = ?1)"
                       "   AND (j.key IS NULL OR (NOT EXISTS (SELECT 1 FROM scheduler_jobs o"
                       "     WHERE o.key = j.key AND o.state <> 'failed')"
                       "    AND j.id = (SELECT max(f.id) FROM scheduler_jobs f WHERE f.key = j.key"
                       "     AND f.state = 'failed' AND (?1 IS NULL OR f.name = ?1)))))",
    /* store_ops.remove: ?1 id, ?2 name, ?3 waiting jobs, ?4 failed jobs, ?5
     * run_at before (NULL: any).  A claimed job is 'running' here, never
     * removed. */
    [Q_REMOVE] = "DELETE FROM scheduler_jobs WHERE (?1 IS NULL OR id = ?1)"
                 " AND (?2 IS NULL OR name = ?2)"
                 " AND ((?3 AND state = 'scheduled') OR (?4 AND state = 'failed'))"
                 " AND (?5 IS NULL OR run_at < ?5)",
    /* paused names (store.h, pause): claims and wake-ups skip their jobs */
    [Q_PAUSE] = "INSERT INTO scheduler_paused (name, at) VALUES (?1, ?2)"
                " ON CONFLICT (name) DO NOTHING",
    [Q_RESUME] = "DELETE FROM scheduler_paused WHERE name = ?1",
    [Q_PAUSED] = "SELECT name FROM scheduler_paused",
    /* a snoozed job (store.h, OUTCOME_SNOOZE): waits until ?3, its attempt
     * given back, its last error kept, out of quarantine */
    [Q_SNOOZE] = "UPDATE scheduler_jobs SET state = 'scheduled', attempt = attempt - 1,"
                 " run_at = ?3, locked_by = NULL, locked_until = NULL, claim = NULL,"
                 " quarantined = 0, suspects = NULL"
                 " WHERE id = ?1 AND claim = ?2 AND state = 'running'",
    /* History (migration 8).  Q_HIST_KEEP: the claims of ?1, a JSON array
     * of [id, token, state, started_at (NULL: it never started: its
     * claim's attempt was not used), duration, error (NULL: the job's
     * last), keep] (sq_finish), before their outcomes' writes and fenced
     * as they are: one row.  ?2 now. */
#define HX(i) "json_extract(x.value, '$[" #i "]')"
    [Q_HIST_KEEP] = "INSERT INTO scheduler_history (min_id, max_id, finished_at, kept_until,"
                    " worker, jobs)"
                    " SELECT min(j.id), max(j.id), ?2, ?2 + max(" HX(6) "), min(j.locked_by),"
                    "  json_group_array(json_array(j.id, j.name, j.key, json(j.payload), " HX(2) ","
                    "   CASE WHEN " HX(3) " IS NULL THEN j.attempt - 1 ELSE j.attempt END,"
                    "   j.priority, " HX(3) ", " HX(4) ", coalesce(" HX(5) ", j.last_error),"
                    "   " HX(6) ", j.run_at))"
                    " FROM json_each(?1) x JOIN scheduler_jobs j ON j.id = " HX(0)
                    "  AND j.claim = " HX(1) " AND j.state = 'running'"
                    " HAVING count(*) > 0",
#undef HX
    /* cancel() of a waiting job (?1), before Q_CANCEL: ?2 now, ?3 keep */
    [Q_HIST_CANCEL] = "INSERT INTO scheduler_history (min_id, max_id, finished_at, kept_until,"
                      " worker, jobs)"
                      " SELECT id, id, ?2, ?2 + ?3, NULL, json_array(json_array(id, name, key,"
                      "  json(payload), 'cancelled', attempt, priority, NULL, 0, last_error, ?3,"
                      "  run_at))"
                      " FROM scheduler_jobs WHERE id = ?1 AND state = 'scheduled'",
    /* ?1 state, ?2 name, ?3 id, ?4 limit (as Q_LIST), ?5 now: the jobs still
     * kept, newest row first, its jobs in reverse order */
#define HE(i) "json_extract(e.value, '$[" #i "]')"
    [Q_HIST_LIST] = "SELECT " HE(0) ", " HE(1) ", " HE(4) ", " HE(5) ", " HE(6) ", " HE(2) ","
                    " " HE(9) ", CASE WHEN json_type(e.value, '$[3]') = 'null' THEN NULL"
                    "  ELSE json_quote(" HE(3) ") END,"
                    " CASE WHEN " HE(7) " IS NULL THEN NULL ELSE h.worker END, " HE(7) ","
                    " coalesce(" HE(7) " + " HE(8) ", h.finished_at), h.finished_at + " HE(10)
                    " FROM scheduler_history h, json_each(h.jobs) e"
                    " WHERE (?3 IS NULL OR (h.max_id >= ?3 AND h.min_id <= ?3 AND " HE(0) " = ?3))"
                    "  AND h.kept_until >= ?5 AND h.finished_at + " HE(10) " >= ?5"
                    "  AND (?1 IS NULL OR " HE(4) " = ?1) AND (?2 IS NULL OR " HE(1) " = ?2)"
                    " ORDER BY h.finished_at DESC, h.rowid DESC, e.key DESC LIMIT coalesce(?4, -1)",
#undef HE
    /* ?1 now, ?2 at most this many */
    [Q_PRUNE] = "DELETE FROM scheduler_history WHERE rowid IN (SELECT rowid FROM scheduler_history"
                " WHERE kept_until < ?1 ORDER BY kept_until LIMIT ?2)",
    /* concurrency limits (store.h, limit) */
    [Q_LIMIT] = "INSERT INTO scheduler_limits (name, concurrency, at, by, rate, per)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                " ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency,"
                " at = excluded.at, by = excluded.by, rate = excluded.rate, per = excluded.per"
                " WHERE concurrency IS NOT excluded.concurrency OR by IS NOT excluded.by"
                " OR rate IS NOT excluded.rate OR per IS NOT excluded.per",
    [Q_UNLIMIT] = "DELETE FROM scheduler_limits WHERE name = ?1",
    [Q_LIMIT_BY] = "SELECT by FROM scheduler_limits WHERE name = ?1",
    /* the partition of every job of name ?1 (every state: a failed job
     * retried later must be in its partition) under by ?2 (NULL: none),
     * when a limit's by changes (migration 14).  Reads the name's jobs:
     * once per change of `by`, not per claim. */
    [Q_PART_SET] = "UPDATE scheduler_jobs SET part = CASE WHEN ?2 IS NOT NULL THEN "
                   PART("scheduler_jobs", "?2") " END"
                   " WHERE name = ?1 AND part IS NOT CASE WHEN ?2 IS NOT NULL THEN "
                   PART("scheduler_jobs", "?2") " END",
    /* each limit and its running jobs (leased, started or not: a claim
     * marks them running), by the index of leases: running jobs are few */
    [Q_LIMITS] = "SELECT l.name, l.concurrency, CASE WHEN l.by IS NULL THEN (SELECT count(*)"
                 " FROM scheduler_jobs j INDEXED BY scheduler_jobs_lease"
                 " WHERE j.state = 'running' AND j.name = l.name) ELSE 0 END, l.by, l.turn,"
                 " l.rate, l.per, l.tat FROM scheduler_limits l",
    /* PARTITIONS (store.h, limit): the due jobs of partitioned name ?1
     * (by ?2) that a claim at ?3 may take: numbered within their
     * partition in claim order (rn), those within their partition's
     * allowance (ALLOW) in rounds (rn), each round from the partition
     * after the turn ?7 on (round-robin across partitions, and across
     * claims), at most ?6; column 8 the partition.
     *   Read by the index of partitions (migration 14), O(partitions x
     * taken) rows however many jobs wait: w walks the name's distinct
     * (part, priority) pairs of waiting jobs, an index seek each (a
     * marker row, take 0: the next priority of the partition, else the
     * next partition), and from each marker the pair's due jobs in
     * (run_at, id) order, a seek each, while the partition's allowance
     * lasts (n < w; the seeks are split at run_at, since SQLite seeks
     * a row value by its first column only and jobs often share a
     * run_at).  A job whose stored part is not its partition (another
     * program wrote part) is skipped, never claimed out of its
     * partition.  Quarantined jobs are claimed alone (Q_QUARANTINED). */
#define PICK_SEEK(cond, order)                                                               \
  "(SELECT x.id FROM scheduler_jobs x INDEXED BY scheduler_jobs_part WHERE x.name = ?1"      \
  " AND x.state = 'scheduled' AND x.part IS NOT NULL AND " cond " ORDER BY " order " LIMIT 1)"
#define PICK_DUE(cond)                                                                       \
  PICK_SEEK("x.part = w.part AND x.priority = w.priority AND NOT x.quarantined AND x.part = "  \
            PART("x", "?2") " AND " cond, "x.run_at, x.id")
  /* a partition's allowance: at most ?4, its free slots (limit ?5 less
   * its running jobs; ?5 0: none), and for a rate ?8 (0: none; step ?9,
   * ?10 its burst and the tokens due within STORE_RATE_AHEAD: rate_cap)
   * its bucket's tokens at ?3 */
#define ALLOW(p)                                                                             \
  "min(?4, CASE WHEN ?5 > 0 THEN ?5 - coalesce((SELECT r.n FROM r WHERE r.part = " p "), 0)"  \
  " ELSE ?4 END, CASE WHEN ?8 > 0 THEN max(0, CAST(?10 + 1e-6 - max(0, coalesce((SELECT b.tat" \
  " FROM scheduler_limit_rates b WHERE b.name = ?1 AND b.part = " p "), 0) - ?3) / ?9 AS INTEGER))" \
  " ELSE ?4 END)"
    [Q_PART_PICK] = "WITH RECURSIVE r AS (SELECT " PART("j", "?2") " AS part, count(*) AS n"
                    " FROM scheduler_jobs j INDEXED BY scheduler_jobs_lease"
                    " WHERE j.state = 'running' AND j.name = ?1 GROUP BY 1),"
                    " w (part, priority, run_at, id, n, w, take) AS ("
                    "  SELECT j.part, j.priority, -9e999, -9223372036854775808, 0, " ALLOW("j.part") ", 0"
                    "  FROM scheduler_jobs j WHERE j.id = " PICK_SEEK("1", "x.part, x.priority")
                    "  UNION ALL"
                    "  SELECT j.part, j.priority, -9e999, -9223372036854775808, 0, " ALLOW("j.part") ", 0"
                    "  FROM w JOIN scheduler_jobs j ON j.id = coalesce("
                    PICK_SEEK("x.part = w.part AND x.priority > w.priority", "x.priority") ", "
                    PICK_SEEK("x.part > w.part", "x.part, x.priority") ")"
                    "  WHERE NOT w.take"
                    "  UNION ALL"
                    "  SELECT j.part, j.priority, j.run_at, j.id, w.n + 1, w.w, 1"
                    "  FROM w JOIN scheduler_jobs j ON j.id = coalesce("
                    PICK_DUE("x.run_at = w.run_at AND x.id > w.id") ", "
                    PICK_DUE("x.run_at > w.run_at AND x.run_at <= ?3") ")"
                    "  WHERE w.n < w.w),"
                    " c AS (SELECT w.w AS allow, row_number() OVER (PARTITION BY w.part"
                    "   ORDER BY w.priority, w.run_at, w.id) AS rn, j.*"
                    "  FROM w JOIN scheduler_jobs j ON j.id = w.id WHERE w.take)"
                    " SELECT " JOB_COLUMNS ", part FROM c WHERE rn <= allow"
                    " ORDER BY priority, rn, NOT coalesce(part > ?7, 1), part, run_at, id LIMIT ?6",
#undef PICK_SEEK
#undef PICK_DUE
#undef ALLOW
    [Q_PART_TURN] = "UPDATE scheduler_limits SET turn = ?2 WHERE name = ?1",
    /* a rate limit's bucket after a claim (store.h, limit: RATES) */
    [Q_RATE_TAKE] = "UPDATE scheduler_limits SET tat = ?2 WHERE name = ?1",
    /* a partition's bucket (name ?1, partition ?2) after one job claimed
     * at ?3, step ?4 (its new tat: the job's hold, rate_hold); the buckets of name ?1 full again at ?2 (rows that
     * say nothing); the first time one of them not full at ?2 has a
     * quarter of a claim's tokens (?2 is that far ahead of now: see
     * rate_next) */
    [Q_RATE_PART] = "INSERT INTO scheduler_limit_rates (name, part, tat) VALUES (?1, ?2, ?3 + ?4)"
                    " ON CONFLICT (name, part) DO UPDATE SET tat = max(tat, ?3) + ?4 RETURNING tat",
    [Q_RATE_PRUNE] = "DELETE FROM scheduler_limit_rates WHERE name = ?1 AND tat < ?2",
    [Q_RATE_NEXT_PART] = "SELECT min(tat) FROM scheduler_limit_rates WHERE name = ?1 AND tat > ?2",
    /* the partition (by ?2) of job ?3 of name ?1: whether it has ?4 jobs
     * running (?4 0: no concurrency), the partition, its bucket's tat
     * (NULL: none, a full bucket) */
    [Q_PART_FULL] = "SELECT ?4 > 0 AND (SELECT count(*) FROM scheduler_jobs j"
                    "  INDEXED BY scheduler_jobs_lease WHERE j.state = 'running' AND j.name = ?1"
                    "  AND " PART("j", "?2") " = p.part) >= ?4, p.part,"
                    " (SELECT b.tat FROM scheduler_limit_rates b WHERE b.name = ?1 AND b.part = p.part)"
                    " FROM (SELECT " PART("x", "?2") " AS part FROM scheduler_jobs x WHERE x.id = ?3) p",
    /* per name: the completions and failures ever (migration 11) */
    [Q_TOTALS] = "SELECT name, sum(done), sum(failed) FROM ("
                 " SELECT name, jobs AS done, 0 AS failed FROM scheduler_completions"
                 " UNION ALL SELECT name, 0, jobs FROM scheduler_failures)"
                 " GROUP BY name ORDER BY name",
    /* listener durations and start lateness (store.h, durations;
     * migrations 11, 12): the jobs of the history rows not counted yet
     * that started, added by name, kind and bucket (scheduler_bucket),
     * then those rows marked counted.  Lateness: started_at less run_at,
     * at least 0 (rows written before migration 12 have no run_at:
     * durations only).  x is read once (MATERIALIZED), each job's array
     * parsed for its four fields as before. */
    [Q_DURATIONS_COUNT] = "WITH x AS MATERIALIZED (SELECT json_extract(e.value, '$[1]') AS name,"
                          "  json_extract(e.value, '$[7]') AS started, json_extract(e.value, '$[8]') AS d,"
                          "  json_extract(e.value, '$[11]') AS run_at"
                          "  FROM scheduler_history h, json_each(h.jobs) e"
                          "  WHERE h.counted = 0 AND json_extract(e.value, '$[7]') IS NOT NULL),"
                          " v AS (SELECT name, 0 AS late, d FROM x"
                          "  UNION ALL SELECT name, 1, max(started - run_at, 0) FROM x WHERE run_at IS NOT NULL)"
                          " INSERT INTO scheduler_durations (name, kind, bucket, jobs, seconds)"
                          " SELECT name, CASE late WHEN 1 THEN 'lateness' ELSE 'duration' END,"
                          "  scheduler_bucket(late, d), count(*), total(d) FROM v WHERE true GROUP BY 1, 2, 3"
                          " ON CONFLICT (name, kind, bucket) DO UPDATE SET jobs = jobs + excluded.jobs,"
                          "  seconds = seconds + excluded.seconds",
    [Q_DURATIONS_DONE] = "UPDATE scheduler_history SET counted = 1 WHERE counted = 0",
    [Q_DURATIONS] = "SELECT name, kind = 'lateness', bucket, jobs, seconds FROM scheduler_durations"
                    " ORDER BY name, kind, bucket",
};

/* ------------------------------------------------------------------ */
/* Arenas: memory that returned store_job / store_cron strings point   */
/* into.  Blocks never move, so pointers stay valid until the reset.   */

typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  char data[];
} arena_block;

typedef struct arena {
  arena_block *head;
} arena;

/* Forget the contents; keep the first block for the next round. */
static void arena_reset(arena *a) {
  if (!a->head) return;
  arena_block *b = a->head->next;
  while (b) {
    arena_block *next = b->next;
    free(b);
    b = next;
  }
  a->head->next = NULL;
  a->head->used = 0;
}

static void arena_free(arena *a) {
  arena_reset(a);
  free(a->head);
  a->head = NULL;
}

/* A NUL-terminated copy of p[0..n) owned by the arena, or NULL. */
static char *arena_dup(arena *a, const void *p, size_t n) {
  if (n == SIZE_MAX) return NULL;
  arena_block *b = a->head;
  /* the current block is the head's successor chain's last one */
  while (b && b->next) b = b->next;
  if (!b || b->cap - b->used < n + 1) {
    size_t cap = n + 1 > 4096 ? n + 1 : 4096;
    if (cap > SIZE_MAX - sizeof *b) return NULL;
    arena_block *nb = malloc(sizeof *nb + cap);
    if (!nb) return NULL;
    nb->next = NULL;
    nb->used = 0;
    nb->cap = cap;
    if (b)
      b->next = nb;
    else
      a->head = nb;
    b = nb;
  }
  char *out = b->data + b->used;
  if (n) memcpy(out, p, n);
  out[n] = '\0';
  b->used += n + 1;
  return out;
}

/* Make room for item n (0-based) in *items (capacity *cap), doubling. */
static int reserve(void **items, size_t *cap, size_t n, size_t size) {
  if (n < *cap) return 0;
  size_t want = *cap ? *cap * 2 : 64;
  void *grown = realloc(*items, want * size);
  if (!grown) return -1;
  *items = grown;
  *cap = want;
  return 0;
}

/* ------------------------------------------------------------------ */

/* The completions of one job name in the batch being recorded: the name
 * is done_names[off, off + len). */
typedef struct done_count {
  size_t off, len;
  long long n;
} done_count;

typedef struct name_ref {
  char *s;
  size_t len;
  long long max_attempts; /* in maxes: its listener's (scheduler_listener_max) */
} name_ref;

/* A limited name (store.h, limit): its limit, and its free slots as the
 * claim in hand counts them down. */
typedef struct sq_limit {
  char *s;
  size_t len;
  long long concurrency, free; /* concurrency 0: none (a rate alone) */
  long long running;           /* its jobs running (not of a partitioned name) */
  long long rate;              /* store.h, limit: RATES; 0: none */
  double per, tat;             /* tat: the bucket (NaN: full) */
  long long taken;             /* jobs the claim in hand took (its rate spends that many tokens) */
  char *by; /* partitioned by (store.h, limit: PARTITIONS), or NULL; then
               free is not counted: Q_PART_PICK counts per partition */
  size_t by_len;
  char *turn; /* the partition last claimed from (Q_PART_PICK), or NULL */
  size_t turn_len;
} sq_limit;

typedef struct sq_store {
  store base;
  char *path;      /* the file (absolute), or the memdb name ("/...") */
  char *canonical; /* "sqlite:<absolute path>" or "sqlite::memory:<name>" */
  char *wake_path; /* <path>-wake; NULL for memory databases */
  int memory;
  sqlite3 *db;
  sqlite3_stmt *stmt[Q_COUNT];
  double busy_since; /* monotonic start of the current wait for a lock */
  double claimed_at;  /* the clock of the last claim (next_wake: drained) */
  /* cancel requests (see sq_cancels): when they were last looked for, the
   * data_version then, and scratch ids */
  double asked_at, asked_version;
  int64_t *asked;
  size_t asked_cap;
  double busy_limit; /* how long the busy handler waits: BUSY_TIMEOUT, or
                      * less while switching to WAL (see set_wal) */
  int relaxed;       /* synchronous = NORMAL for the current transaction */
  int flagged;       /* holds the "waiting for the write lock" flag */
  int wake_fd;       /* read to ring; -1 when it could not be opened */
  double wake_tried; /* monotonic time of the last attempt to open it */
  buf warning;       /* why the wake file is not used (see open_wake) */
  int warn_pending;  /* `warning` is news: store_ops.warning returns it */
  int listening;     /* run() is active: watch the wake file */
  int watch_fd;      /* inotify descriptor (socket()), or -1 */
  long long data_version;
  /* this worker's names, sorted (memcmp, then length) for bsearch */
  name_ref *names;
  size_t n_names;
  name_ref *maxes; /* set_max_attempts: sorted like names */
  size_t n_maxes;
  /* what returned pointers point into */
  arena claimed, got, cron_mem;
  store_job *jobs; /* the last claim's batch: n_jobs of them */
  size_t n_jobs, jobs_cap;
  store_cron *crons;
  size_t crons_cap;
  buf done_names; /* finish: completions per name */
  done_count *done;
  size_t n_done, done_cap;
  store_job_row *rows; /* list */
  size_t rows_cap;
  store_history *hist; /* history */
  size_t hist_cap;
  buf hist_json; /* finish: the claims history keeps (keep_history) */
  store_stat *stats;
  size_t stats_cap;
  store_total *totals;
  size_t totals_cap;
  store_duration *durations;
  size_t durations_cap;
  arena dur_mem; /* the names durations returns */
  /* the paused names as last read (load_paused), sorted like names, and
   * paused_names's scratch */
  name_ref *paused;
  size_t n_paused;
  const char **paused_s;
  size_t *paused_l;
  /* the limits as last read (load_limits), sorted like names, and
   * limits's scratch */
  struct sq_limit *limited;
  size_t n_limited;
  const char **limit_s;
  size_t *limit_l;
  long long *limit_c;
  const char **limit_b;
  size_t *limit_bl;
  long long *limit_r;
  double *limit_p;
} sq_store;

#define SQ(s) ((sq_store *)(s))

static void sq_disconnect(store *s);
static void sq_disconnect_now(sq_store *q);
static int restore_sync(sq_store *q);
static void lower_flag(sq_store *q);

/* ------------------------------------------------------------------ */
/* Errors                                                              */

/* Why SQLite could not open `path` (SQLITE_CANTOPEN's errno is often that
 * of its last fallback, a read-only open): checks the directory, the file
 * opened for writing, and creating files in the directory (the -wal and -shm
 * files), with a scratch file of a unique name.  Never creates or removes
 * the database or SQLite's own files: another process may be creating them
 * at this moment.  Appends the reason to b. */
static void explain_cantopen(const char *path, buf *b) {
  static atomic_uint probes;
  const char *slash = strrchr(path, '/');
  buf dir = BUF_INIT, probe = BUF_INIT;
  if (buf_add(&dir, path, slash && slash != path ? (size_t)(slash - path) : 1)) goto done;
  struct stat st;
  if (stat(buf_cstr(&dir), &st) != 0) {
    buf_printf(b, " (its directory %s: %s)", buf_cstr(&dir), strerror(errno));
    goto done;
  }
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    close(fd);
  } else if (errno != ENOENT) {
    buf_printf(b, " (opening it for writing: %s)", strerror(errno));
    goto done;
  }
  if (buf_printf(&probe, "%s-probe-%ld-%u", path, (long)getpid(), atomic_fetch_add(&probes, 1u)))
    goto done;
  fd = open(buf_cstr(&probe), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    buf_printf(b, " (creating files in %s: %s)", buf_cstr(&dir), strerror(errno));
  } else {
    close(fd);
    unlink(buf_cstr(&probe));
  }
done:
  buf_free(&dir);
  buf_free(&probe);
}

/* Set the store's error for SQLite result code rc (the connection's
 * message, with the file named where it helps) and return the store code:
 * STORE_DOWN for a file that cannot be used (the connection is then
 * dropped, so that the next call opens it again), STORE_NOMEM, or
 * STORE_ERROR.  Any open transaction is rolled back. */
static int fail(sq_store *q, int rc, const char *what) {
  int primary = rc & 0xff;
  /* the connection's message when it is about this very error */
  const char *msg = q->db && sqlite3_extended_errcode(q->db) == rc ? sqlite3_errmsg(q->db)
                                                                    : sqlite3_errstr(rc);
  int sys = q->db ? sqlite3_system_errno(q->db) : 0;
  int code = STORE_ERROR;
  switch (primary) {
  case SQLITE_NOMEM:
    code = store_fail(&q->base, STORE_NOMEM, "%s: not enough memory", what);
    break;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    code = store_fail(&q->base, STORE_ERROR,
                      "%s: the database %s stayed locked by another connection for %.0f s",
                      what, q->path, BUSY_TIMEOUT);
    break;
  case SQLITE_NOTADB:
    code = store_fail(&q->base, STORE_DOWN,
                      "%s: %s is not an SQLite database (%s); it was left untouched", what,
                      q->path, msg);
    break;
  case SQLITE_CORRUPT:
    code = store_fail(&q->base, STORE_DOWN,
                      "%s: the database %s is damaged (%s); it was left untouched: restore it "
                      "from a backup or try the sqlite3 tool's .recover",
                      what, q->path, msg);
    break;
  case SQLITE_CANTOPEN: {
    buf why = BUF_INIT;
    if (!q->memory) explain_cantopen(q->path, &why);
    if (why.len)
      code = store_fail(&q->base, STORE_DOWN, "%s: %s: %s%s", what, q->path, msg, buf_cstr(&why));
    else
      code = store_fail(&q->base, STORE_DOWN, "%s: %s: %s%s%s%s", what, q->path, msg,
                        sys ? " (" : "", sys ? strerror(sys) : "", sys ? ")" : "");
    buf_free(&why);
    break;
  }
  case SQLITE_READONLY:
  case SQLITE_IOERR:
  case SQLITE_FULL:
  case SQLITE_PERM:
  case SQLITE_AUTH:
  case SQLITE_PROTOCOL:
    code = store_fail(&q->base, STORE_DOWN, "%s: %s: %s%s%s%s", what, q->path, msg,
                      sys ? " (" : "", sys ? strerror(sys) : "", sys ? ")" : "");
    break;
  default:
    code = store_fail(&q->base, STORE_ERROR, "%s: %s", what, msg);
    break;
  }
  if (q->db && !sqlite3_get_autocommit(q->db)) {
    sqlite3_stmt *rb = q->stmt[Q_ROLLBACK];
    if (rb) {
      sqlite3_step(rb);
      sqlite3_reset(rb);
    } else {
      sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    }
  }
  if (q->relaxed) restore_sync(q);
  lower_flag(q);
  if (code == STORE_DOWN && !q->memory) sq_disconnect(&q->base);
  return code;
}

/* ------------------------------------------------------------------ */
/* Statement helpers: SQLite result codes inside, store codes at the    */
/* operation boundary.                                                 */

/* The prepared statement i (prepared on first use), or NULL with *rc. */
static sqlite3_stmt *stmt(sq_store *q, int i, int *rc) {
  if (!q->stmt[i]) {
    *rc = sqlite3_prepare_v2(q->db, queries[i], -1, &q->stmt[i], NULL);
    if (*rc != SQLITE_OK) {
      sqlite3_finalize(q->stmt[i]);
      q->stmt[i] = NULL;
      return NULL;
    }
  }
  *rc = SQLITE_OK;
  return q->stmt[i];
}

static void finish_stmt(sqlite3_stmt *st) {
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

/* Bind text of exact length (NULL binds NULL).  The memory must outlive
 * the statement's use (it is reset before the caller's data goes away). */
static int bind_text(sqlite3_stmt *st, int i, const char *s, size_t n) {
  if (!s) return sqlite3_bind_null(st, i);
  return sqlite3_bind_text64(st, i, s, (sqlite3_uint64)n, SQLITE_STATIC, SQLITE_UTF8);
}

static int bind_double_or_null(sqlite3_stmt *st, int i, double v, int present) {
  return present ? sqlite3_bind_double(st, i, v) : sqlite3_bind_null(st, i);
}

/* Step a statement that returns no rows; *changes (if given) = rows
 * changed.  The statement is reset. */
static int run_write(sq_store *q, sqlite3_stmt *st, int *changes) {
  int rc = sqlite3_step(st);
  finish_stmt(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return rc;
  if (changes) *changes = sqlite3_changes(q->db);
  return SQLITE_OK;
}

/* Run one of the transaction-control statements.  After BEGIN (which may
 * have waited for the lock) the "waiting" flag goes down. */
static int tx(sq_store *q, int which) {
  int rc;
  sqlite3_stmt *st = stmt(q, which, &rc);
  if (st) rc = run_write(q, st, NULL);
  if (which == Q_BEGIN) lower_flag(q);
  return rc;
}

/* Back to synchronous = FULL after a relaxed transaction.  Should that ever
 * fail, the connection is dropped: a new one starts at FULL. */
static int restore_sync(sq_store *q) {
  q->relaxed = 0;
  int rc = tx(q, Q_SYNC_FULL);
  if (rc != SQLITE_OK) sq_disconnect_now(q);
  return rc;
}

/* A single-value query: *out = column 0 as a double, or NAN when there is
 * no row or it is NULL. */
static int query_double(sq_store *q, sqlite3_stmt *st, double *out) {
  int rc = sqlite3_step(st);
  *out = NAN;
  if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
    *out = sqlite3_column_double(st, 0);
  finish_stmt(st);
  (void)q;
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ------------------------------------------------------------------ */
/* Waiting for the write lock                                           */

/* Fair turns between processes.  SQLite's lock is not a queue: a process
 * that commits and at once begins its next transaction (a producer
 * scheduling in a loop) leaves the lock free for microseconds, and a worker
 * that polls for it can miss those gaps for seconds on a slow disk.  So a
 * process that finds the lock taken raises a flag, a shared lock on byte
 * FLAG_BYTE of the wake file (an open file description lock: per
 * connection, released by the kernel if the process dies), and lowers it
 * once it got the lock; a process that has just committed and sees a flag
 * raised by someone else pauses (at most YIELD_MAX) until it is lowered. */
#define FLAG_BYTE 1
#define YIELD_MAX 0.05

static int flag_op(int fd, short type, int cmd, struct flock *out) {
#ifdef F_OFD_SETLK
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = FLAG_BYTE;
  fl.l_len = 1;
  int rc = fcntl(fd, cmd, &fl);
  if (out) *out = fl;
  return rc;
#else
  (void)fd, (void)type, (void)cmd, (void)out;
  return -1;
#endif
}

static void raise_flag(sq_store *q) {
#ifdef F_OFD_SETLK
  if (q->wake_fd >= 0 && !q->flagged && flag_op(q->wake_fd, F_RDLCK, F_OFD_SETLK, NULL) == 0)
    q->flagged = 1;
#else
  (void)q;
#endif
}

static void lower_flag(sq_store *q) {
#ifdef F_OFD_SETLK
  if (q->flagged) flag_op(q->wake_fd, F_UNLCK, F_OFD_SETLK, NULL);
#endif
  q->flagged = 0;
}

/* Is a flag raised by another connection? */
static int someone_waits(sq_store *q) {
#ifdef F_OFD_GETLK
  struct flock fl;
  return q->wake_fd >= 0 && flag_op(q->wake_fd, F_WRLCK, F_OFD_GETLK, &fl) == 0 &&
         fl.l_type != F_UNLCK;
#else
  (void)q;
  return 0;
#endif
}

/* After a commit: let a waiting process take its turn first. */
static void yield_to_waiters(sq_store *q) {
  if (!someone_waits(q)) return;
  double until = clock_mono() + YIELD_MAX;
  do {
    struct timespec ts = {0, 100000L};
    nanosleep(&ts, NULL);
  } while (someone_waits(q) && clock_mono() < until);
}

/* SQLite's busy handler: retry for up to BUSY_TIMEOUT seconds, polling
 * often (lua-scheduler transactions last about a millisecond, so a waiter
 * must look again soon after the holder commits to have a fair chance). */
static int on_busy(void *arg, int count) {
  sq_store *q = arg;
  double now = clock_mono();
  if (count == 0) {
    q->busy_since = now;
    raise_flag(q);
  }
  if (now - q->busy_since >= (q->busy_limit > 0 ? q->busy_limit : BUSY_TIMEOUT)) return 0;
  long ns = count < 100 ? 100000L : 500000L;
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
  return 1;
}

/* ------------------------------------------------------------------ */
/* Wake-ups                                                            */

/* Wake the workers that sleep watching the wake file: reading it is an
 * IN_ACCESS event for their inotify watches (no write, so no disk I/O). */
static void ring(sq_store *q) {
  if (q->wake_fd < 0) return;
  char c;
  ssize_t n = pread(q->wake_fd, &c, 1, 0);
  (void)n;
}

/* The wake file is a file the worker opens, writes (one byte, when empty)
 * and, running as root, chowns, next to a database whose directory others
 * may be able to write to.  So that it is no way in:
 * - the last component is never followed if it is a symbolic link
 *   (O_NOFOLLOW, and O_EXCL when creating); the directories above it are
 *   followed like SQLite follows them for the database and its -wal and
 *   -shm files: whoever can change them can swap the database itself;
 * - an existing file is used only if it is a regular file with one link,
 *   owned by the database file's owner (or, for a worker not running as
 *   root, by the worker's own user, who created it without being able to
 *   chown it).  lstat() before the open keeps a FIFO or device from being
 *   opened at all; fstat() after it checks what was actually opened;
 * - it is chowned only by the worker that just created it (O_CREAT|O_EXCL),
 *   through the descriptor, never by path.
 * A file that fails these checks is left untouched (not opened for
 * writing, not chowned, not removed) and the worker does without wake-ups:
 * it logs a warning and finds new jobs at its periodic check (15 s), and
 * looks at the path again every WAKE_RETRY seconds.  Wake-ups carry no
 * data (the jobs are in the database), so no job is lost either way;
 * refusing to start instead would let anyone who can create a file in the
 * database's directory stop every worker and producer. */
#define WAKE_RETRY 15.0

/* Note a warning for the loop to log (store_ops.warning); the same one is
 * not repeated while the cause persists.  `refused`: something is there
 * that is not a wake file (removing it is the fix). */
static void wake_warn(sq_store *q, const char *why, const char *detail, int refused) {
  buf msg = BUF_INIT;
  if (buf_printf(&msg,
                 "not using the wake-up file %s: %s%s; workers on this database find new jobs "
                 "within 15 s instead of at once%s",
                 q->wake_path, why, detail ? detail : "",
                 refused ? " (remove it: lua-scheduler creates the file again)" : "") != 0) {
    buf_free(&msg);
    return;
  }
  if (strcmp(buf_cstr(&msg), buf_cstr(&q->warning)) != 0) {
    buf_reset(&q->warning);
    if (buf_add(&q->warning, msg.data, msg.len) == 0) q->warn_pending = 1;
  }
  buf_free(&msg);
}

/* Why `ws` (the wake file as opened or lstat'ed) is not acceptable for a
 * database owned by `owner`, or NULL when it is. */
static const char *wake_unfit(const struct stat *ws, uid_t owner, char *detail, size_t size) {
  detail[0] = '\0';
  if (S_ISLNK(ws->st_mode)) return "it is a symbolic link";
  if (S_ISFIFO(ws->st_mode)) return "it is a FIFO";
  if (S_ISDIR(ws->st_mode)) return "it is a directory";
  if (!S_ISREG(ws->st_mode)) return "it is not a regular file";
  if (ws->st_uid != owner && (geteuid() == 0 || ws->st_uid != geteuid())) {
    snprintf(detail, size, " %u, the database's is %u", (unsigned)ws->st_uid, (unsigned)owner);
    return "it is owned by uid";
  }
  if (ws->st_nlink != 1) {
    snprintf(detail, size, " (%lu)", (unsigned long)ws->st_nlink);
    return "it has other hard links";
  }
  return NULL;
}

/* Open the wake file, creating it (with the database file's mode and
 * owner) if it does not exist.  Best effort: without it wake-ups fall back
 * to the loop's periodic check. */
static void open_wake(sq_store *q) {
  if (q->memory || q->wake_fd >= 0) return;
  q->wake_tried = clock_mono();
  struct stat st, ws, ls;
  /* the database itself is trusted: stat() follows a link to it, as
   * SQLite does */
  if (stat(q->path, &st) != 0) return;
  mode_t mode = st.st_mode & 0777;
  /* a number, not user data */
  char detail[64];
  int fd = open(q->wake_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode);
  if (fd >= 0) {
    /* ours: reads of an empty file are not reported, so give it a byte */
    ssize_t n = pwrite(fd, "\n", 1, 0);
    (void)n;
    if (geteuid() == 0 && fstat(fd, &ws) == 0 && (ws.st_uid != st.st_uid || ws.st_gid != st.st_gid)) {
      /* as SQLite does for -wal and -shm: owned like the database */
      int r = fchown(fd, st.st_uid, st.st_gid);
      (void)r;
    }
    q->wake_fd = fd;
    return;
  }
  if (errno != EEXIST) {
    wake_warn(q, "cannot create it: ", strerror(errno), 0);
    return;
  }
  if (lstat(q->wake_path, &ls) != 0) {
    /* removed meanwhile: the next attempt creates it */
    return;
  }
  const char *why = wake_unfit(&ls, st.st_uid, detail, sizeof detail);
  if (why) {
    wake_warn(q, why, detail, 1);
    return;
  }
  /* O_NONBLOCK: should a FIFO have replaced the file since lstat(), the
   * open does not wait for a writer (and fstat() below refuses it) */
  int flags = O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
  fd = open(q->wake_path, O_RDWR | flags);
  if (fd < 0 && (errno == EACCES || errno == EROFS)) fd = open(q->wake_path, O_RDONLY | flags);
  if (fd < 0) {
    if (errno == ELOOP)
      wake_warn(q, "it is a symbolic link", NULL, 1);
    else if (errno != ENOENT)
      wake_warn(q, "cannot open it: ", strerror(errno), 0);
    return;
  }
  if (fstat(fd, &ws) != 0) {
    close(fd);
    return;
  }
  why = wake_unfit(&ws, st.st_uid, detail, sizeof detail);
  if (!why && (ws.st_dev != ls.st_dev || ws.st_ino != ls.st_ino)) why = "it was replaced while opening it";
  if (why) {
    close(fd);
    wake_warn(q, why, detail, 1);
    return;
  }
  if (ws.st_size == 0) {
    /* a wake file, by all the checks above, left empty by a creator that
     * died before writing its byte */
    ssize_t n = pwrite(fd, "\n", 1, 0);
    (void)n;
  }
  buf_reset(&q->warning); /* a later refusal is news again */
  q->wake_fd = fd;
}

static void unwatch(sq_store *q) {
  if (q->watch_fd >= 0) close(q->watch_fd);
  q->watch_fd = -1;
}

/* Start watching the wake file (run() is active).  Best effort. */
static void watch(sq_store *q) {
#ifdef __linux__
  if (q->memory || q->watch_fd >= 0) return;
  open_wake(q);
  if (q->wake_fd < 0) return;
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return;
  /* Watch the file that was opened and checked, not whatever the path names
   * now: /proc/self/fd/N leads to the open file itself.  Without /proc, the
   * path, not followed if it became a link, and compared with the open
   * file afterwards. */
  uint32_t mask = IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;
  char self[64]; /* a number, not user data */
  snprintf(self, sizeof self, "/proc/self/fd/%d", q->wake_fd);
  if (inotify_add_watch(fd, self, mask) < 0) {
    struct stat a, b;
    if (inotify_add_watch(fd, q->wake_path, mask | IN_DONT_FOLLOW) < 0 || fstat(q->wake_fd, &a) != 0 ||
        lstat(q->wake_path, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
      close(fd);
      return;
    }
  }
  q->watch_fd = fd;
#else
  (void)q;
#endif
}

/* Consume pending inotify events.  Returns 1 when the watched file went
 * away (deleted or renamed), so the watch must be set up again. */
static int drain_watch(sq_store *q) {
  int gone = 0;
#ifdef __linux__
  /* a kernel event buffer, not user data: events are small and a short
   * read just means "read again" */
  char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t n = read(q->watch_fd, events, sizeof events);
    if (n <= 0) break;
    for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
      const struct inotify_event *e = (const struct inotify_event *)(events + off);
      if (e->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) gone = 1;
      /* removed or replaced while open: the kernel reports only its link
       * count (IN_ATTRIB), and other processes ring the new file */
      struct stat ws;
      if ((e->mask & IN_ATTRIB) && fstat(q->wake_fd, &ws) == 0 && ws.st_nlink == 0) gone = 1;
      off += (ssize_t)sizeof *e + e->len;
    }
  }
#else
  (void)q;
#endif
  return gone;
}

/* ------------------------------------------------------------------ */
/* Names                                                               */

static int name_cmp(const void *a, const void *b) {
  const name_ref *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = n ? memcmp(x->s, y->s, n) : 0;
  if (c) return c;
  return (x->len > y->len) - (x->len < y->len);
}

static int wants(const sq_store *q, const char *s, size_t len) {
  if (!s || !q->n_names) return 0;
  name_ref key = {(char *)s, len, 0};
  return bsearch(&key, q->names, q->n_names, sizeof *q->names, name_cmp) != NULL;
}

/* The SQL function scheduler_listener_max(name): the max_attempts of this
 * process's listener for that name (set_max_attempts), or NULL; the crash
 * rule's (GIVE_BACK) fallback before the default, for a job that sets
 * none. */
static void listener_max(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const sq_store *q = sqlite3_user_data(ctx);
  const unsigned char *s = sqlite3_value_text(argv[0]);
  name_ref key = {(char *)s, (size_t)sqlite3_value_bytes(argv[0]), 0};
  const name_ref *r =
      s && q->n_maxes ? bsearch(&key, q->maxes, q->n_maxes, sizeof *q->maxes, name_cmp) : NULL;
  if (r && r->max_attempts > 0)
    sqlite3_result_int64(ctx, r->max_attempts);
  else
    sqlite3_result_null(ctx);
}

static void free_refs(name_ref **refs, size_t *n) {
  for (size_t i = 0; i < *n; i++) free((*refs)[i].s);
  free(*refs);
  *refs = NULL;
  *n = 0;
}

static void free_names(sq_store *q) { free_refs(&q->names, &q->n_names); }

/* Read the paused names into q->paused (store.h, pause).  SQLite code. */
static int load_paused(sq_store *q) {
  free_refs(&q->paused, &q->n_paused);
  int rc;
  sqlite3_stmt *st = stmt(q, Q_PAUSED, &rc);
  size_t cap = 0;
  while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *t = (const char *)sqlite3_column_text(st, 0);
    size_t len = (size_t)sqlite3_column_bytes(st, 0);
    char *c = malloc(len + 1);
    if (c && q->n_paused == cap) {
      name_ref *grown = realloc(q->paused, (cap ? cap * 2 : 4) * sizeof *grown);
      if (grown) q->paused = grown, cap = cap ? cap * 2 : 4;
    }
    if (!c || q->n_paused == cap) {
      free(c);
      rc = SQLITE_NOMEM;
      break;
    }
    if (len) memcpy(c, t, len);
    c[len] = '\0';
    q->paused[q->n_paused++] = (name_ref){c, len, 0};
  }
  if (st) finish_stmt(st);
  if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  if (q->n_paused) qsort(q->paused, q->n_paused, sizeof *q->paused, name_cmp);
  return rc;
}

/* Name (s, len) is paused, as load_paused last read. */
static int is_paused(const sq_store *q, const char *s, size_t len) {
  if (!s || !q->n_paused) return 0;
  name_ref key = {(char *)s, len, 0};
  return bsearch(&key, q->paused, q->n_paused, sizeof *q->paused, name_cmp) != NULL;
}

static int limit_cmp(const void *a, const void *b) {
  const sq_limit *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = n ? memcmp(x->s, y->s, n) : 0;
  if (c) return c;
  return (x->len > y->len) - (x->len < y->len);
}

static void free_limits(sq_store *q) {
  for (size_t i = 0; i < q->n_limited; i++)
    free(q->limited[i].s), free(q->limited[i].by), free(q->limited[i].turn);
  free(q->limited);
  q->limited = NULL;
  q->n_limited = 0;
}

/* Rate limit l's bucket as a claim sees it (store.h, limit: RATES): its
 * burst, and the tokens due within STORE_RATE_AHEAD. */
static double rate_cap(const sq_limit *l) {
  return (double)STORE_RATE_BURST(l->rate) + STORE_RATE_AHEAD / STORE_RATE_STEP(l->rate, l->per);
}

/* The whole tokens a claim may take of rate limit l's bucket at `now`
 * (1e-6: a token spent and its step added back must not be lost to
 * rounding). */
static long long rate_tokens(const sq_limit *l, double now) {
  double ahead = isnan(l->tat) || l->tat < now ? 0 : l->tat - now;
  double t = floor(rate_cap(l) + 1e-6 - ahead / STORE_RATE_STEP(l->rate, l->per));
  return t > 0 ? (long long)t : 0;
}

/* The seconds from `now` to the token of the job that moved rate limit
 * l's bucket to `tat` (store.h, STORE_RATE_AHEAD): when it may start. */
static double rate_hold(const sq_limit *l, double tat, double now) {
  double due = tat - (double)STORE_RATE_BURST(l->rate) * STORE_RATE_STEP(l->rate, l->per);
  return due > now ? due - now : 0;
}

/* When a quarter of what a claim can take of rate limit l's bucket can be
 * taken again, the time its due jobs are looked at (store_rate_look, as
 * RATE_NEXT in store_pg_wake.c); NaN: full. */
static double rate_next(const sq_limit *l) { return l->tat - store_rate_look(l->rate, l->per); }

/* Read the limits and count their running jobs into q->limited (store.h,
 * limit), with the tokens of their rates at `now`: inside a claim's write
 * transaction, so that nobody claims in between and the count is exact.
 * SQLite code. */
static int load_limits(sq_store *q, double now) {
  free_limits(q);
  int rc;
  sqlite3_stmt *st = stmt(q, Q_LIMITS, &rc);
  size_t cap = 0;
  while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *t = (const char *)sqlite3_column_text(st, 0);
    size_t len = (size_t)sqlite3_column_bytes(st, 0);
    const char *bt = (const char *)sqlite3_column_text(st, 3);
    size_t blen = (size_t)sqlite3_column_bytes(st, 3);
    const char *tt = (const char *)sqlite3_column_text(st, 4);
    size_t tlen = (size_t)sqlite3_column_bytes(st, 4);
    char *c = malloc(len + 1), *b = bt ? malloc(blen + 1) : NULL, *tn = tt ? malloc(tlen + 1) : NULL;
    if (c && (b || !bt) && (tn || !tt) && q->n_limited == cap) {
      sq_limit *grown = realloc(q->limited, (cap ? cap * 2 : 4) * sizeof *grown);
      if (grown) q->limited = grown, cap = cap ? cap * 2 : 4;
    }
    if (!c || (bt && !b) || (tt && !tn) || q->n_limited == cap) {
      free(c);
      free(b);
      free(tn);
      rc = SQLITE_NOMEM;
      break;
    }
    if (len) memcpy(c, t, len);
    c[len] = '\0';
    if (b) {
      if (blen) memcpy(b, bt, blen);
      b[blen] = '\0';
    }
    if (tn) {
      if (tlen) memcpy(tn, tt, tlen);
      tn[tlen] = '\0';
    }
    long long limit = sqlite3_column_int64(st, 1), running = sqlite3_column_int64(st, 2);
    sq_limit l = {c, len, limit, limit ? limit - running : LLONG_MAX, running,
                  sqlite3_column_int64(st, 5), sqlite3_column_double(st, 6),
                  sqlite3_column_type(st, 7) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 7),
                  0, b, b ? blen : 0, tn, tn ? tlen : 0};
    /* a claim takes no more than the bucket's tokens either */
    if (l.rate && rate_tokens(&l, now) < l.free) l.free = rate_tokens(&l, now);
    q->limited[q->n_limited++] = l;
  }
  if (st) finish_stmt(st);
  if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  if (q->n_limited) qsort(q->limited, q->n_limited, sizeof *q->limited, limit_cmp);
  return rc;
}

/* The limit of name (s, len) as load_limits last read, or NULL. */
static sq_limit *limit_of(const sq_store *q, const char *s, size_t len) {
  if (!s || !q->n_limited) return NULL;
  sq_limit key = {(char *)s, len, 0, 0, 0, 0, 0, 0, 0, NULL, 0, NULL, 0};
  return bsearch(&key, q->limited, q->n_limited, sizeof *q->limited, limit_cmp);
}

/* A claim may take a job of name (s, len): not limited, or with a free
 * slot, which it then takes (see load_limits).  Never one of a
 * partitioned name: claim_jobs takes those first (Q_PART_PICK). */
static int take_slot(const sq_store *q, const char *s, size_t len) {
  sq_limit *l = limit_of(q, s, len);
  if (!l) return 1;
  if (l->by) return 0;
  if (l->free <= 0) return 0;
  l->free--;
  l->taken++;
  return 1;
}

static int sq_set_max_attempts(store *s, const char *const *names, const size_t *lens,
                               const long long *max_attempts, size_t n) {
  sq_store *q = SQ(s);
  free_refs(&q->maxes, &q->n_maxes);
  if (n == 0) return STORE_OK;
  q->maxes = calloc(n, sizeof *q->maxes);
  if (!q->maxes) return store_fail(s, STORE_NOMEM, "not enough memory");
  for (size_t i = 0; i < n; i++) {
    char *c = malloc(lens[i] + 1);
    if (!c) {
      free_refs(&q->maxes, &q->n_maxes);
      return store_fail(s, STORE_NOMEM, "not enough memory");
    }
    if (lens[i]) memcpy(c, names[i], lens[i]);
    c[lens[i]] = '\0';
    q->maxes[i] = (name_ref){c, lens[i], max_attempts[i]};
    q->n_maxes = i + 1;
  }
  qsort(q->maxes, q->n_maxes, sizeof *q->maxes, name_cmp);
  return STORE_OK;
}

static int sq_set_names(store *s, const char *const *names, const size_t *lens, size_t n) {
  sq_store *q = SQ(s);
  free_names(q);
  if (n == 0) return STORE_OK;
  q->names = calloc(n, sizeof *q->names);
  if (!q->names) return store_fail(s, STORE_NOMEM, "not enough memory");
  for (size_t i = 0; i < n; i++) {
    char *c = malloc(lens[i] + 1);
    if (!c) {
      free_names(q);
      return store_fail(s, STORE_NOMEM, "not enough memory");
    }
    if (lens[i]) memcpy(c, names[i], lens[i]);
    c[lens[i]] = '\0';
    q->names[i].s = c;
    q->names[i].len = lens[i];
    q->n_names = i + 1;
  }
  qsort(q->names, q->n_names, sizeof *q->names, name_cmp);
  return STORE_OK;
}

/* ------------------------------------------------------------------ */
/* Connecting                                                          */

static void sq_disconnect_now(sq_store *q) {
  for (int i = 0; i < Q_COUNT; i++) {
    if (q->stmt[i]) sqlite3_finalize(q->stmt[i]);
    q->stmt[i] = NULL;
  }
  if (q->db) sqlite3_close(q->db);
  q->db = NULL;
  q->relaxed = 0;
  unwatch(q);
  if (q->wake_fd >= 0) close(q->wake_fd); /* releases the flag, if raised */
  q->wake_fd = -1;
  q->flagged = 0;
}

/* Drop the connection.  A memory database would vanish with its last
 * connection, so it is kept: only destroy() closes it. */
static void sq_disconnect(store *s) {
  sq_store *q = SQ(s);
  if (!q->memory) sq_disconnect_now(q);
}

/* Run a statement and return its first column as text in out (empty when
 * no row).  For pragmas at connect time. */
static int pragma_text(sq_store *q, const char *sql, char *out, size_t size) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(q->db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(st);
    return rc;
  }
  out[0] = '\0';
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(out, size, "%s", t ? (const char *)t : "");
    while (sqlite3_step(st) == SQLITE_ROW) {
    }
    rc = SQLITE_DONE;
  }
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  sqlite3_finalize(st);
  return rc;
}

static int schema_version(sq_store *q, int *version) {
  char text[32];
  int rc = pragma_text(q,
                       "SELECT count(*) FROM sqlite_master"
                       " WHERE type = 'table' AND name = 'scheduler_migrations'",
                       text, sizeof text);
  *version = 0;
  if (rc != SQLITE_OK || atoi(text) == 0) return rc;
  rc = pragma_text(q, "SELECT coalesce(max(version), 0) FROM scheduler_migrations", text,
                   sizeof text);
  if (rc == SQLITE_OK) *version = atoi(text);
  return rc;
}

/* Inside a write transaction: the triggers of scheduler_jobs.part
 * (PART_TRIGGERS) there if and only if some limit has a `by` (whose jobs
 * they keep), so that a database without one pays nothing per insert.
 * After migration 14 and after every change of a `by` (sq_limit_set):
 * nothing else changes scheduler_limits.by. */
static int part_triggers(sq_store *q) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(q->db,
                              "SELECT EXISTS (SELECT 1 FROM scheduler_limits WHERE by IS NOT NULL),"
                              " EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'trigger'"
                              "  AND name = 'scheduler_jobs_part_insert')",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  int want = 0, have = 0;
  if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    want = sqlite3_column_int(st, 0);
    have = sqlite3_column_int(st, 1);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_OK || want == have) return rc;
  return sqlite3_exec(q->db, want ? PART_TRIGGERS : PART_TRIGGERS_DROP, NULL, NULL, NULL);
}

/* Create or upgrade the schema.  Cheap when current (two reads); else one
 * IMMEDIATE transaction, which serializes workers that start together
 * (the loser finds the work done when it gets the lock). */
static int migrate(sq_store *q) {
  int version, rc = schema_version(q, &version);
  if (rc != SQLITE_OK) return fail(q, rc, "reading the schema version");
  if (version == SCHEMA_VERSION) return STORE_OK;
  if (version > SCHEMA_VERSION)
    return store_fail(&q->base, STORE_ERROR,
                      "the database schema of %s is version %d, newer than this lua-scheduler "
                      "(%d)",
                      q->path, version, SCHEMA_VERSION);
  if ((rc = tx(q, Q_BEGIN)) != SQLITE_OK) return fail(q, rc, "migrating the schema");
  rc = sqlite3_exec(q->db,
                    "CREATE TABLE IF NOT EXISTS scheduler_migrations ("
                    " version INTEGER PRIMARY KEY,"
                    " applied_at REAL NOT NULL)",
                    NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = schema_version(q, &version);
  if (rc != SQLITE_OK) return fail(q, rc, "migrating the schema");
  for (int v = version + 1; v <= SCHEMA_VERSION; v++) {
    char what[64], record[128];
    snprintf(what, sizeof what, "applying schema migration %d", v);
    snprintf(record, sizeof record,
             "INSERT INTO scheduler_migrations (version, applied_at) VALUES (%d, %.6f)", v,
             clock_wall());
    rc = sqlite3_exec(q->db, migrations[v - 1], NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(q->db, record, NULL, NULL, NULL);
    /* (the triggers of the partitions, if a limit has a by already) */
    if (rc == SQLITE_OK && v == 14) rc = part_triggers(q);
    if (rc != SQLITE_OK) return fail(q, rc, what);
  }
  if ((rc = tx(q, Q_COMMIT)) != SQLITE_OK) return fail(q, rc, "migrating the schema");
  return STORE_OK;
}

/* Switch a new file to WAL mode.  That needs the file's exclusive lock;
 * processes opening the same new file at once can each hold its shared lock
 * while waiting for the exclusive one, a deadlock that no busy handler
 * resolves (each would wait out BUSY_TIMEOUT).  So wait briefly, give up
 * the attempt (releasing the shared lock), back off a moment that differs
 * between processes, and try again, for up to BUSY_TIMEOUT in all. */
static int set_wal(sq_store *q, char *text, size_t size) {
  double start = clock_mono();
  unsigned jitter = (unsigned)getpid();
  int rc;
  q->busy_limit = 0.05;
  for (;;) {
    rc = pragma_text(q, "PRAGMA journal_mode = WAL", text, size);
    if ((rc & 0xff) != SQLITE_BUSY || clock_mono() - start >= BUSY_TIMEOUT) break;
    jitter = jitter * 1103515245u + 12345u;
    struct timespec ts = {0, 1000000L + (long)(jitter % 20000u) * 1000L}; /* 1-21 ms */
    nanosleep(&ts, NULL);
  }
  q->busy_limit = BUSY_TIMEOUT;
  return rc;
}

/* SQL scheduler_bucket(late, v): the histogram bucket of v (store.h,
 * durations): how many of the bounds (LATENESS_BOUNDS when late is 1,
 * else DURATION_BOUNDS) are below it, so a value equal to a bound is in
 * that bound's bucket, as Prometheus' "le" says. */
static void sql_bucket(sqlite3_context *cx, int argc, sqlite3_value **argv) {
  static const double bounds[2][DURATION_BUCKETS] = {DURATION_BOUNDS_INIT, LATENESS_BOUNDS_INIT};
  (void)argc;
  const double *b = bounds[sqlite3_value_int(argv[0]) == 1];
  double v = sqlite3_value_double(argv[1]);
  int k = 0;
  while (k < DURATION_BUCKETS && b[k] < v) k++;
  sqlite3_result_int(cx, k);
}

static int sq_connect(store *s) {
  sq_store *q = SQ(s);
  if (q->db) return STORE_OK;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(q->path, &q->db, flags, q->memory ? "memdb" : NULL);
  if (rc != SQLITE_OK) {
    int code;
    if (!q->db) {
      code = store_fail(s, STORE_NOMEM, "opening the database: not enough memory");
    } else {
      code = fail(q, rc, "cannot open the database");
      sqlite3_close(q->db);
      q->db = NULL;
    }
    return code;
  }
  sqlite3_extended_result_codes(q->db, 1);
  sqlite3_busy_handler(q->db, on_busy, q);
  rc = sqlite3_create_function(q->db, "scheduler_listener_max", 1, SQLITE_UTF8, q, listener_max,
                               NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_create_function(q->db, "scheduler_bucket", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                 NULL, sql_bucket, NULL, NULL);
  if (rc != SQLITE_OK) {
    int code = fail(q, rc, "cannot open the database");
    sq_disconnect_now(q);
    return code;
  }
  if (!q->memory && sqlite3_db_readonly(q->db, "main") == 1) {
    store_fail(s, STORE_DOWN,
               "cannot open the database: %s is read-only (the file's permissions or its file "
               "system); lua-scheduler needs to write it",
               q->path);
    sq_disconnect_now(q);
    return STORE_DOWN;
  }
  char text[64];
  /* Read first: a file that is not a database is reported (SQLITE_NOTADB)
   * before anything could be written to it. */
  rc = pragma_text(q, "SELECT count(*) FROM sqlite_master", text, sizeof text);
  if (rc != SQLITE_OK) {
    int code = fail(q, rc, "cannot open the database");
    sq_disconnect_now(q);
    return code;
  }
  if (!q->memory) {
    rc = pragma_text(q, "PRAGMA journal_mode", text, sizeof text);
    if (rc == SQLITE_OK && strcmp(text, "wal") != 0)
      rc = set_wal(q, text, sizeof text);
    if (rc == SQLITE_OK && strcmp(text, "wal") != 0) {
      store_fail(s, STORE_DOWN,
                 "cannot open the database: %s cannot use WAL mode (journal mode \"%s\"); is it on "
                 "a network file system?",
                 q->path, text);
      sq_disconnect_now(q);
      return STORE_DOWN;
    }
    /* FULL: the WAL is synced at every commit, so a committed job
     * survives power loss too, not only a crash of the process */
    if (rc == SQLITE_OK) rc = pragma_text(q, "PRAGMA synchronous = FULL", text, sizeof text);
    if (rc == SQLITE_OK)
      rc = pragma_text(q, "PRAGMA journal_size_limit = " WAL_SIZE_LIMIT, text, sizeof text);
    if (rc != SQLITE_OK) {
      int code = fail(q, rc, "cannot open the database");
      sq_disconnect_now(q);
      return code;
    }
  }
  open_wake(q); /* only now: never a side file next to a file that is not ours */
  int code = migrate(q);
  if (code != STORE_OK) {
    sq_disconnect_now(q);
    return code;
  }
  double dv;
  sqlite3_stmt *st = stmt(q, Q_DATA_VERSION, &rc);
  if (st) rc = query_double(q, st, &dv);
  if (rc != SQLITE_OK) {
    code = fail(q, rc, "cannot open the database");
    sq_disconnect_now(q);
    return code;
  }
  q->data_version = (long long)dv;
  if (q->listening) watch(q);
  return STORE_OK;
}

/* Connect and begin an IMMEDIATE transaction: STORE_OK or an error. */
static int begin(sq_store *q, const char *what) {
  int rc = sq_connect(&q->base);
  if (rc != STORE_OK) return rc;
  if ((rc = tx(q, Q_BEGIN)) != SQLITE_OK) return fail(q, rc, what);
  return STORE_OK;
}

/* begin() for a transaction whose commit need not wait for the disk:
 * claims and lease renewals, whose loss in a power failure is harmless (the
 * job is claimable again and runs again: at least once).  The WAL is
 * sequential, so a later synced commit (the job's completion) makes this
 * one durable too.  The level can only change outside a transaction;
 * commit() and fail() put FULL back. */
static int begin_unsynced(sq_store *q, const char *what) {
  int rc = sq_connect(&q->base);
  if (rc != STORE_OK || q->memory) return rc == STORE_OK ? begin(q, what) : rc;
  if ((rc = tx(q, Q_SYNC_NORMAL)) != SQLITE_OK) return fail(q, rc, what);
  q->relaxed = 1;
  return begin(q, what);
}

/* Commit; on success ring the wake file when `wake`. */
static int commit(sq_store *q, const char *what, int wake) {
  int rc = tx(q, Q_COMMIT);
  lower_flag(q);
  if (rc != SQLITE_OK) return fail(q, rc, what);
  if (q->relaxed && restore_sync(q) != SQLITE_OK) return fail(q, SQLITE_ERROR, what);
  if (wake) ring(q);
  yield_to_waiters(q);
  return STORE_OK;
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */

#define NUL_REFUSED ", which lua-scheduler refuses on every backend (PostgreSQL cannot store it)"

/* Insert a job unless an unfinished job holds its key; *id = the new or
 * the existing job.  Inside a transaction.  SQLite result code. */
static int insert_job(sq_store *q, const char *name, size_t name_len, const char *payload,
                      size_t payload_len, double run_at, const char *key, size_t key_len,
                      long long priority, long long max_attempts, double now, int64_t *id,
                      int *inserted) {
  int rc;
  sqlite3_stmt *st;
  *inserted = 0;
  if (key) {
    if (!(st = stmt(q, Q_KEY_FIND, &rc))) return rc;
    bind_text(st, 1, key, key_len);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    finish_stmt(st);
    if (rc == SQLITE_ROW) return SQLITE_OK;
    if (rc != SQLITE_DONE) return rc;
  }
  if (!(st = stmt(q, Q_INSERT, &rc))) return rc;
  bind_text(st, 1, name, name_len);
  bind_text(st, 2, payload, payload_len);
  sqlite3_bind_double(st, 3, run_at);
  bind_text(st, 4, key, key_len);
  sqlite3_bind_int64(st, 5, priority);
  if (max_attempts > 0)
    sqlite3_bind_int64(st, 6, max_attempts);
  else
    sqlite3_bind_null(st, 6);
  sqlite3_bind_double(st, 7, now);
  if ((rc = run_write(q, st, NULL)) != SQLITE_OK) return rc;
  *id = sqlite3_last_insert_rowid(q->db);
  *inserted = 1;
  return SQLITE_OK;
}

/* STORE_OK, or the error for a NUL byte in a job's strings. */
static int check_nul(store *s, const store_new_job *j) {
  if (memchr(j->name, 0, j->name_len))
    return store_fail(s, STORE_ERROR, "the name contains a NUL byte" NUL_REFUSED);
  if (j->key && memchr(j->key, 0, j->key_len))
    return store_fail(s, STORE_ERROR, "the key contains a NUL byte" NUL_REFUSED);
  if (j->payload_has_nul)
    return store_fail(s, STORE_ERROR, "the payload contains a NUL byte (\\u0000)" NUL_REFUSED);
  return STORE_OK;
}

/* Insert jobs[0, n) in one transaction (all or none): ids[i] for jobs[i]. */
static int schedule_jobs(sq_store *q, const store_new_job *jobs, size_t n, int64_t *ids) {
  for (size_t i = 0; i < n; i++) {
    int rc = check_nul(&q->base, &jobs[i]);
    if (rc) return rc;
  }
  int rc = begin(q, "database error");
  if (rc) return rc;
  double now = clock_wall();
  int wake = 0;
  for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
    const store_new_job *j = &jobs[i];
    double run_at = j->has_at ? j->at : now + (j->has_delay ? j->delay : 0);
    int inserted;
    rc = insert_job(q, j->name, j->name_len, j->payload, j->payload_len, run_at, j->key, j->key_len,
                    j->priority, j->max_attempts, now, &ids[i], &inserted);
    wake |= inserted;
  }
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  return commit(q, "database error", wake);
}

static int sq_schedule(store *s, const store_new_job *j, int64_t *id) {
  return schedule_jobs(SQ(s), j, 1, id);
}

static int sq_schedule_many(store *s, const store_new_job *jobs, size_t n, int64_t *ids) {
  if (n == 0) return sq_connect(s);
  return schedule_jobs(SQ(s), jobs, n, ids);
}

/* One write statement on a job id, in its own transaction. */
static int write_id(sq_store *q, int which, int64_t id, int *done) {
  *done = 0;
  int rc = begin(q, "database error");
  if (rc) return rc;
  sqlite3_stmt *st = NULL;
  if (which == Q_CANCEL && q->base.history > 0 && (st = stmt(q, Q_HIST_CANCEL, &rc))) {
    /* history: the job as it was, before it goes (same transaction) */
    double now = clock_wall();
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_double(st, 2, now);
    sqlite3_bind_double(st, 3, q->base.history);
    rc = run_write(q, st, NULL);
    if (rc != SQLITE_OK) st = NULL;
  } else {
    rc = SQLITE_OK;
  }
  if (rc == SQLITE_OK) st = stmt(q, which, &rc);
  if (st) {
    sqlite3_bind_int64(st, 1, id);
    if (which == Q_RETRY) sqlite3_bind_double(st, 2, clock_wall());
    rc = run_write(q, st, done);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  *done = *done > 0;
  return commit(q, "database error", which == Q_RETRY && *done);
}

/* Answer the cancel requests for the jobs ids[0, k) with `verdict`
 * ("cancelled" or "started"), in the write transaction in progress.
 * SQLite result code. */
static int answer(sq_store *q, const int64_t *ids, size_t k, const char *verdict) {
  int rc = SQLITE_OK;
  for (size_t i = 0; i < k && rc == SQLITE_OK; i++) {
    sqlite3_stmt *st = stmt(q, Q_VERDICT, &rc);
    if (!st) break;
    sqlite3_bind_int64(st, 1, ids[i]);
    sqlite3_bind_text(st, 2, verdict, -1, SQLITE_STATIC);
    rc = run_write(q, st, NULL);
  }
  return rc;
}

/* A leased job that its worker has not answered for about is one that
 * started: a living worker answers between two jobs, and hands back the
 * unstarted jobs of a batch stuck behind a slow one within a second
 * (heartbeat.h). */
#define CANCEL_LEASED_WAIT 2.0
#define CANCEL_LOOK 0.001

static void sleep_seconds(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

/* store_ops.cancel.  A waiting job is deleted at once.  One that a worker
 * leases is asked for (a row in scheduler_cancels) and the worker answers
 * (sq_cancels): it does not start it and deletes it ("cancelled"), or it
 * had started it ("started").  Jobs handed back and expired leases honour
 * a pending request. */
static int sq_cancel(store *s, int64_t id, int *done) {
  sq_store *q = SQ(s);
  double start = clock_mono(), pause = 0.002;
  int asked = 0, rc;
  for (;;) {
    rc = write_id(q, Q_CANCEL, id, done);
    if (rc || *done) break;
    sqlite3_stmt *st = stmt(q, Q_CANCEL_LOOK, &rc);
    if (!st) {
      rc = fail(q, rc, "database error");
      break;
    }
    sqlite3_bind_int64(st, 1, id);
    char state = 0, verdict = 0;
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const unsigned char *a = sqlite3_column_text(st, 0), *b = sqlite3_column_text(st, 1);
      state = a ? (char)a[0] : 0, verdict = b ? (char)b[0] : 0;
      rc = SQLITE_OK;
    }
    finish_stmt(st);
    if (rc != SQLITE_OK && rc != SQLITE_DONE) {
      rc = fail(q, rc, "database error");
      break;
    }
    rc = STORE_OK;
    if (verdict == 'c') *done = 1;
    if (verdict || state != 'r' || clock_mono() - start >= CANCEL_LEASED_WAIT) break;
    if (!asked) {
      if ((rc = begin(q, "database error"))) break;
      if ((st = stmt(q, Q_CANCEL_ASK, &rc))) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_double(st, 2, clock_wall());
        rc = run_write(q, st, NULL);
      }
      if (rc != SQLITE_OK) {
        rc = fail(q, rc, "database error");
        break;
      }
      if ((rc = commit(q, "database error", 0))) break;
      asked = 1;
    }
    sleep_seconds(pause);
    pause = pause * 2 > 0.05 ? 0.05 : pause * 2;
  }
  if (asked) {
    int ignored;
    write_id(q, Q_CANCEL_END, id, &ignored);
  }
  return rc;
}

/* store_ops.cancels: the requests of sq_cancel, looked for at most every
 * CANCEL_LOOK seconds and only when another connection wrote since. */
static int sq_cancels(store *s, const store_claim *b, size_t n, size_t next) {
  sq_store *q = SQ(s);
  double now = clock_mono(), version = 0;
  if (now - q->asked_at < CANCEL_LOOK) return 0;
  q->asked_at = now;
  int rc;
  sqlite3_stmt *st = stmt(q, Q_DATA_VERSION, &rc);
  if (!st || query_double(q, st, &version) != SQLITE_OK || version == q->asked_version) return 0;
  q->asked_version = version;
  if (!(st = stmt(q, Q_ASKED, &rc))) return 0;
  int cancel = 0;
  size_t started = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(st, 0);
    for (size_t i = 0; i < n && i <= next; i++) {
      if (b[i].id != id) continue;
      if (i == next)
        cancel = 1;
      else if (!reserve((void **)&q->asked, &q->asked_cap, started + 1, sizeof *q->asked))
        q->asked[started++] = id; /* it has started */
    }
  }
  finish_stmt(st);
  if (started && begin_unsynced(q, "answering a cancel") == STORE_OK) {
    rc = answer(q, q->asked, started, "started");
    if (rc == SQLITE_OK)
      commit(q, "answering a cancel", 0);
    else
      fail(q, rc, "answering a cancel");
  }
  return cancel;
}

static int sq_retry(store *s, int64_t id, int *done) { return write_id(SQ(s), Q_RETRY, id, done); }

/* Copy column i (text, or NULL) into arena a.  *oom is set on failure. */
static const char *col_text(sqlite3_stmt *st, int i, arena *a, size_t *len, int *oom) {
  *len = 0;
  if (sqlite3_column_type(st, i) == SQLITE_NULL) return NULL;
  const unsigned char *t = sqlite3_column_text(st, i);
  if (!t) {
    *oom = 1;
    return NULL;
  }
  size_t n = (size_t)sqlite3_column_bytes(st, i);
  char *c = arena_dup(a, t, n);
  if (!c) *oom = 1;
  *len = n;
  return c;
}

static const char *state_name(const unsigned char *t) {
  static const char *const states[] = {"scheduled", "running", "failed"};
  for (int i = 0; i < 3; i++)
    if (t && strcmp((const char *)t, states[i]) == 0) return states[i];
  return "unknown";
}

/* Fill j from a row of JOB_COLUMNS (strings copied into a).  0, or -1 out
 * of memory. */
static int read_job(sqlite3_stmt *st, store_job *j, arena *a) {
  int oom = 0;
  memset(j, 0, sizeof *j);
  j->id = sqlite3_column_int64(st, 0);
  j->name = col_text(st, 1, a, &j->name_len, &oom);
  j->payload = col_text(st, 2, a, &j->payload_len, &oom);
  j->run_at = sqlite3_column_double(st, 3);
  j->attempt = sqlite3_column_int64(st, 4);
  j->max_attempts = sqlite3_column_type(st, 5) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 5);
  j->key = col_text(st, 6, a, &j->key_len, &oom);
  j->priority = sqlite3_column_int64(st, 7);
  if (!j->name && !oom) j->name = arena_dup(a, "", 0);
  return oom || !j->name ? -1 : 0;
}

static int sq_get(store *s, int64_t id, store_job *out, int *found) {
  sq_store *q = SQ(s);
  *found = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_GET, &rc);
  if (!st) return fail(q, rc, "database error");
  sqlite3_bind_int64(st, 1, id);
  rc = sqlite3_step(st);
  int oom = 0;
  if (rc == SQLITE_ROW) {
    arena_reset(&q->got);
    oom = read_job(st, out, &q->got) != 0;
    out->state = state_name(sqlite3_column_text(st, 8));
    out->last_error = col_text(st, 9, &q->got, &out->last_error_len, &oom);
    *found = !oom;
  }
  finish_stmt(st);
  if (oom) return store_fail(s, STORE_NOMEM, "not enough memory");
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return fail(q, rc, "database error");
  return STORE_OK;
}

static int grow_jobs(sq_store *q, size_t n) {
  if (n <= q->jobs_cap) return 0;
  size_t cap = q->jobs_cap ? q->jobs_cap * 2 : 64;
  while (cap < n) cap *= 2;
  store_job *p = realloc(q->jobs, cap * sizeof *p);
  if (!p) return -1;
  q->jobs = p;
  q->jobs_cap = cap;
  return 0;
}

/* Whether job `id` of partitioned name l is in a partition (store.h,
 * limit: PARTITIONS) whose jobs running fill its limit, or whose rate's
 * bucket holds no whole token at `now` (store.h, limit: RATES): *full;
 * its partition in `part` (for the claim to spend its token). */
static int part_full(sq_store *q, const sq_limit *l, sqlite3_int64 id, double now, int *full, buf *part) {
  int rc;
  *full = 1;
  buf_reset(part);
  sqlite3_stmt *st = stmt(q, Q_PART_FULL, &rc);
  if (!st) return rc;
  bind_text(st, 1, l->s, l->len);
  bind_text(st, 2, l->by, l->by_len);
  sqlite3_bind_int64(st, 3, id);
  sqlite3_bind_int64(st, 4, l->concurrency);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *full = sqlite3_column_int(st, 0) != 0;
    if (!*full && l->rate && sqlite3_column_type(st, 2) != SQLITE_NULL) {
      double ahead = sqlite3_column_double(st, 2) - now;
      double tokens = rate_cap(l) + 1e-6 - (ahead > 0 ? ahead : 0) / STORE_RATE_STEP(l->rate, l->per);
      *full = tokens < 1;
    }
    if (buf_add(part, (const char *)sqlite3_column_text(st, 1), (size_t)sqlite3_column_bytes(st, 1)))
      rc = SQLITE_NOMEM;
    else
      rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK; /* the job is gone */
  }
  finish_stmt(st);
  return rc;
}

/* Bind Q_PART_PICK for partitioned name l at `now`: at most `cap` of
 * each partition, `max` in all. */
static void bind_part_pick(sqlite3_stmt *st, const sq_limit *l, double now, long long cap,
                           size_t max) {
  bind_text(st, 1, l->s, l->len);
  bind_text(st, 2, l->by, l->by_len);
  sqlite3_bind_double(st, 3, now);
  /* (no partition gives more than `max`: its walk reads no further) */
  sqlite3_bind_int64(st, 4, (size_t)cap > max ? (sqlite3_int64)max : cap);
  sqlite3_bind_int64(st, 5, l->concurrency);
  sqlite3_bind_int64(st, 6, (sqlite3_int64)max);
  if (l->turn) bind_text(st, 7, l->turn, l->turn_len);
  sqlite3_bind_int64(st, 8, l->rate);
  sqlite3_bind_double(st, 9, l->rate ? STORE_RATE_STEP(l->rate, l->per) : 1);
  sqlite3_bind_double(st, 10, l->rate ? rate_cap(l) : 0);
}

/* Add to q->jobs (from *got on) up to `max` due jobs at `now` of
 * partitioned name l, at most `cap` of each partition (Q_PART_PICK), and
 * move its turn to the partition of the last one.  *oom on a memory
 * failure. */
static int part_pick(sq_store *q, const sq_limit *l, double now, long long cap, size_t max,
                     size_t *got, int *oom) {
  int rc;
  sqlite3_stmt *st = stmt(q, Q_PART_PICK, &rc);
  if (!st) return rc;
  bind_part_pick(st, l, now, cap, max);
  buf turn = BUF_INIT, parts = BUF_INIT; /* parts: (size_t length, bytes) each, for a rate */
  size_t first = *got; /* the first job it takes: parts' jobs, in order */
  int took = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (grow_jobs(q, *got + 1) || read_job(st, &q->jobs[*got], &q->claimed)) {
      *oom = 1;
      break;
    }
    q->jobs[(*got)++].attempt++;
    buf_reset(&turn);
    size_t plen = (size_t)sqlite3_column_bytes(st, 8);
    if (buf_add(&turn, (const char *)sqlite3_column_text(st, 8), plen) ||
        (l->rate && (buf_add(&parts, (const char *)&plen, sizeof plen) ||
                     buf_add(&parts, turn.len ? turn.data : "", plen)))) {
      *oom = 1;
      break;
    }
    took = 1;
  }
  finish_stmt(st);
  if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  /* spend the partitions' tokens (store.h, limit: RATES): a step per job
   * on its partition's bucket, from itself or from now, the job held
   * until its token (rate_hold); then drop the buckets full again.  After
   * the pick, whose reads they would change. */
  double step = l->rate ? STORE_RATE_STEP(l->rate, l->per) : 0;
  for (size_t at = 0, k = first; rc == SQLITE_OK && !*oom && at < parts.len; k++) {
    size_t plen;
    double tat;
    memcpy(&plen, parts.data + at, sizeof plen);
    at += sizeof plen;
    sqlite3_stmt *up = stmt(q, Q_RATE_PART, &rc);
    if (!up) break;
    bind_text(up, 1, l->s, l->len);
    bind_text(up, 2, plen ? parts.data + at : "", plen);
    sqlite3_bind_double(up, 3, now);
    sqlite3_bind_double(up, 4, step);
    if ((rc = query_double(q, up, &tat)) == SQLITE_OK && k < *got && !isnan(tat))
      q->jobs[k].hold = rate_hold(l, tat, now);
    at += plen;
  }
  sqlite3_stmt *prune = l->rate && rc == SQLITE_OK && !*oom ? stmt(q, Q_RATE_PRUNE, &rc) : NULL;
  if (prune) {
    bind_text(prune, 1, l->s, l->len);
    sqlite3_bind_double(prune, 2, now);
    rc = run_write(q, prune, NULL);
  }
  buf_free(&parts);
  sqlite3_stmt *up = rc == SQLITE_OK && took && !*oom ? stmt(q, Q_PART_TURN, &rc) : NULL;
  if (up) {
    bind_text(up, 1, l->s, l->len);
    bind_text(up, 2, turn.len ? turn.data : "", turn.len);
    rc = run_write(q, up, NULL);
  }
  buf_free(&turn);
  return rc;
}

/* One IMMEDIATE transaction: collect a quarantined due job of this
 * worker's names alone if there is one (with `take_alone`; without it,
 * *quarantine 1 says one waits), else up to `limit` due jobs of them in
 * (priority, run_at, id) order, those of partitioned limited names first
 * (part_pick); then mark them running with the next
 * attempt, a lease until *until (<= 0: now + lease, set in it) and a
 * new token.  *quarantine 2: the job is a quarantined one, alone.
 * Nobody else can claim in between. */
static int claim_jobs(store *s, size_t limit, double lease, double *until, const char *worker,
                      size_t alone_max, int one_limited, store_job **jobs, size_t *n,
                      int *quarantine) {
  sq_store *q = SQ(s);
  *jobs = NULL;
  *n = 0;
  *quarantine = 0;
  if (q->n_names == 0 || limit == 0) return sq_connect(s);
  int rc = begin_unsynced(q, "claiming jobs");
  if (rc) return rc;
  double now = clock_wall(), began = clock_mono();
  size_t got = 0;
  int oom = 0;
  q->claimed_at = now;
  q->n_jobs = 0;
  arena_reset(&q->claimed);
  /* a paused name's jobs are not claimed: read in this transaction */
  if ((rc = load_paused(q)) != SQLITE_OK) return fail(q, rc, "claiming jobs");
  /* and a limited name's only up to its free slots (store.h, limit); a
   * worker that runs its batch in turn takes one of each (`one_limited`):
   * a slot taken by a job waiting in the batch would run nothing */
  if ((rc = load_limits(q, now)) != SQLITE_OK) return fail(q, rc, "claiming jobs");
  for (size_t i = 0; one_limited && i < q->n_limited; i++)
    if (q->limited[i].free > 1) q->limited[i].free = 1;
  sqlite3_stmt *alone = stmt(q, Q_QUARANTINED, &rc);
  buf part = BUF_INIT;          /* the partition of a partitioned name's job */
  const sq_limit *spend = NULL; /* that name, when its job is taken */
  if (alone) {
    sqlite3_bind_double(alone, 1, now);
    size_t take = 0; /* by halves: half the first one's suspects */
    while ((rc = sqlite3_step(alone)) == SQLITE_ROW) {
      const unsigned char *name = sqlite3_column_text(alone, 1);
      size_t name_len = (size_t)sqlite3_column_bytes(alone, 1);
      if (!wants(q, (const char *)name, name_len) || is_paused(q, (const char *)name, name_len))
        continue;
      /* one of a full limited name (or partition) waits for a slot,
       * holding nothing back */
      sq_limit *l = limit_of(q, (const char *)name, name_len);
      if (l && l->free <= 0) continue;
      if (l && l->by) {
        int full;
        if ((rc = part_full(q, l, sqlite3_column_int64(alone, 0), now, &full, &part)) != SQLITE_OK) break;
        if (full) continue;
      }
      *quarantine = 1;
      if (!alone_max) break;
      *quarantine = 2;
      if (!take) {
        sqlite3_int64 suspects = sqlite3_column_int64(alone, 8);
        take = suspects > 1 ? (size_t)(suspects + 1) / 2 : 1;
        if (take > alone_max) take = alone_max;
      }
      if (grow_jobs(q, got + 1) || read_job(alone, &q->jobs[got], &q->claimed)) {
        oom = 1;
        break;
      }
      q->jobs[got++].attempt++;
      if (l) l->free--, l->taken++;
      /* (of a partitioned name, one: part_full does not count this claim's;
       * its partition's token is spent below) */
      if (l && l->by) spend = l;
      if (got >= take || (l && l->by)) break;
    }
    finish_stmt(alone);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  if (spend && spend->rate && rc == SQLITE_OK) {
    /* the quarantined job's partition's bucket, a step on (Q_RATE_PART,
     * as part_pick spends a partition's) */
    sqlite3_stmt *up = stmt(q, Q_RATE_PART, &rc);
    double tat;
    if (up) {
      bind_text(up, 1, spend->s, spend->len);
      bind_text(up, 2, part.len ? part.data : "", part.len);
      sqlite3_bind_double(up, 3, now);
      sqlite3_bind_double(up, 4, STORE_RATE_STEP(spend->rate, spend->per));
      if ((rc = query_double(q, up, &tat)) == SQLITE_OK && got && !isnan(tat))
        q->jobs[got - 1].hold = rate_hold(spend, tat, now);
    }
  }
  buf_free(&part);
  if (*until <= 0) *until = now + lease;
  /* the partitioned limited names (store.h, limit: PARTITIONS), when no
   * quarantined job is taken: round-robin across partitions */
  int alone_got = got > 0;
  for (size_t i = 0; !alone_got && rc == SQLITE_OK && !oom && got < limit && i < q->n_names; i++) {
    const sq_limit *l = limit_of(q, q->names[i].s, q->names[i].len);
    if (!l || !l->by || is_paused(q, q->names[i].s, q->names[i].len)) continue;
    /* (one at a time: one job of the name, the next partition's in turn) */
    rc = part_pick(q, l, now, one_limited ? 1 : l->concurrency ? l->concurrency : (long long)limit,
                   one_limited ? 1 : limit - got,
                   &got, &oom);
  }
  /* then the other names' jobs, by the index of claim order: only if one
   * of this worker's names can give one (not paused, and not limited or
   * with a free slot and no `by`), else the walk would read every due job
   * of its partitioned and full names only to skip them */
  int open = 0;
  for (size_t i = 0; !open && i < q->n_names; i++) {
    const sq_limit *l = limit_of(q, q->names[i].s, q->names[i].len);
    open = !is_paused(q, q->names[i].s, q->names[i].len) && (!l || (!l->by && l->free > 0));
  }
  sqlite3_stmt *prio = alone_got || rc || oom || !open ? NULL : stmt(q, Q_NEXT_PRIORITY, &rc);
  sqlite3_stmt *due = prio ? stmt(q, Q_DUE, &rc) : NULL;
  long long p = -1;
  while (due && got < limit && !oom) {
    double next;
    sqlite3_bind_int64(prio, 1, p);
    if ((rc = query_double(q, prio, &next)) != SQLITE_OK || isnan(next)) break;
    p = (long long)next;
    sqlite3_bind_int64(due, 1, p);
    sqlite3_bind_double(due, 2, now);
    while (got < limit && (rc = sqlite3_step(due)) == SQLITE_ROW) {
      const unsigned char *name = sqlite3_column_text(due, 1);
      size_t name_len = (size_t)sqlite3_column_bytes(due, 1);
      if (!wants(q, (const char *)name, name_len) || is_paused(q, (const char *)name, name_len) ||
          !take_slot(q, (const char *)name, name_len))
        continue;
      if (grow_jobs(q, got + 1) || read_job(due, &q->jobs[got], &q->claimed)) {
        oom = 1;
        break;
      }
      q->jobs[got].attempt++;
      got++;
    }
    finish_stmt(due);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) break;
    rc = SQLITE_OK;
  }
  if (oom) {
    fail(q, SQLITE_NOMEM, "claiming jobs");
    return STORE_NOMEM;
  }
  if (rc != SQLITE_OK) return fail(q, rc, "claiming jobs");
  double token = 0;
  sqlite3_stmt *take = NULL;
  if (got) {
    sqlite3_stmt *st = stmt(q, Q_TOKEN, &rc);
    if (st) rc = query_double(q, st, &token);
    if (rc == SQLITE_OK) take = stmt(q, Q_TAKE, &rc);
  }
  for (size_t i = 0; take && i < got; i++) {
    q->jobs[i].state = "running";
    q->jobs[i].token = (int64_t)token;
    sqlite3_bind_int64(take, 1, q->jobs[i].id);
    sqlite3_bind_text(take, 2, worker, -1, SQLITE_STATIC);
    sqlite3_bind_double(take, 3, *until);
    sqlite3_bind_int64(take, 4, (sqlite3_int64)token);
    if ((rc = run_write(q, take, NULL)) != SQLITE_OK) break;
  }
  /* spend the tokens of the rates (store.h, limit: RATES): each bucket
   * moves `taken` steps on from itself or from now, whichever is later,
   * its jobs (in claim order) held until their tokens */
  for (size_t i = 0; rc == SQLITE_OK && got && i < q->n_limited; i++) {
    sq_limit *l = &q->limited[i];
    if (!l->rate || !l->taken || l->by) continue; /* (partitions: part_pick) */
    double from = isnan(l->tat) || l->tat < now ? now : l->tat;
    for (size_t k = 0, m = 0; k < got; k++)
      if (q->jobs[k].name_len == l->len && memcmp(q->jobs[k].name, l->s, l->len) == 0)
        q->jobs[k].hold = rate_hold(l, from + (double)++m * STORE_RATE_STEP(l->rate, l->per), now);
    sqlite3_stmt *up = stmt(q, Q_RATE_TAKE, &rc);
    if (!up) break;
    bind_text(up, 1, l->s, l->len);
    sqlite3_bind_double(up, 2, from + (double)l->taken * STORE_RATE_STEP(l->rate, l->per));
    rc = run_write(q, up, NULL);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "claiming jobs");
  if ((rc = commit(q, "claiming jobs", 0)) != STORE_OK) return rc;
  /* the holds count from the clock the tokens were spent at, read in this
   * process: what the claim took since is gone from them (the worker
   * counts a hold from the answer) */
  double spent = clock_mono() - began;
  for (size_t i = 0; i < got; i++) q->jobs[i].hold = q->jobs[i].hold > spent ? q->jobs[i].hold - spent : 0;
  *jobs = q->jobs;
  *n = q->n_jobs = got;
  return STORE_OK;
}

static int sq_claim(store *s, size_t limit, double lease, const char *worker,
                    long long default_max_attempts, store_job **jobs, size_t *n) {
  (void)default_max_attempts; /* leases: an expired one is counted by rescue */
  double until = 0;
  int quarantine;
  /* quarantined jobs one at a time: a batch runs its jobs in turn */
  return claim_jobs(s, limit, lease, &until, worker, 1, 1, jobs, n, &quarantine);
}

static int sq_claim_leased(store *s, size_t limit, double lease, double *until,
                           const char *worker, int alone, store_job **jobs, size_t *n,
                           int *quarantine) {
  return claim_jobs(s, limit, lease, until, worker, alone ? limit : 0, 0, jobs, n, quarantine);
}

/* Count one completion of the job name s[0, n). */
static int count_done(sq_store *q, const char *s, size_t n) {
  if (!s) return SQLITE_NOMEM;
  for (size_t i = 0; i < q->n_done; i++) {
    done_count *d = &q->done[i];
    if (d->len == n && memcmp(q->done_names.data + d->off, s, n) == 0) {
      d->n++;
      return SQLITE_OK;
    }
  }
  if (reserve((void **)&q->done, &q->done_cap, q->n_done, sizeof *q->done)) return SQLITE_NOMEM;
  q->done[q->n_done] = (done_count){q->done_names.len, n, 1};
  if (buf_add(&q->done_names, s, n)) return SQLITE_NOMEM;
  q->n_done++;
  return SQLITE_OK;
}

/* The job (id, token) of the last claim's batch, or NULL.  Outcomes are
 * reported in the batch's order, so the one at `hint` usually is it. */
static const store_job *claimed_job(const sq_store *q, size_t hint, int64_t id, int64_t token) {
  if (hint < q->n_jobs && q->jobs[hint].id == id && q->jobs[hint].token == token)
    return &q->jobs[hint];
  for (size_t i = 0; i < q->n_jobs; i++)
    if (q->jobs[i].id == id && q->jobs[i].token == token) return &q->jobs[i];
  return NULL;
}

/* Delete a completed job (Q_DONE, bound to id and token) and count it
 * under its name: known from the claim (no statement: a SELECT per job
 * would cost a tenth of a drain's speed, DELETE ... RETURNING a quarter),
 * else read first, with the same fence, in the same write transaction. */
static int delete_done(sq_store *q, sqlite3_stmt *done, size_t hint, int64_t id,
                       int64_t token) {
  const store_job *j = claimed_job(q, hint, id, token);
  int rc, changed = 0;
  if (j) {
    rc = run_write(q, done, &changed);
    return rc == SQLITE_OK && changed ? count_done(q, j->name, j->name_len) : rc;
  }
  sqlite3_stmt *st = stmt(q, Q_DONE_NAME, &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, id);
  sqlite3_bind_int64(st, 2, token);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    rc = count_done(q, (const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0));
  else if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  finish_stmt(st);
  return rc == SQLITE_OK ? run_write(q, done, NULL) : rc;
}

/* Add the counted completions to their buckets (second `now`). */
static int record_completions(sq_store *q, double now) {
  int rc = SQLITE_OK;
  sqlite3_stmt *st = q->n_done ? stmt(q, Q_COMPLETED, &rc) : NULL;
  for (size_t i = 0; st && i < q->n_done && rc == SQLITE_OK; i++) {
    sqlite3_bind_int64(st, 1, (sqlite3_int64)floor(now));
    bind_text(st, 2, q->done_names.data + q->done[i].off, q->done[i].len);
    sqlite3_bind_int64(st, 3, q->done[i].n);
    rc = run_write(q, st, NULL);
  }
  return rc;
}

/* 1 when a cancel request waits for job `id` (see sq_cancel), else 0;
 * *rc the SQLite result code. */
static int is_asked(sq_store *q, int64_t id, int *rc) {
  sqlite3_stmt *st = stmt(q, Q_IS_ASKED, rc);
  if (!st) return 0;
  sqlite3_bind_int64(st, 1, id);
  int step = sqlite3_step(st);
  finish_stmt(st);
  *rc = step == SQLITE_ROW || step == SQLITE_DONE ? SQLITE_OK : step;
  return step == SQLITE_ROW;
}

/* Delete the leased job (id, token) that cancel() asked for, answering
 * "cancelled" (see sq_cancel).  SQLite result code. */
static int drop_cancelled(sq_store *q, int64_t id, int64_t token) {
  int rc, changed = 0;
  sqlite3_stmt *st = stmt(q, Q_DONE, &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, id);
  sqlite3_bind_int64(st, 2, token);
  if ((rc = run_write(q, st, &changed)) != SQLITE_OK || !changed) return rc;
  return answer(q, &id, 1, "cancelled");
}

/* History: keep the claims of the outcomes o[0, n) that ask for it and
 * end their job, in one row (Q_HIST_KEEP), before the outcomes' writes.
 * Nothing when none asks.  SQLite result code. */
static int keep_history(sq_store *q, const store_outcome *o, size_t n, double now) {
  buf *b = &q->hist_json;
  size_t kept = 0;
  int err = 0;
  buf_reset(b);
  for (size_t i = 0; i < n && !err; i++) {
    const store_outcome *x = &o[i];
    const char *state = x->kind == OUTCOME_DONE        ? "done"
                        : x->kind == OUTCOME_FAILED    ? "failed"
                        : x->kind == OUTCOME_CANCELLED ? "cancelled"
                                                       : NULL;
    if (!(x->keep > 0) || !state) continue;
    int started = x->kind != OUTCOME_CANCELLED && !isnan(x->started_at);
    err |= buf_adds(b, kept++ ? ",[" : "[[");
    err |= buf_printf(b, "%lld,%lld,\"%s\",", (long long)x->claim.id, (long long)x->claim.token,
                      state);
    err |= started ? buf_printf(b, "%.6f,%.6f,", x->started_at, x->duration) : buf_adds(b, "null,0,");
    if (x->kind == OUTCOME_FAILED)
      err |= buf_add_json_string(b, buf_cstr(&x->error), x->error.len);
    else
      err |= buf_adds(b, "null");
    err |= buf_printf(b, ",%.6f]", x->keep);
  }
  if (err) return SQLITE_NOMEM;
  if (!kept) return SQLITE_OK;
  err |= buf_addc(b, ']');
  if (err) return SQLITE_NOMEM;
  int rc;
  sqlite3_stmt *st = stmt(q, Q_HIST_KEEP, &rc);
  if (!st) return rc;
  bind_text(st, 1, b->data, b->len);
  sqlite3_bind_double(st, 2, now);
  return run_write(q, st, NULL);
}

static int sq_finish(store *s, const store_outcome *o, size_t n) {
  sq_store *q = SQ(s);
  if (n == 0) return STORE_OK;
  int rc = begin(q, "recording outcomes");
  if (rc) return rc;
  double now = clock_wall();
  int wake = 0;
  q->n_done = 0;
  buf_reset(&q->done_names);
  rc = keep_history(q, o, n, now); /* the rows as they are, before the writes below */
  for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
    const store_outcome *x = &o[i];
    /* cancelled, or given back while a cancel request waits: dropped */
    if (x->kind == OUTCOME_CANCELLED ||
        (x->kind == OUTCOME_RELEASE && is_asked(q, x->claim.id, &rc))) {
      if (rc == SQLITE_OK) rc = drop_cancelled(q, x->claim.id, x->claim.token);
      continue;
    }
    if (rc != SQLITE_OK) break;
    int which = x->kind == OUTCOME_DONE      ? Q_DONE
                : x->kind == OUTCOME_RELEASE ? Q_BACK
                : x->kind == OUTCOME_SNOOZE  ? Q_SNOOZE
                                             : Q_AGAIN;
    sqlite3_stmt *st = stmt(q, which, &rc);
    if (!st) break;
    sqlite3_bind_int64(st, 1, x->claim.id);
    sqlite3_bind_int64(st, 2, x->claim.token);
    if (which == Q_AGAIN) {
      bind_double_or_null(st, 3, now + x->retry_in, x->kind == OUTCOME_RETRY);
      bind_text(st, 4, buf_cstr(&x->error), x->error.len);
    }
    if (which == Q_SNOOZE) sqlite3_bind_double(st, 3, now + x->retry_in);
    if (which == Q_DONE) {
      rc = delete_done(q, st, i, x->claim.id, x->claim.token);
      continue;
    }
    int changed = 0;
    rc = run_write(q, st, &changed);
    if (changed && (which == Q_BACK || which == Q_SNOOZE || x->kind == OUTCOME_RETRY)) wake = 1;
  }
  if (rc == SQLITE_OK) rc = record_completions(q, now);
  if (rc != SQLITE_OK) return fail(q, rc, "recording outcomes");
  return commit(q, "recording outcomes", wake);
}

static int sq_heartbeat(store *s, const store_claim *c, size_t n, double lease, double *out) {
  sq_store *q = SQ(s);
  double until = clock_wall() + lease;
  if (out) *out = until;
  if (n == 0) return STORE_OK;
  int rc = begin_unsynced(q, "renewing leases");
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_HEARTBEAT, &rc);
  for (size_t i = 0; st && i < n && rc == SQLITE_OK; i++) {
    sqlite3_bind_int64(st, 1, c[i].id);
    sqlite3_bind_int64(st, 2, c[i].token);
    sqlite3_bind_double(st, 3, until);
    rc = run_write(q, st, NULL);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "renewing leases");
  return commit(q, "renewing leases", 0);
}

/* In a write transaction: drop the leases given back (expired at `now`, or
 * of `worker`) that cancel() asked for, answering "cancelled". */
static int drop_asked(sq_store *q, double now, const char *worker) {
  int rc;
  size_t k = 0;
  sqlite3_stmt *st = stmt(q, Q_DROP_ASKED, &rc);
  if (!st) return rc;
  bind_double_or_null(st, 1, now, worker == NULL);
  if (worker) sqlite3_bind_text(st, 2, worker, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    if (!reserve((void **)&q->asked, &q->asked_cap, k + 1, sizeof *q->asked))
      q->asked[k++] = sqlite3_column_int64(st, 0);
  finish_stmt(st);
  return rc == SQLITE_DONE ? answer(q, q->asked, k, "cancelled") : rc;
}

static int sq_rescue(store *s, long long default_max_attempts) {
  sq_store *q = SQ(s);
  int rc = sq_connect(s);
  if (rc) return rc;
  /* usually nothing expired: look without taking the write lock */
  double any;
  sqlite3_stmt *st = stmt(q, Q_ANY_EXPIRED, &rc);
  if (st) {
    sqlite3_bind_double(st, 1, clock_wall());
    rc = query_double(q, st, &any);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "rescuing expired leases");
  if (isnan(any)) return STORE_OK;
  if ((rc = begin(q, "rescuing expired leases"))) return rc;
  int changed = 0;
  double now = clock_wall();
  rc = drop_asked(q, now, NULL);
  if (rc == SQLITE_OK && (st = stmt(q, Q_SUSPECTS_EXPIRED, &rc))) {
    sqlite3_bind_double(st, 1, now);
    rc = run_write(q, st, NULL);
  }
  if (rc == SQLITE_OK && (st = stmt(q, Q_RESCUE, &rc))) {
    sqlite3_bind_double(st, 1, now);
    sqlite3_bind_int64(st, 2, default_max_attempts);
    rc = run_write(q, st, &changed);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "rescuing expired leases");
  return commit(q, "rescuing expired leases", changed > 0);
}

static int sq_abandon(store *s, const char *worker, long long default_max_attempts, size_t *n) {
  sq_store *q = SQ(s);
  *n = 0;
  int rc = begin(q, "database error");
  if (rc) return rc;
  int changed = 0;
  rc = drop_asked(q, 0, worker);
  sqlite3_stmt *st = rc == SQLITE_OK ? stmt(q, Q_SUSPECTS_OF, &rc) : NULL;
  if (st) {
    sqlite3_bind_text(st, 1, worker, -1, SQLITE_STATIC);
    rc = run_write(q, st, NULL);
  }
  st = rc == SQLITE_OK ? stmt(q, Q_ABANDON, &rc) : NULL;
  if (st) {
    sqlite3_bind_text(st, 1, worker, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, default_max_attempts);
    rc = run_write(q, st, &changed);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  *n = (size_t)changed;
  return commit(q, "database error", changed > 0);
}

/* How long a worker waits before it looks again at a limited name that is
 * full: a slot another worker frees is seen by then (its own frees claim
 * again at once, and a changed limit rings the wake file). */
#define LIMIT_LOOK 1.0

/* min over this worker's names of query `which` (bound to the name);
 * the due jobs of paused names do not count (store.h, pause). */
static int min_over_names(sq_store *q, int which, int drained, double *out, int *limit_wait) {
  int rc = which == Q_WAKE_DUE ? load_paused(q) : SQLITE_OK;
  double now = clock_wall();
  if (rc == SQLITE_OK && which == Q_WAKE_DUE) rc = load_limits(q, now);
  *out = INFINITY;
  if (rc != SQLITE_OK) return rc;
  sqlite3_stmt *st = stmt(q, which, &rc);
  for (size_t i = 0; st && i < q->n_names; i++) {
    double v;
    if (which == Q_WAKE_DUE && is_paused(q, q->names[i].s, q->names[i].len)) continue;
    bind_text(st, 1, q->names[i].s, q->names[i].len);
    if ((rc = query_double(q, st, &v)) != SQLITE_OK) break;
    /* a full limited name's due jobs: looked at again LIMIT_LOOK later,
     * not at once (the worker would spin; store.h, limit) */
    const sq_limit *l =
        which == Q_WAKE_DUE ? limit_of(q, q->names[i].s, q->names[i].len) : NULL;
    int full = l && l->concurrency && l->concurrency - l->running <= 0;
    double due = v; /* (before a rate moves it on) */
    /* a rate's due jobs: when its bucket has tokens enough (rate_next) */
    if (l && l->rate && !l->by && !isnan(v) && !isnan(l->tat) && rate_next(l) > v) v = rate_next(l);
    if (drained && l && l->by && !l->rate && l->concurrency && !isnan(v) && v <= now) {
      full = 1; /* as the claim just now found (store_ops.next_wake) */
    } else if (l && l->by && !isnan(v) && v <= now) {
      /* partitioned: full when no due job is in a partition with a free
       * slot (what a claim would take: reads the name's due jobs) */
      sqlite3_stmt *pick = stmt(q, Q_PART_PICK, &rc);
      if (!pick) break;
      bind_part_pick(pick, l, now, 1, 1);
      rc = sqlite3_step(pick);
      full = rc == SQLITE_DONE;
      finish_stmt(pick);
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) break;
      rc = SQLITE_OK;
    }
    double look = now + LIMIT_LOOK;
    if (full && l->by && l->rate && !isnan(v) && v <= now) {
      /* or when a quarter of what a claim can take of the first bucket that
       * is not full can be taken again, if sooner (as RATE_NEXT_PARTS in
       * store_pg_wake.c says) */
      double ahead = store_rate_look(l->rate, l->per), first;
      sqlite3_stmt *nx = stmt(q, Q_RATE_NEXT_PART, &rc);
      if (!nx) break;
      bind_text(nx, 1, l->s, l->len);
      sqlite3_bind_double(nx, 2, now + ahead);
      if ((rc = query_double(q, nx, &first)) != SQLITE_OK) break;
      if (!isnan(first) && first - ahead < look) look = first - ahead;
    }
    if (full && l->by && !isnan(v) && v <= now) {
      /* or when its next job not due yet is, if sooner: it may be in a
       * partition with a free slot (as NEXT_LATER in store_pg_wake.c);
       * drained, not due at the claim (one due since is looked at now) */
      double later;
      sqlite3_stmt *nx = stmt(q, Q_WAKE_LATER, &rc);
      if (!nx) break;
      bind_text(nx, 1, q->names[i].s, q->names[i].len);
      sqlite3_bind_double(nx, 2, drained && q->claimed_at < now ? q->claimed_at : now);
      if ((rc = query_double(q, nx, &later)) != SQLITE_OK) break;
      if (!isnan(later) && later < look) look = later;
    }
    /* due jobs wait for a slot (a rate's too, whatever its tokens): this
     * worker's own end claims again at once (store_wake.limit_wait) */
    if (full && !isnan(due) && due <= now) *limit_wait = 1;
    if (full && !isnan(v) && v < look) v = look;
    if (!isnan(v) && v < *out) *out = v;
  }
  return rc;
}

static int sq_next_wake(store *s, int drained, store_wake *w) {
  sq_store *q = SQ(s);
  int rc = sq_connect(s);
  if (rc) return rc;
  w->next_due = w->next_expiry = w->next_cron = INFINITY;
  w->limit_wait = 0;
  /* one read transaction: one snapshot, one lock round trip */
  rc = sqlite3_exec(q->db, "BEGIN", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = min_over_names(q, Q_WAKE_DUE, drained, &w->next_due, &w->limit_wait);
  if (rc == SQLITE_OK) rc = min_over_names(q, Q_WAKE_LEASE, 0, &w->next_expiry, &w->limit_wait);
  if (rc == SQLITE_OK) rc = min_over_names(q, Q_WAKE_CRON, 0, &w->next_cron, &w->limit_wait);
  if (rc == SQLITE_OK) rc = tx(q, Q_COMMIT);
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  w->db_now = clock_wall();
  return STORE_OK;
}

static int sq_cron_put(store *s, const store_cron *c) {
  sq_store *q = SQ(s);
  if (memchr(c->id, 0, c->id_len) || memchr(c->name, 0, c->name_len) ||
      memchr(c->expr, 0, c->expr_len) || memchr(c->tz, 0, c->tz_len) || c->payload_has_nul)
    return store_fail(s, STORE_ERROR, "a NUL byte" NUL_REFUSED);
  int rc = begin(q, "database error");
  if (rc) return rc;
  sqlite3_stmt *get = stmt(q, Q_CRON_GET, &rc);
  int exists = 0, same = 0, same_name = 0;
  if (get) {
    bind_text(get, 1, c->id, c->id_len);
    bind_text(get, 2, c->expr, c->expr_len);
    bind_text(get, 3, c->tz, c->tz_len);
    bind_text(get, 4, c->name, c->name_len);
    rc = sqlite3_step(get);
    if (rc == SQLITE_ROW)
      exists = 1, same = sqlite3_column_int(get, 0), same_name = sqlite3_column_int(get, 1);
    finish_stmt(get);
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_stmt *st = rc == SQLITE_OK ? stmt(q, exists ? Q_CRON_UPDATE : Q_CRON_INSERT, &rc) : NULL;
  if (st) {
    bind_text(st, 1, c->id, c->id_len);
    bind_text(st, 2, c->expr, c->expr_len);
    bind_text(st, 3, c->tz, c->tz_len);
    bind_text(st, 4, c->name, c->name_len);
    bind_text(st, 5, c->payload, c->payload_len);
    sqlite3_bind_int64(st, 6, c->priority);
    if (c->max_attempts > 0)
      sqlite3_bind_int64(st, 7, c->max_attempts);
    else
      sqlite3_bind_null(st, 7);
    sqlite3_bind_int(st, 8, c->catch_up ? 1 : 0);
    bind_double_or_null(st, 9, c->backfill, c->backfill >= 0);
    sqlite3_bind_double(st, 10, c->next_at);
    sqlite3_bind_double(st, 11, clock_wall());
    if (exists) sqlite3_bind_int(st, 12, same);
    if (c->owner)
      bind_text(st, 13, c->owner, c->owner_len);
    else
      sqlite3_bind_null(st, 13);
    rc = run_write(q, st, NULL);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  /* a new next slot, or the schedule moved to another name: wake the
   * sleeping workers (sq_notifications sees the schedule); nobody when a
   * process declares again what exists (as every process does at start) */
  return commit(q, "database error", (!same || !same_name) && isfinite(c->next_at));
}

static int sq_cron_remove(store *s, const char *id, size_t id_len, const char *owner,
                          size_t owner_len, int *done) {
  sq_store *q = SQ(s);
  *done = 0;
  if (memchr(id, 0, id_len)) return STORE_OK;
  int rc = begin(q, "database error");
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_CRON_REMOVE, &rc);
  if (st) {
    bind_text(st, 1, id, id_len);
    if (owner)
      bind_text(st, 2, owner, owner_len);
    else
      sqlite3_bind_null(st, 2);
    rc = run_write(q, st, done);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  *done = *done > 0;
  return commit(q, "database error", 0);
}

static int sq_cron_list(store *s, double within, store_cron **out, size_t *n, double *db_now) {
  sq_store *q = SQ(s);
  *out = NULL;
  *n = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  double now = clock_wall();
  sqlite3_stmt *st = stmt(q, within >= 0 ? Q_CRON_DUE : Q_CRON_LIST, &rc);
  if (!st) return fail(q, rc, "database error");
  if (within >= 0) sqlite3_bind_double(st, 1, now + within);
  arena_reset(&q->cron_mem);
  size_t rows = 0;
  int oom = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (within >= 0 &&
        !wants(q, (const char *)sqlite3_column_text(st, 3), (size_t)sqlite3_column_bytes(st, 3)))
      continue;
    if (rows == q->crons_cap) {
      size_t cap = q->crons_cap ? q->crons_cap * 2 : 16;
      store_cron *p = realloc(q->crons, cap * sizeof *p);
      if (!p) {
        oom = 1;
        break;
      }
      q->crons = p;
      q->crons_cap = cap;
    }
    store_cron *c = &q->crons[rows];
    memset(c, 0, sizeof *c);
    c->id = col_text(st, 0, &q->cron_mem, &c->id_len, &oom);
    c->expr = col_text(st, 1, &q->cron_mem, &c->expr_len, &oom);
    c->tz = col_text(st, 2, &q->cron_mem, &c->tz_len, &oom);
    c->name = col_text(st, 3, &q->cron_mem, &c->name_len, &oom);
    c->payload = col_text(st, 4, &q->cron_mem, &c->payload_len, &oom);
    c->priority = sqlite3_column_int64(st, 5);
    c->max_attempts = sqlite3_column_type(st, 6) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 6);
    c->catch_up = sqlite3_column_int(st, 7) != 0;
    c->backfill = sqlite3_column_type(st, 8) == SQLITE_NULL ? -1 : sqlite3_column_double(st, 8);
    c->next_at = sqlite3_column_double(st, 9);
    c->owner = col_text(st, 10, &q->cron_mem, &c->owner_len, &oom);
    if (oom || !c->id || !c->expr || !c->tz || !c->name) {
      oom = 1;
      break;
    }
    rows++;
  }
  finish_stmt(st);
  if (oom) return store_fail(s, STORE_NOMEM, "not enough memory");
  if (rc != SQLITE_DONE) return fail(q, rc, "database error");
  *out = q->crons;
  *n = rows;
  *db_now = now;
  return STORE_OK;
}

/* Compare-and-set on next_at, then one job per slot (key
 * cron:<id>@<slot>, so a slot's job is unique while unfinished), in one
 * transaction. */
static int sq_cron_fire(store *s, const char *id, size_t id_len, double expected,
                        const double *slots, size_t n, double next, int *won) {
  sq_store *q = SQ(s);
  *won = 0;
  if (memchr(id, 0, id_len)) return STORE_OK;
  int rc = begin(q, "database error");
  if (rc) return rc;
  double now = clock_wall();
  int changed = 0;
  sqlite3_stmt *st = stmt(q, Q_CRON_CAS, &rc);
  if (st) {
    bind_text(st, 1, id, id_len);
    sqlite3_bind_double(st, 2, expected);
    sqlite3_bind_double(st, 3, next);
    sqlite3_bind_double(st, 4, now);
    rc = run_write(q, st, &changed);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  if (!changed) return commit(q, "database error", 0);
  /* the schedule's job template; copied, since inserting reuses nothing
   * but the statement handles */
  st = stmt(q, Q_CRON_ROW, &rc);
  if (!st) return fail(q, rc, "database error");
  bind_text(st, 1, id, id_len);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    finish_stmt(st);
    return fail(q, rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, "database error");
  }
  arena tmp = {NULL};
  int oom = 0;
  size_t name_len, payload_len;
  const char *name = col_text(st, 0, &tmp, &name_len, &oom);
  const char *payload = col_text(st, 1, &tmp, &payload_len, &oom);
  long long priority = sqlite3_column_int64(st, 2);
  long long max_attempts = sqlite3_column_type(st, 3) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 3);
  finish_stmt(st);
  buf key = BUF_INIT;
  rc = oom || !name ? SQLITE_NOMEM : SQLITE_OK;
  int wake = 0;
  for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
    buf_reset(&key);
    if (buf_adds(&key, "cron:") || buf_add(&key, id, id_len) ||
        buf_printf(&key, "@%lld", (long long)llround(slots[i]))) {
      rc = SQLITE_NOMEM;
      break;
    }
    int64_t jid;
    int inserted;
    rc = insert_job(q, name, name_len, payload, payload_len, slots[i], key.data, key.len,
                    priority, max_attempts, now, &jid, &inserted);
    wake |= inserted;
  }
  buf_free(&key);
  arena_free(&tmp);
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  if ((rc = commit(q, "database error", wake)) != STORE_OK) return rc;
  *won = 1;
  return STORE_OK;
}

static int sq_listen(store *s, int on) {
  sq_store *q = SQ(s);
  if (q->listening == on) return STORE_OK;
  q->listening = on;
  if (!on) {
    unwatch(q);
    return STORE_OK;
  }
  if (!q->db) return sq_connect(s); /* sets up the watch */
  watch(q);
  return STORE_OK;
}

static int sq_socket(store *s) { return SQ(s)->watch_fd; }

/* Something may have changed: if another connection committed since the
 * last look, *earliest = the earliest run_at among this worker's waiting
 * jobs, or the time to turn the next slot of its recurring schedules into
 * a job, whichever comes first. */
static int sq_notifications(store *s, double *earliest) {
  sq_store *q = SQ(s);
  *earliest = INFINITY;
  int rc = sq_connect(s);
  if (rc) return rc;
  if (q->watch_fd >= 0 && drain_watch(q)) {
    /* the wake file was removed or replaced: watch the new one */
    unwatch(q);
    if (q->wake_fd >= 0) close(q->wake_fd);
    q->wake_fd = -1;
    watch(q);
  } else if (q->listening && q->watch_fd < 0 && !q->memory &&
             clock_mono() - q->wake_tried >= WAKE_RETRY) {
    /* no usable wake file (see open_wake): has it been fixed? */
    watch(q);
  }
  double dv;
  sqlite3_stmt *st = stmt(q, Q_DATA_VERSION, &rc);
  if (st) rc = query_double(q, st, &dv);
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  if ((long long)dv == q->data_version) return STORE_OK;
  q->data_version = (long long)dv;
  double cron = INFINITY;
  int limit_wait = 0;
  rc = min_over_names(q, Q_WAKE_DUE, 0, earliest, &limit_wait);
  if (rc == SQLITE_OK) rc = min_over_names(q, Q_WAKE_CRON, 0, &cron, &limit_wait);
  if (rc != SQLITE_OK) return fail(q, rc, "database error");
  /* a recurring schedule (perhaps declared or moved by another process):
   * the loop turns its slot into a job TICK_AHEAD (1 s, loop.c) before it */
  if (cron - 1.0 < *earliest) *earliest = cron - 1.0;
  return STORE_OK;
}

static const char *sq_database(store *s) { return SQ(s)->canonical; }

static const char *sq_warning(store *s) {
  sq_store *q = SQ(s);
  if (!q->warn_pending) return NULL;
  q->warn_pending = 0;
  return buf_cstr(&q->warning);
}

static void sq_destroy(store *s) {
  sq_store *q = SQ(s);
  sq_disconnect_now(q);
  free_names(q);
  free_refs(&q->maxes, &q->n_maxes);
  free_refs(&q->paused, &q->n_paused);
  free(q->paused_s);
  free(q->paused_l);
  free_limits(q);
  free(q->limit_s);
  free(q->limit_l);
  free(q->limit_c);
  free(q->limit_b);
  free(q->limit_bl);
  free(q->limit_r);
  free(q->limit_p);
  free(q->asked);
  arena_free(&q->claimed);
  arena_free(&q->got);
  arena_free(&q->cron_mem);
  free(q->jobs);
  free(q->crons);
  free(q->rows);
  free(q->stats);
  free(q->totals);
  free(q->durations);
  arena_free(&q->dur_mem);
  free(q->hist);
  buf_free(&q->hist_json);
  free(q->done);
  buf_free(&q->done_names);
  free(q->path);
  free(q->canonical);
  free(q->wake_path);
  buf_free(&q->warning);
  buf_free(&s->err);
  free(q);
}

/* ------------------------------------------------------------------ */
/* Operators' operations: listing, statistics, bulk retry, version.    */
/* Strings returned point into the `got` arena (as job()'s do).        */

static double col_double_or_nan(sqlite3_stmt *st, int i) {
  return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

/* Reads one row of a statement into an item (strings copied into a);
 * sets *oom when memory ran out. */
typedef void row_reader(sqlite3_stmt *st, void *item, arena *a, int *oom);

/* Step st to its end, reading each row with `read` into the next item of
 * *items (capacity *cap, grown as needed; strings in the `got` arena); *n =
 * how many.  An SQLite result code. */
static int read_rows(sq_store *q, sqlite3_stmt *st, row_reader *read, void **items, size_t *cap,
                     size_t size, size_t *n) {
  int rc, oom = 0;
  size_t rows = 0;
  arena_reset(&q->got);
  while (!oom && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (reserve(items, cap, rows, size)) break;
    read(st, (char *)*items + rows++ * size, &q->got, &oom);
  }
  finish_stmt(st);
  *n = rows;
  if (oom || rc == SQLITE_ROW) return SQLITE_NOMEM;
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* A row of Q_LIST. */
static void read_listed(sqlite3_stmt *st, void *item, arena *a, int *oom) {
  store_job_row *x = item;
  store_job *j = &x->job;
  memset(x, 0, sizeof *x);
  j->id = sqlite3_column_int64(st, 0);
  j->name = col_text(st, 1, a, &j->name_len, oom);
  j->state = state_name(sqlite3_column_text(st, 2));
  j->run_at = sqlite3_column_double(st, 3);
  j->attempt = sqlite3_column_int64(st, 4);
  j->max_attempts = sqlite3_column_int64(st, 5); /* 0 for NULL */
  j->priority = sqlite3_column_int64(st, 6);
  j->key = col_text(st, 7, a, &j->key_len, oom);
  x->locked_by = col_text(st, 8, a, &x->locked_by_len, oom);
  x->locked_until = col_double_or_nan(st, 9);
  x->created_at = col_double_or_nan(st, 10);
  j->last_error = col_text(st, 11, a, &j->last_error_len, oom);
  j->payload = col_text(st, 12, a, &j->payload_len, oom);
  if (!j->name) *oom = 1;
}

/* A row of Q_STATS. */
static void read_stat(sqlite3_stmt *st, void *item, arena *a, int *oom) {
  store_stat *x = item;
  x->name = col_text(st, 0, a, &x->name_len, oom);
  x->due = sqlite3_column_int64(st, 1);
  x->later = sqlite3_column_int64(st, 2);
  x->running = sqlite3_column_int64(st, 3);
  x->failed = sqlite3_column_int64(st, 4);
  x->late = col_double_or_nan(st, 5);
  x->done_last_minute = sqlite3_column_int64(st, 6);
  if (!x->name) *oom = 1;
}

/* A store_filter as ?1-?4 of the listing statements (Q_LIST,
 * Q_HIST_LIST): state, name, id, limit; unbound (NULL) for "any". */
static void bind_filter(sqlite3_stmt *st, const store_filter *f) {
  if (f->state) sqlite3_bind_text(st, 1, f->state, -1, SQLITE_STATIC);
  if (f->name) bind_text(st, 2, f->name, f->name_len);
  if (f->has_id) sqlite3_bind_int64(st, 3, f->id);
  if (f->limit > 0) sqlite3_bind_int64(st, 4, f->limit);
}

static int sq_list(store *s, const store_filter *f, store_job_row **out, size_t *n,
                   double *db_now) {
  sq_store *q = SQ(s);
  *out = NULL;
  *n = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_LIST, &rc);
  if (!st) return fail(q, rc, "listing jobs");
  bind_filter(st, f);
  rc = read_rows(q, st, read_listed, (void **)&q->rows, &q->rows_cap, sizeof *q->rows, n);
  if (rc != SQLITE_OK) {
    *n = 0;
    return fail(q, rc, "listing jobs");
  }
  *out = q->rows;
  *db_now = clock_wall();
  return STORE_OK;
}

static const char *history_state(const unsigned char *t) {
  static const char *const states[] = {"done", "failed", "cancelled"};
  for (int i = 0; i < 3; i++)
    if (t && strcmp((const char *)t, states[i]) == 0) return states[i];
  return "unknown";
}

/* A row of Q_HIST_LIST. */
static void read_history(sqlite3_stmt *st, void *item, arena *a, int *oom) {
  store_history *x = item;
  store_job *j = &x->job;
  memset(x, 0, sizeof *x);
  j->id = sqlite3_column_int64(st, 0);
  j->name = col_text(st, 1, a, &j->name_len, oom);
  j->state = history_state(sqlite3_column_text(st, 2));
  j->attempt = sqlite3_column_int64(st, 3);
  j->priority = sqlite3_column_int64(st, 4);
  j->key = col_text(st, 5, a, &j->key_len, oom);
  j->last_error = col_text(st, 6, a, &j->last_error_len, oom);
  j->payload = col_text(st, 7, a, &j->payload_len, oom);
  x->worker = col_text(st, 8, a, &x->worker_len, oom);
  x->started_at = col_double_or_nan(st, 9);
  x->finished_at = sqlite3_column_double(st, 10);
  x->kept_until = sqlite3_column_double(st, 11);
  j->run_at = x->finished_at;
  if (!j->name) *oom = 1;
}

static int sq_history(store *s, const store_filter *f, store_history **out, size_t *n) {
  sq_store *q = SQ(s);
  *out = NULL;
  *n = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_HIST_LIST, &rc);
  if (!st) return fail(q, rc, "reading history");
  bind_filter(st, f);
  sqlite3_bind_double(st, 5, clock_wall()); /* expired, not yet pruned: gone */
  rc = read_rows(q, st, read_history, (void **)&q->hist, &q->hist_cap, sizeof *q->hist, n);
  if (rc != SQLITE_OK) {
    *n = 0;
    return fail(q, rc, "reading history");
  }
  *out = q->hist;
  return STORE_OK;
}

/* One short write transaction: a worker never holds the lock long. */
static int sq_prune(store *s, size_t limit, size_t *pruned) {
  sq_store *q = SQ(s);
  *pruned = 0;
  int rc = begin_unsynced(q, "pruning history");
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_PRUNE, &rc);
  int changed = 0;
  if (st) {
    sqlite3_bind_double(st, 1, clock_wall());
    /* a row holds a write's jobs (up to a batch): limit / 100 rows */
    sqlite3_bind_int64(st, 2, (sqlite3_int64)(limit / 100 ? limit / 100 : 1));
    rc = run_write(q, st, &changed);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "pruning history");
  *pruned = (size_t)changed;
  return commit(q, "pruning history", 0);
}

static int sq_stats(store *s, store_stat **out, size_t *n) {
  sq_store *q = SQ(s);
  *out = NULL;
  *n = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_STATS, &rc);
  if (!st) return fail(q, rc, "reading statistics");
  sqlite3_bind_double(st, 1, clock_wall());
  rc = read_rows(q, st, read_stat, (void **)&q->stats, &q->stats_cap, sizeof *q->stats, n);
  if (rc != SQLITE_OK) {
    *n = 0;
    return fail(q, rc, "reading statistics");
  }
  *out = q->stats;
  return STORE_OK;
}

/* A row of Q_TOTALS. */
static void read_total(sqlite3_stmt *st, void *item, arena *a, int *oom) {
  store_total *x = item;
  x->name = col_text(st, 0, a, &x->name_len, oom);
  x->done = sqlite3_column_int64(st, 1);
  x->failed = sqlite3_column_int64(st, 2);
  if (!x->name) *oom = 1;
}

static int sq_totals(store *s, store_total **out, size_t *n) {
  sq_store *q = SQ(s);
  *out = NULL;
  *n = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_TOTALS, &rc);
  if (!st) return fail(q, rc, "reading totals");
  rc = read_rows(q, st, read_total, (void **)&q->totals, &q->totals_cap, sizeof *q->totals, n);
  if (rc != SQLITE_OK) {
    *n = 0;
    return fail(q, rc, "reading totals");
  }
  *out = q->totals;
  return STORE_OK;
}

/* Count the history rows not counted yet (one short write transaction),
 * then read the counts: one store_duration per name. */
static int sq_durations(store *s, store_duration **out, size_t *n) {
  sq_store *q = SQ(s);
  *out = NULL;
  *n = 0;
  int rc = begin_unsynced(q, "counting durations");
  if (rc) return rc;
  sqlite3_stmt *st = stmt(q, Q_DURATIONS_COUNT, &rc);
  if (st) rc = run_write(q, st, NULL);
  if (rc == SQLITE_OK && (st = stmt(q, Q_DURATIONS_DONE, &rc))) rc = run_write(q, st, NULL);
  if (rc != SQLITE_OK) return fail(q, rc, "counting durations");
  if ((rc = commit(q, "counting durations", 0)) != STORE_OK) return rc;
  if (!(st = stmt(q, Q_DURATIONS, &rc))) return fail(q, rc, "reading durations");
  arena_reset(&q->dur_mem);
  size_t at = 0;
  int oom = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    size_t len = (size_t)sqlite3_column_bytes(st, 0);
    const unsigned char *name = sqlite3_column_text(st, 0);
    if (!name) {
      oom = 1;
      break;
    }
    store_duration *x = at ? &q->durations[at - 1] : NULL;
    if (!x || x->name_len != len || memcmp(x->name, name, len) != 0) {
      if (at == q->durations_cap) {
        size_t cap = q->durations_cap ? 2 * q->durations_cap : 16;
        store_duration *p = realloc(q->durations, cap * sizeof *p);
        if (!p) {
          oom = 1;
          break;
        }
        q->durations = p, q->durations_cap = cap;
      }
      x = &q->durations[at++];
      memset(x, 0, sizeof *x);
      if (!(x->name = arena_dup(&q->dur_mem, name, len))) {
        oom = 1;
        break;
      }
      x->name_len = len;
    }
    int late = sqlite3_column_int(st, 1);
    sqlite3_int64 b = sqlite3_column_int64(st, 2);
    if (b < 0) b = 0;
    if (b > DURATION_BUCKETS) b = DURATION_BUCKETS;
    (late ? x->late : x->jobs)[b] += sqlite3_column_int64(st, 3);
    *(late ? &x->late_seconds : &x->seconds) += sqlite3_column_double(st, 4);
  }
  finish_stmt(st);
  if (oom) return store_fail(s, STORE_NOMEM, "reading durations: not enough memory");
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return fail(q, rc, "reading durations");
  *out = q->durations;
  *n = at;
  return STORE_OK;
}

static int sq_retry_failed(store *s, const char *name, size_t name_len, size_t *retried,
                           size_t *skipped) {
  sq_store *q = SQ(s);
  *retried = *skipped = 0;
  int rc = begin(q, "retrying failed jobs");
  if (rc) return rc;
  double before = 0;
  int changed = 0;
  sqlite3_stmt *st = stmt(q, Q_FAILED, &rc);
  if (st) {
    if (name) bind_text(st, 1, name, name_len);
    rc = query_double(q, st, &before);
  }
  if (rc == SQLITE_OK && (st = stmt(q, Q_RETRY_FAILED, &rc))) {
    if (name) bind_text(st, 1, name, name_len);
    sqlite3_bind_double(st, 2, clock_wall());
    rc = run_write(q, st, &changed);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "retrying failed jobs");
  if ((rc = commit(q, "retrying failed jobs", changed > 0)) != STORE_OK) return rc;
  *retried = (size_t)changed;
  *skipped = before > changed ? (size_t)before - (size_t)changed : 0;
  return STORE_OK;
}

static int sq_remove(store *s, const store_removal *r, size_t *removed) {
  sq_store *q = SQ(s);
  *removed = 0;
  int rc = begin(q, "removing jobs");
  if (rc) return rc;
  int changed = 0;
  sqlite3_stmt *st = stmt(q, Q_REMOVE, &rc);
  if (st) {
    if (r->has_id) sqlite3_bind_int64(st, 1, r->id);
    if (r->name) bind_text(st, 2, r->name, r->name_len);
    sqlite3_bind_int(st, 3, r->scheduled != 0);
    sqlite3_bind_int(st, 4, r->failed != 0);
    if (r->older_than >= 0) sqlite3_bind_double(st, 5, clock_wall() - r->older_than);
    rc = run_write(q, st, &changed);
  }
  if (rc != SQLITE_OK) return fail(q, rc, "removing jobs");
  if ((rc = commit(q, "removing jobs", 0)) != STORE_OK) return rc;
  *removed = changed > 0 ? (size_t)changed : 0;
  return STORE_OK;
}

static int sq_pause(store *s, const char *name, size_t len, int on, int *changed) {
  sq_store *q = SQ(s);
  *changed = 0;
  if (memchr(name, 0, len))
    return store_fail(s, STORE_ERROR, "a job name cannot contain a NUL byte" NUL_REFUSED);
  const char *what = on ? "pausing" : "resuming";
  int rc = begin(q, what);
  if (rc) return rc;
  int n = 0;
  sqlite3_stmt *st = stmt(q, on ? Q_PAUSE : Q_RESUME, &rc);
  if (st) {
    bind_text(st, 1, name, len);
    if (on) sqlite3_bind_double(st, 2, clock_wall());
    rc = run_write(q, st, &n);
  }
  if (rc != SQLITE_OK) return fail(q, rc, what);
  /* resumed: its due jobs wake the sleeping workers (the wake file) */
  if ((rc = commit(q, what, !on && n > 0)) != STORE_OK) return rc;
  *changed = n > 0;
  return STORE_OK;
}

static int sq_paused_names(store *s, const char *const **names, const size_t **lens, size_t *n) {
  sq_store *q = SQ(s);
  *n = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  if ((rc = load_paused(q)) != SQLITE_OK) return fail(q, rc, "reading the paused names");
  size_t k = q->n_paused ? q->n_paused : 1;
  const char **ns = realloc(q->paused_s, k * sizeof *ns);
  if (ns) q->paused_s = ns;
  size_t *ls = ns ? realloc(q->paused_l, k * sizeof *ls) : NULL;
  if (ls) q->paused_l = ls;
  if (!ns || !ls) return store_fail(s, STORE_NOMEM, "not enough memory");
  for (size_t i = 0; i < q->n_paused; i++) ns[i] = q->paused[i].s, ls[i] = q->paused[i].len;
  *names = ns;
  *lens = ls;
  *n = q->n_paused;
  return STORE_OK;
}

static int sq_limit_set(store *s, const char *name, size_t len, long long concurrency,
                        const char *by, size_t by_len, long long rate, double per, int *changed) {
  sq_store *q = SQ(s);
  *changed = 0;
  if (memchr(name, 0, len))
    return store_fail(s, STORE_ERROR, "a job name cannot contain a NUL byte" NUL_REFUSED);
  if (concurrency < 0 || concurrency > 2147483647)
    return store_fail(s, STORE_ERROR, "a concurrency limit must be from 1 to 2147483647");
  if (rate < 0 || rate > 2147483647 || (rate && !(per > 0 && per <= STORE_RATE_PER_MAX)))
    return store_fail(s, STORE_ERROR, "a rate limit must be from 1 to 2147483647 per 0 to %.0f seconds",
                      STORE_RATE_PER_MAX);
  int some = concurrency || rate;
  if (by && some && store_check_by(s, by, by_len) != STORE_OK) return STORE_ERROR;
  const char *what = some ? "limiting" : "lifting a limit";
  int rc = begin(q, what);
  if (rc) return rc;
  int n = 0;
  /* the by the name had, to rewrite the jobs' partitions if it changes */
  buf was = BUF_INIT;
  int had = 0;
  sqlite3_stmt *st = stmt(q, Q_LIMIT_BY, &rc);
  if (st) {
    bind_text(st, 1, name, len);
    if ((rc = sqlite3_step(st)) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
      had = 1;
      if (buf_add(&was, (const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0)))
        rc = SQLITE_NOMEM;
    }
    finish_stmt(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  st = rc == SQLITE_OK ? stmt(q, some ? Q_LIMIT : Q_UNLIMIT, &rc) : NULL;
  if (st) {
    bind_text(st, 1, name, len);
    if (some) {
      if (concurrency) sqlite3_bind_int64(st, 2, concurrency);
      sqlite3_bind_double(st, 3, clock_wall());
      bind_text(st, 4, by, by_len);
      if (rate) sqlite3_bind_int64(st, 5, rate), sqlite3_bind_double(st, 6, per);
    }
    rc = run_write(q, st, &n);
  }
  /* by set, changed or gone: every job of the name to its partition, in
   * this transaction (no claim or insert comes between: one writer) */
  const char *now_by = some ? by : NULL;
  size_t now_len = some ? by_len : 0;
  if (rc == SQLITE_OK && (had != (now_by != NULL) ||
                          (had && (was.len != now_len || (now_len && memcmp(was.data, now_by, now_len)))))) {
    st = stmt(q, Q_PART_SET, &rc);
    if (st) {
      bind_text(st, 1, name, len);
      if (now_by) bind_text(st, 2, now_by, now_len);
      rc = run_write(q, st, NULL);
    }
    if (rc == SQLITE_OK) rc = part_triggers(q);
  }
  buf_free(&was);
  if (rc != SQLITE_OK) return fail(q, rc, what);
  /* a changed limit may free slots: wake the sleeping workers */
  if ((rc = commit(q, what, n > 0)) != STORE_OK) return rc;
  *changed = n > 0;
  return STORE_OK;
}

static int sq_limits(store *s, const char *const **names, const size_t **lens,
                     const long long **concurrency, const char *const **by,
                     const size_t **by_lens, const long long **rate, const double **per,
                     size_t *n) {
  sq_store *q = SQ(s);
  *n = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  if ((rc = load_limits(q, clock_wall())) != SQLITE_OK) return fail(q, rc, "reading the limits");
  size_t k = q->n_limited ? q->n_limited : 1;
  const char **ns = realloc(q->limit_s, k * sizeof *ns);
  if (ns) q->limit_s = ns;
  size_t *ls = ns ? realloc(q->limit_l, k * sizeof *ls) : NULL;
  if (ls) q->limit_l = ls;
  long long *cs = ls ? realloc(q->limit_c, k * sizeof *cs) : NULL;
  if (cs) q->limit_c = cs;
  const char **bs = cs ? realloc(q->limit_b, k * sizeof *bs) : NULL;
  if (bs) q->limit_b = bs;
  size_t *bls = bs ? realloc(q->limit_bl, k * sizeof *bls) : NULL;
  if (bls) q->limit_bl = bls;
  long long *rs = bls ? realloc(q->limit_r, k * sizeof *rs) : NULL;
  if (rs) q->limit_r = rs;
  double *ps = rs ? realloc(q->limit_p, k * sizeof *ps) : NULL;
  if (ps) q->limit_p = ps;
  if (!ps) return store_fail(s, STORE_NOMEM, "not enough memory");
  for (size_t i = 0; i < q->n_limited; i++) {
    ns[i] = q->limited[i].s, ls[i] = q->limited[i].len, cs[i] = q->limited[i].concurrency;
    bs[i] = q->limited[i].by, bls[i] = q->limited[i].by_len;
    rs[i] = q->limited[i].rate, ps[i] = q->limited[i].per;
  }
  *names = ns;
  *lens = ls;
  *concurrency = cs;
  *by = bs;
  *by_lens = bls;
  *rate = rs;
  *per = ps;
  *n = q->n_limited;
  return STORE_OK;
}

static int sq_schema_version(store *s, int *version) {
  sq_store *q = SQ(s);
  *version = 0;
  int rc = sq_connect(s);
  if (rc) return rc;
  if ((rc = schema_version(q, version)) != SQLITE_OK) return fail(q, rc, "reading the schema version");
  return STORE_OK;
}

static const store_ops sqlite_ops = {
    .backend = "sqlite",
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .destroy = sq_destroy,
    .schedule = sq_schedule,
    .schedule_many = sq_schedule_many,
    .cancel = sq_cancel,
    .retry = sq_retry,
    .get = sq_get,
    .set_names = sq_set_names,
    .set_max_attempts = sq_set_max_attempts,
    .claim = sq_claim,
    .claim_leased = sq_claim_leased,
    .finish = sq_finish,
    .heartbeat = sq_heartbeat,
    .cancels = sq_cancels,
    .rescue = sq_rescue,
    .abandon = sq_abandon,
    .next_wake = sq_next_wake,
    .listen = sq_listen,
    .socket = sq_socket,
    .notifications = sq_notifications,
    .cron_put = sq_cron_put,
    .cron_remove = sq_cron_remove,
    .cron_list = sq_cron_list,
    .cron_fire = sq_cron_fire,
    .list = sq_list,
    .stats = sq_stats,
    .retry_failed = sq_retry_failed,
    .remove = sq_remove,
    .schema_version = sq_schema_version,
    .database = sq_database,
    .warning = sq_warning,
    .pause = sq_pause,
    .paused_names = sq_paused_names,
    .history = sq_history,
    .prune = sq_prune,
    .limit = sq_limit_set,
    .limits = sq_limits,
    .totals = sq_totals,
    .durations = sq_durations,
};

/* The working directory (malloc'd), or NULL. */
static char *current_dir(void) {
  size_t size = 256;
  for (;;) {
    char *b = malloc(size);
    if (!b) return NULL;
    if (getcwd(b, size)) return b;
    free(b);
    if (errno != ERANGE || size > (SIZE_MAX / 2)) return NULL;
    size *= 2;
  }
}

static char *concat3(const char *a, const char *b, const char *c) {
  size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
  char *out = malloc(la + lb + lc + 1);
  if (!out) return NULL;
  memcpy(out, a, la);
  memcpy(out + la, b, lb);
  memcpy(out + la + lb, c, lc + 1);
  return out;
}

store *store_sqlite_open(const char *database, buf *err) {
  static const char scheme[] = "sqlite:", memory[] = ":memory:";
  if (strncmp(database, scheme, sizeof scheme - 1) != 0) {
    buf_adds(err, "invalid database string: not an sqlite: URL");
    return NULL;
  }
  const char *rest = database + sizeof scheme - 1;
  if (!*rest) {
    buf_adds(err, "invalid database string: \"sqlite:\" needs a file name (sqlite:PATH, or "
                  "sqlite::memory: for a database in memory)");
    return NULL;
  }
  if (!sqlite3_threadsafe()) {
    buf_adds(err, "the SQLite library was built without thread support, which lua-scheduler "
                  "needs (SQLITE_THREADSAFE=0)");
    return NULL;
  }
  sq_store *q = calloc(1, sizeof *q);
  if (!q) {
    buf_adds(err, "not enough memory");
    return NULL;
  }
  q->base.ops = &sqlite_ops;
  q->wake_fd = q->watch_fd = -1;
  int ok;
  if (strncmp(rest, memory, sizeof memory - 1) == 0) {
    /* memdb names beginning with "/" are shared by the process's
     * connections; an unnamed one gets a name no other store uses */
    static atomic_uint counter;
    const char *name = rest + sizeof memory - 1;
    char generated[64];
    if (!*name) {
      snprintf(generated, sizeof generated, "#%ld.%u", (long)getpid(),
               atomic_fetch_add(&counter, 1u) + 1u);
      name = generated;
    }
    q->memory = 1;
    q->path = concat3("/lua-scheduler/", name, "");
    q->canonical = concat3("sqlite::memory:", name, "");
    ok = q->path && q->canonical;
  } else {
    char *cwd = rest[0] == '/' ? NULL : current_dir();
    if (rest[0] != '/' && !cwd) {
      buf_printf(err, "cannot resolve the relative path %s: the working directory is unknown (%s)",
                 rest, strerror(errno));
      free(q);
      return NULL;
    }
    q->path = cwd ? concat3(cwd, "/", rest) : concat3(rest, "", "");
    free(cwd);
    q->canonical = q->path ? concat3("sqlite:", q->path, "") : NULL;
    q->wake_path = q->path ? concat3(q->path, WAKE_SUFFIX, "") : NULL;
    ok = q->path && q->canonical && q->wake_path;
  }
  if (!ok) {
    buf_adds(err, "not enough memory");
    sq_destroy(&q->base);
    return NULL;
  }
  return &q->base;
}
