/*
 * store_pg_claim.c: the claim transaction, in which a worker claims its
 * jobs by batches and ends them (CLAIM AHEAD), as an explicit state
 * machine (the table below).  What a dead worker's transaction leaves is in
 * store_pg_crash.c (CRASHES), cancel requests in store_pg_cancel.c.
 */
#include "store_pg_internal.h"

#include <assert.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* CLAIM AHEAD.  A batch is claimed in a transaction (pg_claim): the claim
 * deletes its jobs, and the commit after their listeners makes that stick.
 * While the listeners of a full batch run, the next batch is claimed in
 * the same transaction: sent at the start of the batch, its result read at
 * its end (pg_finish), so the server runs that claim while the worker runs
 * Lua, on one connection.  The transaction commits at the end of a batch
 * that claimed nothing ahead: one that was not full (the next claim would
 * find few jobs, if any), or once the transaction is TX_MAX_AGE seconds
 * old or holds TX_MAX_BATCHES batches.  Until then the outcomes of its
 * earlier batches are written in it but not committed: a worker that dies
 * runs them again (at-least-once), as it does the batch in hand.
 *   The claim ahead cannot see the rows its transaction deleted, but an
 * index scan would still walk their entries (they die at the commit), so
 * it starts past the last job claimed, in claim order, for that job's
 * priority.  Jobs that come due meanwhile before that point (an earlier
 * run_at, or given back by another worker) wait for the commit.
 *   The completions of its batches (for stats) are counted once, with
 * its commit.  Any other use of the connection ends the transaction first
 * (idle): the batch claimed ahead goes back as it was (no attempt counted)
 * and the rest commits.  A settle does the same, and after one the next
 * QUIET_AFTER_SETTLE transactions claim nothing ahead: listeners that call
 * the API would waste every claim ahead.
 */
#define TX_MAX_AGE 0.05
#define TX_MAX_BATCHES 32
#define QUIET_AFTER_SETTLE 8

/* THE STATES of the claim transaction (pg_store.tx).  Each state is one
 * situation of the worker's connection between two calls of the store;
 * tx_to alone changes it, and allows only these moves:
 *
 *  state     meaning                     event (function)                next
 *  --------  --------------------------  ------------------------------  --------
 *  TX_IDLE   no claim transaction: the   a batch claimed and recorded    TX_HELD
 *            connection is free          (pg_claim)
 *  TX_HELD   a batch in hand (cur): its  the next batch's claim sent     TX_AHEAD
 *            jobs deleted and locked by  (claim_ahead)
 *            the open transaction;       the batch ended, the claim      TX_OPEN
 *            nothing claimed ahead, or   ahead collected (finish_ahead)
 *            its result read into next
 *  TX_AHEAD  a batch in hand, and the    the claim's result read into    TX_HELD
 *            next batch's claim sent in  next (collect_ahead)
 *            the same transaction, its
 *            result not read yet
 *  TX_OPEN   between batches: the        the batch claimed ahead handed  TX_HELD
 *            batch's outcomes written    out (pg_claim)
 *            in the open transaction,
 *            the claim ahead's result
 *            in next (next.n 0: none)
 *  any                                   committed (end_tx), rolled      TX_IDLE
 *                                        back (pg_rollback), or the
 *                                        connection lost (pg_tx_lost)
 *
 * A batch is in hand (tx_holds) in TX_HELD and TX_AHEAD: then the
 * connection belongs to it (pg_idle refuses any other statement) until
 * finish or settle.  A quarantined job claimed alone is a lease, not held:
 * its claim commits at once and the transaction stays TX_IDLE.  Data, not
 * states: the batches (cur, next), what the transaction holds (tx_jobs,
 * tx_batches, tx_start, tx_tokens, done, verdicts), the pipeline's unread
 * syncs, the claims to make without claiming ahead (quiet), and held_lost,
 * the jobs of a transaction whose connection was lost, said at the next
 * finish or settle (a claim may begin another transaction first).
 *   A move not in the table is a programming error: an assertion, and in
 * a build without assertions (NDEBUG) a store error, the state unchanged;
 * the caller then rolls the transaction back (its jobs run again). */
static const char *const tx_names[] = {"TX_IDLE", "TX_HELD", "TX_AHEAD", "TX_OPEN"};
static const unsigned tx_moves[] = {
    [TX_IDLE] = 1u << TX_IDLE | 1u << TX_HELD,
    [TX_HELD] = 1u << TX_IDLE | 1u << TX_AHEAD | 1u << TX_OPEN,
    [TX_AHEAD] = 1u << TX_IDLE | 1u << TX_HELD,
    [TX_OPEN] = 1u << TX_IDLE | 1u << TX_HELD,
};

/* Move the claim transaction to state `next` (see THE STATES).  STORE_OK,
 * or STORE_ERROR for a move not in the table (a move to TX_IDLE never
 * fails). */
static int tx_to(pg_store *p, tx_state next) {
  int allowed = (tx_moves[p->tx] >> next) & 1u;
  assert(allowed && "a move of the claim transaction not in THE STATES");
  if (!allowed)
    return store_fail(&p->base, STORE_ERROR,
                      "internal error: the claim transaction cannot go from %s to %s",
                      tx_names[p->tx], tx_names[next]);
  p->tx = next;
  return STORE_OK;
}

/* A batch is in hand: its transaction owns the connection. */
static int tx_holds(const pg_store *p) { return p->tx == TX_HELD || p->tx == TX_AHEAD; }

/* LIMITS (store.h, limit).  Jobs of a limited name (a row of
 * scheduler.limits) are never held in a claim transaction: Q_CLAIM skips
 * them, and they are claimed as leases (Q_CLAIM_LIMITED, Q_CLAIM_LEASED,
 * Q_CLAIM_ONE), each claim in a short transaction of its own that first
 * locks the rows of its limited names and counts their running jobs
 * (scheduler.limit_free, migrations 12 and 13).  So "running" is what the
 * table says (state 'running': leased, started or not, by any worker), a
 * claim takes at most the rest, two claims of a name never overlap, and
 * a dead worker's slots come back with its leases.  An unlimited worker
 * reads the (empty) table once per claim, as it does the paused names.
 *   PARTITIONS (store.h, limit): a limit with `by` counts the running
 * jobs of each partition apart (scheduler.part(by, key, payload), read
 * from the job at claim time), under the same lock on the name's limit
 * row: the same argument holds per partition.  A claim of a partitioned
 * name walks the (partition, priority) pairs of its waiting jobs through
 * jobs_part (scheduler.part_heads, migration 17: the partition is the
 * job's column part, which the claim checks against the job), takes in
 * each pair its first due jobs up to the partition's allowance (a: free
 * slots, cap, max), numbers them within their partition in claim order
 * (rn) and takes those with rn within the allowance, in rounds (rn) and
 * within a round from the partition after the name's turn (wrap: at or
 * before it), in byte order (PICK_ORDER): round-robin across partitions;
 * the claim then moves the turn to the partition of its last job
 * (NEXT_TURN), under the same lock.  `cap` (NULL: none) bounds the jobs
 * of one name or partition in a claim: 1 for a worker that runs its
 * batch in turn (which takes one job of its limited names a claim).
 *   RATES (store.h, limit: RATES): limit_free's free is also at most the
 * whole tokens of the name's bucket (migration 16), at the clock it read
 * after the lock, and each claim spends what it took (RATE_TAKE) in the
 * same statement, so under the same lock.
 *   AT_LIMIT(job) says, without the lock, that the limit (of its
 * partition) of a due job is full (written out in Q_CLAIM, whose text
 * bench/run.lua reads): for the choices that only decide whether to
 * look (a quarantined job that waits for a slot holds no claim back).
 * scheduler.at_limit (migration 16) says as much, and also when a rate's
 * bucket is empty (store.h, limit: RATES).  next_wake uses its own test
 * (store_pg_wake.c). */
#define AT_LIMIT(job)                                                                        \
  "EXISTS (SELECT 1 FROM scheduler.limits l WHERE l.name = " job ".name"                    \
  "  AND l.concurrency <= (SELECT count(*) FROM scheduler.jobs r"                           \
  "    WHERE r.state = 'running' AND r.name = l.name AND (l.by IS NULL"                    \
  "      OR scheduler.part(l.by, r.key, r.payload)"                                          \
  "        = scheduler.part(l.by, " job ".key, " job ".payload))))"

/* Some of names $1 are limited: a one-time filter, so that a worker none
 * of whose names is limited calls no limit_free (a function call) but
 * reads the limits' index once. */
#define SOME_LIMITED "EXISTS (SELECT 1 FROM scheduler.limits s WHERE s.name = ANY ($1::text[]))"

/* The due jobs of limited names $1 that a claim may take, under the lock
 * of their limits (see LIMITS): at most `free` of each name (or of each
 * partition), at most `cap` of each (NULL: no cap) and at most `max` in
 * all; columns id, priority, rn (the job's rank in its partition, 1 for
 * a name without), run_at.  Quarantined jobs are left to Q_CLAIM_ONE, a
 * dead worker's held batch (d) is skipped as in Q_CLAIM. */
