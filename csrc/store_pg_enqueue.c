/*
 * store_pg_enqueue.c: putting jobs in: schedule() of one job, schedule_many,
 * and recurring schedules (their declarations, and the compare-and-set that
 * turns each slot into one job).  A statement that commits at once wakes
 * sleeping workers only when there are any (see SLEEP_LOCK in
 * store_pg_wake.c).
 */
#include "store_pg_internal.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

static const pg_query pgq_schedule = {Q_SCHEDULE, "scheduler_schedule", 7,
    "SELECT scheduler.schedule($1, $2::jsonb,"
    " CASE WHEN $3::float8 IS NOT NULL THEN to_timestamp($3::float8)"
    " ELSE now() + coalesce($4::float8, 0) * interval '1 second' END,"
    " $5, $6::integer, $7::integer)"};

/* A job without a key: no key to look up, so a plain INSERT (the
 * function above costs a PL/pgSQL call and an ON CONFLICT check), which
 * sends its own wake-up instead of the trigger's (migration 5), and
 * only when a worker sleeps (SLEEP_LOCK). */
/* The job's partition (PART_OF: store.h, limit: PARTITIONS; migration
 * 17) is written with the row, not after it by the trigger jobs_part:
 * the row once, not twice. */
#define PART_OF(name, payload)                                                               \
  "(SELECT scheduler.part(l.by, NULL, " payload ") FROM scheduler.limits l"                  \
  " WHERE l.name = " name " AND l.by IS NOT NULL)"
static const pg_query pgq_insert = {Q_INSERT, "scheduler_insert", 6,
    "INSERT INTO scheduler.jobs (name, payload, run_at, priority, max_attempts, part)"
    " VALUES ($1, $2::jsonb, CASE WHEN $3::float8 IS NOT NULL"
    "  THEN to_timestamp($3::float8) ELSE now() + coalesce($4::float8, 0) *"
    "  interval '1 second' END, $5::integer, $6::integer, " PART_OF("$1", "$2::jsonb") ")"
    /* evaluated as the row is inserted: before the trigger */
    " RETURNING id, set_config('scheduler.notified', 'on', true),"
    "  CASE WHEN NOT pg_try_advisory_xact_lock(" SLEEP_LOCK ") THEN"
    "  pg_notify('scheduler', extract(epoch FROM run_at)::text || ' ' ||"
    "  CASE WHEN octet_length(name) <= 1000 THEN name ELSE '' END) END"};

/* Jobs without a key in one set-based INSERT (their ids come back in
 * insertion order, which is input order); keyed ones through
 * scheduler.schedule() for its key semantics.  ord 0 marks the former.
 * One wake-up per name (for more than 16 names one for everyone),
 * instead of the trigger's (the row of ord -1 counts them): with $8
 * (a statement that commits at once) only while a worker sleeps,
 * otherwise always (see SLEEP_LOCK).  The lock is tried last, once
 * the rows are written: the woken row comes last in the UNION ALL. */
static const pg_query pgq_schedule_many = {Q_SCHEDULE_MANY, "scheduler_schedule_many", 8,
    "WITH quiet AS (SELECT set_config('scheduler.notified', 'on', true)),"
    " input AS (SELECT t.*, CASE WHEN t.at IS NOT NULL THEN to_timestamp(t.at)"
    "  ELSE now() + coalesce(t.delay, 0) * interval '1 second' END AS run_at"
    "  FROM quiet, unnest($1::text[], $2::text[], $3::float8[], $4::float8[],"
    "  $5::text[], $6::integer[], $7::integer[])"
    "  WITH ORDINALITY AS t(name, payload, at, delay, key, priority,"
    "  max_attempts, ord)),"
    " plain AS (INSERT INTO scheduler.jobs (name, payload, run_at, priority,"
    "  max_attempts, part) SELECT i.name, i.payload::jsonb, i.run_at, i.priority,"
    "  i.max_attempts, scheduler.part(l.by, NULL, i.payload::jsonb) FROM input i"
    "  LEFT JOIN scheduler.limits l ON l.name = i.name AND l.by IS NOT NULL"
    "  WHERE i.key IS NULL ORDER BY i.ord RETURNING id),"
    " woken AS (SELECT CASE WHEN CASE WHEN $8::boolean"
    "  THEN pg_try_advisory_xact_lock(" SLEEP_LOCK ") END"
    "  THEN 0 ELSE (SELECT count(*) FROM ("
    "   SELECT pg_notify('scheduler', extract(epoch FROM min(i.run_at))::text"
    "    || ' ' || CASE WHEN octet_length(i.name) <= 1000 THEN i.name ELSE ''"
    "    END) FROM input i GROUP BY i.name"
    "   HAVING (SELECT count(DISTINCT name) FROM input) <= 16"
    "   UNION ALL SELECT pg_notify('scheduler', extract(epoch FROM"
    "    min(i.run_at))::text || ' ') FROM input i"
    "   HAVING count(DISTINCT i.name) > 16) w) END AS n)"
    " SELECT 0::bigint, id FROM plain UNION ALL"
    " SELECT ord, scheduler.schedule(name, payload::jsonb, run_at, key, priority,"
    "  max_attempts) FROM input WHERE key IS NOT NULL"
    " UNION ALL SELECT -1, n FROM woken"};

