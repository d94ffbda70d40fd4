/*
 * store_pg_history.c: history (store.h, store_outcome.keep): finished jobs
 * kept for a while in scheduler.history, a table of their own, so that
 * scheduler.jobs, its indexes and the claims are the same with history on
 * or off.  One row per write (see below), written with the outcome, in
 * its transaction:
 *   - a held batch (store_pg_claim.c, end_tx): its jobs were deleted by the
 *     claim, so the row is built from the batch in memory (Q_HISTORY_PUT,
 *     one more step in the pipeline that commits it);
 *   - leased claims (store_pg_crash.c, pg_finish_leases): from the rows
 *     as they are before Q_FINISH deletes or fails them (Q_HISTORY_LEASED,
 *     fenced on the claims as Q_FINISH is; BEGIN, both, COMMIT: one round
 *     trip);
 *   - cancel() of a waiting job (store_pg_cancel.c): Q_CANCEL_KEEP.
 * Outcomes with keep <= 0 add nothing: with history off, not one statement
 * more.  Pruning (Q_PRUNE) deletes a few expired rows per call (pg_prune),
 * skipping rows another pruner has locked: a short transaction.
 */
#include "store_pg_internal.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* A row of scheduler.history holds the jobs one write kept (a batch's,
 * or a cancelled job): `jobs` is JSON text (not parsed when written, only
 * when read), an array of one array per job:
 *   [id, name, key, payload, state, attempt, priority, started_at (worker
 *    clock, null: never started), duration, last_error, keep (seconds),
 *    run_at (when it was due: the claim's, a retry's own; migration 15)]
 * and `worker` the worker that ran them (a job that never started had
 * none).  One row per batch, not per job: the write that keeps 500 jobs
 * is one tuple (its value compressed, see migration 11) and one entry
 * in each of the three indexes, instead of 500 tuples and 1,500 index
 * entries (which made a drain 2.7 times slower, see README "History").
 * A job's finished_at is started_at + duration (a cancelled job's: the
 * row's finished_at, when it was written); it is kept until the row's
 * finished_at + keep; the row, until the latest of its jobs'. */

/* $1 the JSON text, $2 and $3 the least and greatest job id in it, $4
 * its longest keep (seconds), $5 the worker.  Not prepared: it joins the
 * pipeline of a claim transaction, which may have a claim ahead in
 * flight, when no statement can be prepared (pg_send_segment); planning
 * a VALUES insert is nothing next to the batch. */
const pg_query pgq_history_put = {Q_HISTORY_PUT, NULL, 5,
    "INSERT INTO scheduler.history (ids, finished_at, kept_until, worker, jobs)"
    " VALUES (int8range($2::bigint, $3::bigint, '[]'), statement_timestamp(),"
    "  statement_timestamp() + $4::float8 * interval '1 second', $5, $1)"};

/* A job's array, from its row (leases): j the job, h.state,
 * h.started, h.duration, h.error (NULL: the job's last) and h.keep. */
#define HISTORY_ARRAY                                                                       \
  "json_build_array(j.id, j.name, j.key, j.payload, h.state,"                               \
  " CASE WHEN h.started IS NULL THEN j.attempt - 1 ELSE j.attempt END, j.priority,"          \
  " h.started, h.duration, coalesce(h.error, j.last_error), h.keep, extract(epoch FROM j.run_at))"

/* $1 ids, $2 tokens, $3 states, $4 started_at (NULL: never started: its
 * claim's attempt was not used), $5 durations, $6 errors (NULL: the job's
 * last), $7 seconds kept: the leased claims that end, before Q_FINISH,
 * fenced as it is: one row (a worker's leases: its id). */
const pg_query pgq_history_leased = {Q_HISTORY_LEASED, NULL, 7,
    "INSERT INTO scheduler.history (ids, finished_at, kept_until, worker, jobs)"
    " SELECT int8range(min(j.id), max(j.id), '[]'), statement_timestamp(),"
    "  statement_timestamp() + max(h.keep) * interval '1 second', min(j.locked_by),"
    "  json_agg(" HISTORY_ARRAY ")::text"
    " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::float8[],"
    "  $6::text[], $7::float8[]) AS h(id, token, state, started, duration, error, keep)"
    " JOIN scheduler.jobs j ON j.id = h.id AND j.claim = h.token AND j.state = 'running'"
    " HAVING count(*) > 0"};