#define LIMITED_PICK(max, cap)                                                               \
  "lf AS MATERIALIZED ("                                                                     \
  " SELECT f.limited, f.by, f.part, f.free, f.turn FROM scheduler.limit_free($1::text[]) f"  \
  " WHERE " SOME_LIMITED                                                                     \
  " AND f.limited <> ALL (ARRAY(SELECT z.name FROM scheduler.paused z))"                     \
  "), cw AS ("                                                                               \
  " SELECT x.id, x.priority, 1::bigint AS rn, false AS wrap, NULL::text AS part, x.run_at"   \
  " FROM lf CROSS JOIN LATERAL ("                                                            \
  " SELECT j.id, j.priority, j.run_at FROM scheduler.jobs j"                                 \
  " WHERE j.state = 'scheduled' AND j.name = lf.limited AND j.run_at <= now()"               \
  " AND NOT j.quarantined AND j.id <> ALL (ARRAY(SELECT d.id FROM d))"                       \
  " ORDER BY j.priority, j.run_at, j.id LIMIT least(lf.free, " cap ", " max ")"              \
  " FOR UPDATE SKIP LOCKED) x WHERE lf.by IS NULL AND lf.free > 0"                           \
  "), cr AS ("                                                                               \
  " SELECT y.id, y.priority, y.run_at, y.part, y.rn, y.a, lf.limited,"                       \
  " NOT coalesce(y.part > lf.turn COLLATE \"C\", true) AS wrap"                              \
  " FROM lf CROSS JOIN LATERAL (SELECT v.*, row_number() OVER ("                             \
  " PARTITION BY v.part ORDER BY v.priority, v.run_at, v.id) AS rn FROM ("                   \
  " SELECT h.*, greatest(0, least(" cap ", " max ", coalesce(p.free, lf.free))) AS a"        \
  " FROM scheduler.part_heads(lf.limited) h LEFT JOIN lf p ON p.limited = lf.limited"        \
  " AND p.part = h.part) h CROSS JOIN LATERAL ("                                             \
  " SELECT j.id, j.priority, j.run_at, j.part, h.a FROM scheduler.jobs j"                    \
  " WHERE j.state = 'scheduled' AND j.name = lf.limited AND j.part = h.part"                 \
  " AND j.priority = h.priority AND j.run_at <= now() AND NOT j.quarantined"                 \
  " AND j.id <> ALL (ARRAY(SELECT d.id FROM d))"                                             \
  " AND j.part = scheduler.part(lf.by, j.key, j.payload)"                                    \
  " ORDER BY j.run_at, j.id LIMIT h.a) v) y WHERE lf.by IS NOT NULL AND lf.part IS NULL"     \
  "), cp AS ("                                                                               \
  " SELECT cr.id, cr.priority, cr.rn, cr.wrap, cr.part, cr.limited FROM cr"                  \
  " WHERE cr.rn <= cr.a"                                                                      \
  " ORDER BY cr.priority, cr.rn, cr.wrap, cr.part COLLATE \"C\", cr.run_at, cr.id"           \
  " LIMIT " max                                                                              \
  "), cl AS ("                                                                               \
  " SELECT * FROM cw UNION ALL SELECT y.* FROM ("                                            \
  " SELECT j.id, j.priority, cp.rn, cp.wrap, cp.part, j.run_at FROM cp"                      \
  " JOIN scheduler.jobs j ON j.id = cp.id"                                                   \
  " WHERE j.state = 'scheduled' FOR UPDATE OF j SKIP LOCKED) y"                              \
  ")" /* The claim order of LIMITED_PICK's rows (k) among others (c0: rn 1, no
 * wrap or part): round by round, within a round from the turn on. */
#define PICK_ORDER(k)                                                                        \
  k ".priority, " k ".rn, " k ".wrap, " k ".part COLLATE \"C\" NULLS FIRST, " k ".run_at, "  \
  k ".id" /* Move the turn of each partitioned name to the partition of the last
 * job (in claim order) that update u took (see LIMITS: round-robin). */
#define NEXT_TURN                                                                            \
  "tu AS (UPDATE scheduler.limits l SET turn = x.part FROM ("                                \
  " SELECT DISTINCT ON (cp.limited) cp.limited, cp.part FROM cp JOIN u ON u.id = cp.id"      \
  " ORDER BY cp.limited, cp.priority DESC, cp.rn DESC, cp.wrap DESC,"                        \
  " cp.part COLLATE \"C\" DESC) x WHERE l.name = x.limited)"

/* Spend the tokens of the rate limits (store.h, limit: RATES) of the
 * jobs update u claimed of limited names (lf: one row each, part NULL):
 * scheduler.rate_hold (migration 18) moves their buckets on, under the
 * lock limit_free took (u took no more than the tokens: limit_free's
 * free), and says when each job's token is due (rt).  res: u's rows with
 * that hold (0: none), the claim's result.  Called only when u took a
 * job of a name with a rate: a claim of names without limits (lf empty),
 * or that took none of them, or of names limited by concurrency alone,
 * makes no call (a plpgsql call is not free: the no-op drain's claims are
 * of names without limits, and it was a seventh of a claim's time on 100
 * partitions). */
#define RATE_TAKE                                                                            \
  "rt AS (SELECT r.job, r.hold FROM (SELECT array_agg(u.id) AS i FROM u"                    \
  " JOIN lf ON lf.limited = u.name AND lf.part IS NULL AND EXISTS (SELECT 1"                 \
  " FROM scheduler.limits rl WHERE rl.name = lf.limited AND rl.rate IS NOT NULL)) a"         \
  " CROSS JOIN LATERAL scheduler.rate_hold(a.i) r WHERE a.i IS NOT NULL),"                   \
  " res AS (SELECT u.*, coalesce(rt.hold, 0) AS hold FROM u LEFT JOIN rt ON rt.job = u.id)"

/* Claim and delete, in the caller's transaction (BEGIN comes first),
 * the due jobs in (priority, run_at, id) order: the delete is each
 * job's one row write, and nobody else sees it before the commit that
 * ends the claim transaction (after Q_PUT_BACK for the jobs that stay
 * and Q_COMPLETED).  Until then the rows are locked: other claims skip
 * them, and if this worker dies its transaction aborts and they are
 * back at once.  The recursive part walks the distinct priorities
 * through jobs_due, so each priority is an index range (run_at up to
 * the statement's time: the transaction may be older) however many
 * future jobs wait; rows are found by ctid (TID scans: no index
 * lookups).  The walk starts at 0, the default and lowest priority,
 * without looking: each step past a priority is then an index range
 * that starts after that priority's entries.  Looking for the lowest one
 * would read jobs_due from its first entry, and the entries of another
 * client's uncommitted insert, invisible but read all the same, come
 * first when no visible job is ahead of them: during a schedule_many of
 * 1,000,000 jobs due later, a claim that found nothing read them all
 * (140 ms).  The walk still reads those of a priority above 0, until it
 * finds a visible job at or past them.
 *   $3-$5: for a claim ahead, the last job the transaction claimed
 * (priority, run_at, id), NULL for its first claim.  That priority's
 * index range starts there, past the entries of the rows the
 * transaction deleted (see CLAIM AHEAD).
 *   Quarantined jobs are not batched (see CRASHES): they are claimed
 * alone (Q_CLAIM_ONE), and while one of this worker's names has any due,
 * this claim takes nothing, so that the next claim takes them first.
 *   The jobs of a batch whose worker died are not claimed (d: its
 * record's, while its worker's WORKER_LOCK is free; $6 is this worker)
 * until a rescue has found that batch and put them in quarantine (see
 * CRASHES): its transaction aborted, so they are free again at once, and
 * a claim in between would take them in a batch again, the one that
 * killed it among them.  d is read once per claim, as an array (an
 * IN over it was a subplan run for every row: 0.3 ms a claim of 500): a
 * few microseconds when no worker died (the lock of each other worker's
 * record tried and, when free, let go at once).
 *   Jobs of a paused name (scheduler.paused: store.h, pause) are not
 * claimed, nor do their quarantined ones hold the claim back; the table
 * is read once per claim, as an array like d (empty: a few microseconds).
 * Nor are those of a limited name (LIMITS above), read in the same array;
 * column 11 says whether some of the names are limited.
 *   Column 10 is the claim's token, one per batch: its sequence is read
 * only when a job is returned.
 *   Rows come in TID order (the caller sorts them), in binary (see
 * read_claimed): as text, printing the numbers and times of 500 rows
 * took the server about 0.5 ms of a 3 ms claim transaction (pgbench,
 * every column against the id alone). */
