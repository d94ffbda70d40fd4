#define _GNU_SOURCE /* eventfd */
#include "fetcher.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* While jobs are in flight, expired leases are rescued this often (an
 * idle fetcher looks when next_wake says the first one expires), as in
 * loop.c. */
#define RESCUE_EVERY 1.0
/* Without notifications it looks every FALLBACK seconds at the latest. */
#define FALLBACK 15.0
/* Due jobs that a claim did not get (other workers hold them, or a
 * quarantined one waits): look again after HELD_MIN, doubling up to
 * HELD_MAX, as in loop.c. */
#define HELD_MIN 0.005
#define HELD_MAX 0.25
/* The database failing: try again after RETRY_MIN, doubling up to
 * RETRY_MAX. */
#define RETRY_MIN 0.1
#define RETRY_MAX 5.0
/* Paused names (store.h, pause): claims skip their jobs, but jobs claimed
 * before a pause may wait to be taken (the Lua thread busy in a listener
 * that blocks), or taken and not started yet (their coroutines wait their
 * turn).  While jobs are in flight, the thread looks at the paused names
 * every PAUSE_LOOK seconds: it hands back unattempted those of a paused
 * name not taken yet, and the Lua thread does not start those it took
 * (fetcher_paused). */
#define PAUSE_LOOK 1.0

/* A schedule() request: the job, its strings in the same allocation. */
typedef struct request {
  unsigned long long seq;
  store_new_job job;
} request;

/* A job in flight: claimed, until its outcome is handed over. */
typedef struct flight {
  store_claim claim;
  double deadline; /* monotonic: renewed until then (0: always) */
  int slot;        /* its name's index in the thread's names with a limit, or -1 */
} flight;

/* The names the thread claims for, its own copy (see fetcher_set_names):
 * those without a limit of their own are claimed together, each one with
 * a limit alone, up to its free slots.  set: which of those sets the
 * store has now (SET_NONE, SET_FREE, or a name's index). */
enum { SET_NONE = -2, SET_FREE = -1 };
typedef struct name_table {
  char **names;
  size_t *lens, *limits, n;
  const char **list; /* scratch for set_names */
  size_t *list_lens;
  int set;
} name_table;

struct fetcher {
  pthread_t thread;
  int started;
  pthread_mutex_t mu; /* guards everything below "shared" */
  int wake_fd;        /* eventfd: the Lua thread polls it */
  int kick_fd;        /* eventfd: the fetcher thread polls it */
  /* the fetcher thread's own */
  store *st;
  char *worker;
  size_t concurrency, batch_max;
  double lease;
  long long max_attempts;
  int history;
  /* shared */
  flight *flights;
  size_t n_flights, flights_cap;
  fetched_job **ready; /* claimed, not taken yet */
  size_t n_ready, ready_cap;
  store_outcome *outs; /* handed over, not written yet */
  size_t n_outs, outs_cap;
  int writing;  /* the thread holds outcomes it has not written yet */
  int claiming; /* the thread is claiming: jobs may come (fetcher_settled) */
  int alone;    /* a quarantined job is in flight */
  int stopping; /* fetcher_stop */
  int quit;     /* fetcher_free */
  int gave_up;  /* stopping, and a write failed: left to the leases */
  request **requests; /* schedule() requests not yet sent */
  size_t n_requests, requests_cap;
  fetch_answer *answers; /* answered, not yet taken */
  size_t n_answers, answers_cap;
  unsigned long long next_seq;
  char **names; /* the names (fetcher_set_names), copied by the thread */
  size_t *name_lens, *name_limits, n_names;
  long long *name_max; /* their listeners' max_attempts */
  int names_changed;
  int limited;    /* some name has a limit of its own */
  size_t *counts; /* jobs in flight per name with a limit (thread's order) */
  size_t *name_limits_seen; /* their limits, in the same order */
  size_t counts_cap;
  int slot_freed; /* a full name got a free slot: claim again */
  buf paused; /* the paused names as last seen (see PAUSE_LOOK, look_paused) */
  buf news;
  const char *news_level; /* NULL: no news */
  double next_cron;
};

static void signal_fd(int fd) {
  uint64_t one = 1;
  ssize_t w = write(fd, &one, sizeof one);
  (void)w; /* a full counter is readable anyway */
}

static void drain_fd(int fd) {
  uint64_t v;
  ssize_t r = read(fd, &v, sizeof v);
  (void)r; /* EAGAIN: nothing to read */
}

/* Room for n + 1 elements of `size` in *p (capacity *cap); new ones
 * zeroed.  0 or -1. */
static int grow(void **p, size_t *cap, size_t n, size_t size) {
  if (n < *cap) return 0;
  size_t c = *cap ? *cap * 2 : 16;
  void *q = realloc(*p, c * size);
  if (!q) return -1;
  memset((char *)q + *cap * size, 0, (c - *cap) * size);
  *p = q;
  *cap = c;
  return 0;
}

/* Say something to the Lua thread's log (under mu).  Messages not read
 * yet are kept, joined. */
static void say(fetcher *f, const char *level, const char *msg) {
  if (f->news_level && f->news.len) buf_adds(&f->news, "; ");
  else buf_reset(&f->news);
  buf_adds(&f->news, msg);
  if (!f->news_level || strcmp(level, "error") == 0) f->news_level = level;
  signal_fd(f->wake_fd);
}

/* Remove the flight of claim c (under mu).  1 if it was there. */
static int in_paused(const buf *paused, const char *name, size_t len);