int pg_schedule(store *s, const store_new_job *j, int64_t *id) {
  pg_store *p = PG(s);
  if (memchr(j->name, 0, j->name_len))
    return store_fail(s, STORE_ERROR, "the name contains a NUL byte, which PostgreSQL cannot store");
  if (j->key && memchr(j->key, 0, j->key_len))
    return store_fail(s, STORE_ERROR, "the key contains a NUL byte, which PostgreSQL cannot store");
  if (j->payload_has_nul)
    return store_fail(s, STORE_ERROR,
                      "the payload contains a NUL byte (\\u0000), which PostgreSQL cannot store");
  char at[64], delay[64], prio[32], maxa[32];
  snprintf(prio, sizeof prio, "%lld", j->priority);
  snprintf(maxa, sizeof maxa, "%lld", j->max_attempts);
  const char *values[7] = {j->name,
                           j->payload,
                           j->has_at ? fmt_seconds(j->at, at, sizeof at) : NULL,
                           j->has_delay ? fmt_seconds(j->delay, delay, sizeof delay) : NULL,
                           j->key,
                           prio,
                           j->max_attempts > 0 ? maxa : NULL};
  const char *plain[6] = {values[0], values[1], values[2], values[3], values[5], values[6]};
  PGresult *r = NULL;
  int rc = j->key ? pg_run(p, &pgq_schedule, values, &r) : pg_run(p, &pgq_insert, plain, &r);
  if (rc) return rc;
  *id = parse_int(PQgetvalue(r, 0, 0));
  PQclear(r);
  return STORE_OK;
}

/* Rows per schedule_many statement: bounds the size of one message. */
#define MANY_CHUNK 10000

