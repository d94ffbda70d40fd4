/*
 * store_pg_cancel.c: cancel(), and the requests that the worker holding a
 * job sees before it starts it (CANCELS below).
 */
#include "store_pg_internal.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* CANCELS.  cancel() removes a waiting job that nobody holds at once.  One
 * that a worker holds (locked by its claim transaction, or leased and not
 * started) it asks for: a row in scheduler.cancels, and a notification on
 * the channel scheduler_cancel, which the worker's record connection
 * listens to (it is never inside a transaction, so notifications reach
 * it).  Before each job starts, the worker looks for new requests (at most
 * every CANCEL_LOOK seconds: a read of that connection's socket, usually
 * empty) and does not start a job asked for: it stays deleted by its claim
 * (held) or is deleted on its claim (leased), and the answer "cancelled"
 * is written with that.  Jobs given back unattempted honour a pending
 * request the same way.  A request for a job the worker already started is
 * answered "started".  cancel() waits for the answer, or for the claim
 * transaction to end, and decides on what it then finds: the job deleted
 * with "cancelled" (1), deleted without (it ran: 0), waiting (it deletes
 * it: 1), failed or leased and started (0).  A living worker hands back
 * the unstarted jobs of a batch stuck behind a slow one within a second
 * (heartbeat.h), so a lease that its living worker has not answered for
 * CANCEL_LEASED_WAIT seconds is a job that started; so is one whose worker
 * is gone (its session lock with it): it may have started, and comes back
 * when its lease ends or the supervisor releases it. */
#define CANCEL_LOOK 0.0003
#define CANCEL_LEASED_WAIT 2.0
#define CANCEL_LOCKED_WAIT 30.0
#define CANCEL_ASKED_MAX 4096

/* cancel(): the job if it waits and nobody holds it (deleted: column
 * 1); else its state as last committed (a row locked by a claim
 * transaction reads 'scheduled'), the answer of the worker that holds
 * it, and whether the worker that leases it lives (its WORKER_LOCK). */
static const pg_query pgq_cancel = {Q_CANCEL, "scheduler_cancel", 1,
    "WITH f AS (SELECT j.ctid FROM scheduler.jobs j"
    "  WHERE j.id = $1 AND j.state = 'scheduled' FOR UPDATE SKIP LOCKED),"
    " d AS (DELETE FROM scheduler.jobs j WHERE j.ctid IN (SELECT f.ctid FROM f)"
    "  RETURNING 1)"
    " SELECT (SELECT count(*) FROM d),"
    "  (SELECT j.state FROM scheduler.jobs j WHERE j.id = $1),"
    "  (SELECT c.verdict FROM scheduler.cancels c WHERE c.job_id = $1),"
    "  (SELECT NOT pg_try_advisory_xact_lock(" WORKER_LOCK ", hashtext(j.locked_by))"
    "   FROM scheduler.jobs j WHERE j.id = $1 AND j.state = 'running')"};

/* pgq_cancel with history (store_pg_history.c): the deleted job is kept,
 * $2 seconds, in the same statement. */
static const pg_query pgq_cancel_keep = {Q_CANCEL_KEEP, "scheduler_cancel_keep", 2,
    "WITH f AS (SELECT j.ctid FROM scheduler.jobs j"
    "  WHERE j.id = $1 AND j.state = 'scheduled' FOR UPDATE SKIP LOCKED),"
    " d AS (DELETE FROM scheduler.jobs j WHERE j.ctid IN (SELECT f.ctid FROM f)"
    "  RETURNING j.*),"
    " h AS (INSERT INTO scheduler.history (ids, finished_at, kept_until, worker, jobs)"
    "  SELECT int8range(d.id, d.id, '[]'), statement_timestamp(),"
    "   statement_timestamp() + $2::float8 * interval '1 second', NULL,"
    "   json_build_array(json_build_array(d.id, d.name, d.key, d.payload, 'cancelled',"
    "    d.attempt, d.priority, NULL, 0, d.last_error, $2::float8,"
    "    extract(epoch FROM d.run_at)))::text FROM d)"
    " SELECT (SELECT count(*) FROM d),"
    "  (SELECT j.state FROM scheduler.jobs j WHERE j.id = $1),"
    "  (SELECT c.verdict FROM scheduler.cancels c WHERE c.job_id = $1),"
    "  (SELECT NOT pg_try_advisory_xact_lock(" WORKER_LOCK ", hashtext(j.locked_by))"
    "   FROM scheduler.jobs j WHERE j.id = $1 AND j.state = 'running')"};

/* cancel()'s request to the worker that holds the job (see CANCELS) */
static const pg_query pgq_cancel_ask = {Q_CANCEL_ASK, "scheduler_cancel_ask", 1,
    "WITH a AS (INSERT INTO scheduler.cancels (job_id) VALUES ($1)"
    "  ON CONFLICT (job_id) DO NOTHING RETURNING 1)"
    " SELECT pg_notify('scheduler_cancel', $1::bigint::text)"};

static const pg_query pgq_cancel_end = {Q_CANCEL_END, "scheduler_cancel_end", 1,
    "DELETE FROM scheduler.cancels WHERE job_id = $1"};