static int land(fetcher *f, store_claim c) {
  for (size_t i = 0; i < f->n_flights; i++) {
    if (f->flights[i].claim.id == c.id && f->flights[i].claim.token == c.token) {
      int slot = f->flights[i].slot;
      if (slot >= 0 && (size_t)slot < f->counts_cap && f->counts[slot]) {
        /* its name was full: its due jobs wait for this slot */
        if (f->counts[slot]-- == f->name_limits_seen[slot]) f->slot_freed = 1;
      }
      f->flights[i] = f->flights[--f->n_flights];
      if (f->n_flights == 0) f->alone = 0;
      return 1;
    }
  }
  return 0;
}

/* Append outcome o (its error copied) to the outcomes to write (under
 * mu).  0 or -1. */
static int add_outcome(fetcher *f, const store_outcome *o) {
  if (grow((void **)&f->outs, &f->outs_cap, f->n_outs, sizeof *f->outs)) return -1;
  store_outcome *x = &f->outs[f->n_outs];
  buf_reset(&x->error);
  if (o->error.len && buf_add(&x->error, o->error.data, o->error.len)) return -1;
  x->claim = o->claim;
  x->kind = o->kind;
  x->retry_in = o->retry_in;
  x->keep = o->keep, x->started_at = o->started_at, x->duration = o->duration;
  f->n_outs++;
  return 0;
}

/* Copy s[0, n) and a NUL to *p, advancing it; returns the copy, or NULL
 * for s NULL (nothing copied).  The job copies below are one allocation,
 * sized for these. */
static const char *place(char **p, const char *s, size_t n) {
  if (!s) return NULL;
  char *at = *p;
  memcpy(at, s, n);
  at[n] = '\0';
  *p += n + 1;
  return at;
}

/* A claimed job as one allocation. */
static fetched_job *copy_job(const store_job *j, int alone) {
  size_t size = sizeof(fetched_job) + j->name_len + 1 + (j->payload ? j->payload_len + 1 : 0) +
                (j->key ? j->key_len + 1 : 0);
  fetched_job *x = malloc(size);
  if (!x) return NULL;
  char *p = (char *)(x + 1);
  x->job = *j;
  x->alone = alone;
  x->start_at = j->hold > 0 ? clock_mono() + j->hold : 0;
  x->job.state = "running";
  x->job.last_error = NULL;
  x->job.last_error_len = 0;
  x->job.name = place(&p, j->name, j->name_len);
  x->job.payload = place(&p, j->payload, j->payload_len);
  x->job.key = place(&p, j->key, j->key_len);
  return x;
}

/* The slot of job name (name, len) in t: its index if it has a limit, or
 * -1. */
static int slot_of(const name_table *t, const char *name, size_t len) {
  for (size_t i = 0; i < t->n; i++)
    if (t->limits[i] && t->lens[i] == len && memcmp(t->names[i], name, len) == 0) return (int)i;
  return -1;
}

/* Hand over the n jobs just claimed: in flight from now on.  Jobs that
 * cannot be copied (out of memory) go back unattempted. */
static void hand_over(fetcher *f, const name_table *t, const store_job *jobs, size_t n,
                      int alone) {
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < n; i++) {
    store_claim c = {jobs[i].id, jobs[i].token};
    fetched_job *x = NULL;
    if (f->stopping || f->quit) {
      /* stopped while it claimed: back unattempted */
      store_outcome back = {c, OUTCOME_RELEASE, 0, BUF_INIT, 0, NAN, 0};
      if (add_outcome(f, &back) != 0) say(f, "error", "out of memory: a claimed job waits for its lease");
      continue;
    }
    if (grow((void **)&f->flights, &f->flights_cap, f->n_flights, sizeof *f->flights) == 0 &&
        grow((void **)&f->ready, &f->ready_cap, f->n_ready, sizeof *f->ready) == 0)
      x = copy_job(&jobs[i], alone);
    if (!x) {
      store_outcome back = {c, OUTCOME_RELEASE, 0, BUF_INIT, 0, NAN, 0};
      if (add_outcome(f, &back) != 0) say(f, "error", "out of memory: a claimed job waits for its lease");
      continue;
    }
    /* the claim skipped paused names: one it took is no longer paused
     * (resumed since the last look, which the next one confirms) */
    if (f->paused.len && in_paused(&f->paused, jobs[i].name, jobs[i].name_len)) buf_reset(&f->paused);
    int slot = f->limited ? slot_of(t, jobs[i].name, jobs[i].name_len) : -1;
    if (slot >= 0 && (size_t)slot < f->counts_cap) f->counts[slot]++;
    f->flights[f->n_flights++] = (flight){c, 0, slot};
    f->ready[f->n_ready++] = x;
    if (alone) f->alone = 1;
  }
  pthread_mutex_unlock(&f->mu);
  signal_fd(f->wake_fd);
}

static void free_names(char **names, size_t *lens, size_t *limits, size_t n) {
  for (size_t i = 0; names && i < n; i++) free(names[i]);
  free(names);
  free(lens);
  free(limits);
}

int fetcher_set_names(fetcher *f, const char *const *names, const size_t *lens,
                      const size_t *limits, const long long *max_attempts, size_t n) {
  char **copy = calloc(n ? n : 1, sizeof *copy);
  size_t *clens = calloc(n ? n : 1, sizeof *clens);
  size_t *climits = calloc(n ? n : 1, sizeof *climits);
  long long *cmax = calloc(n ? n : 1, sizeof *cmax);
  int oom = !copy || !clens || !climits || !cmax;
  for (size_t i = 0; !oom && i < n; i++) {
    if (!(copy[i] = malloc(lens[i] + 1))) {
      oom = 1;
      break;
    }
    memcpy(copy[i], names[i], lens[i]);
    copy[i][lens[i]] = '\0';
    clens[i] = lens[i];
    climits[i] = limits[i];
    cmax[i] = max_attempts[i];
  }
  if (oom) {
    free_names(copy, clens, climits, n);
    free(cmax);
    return -1;
  }
  pthread_mutex_lock(&f->mu);
  free_names(f->names, f->name_lens, f->name_limits, f->n_names);
  free(f->name_max);
  f->names = copy, f->name_lens = clens, f->name_limits = climits, f->n_names = n;
  f->name_max = cmax;
  f->names_changed = 1;
  pthread_mutex_unlock(&f->mu);
  signal_fd(f->kick_fd);
  return 0;
}

