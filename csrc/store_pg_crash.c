/*
 * store_pg_crash.c: what a worker leaves behind when it dies, and how other
 * workers give it back.  Leases (jobs leased, not held by a claim
 * transaction: a quarantined job, the jobs kept by a settle): their
 * renewals and outcomes, each fenced on its claim token.  The record
 * connection and the batch records it commits (CRASHES), and the rescue
 * that reads them: expired leases, the held batches of dead workers,
 * QUARANTINE; abandon() of a worker the supervisor saw die (WORKER_LOCK).
 */
#include "store_pg_internal.h"

#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* CRASHES.  What a dead worker's claim transaction held is recorded, never
 * inferred: an aborted transaction leaves nothing of its own behind (a
 * row's xmax also names the transaction of any client that merely locked
 * it).  Before the first job of a batch runs, the batch's token, worker
 * and job ids are sent to scheduler.batches on a second connection of the
 * worker's (the record connection: the claim transaction cannot commit
 * anything of its own before it ends), marking the batch before it in the
 * same transaction as run.  The statement is flushed to the kernel before
 * the job starts, so the server runs and commits it even if the worker
 * dies right after; its reply is read later (pg_rec_wait), off the claim's
 * path.  The commit that ends the claim transaction drops its records.
 * If the worker dies, the records stay.  Every worker's rescue
 * (Q_ORPHANS) looks for records whose worker's connection is gone (its
 * session advisory lock, WORKER_LOCK, goes with it): of a batch that had
 * not run, a job alone was the one running and is charged its attempt;
 * several are not charged and go to QUARANTINE, where each is claimed
 * alone, as a lease whose attempt is committed before it runs
 * (Q_CLAIM_ONE), until it has finished or crashed on its own.  Until a
 * rescue has found them, claims skip the jobs of a dead worker's records
 * (Q_CLAIM), and a worker that finds due jobs it cannot claim rescues
 * when it looks again (loop.c).  What is left: the record's commit and
 * the dead transaction's abort race on the server (two backends), so a
 * claim in the microseconds between the abort and the record's commit
 * can still take a job of that batch in a batch of its own.  A lost
 * connection, a failed commit and other rollbacks of a living worker drop
 * their records themselves: nothing crashed, the jobs simply run again. */

/* WORKER_LOCK (its key in store_pg_internal.h).  A worker's connection
 * holds the advisory lock (WORKER_LOCK, hashtext(the worker id)) from its
 * first claim until the connection ends, which the server sees only after
 * the statement in progress, a claim included, has committed.  abandon()
 * waits for that lock (at most ABANDON_WAIT), so a claim sent just before
 * the worker died is released too; if the lock is still held then, the
 * worker's connection lives on and abandon() releases nothing (the
 * supervisor tries again later).  Short: the supervisor waits
 * meanwhile, and the server ends a dead client's session within
 * milliseconds of the statement in progress. */
#define ABANDON_WAIT "100ms"
/* a record connection started this long ago and not completed is started
 * afresh (see rec_connect) */
#define REC_START_STALE 20.0
#define SQLSTATE_LOCK_NOT_AVAILABLE "55P03" /* lock_timeout */

/* Lease renewals commit without waiting for the WAL flush: if the
 * database crashed before the flush, the renewal is simply undone and the
 * lease may expire early, so the job runs again (at-least-once holds).  Setting
 * it inside the statement makes it last exactly for the statement's own
 * implicit transaction, with no extra round trip. */
#define ASYNC_COMMIT "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"

/* On the record connection (see CRASHES): batch $1 of worker $2 holds
 * the jobs $3 and is about to run; batch $4 (NULL: none), the one
 * before it in the same claim transaction, has run. */
static const pg_query pgq_record = {Q_RECORD, "scheduler_record", 4,
    "WITH ran AS (UPDATE scheduler.batches SET ran = true"
    "  WHERE token = $4::bigint RETURNING 1)"
    " INSERT INTO scheduler.batches (token, worker, ids)"
    " VALUES ($1::bigint, $2, $3::bigint[])"};

/* The records of batches $1: in the claim transaction that held them,
 * before its commit; on the record connection when that transaction is
 * lost while the worker lives (nothing crashed: no quarantine). */
const pg_query pgq_unrecord = {Q_UNRECORD, "scheduler_unrecord", 1,
    "DELETE FROM scheduler.batches WHERE token = ANY ($1::bigint[])"};

/* Outcomes of leased jobs (a settled batch, a quarantined job), each
 * fenced on its claim (id, token).  A job that finished on its own
 * (done, or its listener failed or snoozed) leaves quarantine; one given
 * back (not attempted) keeps it, unless a cancel request drops it.
 * Snoozed ($11, $12, delays $13): waiting again, the attempt given back,
 * last_error kept (store.h, OUTCOME_SNOOZE). */
