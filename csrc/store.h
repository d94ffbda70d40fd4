/*
 * store: the interface every database backend implements (PostgreSQL,
 * SQLite).  Plain C: no Lua.  Strings come in as (pointer, length)
 * pairs and go out as pointers into memory the store owns, valid until the
 * next call on the same store.  Every function returns STORE_OK or an error
 * code; store_error() then describes the failure (never with credentials).
 *
 * Times crossing this interface are Unix seconds as doubles on the
 * DATABASE's clock; the caller never compares them with its own host clock
 * except through the offset that next_wake reports.
 */
#ifndef SCHEDULER_STORE_H
#define SCHEDULER_STORE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum {
  STORE_OK = 0,
  STORE_ERROR = -1, /* the statement failed (constraint, permission, ...) */
  STORE_DOWN = -2,  /* no connection: unreachable, lost, or shut down */
  STORE_NOMEM = -3,
  STORE_LIVE = -4 /* abandon: the worker is still connected, nothing released */
};

/* A job to insert.  at/delay: at most one is used (has_at / has_delay). */
typedef struct store_new_job {
  const char *name;
  size_t name_len;
  const char *payload; /* JSON text, or NULL for a nil payload */
  size_t payload_len;
  int payload_has_nul; /* the JSON holds a \u0000 escape */
  const char *key; /* NULL: no key */
  size_t key_len;
  double at;    /* absolute Unix time, when has_at */
  double delay; /* seconds from the database's now(), when has_delay */
  int has_at, has_delay;
  long long priority;
  long long max_attempts; /* 0: decided by the worker that runs it */
} store_new_job;

/* A job as stored (job(id)) or as claimed.  Strings point into store memory;
 * lengths are exact (names may be long).  key/last_error/payload: NULL when
 * absent. */
typedef struct store_job {
  int64_t id;
  const char *name;
  size_t name_len;
  const char *payload;
  size_t payload_len;
  const char *key;
  size_t key_len;
  const char *state; /* "scheduled", "running", "failed" */
  const char *last_error;
  size_t last_error_len;
  double run_at;
  long long attempt;
  long long max_attempts; /* 0: not set on the job */
  long long priority;
  int64_t token; /* as claimed: the claim's token (see store_claim); 0 otherwise */
  /* as claimed: seconds after the claim at which the job may start, its
   * rate limit's token being due then (limit: RATES); 0 otherwise */
  double hold;
} store_job;

/* A job the worker holds: its id and the token of the claim that gave it to
 * the worker.  Every claim of a job gets a token that is never used again
 * for that job (releases, retries and quarantine included), and every later
 * write about the claim is fenced on (id, token): a worker whose claim was
 * taken back cannot touch the job's newer claim. */
typedef struct store_claim {
  int64_t id;
  int64_t token;
} store_claim;

/* What happened to a claimed job, reported in batches by store_finish. */
/* OUTCOME_CANCELLED: a job whose cancel() arrived before it started (see
 * store_ops.cancels): it is removed, and was never run.
 * OUTCOME_SNOOZE: its listener returned scheduler.snooze(retry_in): it
 * waits again (state scheduled, run_at = now + retry_in), its attempt
 * given back as for a release (the next run sees the same job.attempt),
 * its last_error left as it was, out of quarantine (it ended on its
 * own).  Fenced on its claim like every outcome; like a retry, a pending
 * cancel request does not drop it (the listener had started). */
typedef enum {
  OUTCOME_DONE, OUTCOME_RETRY, OUTCOME_FAILED, OUTCOME_RELEASE, OUTCOME_CANCELLED,
  OUTCOME_SNOOZE
} outcome_kind;

typedef struct store_outcome {
  store_claim claim;
  outcome_kind kind;
  double retry_in; /* seconds, for OUTCOME_RETRY and OUTCOME_SNOOZE */
  buf error;       /* for OUTCOME_RETRY / OUTCOME_FAILED: owned by the outcome */
  /* History (store_history): keep > 0 keeps a finished job (done, failed
   * for good, cancelled) that many seconds; <= 0 keeps nothing, and then
   * finish writes exactly what it writes without history.  started_at:
   * when its listener started, on the WORKER's wall clock (NAN: it never
   * started); duration: how long the listener ran (monotonic). */
  double keep, started_at, duration;
} store_outcome;