/* The thread, under mu: take new names into t, and recount the jobs in
 * flight per name with a limit.  0, or -1 out of memory (t unchanged). */
static int take_names(fetcher *f, name_table *t) {
  if (!f->names_changed) return 0;
  size_t n = f->n_names;
  char **names = calloc(n ? n : 1, sizeof *names);
  size_t *lens = calloc(n ? n : 1, sizeof *lens), *limits = calloc(n ? n : 1, sizeof *limits);
  const char **list = calloc(n ? n : 1, sizeof *list);
  size_t *list_lens = calloc(n ? n : 1, sizeof *list_lens);
  size_t *counts = calloc(n ? n : 1, sizeof *counts), *seen = calloc(n ? n : 1, sizeof *seen);
  int oom = !names || !lens || !limits || !list || !list_lens || !counts || !seen;
  for (size_t i = 0; !oom && i < n; i++) {
    if (!(names[i] = malloc(f->name_lens[i] + 1))) {
      oom = 1;
      break;
    }
    memcpy(names[i], f->names[i], f->name_lens[i] + 1);
    lens[i] = f->name_lens[i];
    limits[i] = f->name_limits[i];
  }
  if (oom) {
    free_names(names, lens, limits, n);
    free(list);
    free(list_lens);
    free(counts);
    free(seen);
    return -1;
  }
  /* the crash rule's limits: memory only, no I/O under the lock */
  if (f->st->ops->set_max_attempts(f->st, (const char *const *)f->names, f->name_lens,
                                   f->name_max, n) != STORE_OK)
    oom = 1;
  if (oom) {
    free_names(names, lens, limits, n);
    free(list);
    free(list_lens);
    free(counts);
    free(seen);
    return -1;
  }
  free_names(t->names, t->lens, t->limits, t->n);
  free(t->list);
  free(t->list_lens);
  *t = (name_table){names, lens, limits, n, list, list_lens, SET_NONE};
  f->limited = 0;
  for (size_t i = 0; i < n; i++) f->limited |= limits[i] > 0;
  /* the jobs in flight now count against no name's limit: a limit set
   * while it runs applies to the jobs it claims from then on */
  memcpy(seen, limits, n * sizeof *seen);
  free(f->counts);
  free(f->name_limits_seen);
  f->counts = counts;
  f->name_limits_seen = seen;
  f->counts_cap = n;
  for (size_t k = 0; k < f->n_flights; k++) f->flights[k].slot = -1;
  f->names_changed = 0;
  return 0;
}

/* Have the store claim for set `set` (SET_FREE: the names without a limit
 * of their own; i: name i alone; SET_NONE: every name that has room,
 * for next_wake, given by room[]).  STORE_OK or its error; *empty: no
 * name in the set. */
static int use_set(fetcher *f, name_table *t, int set, const int *room, int *empty) {
  size_t k = 0;
  for (size_t i = 0; i < t->n; i++) {
    int in = set == SET_FREE ? t->limits[i] == 0
             : set == SET_NONE ? (t->limits[i] == 0 || room[i])
                               : (int)i == set;
    if (in) t->list[k] = t->names[i], t->list_lens[k++] = t->lens[i];
  }
  *empty = k == 0;
  /* SET_NONE's names change with the room: always set afresh */
  if (t->set == set && set != SET_NONE) return STORE_OK;
  int rc = f->st->ops->set_names(f->st, t->list, t->list_lens, k);
  t->set = rc == STORE_OK ? set : SET_NONE;
  return rc;
}

unsigned long long fetcher_schedule(fetcher *f, const store_new_job *j) {
  size_t size = sizeof(request) + j->name_len + 1 + (j->payload ? j->payload_len + 1 : 0) +
                (j->key ? j->key_len + 1 : 0);
  request *r = malloc(size);
  if (!r) return 0;
  char *p = (char *)(r + 1);
  r->job = *j;
  r->job.name = place(&p, j->name, j->name_len);
  r->job.payload = place(&p, j->payload, j->payload_len);
  r->job.key = place(&p, j->key, j->key_len);
  pthread_mutex_lock(&f->mu);
  unsigned long long seq = 0;
  if (grow((void **)&f->requests, &f->requests_cap, f->n_requests, sizeof *f->requests) == 0) {
    r->seq = seq = ++f->next_seq;
    f->requests[f->n_requests++] = r;
  }
  pthread_mutex_unlock(&f->mu);
  if (!seq) {
    free(r);
    return 0;
  }
  signal_fd(f->kick_fd);
  return seq;
}

size_t fetcher_answers(fetcher *f, fetch_answer *out, size_t max) {
  pthread_mutex_lock(&f->mu);
  size_t n = f->n_answers < max ? f->n_answers : max;
  if (n) {
    memcpy(out, f->answers, n * sizeof *out);
    memmove(f->answers, f->answers + n, (f->n_answers - n) * sizeof *f->answers);
  }
  f->n_answers -= n;
  if (f->n_answers) signal_fd(f->wake_fd); /* still readable */
  pthread_mutex_unlock(&f->mu);
  return n;
}