const pg_query pgq_claim = {Q_CLAIM, "scheduler_claim", 6,
    "WITH RECURSIVE pr(p) AS ("
    "  SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM scheduler.jobs q WHERE q.quarantined"
    "    AND q.state = 'scheduled' AND q.run_at <= statement_timestamp()"
    "    AND q.name = ANY ($1)" /* not the slot pg_prepare_claim fills */
    "    AND q.name <> ALL (ARRAY(SELECT z.name FROM scheduler.paused z))"
    "    AND NOT EXISTS (SELECT 1 FROM scheduler.limits l WHERE l.name = q.name" /* AT_LIMIT */
    "      AND l.concurrency <= (SELECT count(*) FROM scheduler.jobs r"
    "        WHERE r.state = 'running' AND r.name = l.name AND (l.by IS NULL"
    "          OR scheduler.part(l.by, r.key, r.payload)"
    "            = scheduler.part(l.by, q.key, q.payload)))))"
    "  UNION ALL"
    "  SELECT (SELECT j.priority FROM scheduler.jobs j WHERE j.state = 'scheduled'"
    "          AND j.priority > pr.p ORDER BY j.priority LIMIT 1)"
    "  FROM pr WHERE pr.p IS NOT NULL"
    "), d AS MATERIALIZED ("
    "  SELECT unnest(b.ids) AS id FROM scheduler.batches b WHERE b.worker <> $6"
    "    AND " WORKER_GONE
    "), c AS MATERIALIZED ("
    "  SELECT c.t FROM pr CROSS JOIN LATERAL ("
    "    SELECT j.ctid AS t FROM scheduler.jobs j"
    "    WHERE j.state = 'scheduled' AND j.priority = pr.p"
    "      AND j.run_at <= statement_timestamp() AND j.name = ANY ($1::text[])"
    "      AND (j.run_at, j.id) > (CASE WHEN pr.p = $3::integer"
    "        THEN to_timestamp($4::float8) ELSE '-infinity' END,"
    "        CASE WHEN pr.p = $3::integer THEN $5::bigint"
    "        ELSE '-9223372036854775808'::bigint END)"
    "      AND NOT j.quarantined AND j.id <> ALL (ARRAY(SELECT d.id FROM d))"
    "      AND j.name <> ALL (ARRAY(SELECT z.name FROM scheduler.paused z"
    "        UNION ALL SELECT l.name FROM scheduler.limits l))" /* see LIMITS */
    "      AND scheduler.some_free($1::text[])"
    "    ORDER BY j.run_at, j.id LIMIT $2 FOR UPDATE SKIP LOCKED) c"
    "  WHERE pr.p IS NOT NULL LIMIT $2"
    "), tok AS MATERIALIZED (SELECT nextval('scheduler.claim_tokens') AS t,"
    /* whether some of the names are limited (see LIMITS) */
    "  EXISTS (SELECT 1 FROM scheduler.limits l WHERE l.name = ANY ($1)) AS lim"
    ") DELETE FROM scheduler.jobs j WHERE j.ctid = ANY (ARRAY(SELECT c.t FROM c))"
    " RETURNING j.id, j.name, j.payload, j.run_at, j.attempt + 1, j.max_attempts,"
    "  j.key, j.priority, j.last_error, j.created_at, (SELECT tok.t FROM tok),"
    "  (SELECT tok.lim FROM tok)"};

/* Quarantined jobs, leased to $2 for $3 seconds with their attempt
 * counted (committed before they run: if one alone crashes its worker, it
 * was the one).  At most $4 of them: 1 for a worker that runs one job at
 * a time (alone); a concurrent worker passes its free slots and takes half
 * the suspects of the first one's crash (by halves: if they crash it
 * together, the rescue sends them back as suspects of a crash half that
 * size).  The same columns as Q_CLAIM's, in binary. */
const pg_query pgq_claim_one = {Q_CLAIM_ONE, "scheduler_claim_one", 4,
    "WITH lf AS MATERIALIZED (SELECT * FROM scheduler.limit_free($1::text[])"
    "  WHERE " SOME_LIMITED
    "), f AS ("
    "  SELECT coalesce(q.suspects, 1) AS s FROM scheduler.jobs q WHERE q.quarantined"
    "    AND q.state = 'scheduled' AND q.run_at <= now() AND q.name = ANY ($1::text[])"
    "    AND q.name <> ALL (ARRAY(SELECT z.name FROM scheduler.paused z))"
    "    AND NOT EXISTS (SELECT 1 FROM lf WHERE lf.limited = q.name AND lf.free <= 0"
    "      AND (lf.by IS NULL OR lf.part = scheduler.part(lf.by, q.key, q.payload)))"
    "  ORDER BY q.priority, q.run_at, q.id LIMIT 1"
    "), c AS ("
    "  SELECT q.id FROM scheduler.jobs q WHERE q.quarantined"
    "    AND q.state = 'scheduled' AND q.run_at <= now() AND q.name = ANY ($1::text[])"
    "    AND q.name <> ALL (ARRAY(SELECT z.name FROM scheduler.paused z))"
    "    AND NOT EXISTS (SELECT 1 FROM lf WHERE lf.limited = q.name AND lf.free <= 0"
    "      AND (lf.by IS NULL OR lf.part = scheduler.part(lf.by, q.key, q.payload)))"
    "  ORDER BY q.priority, q.run_at, q.id"
    /* a limited name (or partition) gets no more than its free slots:
     * with one free somewhere, no more than the fewest (quarantine is
     * rare) */
    "  LIMIT (SELECT least($4::integer, greatest(1, (f.s + 1) / 2),"
    "    coalesce((SELECT min(lf.free) FROM lf WHERE lf.free > 0), $4::integer)) FROM f)"
    "  FOR UPDATE SKIP LOCKED"
    "), tok AS MATERIALIZED (SELECT nextval('scheduler.claim_tokens') AS t"
    "), u AS (UPDATE scheduler.jobs j SET state = 'running', attempt = j.attempt + 1,"
    "  claim = (SELECT tok.t FROM tok), locked_by = $2,"
    "  locked_until = now() + $3::float8 * interval '1 second'"
    " FROM c WHERE j.id = c.id"
    " RETURNING j.id, j.name, j.payload, j.run_at, j.attempt, j.max_attempts,"
    "  j.key, j.priority, j.last_error, j.created_at, j.claim, j.locked_until"
    "), " RATE_TAKE " SELECT res.* FROM res"};

/* The claim of a worker that runs several jobs at once (store.h,
 * claim_leased): up to $3 due jobs of names $1, not quarantined, leased
 * to $2 with their attempt counted and one new token, until $4 (Unix
 * seconds; NULL: now + $5 seconds).  Jobs of a dead worker's held batch
 * are skipped as in Q_CLAIM.  One row at least: column 13 ("due") says
 * whether a quarantined job of the names is due (then the others are NULL
 * when nothing was claimed).  Columns 0-10 as Q_CLAIM's, 11 the lease's
 * expiry, 12 ("hold") the seconds until the job may start (RATE_TAKE);
 * binary. */
const pg_query pgq_claim_leased = {Q_CLAIM_LEASED, "scheduler_claim_leased", 5,
    "WITH d AS MATERIALIZED ("
    " SELECT unnest(b.ids) AS id FROM scheduler.batches b WHERE b.worker <> $2"
    " AND " WORKER_GONE
    "), c0 AS ("
    " SELECT j.id, j.priority, j.run_at FROM scheduler.jobs j WHERE j.state = 'scheduled'"
    " AND j.run_at <= now() AND j.name = ANY ($1::text[]) AND NOT j.quarantined"
    " AND j.id <> ALL (ARRAY(SELECT d.id FROM d))"
    " AND j.name <> ALL (ARRAY(SELECT z.name FROM scheduler.paused z"
    " UNION ALL SELECT l.name FROM scheduler.limits l)) AND scheduler.some_free($1)"
    " ORDER BY j.priority, j.run_at, j.id LIMIT $3 FOR UPDATE SKIP LOCKED"
    "), " LIMITED_PICK("$3", "NULL::integer") ", c AS ("
    /* (rows locked and not taken are let go with the commit) */
    " SELECT k.id FROM (SELECT c0.id, c0.priority, 1::bigint AS rn, false AS wrap,"
    " NULL::text AS part, c0.run_at FROM c0 UNION ALL SELECT * FROM cl) k"
    " ORDER BY " PICK_ORDER("k") " LIMIT $3"
    "), tok AS MATERIALIZED (SELECT nextval('scheduler.claim_tokens') AS t"
    "), u AS ("
    " UPDATE scheduler.jobs j SET state = 'running', attempt = j.attempt + 1,"
    " claim = (SELECT tok.t FROM tok), locked_by = $2,"
    " locked_until = coalesce(to_timestamp($4::float8),"
    " now() + $5::float8 * interval '1 second')"
    " FROM c WHERE j.id = c.id"
    " RETURNING j.id, j.name, j.payload, j.run_at, j.attempt, j.max_attempts,"
    " j.key, j.priority, j.last_error, j.created_at, j.claim, j.locked_until"
    "), " NEXT_TURN ", " RATE_TAKE
    " SELECT res.*, q.due FROM (SELECT scheduler.quarantine_due($1) AS due) q"
    " LEFT JOIN res ON true"};

/* The claim of a worker that runs one job at a time (pg_claim) for its
 * limited names (see LIMITS): up to $4 due jobs of them (1: one, the next
 * partition's in turn), at most one of each name or partition, leased to $2 for $3 seconds with their attempt
 * counted and one new token (the parameters of Q_CLAIM_ONE).  The same
 * columns as Q_CLAIM_ONE's, in binary. */
const pg_query pgq_claim_limited = {Q_CLAIM_LIMITED, "scheduler_claim_limited", 4,
    "WITH d AS MATERIALIZED ("
    "  SELECT unnest(b.ids) AS id FROM scheduler.batches b WHERE b.worker <> $2"
    "    AND " WORKER_GONE
    "), " LIMITED_PICK("$4::integer", "1") ", c AS ("
    "  SELECT cl.id FROM cl ORDER BY " PICK_ORDER("cl") " LIMIT $4"
    "), tok AS MATERIALIZED (SELECT nextval('scheduler.claim_tokens') AS t"
    "), u AS (UPDATE scheduler.jobs j SET state = 'running', attempt = j.attempt + 1,"
    "  claim = (SELECT tok.t FROM tok), locked_by = $2,"
    "  locked_until = now() + $3::float8 * interval '1 second'"
    " FROM c WHERE j.id = c.id"
    " RETURNING j.id, j.name, j.payload, j.run_at, j.attempt, j.max_attempts,"
    "  j.key, j.priority, j.last_error, j.created_at, j.claim, j.locked_until"
    "), " NEXT_TURN ", " RATE_TAKE " SELECT res.* FROM res"};

/* The jobs of a claim transaction that are done: their delete is the
 * claim's, so only the completions are left to count (names $1, counts
 * $2), with its commit. */
