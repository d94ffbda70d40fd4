/*
 * admin_pg: the read-mostly operations of the `lua-scheduler` command that
 * the store interface does not have yet (listing jobs, statistics, retrying
 * every failed job, the schema version), for PostgreSQL.  Plain C, no Lua.
 *
 * INTERIM: these are meant to become store operations (store.h) implemented
 * in store_pg.c (and by the SQLite backend), on the store's own connection.
 * Until then an admin handle has its own connection; admin_open first
 * connects through the store, so the schema is created or upgraded exactly
 * as for a worker.  The SQL below is the proposed store_pg.c SQL, verbatim.
 *
 * Conventions as in store.h: STORE_* return codes, admin_error() describes
 * the last failure (never with credentials), strings returned point into
 * memory the handle owns, valid until the next call on it.
 */
#ifndef SCHEDULER_ADMIN_PG_H
#define SCHEDULER_ADMIN_PG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "store.h"

typedef struct admin admin;

/* Which jobs admin_list returns: each field unset (NULL / has_id 0) matches
 * every job.  limit 0: no limit. */
typedef struct admin_filter {
  const char *state; /* "scheduled", "running" or "failed" */
  const char *name;
  int64_t id;
  int has_id;
  long long limit;
} admin_filter;

/* A listed job: the stored fields (job.max_attempts 0 when the job sets
 * none) plus the lease and the creation time.  NAN when NULL. */
typedef struct admin_job {
  store_job job;
  const char *locked_by; /* NULL when not running */
  double locked_until;
  double created_at;
} admin_job;

/* Statistics of one job name.  late: seconds the oldest due job has been
 * waiting (NAN: none due); done_last_minute: jobs completed in the last 60 s
 * (-1: unknown, the database does not count completions). */
typedef struct admin_stat {
  const char *name;
  size_t name_len;
  long long due, later, running, failed;
  double late;
  long long done_last_minute;
} admin_stat;

/* Connect (creating or upgrading the schema).  NULL with a message in err
 * on failure. */
admin *admin_open(const char *database, buf *err);
void admin_close(admin *a);
const char *admin_error(const admin *a);

/* Jobs matching f in (run_at, id) order; *db_now is the database's clock. */
int admin_list(admin *a, const admin_filter *f, admin_job **jobs, size_t *n, double *db_now);
/* One row per job name, in name order. */
int admin_stats(admin *a, admin_stat **rows, size_t *n);
/* Put every failed job (of `name`, or all when NULL) back to run now with a
 * fresh set of attempts, as retry(id) does.  A failed job whose key another
 * unfinished job holds stays failed (of several failed jobs with one key,
 * the newest is retried): *skipped counts those. */
int admin_retry_failed(admin *a, const char *name, size_t *retried, size_t *skipped);
/* The schema version (the highest applied migration). */
int admin_schema_version(admin *a, int *version);

#endif