static const pg_query pgq_finish = {Q_FINISH, NULL, 13,
    "WITH done AS ("
    "  DELETE FROM scheduler.jobs j USING unnest($1::bigint[], $2::bigint[])"
    "    AS d(id, token)"
    "  WHERE j.id = d.id AND j.claim = d.token AND j.state = 'running'"
    "  RETURNING j.name"
    "), done_counts AS (SELECT name, count(*) AS jobs FROM done GROUP BY name)"
    COUNT_DONE ", again AS ("
    "  UPDATE scheduler.jobs j SET"
    "    state = CASE WHEN f.delay IS NULL THEN 'failed' ELSE 'scheduled' END,"
    "    run_at = CASE WHEN f.delay IS NULL THEN j.run_at"
    "             ELSE now() + f.delay * interval '1 second' END,"
    "    last_error = f.error, locked_by = NULL, locked_until = NULL, claim = NULL,"
    "    quarantined = false, suspects = NULL"
    "  FROM unnest($3::bigint[], $4::bigint[], $5::float8[], $6::text[])"
    "    AS f(id, token, delay, error)"
    "  WHERE j.id = f.id AND j.claim = f.token AND j.state = 'running'"
    "  RETURNING 1"
    "), snoozed AS ("
    "  UPDATE scheduler.jobs j SET state = 'scheduled', attempt = j.attempt - 1,"
    "    run_at = now() + z.delay * interval '1 second',"
    "    locked_by = NULL, locked_until = NULL, claim = NULL,"
    "    quarantined = false, suspects = NULL"
    "  FROM unnest($11::bigint[], $12::bigint[], $13::float8[]) AS z(id, token, delay)"
    "  WHERE j.id = z.id AND j.claim = z.token AND j.state = 'running'"
    "  RETURNING 1"
    "), dropped AS ("
    /* cancelled before they started ($9, $10), or given back
     * with a cancel request */
    "  DELETE FROM scheduler.jobs j"
    "  USING (SELECT * FROM unnest($9::bigint[], $10::bigint[]) UNION ALL"
    "    SELECT * FROM unnest($7::bigint[], $8::bigint[]) AS r(id, token)"
    "    WHERE EXISTS (SELECT 1 FROM scheduler.cancels c WHERE c.job_id = r.id"
    "      AND c.verdict IS NULL)) AS x(id, token)"
    "  WHERE j.id = x.id AND j.claim = x.token AND j.state = 'running'"
    "  RETURNING j.id"
    "), verdicts AS (UPDATE scheduler.cancels SET verdict = 'cancelled'"
    "  WHERE job_id IN (SELECT dropped.id FROM dropped) RETURNING 1"
    "), back AS ("
    "  UPDATE scheduler.jobs j SET state = 'scheduled', attempt = j.attempt - 1,"
    "    locked_by = NULL, locked_until = NULL, claim = NULL"
    "  FROM unnest($7::bigint[], $8::bigint[]) AS r(id, token)"
    "  WHERE j.id = r.id AND j.claim = r.token AND j.state = 'running'"
    "    AND NOT EXISTS (SELECT 1 FROM scheduler.cancels c WHERE c.job_id = r.id"
    "      AND c.verdict IS NULL)"
    "  RETURNING j.run_at"
    ") SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM again),"
    "  (SELECT count(*) FROM back), (SELECT count(*) FROM snoozed),"
    /* jobs handed back are due: wake the sleeping workers */
    "  (SELECT " WAKE_EVERYONE " FROM back HAVING count(*) > 0)"};

/* Renewals: every lease $1/$2 to one expiry, now + $3 seconds, which
 * comes back (see store.h, claim_leased: a worker's leases share it). */
static const pg_query pgq_heartbeat = {Q_HEARTBEAT, "scheduler_heartbeat", 3,
    "WITH u AS MATERIALIZED (SELECT now() + $3::float8 * interval '1 second' AS t),"
    " r AS (UPDATE scheduler.jobs j SET locked_until = (SELECT u.t FROM u)"
    "  FROM unnest($1::bigint[], $2::bigint[]) AS h(id, token), " ASYNC_COMMIT
    "  WHERE j.id = h.id AND j.claim = h.token AND j.state = 'running' RETURNING 1)"
    " SELECT extract(epoch FROM u.t), (SELECT count(*) FROM r) FROM u"};

/* The max_attempts the crash rule applies to job j: its own, else its
 * listener's ($3 names, $4 their max_attempts: set_max_attempts), else
 * the default ($2). */
