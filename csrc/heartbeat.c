#include "heartbeat.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* A listener still running this long after its time limit is blocked
 * outside Lua: the count hook (dispatch.c) stops Lua code at once. */
#define OVERRUN_GRACE 1.0

/* A job of a held batch whose listener has run this long is marked as
 * running in its batch's record (store_ops.running), so that others see it
 * running: the thread looks this often while a batch is held, and a job
 * it sees in hand at two looks in a row has run at least this long.  A
 * listener that ends sooner is never marked: a drain of short jobs writes
 * nothing more, and the thread wakes about 100 times a second (a few
 * microseconds each) only while a batch is held. */
#define RUNNING_AFTER 0.01

struct heartbeat {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* owned by the thread (only it touches them) */
  store *st;
  char *database;
  store_claim *todo; /* a copy to write without holding the lock */
  size_t todo_cap;
  /* shared, under mu */
  int quit, active;
  double lease, release_after;
  heartbeat_settle_fn settle;
  void *settle_ctx;
  int held; /* the batch's claims are transaction locks, not leases */
  int in_store; /* the worker's thread uses the store: no settle (heartbeat_store) */
  store_claim *claims;
  size_t n, cap;
  size_t current;       /* index of the job in hand */
  size_t released_from; /* == n until the tail is handed back */
  size_t recorded;      /* outcomes[0, recorded) were written by the thread */
  const store_outcome *outcomes; /* the batch's: [0, current) are final */
  double job_deadline;  /* when the job in hand overruns; INFINITY: never */
  double job_limit;     /* its time limit, for the message */
  int overrun;          /* it did: its lease is left to expire */
  int writing;          /* the thread is writing outcomes (not under mu) */
  pthread_cond_t idle;  /* signalled when writing drops to 0 */
  double batch_start, last_renew;
  unsigned long begun; /* heartbeat_begin calls: a new job in hand */
  atomic_int in_job;   /* its listener runs (heartbeat_done clears it) */
  /* the running mark (RUNNING_AFTER).  The heartbeat thread decides
   * (it owns seen_*: the begun count and in_job it last saw, and when),
   * and a thread of its own writes it (MARKER), so that a write that
   * hangs (a network cut: up to tcp_user_timeout) never delays a settle,
   * a renewal or a time limit.  Shared under mu: the mark wanted (id 0:
   * none of that batch), the one made, and the marker's quit. */
  unsigned long seen_begun;
  int seen_in_job;
  double seen_at;
  store_claim mark_want, marked;
  pthread_t marker;
  pthread_cond_t mark_cv;
  int marker_started, mark_quit;
  store *mst;       /* the marker's own store (owned by it) */
  buf error;
};

/* Copy claims[from, to) into hb->todo (thread-owned). 0 or -1. */
static int take(heartbeat *hb, size_t from, size_t to) {
  size_t k = to - from;
  if (k > hb->todo_cap) {
    store_claim *p = realloc(hb->todo, k * sizeof *p);
    if (!p) return -1;
    hb->todo = p;
    hb->todo_cap = k;
  }
  memcpy(hb->todo, hb->claims + from, k * sizeof *hb->todo);
  return 0;
}

static void record_error(heartbeat *hb, const char *what, const char *detail) {
  pthread_mutex_lock(&hb->mu);
  buf_reset(&hb->error);
  buf_adds(&hb->error, what);
  buf_adds(&hb->error, detail);
  pthread_mutex_unlock(&hb->mu);
}

/* The thread's own store, opened on first use; NULL (error recorded) if it
 * cannot be opened. */
static store *own_store(heartbeat *hb) {
  if (!hb->st) {
    buf err = BUF_INIT;
    hb->st = store_open(hb->database, &err);
    if (!hb->st) record_error(hb, "heartbeat: ", buf_cstr(&err));
    buf_free(&err);
  }
  return hb->st;
}