static const pg_query pgq_completed = {Q_COMPLETED, "scheduler_completed", 2,
    "WITH done_counts AS (SELECT u.name, sum(u.n)::integer AS jobs"
    "  FROM unnest($1::text[], $2::integer[]) AS u(name, n) GROUP BY u.name)"
    COUNT_DONE
    " SELECT (SELECT count(*) FROM counted)"};

/* The jobs of a held batch that stay: as claimed (the claim deleted
 * them), with their new state, attempt, run_at (now + $5 when not
 * NULL: the statement's time, the transaction may be older) and last
 * error; the running ones leased to $13 for $14 seconds, on the claim
 * $15; $16 marks those given back unattempted, which a cancel request
 * drops.  Due ones wake the sleeping workers (on commit); the insert
 * trigger's own notifications are not needed. */
static const pg_query pgq_put_back = {Q_PUT_BACK, "scheduler_put_back", 16,
    "WITH quiet AS (SELECT set_config('scheduler.notified', 'on', true)),"
    /* given back unattempted ($16) with a cancel request: dropped */
    " gone AS (UPDATE scheduler.cancels c SET verdict = 'cancelled'"
    "  FROM unnest($1::bigint[], $16::boolean[]) AS g(id, back)"
    "  WHERE c.job_id = g.id AND g.back AND c.verdict IS NULL RETURNING c.job_id),"
    " back AS ("
    "  INSERT INTO scheduler.jobs (id, name, payload, run_at, priority, attempt,"
    "    max_attempts, state, key, locked_by, locked_until, last_error, created_at,"
    "    claim)"
    "  SELECT b.id, b.name, b.payload::jsonb, CASE WHEN b.delay IS NULL"
    "    THEN to_timestamp(b.run_at) ELSE statement_timestamp() + b.delay * interval"
    "    '1 second' END,"
    "    b.priority, b.attempt, b.max_attempts, b.state, b.key,"
    "    CASE WHEN b.state = 'running' THEN $13 END,"
    "    CASE WHEN b.state = 'running' THEN statement_timestamp() + $14::float8"
    "      * interval '1 second' END,"
    "    b.error, to_timestamp(b.created_at),"
    "    CASE WHEN b.state = 'running' THEN $15::bigint END"
    "  FROM quiet, unnest($1::bigint[], $2::text[], $3::text[], $4::float8[],"
    "    $5::float8[], $6::integer[], $7::integer[], $8::integer[], $9::text[],"
    "    $10::text[], $11::text[], $12::float8[]) AS b(id, name, payload, run_at,"
    "    delay, priority, attempt, max_attempts, state, key, error, created_at)"
    "  WHERE b.id NOT IN (SELECT gone.job_id FROM gone)"
    "  RETURNING state, run_at"
    ") SELECT (SELECT count(*) FROM back),"
    "  (SELECT " WAKE_EVERYONE " FROM back WHERE state = 'scheduled'"
    "   HAVING count(*) > 0)"};

/* The settings of a claim's transaction (see pg_prepare_claim).  Without JIT:
 * the generic plan does not know the LIMIT, so its estimated cost is
 * high enough for PostgreSQL to compile it at every run, ten times as long
 * as running it. */
#define CLAIM_SETTING_LIST                                                                   \
  "set_config('plan_cache_mode', 'force_generic_plan', true),"                               \
  " set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true),"       \
  " set_config('enable_incremental_sort', 'off', true), set_config('jit', 'off', true)"
#define CLAIM_SETTINGS "SELECT " CLAIM_SETTING_LIST

/* The statement before a leased claim (Q_CLAIM_LIMITED, Q_CLAIM_LEASED,
 * Q_CLAIM_ONE), in its segment (one implicit transaction, which the
 * settings last for): the settings, and the lock on the limits of names
 * $1 (see LIMITS), in the order limit_free takes it.
 *   The settings: the claims read scheduler.limit_free and walk a limited
 * name's jobs in a LATERAL (see LIMITS): without them the estimate of a
 * sequential scan and a sort per limited name (never run when no name is
 * limited) made PostgreSQL compile the statement (JIT) at every run: 260
 * ms a claim on a table of 50,000 jobs.  The same as a held claim's
 * (CLAIM_SETTINGS): a generic plan (planned once), walking an index in
 * claim order.
 *   The lock comes before the claim's statement, not in it (limit_free
 * takes it again, at no cost): a statement reads the table as it was when
 * it began (READ COMMITTED), and a claim that waited in it for the lock
 * saw the jobs the claim before it took as still waiting.  It picked them,
 * found them taken when it came to lock them, and went without: on 100
 * partitions of 2, a quarter of the claims took nothing and others less
 * than was free.  The claim's own statement now begins once the lock is
 * its own.
 *   The claim's transaction waits for a lock at most $2 (lock_timeout,
 * set in the walk of the limits, before the first lock: a quarter of the
 * lease, a second at most, lock_wait_text): another client's transaction that holds a
 * limit's row (an operator's UPDATE left open) would otherwise hold the
 * worker's connection, and a worker that runs several jobs at once renews
 * their leases between its claims: past the lease they would run again
 * beside themselves.  A claim cut short so takes nothing (run_leased; the
 * held claim's look at its limited names fails, and its loop retries). */
static const pg_query pgq_lease_settings = {Q_LEASE_SETTINGS, "scheduler_lease_settings", 2,
    "WITH lk AS (SELECT l.name FROM scheduler.limits l WHERE l.name = ANY ($1::text[])"
    "  AND set_config('lock_timeout', $2, true) IS NOT NULL ORDER BY l.name FOR UPDATE)"
    " SELECT " CLAIM_SETTING_LIST ", (SELECT count(*) FROM lk),"
    /* the claim's now() for the session (next_wake: drained) */
    "  set_config('scheduler.claimed_at', now()::text, false)"};

/* pgq_lease_settings' $2 for a lease of `lease` seconds, in milliseconds:
 * a quarter of it, LOCK_WAIT_MAX at most (a worker so held writes no end
 * and renews no lease: it tries again after that, and does those in
 * between), 1 at least.  Far above the claims' own turns on the lock
 * (milliseconds). */
#define LOCK_WAIT_MAX 1.0
static const char *lock_wait_text(double lease, char *out, size_t size) {
  double ms = fmin(lease / 4, LOCK_WAIT_MAX) * 1000;
  snprintf(out, size, "%.0f", ms < 1 ? 1 : ms);
  return out;
}

/* Run leased claim q (values) after pgq_lease_settings, in one round trip,
 * waiting for a lock at most lock_wait_text(lease).  A wait cut short is no
 * error: *r is NULL (nothing claimed; the fetcher looks again soon, and
 * renews its leases meanwhile). */
static int run_leased(pg_store *p, const pg_query *q, const char *const *values, double lease,
                      PGresult **r) {
  *r = NULL;
  int rc = pg_idle(p);
  if (rc == STORE_OK) rc = pg_connect(&p->base);
  if (rc == STORE_OK) rc = pg_prepare(p, &pgq_lease_settings);
  if (rc == STORE_OK) rc = pg_prepare(p, q);
  if (rc) return rc;
  char wait[32];
  const char *lock[2] = {values[0], lock_wait_text(lease, wait, sizeof wait)};
  /* awake: give SLEEP_LOCK back first (see there), in the same round trip:
   * given back even if the claim fails (an advisory lock is not undone by
   * a rollback), or gone with the connection, as in pg_claim */
  const step steps[3] = {STEP_SQL("SELECT pg_advisory_unlock_shared(" SLEEP_LOCK ")"),
                         STEP_QUERY(&pgq_lease_settings, lock), STEP_QUERY(q, values)};
  int from = p->sleep_locked ? 0 : 1;
  p->lock_timed_out = 0;
  rc = pg_pipeline(p, steps + from, 3 - from, 2 - from, r);
  p->sleep_locked = 0;
  if (rc == STORE_ERROR && p->lock_timed_out) rc = STORE_OK; /* (the wait cut short) */
  return rc;
}

/* Prepare the claim for this worker's names.  Its plan is made once (a
 * generic plan: planning it takes about as long as running it) and kept
 * until the table's statistics change (autovacuum's ANALYZE makes the
 * server plan it again), so it must stay good at both ends of a queue
 * that swings between empty and huge.  The transaction that runs it
 * allows no sequential scan and no sort: every plan walks an index in
 * claim order, and reads about as many entries as it claims, whatever the
 * statistics said when it was made (a sort would read every due job of
 * the names at every claim).  The names are in its text as a constant
 * instead of its $1 (unused, typed text[]); one name is an equality, so
 * that jobs_wake (name, run_at, id) is in claim order too, and a worker
 * whose name is rare among the due jobs walks its own jobs, not every due
 * job ahead of them.  Several names walk jobs_due. */