static int cmp_id(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* One chunk: jobs[0, n) -> ids; `alone`: its statement commits at once
 * (see SLEEP_LOCK). */
static int many_chunk(pg_store *p, const store_new_job *jobs, size_t n, int64_t *ids, int alone) {
  buf *b = p->p;
  int err = 0;
  char num[64];
  for (int i = 0; i < 7; i++) {
    buf_reset(&b[i]);
    err |= buf_addc(&b[i], '{');
  }
  size_t plain = 0;
  for (size_t i = 0; i < n && !err; i++) {
    const store_new_job *j = &jobs[i];
    if (i)
      for (int k = 0; k < 7; k++) err |= buf_addc(&b[k], ',');
    err |= add_array_text(&b[0], j->name, j->name_len);
    err |= j->payload ? add_array_text(&b[1], j->payload, j->payload_len) : buf_adds(&b[1], "NULL");
    err |= buf_adds(&b[2], j->has_at ? fmt_seconds(j->at, num, sizeof num) : "NULL");
    err |= buf_adds(&b[3], j->has_delay ? fmt_seconds(j->delay, num, sizeof num) : "NULL");
    err |= j->key ? add_array_text(&b[4], j->key, j->key_len) : buf_adds(&b[4], "NULL");
    err |= add_int(&b[5], j->priority);
    err |= j->max_attempts > 0 ? add_int(&b[6], j->max_attempts) : buf_adds(&b[6], "NULL");
    if (!j->key) plain++;
  }
  for (int i = 0; i < 7; i++) err |= buf_addc(&b[i], '}');
  if (err) return store_fail(&p->base, STORE_NOMEM, "not enough memory");
  const char *values[8];
  for (int i = 0; i < 7; i++) values[i] = buf_cstr(&b[i]);
  values[7] = alone ? "true" : "false";
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_schedule_many, values, &r);
  if (rc) return rc;
  /* keyed rows carry their 1-based position; the plain ids, sorted, go to
   * the keyless jobs in order */
  int64_t *plain_ids = malloc((plain ? plain : 1) * sizeof *plain_ids);
  if (!plain_ids) {
    PQclear(r);
    return store_fail(&p->base, STORE_NOMEM, "not enough memory");
  }
  size_t got = 0;
  for (int row = 0; row < PQntuples(r); row++) {
    long long ord = parse_int(PQgetvalue(r, row, 0));
    int64_t id = parse_int(PQgetvalue(r, row, 1));
    if (ord == 0 && got < plain)
      plain_ids[got++] = id;
    else if (ord >= 1 && (size_t)ord <= n)
      ids[ord - 1] = id;
  }
  PQclear(r);
  qsort(plain_ids, got, sizeof *plain_ids, cmp_id);
  for (size_t i = 0, k = 0; i < n && k < got; i++)
    if (!jobs[i].key) ids[i] = plain_ids[k++];
  free(plain_ids);
  return got == plain ? STORE_OK : store_fail(&p->base, STORE_ERROR, "schedule_many: ids missing");
}

int pg_schedule_many(store *s, const store_new_job *jobs, size_t n, int64_t *ids) {
  pg_store *p = PG(s);
  for (size_t i = 0; i < n; i++) {
    const store_new_job *j = &jobs[i];
    if (memchr(j->name, 0, j->name_len) || (j->key && memchr(j->key, 0, j->key_len)) ||
        j->payload_has_nul)
      return store_fail(s, STORE_ERROR,
                        "job %zu: a NUL byte in its name, key or payload, which PostgreSQL "
                        "cannot store",
                        i + 1);
  }
  if (n <= MANY_CHUNK) return n ? many_chunk(p, jobs, n, ids, 1) : STORE_OK;
  /* one transaction: every statement notifies (see SLEEP_LOCK) */
  int rc = pg_idle(p);
  if (rc == STORE_OK) rc = pg_connect(s);
  if (rc == STORE_OK) rc = pg_exec_simple(p, "schedule_many", "BEGIN", NULL);
  for (size_t at = 0; rc == STORE_OK && at < n; at += MANY_CHUNK)
    rc = many_chunk(p, jobs + at, n - at < MANY_CHUNK ? n - at : MANY_CHUNK, ids + at, 0);
  if (rc == STORE_OK) return pg_exec_simple(p, "schedule_many", "COMMIT", NULL);
  if (p->conn && PQstatus(p->conn) == CONNECTION_OK) {
    PGresult *r = PQexec(p->conn, "ROLLBACK");
    if (r) PQclear(r);
  }
  return rc;
}

/* ------------------------------------------------------------------ */
/* Recurring schedules                                                 */

#define CRON_COLUMNS                                                                         \
  "id, expr, tz, name, payload, priority, max_attempts, catch_up, backfill,"                 \
  " extract(epoch FROM next_at), extract(epoch FROM clock_timestamp()), owner"

/* Declare or change a schedule.  When its next slot is new (a new
 * schedule, another expression or zone) or it moved to another name,
 * the sleeping workers of that name are told on commit, as for a job,
 * with the time at which they are to turn that slot into a job: 1 s
 * (TICK_AHEAD in loop.c) before it.  A declaration that changes
 * neither (every process declares its schedules as it starts) wakes
 * nobody.  `old` is read first (the insert's one row waits for its
 * count) and locked: it is the row that the update then changes. */