/* $1 state, $2 name, $3 id, $4 limit (NULL: none): the jobs still kept,
 * newest row first (its index), its jobs in reverse order. */
static const pg_query pgq_history_list = {Q_HISTORY_LIST, NULL, 4,
    "SELECT (e.v->>0)::bigint, e.v->>1, e.v->>4, (e.v->>5)::bigint, (e.v->>6)::bigint,"
    " e.v->>2, e.v->>9,"
    " CASE WHEN json_typeof(e.v->3) = 'null' THEN NULL ELSE (e.v->3)::text END,"
    " CASE WHEN e.v->>7 IS NULL THEN NULL ELSE h.worker END, (e.v->>7)::float8,"
    " coalesce((e.v->>7)::float8 + (e.v->>8)::float8, extract(epoch FROM h.finished_at)),"
    " extract(epoch FROM h.finished_at) + (e.v->>10)::float8"
    " FROM scheduler.history h, json_array_elements(h.jobs::json) WITH ORDINALITY AS e(v, n)"
    " WHERE ($3::bigint IS NULL OR h.ids @> $3::bigint) AND h.kept_until >= now()"
    "  AND ($3::bigint IS NULL OR (e.v->>0)::bigint = $3)"
    "  AND ($1::text IS NULL OR e.v->>4 = $1) AND ($2::text IS NULL OR e.v->>1 = $2)"
    "  AND h.finished_at + (e.v->>10)::float8 * interval '1 second' >= now()"
    " ORDER BY h.finished_at DESC, e.n DESC LIMIT $4::bigint"};

/* $1 at most this many rows. */
static const pg_query pgq_prune = {Q_PRUNE, "scheduler_prune", 1,
    "DELETE FROM scheduler.history WHERE ctid = ANY (ARRAY("
    "  SELECT ctid FROM scheduler.history WHERE kept_until < now()"
    "  ORDER BY kept_until LIMIT $1 FOR UPDATE SKIP LOCKED))"};

/* Count the history rows not counted yet into scheduler.durations (see
 * store.h, durations; migrations 14, 15): the jobs that started, by name,
 * kind and bucket: their duration, and their start lateness (started_at
 * less run_at, at least 0; rows written before migration 15 have no
 * run_at: durations only).  $1 the number of bounds, $2 and $3 the
 * duration and lateness bounds negated, ascending: $1 - width_bucket(-d,
 * $2) is the number of bounds below d, so a value equal to a bound is in
 * that bound's bucket, as Prometheus' "le" says.  Skips rows another
 * counter has locked; and merges the rows durations holds into one per
 * name, kind and bucket (dated '-infinity'), as COUNT_DONE merges
 * completions. */
static const pg_query pgq_durations_count = {Q_DURATIONS_COUNT, NULL, 3,
    "WITH r AS (UPDATE scheduler.history h SET counted = true WHERE h.ctid = ANY (ARRAY("
    "  SELECT c.ctid FROM scheduler.history c WHERE NOT c.counted LIMIT 2000"
    "  FOR UPDATE SKIP LOCKED)) RETURNING h.jobs),"
    " e AS (SELECT v->>1 AS name, k.kind, k.d"
    "  FROM r, json_array_elements(r.jobs::json) AS v, LATERAL (VALUES ('duration', (v->>8)::float8),"
    "   ('lateness', CASE WHEN v->>11 IS NOT NULL"
    "    THEN greatest((v->>7)::float8 - (v->>11)::float8, 0) END)) AS k(kind, d)"
    "  WHERE v->>7 IS NOT NULL AND k.d IS NOT NULL),"
    " f AS (INSERT INTO scheduler.durations (name, kind, bucket, jobs, seconds)"
    "  SELECT name, kind, $1::integer - width_bucket(-d, CASE kind WHEN 'duration'"
    "   THEN $2::float8[] ELSE $3::float8[] END), count(*), sum(d)"
    "  FROM e GROUP BY 1, 2, 3 RETURNING 1),"
    " old AS MATERIALIZED (SELECT c.ctid FROM scheduler.durations c"
    "  WHERE c.at > '-infinity' LIMIT 10000 FOR UPDATE SKIP LOCKED),"
    " m AS (DELETE FROM scheduler.durations WHERE ctid = ANY (ARRAY("
    "  SELECT old.ctid FROM old UNION ALL SELECT x.ctid FROM (SELECT c.ctid"
    "  FROM scheduler.durations c WHERE c.at = '-infinity' AND EXISTS (SELECT 1 FROM old)"
    "  LIMIT 10000 FOR UPDATE SKIP LOCKED) x)) RETURNING name, kind, bucket, jobs, seconds)"
    " INSERT INTO scheduler.durations (at, name, kind, bucket, jobs, seconds)"
    " SELECT '-infinity', name, kind, bucket, sum(jobs), sum(seconds) FROM m"
    " GROUP BY name, kind, bucket"};