#define MAX_ATTEMPTS_OF                                                                      \
  "coalesce(j.max_attempts, (SELECT l.m FROM unnest($3::text[], $4::integer[]) AS l(n, m)"   \
  " WHERE l.n = j.name AND l.m > 0 LIMIT 1), $2::integer)"

/* Leases given back by the crash rule (see CRASHES): those of worker $1
 * (abandon), or every expired one ($1 NULL); $2-$4 the max_attempts
 * (MAX_ATTEMPTS_OF).  A worker's leases of one expiry are a group (store.h,
 * rescue): a lease alone (a quarantined job, the job in hand when a
 * batch was settled, a listener blocked past its limit) counts the
 * attempt and fails the job when its attempts are used up; the jobs of
 * a group of several (a settled batch, a concurrent worker's jobs in
 * flight) are not charged and go to quarantine.  Returns
 * (jobs given back, notifications): one per name as for new jobs (a
 * single "wake everyone" beyond 16 names).  Planned per execution: the
 * two cases walk different indexes. */
static const pg_query pgq_rescue = {Q_RESCUE, NULL, 4,
    "WITH x AS ("
    "  SELECT j.id, j.locked_by, j.locked_until FROM scheduler.jobs j"
    "  WHERE j.state = 'running'"
    "    AND CASE WHEN $1::text IS NULL THEN j.locked_until < now()"
    "    ELSE j.locked_by = $1 END FOR UPDATE SKIP LOCKED"
    "), g AS ("
    "  SELECT j.locked_by, j.locked_until, count(*) AS n FROM scheduler.jobs j"
    "  WHERE j.state = 'running'"
    "    AND j.locked_until IN (SELECT x.locked_until FROM x)"
    "  GROUP BY j.locked_by, j.locked_until"
    "), a AS ("
    "  UPDATE scheduler.jobs j SET"
    "  attempt = CASE WHEN coalesce(g.n, 1) > 1 THEN j.attempt - 1 ELSE j.attempt END,"
    "  quarantined = j.quarantined OR coalesce(g.n, 1) > 1,"
    "  suspects = CASE WHEN coalesce(g.n, 1) > 1 THEN g.n ELSE j.suspects END,"
    "  state = CASE WHEN coalesce(g.n, 1) = 1"
    "    AND j.attempt >= " MAX_ATTEMPTS_OF
    "    THEN 'failed' ELSE 'scheduled' END,"
    "  last_error = CASE WHEN coalesce(g.n, 1) > 1 THEN j.last_error"
    "    WHEN $1::text IS NULL THEN 'lease expired: worker ' ||"
    "      coalesce(j.locked_by, '?') || ' stopped renewing it (it died, hung or lost"
    " its connection)'"
    "    ELSE 'worker ' || j.locked_by || ' died while holding it' END,"
    "  locked_by = NULL, locked_until = NULL, claim = NULL"
    "  FROM x LEFT JOIN g ON g.locked_by = x.locked_by AND g.locked_until = x.locked_until"
    "  WHERE j.id = x.id RETURNING j.name, j.state, j.run_at"
    "), r AS (SELECT name, run_at FROM a WHERE state = 'scheduled'"
    "), w AS ("
    "  SELECT pg_notify('scheduler', extract(epoch FROM min(r.run_at))::text || ' ' ||"
    "    CASE WHEN octet_length(r.name) <= 1000 THEN r.name ELSE '' END)"
    "  FROM r WHERE (SELECT count(DISTINCT name) FROM r) <= 16 GROUP BY r.name"
    "  UNION ALL"
    "  SELECT pg_notify('scheduler', extract(epoch FROM min(r.run_at))::text || ' ')"
    "  FROM r HAVING count(DISTINCT r.name) > 16"
    ") SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM w)"};

/* The held batches of dead workers (see CRASHES): the records of worker
 * $1 (abandon: its death is known), or of every worker whose
 * connection, and with it its advisory lock (WORKER_LOCK), is gone ($1
 * NULL).  Their transactions aborted, so their jobs are back as they
 * were.  A batch that had run (the next one had started) is simply
 * forgotten; of one that had not, a job alone was the one running: its
 * attempt is counted (failed when used up: MAX_ATTEMPTS_OF, $2-$4);
 * several go to quarantine, not charged.  A job locked
 * meanwhile (claimed again, or by another client) is skipped, and its
 * record kept for the next look.  Returns (jobs put back, records
 * dropped, a notification or NULL). */
