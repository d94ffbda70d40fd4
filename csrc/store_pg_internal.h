/*
 * store_pg_internal.h: what the files of the PostgreSQL backend share.
 * The backend is split by concern, each file with the SQL it runs:
 *   store_pg.c           connecting (session settings, PARTITIONS), the
 *                        schema and its migrations, errors, running
 *                        statements (prepared, pipelined), the store_ops
 *                        table, opening and destroying a store
 *   store_pg_enqueue.c   schedule, schedule_many, recurring schedules
 *   store_pg_claim.c     the claim transaction, a state machine (CLAIM
 *                        AHEAD): claim, finish, settle
 *   store_pg_crash.c     leases (renewals, outcomes of leased jobs), the
 *                        record connection and batch records (CRASHES),
 *                        rescue, QUARANTINE, abandon (WORKER_LOCK)
 *   store_pg_cancel.c    cancel(), and the requests a holder sees (CANCELS)
 *   store_pg_wake.c      sleeping and waking: LISTEN, notifications,
 *                        next_wake (SLEEP_LOCK), this worker's names
 *   store_pg_operators.c get, retry, list, stats, retry_failed, remove
 */
#ifndef SCHEDULER_STORE_PG_INTERNAL_H
#define SCHEDULER_STORE_PG_INTERNAL_H

#include "store_pg.h"

#include "clock.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* ------------------------------------------------------------------ */
/* Statements                                                          */

/* Every statement of the store, by the file that holds its text.  The
 * number is its bit in pg_store.prepared: what this connection has
 * prepared, reset with the connection (a bit per statement and store,
 * so one process may hold several stores). */
enum {
  /* store_pg_enqueue.c */
  Q_SCHEDULE, Q_INSERT, Q_SCHEDULE_MANY, Q_CRON_PUT, Q_CRON_REMOVE, Q_CRON_LIST, Q_CRON_DUE,
  Q_CRON_FIRE,
  /* store_pg_claim.c */
  Q_CLAIM, Q_CLAIM_ONE, Q_CLAIM_LEASED, Q_COMPLETED, Q_PUT_BACK,
  /* store_pg_crash.c */
  Q_RECORD, Q_UNRECORD, Q_FINISH, Q_HEARTBEAT, Q_RESCUE, Q_ORPHANS, Q_WORKER_LOCK, Q_WORKER_WAIT,
  /* store_pg_cancel.c */
  Q_CANCEL, Q_CANCEL_ASK, Q_CANCEL_END, Q_VERDICT,
  /* store_pg_wake.c */
  Q_WAKE,
  /* store_pg_operators.c */
  Q_RETRY, Q_GET, Q_LIST, Q_STATS, Q_RETRY_FAILED, Q_REMOVE,
  Q_PAUSE, Q_RESUME, Q_PAUSED,
  /* store_pg_history.c */
  Q_HISTORY_PUT, Q_HISTORY_LEASED, Q_HISTORY_LIST, Q_PRUNE, Q_CANCEL_KEEP,
  Q_LIMIT, Q_UNLIMIT, Q_LIMITS,
  /* store_pg_claim.c (concurrency limits) */
  Q_CLAIM_LIMITED, Q_LEASE_SETTINGS,
  Q_TOTALS, Q_RUNNING, Q_DURATIONS_COUNT, Q_DURATIONS,
  Q_COUNT
};
_Static_assert(Q_COUNT <= 64, "pg_store.prepared has a bit per query");
#define PREPARED_BIT(q) ((uint64_t)1 << (q))

/* A statement: its text lives next to the code that runs it, as a
 * pg_query of that file, which the code passes by address (pg_run, steps
 * of a pipeline).  name NULL: not prepared, planned on every execution
 * with its actual parameters.  For statements whose best plan depends on
 * the size of their array parameters, where the generic plan a prepared
 * statement settles on is far slower (Q_FINISH: 31 ms instead of 1 ms per
 * 500 outcomes). */
typedef struct pg_query {
  int bit; /* its Q_* (see above) */
  const char *name;
  int nparams;
  const char *sql;
} pg_query;