int pg_prepare_claim(pg_store *p) {
  if (p->claim_names_changed && (p->prepared & PREPARED_BIT(Q_CLAIM))) {
    int rc = pg_exec_simple(p, "claiming", "DEALLOCATE scheduler_claim", NULL);
    if (rc) return rc;
    p->prepared &= ~PREPARED_BIT(Q_CLAIM);
  }
  p->claim_names_changed = 0;
  if (p->prepared & PREPARED_BIT(Q_CLAIM)) return STORE_OK;
  static const char slot[] = "= ANY ($1::text[])";
  const char *sql = pgq_claim.sql, *at = strstr(sql, slot);
  int one = p->n_names == 1;
  char *names = one ? PQescapeLiteral(p->conn, p->names[0], p->name_lens[0])
                    : PQescapeLiteral(p->conn, buf_cstr(&p->names_literal), p->names_literal.len);
  if (!names || !at) {
    if (names) PQfreemem(names);
    return store_fail(&p->base, STORE_NOMEM, "not enough memory");
  }
  buf text = BUF_INIT;
  int err = buf_add(&text, sql, (size_t)(at - sql)) | buf_adds(&text, one ? "= " : "= ANY (") |
            buf_adds(&text, names) | buf_adds(&text, one ? "::text" : "::text[])") |
            buf_adds(&text, at + sizeof slot - 1);
  PQfreemem(names);
  if (err) {
    buf_free(&text);
    return store_fail(&p->base, STORE_NOMEM, "not enough memory");
  }
  const Oid types[6] = {1009 /* text[] */, 0, 0, 0, 0, 0};
  PGresult *r = PQprepare(p->conn, pgq_claim.name, buf_cstr(&text), 6, types);
  buf_free(&text);
  if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) return pg_fail_result(p, "preparing", r);
  PQclear(r);
  p->prepared |= PREPARED_BIT(Q_CLAIM);
  return STORE_OK;
}

/* A claim's result is binary (Q_CLAIM): big-endian integers; timestamps
 * are microseconds since 2000-01-01 UTC, +-infinity the extreme int64s;
 * jsonb is a version byte (1), then the JSON text. */
#define PG_EPOCH_MICROS 946684800000000LL

static int64_t bin_int(PGresult *r, int row, int col) {
  const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
  int n = PQgetlength(r, row, col);
  uint64_t x = n > 0 && (v[0] & 0x80) ? UINT64_MAX : 0; /* sign-extended */
  for (int i = 0; i < n; i++) x = x << 8 | v[i];
  return (int64_t)x;
}

/* Unix seconds of a binary timestamp (one rounding: exact microseconds
 * fit a double's integers). */
static double bin_time(PGresult *r, int row, int col) {
  int64_t us = bin_int(r, row, col);
  if (us == INT64_MAX) return INFINITY;
  if (us == INT64_MIN) return -INFINITY;
  return (double)(us + PG_EPOCH_MICROS) / 1e6;
}

/* The same timestamp as exact Unix seconds text, for to_timestamp(). */
static const char *bin_time_text(PGresult *r, int row, int col, char *out, size_t size) {
  int64_t us = bin_int(r, row, col);
  if (us == INT64_MAX || us == INT64_MIN) return us > 0 ? "Infinity" : "-Infinity";
  int64_t u = us + PG_EPOCH_MICROS;
  unsigned long long a = u < 0 ? 0ULL - (unsigned long long)u : (unsigned long long)u;
  snprintf(out, size, "%s%llu.%06llu", u < 0 ? "-" : "", a / 1000000, a % 1000000);
  return out;
}

/* A binary float8. */
static double bin_float(PGresult *r, int row, int col) {
  uint64_t x = (uint64_t)bin_int(r, row, col);
  double d;
  memcpy(&d, &x, sizeof d);
  return d;
}

/* Fill j from row `row` of a claim's result: the run this claim starts.
 * Its column "hold" (RATE_TAKE), if it has one, at `hold`; else -1. */
static void read_claimed(PGresult *r, int row, int hold, store_job *j) {
  j->id = bin_int(r, row, 0);
  j->name = value_or_null(r, row, 1, &j->name_len);
  j->payload = value_or_null(r, row, 2, &j->payload_len);
  if (j->payload && j->payload_len > 0) j->payload++, j->payload_len--; /* jsonb version */
  j->run_at = bin_time(r, row, 3);
  j->attempt = bin_int(r, row, 4);
  j->max_attempts = PQgetisnull(r, row, 5) ? 0 : bin_int(r, row, 5);
  j->key = value_or_null(r, row, 6, &j->key_len);
  j->priority = bin_int(r, row, 7);
  j->state = "running";
  j->last_error = NULL;
  j->last_error_len = 0;
  j->token = bin_int(r, row, 10);
  j->hold = hold >= 0 && !PQgetisnull(r, row, hold) ? bin_float(r, row, hold) : 0;
  if (!(j->hold > 0)) j->hold = 0; /* (NaN: 0) */
}

/* The claim transaction is still ours: same connection, still open.
 * Otherwise it is gone, and its jobs run again. */
static int batch_alive(pg_store *p) {
  int gone = p->held_lost ||
             (p->tx != TX_IDLE &&
              (!p->conn || PQstatus(p->conn) != CONNECTION_OK ||
               (p->syncs == 0 && PQtransactionStatus(p->conn) != PQTRANS_INTRANS)));
  if (!gone) return STORE_OK;
  if (p->conn && PQstatus(p->conn) != CONNECTION_OK) pg_disconnect(&p->base);
  size_t n = p->held_lost ? p->held_lost : p->tx_jobs;
  p->held_lost = 0;
  return store_fail(&p->base, STORE_DOWN,
                    "the database connection was lost with %zu jobs claimed and not "
                    "committed; they will run again",
                    n);
}

/* A claim transaction could not be committed (rc from the statement that
 * failed): its claims are undone, or are with the rollback, so its n jobs
 * run again.  Say so, once. */
static int batch_failed(pg_store *p, size_t n, int rc) {
  p->held_lost = 0;
  if (rc == STORE_NOMEM) return rc;
  buf why = BUF_INIT;
  buf_add(&why, p->base.err.data ? p->base.err.data : "", p->base.err.len);
  store_fail(&p->base, rc,
             "the outcomes of %zu claimed jobs were not committed (%s); they will run again", n,
             buf_cstr(&why));
  buf_free(&why);
  return rc;
}

/* Forget the claim transaction and roll it back: its jobs run again. */
void pg_rollback(pg_store *p) {
  tx_to(p, TX_IDLE);
  buf_reset(&p->verdicts); /* their jobs are back: the requests wait on */
  buf_reset(&p->done[0]);
  buf_reset(&p->done[1]);
  p->next.n = 0;
  p->tx_jobs = 0;
  pg_discard_pipeline(p);
  if (p->conn && PQstatus(p->conn) == CONNECTION_OK &&
      PQtransactionStatus(p->conn) != PQTRANS_IDLE) {
    PGresult *r = PQexec(p->conn, "ROLLBACK");
    if (r) PQclear(r);
  }
  pg_unrecord(p);
}

/* The connection is gone, and the claim transaction with it: the database
 * unlocks its rows, and they run again (nothing crashed: see CRASHES).  A
 * batch in hand is said lost at the next finish or settle. */
void pg_tx_lost(pg_store *p) {
  if (tx_holds(p)) p->held_lost = p->tx_jobs;
  tx_to(p, TX_IDLE);
  p->next.n = 0;
  buf_reset(&p->verdicts);
  p->tx_jobs = 0;
  buf_reset(&p->done[0]);
  buf_reset(&p->done[1]);
}