/* The thread: send the schedule() requests waiting, one by one, and post
 * their answers.  STORE_OK, or the first failure's code (that request is
 * answered with its error: the caller decides, as schedule() does).
 * *sent: how many jobs were scheduled. */
static int send_requests(fetcher *f, size_t *sent) {
  int rc = STORE_OK;
  *sent = 0;
  for (;;) {
    pthread_mutex_lock(&f->mu);
    request *r = NULL;
    if (f->n_requests) {
      r = f->requests[0];
      memmove(f->requests, f->requests + 1, (f->n_requests - 1) * sizeof *f->requests);
      f->n_requests--;
    }
    pthread_mutex_unlock(&f->mu);
    if (!r) return rc;
    int64_t id = 0;
    int src = f->st->ops->schedule(f->st, &r->job, &id);
    fetch_answer a = {r->seq, src == STORE_OK ? id : 0, NULL};
    if (src == STORE_OK) (*sent)++;
    if (src != STORE_OK) {
      rc = src;
      const char *e = store_error(f->st);
      size_t n = strlen(e);
      if ((a.error = malloc(n + 1))) memcpy(a.error, e, n + 1);
    }
    free(r);
    pthread_mutex_lock(&f->mu);
    if (grow((void **)&f->answers, &f->answers_cap, f->n_answers, sizeof *f->answers) == 0)
      f->answers[f->n_answers++] = a;
    else
      free(a.error); /* out of memory: the waiting coroutine is told by fetch_answers' caller */
    pthread_mutex_unlock(&f->mu);
    signal_fd(f->wake_fd);
  }
}

/* Stopped, and everything recorded (or given up): fetcher_settled.  With
 * f->mu held. */
static int settled(const fetcher *f) {
  return f->stopping && f->n_flights == 0 && !f->claiming &&
         ((f->n_outs == 0 && !f->writing) || f->gave_up);
}

/* The thread has just cleared one of settled()'s conditions: when that
 * settles the worker, wake the Lua thread's step, which may have looked
 * before and is waiting on the descriptor.  Every place that clears one
 * calls this (a claim that ended after stop() did not: cq:loop() waited
 * forever).  With f->mu held. */
static void signal_if_settled(fetcher *f) {
  if (settled(f)) signal_fd(f->wake_fd);
}

static double jitter(void) {
  double x = clock_mono() * 7919.0;
  return 0.75 + 0.5 * (x - floor(x));
}

/* What the thread keeps from one turn of its loop to the next: its own,
 * no lock. */
typedef struct turn {
  store_outcome *w; /* outcomes being written: swapped with f->outs */
  size_t n_w, w_cap;
  store_claim *renew; /* scratch: the claims to renew */
  size_t renew_cap;
  name_table names;
  int *room; /* free slots per name this round (1 for one without a limit) */
  size_t room_cap;
  int *sets; /* the round's claims: name indexes, SET_FREE last */
  size_t sets_cap;
  double until;  /* the one expiry of the leases in flight (database clock); 0: none */
  double offset; /* database clock minus monotonic */
  double next_prune; /* history (store.h, PRUNE_EVERY) */
  double next_renew, next_rescue, rescued_at, claim_at, held_delay, retry_at, retry_delay;
  int limit_wait; /* the last look saw due jobs wait for a concurrency limit's slot */
  double paused_at; /* the last look at the paused names (see PAUSE_LOOK) */
  int trouble, quarantine_wait, listening;
} turn;

/* Name (name, len) is in the copy `paused` (each a size_t length, then
 * its bytes). */
static int in_paused(const buf *paused, const char *name, size_t len) {
  for (size_t at = 0; at < paused->len;) {
    size_t n;
    memcpy(&n, paused->data + at, sizeof n);
    at += sizeof n;
    if (n == len && memcmp(paused->data + at, name, n) == 0) return 1;
    at += n;
  }
  return 0;
}

/* Look at the paused names (see PAUSE_LOOK): keep a copy for
 * fetcher_paused, and hand back the jobs claimed and not taken whose name
 * is paused.  STORE_OK or the store's error. */
static int look_paused(fetcher *f, turn *t, double now) {
  const char *const *names;
  const size_t *lens;
  size_t n;
  t->paused_at = now;
  if (!f->st->ops->paused_names) return STORE_OK;
  int rc = f->st->ops->paused_names(f->st, &names, &lens, &n);
  if (rc != STORE_OK) return rc;
  size_t kept = 0, back = 0;
  pthread_mutex_lock(&f->mu);
  buf_reset(&f->paused);
  for (size_t k = 0; k < n; k++)
    if (buf_add(&f->paused, &lens[k], sizeof lens[k]) || buf_add(&f->paused, names[k], lens[k])) {
      buf_reset(&f->paused); /* out of memory: the claims skip them all the same */
      t->paused_at = -INFINITY;
      break;
    }
  for (size_t i = 0; i < f->n_ready && f->paused.len; i++) {
    fetched_job *x = f->ready[i];
    store_outcome out = {{x->job.id, x->job.token}, OUTCOME_RELEASE, 0, BUF_INIT, 0, NAN, 0};
    if (in_paused(&f->paused, x->job.name, x->job.name_len) && add_outcome(f, &out) == 0) {
      land(f, out.claim);
      free(x);
      back++;
    } else {
      f->ready[kept++] = x; /* not paused (or out of memory: taken as it is) */
    }
  }
  if (f->paused.len) f->n_ready = kept;
  pthread_mutex_unlock(&f->mu);
  /* written at once (the next turn); the Lua thread hears of nothing */
  if (back) signal_fd(f->kick_fd);
  return STORE_OK;
}

