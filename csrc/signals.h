/*
 * signals: SIGINT/SIGTERM turned into a readable descriptor for the loop.
 * The handler only writes a byte to a self-pipe (saving errno).  Handlers are
 * installed while at least one run() is active and the previous ones are
 * restored when the last one returns.  Not thread-safe: call from the thread
 * that runs Lua.
 */
#ifndef SCHEDULER_SIGNALS_H
#define SCHEDULER_SIGNALS_H

/* Install (or share) the handlers; 0, or -1 with errno set. */
int signals_acquire(void);
/* Release; the previous handlers are back after the last release. */
void signals_release(void);
/* The descriptor that becomes readable when a signal arrived, or -1. */
int signals_fd(void);
/* Read pending signal bytes; returns the last signal seen since handlers
 * were installed (so nested runs of several instances all stop), or 0. */
int signals_take(void);

#endif
