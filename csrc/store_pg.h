/* store_pg: the PostgreSQL backend of the store interface (libpq). */
#ifndef SCHEDULER_STORE_PG_H
#define SCHEDULER_STORE_PG_H

#include "store.h"

/* Open (without connecting) a store on a libpq URL or keyword string.
 * NULL with a message in err when the string does not parse. */
store *store_pg_open(const char *conninfo, buf *err);

/* The password a libpq URL or keyword string holds, if any: *raw as
 * written in a URL's user-info (percent-encoded), *parsed as libpq decodes
 * it; each malloc'd (the caller frees) or NULL.  The store scrubs both from
 * its messages; the command hides them from `ps`. */
void store_pg_passwords(const char *conninfo, char **raw, char **parsed);

#endif