static const pg_query pgq_orphans = {Q_ORPHANS, NULL, 4,
    "WITH o AS ("
    "  SELECT b.token, b.worker, b.ids, b.ran FROM scheduler.batches b"
    "  WHERE ($1::text IS NULL OR b.worker = $1)"
    "    AND " WORKER_GONE
    "  FOR UPDATE SKIP LOCKED"
    "), m AS ("
    "  SELECT o.token, o.worker, o.ran, cardinality(o.ids) AS n, u.id"
    "  FROM o CROSS JOIN LATERAL unnest(o.ids) AS u(id)"
    "), free AS ("
    "  SELECT j.id FROM scheduler.jobs j WHERE j.id IN (SELECT m.id FROM m)"
    "    AND j.state = 'scheduled' FOR UPDATE SKIP LOCKED"
    "), busy AS ("
    "  SELECT DISTINCT m.token FROM m JOIN scheduler.jobs j ON j.id = m.id"
    "  WHERE NOT m.ran AND j.state = 'scheduled'"
    "    AND j.id NOT IN (SELECT free.id FROM free)"
    "), q AS ("
    "  UPDATE scheduler.jobs j SET"
    "  quarantined = j.quarantined OR m.n > 1,"
    "  suspects = CASE WHEN m.n > 1 THEN m.n ELSE j.suspects END,"
    "  attempt = CASE WHEN m.n = 1 THEN j.attempt + 1 ELSE j.attempt END,"
    "  state = CASE WHEN m.n = 1 AND j.attempt + 1 >="
    "    " MAX_ATTEMPTS_OF " THEN 'failed' ELSE 'scheduled' END,"
    "  last_error = CASE WHEN m.n = 1 THEN 'attempt ' || (j.attempt + 1) ||"
    "    ' was lost: worker ' || m.worker || ' died while running it'"
    "    ELSE j.last_error END"
    "  FROM m WHERE j.id = m.id AND NOT m.ran"
    "    AND j.id IN (SELECT free.id FROM free)"
    "  RETURNING j.state, j.run_at"
    "), d AS ("
    "  DELETE FROM scheduler.batches b WHERE b.token IN (SELECT o.token FROM o)"
    "    AND b.token NOT IN (SELECT busy.token FROM busy) RETURNING 1"
    ") SELECT (SELECT count(*) FROM q), (SELECT count(*) FROM d),"
    "  (SELECT " WAKE_EVERYONE " FROM q WHERE state = 'scheduled'"
    "   HAVING count(*) > 0)"};

/* Try only: two instances of one process share a worker id. */
const pg_query pgq_worker_lock = {Q_WORKER_LOCK, "scheduler_worker_lock", 1,
    "SELECT pg_try_advisory_lock(" WORKER_LOCK ", hashtext($1))"};

/* Wait until no session holds the worker's lock, and let it go at once
 * (see WORKER_GONE) */
static const pg_query pgq_worker_wait = {Q_WORKER_WAIT, "scheduler_worker_wait", 1,
    "WITH l AS MATERIALIZED (SELECT pg_advisory_lock(" WORKER_LOCK ", hashtext($1)))"
    " SELECT pg_advisory_unlock(" WORKER_LOCK ", hashtext($1)) FROM l"};

/* ------------------------------------------------------------------ */
/* The record connection                                               */

/* Close the record connection (see CRASHES). */
void pg_rec_drop(pg_store *p) {
  if (p->rec) PQfinish(p->rec);
  p->rec = NULL;
  p->rec_ready = 0;
  p->rec_pending = 0;
  p->rec_setup = 0;
}

/* What sets the record connection up after its session settings: its
 * statements prepared in the same round trip. */
static int rec_sql(buf *sql) {
  static const pg_query *const statements[] = {&pgq_record, &pgq_unrecord, &pgq_verdict};
  int err = buf_adds(sql, "SET synchronous_commit = off; LISTEN scheduler_cancel");
  for (size_t k = 0; k < sizeof statements / sizeof *statements; k++)
    err |= buf_printf(sql, "; PREPARE %s AS %s", statements[k]->name, statements[k]->sql);
  return err;
}

/* The record connection, connected (with its session settings, LISTEN for
 * cancel requests, and its statements prepared) unless it is.  Records commit without waiting for
 * the WAL flush: a server crash aborts the transactions they describe and
 * empties the (unlogged) table. */
