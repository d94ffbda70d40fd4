/*
 * store_pg_wake.c: sleeping and waking.  A worker with nothing due looks
 * for its next wake-up (next_wake) and sleeps on its connection's socket,
 * LISTENing on the channel scheduler, until a notification for one of its
 * names (pg_set_names) comes or the time is up.  SLEEP_LOCK below is how a
 * wake-up is sent only to sleepers, and never lost.
 */
#include "store_pg_internal.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* SLEEP_LOCK (its key in store_pg_internal.h): wake-ups only for
 * sleepers, and never a lost one.  A worker about to sleep takes this
 * advisory lock, shared, in a statement of its own before
 * its last look at the jobs (next_wake), and gives it back when it claims
 * again.  schedule() tries to take it exclusively until its commit: when
 * that works, no worker is asleep nor about to be (one that comes to take
 * it waits for the commit, then sees the job), so there is nobody to wake
 * and no NOTIFY is sent: workers that are busy find the job at their next
 * claim.  When it fails, a worker sleeps (or is waiting to): NOTIFY.
 *   Only a statement that commits at once may try it, and only once its
 * rows are written, so that it holds the lock for its commit alone:
 * schedule() of one job, and schedule_many of up to MANY_CHUNK jobs (one
 * statement).  The longer transaction of a larger schedule_many always
 * notifies (one notification per name and statement), as do the insert
 * trigger and scheduler.schedule() in SQL: they may stay open for as long
 * as their caller likes, and must not hold up a worker going to sleep.
 *   A worker waits SLEEP_WAIT at most for the lock, which any session may
 * hold (a commit slowed by a busy disk, an application that runs our
 * INSERT in a transaction of its own, or locks the key).  If it did not
 * get it, a write may be committing unannounced, so it looks without the
 * lock and looks again soon, until it gets the lock: after a quarter of the
 * time it has missed it in a row, from SLEEP_RETRY_MIN to SLEEP_RETRY_MAX.
 * Nothing is lost: a job that such a holder commits unannounced waits that
 * long at most, and every other schedule() meanwhile fails to take the lock
 * (it is held) and notifies. */
#define SLEEP_WAIT "5ms"
#define SLEEP_RETRY_MIN 0.001
#define SLEEP_RETRY_MAX 0.1

/* How far ahead next_wake looks for the next due job (see Q_WAKE). */
#define WAKE_HORIZON "15 seconds"
/* The settings of next_wake's look (Q_WAKE), for its transaction: an
 * index scan whatever the statistics say.  After the table was emptied
 * they say it is empty, and the plan read every row of the table (a
 * transaction inserting 1,000,000 jobs: 200 ms), at every look.  And one
 * plan, kept by the session: the server chose a custom plan at every look,
 * whose making took 2.6 ms (0.6 ms to run it) at 100 partitions, after
 * most claims of a busy worker whose name is limited by partition. */
#define WAKE_SETTINGS                                                                        \
  "SELECT set_config('enable_seqscan', 'off', true),"                                        \
  " set_config('plan_cache_mode', 'force_generic_plan', true)"

/* The next due job is looked for WAKE_HORIZON ahead at most: the
 * index scan stops there, so it never walks the entries of a
 * transaction still inserting jobs due later (invisible to it, but
 * each read all the same: 100 ms per 500,000).  With none that soon,
 * the worker looks again then. */
/* A limited name that is full (store.h, limit) has its due jobs looked
 * at again LIMIT_LOOK later, not at once (the worker would spin): a slot
 * freed by a worker that dies, or whose job ends, is seen by then; its
 * own ends claim again at once, as do the workers a changed limit wakes.
 * Read without the limit's lock: it only says when to look. */
#define LIMIT_LOOK "1 second"
/* A partitioned limit (store.h, limit: PARTITIONS) is full when the name
 * has due jobs and none of them is in a partition with a free slot (or
 * with tokens, for a rate: store.h, limit: RATES): this reads one due
 * job per partition and priority (part_heads, migration 17), as a claim
 * does, against the full partitions listed once (f: as a subquery of
 * each pair's test, the list was made again for every pair, 11 ms a
 * look at 100 partitions with 200 jobs running).  Due jobs not in jobs_part yet (a `by` being changed: pg_limit)
 * count as full: looked at again LIMIT_LOOK later. */