static const pg_query pgq_cron_put = {Q_CRON_PUT, "scheduler_cron_put", 11,
    "WITH old AS (SELECT o.next_at, o.name FROM scheduler.crons o WHERE o.id = $1"
    "  FOR UPDATE),"
    " put AS (INSERT INTO scheduler.crons AS c (id, expr, tz, name, payload,"
    "  priority, max_attempts, catch_up, backfill, next_at, owner)"
    "  SELECT $1, $2, $3, $4, $5::jsonb, $6::integer, $7::integer, $8::boolean,"
    "  $9::float8, to_timestamp($10::float8), $11 FROM (SELECT count(*) FROM old) AS l"
    "  ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, owner = EXCLUDED.owner,"
    "  payload = EXCLUDED.payload, priority = EXCLUDED.priority,"
    "  max_attempts = EXCLUDED.max_attempts, catch_up = EXCLUDED.catch_up,"
    "  backfill = EXCLUDED.backfill, updated_at = now(),"
    "  next_at = CASE WHEN c.expr = EXCLUDED.expr AND c.tz = EXCLUDED.tz"
    "    THEN c.next_at ELSE EXCLUDED.next_at END,"
    "  expr = EXCLUDED.expr, tz = EXCLUDED.tz"
    "  RETURNING c.next_at, c.name)"
    " SELECT count(pg_notify('scheduler', extract(epoch FROM p.next_at"
    "  - interval '1 second')::text || ' ' ||"
    "  CASE WHEN octet_length(p.name) <= 1000 THEN p.name ELSE '' END))"
    " FROM put p WHERE p.next_at < 'infinity' AND NOT EXISTS (SELECT FROM old o"
    "  WHERE o.next_at = p.next_at AND o.name = p.name)"};

/* $2: the owner it must have (NULL: any) */
static const pg_query pgq_cron_remove = {Q_CRON_REMOVE, "scheduler_cron_remove", 2,
    "DELETE FROM scheduler.crons WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"};

static const pg_query pgq_cron_list = {Q_CRON_LIST, "scheduler_cron_list", 0,
    "SELECT " CRON_COLUMNS " FROM scheduler.crons ORDER BY id"};

static const pg_query pgq_cron_due = {Q_CRON_DUE, "scheduler_cron_due", 2,
    "SELECT " CRON_COLUMNS " FROM scheduler.crons"
    " WHERE name = ANY ($1::text[])"
    "  AND next_at <= now() + $2::float8 * interval '1 second'"};

/* Compare-and-set on next_at, then one job per slot.  Slot jobs carry
 * the key cron:<id>@<slot>, so a slot's job is also unique while it is
 * unfinished. */
static const pg_query pgq_cron_fire = {Q_CRON_FIRE, "scheduler_cron_fire", 4,
    "WITH c AS (UPDATE scheduler.crons SET next_at = to_timestamp($4::float8),"
    "  fired_at = now() WHERE id = $1 AND next_at = to_timestamp($2::float8)"
    "  RETURNING *)"
    " SELECT (SELECT count(*) FROM c),"
    "  (SELECT count(scheduler.schedule(c.name, c.payload, to_timestamp(s.t),"
    "    'cron:' || c.id || '@' || s.t::bigint, c.priority, c.max_attempts))"
    "   FROM c CROSS JOIN unnest($3::float8[]) AS s(t))"};

int pg_cron_put(store *s, const store_cron *c) {
  if (memchr(c->id, 0, c->id_len) || memchr(c->name, 0, c->name_len) ||
      memchr(c->expr, 0, c->expr_len) || memchr(c->tz, 0, c->tz_len) || c->payload_has_nul)
    return store_fail(s, STORE_ERROR, "a NUL byte, which PostgreSQL cannot store");
  char prio[32], maxa[32], backfill[64], next[64];
  snprintf(prio, sizeof prio, "%lld", c->priority);
  snprintf(maxa, sizeof maxa, "%lld", c->max_attempts);
  if (c->owner && memchr(c->owner, 0, c->owner_len))
    return store_fail(s, STORE_ERROR, "a NUL byte, which PostgreSQL cannot store");
  const char *values[11] = {c->id,
                            c->expr,
                            c->tz,
                            c->name,
                            c->payload,
                            prio,
                            c->max_attempts > 0 ? maxa : NULL,
                            c->catch_up ? "true" : "false",
                            c->backfill >= 0 ? fmt_seconds(c->backfill, backfill, sizeof backfill)
                                             : NULL,
                            fmt_seconds(c->next_at, next, sizeof next),
                            c->owner};
  PGresult *r = NULL;
  int rc = pg_run(PG(s), &pgq_cron_put, values, &r);
  if (rc) return rc;
  PQclear(r);
  return STORE_OK;
}

