/*
 * heartbeat: a thread that keeps the worker's leases fresh while Lua is busy
 * in a listener (which may block in C for minutes), and hands back claimed
 * jobs that would otherwise wait behind a slow one.  It never touches the Lua
 * state; it has its own database connection, opened the first time it has
 * something to write.  All writes are fenced on (id, attempt).
 *
 * The thread that runs Lua calls heartbeat_batch() after a claim,
 * heartbeat_begin(i) before starting job i, heartbeat_end() when the batch's
 * outcomes are recorded.
 *
 * Listener time limits: a listener stuck in Lua code is stopped by a hook
 * (dispatch.c); one blocked in C for longer than its limit plus a second
 * cannot be.  The thread then stops renewing that job's lease (it expires
 * and another worker runs the job again: the blocked call may still finish
 * later, so the job ran twice) and records the outcomes of the jobs the
 * batch ran before it, so they are not held with it.
 */
#ifndef SCHEDULER_HEARTBEAT_H
#define SCHEDULER_HEARTBEAT_H

#include <stddef.h>

#include "buf.h"
#include "store.h"

typedef struct heartbeat heartbeat;

/* Start the thread.  lease: seconds a lease lasts (renewed every third of
 * it); release_after: seconds a batch may run before its unstarted jobs are
 * handed back.  NULL with a message in err on failure. */
heartbeat *heartbeat_start(const char *database, double lease, double release_after, buf *err);
/* Stop and join the thread, close its connection, free everything. */
void heartbeat_stop(heartbeat *hb);
/* A new batch is in hand (the claims are copied).  outcomes[i] is job i's,
 * final once job i + 1 begins; the array stays put until heartbeat_end.
 * 0, or -1 out of memory. */
int heartbeat_batch(heartbeat *hb, const store_claim *claims, size_t n,
                    const store_outcome *outcomes);
/* May job i of the batch start?  0 when the thread already handed it back
 * (and with it every later one).  timeout: its listener's time limit in
 * seconds (0: none). */
int heartbeat_begin(heartbeat *hb, size_t i, double timeout);
/* No job from index i on will start (stop() was called): the thread will
 * hand back nothing more.  Returns the index from which the thread already
 * handed jobs back (>= i); the caller hands back [i, that index) itself. */
size_t heartbeat_cut(heartbeat *hb, size_t i);
/* The batch's outcomes are recorded; stop covering it (and reading its
 * outcomes: waits for a write of them in progress). */
void heartbeat_end(heartbeat *hb);
/* Move the thread's last error (if any) into out: 1 if there was one. */
int heartbeat_error(heartbeat *hb, buf *out);

#endif
