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

#endif
