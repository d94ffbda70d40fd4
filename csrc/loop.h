/*
 * loop: run() — claim due jobs in batches, dispatch them, record their
 * outcomes, and sleep until the next due job (database clock), a wake-up
 * notification, a signal, or the end of the run.  No SQL here: the loop
 * talks to the store interface.
 */
#ifndef SCHEDULER_LOOP_H
#define SCHEDULER_LOOP_H

#include <lua.h>

#include "core.h"

typedef struct loop_opts {
  double seconds; /* return after this long; < 0: no limit */
  int drain;      /* return when nothing is due */
} loop_opts;

/* Run the loop for instance c (its userdata at absolute index self, its env
 * table at env).
 * Returns 0 and sets *count (listener calls made), or -1 with the reason in
 * c->msg (drain mode: the database failed; any mode: out of memory), or -2
 * with an error value on top of the stack for the caller to raise again: a
 * Lua error other than a memory error came out of the loop.  Whatever the
 * result, run() leaves nothing behind: the batch in hand is recorded (its
 * unstarted jobs handed back), the claim transaction ended, the heartbeat
 * thread stopped and the signal handlers restored. */
int loop_run(lua_State *L, core *c, int self, int env, const loop_opts *o, long long *count);

#endif