/* The job in hand overran its time limit while outcomes[0, k) are final
 * (they are not touched until heartbeat_end): record them now, so the jobs
 * that ran before the blocked one are not held with it.  The run records
 * them again later; writes are fenced, so the second one changes nothing.
 * Returns 1 if they were written. */
static int write_outcomes(heartbeat *hb, size_t k) {
  if (!own_store(hb)) return 0;
  if (hb->st->ops->finish(hb->st, hb->outcomes, k) == STORE_OK) return 1;
  record_error(hb, "recording outcomes: ", store_error(hb->st));
  return 0;
}

/* Write with the thread's own store, opening it on first use. */
static void write_claims(heartbeat *hb, int release, size_t k, double lease) {
  if (!own_store(hb)) return;
  int rc;
  if (release) {
    /* hand back: a batch of RELEASE outcomes */
    store_outcome *o = calloc(k, sizeof *o);
    if (!o) {
      record_error(hb, "heartbeat: ", "not enough memory");
      return;
    }
    for (size_t i = 0; i < k; i++) o[i].claim = hb->todo[i], o[i].kind = OUTCOME_RELEASE;
    rc = hb->st->ops->finish(hb->st, o, k);
    free(o);
  } else {
    rc = hb->st->ops->heartbeat(hb->st, hb->todo, k, lease, NULL);
  }
  if (rc != STORE_OK)
    record_error(hb, release ? "handing back claimed jobs: " : "renewing leases: ",
                 store_error(hb->st));
}

/* MARKER: the thread that writes the running mark (store_ops.running)
 * that the heartbeat thread wants (hb->mark_want), with a store of its
 * own.  A mark not made (the record not committed yet, or locked for a
 * moment) is tried again RUNNING_AFTER later; one that fails is not
 * (the mark is only for the eyes).  The mark of another batch is taken
 * off first. */
static void *marker_loop(void *arg) {
  heartbeat *hb = arg;
  double retry = 0;
  pthread_mutex_lock(&hb->mu);
  while (!hb->mark_quit) {
    store_claim want = hb->mark_want, had = hb->marked;
    int differs = want.id != had.id || (want.id && want.token != had.token);
    double now = clock_mono();
    if (!differs || now < retry) {
      if (!differs) {
        pthread_cond_wait(&hb->mark_cv, &hb->mu);
      } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)((retry - now) * 1e9) + 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec += ts.tv_nsec / 1000000000L,
                                       ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&hb->mark_cv, &hb->mu, &ts);
      }
      continue;
    }
    pthread_mutex_unlock(&hb->mu);
    int done = 0, failed = 0;
    buf err = BUF_INIT;
    if (!hb->mst) hb->mst = store_open(hb->database, &err);
    if (!hb->mst || !hb->mst->ops->running) {
      done = 1; /* nothing to mark with */
    } else {
      if (had.id && had.token != want.token) {
        store_claim none = {0, had.token};
        failed = hb->mst->ops->running(hb->mst, &none, none.token, &done) != STORE_OK;
        had.id = 0; /* gone with its batch, or taken off */
      }
      if (!failed && want.id == had.id) {
        done = 1;
      } else if (!failed) {
        failed = hb->mst->ops->running(hb->mst, &want, want.token, &done) != STORE_OK;
      }
      if (failed) done = 1; /* not again and again */
    }
    if (failed) record_error(hb, "marking a job running: ", store_error(hb->mst));
    buf_free(&err);
    pthread_mutex_lock(&hb->mu);
    if (done) hb->marked = want;
    else retry = clock_mono() + RUNNING_AFTER;
  }
  pthread_mutex_unlock(&hb->mu);
  return NULL;
}

/* Wait on the condition (hb->mu held) for about `wait` seconds. */
static void wait_for(heartbeat *hb, double wait) {
  if (wait < 0.001) wait = 0.001;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += (time_t)wait;
  ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
  if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
  pthread_cond_timedwait(&hb->cv, &hb->mu, &ts);
}