static int rec_connect(pg_store *p) {
  if (p->rec && p->rec_ready && PQstatus(p->rec) == CONNECTION_OK) return STORE_OK;
  /* started long ago and never completed: the server may have given up on
   * it (authentication_timeout, 1 minute by default) */
  if (p->rec && (p->rec_ready || PQstatus(p->rec) == CONNECTION_BAD ||
                 (!p->rec_setup && clock_mono() - p->rec_started > REC_START_STALE)))
    pg_rec_drop(p);
  int rc;
  if (p->rec && p->rec_setup) {
    /* pg_rec_advance sent its set-up: its replies */
    p->rec_setup = 0;
    rc = pg_setup_read(p, p->rec);
  } else {
    rc = p->rec ? STORE_OK : pg_start_conn(p, &p->rec);
    buf sql = BUF_INIT;
    if (rc == STORE_OK && rec_sql(&sql)) rc = store_fail(&p->base, STORE_NOMEM, "not enough memory");
    if (rc == STORE_OK) rc = pg_finish_conn(p, &p->rec, buf_cstr(&sql));
    buf_free(&sql);
  }
  if (rc == STORE_OK) p->rec_ready = 1;
  else pg_rec_drop(p);
  return rc;
}

/* Start the record connection unless it is, without waiting for it: a
 * worker starts it with its main connection (pg_connect, pg_listen), so
 * that both connect at once and the first batch does not wait for the
 * second one (a worker's start to its first job).  rec_connect completes
 * it.  A failure here is not one: rec_connect tries again. */
void pg_rec_start(pg_store *p) {
  if (p->rec || p->leases_only) return;
  if (pg_start_conn(p, &p->rec) == STORE_OK) {
    p->rec_started = clock_mono();
    p->rec_polling = PGRES_POLLING_WRITING;
  }
}

/* Take the record connection pg_rec_start began as far as it goes without
 * waiting, and once it is connected send its set-up (read by rec_connect):
 * its first statements cost the new server process several milliseconds
 * (5-6 ms here), which then pass while the worker claims.  Called on the
 * way to the first claim; a failure drops it (rec_connect starts anew). */
