#define _GNU_SOURCE /* ppoll */
#include "loop.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dispatch.h"
#include "heartbeat.h"
#include "signals.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* Without notifications the loop still looks every FALLBACK seconds, in
 * case one was lost. */
#define FALLBACK 15.0
/* Expired leases (store rescue).  An idle worker looks when next_wake says
 * the first lease among its names expires, and looks again (next_wake)
 * within its own `lease` seconds: a lease taken since, by a worker with the
 * same lease, cannot expire before.  A busy worker reads no next_wake
 * between the batches of a backlog, so it runs the rescue, one indexed
 * statement, every RESCUE_EVERY seconds while it is busy (none in a busy
 * spell shorter than that): an expired lease comes back within a second
 * whatever the workers are doing between batches. */
#define RESCUE_EVERY 1.0
/* A batch should take about this long (seconds), so that a crash repeats
 * little and a slow job holds few others back. */
#define BATCH_TARGET 0.05
/* Recurring schedules are turned into jobs this long before their slot, so
 * the slot's job is an ordinary future job that the timer runs on time. */
#define TICK_AHEAD 1.0
/* After a failing recurring-schedule tick, wait this long before the next. */
#define TICK_RETRY 5.0
#define RECONNECT_MIN 0.1
#define RECONNECT_MAX 5.0
/* Due jobs that the claim skipped are held by other workers' batches, or
 * locked by another client (row locks): look again after this long,
 * doubling up to HELD_MAX (a batch ends within a second, finished or turned
 * into leases, which next_wake does not count as due).  A worker that dies
 * mid-batch, and a client that ends its transaction, unlock the rows
 * without any notification: this is how the others see them, so HELD_MAX
 * is how much longer than the lock such a job may wait (a claim every
 * HELD_MAX seconds meanwhile). */
#define HELD_MIN 0.005
#define HELD_MAX 0.25
/* Paused names (store.h, pause): a claim skips their jobs, but a batch
 * claimed before the pause may hold some.  Before starting a job, the
 * loop looks at the paused names if it last did PAUSE_LOOK seconds ago or
 * more (one small read: nothing measurable on a backlog), and hands a job
 * of a paused name back unattempted instead. */
#define PAUSE_LOOK 1.0

typedef struct run_state {
  lua_State *L;
  core *c;
  int self, env, handler;
  const loop_opts *o;
  heartbeat *hb;
  store_claim *claims;
  size_t claims_cap;
  size_t settled;    /* outcomes of the batch already recorded by a settle */
  /* The batch run_batch is dispatching (batch_n 0: none), kept here so
   * that a Lua error escaping mid-batch can still end it (loop_run). */
  size_t batch_n;
  size_t batch_next; /* jobs [0, batch_next) have their final outcome */
  double offset;     /* database clock minus monotonic clock */
  double deadline;   /* monotonic time of the next claim */
  double next_rescue;
  double next_prune; /* history (store.h, PRUNE_EVERY) */
  double end;        /* monotonic time the run returns (INFINITY: none) */
  int result;        /* loop_run's: 0, or -1 with the reason in c->msg */
  double next_tick;  /* a recurring schedule is due */
  int tick_failed;   /* the last tick failed: next_tick is its retry */
  double retry_delay;
  double held_delay; /* see HELD_MIN; 0: claim again at once */
  int trouble;       /* the database is failing; reported once */
  long long count;
  double paused_at;  /* monotonic time of the last look at the paused names */
  buf paused;        /* their copy: each a size_t length, then its bytes */
} run_state;