/* Settle the held batch (hb->mu held): only_current 1 leases only the job
 * in hand (the commit releases the unstarted rest: the batch ran long), 0
 * leases every unfinished one (a listener is about to use the API).  Either
 * way the batch is no longer held: on failure its locks are gone with the
 * transaction, so no later job of it may start. */
static void settle_locked(heartbeat *hb, int only_current) {
  size_t keep = only_current                        ? 1
                : hb->released_from > hb->current ? hb->released_from - hb->current
                                                  : 0;
  buf err = BUF_INIT;
  int rc = hb->settle(hb->settle_ctx, hb->current, keep, &err);
  hb->held = 0;
  hb->last_renew = clock_mono();
  if (rc == 0) hb->recorded = hb->current; /* the settle recorded them */
  if (rc != 0 || only_current) hb->released_from = hb->current + 1;
  if (rc != 0) {
    buf_reset(&hb->error);
    buf_adds(&hb->error, "settling a batch: ");
    buf_add(&hb->error, err.data ? err.data : "", err.len);
  }
  buf_free(&err);
}

static void *main_loop(void *arg) {
  heartbeat *hb = arg;
  pthread_mutex_lock(&hb->mu);
  while (!hb->quit) {
    if (!hb->active) {
      pthread_cond_wait(&hb->cv, &hb->mu);
      continue;
    }
    double now = clock_mono(), next;
    double renew_every = hb->lease / 3;
    size_t release_k = 0, renew_k = 0;
    int failed = 0;
    if (hb->held) {
      /* locks need no renewal; a long one becomes a lease */
      if (now - hb->batch_start >= hb->release_after) {
        /* the settle uses the worker's store: not while the worker does */
        if (hb->in_store) {
          pthread_cond_wait(&hb->cv, &hb->mu);
          continue;
        }
        settle_locked(hb, 1);
        continue;
      }
      double wake = hb->batch_start + hb->release_after;
      if (hb->n > 0) {
        int in_job = atomic_load_explicit(&hb->in_job, memory_order_relaxed);
        if (hb->begun != hb->seen_begun || in_job != hb->seen_in_job)
          hb->seen_begun = hb->begun, hb->seen_in_job = in_job, hb->seen_at = now;
        /* once what the worker does has lasted RUNNING_AFTER (see there):
         * the job in hand, whose listener runs, is marked; or no job, when
         * it waits between jobs.  Until then the mark stays as it was: a
         * job that follows a marked one replaces its mark (one write) */
        store_claim want = {0, hb->claims[hb->current].token};
        if (in_job && hb->current < hb->released_from) want.id = hb->claims[hb->current].id;
        if (now - hb->seen_at >= RUNNING_AFTER &&
            (hb->mark_want.id != want.id || hb->mark_want.token != want.token)) {
          if (!hb->marker_started && want.id) {
            hb->marker_started = pthread_create(&hb->marker, NULL, marker_loop, hb) == 0;
          }
          hb->mark_want = want;
          pthread_cond_signal(&hb->mark_cv);
        }
        if (now + RUNNING_AFTER < wake) wake = now + RUNNING_AFTER;
      }
      wait_for(hb, wake - now);
      continue;
    }
    if (!hb->overrun && now >= hb->job_deadline) {
      /* blocked outside Lua past its limit: stop renewing its lease, so it
       * expires and another worker runs the job again */
      hb->overrun = 1;
      size_t k = hb->current;
      char msg[160];
      snprintf(msg, sizeof msg,
               "job %lld is still running %g s past its timeout of %g s, blocked outside Lua; "
               "its lease is left to expire so that another worker runs it",
               (long long)hb->claims[k].id, OVERRUN_GRACE, hb->job_limit);
      if (k > hb->recorded) {
        hb->writing = 1;
        pthread_mutex_unlock(&hb->mu);
        int ok = write_outcomes(hb, k);
        pthread_mutex_lock(&hb->mu);
        hb->writing = 0;
        if (ok && k > hb->recorded) hb->recorded = k;
        pthread_cond_broadcast(&hb->idle);
      }
      pthread_mutex_unlock(&hb->mu);
      record_error(hb, "", msg);
      pthread_mutex_lock(&hb->mu);
      continue;
    }
    if (hb->released_from == hb->n && hb->current + 1 < hb->n &&
        now - hb->batch_start >= hb->release_after) {
      size_t from = hb->current + 1;
      if (take(hb, from, hb->n) == 0) {
        release_k = hb->n - from;
        hb->released_from = from;
      } else {
        failed = 1;
      }
    }
    if (release_k == 0 && !failed && now - hb->last_renew >= renew_every) {
      /* the jobs held and not yet recorded, but not one that overran */
      size_t from = hb->recorded, to = hb->overrun ? hb->current : hb->released_from;
      if (to < from) to = from;
      if (take(hb, from, to) == 0) {
        renew_k = to - from;
        hb->last_renew = now;
      } else {
        failed = 1;
      }
    }
    double lease = hb->lease;
    if (release_k || renew_k || failed) {
      pthread_mutex_unlock(&hb->mu);
      if (failed)
        record_error(hb, "heartbeat: ", "not enough memory");
      else
        write_claims(hb, release_k > 0, release_k ? release_k : renew_k, lease);
      pthread_mutex_lock(&hb->mu);
      if (failed) hb->last_renew = clock_mono(); /* do not spin */
      continue;
    }
    next = hb->last_renew + renew_every;
    if (hb->released_from == hb->n && hb->batch_start + hb->release_after < next)
      next = hb->batch_start + hb->release_after;
    if (!hb->overrun && hb->job_deadline < next) next = hb->job_deadline;
    wait_for(hb, next - now);
  }
  pthread_mutex_unlock(&hb->mu);
  return NULL;
}

