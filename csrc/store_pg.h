/* store_pg: the PostgreSQL backend of the store interface (libpq). */
#ifndef SCHEDULER_STORE_PG_H
#define SCHEDULER_STORE_PG_H

#include "store.h"

/* Open (without connecting) a store on a libpq URL or keyword string.
 * NULL with a message in err when the string does not parse. */
store *store_pg_open(const char *conninfo, buf *err);

/* The passwords a libpq URL or keyword string holds, each NUL-terminated,
 * added to `out`: as written in a URL (its user-info, password=
 * parameters: percent-encoded) and as libpq decodes it.  The store scrubs
 * them from its messages; the command hides them from `ps`.  0, or -1 out
 * of memory. */
int store_pg_secrets(const char *conninfo, buf *out);

#endif
