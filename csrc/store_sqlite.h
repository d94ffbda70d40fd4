/* store_sqlite: the SQLite backend of the store interface (one host, one
 * file, any number of processes; or an in-process memory database). */
#ifndef SCHEDULER_STORE_SQLITE_H
#define SCHEDULER_STORE_SQLITE_H

#include "store.h"

/* Open (without connecting) a store on "sqlite:PATH" (a relative PATH is
 * resolved against the working directory now), "sqlite::memory:" (a fresh
 * database private to this store and its heartbeat thread) or
 * "sqlite::memory:NAME" (shared by every store of the process that names
 * it).  NULL with a message in err when the string is unusable. */
store *store_sqlite_open(const char *database, buf *err);

/* The lua-scheduler command's operations on an SQLite store (s must come
 * from store_sqlite_open), on the store's own connection, with the
 * contracts of admin_list, admin_stats, admin_retry_failed and
 * admin_schema_version (admin_pg.h); errors in store_error(s).  Returned
 * memory is valid until the next such call or job(). */
struct admin_filter;
struct admin_job;
struct admin_stat;
int store_sqlite_list(store *s, const struct admin_filter *f, struct admin_job **jobs, size_t *n,
                      double *db_now);
int store_sqlite_stats(store *s, struct admin_stat **rows, size_t *n);
int store_sqlite_retry_failed(store *s, const char *name, size_t *retried, size_t *skipped);
int store_sqlite_schema_version(store *s, int *version);

#endif