heartbeat *heartbeat_start(const char *database, double lease, double release_after,
                           heartbeat_settle_fn settle, void *ctx, buf *err) {
  heartbeat *hb = calloc(1, sizeof *hb);
  if (!hb || !(hb->database = strdup(database))) {
    free(hb);
    buf_adds(err, "not enough memory");
    return NULL;
  }
  hb->lease = lease;
  hb->release_after = release_after;
  hb->settle = settle;
  hb->settle_ctx = ctx;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&hb->mu, NULL);
  pthread_cond_init(&hb->cv, &ca);
  pthread_cond_init(&hb->mark_cv, &ca);
  pthread_cond_init(&hb->idle, NULL);
  pthread_condattr_destroy(&ca);
  hb->job_deadline = INFINITY;
  int e = pthread_create(&hb->thread, NULL, main_loop, hb);
  if (e != 0) {
    buf_printf(err, "cannot start the heartbeat thread: %s", strerror(e));
    pthread_cond_destroy(&hb->idle);
    pthread_cond_destroy(&hb->mark_cv);
    pthread_cond_destroy(&hb->cv);
    pthread_mutex_destroy(&hb->mu);
    free(hb->database);
    free(hb);
    return NULL;
  }
  return hb;
}

void heartbeat_stop(heartbeat *hb) {
  if (!hb) return;
  pthread_mutex_lock(&hb->mu);
  hb->quit = 1;
  pthread_cond_signal(&hb->cv);
  pthread_mutex_unlock(&hb->mu);
  pthread_join(hb->thread, NULL);
  /* the marker: started by the thread, which is gone (no race on
   * marker_started); it may first finish a write in progress */
  pthread_mutex_lock(&hb->mu);
  hb->mark_quit = 1;
  pthread_cond_signal(&hb->mark_cv);
  pthread_mutex_unlock(&hb->mu);
  if (hb->marker_started) pthread_join(hb->marker, NULL);
  store_close(hb->mst);
  store_close(hb->st);
  pthread_cond_destroy(&hb->idle);
  pthread_cond_destroy(&hb->mark_cv);
  pthread_cond_destroy(&hb->cv);
  pthread_mutex_destroy(&hb->mu);
  buf_free(&hb->error);
  free(hb->claims);
  free(hb->todo);
  free(hb->database);
  free(hb);
}

