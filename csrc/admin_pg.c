/*
 * admin_pg.c: listing, statistics, bulk retry and the schema version for
 * the `lua-scheduler` command, on PostgreSQL (see admin_pg.h: interim home
 * of SQL that is to move into store_pg.c as store operations).
 */
#include "admin_pg.h"
#include "store_sqlite.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* $1 state, $2 name, $3 id, $4 limit (NULL: none).  The outer one-row
 * select makes an empty result still carry the database clock (a row whose
 * id is NULL). */
static const char SQL_LIST[] =
    "SELECT extract(epoch FROM n.now), j.id, j.name, j.state, extract(epoch FROM j.run_at),"
    " j.attempt, j.max_attempts, j.priority, j.key, j.locked_by,"
    " extract(epoch FROM j.locked_until), extract(epoch FROM j.created_at), j.last_error,"
    " j.payload"
    " FROM (SELECT now()) AS n(now) LEFT JOIN LATERAL ("
    "  SELECT * FROM scheduler.jobs"
    "  WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR name = $2)"
    "    AND ($3::bigint IS NULL OR id = $3)"
    "  ORDER BY run_at, id LIMIT $4::bigint) AS j ON true";

/* Counts per name.  Completions are counted only when the schema keeps
 * them (the proposed table scheduler.stats_done, see the report of issue
 * 4); SQL_STATS_DONE is used when it exists. */
#define STATS_COUNTS                                                                   \
  "SELECT name,"                                                                       \
  " count(*) FILTER (WHERE state = 'scheduled' AND run_at <= now()) AS due,"           \
  " count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS later,"          \
  " count(*) FILTER (WHERE state = 'running') AS running,"                             \
  " count(*) FILTER (WHERE state = 'failed') AS failed,"                               \
  " extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'scheduled'"          \
  "   AND run_at <= now())) AS late"                                                   \
  " FROM scheduler.jobs GROUP BY name"

static const char SQL_STATS[] =
    "SELECT name, due, later, running, failed, late, NULL FROM (" STATS_COUNTS ") AS j"
    " ORDER BY name";

static const char SQL_STATS_DONE[] =
    "SELECT coalesce(j.name, d.name), coalesce(j.due, 0), coalesce(j.later, 0),"
    " coalesce(j.running, 0), coalesce(j.failed, 0), j.late, coalesce(d.done, 0)"
    " FROM (" STATS_COUNTS ") AS j FULL JOIN ("
    "  SELECT name, sum(done) AS done FROM scheduler.stats_done"
    "  WHERE second > now() - interval '60 seconds' GROUP BY name) AS d ON d.name = j.name"
    " ORDER BY 1";

static const char SQL_HAS_DONE[] = "SELECT to_regclass('scheduler.stats_done') IS NOT NULL";

/* $1 name (NULL: all).  Like scheduler_retry (attempt 0, run now, a
 * wake-up per name), for every failed job whose key is free; all parts see
 * one snapshot, so the last count is the number failed before. */
static const char SQL_RETRY_FAILED[] =
    "WITH c AS ("
    "  SELECT DISTINCT ON (key, CASE WHEN key IS NULL THEN id END) id FROM scheduler.jobs j"
    "  WHERE state = 'failed' AND ($1::text IS NULL OR name = $1)"
    "    AND (key IS NULL OR NOT EXISTS (SELECT 1 FROM scheduler.jobs o"
    "         WHERE o.key = j.key AND o.state <> 'failed'))"
    "  ORDER BY key, CASE WHEN key IS NULL THEN id END, id DESC"
    "), r AS ("
    "  UPDATE scheduler.jobs j SET state = 'scheduled', run_at = now(), attempt = 0"
    "  FROM c WHERE j.id = c.id AND j.state = 'failed' RETURNING j.name, j.run_at"
    "), w AS ("
    "  SELECT pg_notify('scheduler', extract(epoch FROM min(r.run_at))::text || ' ' ||"
    "    CASE WHEN octet_length(r.name) <= 1000 THEN r.name ELSE '' END) FROM r GROUP BY r.name"
    ") SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM w),"
    "  (SELECT count(*) FROM scheduler.jobs WHERE state = 'failed'"
    "   AND ($1::text IS NULL OR name = $1))";

static const char SQL_VERSION[] = "SELECT coalesce(max(version), 0) FROM scheduler.migrations";

struct admin {
  store *sqlite; /* an SQLite database: its store does everything below */
  PGconn *conn;
  buf err;
  char *secret; /* the password as libpq decoded it, scrubbed from messages */
  PGresult *res; /* the result that returned strings point into */
  admin_job *jobs;
  size_t jobs_cap;
  admin_stat *stats;
  size_t stats_cap;
};