static const pg_query pgq_durations = {Q_DURATIONS, NULL, 0,
    "SELECT name, kind = 'lateness', bucket, sum(jobs), sum(seconds) FROM scheduler.durations"
    " GROUP BY name, kind, bucket ORDER BY name, kind, bucket"};

int pg_durations(store *s, store_duration **out, size_t *n) {
  pg_store *p = PG(s);
  *out = NULL;
  *n = 0;
  static const double bounds[2][DURATION_BUCKETS] = {DURATION_BOUNDS_INIT, LATENESS_BOUNDS_INIT};
  char count[16];
  buf neg[2] = {BUF_INIT, BUF_INIT};
  int err = 0;
  for (int h = 0; h < 2; h++) {
    err |= buf_addc(&neg[h], '{');
    for (int k = DURATION_BUCKETS - 1; k >= 0; k--)
      err |= buf_printf(&neg[h], "%s%.17g", k == DURATION_BUCKETS - 1 ? "" : ",", -bounds[h][k]);
    err |= buf_addc(&neg[h], '}');
  }
  snprintf(count, sizeof count, "%d", DURATION_BUCKETS);
  const char *values[3] = {count, buf_cstr(&neg[0]), buf_cstr(&neg[1])};
  PGresult *r = NULL;
  int rc = err ? store_fail(s, STORE_NOMEM, "counting durations: not enough memory")
               : pg_run(p, &pgq_durations_count, values, &r);
  buf_free(&neg[0]);
  buf_free(&neg[1]);
  if (rc) return rc;
  PQclear(r);
  if ((rc = pg_run(p, &pgq_durations, NULL, &r))) return rc;
  /* one row per name, kind and bucket, in name order: one store_duration
   * per name */
  int rows = PQntuples(r);
  size_t names = 0;
  for (int i = 0; i < rows; i++)
    if (i == 0 || strcmp(PQgetvalue(r, i, 0), PQgetvalue(r, i - 1, 0)) != 0) names++;
  if (reserve((void **)&p->durations, &p->durations_cap, names, sizeof *p->durations)) {
    PQclear(r);
    return store_fail(s, STORE_NOMEM, "reading durations: not enough memory");
  }
  size_t at = 0;
  for (int i = 0; i < rows; i++) {
    if (i == 0 || strcmp(PQgetvalue(r, i, 0), PQgetvalue(r, i - 1, 0)) != 0) {
      store_duration *x = &p->durations[at++];
      memset(x, 0, sizeof *x);
      x->name = PQgetvalue(r, i, 0);
      x->name_len = (size_t)PQgetlength(r, i, 0);
    }
    store_duration *x = &p->durations[at - 1];
    int late = PQgetvalue(r, i, 1)[0] == 't';
    long long b = parse_int(PQgetvalue(r, i, 2));
    if (b < 0) b = 0;
    if (b > DURATION_BUCKETS) b = DURATION_BUCKETS;
    (late ? x->late : x->jobs)[b] += parse_int(PQgetvalue(r, i, 3));
    *(late ? &x->late_seconds : &x->seconds) += strtod(PQgetvalue(r, i, 4), NULL);
  }
  clear(&p->timed);
  p->timed = r;
  *out = p->durations;
  *n = at;
  return STORE_OK;
}