int heartbeat_batch(heartbeat *hb, const store_claim *claims, size_t n,
                    const store_outcome *outcomes, int held) {
  pthread_mutex_lock(&hb->mu);
  if (n > hb->cap) {
    store_claim *p = realloc(hb->claims, n * sizeof *p);
    if (!p) {
      pthread_mutex_unlock(&hb->mu);
      return -1;
    }
    hb->claims = p;
    hb->cap = n;
  }
  memcpy(hb->claims, claims, n * sizeof *claims);
  hb->n = hb->released_from = n;
  hb->current = hb->recorded = 0;
  hb->held = held;
  hb->outcomes = outcomes;
  hb->job_deadline = INFINITY;
  hb->overrun = 0;
  hb->batch_start = hb->last_renew = clock_mono();
  hb->active = 1;
  pthread_cond_signal(&hb->cv);
  pthread_mutex_unlock(&hb->mu);
  return 0;
}

void heartbeat_settle(heartbeat *hb) {
  pthread_mutex_lock(&hb->mu);
  if (hb->active && hb->held) settle_locked(hb, 0);
  pthread_mutex_unlock(&hb->mu);
}

int heartbeat_begin(heartbeat *hb, size_t i, double timeout) {
  pthread_mutex_lock(&hb->mu);
  int ok = i < hb->released_from;
  if (ok) {
    hb->current = i;
    hb->begun++;
    atomic_store_explicit(&hb->in_job, 1, memory_order_relaxed);
    hb->overrun = 0;
    hb->job_limit = timeout;
    hb->job_deadline = timeout > 0 ? clock_mono() + timeout + OVERRUN_GRACE : INFINITY;
    if (timeout > 0) pthread_cond_signal(&hb->cv); /* a new wake-up time */
  }
  pthread_mutex_unlock(&hb->mu);
  return ok;
}

void heartbeat_store(heartbeat *hb, int in_store) {
  pthread_mutex_lock(&hb->mu);
  hb->in_store = in_store;
  if (!in_store) pthread_cond_signal(&hb->cv); /* a settle may wait for it */
  pthread_mutex_unlock(&hb->mu);
}

void heartbeat_done(heartbeat *hb) {
  atomic_store_explicit(&hb->in_job, 0, memory_order_relaxed);
}

size_t heartbeat_cut(heartbeat *hb, size_t i) {
  pthread_mutex_lock(&hb->mu);
  size_t from = hb->released_from;
  if (i < from) hb->released_from = i;
  pthread_mutex_unlock(&hb->mu);
  return from > i ? from : i;
}

void heartbeat_end(heartbeat *hb) {
  pthread_mutex_lock(&hb->mu);
  while (hb->writing) pthread_cond_wait(&hb->idle, &hb->mu); /* it reads the outcomes */
  hb->active = 0;
  hb->held = 0;
  hb->outcomes = NULL;
  hb->job_deadline = INFINITY;
  hb->n = hb->released_from = 0;
  atomic_store_explicit(&hb->in_job, 0, memory_order_relaxed);
  pthread_mutex_unlock(&hb->mu);
}

int heartbeat_error(heartbeat *hb, buf *out) {
  pthread_mutex_lock(&hb->mu);
  int had = hb->error.len > 0;
  if (had) {
    buf_reset(out);
    buf_add(out, hb->error.data, hb->error.len);
    buf_reset(&hb->error);
  }
  pthread_mutex_unlock(&hb->mu);
  return had;
}