#define AT_LIMIT_WAKE                                                                        \
  "EXISTS (SELECT 1 FROM scheduler.limits l CROSS JOIN LATERAL (SELECT ARRAY("               \
  "   SELECT scheduler.part(l.by, r.key, r.payload) FROM scheduler.jobs r"                    \
  "   WHERE r.state = 'running' AND r.name = l.name AND l.by IS NOT NULL GROUP BY 1"          \
  "   HAVING count(*) >= l.concurrency UNION ALL SELECT b.part FROM scheduler.limit_rates b"   \
  "   WHERE b.name = l.name AND l.by IS NOT NULL"                                              \
  "    AND scheduler.rate_tokens(l.rate, l.per, b.tat, now()) = 0) AS parts) f"                \
  "  WHERE l.name = n.name AND CASE"                                                          \
  "  WHEN l.by IS NULL THEN l.concurrency <= (SELECT count(*) FROM scheduler.jobs r"        \
  "    WHERE r.state = 'running' AND r.name = l.name)"                                        \
  "  ELSE EXISTS (SELECT 1 FROM scheduler.jobs j WHERE j.state = 'scheduled'"               \
  "    AND j.name = l.name AND j.run_at <= now())"                                            \
  "   AND NOT EXISTS (SELECT 1 FROM scheduler.part_heads(l.name) h"                          \
  "    WHERE h.part <> ALL (f.parts) AND EXISTS (SELECT 1 FROM scheduler.jobs j"              \
  "     WHERE j.state = 'scheduled' AND j.name = l.name AND j.part = h.part"                  \
  "     AND j.priority = h.priority AND j.run_at <= now()))"                                  \
  "  END)"
/* A rate limit's due jobs (store.h, limit: RATES) are looked at when a
 * quarter of what a claim can take of its bucket (the burst and the tokens
 * it takes ahead, STORE_RATE_AHEAD) can be taken again (rounded up: the
 * next token for a slow rate), scheduler.rate_look seconds before the
 * bucket's tat (store_rate_look), not at its next token: at 1,000 a second
 * a worker would claim a job a millisecond, each claim a lock and a
 * transaction; a look each 25 ms at most, each job it takes held until
 * its token.  Read without the lock, as LIMIT_LOOK's test.  A name's bucket
 * only: partitions below. */
#define RATE_NEXT                                                                            \
  "(SELECT r.tat - scheduler.rate_look(l.rate, l.per) * interval '1 second'"                \
  " FROM scheduler.limits l JOIN scheduler.limit_rates r ON r.name = l.name"                 \
  "  AND r.part = '' WHERE l.name = n.name AND l.rate IS NOT NULL AND l.by IS NULL)"
/* A partitioned rate (store.h, limit: RATES) whose due jobs all wait (for
 * a slot, or for tokens: AT_LIMIT_WAKE) is looked at when the first of its
 * buckets that is not full can give a quarter of a claim again, if that is
 * sooner than LIMIT_LOOK: that partition may have no due job (then the
 * look finds nothing and asks again), but no partition's tokens are
 * missed. */
#define RATE_NEXT_PARTS                                                                      \
  "(SELECT min(r.tat) - scheduler.rate_look(l.rate, l.per) * interval '1 second'"           \
  " FROM scheduler.limits l JOIN scheduler.limit_rates r ON r.name = l.name"                 \
  " WHERE l.name = n.name AND l.rate IS NOT NULL AND l.by IS NOT NULL"                       \
  "  AND r.tat > now() + scheduler.rate_look(l.rate, l.per) * interval '1 second'"            \
  "  GROUP BY l.rate, l.per)"
/* After a claim that took every job it could of this worker's names
 * (store_ops.next_wake: drained), a partitioned concurrency limit's due
 * jobs are taken to wait for a slot, without AT_LIMIT_WAKE's walk of the
 * partitions, which the claim just made (1 ms of the server's time a look
 * at 100 partitions, after most claims of a busy worker).  A rate's
 * buckets are still read (RATE_NEXT_PARTS says when).  Such a name with
 * no due job is looked at when its next one comes due (NEXT_LATER), and
 * has none waiting for a slot (limit_wait). */
#define AT_LIMIT_DRAINED                                                                     \
  "EXISTS (SELECT 1 FROM scheduler.limits l WHERE l.name = n.name"                          \
  " AND l.by IS NOT NULL AND l.rate IS NULL)"
/* A full partitioned name is also looked at when its next job not due
 * yet is (a job in a partition with a free slot starts on time; one in a
 * full partition costs a claim that takes nothing).  Drained: not due at
 * the claim (its now(), kept for the session by pgq_lease_settings), so
 * that a job due since, which the claim did not see, is looked at now. */
#define NEXT_LATER                                                                           \
  "(SELECT j.run_at FROM scheduler.jobs j JOIN scheduler.limits l ON l.name = j.name"        \
  "  AND l.by IS NOT NULL WHERE j.state = 'scheduled' AND j.name = n.name"                   \
  "  AND j.run_at > CASE WHEN $2::boolean THEN coalesce(nullif(current_setting("             \
  "   'scheduler.claimed_at', true), '')::timestamptz, now()) ELSE now() END"                \
  "  ORDER BY j.run_at LIMIT 1)"