int fetcher_paused(fetcher *f, const char *name, size_t len) {
  pthread_mutex_lock(&f->mu);
  int paused = f->paused.len && in_paused(&f->paused, name, len);
  pthread_mutex_unlock(&f->mu);
  return paused;
}

/* Write the outcomes the Lua thread handed over (swapped in when the
 * last ones are written).  STORE_OK, or the store's error (they are kept
 * for the next try); *worked when something was written. */
static int write_outcomes(fetcher *f, turn *t, double now, int *worked) {
  if (!t->n_w || now < t->retry_at) return STORE_OK;
  int rc = f->st->ops->finish(f->st, t->w, t->n_w);
  pthread_mutex_lock(&f->mu);
  if (rc == STORE_OK) {
    for (size_t i = 0; i < t->n_w; i++) buf_reset(&t->w[i].error);
    t->n_w = 0;
    *worked = 1;
    /* ends written: a slot of a concurrency limit that was full may be
     * free now (store_ops.limit): claim again at once, not a second later */
    if (t->limit_wait) t->claim_at = 0, t->held_delay = 0, t->limit_wait = 0;
    f->writing = 0;
    signal_if_settled(f);
  } else if (f->stopping) {
    f->gave_up = 1; /* left to the leases: stop() does not wait for the database */
    signal_fd(f->wake_fd);
  }
  pthread_mutex_unlock(&f->mu);
  return rc;
}

/* Look for the next due job of the names with room (next_wake), after a
 * round that claimed nothing, or all it could: when to claim again, when
 * to rescue, and the next recurring schedule for the Lua thread.  q_wait:
 * a quarantined job waits (claim again soon); drained: the round's claims
 * took fewer jobs than they asked, with jobs in flight (next_wake). */
static int look_ahead(fetcher *f, turn *t, size_t in_flight, int limited, int q_wait,
                      int drained) {
  store *st = f->st;
  int rc = STORE_OK, empty = 0;
  if (!t->listening) {
    rc = st->ops->listen(st, 1);
    t->listening = rc == STORE_OK;
  }
  /* a full name's jobs wait for a slot, whose end kicks this thread */
  if (rc == STORE_OK && limited) rc = use_set(f, &t->names, SET_NONE, t->room, &empty);
  store_wake wk;
  double t0 = clock_mono();
  if (rc == STORE_OK) rc = st->ops->next_wake(st, drained, &wk);
  if (rc != STORE_OK) return rc;
  double mid = (t0 + clock_mono()) / 2;
  t->offset = wk.db_now - mid;
  t->limit_wait = wk.limit_wait;
  if (wk.next_due <= wk.db_now || q_wait) {
    /* due, yet not claimed: held by others; look again soon */
    t->held_delay = t->held_delay == 0 ? HELD_MIN : fmin(t->held_delay * 2, HELD_MAX);
    t->claim_at = clock_mono() + t->held_delay;
  } else {
    t->held_delay = 0;
    t->claim_at = wk.next_due - t->offset;
  }
  if (t->claim_at > mid + FALLBACK) t->claim_at = mid + FALLBACK;
  /* not sooner than HELD_MAX after the last rescue: an expired lease it
   * could not take (another rescue, or a client, holds its row) must not
   * make it spin */
  if (in_flight == 0)
    t->next_rescue = fmax(wk.next_expiry - t->offset + 0.001, t->rescued_at + HELD_MAX);
  double cron = wk.next_cron - t->offset;
  pthread_mutex_lock(&f->mu);
  if (cron != f->next_cron) {
    f->next_cron = cron;
    signal_fd(f->wake_fd);
  }
  pthread_mutex_unlock(&f->mu);
  return STORE_OK;
}

/* One round of claims for up to `want` free slots: each name with a
 * limit alone, up to its room, then the others together.  The jobs go to
 * the Lua thread; with none, look_ahead.  *worked when jobs came. */
