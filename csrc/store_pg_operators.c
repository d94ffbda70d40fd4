/*
 * store_pg_operators.c: the operators' statements: get, retry, list,
 * stats, retry_failed and remove.  Listing, statistics, bulk retry and removal are planned
 * with their actual parameters: each NULL means "any", which a generic plan
 * could only serve with a scan of every job.
 */
#include "store_pg_internal.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* A job of a held batch whose record marks it running (see RUNNING in
 * store_pg_crash.c) reads as running, by the record's worker, its
 * attempt counted (as a lease's is), although its row, as other
 * connections see it, is waiting: HELD_RUNNING joins the marks (b.worker
 * NULL: none) to the jobs j. */
#define HELD_RUNNING                                                                         \
  " LEFT JOIN (SELECT DISTINCT ON (m.running) m.running, m.worker FROM scheduler.batches m"  \
  "  WHERE m.running IS NOT NULL) b ON b.running = j.id AND j.state = 'scheduled'"
#define STATE_SHOWN "CASE WHEN b.worker IS NULL THEN j.state ELSE 'running' END"
#define ATTEMPT_SHOWN "j.attempt + CASE WHEN b.worker IS NULL THEN 0 ELSE 1 END"

static const pg_query pgq_get = {Q_GET, "scheduler_get", 1,
    "SELECT j.id, j.name, j.payload, extract(epoch FROM j.run_at), " ATTEMPT_SHOWN ","
    " j.max_attempts, j.key, j.priority, " STATE_SHOWN ", j.last_error"
    " FROM scheduler.jobs j" HELD_RUNNING " WHERE j.id = $1"};

static const pg_query pgq_retry = {Q_RETRY, "scheduler_retry", 1,
    "WITH r AS (UPDATE scheduler.jobs SET state = 'scheduled', run_at = now(),"
    " attempt = 0 WHERE id = $1 AND state = 'failed' RETURNING name, run_at)"
    " SELECT pg_notify('scheduler', extract(epoch FROM r.run_at)::text || ' ' ||"
    " CASE WHEN octet_length(r.name) <= 1000 THEN r.name ELSE '' END) FROM r"};

/* $1 state, $2 name, $3 id, $4 limit (NULL: none).  The outer one-row
 * select makes an empty result still carry the database clock (a row
 * whose id is NULL).  A held job marked running is listed as running, by
 * its record's worker, without a lease (HELD_RUNNING). */
static const pg_query pgq_list = {Q_LIST, NULL, 4,
    "SELECT extract(epoch FROM n.now), j.id, j.name, j.state,"
    " extract(epoch FROM j.run_at), j.attempt, j.max_attempts, j.priority, j.key,"
    " j.locked_by, extract(epoch FROM j.locked_until),"
    " extract(epoch FROM j.created_at), j.last_error, j.payload"
    " FROM (SELECT now()) AS n(now) LEFT JOIN LATERAL ("
    "  SELECT j.id, j.name, " STATE_SHOWN " AS state, j.run_at, " ATTEMPT_SHOWN " AS attempt,"
    "   j.max_attempts, j.priority, j.key, coalesce(j.locked_by, b.worker) AS locked_by,"
    "   j.locked_until, j.created_at, j.last_error, j.payload"
    "  FROM scheduler.jobs j" HELD_RUNNING
    /* (planned with the values: the first test keeps an index on state
     * usable for 'failed') */
    "  WHERE ($1::text IS NULL OR j.state = $1 OR ($1 = 'running' AND j.state = 'scheduled'))"
    "    AND ($1::text IS NULL OR " STATE_SHOWN " = $1) AND ($2::text IS NULL OR j.name = $2)"
    "    AND ($3::bigint IS NULL OR j.id = $3)"
    "  ORDER BY j.run_at, j.id LIMIT $4::bigint) AS j ON true"};

/* Per name: counts by state (a held job marked running counts as running,
 * not due: HELD_RUNNING), how late the oldest due job is, and the
 * completions of the last 60 seconds (names with none left included). */
static const pg_query pgq_stats = {Q_STATS, "scheduler_stats", 0,
    "SELECT coalesce(j.name, d.name), coalesce(j.due, 0), coalesce(j.later, 0),"
    " coalesce(j.running, 0), coalesce(j.failed, 0), j.late, coalesce(d.done, 0)"
    " FROM (SELECT j.name,"
    "  count(*) FILTER (WHERE " STATE_SHOWN " = 'scheduled' AND j.run_at <= now()) AS due,"
    "  count(*) FILTER (WHERE " STATE_SHOWN " = 'scheduled' AND j.run_at > now()) AS later,"
    "  count(*) FILTER (WHERE " STATE_SHOWN " = 'running') AS running,"
    "  count(*) FILTER (WHERE j.state = 'failed') AS failed,"
    "  extract(epoch FROM now() - min(j.run_at) FILTER (WHERE " STATE_SHOWN " = 'scheduled'"
    "    AND j.run_at <= now())) AS late"
    "  FROM scheduler.jobs j" HELD_RUNNING " GROUP BY j.name) AS j"
    " FULL JOIN (SELECT name, sum(jobs) AS done FROM scheduler.completions"
    "  WHERE at > now() - interval '60 seconds' GROUP BY name) AS d ON d.name = j.name"
    " ORDER BY 1"};

/* $1 name (NULL: all).  As Q_RETRY (attempt 0, run now, a wake-up per
 * name) for every failed job whose key is free; all parts see one
 * snapshot, so the last count is the number failed before. */
static const pg_query pgq_retry_failed = {Q_RETRY_FAILED, NULL, 1,
    "WITH c AS ("
    "  SELECT DISTINCT ON (key, CASE WHEN key IS NULL THEN id END) id"
    "  FROM scheduler.jobs j"
    "  WHERE state = 'failed' AND ($1::text IS NULL OR name = $1)"
    "    AND (key IS NULL OR NOT EXISTS (SELECT 1 FROM scheduler.jobs o"
    "         WHERE o.key = j.key AND o.state <> 'failed'))"
    "  ORDER BY key, CASE WHEN key IS NULL THEN id END, id DESC"
    "), r AS ("
    "  UPDATE scheduler.jobs j SET state = 'scheduled', run_at = now(),"
    "  attempt = 0 FROM c WHERE j.id = c.id AND j.state = 'failed'"
    "  RETURNING j.name, j.run_at"
    "), w AS ("
    "  SELECT pg_notify('scheduler', extract(epoch FROM min(r.run_at))::text"
    "    || ' ' || CASE WHEN octet_length(r.name) <= 1000 THEN r.name ELSE ''"
    "    END) FROM r GROUP BY r.name"
    ") SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM w),"
    "  (SELECT count(*) FROM scheduler.jobs WHERE state = 'failed'"
    "   AND ($1::text IS NULL OR name = $1))"};


/* $1 id, $2 name, $3 waiting jobs, $4 failed jobs, $5 seconds (NULL: any
 * age).  The rows are locked first, skipping those locked: a job in a
 * batch a claim transaction holds (deleted there, still visible here) or
 * that a claim or cancel is taking is the worker's, not removed; the
 * DELETE checks the state again on the row it locked. */
static const pg_query pgq_remove = {Q_REMOVE, NULL, 5,
    "WITH d AS (DELETE FROM scheduler.jobs WHERE id IN ("
    "  SELECT id FROM scheduler.jobs"
    "  WHERE ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR name = $2)"
    "    AND (($3::boolean AND state = 'scheduled') OR ($4::boolean AND state = 'failed'))"
    "    AND ($5::float8 IS NULL OR run_at < now() - $5::float8 * interval '1 second')"
    "  FOR UPDATE SKIP LOCKED)"
    " AND (($3::boolean AND state = 'scheduled') OR ($4::boolean AND state = 'failed'))"
    " RETURNING 1) SELECT count(*) FROM d"};

/* Fill j from row `row` of a get result (columns id, name, payload,
 * run_at, attempt, max_attempts, key, priority, state, last_error). */
static void read_job(PGresult *r, int row, store_job *j) {
  j->id = parse_int(PQgetvalue(r, row, 0));
  j->name = value_or_null(r, row, 1, &j->name_len);
  j->payload = value_or_null(r, row, 2, &j->payload_len);
  j->run_at = parse_seconds(PQgetvalue(r, row, 3));
  j->attempt = parse_int(PQgetvalue(r, row, 4));
  j->max_attempts = PQgetisnull(r, row, 5) ? 0 : parse_int(PQgetvalue(r, row, 5));
  j->key = value_or_null(r, row, 6, &j->key_len);
  j->priority = parse_int(PQgetvalue(r, row, 7));
  j->state = PQgetvalue(r, row, 8);
  j->last_error = value_or_null(r, row, 9, &j->last_error_len);
}

int pg_get(store *s, int64_t id, store_job *out, int *found) {
  pg_store *p = PG(s);
  char idtext[32];
  snprintf(idtext, sizeof idtext, "%lld", (long long)id);
  const char *values[1] = {idtext};
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_get, values, &r);
  if (rc) return rc;
  *found = PQntuples(r) > 0;
  if (*found) read_job(r, 0, out);
  clear(&p->got);
  p->got = r;
  return STORE_OK;
}