/* Each name's test (full) once: the next due time and limit_wait both
 * read it.  A paused name's jobs wait (store.h, pause). */
static const pg_query pgq_wake = {Q_WAKE, "scheduler_wake", 2,
    "WITH n AS MATERIALIZED (SELECT n.name, CASE WHEN $2::boolean AND " AT_LIMIT_DRAINED
    "  THEN true ELSE " AT_LIMIT_WAKE " END AS full FROM unnest($1::text[]) AS n(name)"
    "  WHERE n.name <> ALL (ARRAY(SELECT z.name FROM scheduler.paused z)))"
    " SELECT extract(epoch FROM clock_timestamp()),"
    " (SELECT extract(epoch FROM coalesce(min(CASE WHEN n.full"
    "   THEN greatest(w.run_at, least(now() + interval '" LIMIT_LOOK "', " RATE_NEXT_PARTS ","
    "    " NEXT_LATER "))"
    "   ELSE greatest(w.run_at, " RATE_NEXT ") END),"
    "   now() + interval '" WAKE_HORIZON "')) FROM n"
    "  CROSS JOIN LATERAL (SELECT j.run_at FROM scheduler.jobs j"
    "   WHERE j.state = 'scheduled' AND j.name = n.name"
    "    AND j.run_at <= now() + interval '" WAKE_HORIZON "'"
    "   ORDER BY j.run_at LIMIT 1) w),"
    " (SELECT extract(epoch FROM min(j.locked_until)) FROM scheduler.jobs j"
    "  WHERE j.state = 'running' AND j.name = ANY ($1::text[])),"
    " (SELECT extract(epoch FROM min(c.next_at)) FROM scheduler.crons c"
    "  WHERE c.name = ANY ($1::text[])),"
    /* store_wake.limit_wait */
    " EXISTS (SELECT 1 FROM n WHERE n.full"
    "  AND EXISTS (SELECT 1 FROM scheduler.jobs j WHERE j.state = 'scheduled'"
    "   AND j.name = n.name AND j.run_at <= now()))"};

int pg_listen(store *s, int on) {
  pg_store *p = PG(s);
  if (p->listening == on) return STORE_OK;
  int rc = pg_idle(p);
  if (rc) return rc;
  p->listening = on;
  if (!p->conn) return on ? pg_connect(s) : STORE_OK;
  if (on) pg_rec_start(p);
  rc = pg_exec_simple(p, on ? "listening for new jobs" : "unlistening",
                       on ? "LISTEN scheduler"
                       : p->sleep_locked
                           ? "UNLISTEN *; SELECT pg_advisory_unlock_shared(" SLEEP_LOCK ")"
                           : "UNLISTEN *",
                       NULL);
  if (rc == STORE_OK && !on) p->sleep_locked = 0;
  if (rc == STORE_OK && !on) {
    /* drop what arrived before UNLISTEN took effect */
    PGnotify *n;
    while ((n = PQnotifies(p->conn)) != NULL) PQfreemem(n);
  }
  return rc;
}

void pg_free_names(pg_store *p) {
  for (size_t i = 0; i < p->n_names; i++) free(p->names[i]);
  free(p->names);
  free(p->name_lens);
  p->names = NULL;
  p->name_lens = NULL;
  p->n_names = 0;
}

int pg_set_names(store *s, const char *const *names, const size_t *lens, size_t n) {
  pg_store *p = PG(s);
  pg_free_names(p);
  buf_reset(&p->names_literal);
  p->names = calloc(n ? n : 1, sizeof *p->names);
  p->name_lens = calloc(n ? n : 1, sizeof *p->name_lens);
  if (!p->names || !p->name_lens) goto nomem;
  if (buf_addc(&p->names_literal, '{')) goto nomem;
  for (size_t i = 0; i < n; i++) {
    if (!(p->names[i] = malloc(lens[i] + 1))) goto nomem;
    memcpy(p->names[i], names[i], lens[i]);
    p->names[i][lens[i]] = '\0';
    p->name_lens[i] = lens[i];
    p->n_names = i + 1;
    if ((i && buf_addc(&p->names_literal, ',')) ||
        add_array_text(&p->names_literal, names[i], lens[i]))
      goto nomem;
  }
  if (buf_addc(&p->names_literal, '}')) goto nomem;
  p->claim_names_changed = 1;
  return STORE_OK;
nomem:
  pg_free_names(p);
  buf_reset(&p->names_literal);
  return store_fail(s, STORE_NOMEM, "not enough memory");
}

static double seconds_or_inf(PGresult *r, int col) {
  return PQgetisnull(r, 0, col) ? INFINITY : parse_seconds(PQgetvalue(r, 0, col));
}