/* A recurring schedule.  The store keeps it; the Lua side computes its
 * slots.  next_at is the first slot not yet turned into a job. */
typedef struct store_cron {
  const char *id;
  size_t id_len;
  const char *expr;
  size_t expr_len;
  const char *tz;
  size_t tz_len;
  const char *name;
  size_t name_len;
  const char *payload; /* JSON text or NULL */
  size_t payload_len;
  int payload_has_nul;
  long long priority;
  long long max_attempts; /* 0: unset */
  int catch_up;           /* run the latest missed slot */
  double backfill;        /* < 0: none; else run every slot missed within it */
  double next_at;
  /* Who declared it: the owner tag of the listener files that did (`run
   * --cron-owner`), which remove it once they no longer declare it; NULL:
   * code (scheduler.cron outside listener files), kept until uncron. */
  const char *owner;
  size_t owner_len;
} store_cron;

/* Which jobs `list` returns: each unset field (NULL, has_id 0, limit 0)
 * matches every job. */
typedef struct store_filter {
  const char *state; /* "scheduled", "running" or "failed" */
  const char *name;
  size_t name_len;
  int64_t id;
  int has_id;
  long long limit; /* at most this many; 0: no limit */
} store_filter;

/* A listed job: the stored fields (job.max_attempts 0 when the job sets
 * none), plus its lease and its creation time. */
typedef struct store_job_row {
  store_job job;
  const char *locked_by; /* NULL when not running */
  size_t locked_by_len;
  double locked_until; /* NAN when not running */
  double created_at;
} store_job_row;

/* Which jobs `remove` deletes (delete, purge).  Unset fields
 * (has_id 0, name NULL, older_than < 0) match every job; the states say
 * which of the waiting ('scheduled') and failed jobs go.  A running job is
 * never removed, nor a waiting job a worker has claimed (PostgreSQL: one
 * in a batch a transaction holds, skipped as it is locked). */
typedef struct store_removal {
  int64_t id;
  int has_id;
  const char *name;
  size_t name_len;
  int scheduled, failed; /* remove waiting jobs / failed jobs */
  double older_than; /* >= 0: only jobs whose run_at (a failed job's: its last attempt's) is
                        more than this many seconds before the database's now */
} store_removal;

/* The statistics of one job name. */
typedef struct store_stat {
  const char *name;
  size_t name_len;
  long long due, later, running, failed; /* waiting jobs: due now / not yet */
  double late; /* seconds the oldest due job has waited; NAN when none is due */
  long long done_last_minute; /* jobs completed in the last 60 seconds */
} store_stat;

/* When the worker should look again, on the database clock. */
typedef struct store_wake {
  double db_now;   /* the database's clock when it answered */
  double next_due; /* earliest run_at among the worker's names; INFINITY if none */
  double next_expiry; /* earliest lease expiry among them; INFINITY if none */
  double next_cron;   /* earliest next_at of their recurring schedules */
  /* 1: due jobs of one of them wait for a slot of its concurrency limit
   * (store_ops.limit): the worker claims again once its own end frees one */
  int limit_wait;
} store_wake;

/* A finished job kept by history (store_outcome.keep): job.state is
 * "done", "failed" or "cancelled"; job.run_at its finished_at, the
 * time it ended (started_at + duration; a cancelled job: when the
 * cancel removed it); worker NULL for a job that never started. */
typedef struct store_history {
  store_job job;
  const char *worker;
  size_t worker_len;
  double started_at; /* NAN when it never started */
  double finished_at;
  double kept_until; /* pruned after this (database clock) */
} store_history;

/* The counters of one job name (store_ops.totals): jobs completed and
 * jobs failed for good, since the database was made (or since these
 * counters were: the schema migration that added them).  They only grow:
 * the rows that hold them are merged, never dropped. */
