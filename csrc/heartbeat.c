#include "heartbeat.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

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
  store_claim *claims;
  size_t n, cap;
  size_t current;       /* index of the job in hand */
  size_t released_from; /* == n until the tail is handed back */
  double batch_start, last_renew;
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

/* Write with the thread's own store, opening it on first use. */
static void write_claims(heartbeat *hb, int release, size_t k, double lease) {
  if (!hb->st) {
    buf err = BUF_INIT;
    hb->st = store_open(hb->database, &err);
    if (!hb->st) {
      record_error(hb, "heartbeat: ", buf_cstr(&err));
      buf_free(&err);
      return;
    }
  }
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
    rc = hb->st->ops->heartbeat(hb->st, hb->todo, k, lease);
  }
  if (rc != STORE_OK)
    record_error(hb, release ? "handing back claimed jobs: " : "renewing leases: ",
                 store_error(hb->st));
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

/* Settle the held batch (hb->mu held): keep_rest 0 keeps only the job in
 * hand (the rest were released by the commit), 1 keeps every unfinished
 * one.  Either way the batch is no longer held: on failure its locks are
 * gone with the transaction, so no later job of it may start. */
static void settle_locked(heartbeat *hb, int only_current) {
  size_t keep = only_current                        ? 1
                : hb->released_from > hb->current ? hb->released_from - hb->current
                                                  : 0;
  buf err = BUF_INIT;
  int rc = hb->settle(hb->settle_ctx, hb->current, keep, &err);
  hb->held = 0;
  hb->last_renew = clock_mono();
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
        settle_locked(hb, 1);
        continue;
      }
      wait_for(hb, hb->batch_start + hb->release_after - now);
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
      if (take(hb, 0, hb->released_from) == 0) {
        renew_k = hb->released_from;
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
  pthread_condattr_destroy(&ca);
  int e = pthread_create(&hb->thread, NULL, main_loop, hb);
  if (e != 0) {
    buf_printf(err, "cannot start the heartbeat thread: %s", strerror(e));
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
  store_close(hb->st);
  pthread_cond_destroy(&hb->cv);
  pthread_mutex_destroy(&hb->mu);
  buf_free(&hb->error);
  free(hb->claims);
  free(hb->todo);
  free(hb->database);
  free(hb);
}

int heartbeat_batch(heartbeat *hb, const store_claim *claims, size_t n, int held) {
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
  hb->current = 0;
  hb->held = held;
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

int heartbeat_begin(heartbeat *hb, size_t i) {
  pthread_mutex_lock(&hb->mu);
  int ok = i < hb->released_from;
  if (ok) hb->current = i;
  pthread_mutex_unlock(&hb->mu);
  return ok;
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
  hb->active = 0;
  hb->held = 0;
  hb->n = hb->released_from = 0;
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
