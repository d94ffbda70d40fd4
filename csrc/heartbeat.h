/*
 * heartbeat: a thread that keeps the worker's leases fresh while Lua is busy
 * in a listener (which may block in C for minutes), and hands back claimed
 * jobs that would otherwise wait behind a slow one.  It never touches the Lua
 * state; it has its own database connection, opened the first time it has
 * something to write.  All writes are fenced on (id, attempt).
 *
 * A held batch (claims held by an open transaction of the store, see
 * store_ops.settle) needs no renewal; when it runs past release_after the
 * thread settles it through the loop's callback, which turns the job in
 * hand into a lease.
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

/* Ends a held batch early (see store_ops.settle): records the outcomes of
 * jobs [0, current), leases the claims [current, current + keep) and
 * releases the rest.  Called with the heartbeat's lock held, from the
 * thread (a batch runs past release_after: keep = 1) or from the thread
 * that runs Lua (heartbeat_settle: keep = the rest).  Returns a STORE_*
 * code; on failure a message in err. */
typedef int (*heartbeat_settle_fn)(void *ctx, size_t current, size_t keep, buf *err);

/* Start the thread.  lease: seconds a lease lasts (renewed every third of
 * it); release_after: seconds a batch may run before its unstarted jobs are
 * handed back (and a held batch is settled, by settle(ctx, ...)).  NULL
 * with a message in err on failure. */
heartbeat *heartbeat_start(const char *database, double lease, double release_after,
                           heartbeat_settle_fn settle, void *ctx, buf *err);
/* Stop and join the thread, close its connection, free everything. */
void heartbeat_stop(heartbeat *hb);
/* A new batch is in hand (the claims are copied).  outcomes[i] is job i's,
 * final once job i + 1 begins; the array stays put until heartbeat_end.
 * held: the claims are locks of the store's open transaction, not leases
 * (nothing to renew until it is settled).  0, or -1 out of memory. */
int heartbeat_batch(heartbeat *hb, const store_claim *claims, size_t n,
                    const store_outcome *outcomes, int held);
/* The thread that runs Lua is about to use the store's connection (a
 * listener called the API): settle a held batch first, keeping every
 * unfinished job of it as a lease.  Nothing to do otherwise. */
void heartbeat_settle(heartbeat *hb);
/* May job i of the batch start?  0 when the thread already handed it back
 * (and with it every later one).  timeout: its listener's time limit in
 * seconds (0: none). */
int heartbeat_begin(heartbeat *hb, size_t i, double timeout);
/* The worker's own thread is about to use the store (in_store 1: between
 * heartbeat_begin and the listener, to ask whether the job's name was
 * paused or the job cancelled) or is done with it (0).  The settle of a
 * held batch uses that store from the thread (heartbeat_settle_fn): it
 * waits for the 0, so that the two threads never use one connection at
 * once. */
void heartbeat_store(heartbeat *hb, int in_store);
/* The listener of the job begun last has returned (the running mark is
 * for a job whose listener runs, not one whose outcome waits for the
 * database: see RUNNING_AFTER in heartbeat.c).  A relaxed atomic store:
 * nothing on the job's path. */
void heartbeat_done(heartbeat *hb);
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