static int exec_id(pg_store *p, const pg_query *q, int64_t id, int *done) {
  char idtext[32];
  snprintf(idtext, sizeof idtext, "%lld", (long long)id);
  const char *values[1] = {idtext};
  PGresult *r = NULL;
  int rc = pg_run(p, q, values, &r);
  if (rc) return rc;
  *done = atoi(PQcmdTuples(r)) > 0 || PQntuples(r) > 0;
  PQclear(r);
  return STORE_OK;
}

int pg_retry(store *s, int64_t id, int *done) { return exec_id(PG(s), &pgq_retry, id, done); }

/* NAN for NULL. */
static double seconds_or_nan(PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? NAN : parse_seconds(PQgetvalue(r, row, col));
}

void pg_filter(const store_filter *f, pg_filter_params *out) {
  snprintf(out->id, sizeof out->id, "%lld", (long long)f->id);
  snprintf(out->limit, sizeof out->limit, "%lld", f->limit);
  out->values[0] = f->state;
  out->values[1] = f->name;
  out->values[2] = f->has_id ? out->id : NULL;
  out->values[3] = f->limit > 0 ? out->limit : NULL;
}

int pg_list(store *s, const store_filter *f, store_job_row **out, size_t *n,
                   double *db_now) {
  pg_store *p = PG(s);
  *out = NULL;
  *n = 0;
  if (f->name && memchr(f->name, 0, f->name_len)) return STORE_OK; /* none can match */
  pg_filter_params params;
  pg_filter(f, &params);
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_list, params.values, &r);
  if (rc) return rc;
  size_t rows = (size_t)PQntuples(r);
  *db_now = parse_seconds(PQgetvalue(r, 0, 0));
  if (rows == 1 && PQgetisnull(r, 0, 1)) rows = 0; /* no job: just the clock */
  if (reserve((void **)&p->rows, &p->rows_cap, rows, sizeof *p->rows)) {
    PQclear(r);
    return store_fail(s, STORE_NOMEM, "listing jobs: not enough memory");
  }
  for (size_t i = 0; i < rows; i++) {
    store_job_row *x = &p->rows[i];
    store_job *j = &x->job;
    int row = (int)i;
    memset(x, 0, sizeof *x);
    j->id = parse_int(PQgetvalue(r, row, 1));
    j->name = value_or_null(r, row, 2, &j->name_len);
    j->state = PQgetvalue(r, row, 3);
    j->run_at = parse_seconds(PQgetvalue(r, row, 4));
    j->attempt = parse_int(PQgetvalue(r, row, 5));
    j->max_attempts = PQgetisnull(r, row, 6) ? 0 : parse_int(PQgetvalue(r, row, 6));
    j->priority = parse_int(PQgetvalue(r, row, 7));
    j->key = value_or_null(r, row, 8, &j->key_len);
    x->locked_by = value_or_null(r, row, 9, &x->locked_by_len);
    x->locked_until = seconds_or_nan(r, row, 10);
    x->created_at = seconds_or_nan(r, row, 11);
    j->last_error = value_or_null(r, row, 12, &j->last_error_len);
    j->payload = value_or_null(r, row, 13, &j->payload_len);
  }
  clear(&p->listed);
  p->listed = r;
  *out = p->rows;
  *n = rows;
  return STORE_OK;
}