/* The state outcome x leaves in history, or NULL (none: not finished, or
 * history not asked for). */
const char *pg_history_state(const store_outcome *x) {
  if (!(x->keep > 0)) return NULL;
  return x->kind == OUTCOME_DONE        ? "done"
         : x->kind == OUTCOME_FAILED    ? "failed"
         : x->kind == OUTCOME_CANCELLED ? "cancelled"
                                        : NULL;
}

static int started(const store_outcome *x) {
  return x->kind != OUTCOME_CANCELLED && !isnan(x->started_at);
}

static int pg_history_begin(buf *b, int n) {
  int err = 0;
  for (int k = 0; k < n; k++) {
    buf_reset(&b[k]);
    err |= buf_addc(&b[k], '{');
  }
  return err;
}

static int pg_history_end(buf *b, int n) {
  int err = 0;
  for (int k = 0; k < n; k++) err |= buf_addc(&b[k], '}');
  return err;
}

static int add_json_or_null(buf *b, const char *s, size_t n) {
  return s ? buf_add_json_string(b, s, n) : buf_adds(b, "null");
}

/* Seconds with microsecond precision, as fmt_seconds writes them, without
 * printf (a batch formats thousands). */
static int add_seconds(buf *b, double v) {
  if (!isfinite(v) || fabs(v) >= 9e15) {
    char num[64];
    return buf_adds(b, fmt_seconds(v, num, sizeof num));
  }
  long long us = llround(fabs(v) * 1e6);
  char frac[7] = {'.'};
  for (int i = 6; i >= 1; i--) {
    frac[i] = (char)('0' + us % 10);
    us /= 10;
  }
  int err = v < 0 ? buf_addc(b, '-') : 0;
  err |= add_int(b, us);
  err |= buf_add(b, frac, sizeof frac);
  return err;
}

/* Add job j of a held batch, ending with x, to the JSON array b of
 * Q_HISTORY_PUT (opened with '['); `last_error` is the job's stored one.
 * h->count, min_id, max_id, keep: what the row holds so far.  0 or -1. */
int pg_history_add(buf *b, const store_job *j, const char *last_error, size_t last_error_len,
                   const store_outcome *x, pg_history_row *h) {
  const char *state = pg_history_state(x);
  if (!state) return 0;
  int err = 0, s = started(x);
  if (h->count++ == 0 || j->id < h->min_id) h->min_id = j->id;
  if (h->count == 1 || j->id > h->max_id) h->max_id = j->id;
  if (x->keep > h->keep) h->keep = x->keep;
  err |= buf_adds(b, h->count > 1 ? ",[" : "[");
  err |= add_int(b, j->id);
  err |= buf_addc(b, ',');
  err |= buf_add_json_string(b, j->name, j->name_len);
  err |= buf_addc(b, ',');
  err |= add_json_or_null(b, j->key, j->key_len);
  err |= buf_addc(b, ',');
  err |= j->payload ? buf_add(b, j->payload, j->payload_len) : buf_adds(b, "null");
  err |= buf_adds(b, ",\"");
  err |= buf_adds(b, state);
  err |= buf_adds(b, "\",");
  err |= add_int(b, s ? j->attempt : j->attempt - 1);
  err |= buf_addc(b, ',');
  err |= add_int(b, j->priority);
  err |= buf_addc(b, ',');
  err |= s ? add_seconds(b, x->started_at) : buf_adds(b, "null");
  err |= buf_addc(b, ',');
  err |= add_seconds(b, s ? x->duration : 0);
  err |= buf_addc(b, ',');
  if (x->kind == OUTCOME_FAILED)
    err |= buf_add_json_string(b, buf_cstr(&x->error), x->error.len);
  else
    err |= add_json_or_null(b, last_error, last_error_len);
  err |= buf_addc(b, ',');
  err |= add_seconds(b, x->keep);
  err |= buf_addc(b, ',');
  err |= add_seconds(b, j->run_at);
  err |= buf_addc(b, ']');
  return err;
}