void pg_rec_advance(pg_store *p) {
  if (!p->rec || p->rec_ready || p->rec_setup) return;
  for (;;) {
    struct pollfd fd = {PQsocket(p->rec),
                        p->rec_polling == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
    if (fd.fd < 0 || poll(&fd, 1, 0) <= 0) return; /* not yet */
    p->rec_polling = PQconnectPoll(p->rec);
    if (p->rec_polling == PGRES_POLLING_OK) break;
    if (p->rec_polling == PGRES_POLLING_FAILED) {
      pg_rec_drop(p);
      return;
    }
  }
  buf sql = BUF_INIT;
  if (rec_sql(&sql) || pg_setup_send(p, p->rec, buf_cstr(&sql)) != STORE_OK) pg_rec_drop(p);
  else p->rec_setup = 1;
  buf_free(&sql);
}

/* Complete the record connection pg_rec_start began, if it did (before a
 * worker sleeps: so that it neither waits for the next batch nor ages
 * unfinished).  A failure is tried again by the next record. */
void pg_rec_complete(pg_store *p) {
  if (p->rec && !p->rec_ready) rec_connect(p);
}

/* Read the reply to the record sent last (rec_pending), waiting for it if
 * it has not come yet (it has had a batch's time).  A failure drops the
 * connection: the next record opens a new one. */
int pg_rec_wait(pg_store *p) {
  if (!p->rec_pending) return STORE_OK;
  p->rec_pending = 0;
  int rc = STORE_OK;
  PGresult *r;
  while ((r = PQgetResult(p->rec)) != NULL) {
    if (rc == STORE_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
      rc = pg_fail_msg(p, STORE_DOWN, "recording a batch", PQresultErrorMessage(r));
    PQclear(r);
  }
  if (rc == STORE_OK && PQstatus(p->rec) != CONNECTION_OK)
    rc = pg_fail_msg(p, STORE_DOWN, "recording a batch", PQerrorMessage(p->rec));
  if (rc) pg_rec_drop(p);
  return rc;
}

/* Send query q (Q_RECORD or Q_UNRECORD) on the record connection; its
 * reply is read by pg_rec_wait.  Once the statement is sent (blocking mode:
 * flushed to the kernel), the server runs it even if this process dies
 * right after.  A connection that turns out broken (a server restart kills
 * it unseen) is replaced once. */
int pg_rec_send(pg_store *p, const pg_query *q, const char *const *values) {
  pg_rec_wait(p); /* the last record failed: its batch has run, a new connection serves */
  for (int attempt = 0;; attempt++) {
    int rc = rec_connect(p);
    if (rc) return rc;
    if (PQsendQueryPrepared(p->rec, q->name, q->nparams, values, NULL, NULL, 0)) {
      p->rec_pending = 1;
      return STORE_OK;
    }
    rc = pg_fail_msg(p, STORE_DOWN, "recording a batch", PQerrorMessage(p->rec));
    pg_rec_drop(p);
    if (attempt == 1) return rc;
  }
}

/* Run sql (a read) on the record connection, waiting for its result
 * (*out, the caller clears it): for a look at the database while the main
 * connection is inside a batch's transaction (pg_paused_names). */
int pg_rec_query(pg_store *p, const char *sql, PGresult **out) {
  pg_rec_wait(p);
  for (int attempt = 0;; attempt++) {
    int rc = rec_connect(p);
    if (rc) return rc;
    PGresult *r = PQexec(p->rec, sql);
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
      *out = r;
      return STORE_OK;
    }
    rc = pg_fail_msg(p, STORE_DOWN, "database error",
                     r ? PQresultErrorMessage(r) : PQerrorMessage(p->rec));
    if (r) PQclear(r);
    pg_rec_drop(p);
    if (attempt == 1) return rc;
  }
}

/* Record batch b, about to run in the claim transaction (see CRASHES):
 * sent, not waited for. */
int pg_record_batch(pg_store *p, const batch *b) {
  buf *ids = &p->p[NBUFS - 1];
  char token[32], prev[32];
  int err = 0;
  buf_reset(ids);
  err |= buf_addc(ids, '{');
  for (size_t i = 0; i < b->n; i++) err |= (i ? buf_addc(ids, ',') : 0) | add_int(ids, b->jobs[i].id);
  err |= buf_addc(ids, '}');
  /* its token joins the transaction's, dropped with its commit */
  if (p->tx_tokens.len) p->tx_tokens.data[p->tx_tokens.len - 1] = ','; /* "{...}" reopened */
  else err |= buf_addc(&p->tx_tokens, '{');
  err |= add_int(&p->tx_tokens, b->token) | buf_addc(&p->tx_tokens, '}');
  if (err) return store_fail(&p->base, STORE_NOMEM, "not enough memory");
  snprintf(token, sizeof token, "%lld", (long long)b->token);
  snprintf(prev, sizeof prev, "%lld", (long long)p->recorded);
  const char *values[4] = {token, p->worker, buf_cstr(ids), p->recorded ? prev : NULL};
  int rc = pg_rec_send(p, &pgq_record, values);
  if (rc == STORE_OK) p->recorded = b->token;
  return rc;
}

/* RUNNING.  Other connections see the jobs of a held batch as waiting
 * (the claim's delete is not committed), so the job whose listener runs
 * would read as "scheduled ... late" and count as due.  The worker's
 * heartbeat thread, on its own connection, marks it in the batch's
 * record once its listener has run for a moment (heartbeat.c,
 * RUNNING_AFTER), and get, list and stats show the job a record names as
 * running, with the record's worker.  Nothing is written for a job that
 * ends sooner, so the claim's path costs nothing more.  The record goes
 * with the commit that ends the batch (or with a settle, which leases the
 * job: running from its row then).  SKIP LOCKED: the claim transaction
 * deletes the record before its commit, and the record connection marks
 * it as run when the next batch starts; a mark never waits for either
 * (the thread tries again at its next look).  Asynchronous commit: an
 * unlogged table, and a mark lost in a crash is moot. */
static const pg_query pgq_running = {Q_RUNNING, "scheduler_running", 2,
    "UPDATE scheduler.batches SET running = $2::bigint FROM (SELECT " ASYNC_COMMIT ") a"
    " WHERE ctid = (SELECT b.ctid FROM scheduler.batches b WHERE b.token = $1::bigint"
    "  FOR UPDATE SKIP LOCKED)"};

int pg_running(store *s, const store_claim *job, int64_t batch, int *done) {
  char token[32], id[32];
  snprintf(token, sizeof token, "%lld", (long long)batch);
  snprintf(id, sizeof id, "%lld", (long long)job->id);
  const char *values[2] = {token, job->id ? id : NULL};
  PGresult *r = NULL;
  *done = 0;
  int rc = pg_run(PG(s), &pgq_running, values, &r);
  if (rc) return rc;
  *done = atoi(PQcmdTuples(r)) > 0;
  PQclear(r);
  return STORE_OK;
}

/* The claim transaction is gone while this worker lives: drop the records
 * of its batches (nothing crashed; their jobs simply run again).  If that
 * fails too, another worker's rescue will quarantine them, which is safe. */
void pg_unrecord(pg_store *p) {
  if (p->tx_tokens.len) {
    const char *values[1] = {buf_cstr(&p->tx_tokens)};
    if (pg_rec_send(p, &pgq_unrecord, values) == STORE_OK) pg_rec_wait(p);
  }
  buf_reset(&p->tx_tokens);
  p->recorded = 0;
}

/* ------------------------------------------------------------------ */
/* Leases                                                              */

/* Outcome arrays ("{...}" literals) in p->p: [0] ids of done jobs, [1]
 * their claims' tokens; [2]-[5] id, token, retry delay (NULL: failed), error
 * of failed attempts; [6], [7] ids and tokens of released claims; [8], [9]
 * those of cancelled ones; [10]-[12] id, token, delay of snoozed ones. */
/* Append claim c to the arrays ids and tokens ("{" already in each),
 * after a comma unless it is the first (*count 0). */
static int add_claim_pair(buf *ids, buf *tokens, const store_claim *c, size_t *count) {
  int err = *count ? buf_addc(ids, ',') | buf_addc(tokens, ',') : 0;
  (*count)++;
  return err | add_int(ids, c->id) | add_int(tokens, c->token);
}

static int outcome_arrays(pg_store *p, const store_outcome *o, size_t n) {
  buf *b = p->p;
  int err = 0;
  for (int i = 0; i < 13; i++) {
    buf_reset(&b[i]);
    err |= buf_addc(&b[i], '{');
  }
  size_t nd = 0, nf = 0, nr = 0, nc = 0, nz = 0;
  for (size_t i = 0; i < n && !err; i++) {
    const store_outcome *x = &o[i];
    char num[64];
    switch (x->kind) {
    case OUTCOME_DONE: err |= add_claim_pair(&b[0], &b[1], &x->claim, &nd); break;
    case OUTCOME_RETRY:
    case OUTCOME_FAILED:
      if (nf) err |= buf_addc(&b[4], ',') | buf_addc(&b[5], ',');
      err |= add_claim_pair(&b[2], &b[3], &x->claim, &nf) |
             buf_adds(&b[4], x->kind == OUTCOME_RETRY
                                 ? fmt_seconds(x->retry_in, num, sizeof num)
                                 : "NULL") |
             add_array_text(&b[5], buf_cstr(&x->error), x->error.len);
      break;
    case OUTCOME_RELEASE: err |= add_claim_pair(&b[6], &b[7], &x->claim, &nr); break;
    case OUTCOME_CANCELLED: err |= add_claim_pair(&b[8], &b[9], &x->claim, &nc); break;
    case OUTCOME_SNOOZE:
      if (nz) err |= buf_addc(&b[12], ',');
      err |= add_claim_pair(&b[10], &b[11], &x->claim, &nz) |
             buf_adds(&b[12], fmt_seconds(x->retry_in, num, sizeof num));
      break;
    }
  }
  for (int i = 0; i < 13; i++) err |= buf_addc(&b[i], '}');
  return err ? store_fail(&p->base, STORE_NOMEM, "not enough memory") : STORE_OK;
}

/* The outcomes o[0, n) of leased jobs (Q_FINISH): the claims a settle
 * kept, a quarantined job.  Not in a claim transaction (pg_finish). */
int pg_finish_leases(pg_store *p, const store_outcome *o, size_t n) {
  int rc = outcome_arrays(p, o, n);
  if (rc) return rc;
  const char *values[13];
  for (int i = 0; i < 13; i++) values[i] = buf_cstr(&p->p[i]);
  PGresult *r = NULL;
  size_t kept = 0;
  if (pg_history_leased_arrays(p->hist, o, n, &kept))
    return store_fail(&p->base, STORE_NOMEM, "not enough memory");
  if (kept) {
    /* history (store_pg_history.c): the rows as they are, then the
     * outcomes, in one transaction and one round trip */
    const char *h[7];
    for (int i = 0; i < 7; i++) h[i] = buf_cstr(&p->hist[i]);
    step steps[4] = {STEP_SQL("BEGIN"), STEP_QUERY(&pgq_history_leased, h),
                     STEP_QUERY(&pgq_finish, values), STEP_SQL("COMMIT")};
    rc = pg_idle(p);
    if (rc == STORE_OK) rc = pg_connect(&p->base);
    if (rc == STORE_OK) rc = pg_pipeline(p, steps, 4, -1, &r);
    if (rc == STORE_ERROR && p->conn && PQtransactionStatus(p->conn) != PQTRANS_IDLE) {
      /* a failed step leaves the block aborted */
      PGresult *x = PQexec(p->conn, "ROLLBACK");
      if (x) PQclear(x);
    }
    return rc;
  }
  rc = pg_run(p, &pgq_finish, values, &r);
  if (rc) return rc;
  PQclear(r);
  return STORE_OK;
}
static int claims_literal(buf *ids, buf *tokens, const store_claim *c, size_t n) {
  buf_reset(ids);
  buf_reset(tokens);
  int err = buf_addc(ids, '{') | buf_addc(tokens, '{');
  size_t count = 0;
  for (size_t i = 0; i < n; i++) err |= add_claim_pair(ids, tokens, &c[i], &count);
  return err | buf_addc(ids, '}') | buf_addc(tokens, '}');
}

int pg_heartbeat(store *s, const store_claim *c, size_t n, double lease, double *until) {
  pg_store *p = PG(s);
  char leasetext[64];
  if (claims_literal(&p->p[0], &p->p[1], c, n))
    return store_fail(s, STORE_NOMEM, "not enough memory");
  const char *values[3] = {buf_cstr(&p->p[0]), buf_cstr(&p->p[1]),
                           fmt_seconds(lease, leasetext, sizeof leasetext)};
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_heartbeat, values, &r);
  if (rc) return rc;
  if (until) *until = parse_seconds(PQgetvalue(r, 0, 0));
  PQclear(r);
  return STORE_OK;
}