int pg_stats(store *s, store_stat **out, size_t *n) {
  pg_store *p = PG(s);
  *out = NULL;
  *n = 0;
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_stats, NULL, &r);
  if (rc) return rc;
  size_t rows = (size_t)PQntuples(r);
  if (reserve((void **)&p->stats, &p->stats_cap, rows, sizeof *p->stats)) {
    PQclear(r);
    return store_fail(s, STORE_NOMEM, "reading statistics: not enough memory");
  }
  for (size_t i = 0; i < rows; i++) {
    store_stat *x = &p->stats[i];
    int row = (int)i;
    x->name = value_or_null(r, row, 0, &x->name_len);
    x->due = parse_int(PQgetvalue(r, row, 1));
    x->later = parse_int(PQgetvalue(r, row, 2));
    x->running = parse_int(PQgetvalue(r, row, 3));
    x->failed = parse_int(PQgetvalue(r, row, 4));
    x->late = seconds_or_nan(r, row, 5);
    x->done_last_minute = parse_int(PQgetvalue(r, row, 6));
  }
  clear(&p->counted);
  p->counted = r;
  *out = p->stats;
  *n = rows;
  return STORE_OK;
}

/* Per name: the completions and failures ever (store.h, totals): the
 * sums of their rows.  It first merges the failures' rows (one per
 * failure, see migration 14) into one per name, as COUNT_DONE merges
 * completions, skipping rows another merge has locked; the sums read the
 * snapshot before the merge, which has the same sums. */