/* Set the error: "<what>: <libpq message>" without the trailing newline and
 * with the password (if it appears) replaced.  Returns code. */
static int fail(admin *a, int code, const char *what, const char *msg) {
  size_t n = msg ? strlen(msg) : 0;
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) n--;
  buf_reset(&a->err);
  if (buf_printf(&a->err, "%s: %.*s", what, (int)n, msg ? msg : "")) return STORE_NOMEM;
  const char *s = a->secret;
  char *at;
  if (s && *s && (at = strstr(a->err.data, s)) != NULL) {
    /* cut at the password: a message never needs what follows it */
    a->err.len = (size_t)(at - a->err.data);
    buf_adds(&a->err, "***");
  }
  return code;
}

static void clear(admin *a) {
  if (a->res) PQclear(a->res);
  a->res = NULL;
}

/* Run sql with text parameters; the result (rows) is kept in a->res. */
static int query(admin *a, const char *what, const char *sql, int nparams,
                 const char *const *values) {
  clear(a);
  if (!a->conn || PQstatus(a->conn) != CONNECTION_OK)
    return fail(a, STORE_DOWN, what, "the connection to the database was lost");
  PGresult *r = PQexecParams(a->conn, sql, nparams, NULL, values, NULL, NULL, 0);
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK) {
    int down = PQstatus(a->conn) != CONNECTION_OK;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    int rc = fail(a, down ? STORE_DOWN : STORE_ERROR, what, msg ? msg : PQerrorMessage(a->conn));
    if (r) PQclear(r);
    return rc;
  }
  a->res = r;
  return STORE_OK;
}

/* Locale-free parse of PostgreSQL numeric text; NAN for NULL. */
static double number(PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col)) return NAN;
  const char *s = PQgetvalue(r, row, col);
  int neg = 0;
  double v = 0, scale = 1;
  if (*s == '-') neg = 1, s++;
  if (*s == 'I') return neg ? -INFINITY : INFINITY;
  while (*s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0');
  if (*s == '.')
    for (s++; *s >= '0' && *s <= '9'; s++) v += (*s - '0') * (scale /= 10);
  return neg ? -v : v;
}