/* ------------------------------------------------------------------ */
/* Rescue                                                              */

/* Give back by the crash rule (see CRASHES) the expired leases and the
 * batches of dead workers ($1 NULL), or those of `worker`; *n (if not
 * NULL) = how many jobs. */
static int give_back(pg_store *p, const char *worker, long long default_max_attempts,
                     size_t *n) {
  char maxa[32];
  snprintf(maxa, sizeof maxa, "%lld", default_max_attempts);
  /* NULL (no listener limits) before the first set_names */
  const char *values[4] = {worker, maxa, p->max_literal.len ? buf_cstr(&p->max_names_literal) : NULL,
                           p->max_literal.len ? buf_cstr(&p->max_literal) : NULL};
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_rescue, values, &r);
  if (rc) return rc;
  size_t leased = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  rc = pg_run(p, &pgq_orphans, values, &r);
  if (rc) return rc;
  if (n) *n = leased + (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return STORE_OK;
}

int pg_set_max_attempts(store *s, const char *const *names, const size_t *lens,
                        const long long *max_attempts, size_t n) {
  pg_store *p = PG(s);
  buf_reset(&p->max_names_literal);
  buf_reset(&p->max_literal);
  int err = buf_addc(&p->max_names_literal, '{') | buf_addc(&p->max_literal, '{');
  for (size_t i = 0; i < n && !err; i++) {
    if (i) err |= buf_addc(&p->max_names_literal, ',') | buf_addc(&p->max_literal, ',');
    err |= add_array_text(&p->max_names_literal, names[i], lens[i]) |
           buf_printf(&p->max_literal, "%lld", max_attempts[i]);
  }
  err |= buf_addc(&p->max_names_literal, '}') | buf_addc(&p->max_literal, '}');
  if (!err) return STORE_OK;
  buf_reset(&p->max_names_literal);
  buf_reset(&p->max_literal);
  return store_fail(s, STORE_NOMEM, "not enough memory");
}

