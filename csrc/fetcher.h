/*
 * fetcher: the database side of a worker that runs several listeners at
 * once (concurrency > 1), inside the host program's event loop.  A thread
 * with a store (a connection) of its own does every round trip such a
 * worker needs, so the thread that runs Lua never waits for the database:
 *   - it claims due jobs for the free slots (store claim_leased: leases,
 *     their attempt counted, one token per claim), and hands them over;
 *   - it renews the leases of every job in flight every third of the
 *     lease, all to one expiry (if the worker dies they expire together,
 *     and the crash rule quarantines them: no job is charged);
 *   - it records outcomes in batches (store finish, fenced on the
 *     claims), retrying those that fail until they are written;
 *   - with nothing to claim it sleeps on its connection (LISTEN, or the
 *     SQLite wake file) until the next due job, like run(); it rescues
 *     expired leases when they come due, and every RESCUE_EVERY seconds
 *     while busy.
 * A quarantined job is claimed only with nothing else in flight, and
 * nothing more is claimed until it ends: it runs alone, as store.h's
 * crash rule requires.  A job whose listener runs past its time limit
 * plus a second (blocked in C: the Lua thread cannot stop it) is no
 * longer renewed: its lease expires alone and counts its attempt.
 *
 * The Lua thread talks to it through calls that only take a mutex, and
 * polls fetcher_fd, readable when claimed jobs (or news: an error, the
 * next recurring schedule) wait for it.
 */
#ifndef SCHEDULER_FETCHER_H
#define SCHEDULER_FETCHER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "store.h"

typedef struct fetcher fetcher;

/* A claimed job handed to the Lua thread: its strings point into the same
 * allocation (free() it). */
typedef struct fetched_job {
  store_job job;
  int alone;       /* a quarantined job: nothing else runs until it ends */
  double start_at; /* monotonic: not taken before (its rate's token, job.hold) */
} fetched_job;

typedef struct fetcher_opts {
  const char *database; /* opened afresh by the thread */
  const char *worker;
  size_t concurrency; /* jobs in flight at most */
  size_t batch_max;   /* jobs one claim takes at most */
  double lease;
  long long max_attempts; /* default, for the rescue's crash rule */
  int history; /* history is on for some name: prune it (store.h, prune) */
} fetcher_opts;

/* Start the thread.  NULL with a message in err on failure. */
fetcher *fetcher_start(const fetcher_opts *o, buf *err);
/* Readable when fetcher_take has jobs, fetcher_answers answers or
 * fetcher_news news (or the worker settled).  fetcher_news drains it: a
 * step calls it before the others. */
int fetcher_fd(fetcher *f);
/* Move the claimed jobs waiting (at most `max`) to out[]; returns how
 * many.  Each is in flight from its claim on, until fetcher_done.  A job
 * held for its rate's token (start_at) waits until then: fetcher_take
 * leaves it, and the descriptor does not say it is there. */
size_t fetcher_take(fetcher *f, fetched_job **out, size_t max);
/* Seconds until the first held job may be taken; -1: none is held. */
double fetcher_next_start(fetcher *f);
/* Job (id, token) started, with a time limit of `limit` seconds (0:
 * none): past it and a second, its lease is no longer renewed. */
void fetcher_begin(fetcher *f, store_claim claim, double limit);
/* Job o->claim ended with outcome o (copied): recorded with the next
 * batch.  0, or -1 out of memory (nothing changed). */
int fetcher_done(fetcher *f, const store_outcome *o);
/* The names it claims from now on (copied; it claims none before the
 * first call), how many jobs of each may be in flight at once (limits[i]
 * 0: only the worker's concurrency), and their listeners' max_attempts
 * (the crash rule's: store.h, set_max_attempts).  0, or -1 out of memory
 * (the old names stay). */
int fetcher_set_names(fetcher *f, const char *const *names, const size_t *lens,
                      const size_t *limits, const long long *max_attempts, size_t n);
/* Schedule job j (copied) on the fetcher's connection, for a coroutine
 * that waits for it without blocking the loop.  Returns the request's
 * number (> 0), or 0 out of memory.  Requests go first, also while
 * stopping; the answer comes through fetcher_answers. */
unsigned long long fetcher_schedule(fetcher *f, const store_new_job *j);
/* An answered request: its number, and the job's id, or 0 and the error. */
typedef struct fetch_answer {
  unsigned long long seq;
  int64_t id;
  char *error; /* malloc'd, or NULL: free() it */
} fetch_answer;
/* Move up to `max` answers to out[]; returns how many. */
size_t fetcher_answers(fetcher *f, fetch_answer *out, size_t max);
/* 1 when job name (name, len) was paused when the thread last looked
 * (every second while jobs are in flight): a job of it that was taken and
 * has not started must not start (give it back: OUTCOME_RELEASE). */
int fetcher_paused(fetcher *f, const char *name, size_t len);
/* Claim nothing more; jobs claimed and not taken go back unattempted. */
void fetcher_stop(fetcher *f);
/* 1 when stopped and everything is recorded (or given up: see
 * fetcher_news): nothing in flight, no outcome left to write. */
int fetcher_settled(fetcher *f);
/* News for the Lua thread: a message for the log (returns its level, the
 * text in out), or NULL.  *next_cron: monotonic time of the earliest
 * recurring schedule of its names (INFINITY: none known). */
const char *fetcher_news(fetcher *f, buf *out, double *next_cron);
/* Stop the thread (one last write of what is left), close its connection
 * and free everything; jobs still in flight are left to their leases. */
void fetcher_free(fetcher *f);

#endif