int pg_cron_remove(store *s, const char *id, size_t id_len, const char *owner, size_t owner_len,
                   int *done) {
  *done = 0;
  if (memchr(id, 0, id_len) || (owner && memchr(owner, 0, owner_len))) return STORE_OK;
  const char *values[2] = {id, owner};
  PGresult *r = NULL;
  int rc = pg_run(PG(s), &pgq_cron_remove, values, &r);
  if (rc) return rc;
  *done = atoi(PQcmdTuples(r)) > 0;
  PQclear(r);
  return STORE_OK;
}

int pg_cron_list(store *s, double within, store_cron **out, size_t *n, double *db_now) {
  pg_store *p = PG(s);
  char w[64];
  const char *values[2] = {buf_cstr(&p->names_literal), fmt_seconds(within, w, sizeof w)};
  PGresult *r = NULL;
  int rc = pg_run(p, within >= 0 ? &pgq_cron_due : &pgq_cron_list, values, &r);
  if (rc) return rc;
  size_t rows = (size_t)PQntuples(r);
  if (rows > p->crons_cap) {
    store_cron *grown = realloc(p->crons, rows * sizeof *grown);
    if (!grown) {
      PQclear(r);
      return store_fail(s, STORE_NOMEM, "not enough memory");
    }
    p->crons = grown;
    p->crons_cap = rows;
  }
  *db_now = 0;
  for (size_t i = 0; i < rows; i++) {
    store_cron *c = &p->crons[i];
    int row = (int)i;
    memset(c, 0, sizeof *c);
    c->id = value_or_null(r, row, 0, &c->id_len);
    c->expr = value_or_null(r, row, 1, &c->expr_len);
    c->tz = value_or_null(r, row, 2, &c->tz_len);
    c->name = value_or_null(r, row, 3, &c->name_len);
    c->payload = value_or_null(r, row, 4, &c->payload_len);
    c->priority = parse_int(PQgetvalue(r, row, 5));
    c->max_attempts = PQgetisnull(r, row, 6) ? 0 : parse_int(PQgetvalue(r, row, 6));
    c->catch_up = PQgetvalue(r, row, 7)[0] == 't';
    c->backfill = PQgetisnull(r, row, 8) ? -1 : parse_seconds(PQgetvalue(r, row, 8));
    c->next_at = parse_seconds(PQgetvalue(r, row, 9));
    *db_now = parse_seconds(PQgetvalue(r, row, 10));
    c->owner = value_or_null(r, row, 11, &c->owner_len);
  }
  clear(&p->cron_rows);
  p->cron_rows = r;
  *out = p->crons;
  *n = rows;
  return STORE_OK;
}

int pg_cron_fire(store *s, const char *id, size_t id_len, double expected,
                        const double *slots, size_t n, double next, int *won) {
  pg_store *p = PG(s);
  char exp[64], nxt[64], num[64];
  *won = 0;
  if (memchr(id, 0, id_len)) return STORE_OK;
  buf *b = &p->p[0];
  buf_reset(b);
  int err = buf_addc(b, '{');
  for (size_t i = 0; i < n; i++)
    err |= (i ? buf_addc(b, ',') : 0) | buf_adds(b, fmt_seconds(slots[i], num, sizeof num));
  if (err | buf_addc(b, '}')) return store_fail(s, STORE_NOMEM, "not enough memory");
  const char *values[4] = {id, fmt_seconds(expected, exp, sizeof exp), buf_cstr(b),
                           fmt_seconds(next, nxt, sizeof nxt)};
  PGresult *r = NULL;
  int rc = pg_run(p, &pgq_cron_fire, values, &r);
  if (rc) return rc;
  *won = atoi(PQgetvalue(r, 0, 0)) > 0;
  PQclear(r);
  return STORE_OK;
}