static const pg_query pgq_totals = {Q_TOTALS, NULL, 0,
    "WITH old AS MATERIALIZED (SELECT f.ctid FROM scheduler.failures f"
    "  WHERE f.at > '-infinity' LIMIT 10000 FOR UPDATE SKIP LOCKED),"
    " merged AS (DELETE FROM scheduler.failures WHERE ctid = ANY (ARRAY("
    "  SELECT old.ctid FROM old UNION ALL SELECT m.ctid FROM (SELECT f.ctid"
    "  FROM scheduler.failures f WHERE f.at = '-infinity' AND EXISTS (SELECT 1 FROM old)"
    "  LIMIT 1000 FOR UPDATE SKIP LOCKED) m)) RETURNING name, jobs),"
    " kept AS (INSERT INTO scheduler.failures (at, name, jobs)"
    "  SELECT '-infinity', name, sum(jobs) FROM merged GROUP BY name RETURNING 1)"
    " SELECT coalesce(d.name, f.name), coalesce(d.n, 0), coalesce(f.n, 0)"
    " FROM (SELECT name, sum(jobs) AS n FROM scheduler.completions GROUP BY name) d"
    " FULL JOIN (SELECT name, sum(jobs) AS n FROM scheduler.failures GROUP BY name) f"
    "  ON f.name = d.name ORDER BY 1"};