/* The statements one file runs and another holds. */
extern const pg_query pgq_claim, pgq_claim_one, pgq_claim_leased, pgq_claim_limited; /* store_pg_claim.c */
extern const pg_query pgq_unrecord, pgq_worker_lock; /* store_pg_crash.c */
extern const pg_query pgq_verdict; /* store_pg_cancel.c */
extern const pg_query pgq_history_put, pgq_history_leased; /* store_pg_history.c */

/* SQL that statements of several files share. */

/* Wake-ups only for sleepers (see SLEEP_LOCK in store_pg_wake.c). */
#define SLEEP_LOCK "1935895653, 0"

/* A worker's connection holds it (see WORKER_LOCK in store_pg_crash.c). */
#define WORKER_LOCK "1935895652" /* "schd": two-key advisory locks of lua-scheduler */
/* SQL: true when no session holds the WORKER_LOCK of b.worker (the worker
 * of a record b of scheduler.batches): tried, and let go at once.  Held
 * for longer (a transaction-level lock), it would make the dead worker
 * look alive to the claims meanwhile, which then take its batch's jobs
 * (see Q_CLAIM).  This session's own lock reads as free: callers leave
 * their own worker out. */
#define WORKER_GONE                                                                         \
  "CASE WHEN pg_try_advisory_lock(" WORKER_LOCK ", hashtext(b.worker))"                     \
  " THEN pg_advisory_unlock(" WORKER_LOCK ", hashtext(b.worker)) ELSE false END"

/* A notification that wakes every sleeping worker (no name: see
 * pg_notifications), carrying the earliest run_at of the rows in scope. */
#define WAKE_EVERYONE "pg_notify('scheduler', extract(epoch FROM min(run_at))::text || ' ')"

/* The CTEs that add the completions of the CTE done_counts (name, jobs)
 * and prune the old ones (migration 3).  Counted by the statements that
 * end jobs rather than by a trigger on DELETE: cancel() deletes jobs too,
 * and a held batch deletes its jobs when it claims them. */
/* The pruned rows are not lost: they are merged into rows dated
 * '-infinity' (one per name, with the merged rows the prune found unlocked,
 * in the same statement), so that the sum of a name's rows is the count
 * of its completions ever (store_ops.totals: metrics' counter) and never
 * goes down.  The merge runs only when the prune found rows (nothing more
 * to write otherwise); several workers merging at once each leave a row,
 * merged again later. */
#define COUNT_DONE                                                                           \
  ", counted AS (INSERT INTO scheduler.completions (name, jobs)"                             \
  "  SELECT name, jobs FROM done_counts RETURNING 1),"                                       \
  " old AS MATERIALIZED (SELECT c.ctid FROM scheduler.completions c"                         \
  "  WHERE c.at < now() - interval '2 minutes' AND c.at > '-infinity'"                       \
  "  LIMIT 1000 FOR UPDATE SKIP LOCKED),"                                                    \
  " pruned AS (DELETE FROM scheduler.completions WHERE ctid = ANY (ARRAY("                   \
  "  SELECT old.ctid FROM old UNION ALL SELECT m.ctid FROM (SELECT c.ctid"                   \
  "  FROM scheduler.completions c WHERE c.at = '-infinity' AND EXISTS (SELECT 1 FROM old)"   \
  "  LIMIT 100 FOR UPDATE SKIP LOCKED) m)) RETURNING name, jobs),"                           \
  " merged AS (INSERT INTO scheduler.completions (at, name, jobs)"                           \
  "  SELECT '-infinity', name, sum(jobs) FROM pruned GROUP BY name RETURNING 1)"

/* ------------------------------------------------------------------ */
/* The store                                                           */

#define NBUFS 28

/* A claimed job and its row in the claim's result, sorted into run order. */
typedef struct claimed {
  store_job job;
  int row;
} claimed;

/* A claimed batch: the claim's result, which its jobs point into, and its
 * jobs in run order. */