static int claim_round(fetcher *f, turn *t, size_t in_flight, size_t want, int *worked) {
  store *st = f->st;
  int rc = STORE_OK;
  pthread_mutex_lock(&f->mu);
  int oom = take_names(f, &t->names) != 0 ||
            grow((void **)&t->room, &t->room_cap, t->names.n, sizeof *t->room) ||
            grow((void **)&t->sets, &t->sets_cap, t->names.n, sizeof *t->sets);
  const name_table *nt = &t->names;
  for (size_t i = 0; !oom && i < nt->n; i++) {
    size_t used = i < f->counts_cap ? f->counts[i] : 0;
    t->room[i] = nt->limits[i] == 0    ? 1
                 : used < nt->limits[i] ? (int)(nt->limits[i] - used)
                                        : 0;
  }
  int limited = f->limited;
  f->claiming = !f->stopping;
  pthread_mutex_unlock(&f->mu);
  if (oom) rc = store_fail(st, STORE_NOMEM, "not enough memory");
  size_t n_sets = 0, got = 0;
  int any_free = 0, q_wait = 0, q_alone = 0, drained = 1, claims = 0;
  for (size_t i = 0; rc == STORE_OK && i < nt->n; i++) {
    if (nt->limits[i] == 0)
      any_free = 1;
    else if (t->room[i] > 0)
      t->sets[n_sets++] = (int)i;
  }
  if (any_free) t->sets[n_sets++] = SET_FREE;
  if (in_flight == 0) t->until = 0; /* a fresh group of leases */
  for (size_t j = 0; rc == STORE_OK && j < n_sets && got < want; j++) {
    int set = t->sets[j];
    size_t limit = want - got;
    if (set >= 0 && (size_t)t->room[set] < limit) limit = (size_t)t->room[set];
    if (limit > f->batch_max) limit = f->batch_max;
    int empty = 0;
    rc = use_set(f, &t->names, set, t->room, &empty);
    if (rc != STORE_OK || empty) continue;
    store_job *jobs = NULL;
    size_t n = 0;
    int q = 0;
    rc = st->ops->claim_leased(st, limit, f->lease, &t->until, f->worker,
                               in_flight == 0 && got == 0, &jobs, &n, &q);
    if (rc != STORE_OK) break;
    claims++;
    if (q == 1) q_wait = 1;
    if (n == limit) drained = 0; /* it may have more */
    if (n == 0) continue;
    hand_over(f, &t->names, jobs, n, q == 2);
    got += n;
    if (q == 2) {
      q_alone = 1;
      break; /* quarantined jobs run alone */
    }
  }
  pthread_mutex_lock(&f->mu);
  f->claiming = 0; /* what it got is in flight, or released (stopped meanwhile) */
  signal_if_settled(f);
  pthread_mutex_unlock(&f->mu);
  if (rc != STORE_OK) return rc;
  /* the look takes what one claim saw, at its clock (next_wake: drained):
   * after several (names of limits of this worker's own, each claimed
   * apart) or none, it looks at every partition */
  int one_claim = claims == 1;
  t->quarantine_wait = q_wait && !q_alone;
  if (got > 0) {
    if (t->next_renew == INFINITY) t->next_renew = clock_mono() + f->lease / 3;
    /* in flight: rescue once a second from now on, also when the last idle
     * look had no lease to watch (next_rescue INFINITY until idle again: a
     * dead worker's leases, and its limit's slots, waited for this one's
     * jobs to end) */
    double soon = clock_mono() + RESCUE_EVERY;
    if (t->next_rescue > soon) t->next_rescue = soon;
    t->held_delay = 0;
    *worked = 1;
    /* each set gave fewer than it was asked: none has more now (a claim
     * at once would take nothing, then look ahead): look ahead now,
     * knowing the sets were drained (store_ops.next_wake) */
    if (drained && got < want && !q_wait) {
      rc = look_ahead(f, t, in_flight + got, limited, 0, one_claim);
      /* a job due already came after the claim (or another claim holds
       * it): claim again at once, as without this look, not HELD_MIN later
       * (a claim that then takes nothing backs off) */
      if (rc == STORE_OK && t->held_delay > 0) t->claim_at = 0, t->held_delay = 0;
      return rc;
    }
    return STORE_OK;
  }
  if (q_wait && in_flight > 0) return STORE_OK; /* let the jobs in flight end first */
  /* drained as well, and the ends of the jobs in flight claim again */
  return look_ahead(f, t, in_flight, limited, q_wait, in_flight > 0 && one_claim);
}

/* The database failed (rc) or answered: say so once, back off. */
static void report(fetcher *f, turn *t, int rc) {
  if (rc != STORE_OK) {
    if (rc == STORE_DOWN) t->listening = 0; /* LISTEN again on the new connection */
    if (!t->trouble) {
      buf m = BUF_INIT;
      buf_adds(&m, store_error(f->st));
      buf_adds(&m, "; retrying until it works");
      pthread_mutex_lock(&f->mu);
      say(f, "warn", buf_cstr(&m));
      pthread_mutex_unlock(&f->mu);
      buf_free(&m);
    }
    t->trouble = 1;
    t->retry_at = clock_mono() + t->retry_delay * jitter();
    t->retry_delay = fmin(t->retry_delay * 2, RETRY_MAX);
    return;
  }
  if (t->trouble) {
    pthread_mutex_lock(&f->mu);
    say(f, "info", "database available again");
    pthread_mutex_unlock(&f->mu);
  }
  t->trouble = 0;
  t->retry_delay = RETRY_MIN;
}

/* Sleep until something is due (a claim, a renewal, a rescue, a retry),
 * the Lua thread kicks, or a notification comes. */
static void sleep_turn(fetcher *f, turn *t) {
  double now = clock_mono();
  pthread_mutex_lock(&f->mu);
  int more = f->n_outs > 0 && t->n_w == 0;
  int claimable = !f->stopping && !f->quit && !f->alone && f->n_flights < f->concurrency &&
                  !(t->quarantine_wait && f->n_flights > 0);
  int flying = f->n_flights > 0, stopping = f->stopping;
  pthread_mutex_unlock(&f->mu);
  if (more) return;
  double wake = now + FALLBACK;
  if (flying && !stopping && t->paused_at + PAUSE_LOOK < wake) wake = t->paused_at + PAUSE_LOOK;
  if (claimable && t->claim_at < wake) wake = t->claim_at;
  if (flying && t->next_renew < wake) wake = t->next_renew;
  if (!stopping && t->next_rescue < wake) wake = t->next_rescue;
  if (t->trouble && t->retry_at > wake) wake = t->retry_at; /* nothing before the retry */
  if (t->n_w && t->retry_at < wake) wake = t->retry_at;
  double left = wake - now;
  if (left <= 0) return;
  struct pollfd fds[2] = {{f->kick_fd, POLLIN, 0}, {-1, POLLIN, 0}};
  nfds_t nfds = 1;
  int sock = t->listening ? f->st->ops->socket(f->st) : -1;
  if (sock >= 0) fds[nfds++].fd = sock;
  if (poll(fds, nfds, (int)ceil(left * 1000)) <= 0) return;
  if (fds[0].revents) drain_fd(f->kick_fd);
  if (nfds > 1 && fds[1].revents) {
    double earliest;
    if (f->st->ops->notifications(f->st, &earliest) != STORE_OK)
      t->listening = 0;
    else if (isfinite(earliest) && earliest - t->offset < t->claim_at)
      t->claim_at = earliest - t->offset;
  }
}