int pg_next_wake(store *s, int drained, store_wake *w) {
  pg_store *p = PG(s);
  const char *values[2] = {buf_cstr(&p->names_literal), drained ? "t" : "f"};
  PGresult *r = NULL;
  int rc = pg_idle(p);
  if (rc) return rc;
  pg_rec_complete(p); /* about to sleep */
  int unsure = 0; /* looked without SLEEP_LOCK */
  const step look[2] = {STEP_SQL(WAKE_SETTINGS), STEP_QUERY(&pgq_wake, values)};
  if (p->listening && !p->sleep_locked) {
    /* about to sleep: SLEEP_LOCK first, waiting SLEEP_WAIT at most (the
     * setting lasts for the statement's transaction), then the look (see
     * SLEEP_LOCK) */
    const step steps[2] = {STEP_SQL(WAKE_SETTINGS ", set_config('lock_timeout', '" SLEEP_WAIT
                                    "', true), pg_advisory_lock_shared(" SLEEP_LOCK ")"),
                           STEP_QUERY(&pgq_wake, values)};
    rc = pg_connect(s);
    if (rc == STORE_OK) rc = pg_pipeline(p, steps, 2, 1, &r);
    if (rc == STORE_OK) {
      p->sleep_locked = 1;
      p->sleep_missed = 0;
    } else if (rc == STORE_ERROR && p->conn) {
      /* not had in time (or had, and the look failed: give it back, a
       * no-op otherwise); look without it */
      PGresult *u = PQexec(p->conn, "SELECT pg_advisory_unlock_shared(" SLEEP_LOCK ")");
      if (u) PQclear(u);
      unsure = 1;
      rc = pg_pipeline(p, look, 2, 1, &r);
    }
  } else {
    rc = pg_connect(s);
    if (rc == STORE_OK) rc = pg_pipeline(p, look, 2, 1, &r);
  }
  if (rc) return rc;
  w->db_now = parse_seconds(PQgetvalue(r, 0, 0));
  w->next_due = seconds_or_inf(r, 1);
  w->next_expiry = seconds_or_inf(r, 2);
  w->next_cron = seconds_or_inf(r, 3);
  w->limit_wait = PQgetvalue(r, 0, 4)[0] == 't';
  PQclear(r);
  if (unsure) {
    /* a write may commit unannounced: look again soon (see SLEEP_LOCK) */
    if (p->sleep_missed <= 0 || w->db_now - p->sleep_missed_last > 2 * SLEEP_RETRY_MAX)
      p->sleep_missed = w->db_now; /* missed anew, not in a row */
    p->sleep_missed_last = w->db_now;
    double soon = (w->db_now - p->sleep_missed) / 4;
    soon = soon < SLEEP_RETRY_MIN   ? SLEEP_RETRY_MIN
           : soon > SLEEP_RETRY_MAX ? SLEEP_RETRY_MAX
                                    : soon;
    if (w->db_now + soon < w->next_due) w->next_due = w->db_now + soon;
  }
  return STORE_OK;
}

int pg_socket(store *s) {
  pg_store *p = PG(s);
  return p->conn ? PQsocket(p->conn) : -1;
}

static int wants(pg_store *p, const char *name) {
  if (!*name) return 1; /* long names and many-name statements wake everyone */
  size_t n = strlen(name);
  for (size_t i = 0; i < p->n_names; i++)
    if (p->name_lens[i] == n && memcmp(p->names[i], name, n) == 0) return 1;
  return 0;
}

/* The run_at in a notification's payload, "<epoch seconds> <name>" as the
 * triggers send it, if it is for one of this worker's names: 1, else 0.
 * Any client may NOTIFY anything; another payload at worst wakes the worker
 * for nothing. */
int pg_notification_due(pg_store *p, const char *payload, double *t) {
  const char *space = strchr(payload, ' ');
  if (!space || !wants(p, space + 1)) return 0;
  *t = parse_seconds(payload);
  return 1;
}

int pg_notifications(store *s, double *earliest) {
  pg_store *p = PG(s);
  *earliest = INFINITY;
  if (!p->conn) return store_fail(s, STORE_DOWN, "not connected");
  if (!PQconsumeInput(p->conn) || PQstatus(p->conn) != CONNECTION_OK) {
    int rc = pg_fail_msg(p, STORE_DOWN, "database connection lost", PQerrorMessage(p->conn));
    pg_disconnect(s);
    return rc;
  }
  PGnotify *n;
  while ((n = PQnotifies(p->conn)) != NULL) {
    double t;
    if (pg_notification_due(p, n->extra, &t) && t < *earliest) *earliest = t;
    PQfreemem(n);
  }
  return STORE_OK;
}