typedef struct batch {
  PGresult *res;
  store_job *jobs;
  int *row;        /* each job's row in res */
  long *fate;      /* what ends each job (see end_tx) */
  claimed *sorted; /* hold_batch's scratch */
  size_t cap;      /* room in the arrays */
  size_t n;        /* jobs (0: none) */
  int64_t token;   /* the claim's (every job's) */
  /* the last job in claim order, (priority, run_at, id) as text: the
   * lower bound of the claim ahead (see CLAIM AHEAD) */
  char bound[3][32];
} batch;

/* The states of the claim transaction: see the table in store_pg_claim.c. */
typedef enum tx_state { TX_IDLE, TX_HELD, TX_AHEAD, TX_OPEN } tx_state;

typedef struct pg_store {
  store base;
  char *conninfo;
  buf secrets;         /* passwords as written (each NUL-terminated), scrubbed from messages */
  char *secret_parsed; /* the password as libpq decoded it */
  PGconn *conn;
  int listening;     /* LISTEN wanted (run() is active) */
  /* The claim transaction (see store_pg_claim.c and CLAIM AHEAD). */
  tx_state tx;       /* where it is: changed by tx_to alone */
  batch cur;         /* the batch being dispatched */
  batch next;        /* claimed ahead in it, collected (next.n 0: none) */
  size_t tx_jobs;    /* jobs claimed in it so far (for messages) */
  size_t tx_batches; /* batches claimed in it so far */
  double tx_start;   /* when it began (monotonic) */
  char limit[32];    /* the limit of the current claim, as text */
  int quiet;         /* claim transactions to begin without claiming ahead (a settle) */
  int quarantine_look; /* the next fresh claim looks for a quarantined job first */
  int limits_near; /* some of this worker's names are limited, as the last fresh
                      claim said: claim them first (see LIMITS, store_pg_claim.c) */
  int syncs;         /* pipeline syncs sent and not read yet */
  int lock_timed_out; /* the last failure was a lock_timeout (SQLSTATE 55P03) */
  /* jobs of a claim transaction whose connection was lost, said at the next
   * finish or settle (a count to report, not a state of the transaction:
   * that one is gone, TX_IDLE, and another may begin first) */
  size_t held_lost;
  char *worker;      /* the worker id of the last claim */
  /* The record connection (see CRASHES): commits the records of the
   * batches the claim transaction holds; tx_tokens, those batches' tokens
   * (a bigint[] literal), dropped with its commit. */
  PGconn *rec;
  int rec_ready;     /* connected and set up (else being connected, see pg_rec_start) */
  double rec_started; /* when its connection was started (monotonic) */
  int rec_polling;    /* while it connects: what libpq waits for (PostgresPollingStatusType) */
  int rec_setup;      /* connected, its set-up sent (pg_rec_advance), the replies not read */
  int rec_pending;   /* a statement was sent on it, its reply not read yet */
  /* Cancel requests (see CANCELS): the ids asked for, not yet answered;
   * the jobs of the claim transaction cancelled before they started (a
   * bigint[] literal, answered with its commit). */
  int64_t *asked;
  size_t n_asked, asked_cap;
  double asked_at; /* when the record connection was last read for them */
  buf verdicts;
  buf tx_tokens;
  int64_t recorded;  /* the last batch recorded in the claim transaction (0: none) */
  uint64_t prepared; /* bit per query prepared on this connection (see Q_COUNT) */
  int leases_only;   /* a concurrent worker's store: it never holds a batch */
  int worker_locked; /* this connection holds its worker's advisory lock */
  int sleep_locked;  /* and SLEEP_LOCK, shared: run() may sleep */
  /* SLEEP_LOCK not had since sleep_missed, last at sleep_missed_last
   * (database clock; 0: it was) */
  double sleep_missed, sleep_missed_last;
  /* results that store_job pointers point into; they outlive the
   * connection, so a listener's own calls (even a reconnect) leave the
   * batch being dispatched intact */
  PGresult *got, *cron_rows;
  store_cron *crons;
  size_t crons_cap;
  /* this worker's names: a text[] literal and the raw list for matching
   * notifications */
  buf names_literal;
  /* the listeners' max_attempts (set_max_attempts): text[] and integer[]
   * literals, in the same order; empty until set */
  buf max_names_literal, max_literal;
  int claim_names_changed; /* the prepared claim has other names */
  char **names;
  size_t *name_lens;
  size_t n_names;
  /* scratch parameter buffers (array literals) */
  buf p[NBUFS];
  buf done[2]; /* the completions of the claim transaction (count_done) */
  /* what list and stats return point into */
  PGresult *listed, *counted;
  store_job_row *rows;
  size_t rows_cap;
  store_stat *stats;
  size_t stats_cap;
  /* what totals returns points into */
  PGresult *totaled;
  store_total *totals;
  size_t totals_cap;
  PGresult *timed; /* what durations returns points into */
  store_duration *durations;
  size_t durations_cap;
  /* what paused_names returns points into */
  PGresult *paused;
  const char **paused_names;
  size_t *paused_lens, paused_cap;
  /* history (store_pg_history.c): the arrays of its rows, and read rows */
  buf hist[11];
  store_history *hist_rows;
  size_t hist_cap;
  PGresult *hist_res;
  /* what limits returns points into */
  PGresult *limits;
  const char **limit_names;
  size_t *limit_lens, limit_cap;
  long long *limit_values;
  const char **limit_by;
  size_t *limit_by_lens;
  long long *limit_rates;
  double *limit_pers;
} pg_store;