/* A holder's answer $2 ('cancelled' or 'started') to the requests for
 * the jobs $1 (in the claim transaction, or on the record connection) */
const pg_query pgq_verdict = {Q_VERDICT, "scheduler_verdict", 2,
    "UPDATE scheduler.cancels SET verdict = $2"
    " WHERE job_id = ANY ($1::bigint[]) AND verdict IS NULL"};

/* store_ops.cancels (see CANCELS). */
int pg_cancels(store *s, const store_claim *b, size_t n, size_t next) {
  pg_store *p = PG(s);
  if (!p->rec_ready) return 0; /* nothing recorded: a job alone, started at once */
  double now = clock_mono();
  if (now - p->asked_at >= CANCEL_LOOK) {
    p->asked_at = now;
    PGnotify *nf;
    /* libpq parses nothing behind a reply not yet read: read the record's
     * (come in, so this does not wait) */
    if (PQconsumeInput(p->rec) && p->rec_pending && !PQisBusy(p->rec)) pg_rec_wait(p);
    if (p->rec)
      while ((nf = PQnotifies(p->rec)) != NULL) {
        int64_t id = parse_int(nf->extra);
        PQfreemem(nf);
        if (p->n_asked == CANCEL_ASKED_MAX) { /* requests for other workers' jobs: forget the oldest */
          memmove(p->asked, p->asked + 1, (p->n_asked - 1) * sizeof *p->asked);
          p->n_asked--;
        }
        if (!reserve((void **)&p->asked, &p->asked_cap, p->n_asked + 1, sizeof *p->asked))
          p->asked[p->n_asked++] = id;
      }
  }
  int cancel = 0;
  buf *started = &p->p[NBUFS - 2];
  buf_reset(started);
  for (size_t k = p->n_asked; k-- > 0;) {
    size_t i = 0;
    while (i < n && b[i].id != p->asked[k]) i++;
    if (i > next || i == n) continue; /* not reached yet, or not ours */
    if (i == next) cancel = 1;
    else if (add_to_array(started, b[i].id)) continue;
    p->asked[k] = p->asked[--p->n_asked];
  }
  if (started->len) {
    const char *values[2] = {buf_cstr(started), "started"};
    pg_rec_send(p, &pgq_verdict, values); /* read later; if it fails, cancel() decides alone */
  }
  return cancel;
}

static void sleep_seconds(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

/* store_ops.cancel (see CANCELS). */
int pg_cancel(store *s, int64_t id, int *done) {
  pg_store *p = PG(s);
  char idtext[32], wait[160];
  snprintf(idtext, sizeof idtext, "%lld", (long long)id);
  snprintf(wait, sizeof wait,
           "BEGIN; SET LOCAL lock_timeout = '100ms';"
           " SELECT 1 FROM scheduler.jobs WHERE id = %lld FOR UPDATE",
           (long long)id);
  char keep[64];
  const char *values[2] = {idtext, fmt_seconds(s->history, keep, sizeof keep)};
  double start = clock_mono(), pause = 0.002;
  int asked = 0, rc;
  *done = 0;
  for (;;) {
    PGresult *r = NULL;
    rc = pg_run(p, s->history > 0 ? &pgq_cancel_keep : &pgq_cancel, values, &r);
    if (rc) break;
    int deleted = parse_int(PQgetvalue(r, 0, 0)) > 0;
    char state = PQgetisnull(r, 0, 1) ? 0 : PQgetvalue(r, 0, 1)[0]; /* scheduled, running, failed */
    char verdict = PQgetisnull(r, 0, 2) ? 0 : PQgetvalue(r, 0, 2)[0]; /* cancelled, started */
    int holder_lives = !PQgetisnull(r, 0, 3) && PQgetvalue(r, 0, 3)[0] == 't';
    PQclear(r);
    if (deleted || verdict == 'c') {
      *done = 1;
      break;
    }
    if (verdict == 's' || state == 0 || state == 'f') break; /* started, gone (ran) or failed */
    double waited = clock_mono() - start;
    /* leased: started, unless its living worker answers otherwise soon */
    if (state == 'r' && (!holder_lives || waited >= CANCEL_LEASED_WAIT)) break;
    if (waited >= CANCEL_LOCKED_WAIT) {
      rc = store_fail(s, STORE_ERROR,
                      "job %lld stayed held (another transaction, or a dead worker's lease) for %.0f s: not cancelled",
                      (long long)id, waited);
      break;
    }
    if (!asked) {
      rc = pg_run(p, &pgq_cancel_ask, values, &r);
      if (rc) break;
      PQclear(r);
      asked = 1;
    }
    if (state == 's') {
      /* held by a claim transaction or another client: wait for its end */
      if (pg_exec_simple(p, "cancelling", wait, NULL) == STORE_DOWN) break;
      PGresult *end = p->conn ? PQexec(p->conn, "ROLLBACK") : NULL;
      if (end) PQclear(end);
    } else {
      sleep_seconds(pause);
      pause = pause * 2 > 0.05 ? 0.05 : pause * 2;
    }
  }
  if (asked && p->conn) {
    PGresult *r = NULL;
    if (pg_run(p, &pgq_cancel_end, values, &r) == STORE_OK) PQclear(r);
  }
  return rc;
}