/* Claim order: (priority, run_at, id). */
static int cmp_claim_order(const store_job *x, const store_job *y) {
  if (x->priority != y->priority) return x->priority < y->priority ? -1 : 1;
  if (x->run_at != y->run_at) return x->run_at < y->run_at ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_run_order(const void *a, const void *b) {
  return cmp_claim_order(&((const claimed *)a)->job, &((const claimed *)b)->job);
}

/* Room for a batch of n jobs in b: 0 or -1. */
static int reserve_batch(batch *b, size_t n) {
  if (n <= b->cap) return 0;
  store_job *jobs = realloc(b->jobs, n * sizeof *jobs);
  if (jobs) b->jobs = jobs;
  int *row = jobs ? realloc(b->row, n * sizeof *row) : NULL;
  if (row) b->row = row;
  long *fate = row ? realloc(b->fate, n * sizeof *fate) : NULL;
  if (fate) b->fate = fate;
  claimed *sorted = fate ? realloc(b->sorted, n * sizeof *sorted) : NULL;
  if (sorted) b->sorted = sorted;
  if (!sorted) return -1;
  b->cap = n;
  return 0;
}

static void free_batch(batch *b) {
  clear(&b->res);
  free(b->jobs);
  free(b->row);
  free(b->fate);
  free(b->sorted);
}

/* Take the claim's result r (rows > 0) as batch b: its jobs in run order.
 * STORE_OK, or STORE_NOMEM (r cleared). */
static int hold_batch(pg_store *p, batch *b, PGresult *r) {
  size_t rows = (size_t)PQntuples(r);
  if (reserve_batch(b, rows)) {
    PQclear(r);
    return store_fail(&p->base, STORE_NOMEM, "not enough memory for a batch of %zu jobs", rows);
  }
  size_t last = 0;
  claimed *sorted = b->sorted;
  int hold = PQfnumber(r, "hold");
  for (size_t i = 0; i < rows; i++) {
    read_claimed(r, (int)i, hold, &sorted[i].job);
    sorted[i].row = (int)i;
    if (cmp_claim_order(&sorted[i].job, &sorted[last].job) > 0) last = i;
  }
  snprintf(b->bound[0], sizeof b->bound[0], "%lld", sorted[last].job.priority);
  bin_time_text(r, (int)last, 3, b->bound[1], sizeof b->bound[1]);
  snprintf(b->bound[2], sizeof b->bound[2], "%lld", (long long)sorted[last].job.id);
  qsort(sorted, rows, sizeof *sorted, cmp_run_order);
  for (size_t i = 0; i < rows; i++) {
    b->jobs[i] = sorted[i].job;
    b->row[i] = sorted[i].row;
  }
  clear(&b->res);
  b->res = r;
  b->n = rows;
  b->token = rows ? b->jobs[0].token : 0;
  return STORE_OK;
}

/* What ends each job of a batch (its fate): an outcome (its index), a
 * lease, or nothing yet (it goes back as it was, to run again). */
#define FATE_RELEASED (-1L)
#define FATE_LEASED (-2L)

/* The index in batch b of the job with this id, looking from `from` on
 * (outcomes come in batch order); -1 if none. */
static long batch_index(const batch *b, int64_t id, size_t from) {
  for (size_t k = 0; k < b->n; k++) {
    size_t i = (from + k) % b->n;
    if (b->jobs[i].id == id) return (long)i;
  }
  return -1;
}

/* The fates of b's jobs: outcome o[k] for its job, a lease for the claims
 * `keep`, the others go back.  Outcomes and leases of another claim (a
 * stale token) are not this batch's. */
static void set_fates(batch *b, const store_outcome *o, size_t n_o, const store_claim *keep,
                      size_t n_keep) {
  for (size_t i = 0; i < b->n; i++) b->fate[i] = FATE_RELEASED;
  size_t from = 0;
  for (size_t k = 0; k < n_o; k++) {
    long i = o[k].claim.token == b->token ? batch_index(b, o[k].claim.id, from) : -1;
    if (i >= 0) b->fate[i] = (long)k, from = (size_t)i + 1;
  }
  for (size_t k = 0; k < n_keep; k++) {
    long i = keep[k].token == b->token ? batch_index(b, keep[k].id, from) : -1;
    if (i >= 0) b->fate[i] = FATE_LEASED, from = (size_t)i + 1;
  }
}

/* Add the completions of the done jobs of batch t to the claim
 * transaction's: p->done, Q_COMPLETED's arrays (names, counts; runs of one
 * name counted together), written with its commit.  0 or -1. */
static int count_done(pg_store *p, const batch *t, const store_outcome *o) {
  buf *b = p->done;
  int err = 0;
  const store_job *run_of = NULL;
  long long count = 0;
  for (size_t i = 0; i <= t->n && !err; i++) {
    const store_job *j = NULL;
    if (i < t->n && t->fate[i] >= 0 && o[t->fate[i]].kind == OUTCOME_DONE) j = &t->jobs[i];
    if (run_of && (i == t->n || (j && (j->name_len != run_of->name_len ||
                                       memcmp(j->name, run_of->name, j->name_len))))) {
      for (int k = 0; k < 2; k++) {
        if (b[k].len)
          b[k].data[b[k].len - 1] = ','; /* "{...}" reopened */
        else
          err |= buf_addc(&b[k], '{');
      }
      err |= add_array_text(&b[0], run_of->name, run_of->name_len) | add_int(&b[1], count) |
             buf_addc(&b[0], '}') | buf_addc(&b[1], '}');
      run_of = NULL;
    }
    if (j && !run_of) run_of = j, count = 0;
    if (j) count++;
  }
  return err;
}

/* Q_PUT_BACK's arrays (b[0]-b[12]) for the jobs of batch t that stay;
 * *n = how many.  The cancelled ones stay deleted: their ids join
 * p->verdicts (answered with the commit). */
static int put_back_arrays(pg_store *p, const batch *t, const store_outcome *o, buf *b,
                           size_t *n) {
  PGresult *r = t->res;
  int err = 0;
  for (int k = 0; k < 13; k++) err |= buf_addc(&b[k], '{');
  *n = 0;
  for (size_t i = 0; i < t->n && !err; i++) {
    long f = t->fate[i];
    const store_outcome *x = f >= 0 ? &o[f] : NULL;
    if (x && x->kind == OUTCOME_CANCELLED) err |= add_to_array(&p->verdicts, t->jobs[i].id);
    if (x && (x->kind == OUTCOME_DONE || x->kind == OUTCOME_CANCELLED)) continue;
    int row = t->row[i], first = *n == 0;
    const store_job *j = &t->jobs[i];
    int failed = x && (x->kind == OUTCOME_RETRY || x->kind == OUTCOME_FAILED);
    /* snoozed: waits again with its attempt given back, but it ran: not
     * "given back" to a cancel request (as a retry) */
    int snoozed = x && x->kind == OUTCOME_SNOOZE;
    /* two buffers: the operands of | below are not sequenced */
    char num[64], delay[64], created[64];
    const char *state = f == FATE_LEASED                        ? "running"
                        : x && x->kind == OUTCOME_FAILED ? "failed"
                                                         : "scheduled";
    /* a failed attempt and a lease keep the attempt as claimed; a job
     * given back was not attempted, nor was a snoozed one counted */
    long long attempt = failed || f == FATE_LEASED ? j->attempt : j->attempt - 1;
    if (!first)
      for (int k = 0; k < 13; k++) err |= buf_addc(&b[k], ',');
    err |= buf_adds(&b[12], !failed && !snoozed && f != FATE_LEASED ? "t" : "f"); /* given back */
    err |= add_int(&b[0], j->id) | add_text_or_null(&b[1], j->name, j->name_len) |
           add_text_or_null(&b[2], j->payload, j->payload_len) |
           buf_adds(&b[3], bin_time_text(r, row, 3, num, sizeof num)) |
           buf_adds(&b[4], x && (x->kind == OUTCOME_RETRY || snoozed)
                               ? fmt_seconds(x->retry_in, delay, sizeof delay)
                               : "NULL") |
           add_int(&b[5], j->priority) | add_int(&b[6], attempt) |
           (j->max_attempts > 0 ? add_int(&b[7], j->max_attempts) : buf_adds(&b[7], "NULL")) |
           buf_adds(&b[8], state) | add_text_or_null(&b[9], j->key, j->key_len) |
           buf_adds(&b[11], bin_time_text(r, row, 9, created, sizeof created));
    if (failed) {
      err |= add_text_or_null(&b[10], buf_cstr(&x->error), x->error.len);
    } else {
      size_t len;
      const char *e = value_or_null(r, row, 8, &len);
      err |= add_text_or_null(&b[10], e, len);
    }
    (*n)++;
  }
  for (int k = 0; k < 13; k++) err |= buf_addc(&b[k], '}');
  return err;
}

/* The end of batch t (fates set) in its transaction: its done jobs are
 * counted (count_done), and a step (Q_PUT_BACK, added to steps[*n]) puts
 * back those that stay, the claims to keep leased to `worker` for `lease`
 * seconds on the batch's claim.  Array literals in b[0]-b[12]; the
 * parameter list in v (16 entries; text in `text`, 96 bytes).  STORE_OK or
 * STORE_NOMEM. */
static int end_steps(pg_store *p, const batch *t, const store_outcome *o, double lease,
                     const char *worker, buf *b, const char **v, char *text, step *steps,
                     int *n) {
  size_t n_back;
  for (int k = 0; k < 13; k++) buf_reset(&b[k]);
  if ((o && count_done(p, t, o)) || put_back_arrays(p, t, o, b, &n_back))
    return store_fail(&p->base, STORE_NOMEM, "not enough memory");
  for (int k = 0; k < 12; k++) v[k] = buf_cstr(&b[k]);
  v[12] = worker ? worker : "";
  v[13] = fmt_seconds(lease, text, 64);
  snprintf(text + 64, 32, "%lld", (long long)t->token);
  v[14] = text + 64;
  v[15] = buf_cstr(&b[12]);
  if (n_back) steps[(*n)++] = STEP_QUERY(&pgq_put_back, v);
  return STORE_OK;
}

/* History (store_pg_history.c): the jobs of batch t (fates set) whose
 * outcome in o[0, n_o) keeps them, one row: a step (Q_HISTORY_PUT,
 * parameters in v, 4 entries) added to steps[*n] when there is any.
 * Nothing at all when no outcome asks for history.  STORE_OK or
 * STORE_NOMEM. */
static int history_step(pg_store *p, const batch *t, const store_outcome *o, size_t n_o,
                        const char **v, step *steps, int *n) {
  size_t k = 0;
  while (k < n_o && !(o[k].keep > 0)) k++;
  if (k == n_o) return STORE_OK;
  pg_history_row h = {0, 0, 0, 0};
  buf *b = p->hist;
  for (int i = 0; i < 4; i++) buf_reset(&b[i]);
  int err = buf_addc(&b[0], '[');
  for (size_t i = 0; i < t->n && !err; i++) {
    long f = t->fate[i];
    if (f < 0) continue;
    size_t len;
    const char *e = value_or_null(t->res, t->row[i], 8, &len); /* its last error */
    err |= pg_history_add(&b[0], &t->jobs[i], e, len, &o[f], &h);
  }
  char num[64];
  err |= buf_addc(&b[0], ']') | buf_printf(&b[1], "%lld", (long long)h.min_id) |
         buf_printf(&b[2], "%lld", (long long)h.max_id) |
         buf_adds(&b[3], fmt_seconds(h.keep, num, sizeof num));
  if (err) return store_fail(&p->base, STORE_NOMEM, "not enough memory");
  if (!h.count) return STORE_OK;
  for (int i = 0; i < 4; i++) v[i] = buf_cstr(&b[i]);
  v[4] = p->worker ? p->worker : "";
  steps[(*n)++] = STEP_QUERY(&pgq_history_put, v);
  return STORE_OK;
}

/* Read the claim ahead's result into `next`.  On failure the transaction
 * is rolled back and its jobs run again. */
static int collect_ahead(pg_store *p) {
  if (p->tx != TX_AHEAD) return STORE_OK;
  size_t jobs = p->tx_jobs; /* a lost connection forgets them */
  PGresult *r = NULL;
  int rc = tx_to(p, TX_HELD);
  if (rc == STORE_OK) rc = pg_read_segment(p, 1, 0, &r);
  p->next.n = 0;
  if (rc == STORE_OK && PQntuples(r) == 0)
    PQclear(r);
  else if (rc == STORE_OK)
    rc = hold_batch(p, &p->next, r);
  if (rc == STORE_OK) {
    p->tx_jobs += p->next.n;
    return STORE_OK;
  }
  pg_rollback(p);
  return batch_failed(p, jobs, rc);
}

/* End the claim transaction: of the batch in hand (if held), the jobs with
 * an outcome in o are written (the done ones stay deleted and are
 * counted), the claims `keep` leased to `worker` for `lease` seconds, and
 * every other one goes back as it was; so does the batch claimed ahead.
 * The transaction's records go with its commit (see CRASHES): one round
 * trip. */
static int end_tx(pg_store *p, const store_outcome *o, size_t n_o, const store_claim *keep,
                  size_t n_keep, double lease, const char *worker) {
  int rc = batch_alive(p);
  if (rc == STORE_OK) rc = collect_ahead(p);
  if (rc != STORE_OK) return rc;
  size_t jobs = p->tx_jobs; /* a lost connection forgets them */
  pg_rec_wait(p); /* its record must be in before the commit drops it */
  step steps[7];
  int n = 0;
  const char *v[2][16], *hv[12];
  char text[2][96];
  if (tx_holds(p)) {
    set_fates(&p->cur, o, n_o, keep, n_keep);
    rc = end_steps(p, &p->cur, o, lease, worker, p->p, v[0], text[0], steps, &n);
    if (rc == STORE_OK && o) rc = history_step(p, &p->cur, o, n_o, hv, steps, &n);
  }
  if (rc == STORE_OK && p->next.n) {
    set_fates(&p->next, NULL, 0, NULL, 0);
    rc = end_steps(p, &p->next, NULL, 0, NULL, p->p + 13, v[1], text[1], steps, &n);
  }
  const char *done[2] = {buf_cstr(&p->done[0]), buf_cstr(&p->done[1])};
  if (p->done[0].len) steps[n++] = STEP_QUERY(&pgq_completed, done);
  const char *tokens[1] = {buf_cstr(&p->tx_tokens)};
  if (p->tx_tokens.len) steps[n++] = STEP_QUERY(&pgq_unrecord, tokens); /* see CRASHES */
  const char *verdict[2] = {buf_cstr(&p->verdicts), "cancelled"};
  if (p->verdicts.len) steps[n++] = STEP_QUERY(&pgq_verdict, verdict); /* see CANCELS */
  PGresult *r = NULL;
  steps[n++] = STEP_SQL("COMMIT");
  if (rc == STORE_OK) rc = pg_pipeline(p, steps, n, -1, &r);
  if (rc == STORE_OK) {
    tx_to(p, TX_IDLE);
    p->next.n = 0;
    p->tx_jobs = 0;
    buf_reset(&p->done[0]);
    buf_reset(&p->done[1]);
    buf_reset(&p->tx_tokens);
    buf_reset(&p->verdicts);
    p->recorded = 0;
    return STORE_OK;
  }
  pg_rollback(p);
  return batch_failed(p, jobs, rc);
}

/* End the claim transaction if it is open between batches. */
static int close_tx(pg_store *p) {
  return p->tx == TX_OPEN ? end_tx(p, NULL, 0, NULL, 0, 0, NULL) : STORE_OK;
}

/* Make the connection free for a statement of its own (see CLAIM AHEAD). */
int pg_idle(pg_store *p) {
  if (tx_holds(p))
    /* the caller must settle first: this would join the batch's transaction */
    return store_fail(&p->base, STORE_ERROR, "internal error: a statement inside a batch");
  return close_tx(p);
}

/* Claim the next batch ahead, in this transaction, when the batch in hand
 * was full and the transaction may grow (see CLAIM AHEAD).  A failure to
 * send loses the connection, and the batch in hand with it (finish says
 * so): STORE_OK all the same.  An error is a move refused (see THE
 * STATES). */
static int claim_ahead(pg_store *p, size_t limit) {
  if (p->cur.n < limit || p->quiet || p->tx_batches >= TX_MAX_BATCHES ||
      clock_mono() - p->tx_start >= TX_MAX_AGE)
    return STORE_OK;
  /* the end of the batch in hand is sent behind it: prepared first */
  if (pg_prepare(p, &pgq_put_back) || pg_prepare(p, &pgq_unrecord)) return STORE_OK;
  const char *values[6] = {buf_cstr(&p->names_literal), p->limit, p->cur.bound[0],
                           p->cur.bound[1], p->cur.bound[2], p->worker};
  step claim = STEP_QUERY(&pgq_claim, values);
  if (pg_send_segment(p, &claim, 1) != STORE_OK) return STORE_OK;
  int rc = tx_to(p, TX_AHEAD);
  if (rc == STORE_OK) p->tx_batches++;
  return rc;
}

/* Claim one quarantined job alone as a lease if any is due (see CRASHES),
 * else a batch in a claim transaction, recorded before it is handed out.
 * Both claims go in one round trip; a batch claimed beside a quarantined
 * job goes back untouched (its claim transaction rolls back). */
int pg_claim(store *s, size_t limit, double lease, const char *worker,
             long long default_max_attempts, store_job **jobs, size_t *n) {
  pg_store *p = PG(s);
  (void)default_max_attempts; /* crashes are charged by rescue */
  *n = 0;
  *jobs = NULL;
  /* a batch never finished: the jobs of its transaction run again */
  if (tx_holds(p)) pg_rollback(p);
  if (!p->worker || strcmp(p->worker, worker) != 0) {
    char *w = strdup(worker);
    if (!w) return store_fail(s, STORE_NOMEM, "not enough memory");
    free(p->worker);
    p->worker = w;
  }
  snprintf(p->limit, sizeof p->limit, "%zu", limit);
  if (p->tx == TX_OPEN) { /* (its claim ahead is read: never TX_AHEAD here) */
    int rc;
    if (p->next.n > 0) {
      /* claimed ahead: in hand once recorded */
      size_t jobs_in_tx = p->tx_jobs;
      batch t = p->cur;
      p->cur = p->next;
      p->next = t;
      p->next.n = 0;
      rc = tx_to(p, TX_HELD);
      if (rc == STORE_OK) rc = pg_record_batch(p, &p->cur);
      if (rc == STORE_OK) rc = claim_ahead(p, limit);
      if (rc) {
        pg_rollback(p);
        return batch_failed(p, jobs_in_tx, rc);
      }
      *jobs = p->cur.jobs;
      *n = p->cur.n;
      return STORE_OK;
    }
    /* nothing more past the bound (or a quarantined job came due): commit,
     * then claim afresh */
    p->quarantine_look = 1;
    rc = close_tx(p);
    if (rc) return rc;
  }
  char leasetext[64];
  const char *one[4] = {buf_cstr(&p->names_literal), p->worker,
                        fmt_seconds(lease, leasetext, sizeof leasetext), "1"};
  const char *values[6] = {buf_cstr(&p->names_literal), p->limit, NULL, NULL, NULL, p->worker};
  /* (Q_CLAIM_ONE alone: its plan is cheap, and it runs after every claim
   * transaction of a backlog) */
  const step quarantined[1] = {STEP_QUERY(&pgq_claim_one, one)};
  /* one job of a limited name at a time: the loop runs its batch in turn,
   * and a slot taken by a job waiting in it would run nothing (LIMITS);
   * the partitions of a name take turns */
  char wait[32];
  const char *lock[2] = {one[0], lock_wait_text(lease, wait, sizeof wait)};
  const step limited[2] = {STEP_QUERY(&pgq_lease_settings, lock), STEP_QUERY(&pgq_claim_limited, one)};
  /* see pg_prepare_claim */
  const step steps[4] = {STEP_SQL("SELECT pg_advisory_unlock_shared(" SLEEP_LOCK ")"),
                         STEP_SQL("BEGIN"), STEP_SQL(CLAIM_SETTINGS),
                         STEP_QUERY(&pgq_claim, values)};
  PGresult *r = NULL, *alone = NULL;
  int rc = pg_connect(s);
  if (rc == STORE_OK && !p->worker_locked) {
    const char *who[1] = {worker};
    rc = pg_run(p, &pgq_worker_lock, who, &r);
    if (rc == STORE_OK) {
      clear(&r);
      p->worker_locked = 1;
    }
  }
  /* the record connection (see CRASHES) gets ready while this one claims
   * (run{drain = true}; run() started it with this one) */
  if (rc == STORE_OK) pg_rec_start(p);
  pg_rec_advance(p);
  if (rc == STORE_OK) rc = pg_prepare(p, &pgq_claim_one);
  if (rc == STORE_OK) rc = pg_prepare(p, &pgq_claim_limited);
  if (rc == STORE_OK) rc = pg_prepare(p, &pgq_lease_settings);
  if (rc == STORE_OK && (p->claim_names_changed || !(p->prepared & PREPARED_BIT(Q_CLAIM))))
    rc = pg_prepare_claim(p);
  /* Quarantined jobs are looked for (Q_CLAIM_ONE) only while some may wait:
   * at first, and after a claim that found nothing (Q_CLAIM takes nothing
   * while one is due, so one found by another worker's rescue blocks the
   * next claim, and the one after looks). */
  int look = p->quarantine_look;
  /* The jobs of limited names (LIMITS) are claimed first, as leases, in
   * a statement of their own (committed at once); then the batch goes
   * back untouched.  Not beside a look for a quarantined job, which is
   * leased too and must run alone: then only once both found nothing. */
  PGresult *lim = NULL;
  /* A worker none of whose names is limited (as its last fresh claim
   * said, and while it claims) does not look: on a drain that look would
   * cost the claims a few percent.  A name limited since is skipped by
   * Q_CLAIM, which says so; the worker then looks from its next fresh
   * claim (or the next look for a quarantined job). */
  int ask = look || p->limits_near;
  if (rc == STORE_OK) {
    /* awake: give SLEEP_LOCK back (see there) */
    int from = p->sleep_locked ? 0 : 1;
    if (ask) rc = pg_send_segment(p, look ? quarantined : limited, look ? 1 : 2);
    if (rc == STORE_OK) rc = pg_send_segment(p, steps + from, 4 - from);
    if (rc == STORE_OK && ask)
      rc = pg_read_segment(p, look ? 1 : 2, look ? 0 : 1, look ? &alone : &lim);
    if (rc == STORE_OK) rc = pg_read_segment(p, 4 - from, 3 - from, &r);
    /* given back even if the claim failed (the unlock comes first), or
     * gone with the connection */
    p->sleep_locked = 0;
  }
  if (rc == STORE_OK && lim && PQntuples(lim) > 0) {
    clear(&r);
    pg_rollback(p); /* the batch goes back untouched */
    rc = hold_batch(p, &p->cur, lim);
    if (rc) return rc;
    *jobs = p->cur.jobs;
    *n = p->cur.n;
    return STORE_OK;
  }
  clear(&lim);
  if (rc != STORE_OK) {
    clear(&alone);
    pg_rollback(p);
    return rc;
  }
  if (look && PQntuples(alone) == 0) p->quarantine_look = 0;
  if (look && PQntuples(alone) > 0) {
    /* a quarantined job, leased (TX_IDLE): alone, so the batch goes back
     * untouched */
    clear(&r);
    pg_rollback(p);
    rc = hold_batch(p, &p->cur, alone);
    if (rc) return rc;
    *jobs = p->cur.jobs;
    *n = p->cur.n;
    return STORE_OK;
  }
  clear(&alone);
  if (PQntuples(r) == 0) {
    clear(&r); /* nothing due, or a quarantined job is */
    p->quarantine_look = 1;
    rc = pg_exec_simple(p, "ending a claim", "SET LOCAL synchronous_commit = off; COMMIT", NULL);
    if (rc != STORE_OK || !look) return rc;
    /* looked for a quarantined job instead: the limited names now */
    rc = pg_pipeline(p, limited, 2, 1, &lim);
    if (rc != STORE_OK) return rc;
    if (PQntuples(lim) == 0) {
      clear(&lim);
      return STORE_OK;
    }
    rc = hold_batch(p, &p->cur, lim);
    if (rc) return rc;
    *jobs = p->cur.jobs;
    *n = p->cur.n;
    return STORE_OK;
  }
  p->limits_near = PQgetlength(r, 0, 11) == 1 && PQgetvalue(r, 0, 11)[0];
  rc = hold_batch(p, &p->cur, r);
  if (rc == STORE_OK) rc = pg_record_batch(p, &p->cur);
  if (rc == STORE_OK) rc = tx_to(p, TX_HELD);
  if (rc != STORE_OK) {
    pg_rollback(p); /* undoes the claim: they run again */
    return rc;
  }
  p->tx_jobs = p->cur.n;
  p->tx_batches = 1;
  p->tx_start = clock_mono();
  if (p->quiet) p->quiet--;
  rc = claim_ahead(p, limit);
  if (rc != STORE_OK) {
    pg_rollback(p);
    return batch_failed(p, p->cur.n, rc);
  }
  *jobs = p->cur.jobs;
  *n = p->cur.n;
  return STORE_OK;
}

int pg_held(store *s) { return tx_holds(PG(s)); }

/* Exact Unix seconds text of t, to the microsecond (a lease's expiry
 * passed back must name the very same instant: see claim_leased). */
static const char *micros_text(double t, char *out, size_t size) {
  long long us = llround(t * 1e6);
  unsigned long long a = us < 0 ? 0ULL - (unsigned long long)us : (unsigned long long)us;
  snprintf(out, size, "%s%llu.%06llu", us < 0 ? "-" : "", a / 1000000, a % 1000000);
  return out;
}

int pg_claim_leased(store *s, size_t limit, double lease, double *until, const char *worker,
                    int alone, store_job **jobs, size_t *n, int *quarantine) {
  pg_store *p = PG(s);
  *jobs = NULL;
  *n = 0;
  *quarantine = 0;
  int rc = pg_idle(p); /* never held here; ends a transaction left open */
  if (rc == STORE_OK) rc = pg_connect(s);
  if (rc) return rc;
  if (p->n_names == 0 || limit == 0) return STORE_OK;
  p->leases_only = 1; /* no batch is ever held: no record connection (see CRASHES) */
  PGresult *r = NULL;
  if (!p->worker_locked) {
    /* abandon() must see this worker alive (WORKER_LOCK) */
    const char *who[1] = {worker};
    rc = pg_run(p, &pgq_worker_lock, who, &r);
    if (rc) return rc;
    clear(&r);
    p->worker_locked = 1;
  }
  char leasetext[64], untiltext[64], limittext[32];
  fmt_seconds(lease, leasetext, sizeof leasetext);
  snprintf(limittext, sizeof limittext, "%zu", limit);
  if (alone) {
    const char *one[4] = {buf_cstr(&p->names_literal), worker, leasetext, limittext};
    rc = run_leased(p, &pgq_claim_one, one, lease, &r);
    if (rc || !r) return rc;
    if (PQntuples(r) > 0) {
      *until = bin_time(r, 0, 11);
      *quarantine = 2;
      rc = hold_batch(p, &p->cur, r);
      if (rc) return rc;
      *jobs = p->cur.jobs;
      *n = p->cur.n;
      return STORE_OK;
    }
    clear(&r);
  }
  const char *values[5] = {buf_cstr(&p->names_literal), worker, limittext,
                           *until > 0 ? micros_text(*until, untiltext, sizeof untiltext) : NULL,
                           leasetext};
  rc = run_leased(p, &pgq_claim_leased, values, lease, &r);
  if (rc || !r) return rc;
  int rows = PQntuples(r);
  int due = PQfnumber(r, "due");
  if (rows > 0 && due >= 0) *quarantine = PQgetlength(r, 0, due) == 1 && PQgetvalue(r, 0, due)[0] ? 1 : 0;
  if (rows == 0 || PQgetisnull(r, 0, 0)) {
    clear(&r);
    return STORE_OK;
  }
  *until = bin_time(r, 0, 11);
  rc = hold_batch(p, &p->cur, r);
  if (rc) return rc;
  *jobs = p->cur.jobs;
  *n = p->cur.n;
  return STORE_OK;
}

/* The end of the batch in hand, whose successor was claimed ahead: its
 * outcomes are written in the transaction, which stays open; the claim
 * ahead's result is read. */
static int finish_ahead(pg_store *p, const store_outcome *o, size_t n_o) {
  int rc = batch_alive(p);
  if (rc) return rc;
  step steps[2];
  int n = 0;
  const char *v[16], *hv[12];
  char text[96];
  set_fates(&p->cur, o, n_o, NULL, 0);
  rc = end_steps(p, &p->cur, o, 0, NULL, p->p, v, text, steps, &n);
  if (rc == STORE_OK) rc = history_step(p, &p->cur, o, n_o, hv, steps, &n);
  size_t jobs = p->tx_jobs; /* a lost connection forgets them */
  if (rc == STORE_OK && n) rc = pg_send_segment(p, steps, n);
  if (rc == STORE_OK) {
    rc = collect_ahead(p); /* rolls back on failure */
    if (rc != STORE_OK) return rc;
    jobs = p->tx_jobs;
  }
  PGresult *r = NULL;
  if (rc == STORE_OK && n) rc = pg_read_segment(p, n, -1, &r);
  if (rc != STORE_OK) {
    pg_rollback(p);
    return batch_failed(p, jobs, rc);
  }
  rc = tx_to(p, TX_OPEN);
  if (rc != STORE_OK) {
    pg_rollback(p);
    return batch_failed(p, jobs, rc);
  }
  return STORE_OK;
}

int pg_settle(store *s, const store_outcome *done, size_t n_done, const store_claim *keep,
              size_t n_keep, double lease, const char *worker) {
  pg_store *p = PG(s);
  if (!tx_holds(p) && !p->held_lost) return STORE_OK;
  p->quiet = QUIET_AFTER_SETTLE;
  return end_tx(p, done, n_done, keep, n_keep, lease, worker);
}

int pg_finish(store *s, const store_outcome *o, size_t n) {
  pg_store *p = PG(s);
  if (p->tx == TX_AHEAD) return finish_ahead(p, o, n);
  if (tx_holds(p) || p->held_lost) return end_tx(p, o, n, NULL, 0, 0, NULL);
  if (n == 0) return close_tx(p);
  return pg_finish_leases(p, o, n); /* not held: leases (see store_pg_crash.c) */
}

void pg_tx_destroy(pg_store *p) {
  if (!tx_holds(p)) close_tx(p); /* the batch claimed ahead goes back unattempted */
  free_batch(&p->cur);
  free_batch(&p->next);
}
