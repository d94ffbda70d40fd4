/*
 * core: one scheduler instance as the C side sees it.  The Lua userdata
 * (scheduler.core.Core, built in core.c) holds this struct; its user value
 * is a table, the "env", that keeps the Lua values the loop needs reachable:
 *   env.listeners[name] = callable, env.limits[name] = max_attempts,
 *   env.timeouts[name] = seconds a call of that listener may take,
 *   env.histories[name] = seconds its finished jobs are kept (0: none),
 *   env.slots[name] = jobs of that name a concurrent worker runs at once,
 *   env.backoff = function(attempt) -> seconds, env.log = function(level, msg),
 *   env.tick = function(core): turns due recurring schedules into jobs
 */
#ifndef SCHEDULER_CORE_H
#define SCHEDULER_CORE_H

#include <lua.h>
#include <stddef.h>

#include "buf.h"
#include "store.h"

/* The metatable of the Core userdata (core.c). */
#define CORE_MT "scheduler.Core"

typedef struct core {
  store *st;
  char *database;
  char *worker_id;
  double lease;
  long long max_attempts; /* default for jobs and listeners that set none */
  double timeout;         /* default listener time limit in seconds; 0: none */
  double history; /* seconds finished jobs are kept (store_outcome.keep); 0: none */
  int history_any; /* some on() gave a history of its own (env.histories) */
  size_t batch_max;
  int running;     /* inside run() */
  int stopping;    /* stop() was called */
  int closed;
  int log_debug; /* the log function wants debug lines: each job's start and success */
  double job_seconds; /* moving average of a listener call, sizes batches */
  buf payload;        /* scratch: encoded payloads */
  buf msg;            /* scratch: messages */
  struct heartbeat *hb; /* while run() is active (see core_store in core.c) */
  struct fetcher *fetch; /* a concurrent worker's, while it runs (concurrent.c) */
  store_outcome *outcomes; /* outcomes of the batch in hand, not yet recorded */
  size_t n_outcomes, outcomes_cap;
} core;

/* The Core userdata at index 1, or a Lua error (not one, or closed). */
core *core_check(lua_State *L);
/* Hand the store (and a concurrent worker's fetcher) the names of the
 * registered listeners, with their env.slots.  A STORE_* code. */
int core_sync_names(lua_State *L, core *c, int env);
/* The job described by the arguments 2-8 of s:schedule(name, payload, at,
 * delay, key, priority, max_attempts) (core.c): strings point into the
 * Lua stack and c->payload, valid until the next encoding.  Raises on a
 * bad argument or a payload that cannot be encoded. */
void core_read_new_job(lua_State *L, core *c, store_new_job *j);

#endif