static long long integer(PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static const char *text(PGresult *r, int row, int col, size_t *len) {
  if (PQgetisnull(r, row, col)) {
    if (len) *len = 0;
    return NULL;
  }
  if (len) *len = (size_t)PQgetlength(r, row, col);
  return PQgetvalue(r, row, col);
}

admin *admin_open(const char *database, buf *err) {
  if (strncmp(database, "sqlite:", 7) == 0) {
    /* one connection, the store's own (store_sqlite.h) */
    admin *a = calloc(1, sizeof *a);
    if (!a || !(a->sqlite = store_open(database, err)) ||
        a->sqlite->ops->connect(a->sqlite) != STORE_OK) {
      if (!a) buf_adds(err, "not enough memory");
      if (a && a->sqlite) buf_adds(err, store_error(a->sqlite));
      admin_close(a);
      return NULL;
    }
    return a;
  }
  /* The store connects first: the schema is created or upgraded as for any
   * worker, with the store's (credential-free) error messages. */
  store *st = store_open(database, err);
  if (!st) return NULL;
  int rc = st->ops->connect(st);
  if (rc != STORE_OK) {
    buf_adds(err, store_error(st));
    store_close(st);
    return NULL;
  }
  store_close(st);

  admin *a = calloc(1, sizeof *a);
  if (!a) {
    buf_adds(err, "not enough memory");
    return NULL;
  }
  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse(database, &perr);
  if (perr) PQfreemem(perr);
  for (PQconninfoOption *o = opts; o && o->keyword; o++)
    if (strcmp(o->keyword, "password") == 0 && o->val && *o->val) a->secret = strdup(o->val);
  if (opts) PQconninfoFree(opts);
  /* as the store connects (store_pg.c), under the same application name */
  const char *const keys[] = {"fallback_application_name", "connect_timeout", "dbname",
                              "client_encoding", NULL};
  const char *const vals[] = {"lua-scheduler", "10", database, "UTF8", NULL};
  a->conn = PQconnectdbParams(keys, vals, 1);
  if (!a->conn || PQstatus(a->conn) != CONNECTION_OK) {
    fail(a, STORE_DOWN, "cannot connect to the database",
         a->conn ? PQerrorMessage(a->conn) : "not enough memory");
    buf_adds(err, buf_cstr(&a->err));
    admin_close(a);
    return NULL;
  }
  return a;
}

void admin_close(admin *a) {
  if (!a) return;
  store_close(a->sqlite);
  clear(a);
  if (a->conn) PQfinish(a->conn);
  free(a->jobs);
  free(a->stats);
  free(a->secret);
  buf_free(&a->err);
  free(a);
}

const char *admin_error(const admin *a) {
  return a->sqlite ? store_error(a->sqlite) : buf_cstr(&a->err);
}

int admin_list(admin *a, const admin_filter *f, admin_job **jobs, size_t *n, double *db_now) {
  if (a->sqlite) return store_sqlite_list(a->sqlite, f, jobs, n, db_now);
  char id[32], limit[32];
  snprintf(id, sizeof id, "%lld", (long long)f->id);
  snprintf(limit, sizeof limit, "%lld", f->limit);
  const char *values[4] = {f->state, f->name, f->has_id ? id : NULL, f->limit > 0 ? limit : NULL};
  int rc = query(a, "listing jobs", SQL_LIST, 4, values);
  if (rc) return rc;
  PGresult *r = a->res;
  size_t rows = PQntuples(r) > 0 ? (size_t)PQntuples(r) : 0;
  *db_now = rows > 0 ? number(r, 0, 0) : NAN;
  if (rows == 1 && PQgetisnull(r, 0, 1)) rows = 0; /* no job: just the clock */
  if (rows > a->jobs_cap) {
    admin_job *grown = realloc(a->jobs, rows * sizeof *grown);
    if (!grown) return fail(a, STORE_NOMEM, "listing jobs", "not enough memory");
    a->jobs = grown;
    a->jobs_cap = rows;
  }
  for (size_t i = 0; i < rows; i++) {
    admin_job *x = &a->jobs[i];
    store_job *j = &x->job;
    memset(x, 0, sizeof *x);
    j->id = (int64_t)integer(r, i, 1);
    j->name = text(r, i, 2, &j->name_len);
    j->state = text(r, i, 3, NULL);
    j->run_at = number(r, i, 4);
    j->attempt = integer(r, i, 5);
    j->max_attempts = integer(r, i, 6);
    j->priority = integer(r, i, 7);
    j->key = text(r, i, 8, &j->key_len);
    x->locked_by = text(r, i, 9, NULL);
    x->locked_until = number(r, i, 10);
    x->created_at = number(r, i, 11);
    j->last_error = text(r, i, 12, &j->last_error_len);
    j->payload = text(r, i, 13, &j->payload_len);
  }
  *jobs = a->jobs;
  *n = (size_t)rows;
  return STORE_OK;
}

int admin_stats(admin *a, admin_stat **out, size_t *n) {
  if (a->sqlite) return store_sqlite_stats(a->sqlite, out, n);
  int rc = query(a, "reading statistics", SQL_HAS_DONE, 0, NULL);
  if (rc) return rc;
  int counted = PQgetvalue(a->res, 0, 0)[0] == 't';
  rc = query(a, "reading statistics", counted ? SQL_STATS_DONE : SQL_STATS, 0, NULL);
  if (rc) return rc;
  PGresult *r = a->res;
  size_t rows = (size_t)PQntuples(r);
  if (rows > a->stats_cap) {
    admin_stat *grown = realloc(a->stats, rows * sizeof *grown);
    if (!grown) return fail(a, STORE_NOMEM, "reading statistics", "not enough memory");
    a->stats = grown;
    a->stats_cap = rows;
  }
  for (size_t i = 0; i < rows; i++) {
    admin_stat *s = &a->stats[i];
    int row = (int)i;
    s->name = text(r, row, 0, &s->name_len);
    s->due = integer(r, row, 1);
    s->later = integer(r, row, 2);
    s->running = integer(r, row, 3);
    s->failed = integer(r, row, 4);
    s->late = number(r, row, 5);
    s->done_last_minute = PQgetisnull(r, row, 6) ? -1 : integer(r, row, 6);
  }
  *out = a->stats;
  *n = rows;
  return STORE_OK;
}

int admin_retry_failed(admin *a, const char *name, size_t *retried, size_t *skipped) {
  if (a->sqlite) return store_sqlite_retry_failed(a->sqlite, name, retried, skipped);
  const char *values[1] = {name};
  int rc = query(a, "retrying failed jobs", SQL_RETRY_FAILED, 1, values);
  if (rc) return rc;
  long long done = integer(a->res, 0, 0), before = integer(a->res, 0, 2);
  *retried = (size_t)done;
  *skipped = before > done ? (size_t)(before - done) : 0;
  clear(a);
  return STORE_OK;
}

int admin_schema_version(admin *a, int *version) {
  if (a->sqlite) return store_sqlite_schema_version(a->sqlite, version);
  int rc = query(a, "reading the schema version", SQL_VERSION, 0, NULL);
  if (rc) return rc;
  *version = (int)integer(a->res, 0, 0);
  clear(a);
  return STORE_OK;
}