typedef struct store_total {
  const char *name;
  size_t name_len;
  long long done, failed;
} store_total;

/* The listener durations of one job name (store_ops.durations), as a
 * histogram: jobs[k] ran at most DURATION_BOUNDS[k] seconds and more than
 * the bound before (jobs[DURATION_BUCKETS]: longer than the last bound);
 * seconds: their total.  late and late_seconds: the same for their start
 * lateness (how long after its run_at, the time the claim saw, each
 * listener started; 0 when it started earlier, by the clocks' skew), by
 * LATENESS_BOUNDS: finer, for punctuality in milliseconds, and as many.
 * Counted from history (store_outcome.keep), and only grows. */
#define DURATION_BUCKETS 14
#define DURATION_BOUNDS_INIT \
  {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
#define LATENESS_BOUNDS_INIT \
  {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 10, 30, 60, 300}
typedef struct store_duration {
  const char *name;
  size_t name_len;
  long long jobs[DURATION_BUCKETS + 1], late[DURATION_BUCKETS + 1];
  double seconds, late_seconds;
} store_duration;

typedef struct store store;

typedef struct store_ops {
  const char *backend;
  /* Connect if not connected (and create/upgrade the schema). */
  int (*connect)(store *s);
  /* Drop the connection; the store stays usable (the next call reconnects). */
  void (*disconnect)(store *s);
  void (*destroy)(store *s);
  int (*schedule)(store *s, const store_new_job *job, int64_t *id);
  /* Insert n jobs in one transaction (all or none); ids[i] for jobs[i]. */
  int (*schedule_many)(store *s, const store_new_job *jobs, size_t n, int64_t *ids);
  /* *done = 1 when a waiting job was removed / a failed job was re-queued.
   *   cancel is linearizable with claims: a job that no listener has
   * started is removed (*done = 1) and never runs, also while a worker
   * holds it in a batch, held or leased.  It then asks that worker (a
   * cancel request, see `cancels`) and waits for its answer: the job is
   * dropped unstarted, or had started (*done = 0).  Leased jobs handed
   * back, and expired leases, honour a pending request.  STORE_ERROR when
   * another client kept the job locked for the whole wait. */
  int (*cancel)(store *s, int64_t id, int *done);
  int (*retry)(store *s, int64_t id, int *done);
  /* *found = 0 when no such job; else *out points into store memory. */
  int (*get)(store *s, int64_t id, store_job *out, int *found);
  /* The names of the jobs this worker may claim (copied by the store). */
  int (*set_names)(store *s, const char *const *names, const size_t *lens, size_t n);
  /* The max_attempts of this process's listeners (copied; max_attempts[i]
   * 0: none), which the crash rule applies to a job that sets none (see
   * rescue). */
  int (*set_max_attempts)(store *s, const char *const *names, const size_t *lens,
                          const long long *max_attempts, size_t n);
  /* Claim up to `limit` due jobs in run order.  *jobs points into store
   * memory valid until the next claim.  Each job's attempt is the one this
   * run is (the stored count plus one), and its token names this claim.
   *   CRASHES (README "Guarantees"): a worker that dies charges an attempt
   * only to a job it was known to be running.  A claim of one job alone
   * knows it; a batch does not (outcomes are recorded per batch), so the
   * jobs of a batch whose worker died come back with their attempt
   * unchanged, in QUARANTINE: claimed one at a time, alone (never batched),
   * until each has finished or crashed on its own.  A claim returns either
   * one quarantined job alone, or a batch of jobs that are not quarantined.
   *   Leased claims (every claim without `held`): the jobs are leased to
   * `worker` for `lease` seconds (the heartbeat renews the lease).  An
   * expired lease, or abandon, gives them back by that rule.
   *   Held claims (`held` says 1): the batch is held by an open
   * transaction: the claim deletes the jobs in it (their one row write),
   * which nobody else sees before the commit, and meanwhile their rows are
   * locked.  Before the first job runs, the store records the batch apart
   * (a statement on another connection, which the server commits even if
   * the worker dies right after); if the worker dies, the transaction
   * aborts, its jobs are back at once as they were, and that record sends
   * them to quarantine.
   * The batch ends with finish (the done jobs stay deleted; the others are
   * written back with their outcome; then the commit) or is turned into
   * leases by settle.
   *   Such a backend may also claim the next batch ahead, in the same
   * transaction, while this one runs (PostgreSQL: see CLAIM AHEAD in
   * store_pg_claim.c): finish then writes the outcomes without committing, and
   * the next claim returns that batch at once.  Any other operation first
   * ends the transaction (the batch claimed ahead goes back unattempted,
   * the rest commits); so does finish with n = 0. */
  int (*claim)(store *s, size_t limit, double lease, const char *worker,
               long long default_max_attempts, store_job **jobs, size_t *n);
  /* Record outcomes (delete done jobs, reschedule/fail/release the others)
   * in one transaction: for a held batch, in its transaction, then commit
   * (jobs of the batch without an outcome go back unattempted; see claim
   * for a batch claimed ahead); for leased jobs, each fenced on its claim.
   * With n = 0: nothing to record, but a claim transaction left open ends
   * (see claim). */
  int (*finish)(store *s, const store_outcome *outcomes, size_t n);
  /* Optional (NULL: claims are always leased).  End the held batch early:
   * record the outcomes `done`, lease the claims `keep` to `worker` for
   * `lease` seconds (their attempt as claimed), and commit, releasing every
   * other claim of the batch to run again (no attempt counted).  Nothing
   * to do when no batch is held.  Used when a batch runs long (a long
   * transaction would hold back vacuum) and before a listener's own calls
   * use the connection (which must not join the batch's transaction). */
  int (*settle)(store *s, const store_outcome *done, size_t n_done, const store_claim *keep,
                size_t n_keep, double lease, const char *worker);
  /* Optional (NULL: no cancel requests).  Called before job `next` of the
   * batch in hand starts: 1 when a cancel request for it has arrived (it
   * must not start: its outcome is OUTCOME_CANCELLED), else 0.  Requests
   * for jobs [0, next) of the batch are answered "started".  Cheap: it
   * looks for new requests at most every few hundred microseconds. */
  int (*cancels)(store *s, const store_claim *batch, size_t n, size_t next);
  /* Optional (NULL: never).  1 when the jobs of the last claim are held by
   * an open transaction (settle applies, nothing to renew), 0 when they are
   * leased. */
  int (*held)(store *s);
  /* Optional (NULL: no concurrent listeners).  The claims of a worker
   * that runs several listeners at once (see fetcher.h): up to `limit`
   * due jobs of its names, each leased to `worker` with its attempt
   * counted and a new token, none held.  Every lease such a worker holds
   * has one expiry, *until (database clock): the first claim with
   * nothing in flight passes *until <= 0 and gets now + lease back in
   * it; later ones pass it on, and heartbeat moves them all together.
   * So if the worker dies, its leases expire at one instant, and the
   * crash rule sees several (quarantine, nothing charged) whichever of
   * its claims they came from.  Quarantined jobs: with `alone` (nothing
   * in flight), a due one comes first, alone (*n 1, *quarantine 2: run
   * nothing else until it ends); without it they are skipped, and
   * *quarantine 1 says one waits (the worker lets its jobs finish, then
   * claims alone); else 0.  *jobs as for claim. */
  int (*claim_leased)(store *s, size_t limit, double lease, double *until, const char *worker,
                      int alone, store_job **jobs, size_t *n, int *quarantine);
  /* Extend the leases of claims: all to one expiry, now + lease, which
   * *until receives (database clock). */
  int (*heartbeat)(store *s, const store_claim *claims, size_t n, double lease, double *until);
  /* Put jobs whose lease expired back to run by the crash rule of claim.
   * The leases of one worker that share an expiry are one group: one
   * alone (a quarantined job, the job in hand when a batch was settled,
   * a listener blocked past its time limit, whose lease alone was not
   * renewed) counts its attempt, and the job fails when its attempts are
   * used up (its own max_attempts, else its listener's as
   * set_max_attempts gave it, else default_max_attempts); several (a
   * settled batch, the jobs in flight of a worker that runs several at
   * once) are not counted and go to quarantine.  Held batches whose
   * worker died are sent to quarantine the same way. */
  int (*rescue)(store *s, long long default_max_attempts);
  /* A worker is known dead (its supervisor saw it exit): put the jobs it
   * held back at once, as an expired lease would (see rescue).  *n = how
   * many.  STORE_LIVE, releasing nothing, when the backend can tell that
   * the worker is still connected (PostgreSQL: its session's lock; the
   * caller tries again later). */
  int (*abandon)(store *s, const char *worker, long long default_max_attempts, size_t *n);
  /* When to look again (store_wake).  drained: the caller's one claim
   * since its last look took fewer jobs than it asked (it has jobs in
   * flight, whose ends claim again): the due jobs of a name
   * limited by partition with no rate are then taken to wait for a slot
   * (limit_wait, a look within a second) without a walk of its
   * partitions, which that claim made; a job that came due after the
   * claim's clock is looked at at once.  A full partitioned name is also
   * looked at when its next job not due yet comes due. */
  int (*next_wake)(store *s, int drained, store_wake *out);
  /* Insert or update a recurring schedule.  An existing one keeps its
   * next_at unless its expression or zone changed. */
  int (*cron_put)(store *s, const store_cron *c);
  /* Remove a schedule; with `owner` (not NULL) only if that owner declared
   * it last (so that a removal never takes a schedule that code or another
   * deployment declared meanwhile). */
  int (*cron_remove)(store *s, const char *id, size_t id_len, const char *owner, size_t owner_len,
                     int *done);
  /* All schedules (within < 0), or those of this worker's names due within
   * `within` seconds; *db_now = the database's clock.  Memory valid until
   * the next cron_list. */
  int (*cron_list)(store *s, double within, store_cron **out, size_t *n, double *db_now);
  /* If the schedule's next_at is still `expected`, schedule a job for each
   * slot and set next_at = next, atomically; *won = 0 when another worker
   * got there first (then nothing happened). */
  int (*cron_fire)(store *s, const char *id, size_t id_len, double expected, const double *slots,
                   size_t n, double next, int *won);
  /* Start (on = 1) or stop receiving wake-up notifications; only run()
   * listens, so an idle connection never accumulates them.  Kept across
   * reconnects. */
  int (*listen)(store *s, int on);
  /* The descriptor to poll for wake-up notifications, or -1. */
  int (*socket)(store *s);
  /* Read pending notifications; *earliest = the earliest run_at among those
   * for this worker's names (INFINITY if none).  Returns STORE_DOWN when the
   * connection is gone. */
  int (*notifications)(store *s, double *earliest);
  /* Jobs matching f, in (run_at, id) order; *db_now = the database's clock. */
  int (*list)(store *s, const store_filter *f, store_job_row **rows, size_t *n, double *db_now);
  /* One row per job name that has jobs or completed some in the last
   * minute, in name order. */
  int (*stats)(store *s, store_stat **rows, size_t *n);
  /* Put every failed job (of `name`, or of all names when NULL) back to run
   * now with a fresh set of attempts, as retry does.  A failed job whose key
   * another unfinished job holds stays failed (of several failed jobs with
   * one key, the newest is retried); *skipped counts those. */
  int (*retry_failed)(store *s, const char *name, size_t name_len, size_t *retried,
                      size_t *skipped);
  /* Delete the jobs r selects (store_removal), in one statement; *removed
   * = how many.  Unlike cancel, it never waits for nor asks a worker. */
  int (*remove)(store *s, const store_removal *r, size_t *removed);
  /* The schema version: the number of applied migrations (connecting first
   * creates or upgrades the schema, as for every operation). */
  int (*schema_version)(store *s, int *version);
  /* Optional (NULL: the string given to store_open).  The database string
   * that opens this same database again, from another thread and after a
   * chdir() (a relative SQLite path made absolute, a private memory
   * database's generated name); the heartbeat thread opens its store with
   * it.  Owned by the store. */
  const char *(*database)(store *s);
  /* Optional (NULL: none).  A warning the store has for the log (a problem
   * it works around, e.g. an unusable SQLite wake file), returned once and
   * then forgotten; NULL when there is none new.  Owned by the store. */
  const char *(*warning)(store *s);
  /* Pause (on = 1) or resume (on = 0) job name (name, len), durably, for
   * every worker: no claim takes a job of a paused name (next_wake does not
   * count them either), and a worker holding a claimed job that has not
   * started hands it back unattempted once it sees the pause (see
   * paused_names).  Resuming wakes the workers.  *changed = 0 when the name
   * already was in that state. */
  int (*pause)(store *s, const char *name, size_t len, int on, int *changed);
  /* The paused names, in name order: *names and *lens point into store
   * memory valid until the next call of paused_names. */
  int (*paused_names)(store *s, const char *const **names, const size_t **lens, size_t *n);
  /* Optional (NULL: no history).  Finished jobs kept by history matching
   * f (state "done", "failed", "cancelled" or NULL; name; id; limit),
   * newest first; none whose time is up, pruned or not.  Memory valid
   * until the next call. */
  int (*history)(store *s, const store_filter *f, store_history **rows, size_t *n);
  /* Optional (NULL: no history).  Delete the history rows of at most
   * about `limit` jobs whose time is up, in one short transaction;
   * *pruned = how many rows (a row holds the jobs of one write, up to a
   * batch: it deletes limit / 100 rows at most, at least one). */
  int (*prune)(store *s, size_t limit, size_t *pruned);
  /* Limit job name (name, len) to `concurrency` jobs running at once
   * across every worker (0: no limit), durably; a call replaces the
   * name's limit.  "Running" is a job of the name claimed and not
   * finished, by any worker (leased: claimed ahead and not started
   * included); a claim takes at most the limit less those, and claims of
   * a limited name are serialized (PostgreSQL: a row lock on its limit, in
   * the claim's own short transaction; SQLite: the write lock), so that
   * two workers claiming together never exceed it.  Jobs of a limited
   * name are always leased, never held (store.h, claim), so a dead
   * worker's slots come back with its leases (rescue, abandon).  A worker
   * that finds a limited name full does not count its due jobs in
   * next_wake (it looks again within a second).  *changed = 0 when the
   * name already had that limit.
   *   PARTITIONS: with `by` (not NULL; by_len bytes), the limit applies
   * to each partition of the name apart: the jobs whose partition value
   * is the same.  by "key" is the job's key; any other by is the name of
   * a top-level field of the payload, its value as text (a string as
   * itself, a number as its digits).  A job without a key, a payload,
   * that field or with null there is in partition "" (a partition like
   * the others).  The database keeps it with the job (its column part,
   * written at insert and rewritten for the name's jobs when `by`
   * changes: PostgreSQL migration 17, SQLite 14), indexed for the
   * waiting jobs of partitioned names, so that a claim reads a row per
   * partition, not every due job; a limit set after the jobs were
   * scheduled applies to them.  A claim then
   * takes the due jobs of a name round-robin across its partitions: in
   * rounds (the first due job of each partition, then the second of
   * each, ..., within a priority), each round in partition order from
   * the name's turn on (the partition the last claim took from, stored
   * with the limit and moved by each claim), so that a partition with
   * many due jobs delays another by at most a round, whatever the size
   * of the claims (a worker at concurrency 1 takes one job per claim).
   *   RATES: with `rate` (>= 1; 0: none) and `per` (seconds, > 0), at
   * most `rate` jobs of the name start in any window of `per` seconds,
   * all workers together, smoothly: a token bucket (GCRA) of burst
   * STORE_RATE_BURST(rate) refilled one token every STORE_RATE_STEP(rate,
   * per) seconds, its state (the theoretical arrival time) kept with the
   * limit and moved by each claim under the same serialization as the
   * concurrency count, at the database's clock read after the lock.  A
   * claim takes at most the tokens there are, up to STORE_RATE_AHEAD
   * seconds ahead, and says when each job's token is due (store_job:
   * hold): the worker starts it then; the jobs left wait (they never fail
   * for it), and next_wake says when the next tokens can be taken.
   * concurrency 0 with a rate: a rate alone.  With `by`, a bucket per
   * partition (PARTITIONS above), each partition's claims taking at most
   * the least of its free slots and its tokens. */
  int (*limit)(store *s, const char *name, size_t len, long long concurrency, const char *by,
               size_t by_len, long long rate, double per, int *changed);
  /* The limited names in name order with their limits: *names, *lens,
   * *concurrency (0: none), *by and *by_lens (by[i] NULL: the whole
   * name), *rate (0: none) and *per point into store memory valid until
   * the next call. */
  int (*limits)(store *s, const char *const **names, const size_t **lens,
                const long long **concurrency, const char *const **by, const size_t **by_lens,
                const long long **rate, const double **per, size_t *n);
  /* Optional (NULL: none).  Per job name, in name order: the jobs
   * completed and failed for good so far (store_total), for metrics.
   * Memory valid until the next call. */
  int (*totals)(store *s, store_total **rows, size_t *n);
  /* Optional (NULL: held claims are not shown running).  Job `job` of a
   * held batch (store_ops.held; its token is the batch's) is the one its
   * worker is running (job->id 0: none of that batch is), so that get,
   * list and stats show it as running, with the worker, while the batch's
   * transaction holds it (other connections see its row as waiting).
   * Called by the worker's heartbeat thread on its own store, only for a
   * listener that has run for a moment (RUNNING_AFTER in heartbeat.c), so
   * jobs that run shorter cost nothing.  Never waits for a lock: *done
   * = 0 when the batch's record is not there (not committed yet, or the
   * batch has ended) or is locked (the caller tries again later). */
  int (*running)(store *s, const store_claim *job, int64_t batch, int *done);
  /* Optional (NULL: none).  Per job name, in name order: how long the
   * listeners of the jobs history kept ran and how late they started
   * (store_duration), counted once per job that started, whatever history
   * keeps since.  It first counts
   * the history rows not counted yet (a short write: a few thousand
   * rows at most per call, skipping rows another counter has locked),
   * so a row pruned before any call was never counted.  Memory valid until
   * the next call. */
  int (*durations)(store *s, store_duration **rows, size_t *n);
} store_ops;

/* A worker with history on prunes (PRUNE_BATCH) every PRUNE_EVERY
 * seconds, and PRUNE_AGAIN seconds after a prune that found anything:
 * each prune is a short transaction (no long lock, little vacuum debt),
 * and a backlog goes at up to PRUNE_BATCH jobs per PRUNE_AGAIN, far more
 * than a worker finishes. */
#define PRUNE_BATCH 1000
#define PRUNE_EVERY 60.0
#define PRUNE_AGAIN 0.2

struct store {
  const store_ops *ops;
  buf err; /* last error message, without the "scheduler:" prefix */
  /* Seconds that cancel() keeps a waiting job it removes in history
   * (configure{history}); 0: none. */
  double history;
};

/* Open a store for a database string ("sqlite:PATH" or "sqlite::memory:" for
 * SQLite; a postgresql:// or postgres:// URL, or a libpq keyword string, for
 * PostgreSQL).  Does not connect.  Returns NULL and fills err on
 * failure (bad string, out of memory). */
store *store_open(const char *database, buf *err);
void store_close(store *s);

/* A worker's prune when its time has come (*next_prune, monotonic
 * seconds, PRUNE_* above): one ops->prune of PRUNE_BATCH, and the next
 * time set.  STORE_OK when it was not yet time, or the store has no
 * history. */
int store_prune_due(store *s, double now, double *next_prune);

/* The secrets a database string holds (a PostgreSQL password, as written
 * and as decoded), each NUL-terminated, added to `out`.  0, or -1 out of
 * memory. */
int store_secrets(const char *database, buf *out);
const char *store_error(const store *s);

/* Used by backends: check a limit's partition field `by` (store_ops.limit):
 * 1 to LIMIT_BY_MAX bytes, no NUL, no '"' or '\\' (SQLite spells it in a
 * JSON path).  STORE_OK, or STORE_ERROR with the reason. */
#define LIMIT_BY_MAX 200

/* A rate limit's bucket (store_ops.limit: RATES).  A bucket of capacity B
 * refilled r tokens a second lets B - 1 + r * per tokens through in a
 * window of `per` seconds (full at its start, one more token at its very
 * end), so B and r are chosen with B - 1 + r * per <= rate: a burst of 1
 * and the tokens spread evenly, each 3% later than rate / per a second,
 * so that the delay between a token and its listener's start does not
 * push a window of starts past `rate` either: the claim's answer comes a
 * little after the database's clock, and a concurrent worker's Lua thread
 * starts what is due when it next turns, so starts come up to about 15 ms
 * off their tokens at 1,000 a second on a quiet machine, 2 cores (with
 * 2%: 993-997 starts in a second at most, from 981 tokens).  Sustained:
 * rate / (1.03 per) a second (971 for 1,000 a second).  (A burst of rate
 * / 50 let a claim that came late take the tokens its lateness had added;
 * claims now take tokens ahead instead, STORE_RATE_AHEAD, and a burst
 * only made the windows of starts uneven: with 20, 981 at most and 961 at
 * least of the bucket's in a second.)  The backends spell the same rule
 * in SQL (PostgreSQL: scheduler.rate_burst, scheduler.rate_step,
 * scheduler.rate_ahead, scheduler.rate_look). */
#define STORE_RATE_BURST(rate) 1
#define STORE_RATE_STEP(rate, per) (1.03 * (per) / (double)((rate) - STORE_RATE_BURST(rate) + 1))
/* A claim takes a rate's tokens up to STORE_RATE_AHEAD seconds before they
 * are due, and each job it took starts at its token's time (store_job:
 * hold), so that the starts follow the bucket, not the claims: claims come
 * when a worker's claim comes round (5-30 ms apart at 1,000 a second), and
 * a window of starts that began just after a claim and ended just before
 * one lost up to the burst (930-950 starts in a second where 962 were due;
 * a bucket left full lost tokens on top).  A job claimed ahead waits at
 * most this long in its worker, its slot held.  The job k (from 1) of a
 * bucket's claim, the bucket's theoretical arrival time tat (or now, if
 * later) before it: due at tat + (k - B) * step; a claim takes it if that
 * is at most STORE_RATE_AHEAD from now. */
#define STORE_RATE_AHEAD 0.1
/* Seconds before a bucket's tat at which a worker whose name waits for its
 * tokens looks again: when a quarter (rounded up) of what a claim can
 * take (the burst and the tokens of STORE_RATE_AHEAD) can be taken again,
 * not at each token: at 1,000 a second, at most a look each 25 ms (a
 * claim each millisecond would be a lock and a transaction each); holding
 * what they take, the workers start each job at its token all the same,
 * as long as a claim comes within STORE_RATE_AHEAD.  (A worker whose own
 * jobs end claims again at once, for its free slots: in the bench's rate
 * row, 4 workers whose jobs return at once, a claim takes 2 jobs at the
 * median.) */
static inline double store_rate_look(long long rate, double per) {
  double step = STORE_RATE_STEP(rate, per);
  double cap = floor((double)STORE_RATE_BURST(rate) + STORE_RATE_AHEAD / step + 1e-6);
  double quarter = ceil(cap / 4);
  return STORE_RATE_AHEAD - (quarter - (double)STORE_RATE_BURST(rate)) * step;
}
/* Longest `per` accepted: a year, in seconds. */
#define STORE_RATE_PER_MAX 31536000.0
int store_check_by(store *s, const char *by, size_t len);

/* Used by backends: set the error message (printf-style); returns `code`. */
int store_fail(store *s, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