static void *fetch_loop(void *arg) {
  fetcher *f = arg;
  store *st = f->st;
  turn t;
  memset(&t, 0, sizeof t);
  t.names.set = SET_NONE;
  t.next_renew = INFINITY;
  t.rescued_at = -INFINITY;
  t.retry_delay = RETRY_MIN;
  int last_tries = 0;
  for (;;) {
    double now = clock_mono();
    pthread_mutex_lock(&f->mu);
    if (t.n_w == 0 && f->n_outs > 0) {
      store_outcome *x = t.w;
      size_t xc = t.w_cap;
      t.w = f->outs, t.w_cap = f->outs_cap, t.n_w = f->n_outs;
      f->outs = x, f->outs_cap = xc, f->n_outs = 0;
    }
    f->writing = t.n_w > 0;
    /* new names and limits, before any rescue (out of memory: next turn);
     * their jobs may be due: claim (and look ahead, which reckons the
     * next rescue from their leases) now, not at a time reckoned without
     * them (the thread's first turn may come before run() gave it any) */
    int renamed = f->names_changed;
    if (take_names(f, &t.names) == 0 && renamed) t.claim_at = 0, t.held_delay = 0;
    int quit = f->quit, stopping = f->stopping;
    if (f->slot_freed) t.claim_at = 0, t.held_delay = 0, f->slot_freed = 0;
    size_t in_flight = f->n_flights;
    if (in_flight == 0) t.until = 0, t.next_renew = INFINITY;
    int can_claim = !stopping && !quit && !f->alone && in_flight < f->concurrency &&
                    !(t.quarantine_wait && in_flight > 0);
    size_t want = f->concurrency - in_flight, k = 0;
    if (in_flight && now >= t.next_renew && now >= t.retry_at && !quit) {
      if (t.renew_cap < in_flight) {
        store_claim *r = realloc(t.renew, in_flight * sizeof *r);
        if (r) t.renew = r, t.renew_cap = in_flight;
      }
      for (size_t i = 0; i < f->n_flights && i < t.renew_cap; i++) {
        const flight *x = &f->flights[i];
        /* past its limit and a second: blocked in C, left to its lease */
        if (x->deadline == 0 || now <= x->deadline + 1.0) t.renew[k++] = x->claim;
      }
    }
    pthread_mutex_unlock(&f->mu);

    if (quit) {
      /* one last write of what is left (twice: the first may only
       * reconnect), then the leases cover the rest */
      if (t.n_w && st->ops->finish(st, t.w, t.n_w) == STORE_OK) t.n_w = 0;
      if (t.n_w == 0 && ++last_tries < 3) {
        pthread_mutex_lock(&f->mu);
        int more = f->n_outs > 0;
        pthread_mutex_unlock(&f->mu);
        if (more) continue;
      }
      break;
    }
    int worked = 0;
    size_t sent = 0;
    send_requests(f, &sent); /* a failure is the request's answer */
    /* a job of its own names may be due: its own write wakes no one here
     * (SLEEP_LOCK is this session's own; SQLite's wake file, its own) */
    if (sent) t.claim_at = 0, t.held_delay = 0;
    int rc = write_outcomes(f, &t, now, &worked);
    if (rc == STORE_OK && k) {
      double u = 0;
      rc = st->ops->heartbeat(st, t.renew, k, f->lease, &u);
      if (rc == STORE_OK) {
        t.until = u;
        t.next_renew = now + f->lease / 3;
        worked = 1;
      }
    }
    if (rc == STORE_OK && now >= t.next_rescue && now >= t.retry_at && !stopping) {
      rc = st->ops->rescue(st, f->max_attempts);
      t.rescued_at = now;
      if (rc == STORE_OK) t.next_rescue = now + RESCUE_EVERY;
      /* what it gave back is due: its own notification may not reach it
       * (SQLite's wake file is its own write) */
      if (rc == STORE_OK && in_flight == 0) t.claim_at = 0, t.held_delay = 0;
    }
    if (rc == STORE_OK && in_flight && !stopping && now - t.paused_at >= PAUSE_LOOK &&
        now >= t.retry_at)
      rc = look_paused(f, &t, now);
    if (rc == STORE_OK && f->history && now >= t.retry_at && !stopping)
      rc = store_prune_due(st, now, &t.next_prune);
    if (rc == STORE_OK && can_claim && now >= t.claim_at && now >= t.retry_at)
      rc = claim_round(f, &t, in_flight, want, &worked);
    report(f, &t, rc);
    if (!worked) sleep_turn(f, &t); /* else more may be ready: look again at once */
  }
  for (size_t i = 0; i < t.w_cap; i++) buf_free(&t.w[i].error);
  free(t.w);
  free(t.renew);
  free(t.room);
  free(t.sets);
  free_names(t.names.names, t.names.lens, t.names.limits, t.names.n);
  free(t.names.list);
  free(t.names.list_lens);
  return NULL;
}

fetcher *fetcher_start(const fetcher_opts *o, buf *err) {
  fetcher *f = calloc(1, sizeof *f);
  if (!f) {
    buf_adds(err, "not enough memory");
    return NULL;
  }
  f->wake_fd = f->kick_fd = -1;
  f->next_cron = INFINITY;
  f->concurrency = o->concurrency ? o->concurrency : 1;
  f->batch_max = o->batch_max ? o->batch_max : 1;
  f->lease = o->lease;
  f->max_attempts = o->max_attempts;
  f->history = o->history;
  if (pthread_mutex_init(&f->mu, NULL) != 0) {
    free(f);
    buf_adds(err, "cannot create a mutex");
    return NULL;
  }
  f->worker = strdup(o->worker);
  f->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  f->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!f->worker || f->wake_fd < 0 || f->kick_fd < 0) {
    buf_adds(err, f->worker ? strerror(errno) : "not enough memory");
    fetcher_free(f);
    return NULL;
  }
  f->st = store_open(o->database, err);
  if (!f->st) {
    fetcher_free(f);
    return NULL;
  }
  if (!f->st->ops->claim_leased) {
    buf_adds(err, "this backend cannot run listeners concurrently");
    fetcher_free(f);
    return NULL;
  }
  /* signals are for the program's own thread (its loop stops the worker
   * gracefully on SIGTERM): the thread starts with every one blocked */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int created = pthread_create(&f->thread, NULL, fetch_loop, f) == 0;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!created) {
    buf_adds(err, "cannot start a thread");
    fetcher_free(f);
    return NULL;
  }
  f->started = 1;
  return f;
}