#define PG(s) ((pg_store *)(s))

/* ------------------------------------------------------------------ */
/* Small helpers (inline: each file builds array literals with them)   */

/* Make room for n items of `size` bytes in *items (capacity *cap). */
static inline int reserve(void **items, size_t *cap, size_t n, size_t size) {
  if (n <= *cap) return 0;
  void *grown = realloc(*items, n * size);
  if (!grown) return -1;
  *items = grown;
  *cap = n;
  return 0;
}

static inline void clear(PGresult **r) {
  if (*r) PQclear(*r);
  *r = NULL;
}


/* Format seconds with microsecond precision ("-12.000345"). */
static inline const char *fmt_seconds(double v, char *out, size_t size) {
  if (!isfinite(v)) {
    snprintf(out, size, "%s", v > 0 ? "Infinity" : v < 0 ? "-Infinity" : "NaN");
    return out;
  }
  double a = fabs(v);
  if (a >= 9e15) { /* beyond microsecond precision: whole seconds */
    snprintf(out, size, "%s%.0f", v < 0 ? "-" : "", a);
    return out;
  }
  long long us = llround(a * 1e6);
  snprintf(out, size, "%s%lld.%06lld", v < 0 ? "-" : "", us / 1000000, us % 1000000);
  return out;
}

/* Parse PostgreSQL's numeric text ("1764000000.123456", "-3", "Infinity"). */
static inline double parse_seconds(const char *s) {
  int neg = 0;
  double v = 0, scale = 1;
  if (*s == '-') neg = 1, s++;
  if (*s == 'I') return neg ? -INFINITY : INFINITY;
  while (*s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0');
  if (*s == '.')
    for (s++; *s >= '0' && *s <= '9'; s++) v += (*s - '0') * (scale /= 10);
  return neg ? -v : v;
}

static inline long long parse_int(const char *s) { return strtoll(s, NULL, 10); }

/* Append v in decimal (without printf: arrays of many numbers are built
 * per batch). */
static inline int add_int(buf *b, long long v) {
  char digits[24];
  size_t n = 0;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do digits[n++] = (char)('0' + u % 10); while ((u /= 10) > 0);
  if (v < 0) digits[n++] = '-';
  if (buf_reserve(b, n)) return -1;
  while (n) b->data[b->len++] = digits[--n];
  b->data[b->len] = '\0';
  return 0;
}

/* Append a quoted element of a text[] literal. */
static inline int add_array_text(buf *b, const char *s, size_t n) {
  if (buf_reserve(b, n + 2)) return -1;
  buf_addc(b, '"');
  for (size_t i = 0; i < n; i++) {
    if ((s[i] == '"' || s[i] == '\\') && buf_addc(b, '\\')) return -1;
    if (buf_addc(b, s[i])) return -1;
  }
  return buf_addc(b, '"');
}

/* Append the NULL or quoted element of a text[] literal. */
static inline int add_text_or_null(buf *b, const char *s, size_t n) {
  return s ? add_array_text(b, s, n) : buf_adds(b, "NULL");
}

/* Append id to the bigint[] literal b ("{...}", reopened). */
static inline int add_to_array(buf *b, int64_t id) {
  if (b->len) b->data[b->len - 1] = ',';
  else if (buf_addc(b, '{')) return -1;
  return add_int(b, id) | buf_addc(b, '}');
}

static inline const char *value_or_null(PGresult *r, int row, int col, size_t *len) {
  if (PQgetisnull(r, row, col)) {
    *len = 0;
    return NULL;
  }
  *len = (size_t)PQgetlength(r, row, col);
  return PQgetvalue(r, row, col);
}

/* ------------------------------------------------------------------ */
/* Running statements (store_pg.c)                                     */

/* One statement of a pipeline: query q with its parameters, or (q NULL)
 * the parameterless command sql. */
typedef struct step {
  const pg_query *q;
  const char *sql;
  const char *const *values;
} step;

#define STEP_SQL(text) ((step){NULL, (text), NULL})
#define STEP_QUERY(query, vals) ((step){(query), NULL, (vals)})

int pg_fail_msg(pg_store *p, int code, const char *what, const char *msg);
int pg_fail_result(pg_store *p, const char *what, PGresult *r);
int pg_exec_simple(pg_store *p, const char *what, const char *sql, PGresult **out);
int pg_start_conn(pg_store *p, PGconn **out);
int pg_finish_conn(pg_store *p, PGconn **out, const char *sql);
int pg_setup_send(pg_store *p, PGconn *c, const char *sql);
int pg_setup_read(pg_store *p, PGconn *c);
int pg_connect(store *s);
void pg_disconnect(store *s);
int pg_prepare(pg_store *p, const pg_query *q);
int pg_run(pg_store *p, const pg_query *q, const char *const *values, PGresult **out);
void pg_discard_pipeline(pg_store *p);
int pg_send_segment(pg_store *p, const step *steps, int n);
int pg_read_segment(pg_store *p, int n, int want, PGresult **out);
int pg_pipeline(pg_store *p, const step *steps, int n, int want, PGresult **out);

/* ------------------------------------------------------------------ */
/* The store's operations, by file                                     */

/* store_pg_enqueue.c */
int pg_schedule(store *s, const store_new_job *j, int64_t *id);
int pg_schedule_many(store *s, const store_new_job *jobs, size_t n, int64_t *ids);
int pg_cron_put(store *s, const store_cron *c);
int pg_cron_remove(store *s, const char *id, size_t id_len, const char *owner, size_t owner_len,
                   int *done);
int pg_cron_list(store *s, double within, store_cron **out, size_t *n, double *db_now);
int pg_cron_fire(store *s, const char *id, size_t id_len, double expected, const double *slots,
                 size_t n, double next, int *won);

/* store_pg_claim.c */
int pg_claim(store *s, size_t limit, double lease, const char *worker,
             long long default_max_attempts, store_job **jobs, size_t *n);
int pg_claim_leased(store *s, size_t limit, double lease, double *until, const char *worker,
                    int alone, store_job **jobs, size_t *n, int *quarantine);
int pg_finish(store *s, const store_outcome *o, size_t n);
int pg_settle(store *s, const store_outcome *done, size_t n_done, const store_claim *keep,
              size_t n_keep, double lease, const char *worker);
int pg_held(store *s);
/* Make the connection free for a statement of its own (see CLAIM AHEAD). */
int pg_idle(pg_store *p);
/* Forget the claim transaction and roll it back: its jobs run again. */
void pg_rollback(pg_store *p);
/* The connection is gone: so is the claim transaction (pg_disconnect). */
void pg_tx_lost(pg_store *p);
/* Prepare the claim for this worker's names (see there). */
int pg_prepare_claim(pg_store *p);
/* Before the store is freed: end a transaction left open between batches,
 * free the batches. */
void pg_tx_destroy(pg_store *p);

/* store_pg_crash.c */
int pg_finish_leases(pg_store *p, const store_outcome *o, size_t n);

/* store_pg_history.c */
const char *pg_history_state(const store_outcome *x);
/* What a row of scheduler.history holds so far (pg_history_add). */
typedef struct pg_history_row {
  size_t count;
  int64_t min_id, max_id;
  double keep;
} pg_history_row;
int pg_history_add(buf *b, const store_job *j, const char *last_error, size_t last_error_len,
                   const store_outcome *x, pg_history_row *h);
int pg_history_leased_arrays(buf *b, const store_outcome *o, size_t n, size_t *count);
int pg_history(store *s, const store_filter *f, store_history **out, size_t *n);
int pg_prune(store *s, size_t limit, size_t *pruned);
int pg_set_max_attempts(store *s, const char *const *names, const size_t *lens,
                        const long long *max_attempts, size_t n);
int pg_heartbeat(store *s, const store_claim *c, size_t n, double lease, double *until);
int pg_rescue(store *s, long long default_max_attempts);
int pg_abandon(store *s, const char *worker, long long default_max_attempts, size_t *n);
void pg_rec_drop(pg_store *p);
void pg_rec_start(pg_store *p);
void pg_rec_advance(pg_store *p);
void pg_rec_complete(pg_store *p);
int pg_rec_wait(pg_store *p);
int pg_rec_send(pg_store *p, const pg_query *q, const char *const *values);
int pg_rec_query(pg_store *p, const char *sql, PGresult **out);
int pg_record_batch(pg_store *p, const batch *b);
void pg_unrecord(pg_store *p);

/* store_pg_cancel.c */
int pg_cancels(store *s, const store_claim *b, size_t n, size_t next);
int pg_cancel(store *s, int64_t id, int *done);

/* store_pg_wake.c */
int pg_listen(store *s, int on);
int pg_next_wake(store *s, int drained, store_wake *w);
int pg_socket(store *s);
int pg_notifications(store *s, double *earliest);
int pg_set_names(store *s, const char *const *names, const size_t *lens, size_t n);
void pg_free_names(pg_store *p);
int pg_notification_due(pg_store *p, const char *payload, double *t);

/* store_pg_operators.c */
int pg_get(store *s, int64_t id, store_job *out, int *found);
int pg_retry(store *s, int64_t id, int *done);
/* A store_filter as the parameters $1-$4 of the listing statements
 * (Q_LIST, Q_HISTORY_LIST): state, name, id, limit, NULL for "any". */
typedef struct pg_filter_params {
  char id[32], limit[32];
  const char *values[4];
} pg_filter_params;
void pg_filter(const store_filter *f, pg_filter_params *out);
int pg_list(store *s, const store_filter *f, store_job_row **out, size_t *n, double *db_now);
int pg_stats(store *s, store_stat **out, size_t *n);
int pg_totals(store *s, store_total **out, size_t *n);
int pg_running(store *s, const store_claim *job, int64_t batch, int *done);
int pg_durations(store *s, store_duration **out, size_t *n);
int pg_retry_failed(store *s, const char *name, size_t name_len, size_t *retried,
                    size_t *skipped);
int pg_remove(store *s, const store_removal *r, size_t *removed);
int pg_pause(store *s, const char *name, size_t len, int on, int *changed);
int pg_paused_names(store *s, const char *const **names, const size_t **lens, size_t *n);
int pg_limit(store *s, const char *name, size_t len, long long concurrency, const char *by,
             size_t by_len, long long rate, double per, int *changed);
int pg_limits(store *s, const char *const **names, const size_t **lens,
              const long long **concurrency, const char *const **by, const size_t **by_lens,
              const long long **rate, const double **per, size_t *n);

#pragma GCC visibility pop

#endif
