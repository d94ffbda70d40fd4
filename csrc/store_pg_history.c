/*
 * store_pg_history.c: history (store.h, store_outcome.keep): finished jobs
 * kept for a while in scheduler.history, a table of their own, so that
 * scheduler.jobs, its indexes and the claims are the same with history on
 * or off.  Rows are written with the outcome, in its transaction:
 *   - a held batch (store_pg_claim.c, end_tx): its jobs were deleted by the
 *     claim, so the rows come from the batch in memory (Q_HISTORY_PUT,
 *     one more step in the pipeline that commits it);
 *   - leased claims (store_pg_crash.c, pg_finish_leases): from the rows
 *     as they are before Q_FINISH deletes or fails them (Q_HISTORY_LEASED,
 *     fenced on the claims as Q_FINISH is; BEGIN, both, COMMIT: one round
 *     trip);
 *   - cancel() of a waiting job (store_pg_cancel.c): Q_CANCEL_KEEP.
 * Outcomes with keep <= 0 add nothing: with history off, not one statement
 * more.  Pruning (Q_PRUNE) deletes at most `limit` expired rows per call,
 * skipping rows another pruner has locked: a short transaction.
 */
#include "store_pg_internal.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

#define HISTORY_COLUMNS                                                                 \
  "INSERT INTO scheduler.history (id, name, key, payload, state, attempt, priority,"    \
  " started_at, finished_at, worker, last_error, kept_until)"

/* $1 ids, $2 names, $3 keys, $4 payloads (JSON text), $5 states, $6
 * attempts, $7 priorities, $8 started_at (worker clock, NULL: never
 * started), $9 durations, $10 errors, $11 seconds kept, $12 the worker.
 * Planned with its actual parameters (the arrays' sizes), as Q_FINISH. */
const pg_query pgq_history_put = {Q_HISTORY_PUT, NULL, 12,
    HISTORY_COLUMNS
    " SELECT h.id, h.name, h.key, h.payload::jsonb, h.state, h.attempt, h.priority,"
    "  to_timestamp(h.started), coalesce(to_timestamp(h.started + h.duration), statement_timestamp()),"
    "  CASE WHEN h.started IS NULL THEN NULL ELSE $12 END, h.error,"
    "  statement_timestamp() + h.keep * interval '1 second'"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],"
    "  $6::integer[], $7::integer[], $8::float8[], $9::float8[], $10::text[],"
    "  $11::float8[]) AS h(id, name, key, payload, state, attempt, priority, started,"
    "  duration, error, keep)"};

/* $1 ids, $2 tokens, $3 states, $4 started_at (NULL: never started: its
 * claim's attempt was not used), $5 durations, $6 errors (NULL: the job's
 * last), $7 seconds kept: the leased claims that end, before Q_FINISH. */
const pg_query pgq_history_leased = {Q_HISTORY_LEASED, NULL, 7,
    HISTORY_COLUMNS
    " SELECT j.id, j.name, j.key, j.payload, h.state,"
    "  CASE WHEN h.started IS NULL THEN j.attempt - 1 ELSE j.attempt END, j.priority,"
    "  to_timestamp(h.started), coalesce(to_timestamp(h.started + h.duration), statement_timestamp()),"
    "  CASE WHEN h.started IS NULL THEN NULL ELSE j.locked_by END,"
    "  coalesce(h.error, j.last_error), statement_timestamp() + h.keep * interval '1 second'"
    " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::float8[],"
    "  $6::text[], $7::float8[]) AS h(id, token, state, started, duration, error, keep)"
    " JOIN scheduler.jobs j ON j.id = h.id AND j.claim = h.token AND j.state = 'running'"};

/* $1 state, $2 name, $3 id, $4 limit (NULL: none), newest first. */
static const pg_query pgq_history_list = {Q_HISTORY_LIST, NULL, 4,
    "SELECT id, name, state, attempt, priority, key, last_error, payload, worker,"
    " extract(epoch FROM started_at), extract(epoch FROM finished_at),"
    " extract(epoch FROM kept_until) FROM scheduler.history"
    " WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR name = $2)"
    "  AND ($3::bigint IS NULL OR id = $3)"
    " ORDER BY finished_at DESC LIMIT $4::bigint"};

/* $1 at most this many. */
static const pg_query pgq_prune = {Q_PRUNE, "scheduler_prune", 1,
    "DELETE FROM scheduler.history WHERE ctid = ANY (ARRAY("
    "  SELECT ctid FROM scheduler.history WHERE kept_until < now()"
    "  ORDER BY kept_until LIMIT $1 FOR UPDATE SKIP LOCKED))"};

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

int pg_history_begin(buf *b, int n) {
  int err = 0;
  for (int k = 0; k < n; k++) {
    buf_reset(&b[k]);
    err |= buf_addc(&b[k], '{');
  }
  return err;
}

int pg_history_end(buf *b, int n) {
  int err = 0;
  for (int k = 0; k < n; k++) err |= buf_addc(&b[k], '}');
  return err;
}

/* Add job j of a held batch, ending with x, to Q_HISTORY_PUT's arrays
 * b[0]-b[10] (opened by pg_history_begin); `last_error` is the job's
 * stored one.  *count: rows so far.  0 or -1. */
int pg_history_add(buf *b, const store_job *j, const char *last_error, size_t last_error_len,
                   const store_outcome *x, size_t *count) {
  const char *state = pg_history_state(x);
  if (!state) return 0;
  char num[64];
  int err = 0, s = started(x);
  if ((*count)++)
    for (int k = 0; k < 11; k++) err |= buf_addc(&b[k], ',');
  err |= add_int(&b[0], j->id) | add_array_text(&b[1], j->name, j->name_len) |
         add_text_or_null(&b[2], j->key, j->key_len) |
         add_text_or_null(&b[3], j->payload, j->payload_len) | buf_adds(&b[4], state) |
         add_int(&b[5], s ? j->attempt : j->attempt - 1) | add_int(&b[6], j->priority) |
         buf_adds(&b[7], s ? fmt_seconds(x->started_at, num, sizeof num) : "NULL") |
         buf_adds(&b[8], fmt_seconds(s ? x->duration : 0, num, sizeof num));
  if (x->kind == OUTCOME_FAILED)
    err |= add_array_text(&b[9], buf_cstr(&x->error), x->error.len);
  else
    err |= add_text_or_null(&b[9], last_error, last_error_len);
  err |= buf_adds(&b[10], fmt_seconds(x->keep, num, sizeof num));
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
  char id[32], limit[32];
  *out = NULL;
  *n = 0;
  if (f->name && memchr(f->name, 0, f->name_len)) return STORE_OK; /* none can match */
  snprintf(id, sizeof id, "%lld", (long long)f->id);
  snprintf(limit, sizeof limit, "%lld", f->limit);
  const char *values[4] = {f->state, f->name, f->has_id ? id : NULL, f->limit > 0 ? limit : NULL};
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_history_list, values, &r);
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

int pg_prune(store *s, size_t limit, size_t *pruned) {
  pg_store *p = PG(s);
  char text[32];
  snprintf(text, sizeof text, "%zu", limit);
  const char *values[1] = {text};
  *pruned = 0;
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_prune, values, &r); /* its own short transaction (pg_idle) */
  if (rc) return rc;
  *pruned = (size_t)strtoull(PQcmdTuples(r), NULL, 10);
  PQclear(r);
  return STORE_OK;
}