int fetcher_fd(fetcher *f) { return f->wake_fd; }

size_t fetcher_take(fetcher *f, fetched_job **out, size_t max) {
  double now = clock_mono();
  pthread_mutex_lock(&f->mu);
  size_t n = 0, kept = 0, due = 0;
  for (size_t i = 0; i < f->n_ready; i++) {
    fetched_job *x = f->ready[i];
    if (x->start_at > now || n == max) {
      if (x->start_at <= now) due++;
      f->ready[kept++] = x; /* (in order) */
    } else {
      out[n++] = x;
    }
  }
  f->n_ready = kept;
  if (due || f->news_level) signal_fd(f->wake_fd); /* still readable */
  pthread_mutex_unlock(&f->mu);
  return n;
}

double fetcher_next_start(fetcher *f) {
  double first = -1, now = clock_mono();
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->n_ready; i++) {
    double at = f->ready[i]->start_at;
    if (at > 0 && (first < 0 || at < first)) first = at;
  }
  pthread_mutex_unlock(&f->mu);
  return first < 0 ? -1 : first > now ? first - now : 0;
}

void fetcher_begin(fetcher *f, store_claim claim, double limit) {
  double deadline = limit > 0 ? clock_mono() + limit : 0;
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->n_flights; i++)
    if (f->flights[i].claim.id == claim.id && f->flights[i].claim.token == claim.token)
      f->flights[i].deadline = deadline;
  pthread_mutex_unlock(&f->mu);
}

int fetcher_done(fetcher *f, const store_outcome *o) {
  pthread_mutex_lock(&f->mu);
  int rc = add_outcome(f, o);
  if (rc == 0) land(f, o->claim);
  pthread_mutex_unlock(&f->mu);
  if (rc == 0) signal_fd(f->kick_fd);
  return rc;
}

void fetcher_stop(fetcher *f) {
  pthread_mutex_lock(&f->mu);
  f->stopping = 1;
  signal_fd(f->wake_fd); /* the Lua thread's step: see whether it is settled */
  /* claimed and not taken: back unattempted */
  size_t kept = 0;
  for (size_t i = 0; i < f->n_ready; i++) {
    fetched_job *x = f->ready[i];
    store_outcome back = {{x->job.id, x->job.token}, OUTCOME_RELEASE, 0, BUF_INIT, 0, NAN, 0};
    if (add_outcome(f, &back) == 0) {
      land(f, back.claim);
      free(x);
    } else {
      f->ready[kept++] = x; /* out of memory: taken later, or its lease covers it */
    }
  }
  f->n_ready = kept;
  pthread_mutex_unlock(&f->mu);
  signal_fd(f->kick_fd);
}

int fetcher_settled(fetcher *f) {
  pthread_mutex_lock(&f->mu);
  int s = settled(f);
  pthread_mutex_unlock(&f->mu);
  return s;
}

const char *fetcher_news(fetcher *f, buf *out, double *next_cron) {
  /* A step reads this first, then the answers, the jobs and whether it
   * is settled: the descriptor is drained here, before any of them, so
   * whatever the thread posts after this read signals it anew.  (Drained
   * in fetcher_take, after the answers were read, an answer posted in
   * between lost its signal: a schedule() waited forever.) */
  drain_fd(f->wake_fd);
  pthread_mutex_lock(&f->mu);
  const char *level = f->news_level;
  buf_reset(out);
  if (level) buf_add(out, f->news.data ? f->news.data : "", f->news.len);
  f->news_level = NULL;
  buf_reset(&f->news);
  *next_cron = f->next_cron;
  pthread_mutex_unlock(&f->mu);
  return level;
}

void fetcher_free(fetcher *f) {
  if (!f) return;
  if (f->started) {
    pthread_mutex_lock(&f->mu);
    f->quit = 1;
    pthread_mutex_unlock(&f->mu);
    signal_fd(f->kick_fd);
    pthread_join(f->thread, NULL);
  }
  if (f->st) store_close(f->st);
  for (size_t i = 0; i < f->n_ready; i++) free(f->ready[i]);
  free(f->ready);
  for (size_t i = 0; i < f->outs_cap; i++) buf_free(&f->outs[i].error);
  free(f->outs);
  free(f->flights);
  buf_free(&f->news);
  buf_free(&f->paused);
  free_names(f->names, f->name_lens, f->name_limits, f->n_names);
  free(f->name_max);
  free(f->counts);
  free(f->name_limits_seen);
  for (size_t i = 0; i < f->n_requests; i++) free(f->requests[i]);
  free(f->requests);
  for (size_t i = 0; i < f->n_answers; i++) free(f->answers[i].error);
  free(f->answers);
  free(f->worker);
  if (f->wake_fd >= 0) close(f->wake_fd);
  if (f->kick_fd >= 0) close(f->kick_fd);
  pthread_mutex_destroy(&f->mu);
  free(f);
}