int pg_totals(store *s, store_total **out, size_t *n) {
  pg_store *p = PG(s);
  *out = NULL;
  *n = 0;
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_totals, NULL, &r);
  if (rc) return rc;
  size_t rows = (size_t)PQntuples(r);
  if (reserve((void **)&p->totals, &p->totals_cap, rows, sizeof *p->totals)) {
    PQclear(r);
    return store_fail(s, STORE_NOMEM, "reading totals: not enough memory");
  }
  for (size_t i = 0; i < rows; i++) {
    store_total *x = &p->totals[i];
    x->name = value_or_null(r, (int)i, 0, &x->name_len);
    x->done = parse_int(PQgetvalue(r, (int)i, 1));
    x->failed = parse_int(PQgetvalue(r, (int)i, 2));
  }
  clear(&p->totaled);
  p->totaled = r;
  *out = p->totals;
  *n = rows;
  return STORE_OK;
}

int pg_retry_failed(store *s, const char *name, size_t name_len, size_t *retried,
                           size_t *skipped) {
  *retried = *skipped = 0;
  if (name && memchr(name, 0, name_len)) return STORE_OK; /* no such job */
  const char *values[1] = {name};
  PGresult *r = NULL;
  int rc = pg_run(PG(s), &pgq_retry_failed, values, &r);
  if (rc) return rc;
  long long done = parse_int(PQgetvalue(r, 0, 0)), before = parse_int(PQgetvalue(r, 0, 2));
  PQclear(r);
  *retried = (size_t)done;
  *skipped = before > done ? (size_t)(before - done) : 0;
  return STORE_OK;
}

/* PAUSE (store.h, pause): a paused name is a row of scheduler.paused,
 * which every claim reads (see Q_CLAIM).  Resuming wakes the sleeping
 * workers of the name, as a new due job would. */
static const pg_query pgq_pause = {Q_PAUSE, "scheduler_pause", 1,
    "WITH i AS (INSERT INTO scheduler.paused (name) VALUES ($1)"
    "  ON CONFLICT (name) DO NOTHING RETURNING 1) SELECT count(*) FROM i"};
static const pg_query pgq_resume = {Q_RESUME, "scheduler_resume", 1,
    "WITH d AS (DELETE FROM scheduler.paused WHERE name = $1 RETURNING name)"
    " SELECT count(*), (SELECT pg_notify('scheduler', extract(epoch FROM now())::text"
    "  || ' ' || CASE WHEN octet_length($1::text) <= 1000 THEN $1::text ELSE '' END)"
    "  WHERE EXISTS (SELECT FROM d))" /* no wake-up when it was not paused */
    " FROM d"};
#define PAUSED_SQL "SELECT name FROM scheduler.paused ORDER BY name"
static const pg_query pgq_paused = {Q_PAUSED, "scheduler_paused", 0, PAUSED_SQL};

int pg_pause(store *s, const char *name, size_t len, int on, int *changed) {
  *changed = 0;
  if (memchr(name, 0, len))
    return store_fail(s, STORE_ERROR, "a job name cannot contain a NUL byte");
  const char *values[1] = {name};
  PGresult *r = NULL;
  int rc = pg_run(PG(s), on ? &pgq_pause : &pgq_resume, values, &r);
  if (rc) return rc;
  *changed = parse_int(PQgetvalue(r, 0, 0)) > 0;
  PQclear(r);
  return STORE_OK;
}

/* Inside a batch's transaction (the worker looks before starting each of
 * its jobs: loop.c) the main connection is the batch's: the record
 * connection reads instead. */
int pg_paused_names(store *s, const char *const **names, const size_t **lens, size_t *n) {
  pg_store *p = PG(s);
  PGresult *r = NULL;
  int rc = p->tx != TX_IDLE && !p->leases_only ? pg_rec_query(p, PAUSED_SQL, &r)
                                                  : pg_run(p, &pgq_paused, NULL, &r);
  if (rc) return rc;
  size_t rows = (size_t)PQntuples(r);
  size_t *lens_new = rows > p->paused_cap || !p->paused_lens
                         ? realloc(p->paused_lens, (rows ? rows : 1) * sizeof *lens_new)
                         : p->paused_lens;
  if (lens_new) p->paused_lens = lens_new;
  if (!lens_new ||
      reserve((void **)&p->paused_names, &p->paused_cap, rows ? rows : 1, sizeof *p->paused_names)) {
    PQclear(r);
    return store_fail(s, STORE_NOMEM, "not enough memory");
  }
  for (size_t i = 0; i < rows; i++) {
    p->paused_names[i] = PQgetvalue(r, (int)i, 0);
    p->paused_lens[i] = (size_t)PQgetlength(r, (int)i, 0);
  }
  clear(&p->paused);
  p->paused = r;
  *names = p->paused_names;
  *lens = p->paused_lens;
  *n = rows;
  return STORE_OK;
}