int pg_rescue(store *s, long long default_max_attempts) {
  pg_rec_advance(PG(s));
  return give_back(PG(s), NULL, default_max_attempts, NULL);
}

/* In one transaction: wait until no connection of the worker is left (see
 * WORKER_LOCK), then release its jobs.  If the wait times out, its
 * connection lives on (the worker is not dead after all, another process
 * uses its id, or the server has not yet seen it die): nothing is
 * released, STORE_LIVE. */
int pg_abandon(store *s, const char *worker, long long default_max_attempts, size_t *n) {
  pg_store *p = PG(s);
  const char *values[1] = {worker};
  PGresult *r = NULL;
  *n = 0;
  int rc = pg_idle(p);
  if (rc == STORE_OK) rc = pg_connect(s);
  if (rc == STORE_OK)
    rc = pg_exec_simple(p, "releasing a worker's jobs",
                     "BEGIN; SET LOCAL lock_timeout = '" ABANDON_WAIT "'", NULL);
  if (rc) return rc;
  /* unprepared: its error's SQLSTATE tells a timeout from a failure */
  r = PQexecParams(p->conn, pgq_worker_wait.sql, 1, NULL, values, NULL, NULL, 0);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state && strcmp(state, SQLSTATE_LOCK_NOT_AVAILABLE) == 0) {
      PQclear(r);
      pg_rollback(p);
      return store_fail(s, STORE_LIVE,
                        "worker %s is still connected to the database: nothing released", worker);
    }
    rc = pg_fail_result(p, "releasing a worker's jobs", r);
    pg_rollback(p);
    return rc;
  }
  PQclear(r);
  rc = give_back(p, worker, default_max_attempts, n);
  if (rc) {
    pg_rollback(p);
    return rc;
  }
  return pg_exec_simple(p, "releasing a worker's jobs", "COMMIT", NULL);
}
