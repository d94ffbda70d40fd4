/* store_pg: the PostgreSQL backend of the store interface (libpq). */
#ifndef SCHEDULER_STORE_PG_H
#define SCHEDULER_STORE_PG_H

#include "store.h"

/* Open (without connecting) a store on a libpq URL or keyword string.
 * NULL with a message in err when the string does not parse. */
store *store_pg_open(const char *conninfo, buf *err);

#endif