/* LIMITS (store.h, limit): a limited name is a row of scheduler.limits,
 * which the claims read (see Q_CLAIM, Q_CLAIM_LIMITED).  A changed limit
 * wakes the sleeping workers of the name, as a new due job would: a
 * higher limit (or none) frees slots. */
#define LIMIT_WAKE \
  "(SELECT pg_notify('scheduler', extract(epoch FROM now())::text" \
  "  || ' ' || CASE WHEN octet_length($1::text) <= 1000 THEN $1::text ELSE '' END))"
/* Columns: whether the limit changed, the wake-up, whether its `by`
 * changed (then pg_limit repartitions: REPARTITION). */
static const pg_query pgq_limit = {Q_LIMIT, "scheduler_limit", 5,
    "WITH o AS (SELECT l.by FROM scheduler.limits l WHERE l.name = $1),"
    " i AS (INSERT INTO scheduler.limits AS l (name, concurrency, by, rate, per)"
    "  VALUES ($1, $2, $3, $4, $5)"
    "  ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency,"
    "   by = excluded.by, rate = excluded.rate, per = excluded.per, at = now()"
    "  WHERE l.concurrency IS DISTINCT FROM excluded.concurrency"
    "   OR l.by IS DISTINCT FROM excluded.by OR l.rate IS DISTINCT FROM excluded.rate"
    "   OR l.per IS DISTINCT FROM excluded.per"
    "  RETURNING 1)"
    " SELECT count(*), " LIMIT_WAKE ", (SELECT o.by FROM o) IS DISTINCT FROM $3 FROM i"};
static const pg_query pgq_unlimit = {Q_UNLIMIT, "scheduler_unlimit", 1,
    "WITH d AS (DELETE FROM scheduler.limits WHERE name = $1 RETURNING by)"
    " SELECT count(*), " LIMIT_WAKE ", bool_or(d.by IS NOT NULL) FROM d"};

/* REPARTITION (store.h, limit: PARTITIONS; migration 17).  A claim finds
 * the waiting jobs of a partitioned name through jobs_part, by their
 * column part, which the insert trigger jobs_part fills from the limits
 * it sees.  When a name's `by` changes, limit() commits the new limit,
 * waits for every client transaction of the database that was open then
 * to end (pgq_older: their virtual transaction ids, as CREATE INDEX
 * CONCURRENTLY waits for older snapshots; one of them may have inserted
 * jobs whose trigger saw the old `by`, or may yet, in its snapshot; not
 * autovacuum's, which inserts no job and may take long), then rewrites
 * part for every job of the name (pgq_repartition, any state: a failed
 * job retried later keeps it).  Jobs
 * inserted after the commit see the new `by`, so none is left with a
 * stale part.  Meanwhile the claims skip the jobs whose part is stale
 * (they check it) or missing: they wait, for the commit of the
 * transactions open at the change and the rewrite.  A transaction still
 * open REPARTITION_WAIT later is not waited for longer (it may be this
 * process's own, on another connection): jobs it inserts before its
 * commit keep no partition until the next limit() call of the name,
 * which rewrites part again whether or not the limit changed. */