static void log_msg(run_state *r, const char *level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Format a message into c->msg (whole: as long as it is).  0, or -1 when
 * it cannot (out of memory: the line is dropped). */
static int format_msg(run_state *r, const char *fmt, va_list ap) {
  buf *m = &r->c->msg;
  va_list again;
  va_copy(again, ap);
  buf_reset(m);
  int n = vsnprintf(NULL, 0, fmt, ap);
  int rc = n < 0 || buf_reserve(m, (size_t)n) ? -1 : 0;
  if (rc == 0) {
    vsnprintf(m->data, (size_t)n + 1, fmt, again);
    m->len = (size_t)n;
  }
  va_end(again);
  return rc;
}

/* Format a message into c->msg and hand it to the log function. */
static void log_msg(run_state *r, const char *level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = format_msg(r, fmt, ap);
  va_end(ap);
  if (rc == 0) dispatch_log(r->L, r->env, level, r->c->msg.data);
}

/* Sleep until `until` (monotonic) or until a descriptor is readable.
 * Returns a bit mask: 1 = store socket, 2 = signal. */
static int wait_until(double until, int store_fd, int sig_fd) {
  struct pollfd fds[2];
  nfds_t n = 0;
  int which[2];
  if (store_fd >= 0) fds[n].fd = store_fd, fds[n].events = POLLIN, which[n++] = 1;
  if (sig_fd >= 0) fds[n].fd = sig_fd, fds[n].events = POLLIN, which[n++] = 2;
  double left = until - clock_mono();
  if (left < 0) left = 0;
  struct timespec ts, *tsp = NULL;
  if (isfinite(left)) {
    if (left > 86400) left = 86400;
    ts.tv_sec = (time_t)left;
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    tsp = &ts;
  }
  int rc = ppoll(fds, n, tsp, NULL);
  int mask = 0;
  for (nfds_t i = 0; rc > 0 && i < n; i++)
    if (fds[i].revents) mask |= which[i];
  return mask;
}

static int stop_requested(run_state *r) { return r->c->stopping || signals_take() != 0; }

/* First line of a message, for logs. */
static int first_line(const char *s) { return (int)strcspn(s, "\n"); }

/* Record the outcomes in hand.  STORE_OK clears them. */
static int flush(run_state *r) {
  core *c = r->c;
  if (c->n_outcomes == 0) return STORE_OK;
  int rc = c->st->ops->finish(c->st, c->outcomes, c->n_outcomes);
  if (rc == STORE_OK) c->n_outcomes = 0;
  return rc;
}

static int reserve_batch(run_state *r, size_t n) {
  core *c = r->c;
  if (n > c->outcomes_cap) {
    store_outcome *o = realloc(c->outcomes, n * sizeof *o);
    if (!o) return -1;
    memset(o + c->outcomes_cap, 0, (n - c->outcomes_cap) * sizeof *o);
    c->outcomes = o;
    c->outcomes_cap = n;
  }
  if (n > r->claims_cap) {
    store_claim *k = realloc(r->claims, n * sizeof *k);
    if (!k) return -1;
    r->claims = k;
    r->claims_cap = n;
  }
  return 0;
}

/* Format a message into c->msg and hand it to the log function with the
 * job's fields (dispatch_log_job). */
static void log_job(run_state *r, const char *level, const job_log *f, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void log_job(run_state *r, const char *level, const job_log *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = format_msg(r, fmt, ap);
  va_end(ap);
  if (rc == 0) dispatch_log_job(r->L, r->env, level, r->c->msg.data, f);
}

/* The fields of job j's log lines. */
static job_log job_fields(run_state *r, const store_job *j, const char *event) {
  job_log f = {event, NULL, (long long)j->id, j->attempt, j->name, j->name_len, -1, -1,
               r->c->worker_id};
  return f;
}

/* A job starts: a debug line, built only when the log wants debug lines
 * (so that a success costs nothing at the default level). */
static void log_start(run_state *r, const store_job *j) {
  if (!r->c->log_debug) return;
  job_log f = job_fields(r, j, "job_start");
  log_job(r, "debug", &f, "job %lld (%.*s) started, attempt %lld", (long long)j->id,
          (int)(j->name_len > 80 ? 80 : j->name_len), j->name, j->attempt);
}

/* A job ended after `took` seconds: a failure is logged (warn when it will
 * be retried, error on its last attempt), a snooze at info; a success only
 * at debug. */
static void log_outcome(run_state *r, const store_job *j, const store_outcome *o, double took) {
  const char *e = buf_cstr(&o->error);
  int shown = (int)(j->name_len > 80 ? 80 : j->name_len);
  job_log f = job_fields(r, j, "job_end");
  f.duration = took;
  if (o->kind == OUTCOME_RETRY) {
    f.outcome = "retry";
    f.retry_in = o->retry_in;
    log_job(r, "warn", &f,
            "job %lld (%.*s) failed on attempt %lld after %.3f s; retrying in %.1f s: %.*s",
            (long long)j->id, shown, j->name, j->attempt, took, o->retry_in, first_line(e), e);
  } else if (o->kind == OUTCOME_FAILED) {
    f.outcome = "failed";
    log_job(r, "error", &f, "job %lld (%.*s) failed on its last attempt (%lld) after %.3f s: %.*s",
            (long long)j->id, shown, j->name, j->attempt, took, first_line(e), e);
  } else if (o->kind == OUTCOME_SNOOZE) {
    /* flow control, not a failure: info (an operator wants to see a
     * back-off happen; a success is debug) */
    f.outcome = "snoozed";
    f.retry_in = o->retry_in;
    log_job(r, "info", &f, "job %lld (%.*s) snoozed on attempt %lld after %.3f s; again in %.1f s",
            (long long)j->id, shown, j->name, j->attempt, took, o->retry_in);
  } else if (o->kind == OUTCOME_DONE && r->c->log_debug) {
    f.outcome = "done";
    log_job(r, "debug", &f, "job %lld (%.*s) done in %.3f s, attempt %lld", (long long)j->id, shown,
            j->name, took, j->attempt);
  }
}

/* End the batch in hand: the jobs from batch_next on go back unattempted
 * (those the heartbeat thread did not hand back already), then the
 * outcomes are recorded.  Also how loop_run ends a batch that a Lua error
 * left mid-way: no Lua code runs here. */
static void end_batch(run_state *r) {
  core *c = r->c;
  size_t done = r->batch_next;
  size_t upto = heartbeat_cut(r->hb, done);
  for (size_t k = done; k < upto; k++) {
    c->outcomes[k].claim = r->claims[k];
    c->outcomes[k].kind = OUTCOME_RELEASE;
  }
  heartbeat_end(r->hb); /* from here on the thread settles nothing */
  /* Say now why the batch ended early (a settle that failed: the network
   * is cut, say), before the flush below, which may spend connect_timeout
   * reconnecting. */
  if (heartbeat_error(r->hb, &c->msg)) dispatch_log(r->L, r->env, "warn", buf_cstr(&c->msg));
  r->batch_n = 0;
  c->n_outcomes = upto;
  if (r->settled) {
    /* recorded already: rotate them out (each outcome owns its error buffer) */
    for (size_t i = 0; i + r->settled < upto; i++) {
      store_outcome t = c->outcomes[i];
      c->outcomes[i] = c->outcomes[i + r->settled];
      c->outcomes[i + r->settled] = t;
    }
    c->n_outcomes -= r->settled;
  }
  int rc = flush(r);
  if (rc != STORE_OK)
    log_msg(r, "warn", "could not record the outcomes of %zu jobs yet: %s", c->n_outcomes,
            store_error(c->st));
}

/* 1 when job j's name is paused (see PAUSE_LOOK).  A failed look keeps
 * the last copy (the claims skip paused names all the same). */
static int paused(run_state *r, const store_job *j) {
  core *c = r->c;
  double now = clock_mono();
  if (!c->st->ops->paused_names) return 0;
  if (now - r->paused_at >= PAUSE_LOOK) {
    const char *const *names;
    const size_t *lens;
    size_t n;
    r->paused_at = now;
    if (c->st->ops->paused_names(c->st, &names, &lens, &n) == STORE_OK) {
      buf_reset(&r->paused);
      for (size_t i = 0; i < n; i++)
        if (buf_add(&r->paused, (const char *)&lens[i], sizeof lens[i]) ||
            buf_add(&r->paused, names[i], lens[i])) {
          buf_reset(&r->paused);
          r->paused_at = -INFINITY; /* out of memory: look again next time */
          break;
        }
    }
  }
  for (size_t at = 0; at < r->paused.len;) {
    size_t len;
    memcpy(&len, r->paused.data + at, sizeof len);
    at += sizeof len;
    if (len == j->name_len && memcmp(r->paused.data + at, j->name, len) == 0) return 1;
    at += len;
  }
  return 0;
}

/* Dispatch a claimed batch.  Returns LUA_OK or LUA_ERRMEM. */
static int run_batch(run_state *r, store_job *jobs, size_t n) {
  core *c = r->c;
  double claimed = clock_mono(); /* (a job's hold counts from its claim) */
  if (reserve_batch(r, n)) {
    /* cannot even track them: give the claims back */
    return LUA_ERRMEM;
  }
  for (size_t i = 0; i < n; i++) {
    r->claims[i].id = jobs[i].id;
    r->claims[i].token = jobs[i].token;
  }
  r->settled = 0;
  if (heartbeat_batch(r->hb, r->claims, n, c->outcomes,
                      c->st->ops->held && c->st->ops->held(c->st)))
    return LUA_ERRMEM;
  r->batch_n = n;
  r->batch_next = 0;
  int status = LUA_OK;
  /* stop(): the unstarted jobs go back at once (end_batch) */
  while (r->batch_next < n && status == LUA_OK && !stop_requested(r)) {
    size_t i = r->batch_next;
    if (jobs[i].hold > 0) {
      /* claimed ahead of its rate's token: it starts then (store.h,
       * STORE_RATE_AHEAD), or goes back with a stop meanwhile */
      double at = claimed + jobs[i].hold;
      while (clock_mono() < at && !(wait_until(at, -1, signals_fd()) & 2)) continue;
      if (stop_requested(r)) break;
    }
    double limit = dispatch_timeout(r->L, c, r->env, &jobs[i]);
    if (!heartbeat_begin(r->hb, i, limit)) break; /* the thread gave the rest back */
    /* the store's two questions, while the thread may not settle (it
     * would use the same connection: heartbeat_store) */
    heartbeat_store(r->hb, 1);
    int is_paused = paused(r, &jobs[i]);
    int is_cancelled = !is_paused && c->st->ops->cancels && c->st->ops->cancels(c->st, r->claims, n, i);
    heartbeat_store(r->hb, 0);
    if (is_paused) {
      /* its name was paused since the claim: back unattempted */
      c->outcomes[i].claim = r->claims[i];
      c->outcomes[i].kind = OUTCOME_RELEASE;
      buf_reset(&c->outcomes[i].error);
      r->batch_next = i + 1;
      continue;
    }
    if (is_cancelled) {
      /* cancel() asked before it started: it never runs */
      c->outcomes[i].claim = r->claims[i];
      c->outcomes[i].kind = OUTCOME_CANCELLED;
      buf_reset(&c->outcomes[i].error);
      c->outcomes[i].keep = dispatch_history(r->L, c, r->env, jobs[i].name, jobs[i].name_len);
      c->outcomes[i].started_at = NAN, c->outcomes[i].duration = 0;
      r->batch_next = i + 1;
      continue;
    }
    log_start(r, &jobs[i]);
    /* history: read before the listener runs (a lookup in a Lua table;
     * when it is off, nothing more is done per job) */
    double keep = dispatch_history(r->L, c, r->env, jobs[i].name, jobs[i].name_len);
    double wall = keep > 0 ? clock_wall() : NAN;
    double t0 = clock_mono();
    status = dispatch_job(r->L, c, r->env, r->handler, &jobs[i], limit, &c->outcomes[i]);
    double took = clock_mono() - t0;
    heartbeat_done(r->hb);
    /* before batch_next moves past it: then a settle may record it */
    c->outcomes[i].keep = keep, c->outcomes[i].started_at = wall, c->outcomes[i].duration = took;
    r->batch_next = i + 1;
    c->job_seconds = 0.8 * c->job_seconds + 0.2 * took;
    if (c->outcomes[i].kind != OUTCOME_RELEASE) r->count++;
    log_outcome(r, &jobs[i], &c->outcomes[i], took);
  }
  end_batch(r);
  return status;
}

/* heartbeat_settle_fn: end the held batch early (see heartbeat.h). */
static int settle_batch(void *ctx, size_t current, size_t keep, buf *err) {
  run_state *r = ctx;
  core *c = r->c;
  int rc = c->st->ops->settle(c->st, c->outcomes, current, r->claims + current, keep, c->lease,
                              c->worker_id);
  if (rc == STORE_OK)
    r->settled = current;
  else
    buf_adds(err, store_error(c->st));
  return rc;
}

static size_t batch_size(core *c) {
  double want = BATCH_TARGET / (c->job_seconds > 1e-7 ? c->job_seconds : 1e-7);
  if (want < 1) return 1;
  if (want > (double)c->batch_max) return c->batch_max;
  return (size_t)want;
}

/* The database failed (rc).  Drain mode gives up; otherwise report once
 * and back off (until `end` at the latest); the next store call reconnects.
 * Returns 0 to go on, -1 to end the run. */
static int trouble(run_state *r, int rc, double end) {
  core *c = r->c;
  if (rc == STORE_NOMEM || r->o->drain) {
    buf_reset(&c->msg);
    buf_adds(&c->msg, store_error(c->st));
    return -1;
  }
  if (!r->trouble) {
    log_msg(r, "warn", "%s; retrying until it works", store_error(c->st));
    r->trouble = 1;
  }
  double jitter = 0.75 + 0.5 * ((double)rand() / RAND_MAX);
  double until = clock_mono() + r->retry_delay * jitter;
  r->retry_delay = r->retry_delay * 2 > RECONNECT_MAX ? RECONNECT_MAX : r->retry_delay * 2;
  r->deadline = 0;
  r->next_rescue = 0;
  wait_until(until < end ? until : end, -1, signals_fd());
  return 0;
}

static void recovered(run_state *r) {
  if (r->trouble) log_msg(r, "info", "database available again");
  r->trouble = 0;
  r->retry_delay = RECONNECT_MIN;
}

/* The loop itself, called in protected mode by loop_run: (run_state
 * light userdata, the core userdata, its env table). */
static int loop_body(lua_State *L) {
  run_state *r = lua_touserdata(L, 1);
  core *c = r->c;
  const loop_opts *o = r->o;
  int self = r->self = 2, env = r->env = 3;
  r->handler = dispatch_handler(L, c);
  for (;;) {
    if (stop_requested(r) || clock_mono() >= r->end) break;
    if (heartbeat_error(r->hb, &c->msg)) dispatch_log(L, env, "warn", buf_cstr(&c->msg));
    const char *warning = c->st->ops->warning ? c->st->ops->warning(c->st) : NULL;
    if (warning) log_msg(r, "warn", "%s", warning);
    int rc = flush(r);
    if (rc == STORE_OK && !o->drain) rc = c->st->ops->listen(c->st, 1);
    if (rc == STORE_OK && clock_mono() >= r->next_tick) {
      /* due recurring schedules become jobs (policy in Lua) */
      r->tick_failed = dispatch_tick(L, env, r->handler, self, TICK_AHEAD) != 0;
      r->next_tick = r->tick_failed ? clock_mono() + TICK_RETRY : INFINITY;
      r->deadline = 0;
    }
    if (rc == STORE_OK && clock_mono() >= r->deadline) {
      double now = clock_mono();
      if (r->next_rescue >= 0 && now >= r->next_rescue) {
        rc = c->st->ops->rescue(c->st, c->max_attempts);
        if (rc == STORE_OK) r->next_rescue = now + RESCUE_EVERY; /* idle: next_wake decides */
      }
      if (rc == STORE_OK && (c->history > 0 || c->history_any))
        rc = store_prune_due(c->st, now, &r->next_prune);
      store_job *jobs = NULL;
      size_t n = 0;
      if (rc == STORE_OK) rc = c->st->ops->claim(c->st, batch_size(c), c->lease, c->worker_id,
                                                 c->max_attempts, &jobs, &n);
      if (rc == STORE_OK) recovered(r);
      if (r->next_rescue < 0) r->next_rescue = 0; /* the first claim done: rescue next */
      if (rc == STORE_OK && n > 0) {
        r->held_delay = 0;
        if (r->next_rescue > now + RESCUE_EVERY) r->next_rescue = now + RESCUE_EVERY; /* busy */
        if (run_batch(r, jobs, n) == LUA_ERRMEM) {
          buf_reset(&c->msg);
          buf_adds(&c->msg, "not enough memory");
          r->result = -1;
          break;
        }
        continue; /* more may be due: claim again right away */
      }
      if (rc == STORE_OK && o->drain) break;
      if (rc == STORE_OK) {
        store_wake w;
        double t0 = clock_mono();
        rc = c->st->ops->next_wake(c->st, 0, &w);
        if (rc == STORE_OK) {
          double mid = (t0 + clock_mono()) / 2;
          r->offset = w.db_now - mid;
          r->deadline = mid + (c->lease < FALLBACK ? c->lease : FALLBACK); /* see RESCUE_EVERY */
          double due = w.next_due - r->offset;
          int held = w.next_due <= w.db_now, backing_off = held && r->held_delay > 0;
          if (held) {
            /* due, yet not claimed: it came due since the claim (claim
             * again at once), or other workers' batches hold it (then
             * back off) */
            due = clock_mono() + r->held_delay;
            r->held_delay = r->held_delay == 0            ? HELD_MIN
                            : r->held_delay * 2 > HELD_MAX ? HELD_MAX
                                                           : r->held_delay * 2;
          } else {
            r->held_delay = 0;
          }
          if (due < r->deadline) r->deadline = due;
          r->next_rescue = w.next_expiry - r->offset + 0.001;
          /* what is due and not claimed by the claim that just looked
           * may be the batch of a worker that died, which claims skip until
           * a rescue has found it (see store_pg_claim.c's Q_CLAIM): rescue
           * when looking again (not when it came due since: that claim
           * goes at once, and a rescue before it would make it late) */
          if (backing_off && due < r->next_rescue) r->next_rescue = due;
          if (r->next_rescue < r->deadline) r->deadline = r->next_rescue;
          /* the earliest schedule, also one declared or moved by another
           * process since the last tick (its notification woke us) */
          double tick = w.next_cron - r->offset - TICK_AHEAD;
          if (!r->tick_failed && tick < r->next_tick) r->next_tick = tick;
          if (r->next_tick < r->deadline) r->deadline = r->next_tick;
        }
      }
    }
    if (rc != STORE_OK) {
      if (trouble(r, rc, r->end) < 0) {
        r->result = -1;
        break;
      }
      continue;
    }
    /* Wake-ups already buffered by libpq first, then sleep. */
    for (;;) {
      double earliest;
      rc = c->st->ops->notifications(c->st, &earliest);
      if (rc != STORE_OK) break;
      if (earliest - r->offset < r->deadline) r->deadline = earliest - r->offset;
      double until = r->deadline < r->end ? r->deadline : r->end;
      if (clock_mono() >= until || stop_requested(r)) break;
      int ready = wait_until(until, c->st->ops->socket(c->st), signals_fd());
      if (!(ready & 1)) break;
    }
    if (rc != STORE_OK && trouble(r, rc, r->end) < 0) {
      r->result = -1;
      break;
    }
  }
  return 0;
}

int loop_run(lua_State *L, core *c, int self, int env, const loop_opts *o, long long *count) {
  run_state r;
  memset(&r, 0, sizeof r);
  r.paused_at = -INFINITY;
  r.L = L, r.c = c, r.self = self, r.env = env, r.o = o;
  r.retry_delay = RECONNECT_MIN;
  r.held_delay = 0;
  /* The first rescue comes after the first claim (-1), off the way to the
   * first job: on a new connection its statements take several
   * milliseconds, and what it would bring back is found then anyway (an
   * expired lease by next_wake, a dead worker's batch, which claims skip,
   * as due jobs not claimed).  A drain, which ends when it finds nothing,
   * rescues first. */
  r.next_rescue = o->drain ? 0 : -1;
  r.end = o->seconds >= 0 ? clock_mono() + o->seconds : INFINITY;
  double release_after = c->lease / 4 < 1.0 ? c->lease / 4 : 1.0;

  buf_reset(&c->msg);
  if (!lua_checkstack(L, 8)) {
    buf_adds(&c->msg, "not enough memory");
    return -1;
  }
  r.hb = heartbeat_start(c->database, c->lease, release_after, settle_batch, &r, &c->msg);
  if (!r.hb) return -1;
  c->hb = r.hb;
  if (signals_acquire() != 0) {
    heartbeat_stop(r.hb);
    c->hb = NULL;
    buf_reset(&c->msg);
    buf_printf(&c->msg, "cannot install signal handlers: %s", strerror(errno));
    return -1;
  }

  /* From here on everything run() set up must be undone, whatever happens:
   * the loop runs in protected mode, so that a Lua error raised in our own
   * C code (a memory error while building a listener's arguments, say)
   * comes back here instead of unwinding past the cleanup below. */
  lua_pushcfunction(L, loop_body);
  lua_pushlightuserdata(L, &r);
  lua_pushvalue(L, self);
  lua_pushvalue(L, env);
  int status = lua_pcall(L, 3, 0, 0);
  r.self = self, r.env = env; /* the body's indexes were its own */
  if (status != LUA_OK && r.batch_n) end_batch(&r); /* the error came mid-batch */

  /* Record what is in hand (once more if the database was away); with
   * nothing in hand, finish still ends a claim transaction the store kept
   * open (store.h). */
  if (c->st->ops->finish(c->st, c->outcomes, c->n_outcomes) != STORE_OK) {
    if (c->n_outcomes)
      log_msg(&r, "error",
              "could not record the outcomes of %zu jobs: %s; they will run again when their "
              "lease expires",
              c->n_outcomes, store_error(c->st));
    else
      log_msg(&r, "error", "%s", store_error(c->st));
  }
  c->n_outcomes = 0;
  c->st->ops->listen(c->st, 0); /* failure means no connection: nothing to stop */
  c->hb = NULL;
  heartbeat_stop(r.hb);
  signals_release();
  free(r.claims);
  buf_free(&r.paused);
  *count = r.count;
  if (status == LUA_ERRMEM) {
    lua_pop(L, 1);
    buf_reset(&c->msg);
    buf_adds(&c->msg, "not enough memory");
    return -1;
  }
  return status == LUA_OK ? r.result : -2;
}