/* Q_HISTORY_LEASED's arrays b[0]-b[6] for the outcomes o[0, n); *count:
 * how many rows.  0 or -1. */
int pg_history_leased_arrays(buf *b, const store_outcome *o, size_t n, size_t *count) {
  int err = pg_history_begin(b, 7);
  *count = 0;
  for (size_t i = 0; i < n && !err; i++) {
    const store_outcome *x = &o[i];
    const char *state = pg_history_state(x);
    if (!state) continue;
    char num[64];
    int s = started(x);
    if ((*count)++)
      for (int k = 0; k < 7; k++) err |= buf_addc(&b[k], ',');
    err |= add_int(&b[0], x->claim.id) | add_int(&b[1], x->claim.token) |
           buf_adds(&b[2], state) |
           buf_adds(&b[3], s ? fmt_seconds(x->started_at, num, sizeof num) : "NULL") |
           buf_adds(&b[4], fmt_seconds(s ? x->duration : 0, num, sizeof num)) |
           (x->kind == OUTCOME_FAILED ? add_array_text(&b[5], buf_cstr(&x->error), x->error.len)
                                      : buf_adds(&b[5], "NULL")) |
           buf_adds(&b[6], fmt_seconds(x->keep, num, sizeof num));
  }
  return err | pg_history_end(b, 7);
}

static double seconds_or_nan(PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? NAN : parse_seconds(PQgetvalue(r, row, col));
}

static const char *history_state(const char *t) {
  static const char *const states[] = {"done", "failed", "cancelled"};
  for (int i = 0; i < 3; i++)
    if (strcmp(t, states[i]) == 0) return states[i];
  return "unknown";
}

int pg_history(store *s, const store_filter *f, store_history **out, size_t *n) {
  pg_store *p = PG(s);
  *out = NULL;
  *n = 0;
  if (f->name && memchr(f->name, 0, f->name_len)) return STORE_OK; /* none can match */
  pg_filter_params params;
  pg_filter(f, &params);
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_history_list, params.values, &r);
  if (rc) return rc;
  size_t rows = (size_t)PQntuples(r);
  if (reserve((void **)&p->hist_rows, &p->hist_cap, rows, sizeof *p->hist_rows)) {
    PQclear(r);
    return store_fail(s, STORE_NOMEM, "reading history: not enough memory");
  }
  for (size_t i = 0; i < rows; i++) {
    store_history *x = &p->hist_rows[i];
    store_job *j = &x->job;
    int row = (int)i;
    memset(x, 0, sizeof *x);
    j->id = parse_int(PQgetvalue(r, row, 0));
    j->name = value_or_null(r, row, 1, &j->name_len);
    j->state = history_state(PQgetvalue(r, row, 2));
    j->attempt = parse_int(PQgetvalue(r, row, 3));
    j->priority = parse_int(PQgetvalue(r, row, 4));
    j->key = value_or_null(r, row, 5, &j->key_len);
    j->last_error = value_or_null(r, row, 6, &j->last_error_len);
    j->payload = value_or_null(r, row, 7, &j->payload_len);
    x->worker = value_or_null(r, row, 8, &x->worker_len);
    x->started_at = seconds_or_nan(r, row, 9);
    x->finished_at = parse_seconds(PQgetvalue(r, row, 10));
    x->kept_until = parse_seconds(PQgetvalue(r, row, 11));
    j->run_at = x->finished_at;
  }
  clear(&p->hist_res);
  p->hist_res = r;
  *out = p->hist_rows;
  *n = rows;
  return STORE_OK;
}

/* A row holds a batch (up to 500 jobs): `limit` counts jobs, roughly; it
 * deletes limit / 100 rows, at least one. */
int pg_prune(store *s, size_t limit, size_t *pruned) {
  pg_store *p = PG(s);
  char text[32];
  snprintf(text, sizeof text, "%zu", limit / 100 ? limit / 100 : 1);
  const char *values[1] = {text};
  *pruned = 0;
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_prune, values, &r); /* its own short transaction (pg_idle) */
  if (rc) return rc;
  *pruned = (size_t)strtoull(PQcmdTuples(r), NULL, 10);
  PQclear(r);
  return STORE_OK;
}