#define REPARTITION_WAIT 60.0
static const pg_query pgq_older = {Q_LIMIT, NULL, 0,
    "SELECT coalesce(array_agg(l.virtualxid), '{}') FROM pg_locks l"
    " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'virtualxid'"
    " AND l.granted AND l.pid <> pg_backend_pid() AND a.datname = current_database()"
    " AND a.backend_type = 'client backend'"};
static const pg_query pgq_older_left = {Q_LIMIT, NULL, 1,
    "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'virtualxid'"
    " AND l.virtualxid = ANY ($1::text[])"};
#define NEW_PART "CASE WHEN l.by IS NOT NULL THEN scheduler.part(l.by, j.key, j.payload) END"
static const pg_query pgq_repartition = {Q_LIMIT, NULL, 1,
    "UPDATE scheduler.jobs j SET part = " NEW_PART
    " FROM (SELECT $1::text AS name) n LEFT JOIN scheduler.limits l ON l.name = n.name"
    " WHERE j.name = n.name AND j.part IS DISTINCT FROM " NEW_PART};

/* Wait up to REPARTITION_WAIT for the transactions open now to end, then
 * rewrite the partitions of name (REPARTITION). */
static int repartition(pg_store *p, const char *name, int wait) {
  PGresult *res = NULL;
  int rc = STORE_OK;
  if (wait && (rc = pg_run(p, &pgq_older, NULL, &res)) == STORE_OK) {
    char *older = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (!older) return store_fail(&p->base, STORE_NOMEM, "not enough memory");
    const char *values[1] = {older};
    double until = clock_mono() + REPARTITION_WAIT;
    while (strcmp(older, "{}") != 0 && (rc = pg_run(p, &pgq_older_left, values, &res)) == STORE_OK) {
      int left = parse_int(PQgetvalue(res, 0, 0));
      PQclear(res);
      if (left == 0 || clock_mono() > until) break;
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    free(older);
  }
  if (rc == STORE_OK) {
    const char *values[1] = {name};
    if ((rc = pg_run(p, &pgq_repartition, values, &res)) == STORE_OK) PQclear(res);
  }
  return rc;
}
#define LIMITS_SQL                                                                           \
  "SELECT name, coalesce(concurrency, 0), by, coalesce(rate, 0), per"                        \
  " FROM scheduler.limits ORDER BY name"
static const pg_query pgq_limits = {Q_LIMITS, "scheduler_limits", 0, LIMITS_SQL};

int pg_limit(store *s, const char *name, size_t len, long long concurrency, const char *by,
             size_t by_len, long long rate, double per, int *changed) {
  *changed = 0;
  if (memchr(name, 0, len))
    return store_fail(s, STORE_ERROR, "a job name cannot contain a NUL byte");
  if (concurrency < 0 || concurrency > 2147483647)
    return store_fail(s, STORE_ERROR, "a concurrency limit must be from 1 to 2147483647");
  if (rate < 0 || rate > 2147483647 || (rate && !(per > 0 && per <= STORE_RATE_PER_MAX)))
    return store_fail(s, STORE_ERROR, "a rate limit must be from 1 to 2147483647 per 0 to %.0f seconds",
                      STORE_RATE_PER_MAX);
  int some = concurrency || rate;
  if (by && some && store_check_by(s, by, by_len) != STORE_OK) return STORE_ERROR;
  char n[32], r[32], pr[64];
  snprintf(n, sizeof n, "%lld", concurrency);
  snprintf(r, sizeof r, "%lld", rate);
  snprintf(pr, sizeof pr, "%.17g", per);
  /* (by is NUL-free: a C string up to by_len) */
  char *b = by && some ? strndup(by, by_len) : NULL;
  if (by && some && !b) return store_fail(s, STORE_NOMEM, "not enough memory");
  const char *values[5] = {name, concurrency ? n : NULL, b, rate ? r : NULL, rate ? pr : NULL};
  PGresult *res = NULL;
  int rc = pg_run(PG(s), some ? &pgq_limit : &pgq_unlimit, values, &res);
  free(b);
  if (rc) return rc;
  *changed = parse_int(PQgetvalue(res, 0, 0)) > 0;
  int by_changed = *changed && PQgetvalue(res, 0, 2)[0] == 't';
  PQclear(res);
  return repartition(PG(s), name, by_changed);
}

int pg_limits(store *s, const char *const **names, const size_t **lens,
              const long long **concurrency, const char *const **by, const size_t **by_lens,
              const long long **rate, const double **per, size_t *n) {
  pg_store *p = PG(s);
  PGresult *r = NULL;
  int rc = p->tx != TX_IDLE && !p->leases_only ? pg_rec_query(p, LIMITS_SQL, &r)
                                                  : pg_run(p, &pgq_limits, NULL, &r);
  if (rc) return rc;
  size_t rows = (size_t)PQntuples(r), cap = p->limit_cap;
  if (reserve((void **)&p->limit_names, &cap, rows ? rows : 1, sizeof *p->limit_names) ||
      (cap = p->limit_cap,
       reserve((void **)&p->limit_lens, &cap, rows ? rows : 1, sizeof *p->limit_lens)) ||
      (cap = p->limit_cap,
       reserve((void **)&p->limit_values, &cap, rows ? rows : 1, sizeof *p->limit_values)) ||
      (cap = p->limit_cap,
       reserve((void **)&p->limit_by, &cap, rows ? rows : 1, sizeof *p->limit_by)) ||
      (cap = p->limit_cap,
       reserve((void **)&p->limit_by_lens, &cap, rows ? rows : 1, sizeof *p->limit_by_lens)) ||
      (cap = p->limit_cap,
       reserve((void **)&p->limit_rates, &cap, rows ? rows : 1, sizeof *p->limit_rates)) ||
      (cap = p->limit_cap,
       reserve((void **)&p->limit_pers, &cap, rows ? rows : 1, sizeof *p->limit_pers))) {
    PQclear(r);
    return store_fail(s, STORE_NOMEM, "not enough memory");
  }
  p->limit_cap = cap;
  for (size_t i = 0; i < rows; i++) {
    p->limit_names[i] = PQgetvalue(r, (int)i, 0);
    p->limit_lens[i] = (size_t)PQgetlength(r, (int)i, 0);
    p->limit_values[i] = parse_int(PQgetvalue(r, (int)i, 1));
    p->limit_by[i] = PQgetisnull(r, (int)i, 2) ? NULL : PQgetvalue(r, (int)i, 2);
    p->limit_by_lens[i] = (size_t)PQgetlength(r, (int)i, 2);
    p->limit_rates[i] = parse_int(PQgetvalue(r, (int)i, 3));
    p->limit_pers[i] = PQgetisnull(r, (int)i, 4) ? 0 : strtod(PQgetvalue(r, (int)i, 4), NULL);
  }
  clear(&p->limits);
  p->limits = r;
  *names = p->limit_names;
  *lens = p->limit_lens;
  *concurrency = p->limit_values;
  *by = p->limit_by;
  *by_lens = p->limit_by_lens;
  *rate = p->limit_rates;
  *per = p->limit_pers;
  *n = rows;
  return STORE_OK;
}

int pg_remove(store *s, const store_removal *r, size_t *removed) {
  *removed = 0;
  if (r->name && memchr(r->name, 0, r->name_len)) return STORE_OK; /* no such job */
  char id[32], age[64];
  snprintf(id, sizeof id, "%lld", (long long)r->id);
  snprintf(age, sizeof age, "%.6f", r->older_than);
  const char *values[5] = {r->has_id ? id : NULL, r->name, r->scheduled ? "true" : "false",
                           r->failed ? "true" : "false", r->older_than >= 0 ? age : NULL};
  PGresult *res = NULL;
  int rc = pg_run(PG(s), &pgq_remove, values, &res);
  if (rc) return rc;
  long long n = parse_int(PQgetvalue(res, 0, 0));
  PQclear(res);
  *removed = n > 0 ? (size_t)n : 0;
  return STORE_OK;
}
