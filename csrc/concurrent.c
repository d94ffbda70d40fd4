/*
 * concurrent.c: the Lua side of a worker that runs several listeners at
 * once (lua/scheduler/concurrent.lua drives it): the Core methods that
 * start its fetcher (fetcher.h), take the jobs it claimed as ready-made
 * listener calls, hand their outcomes back, and limit a listener's time
 * on its own coroutine.  Registered by core.c with its own methods.
 */
#include "concurrent.h"

#include <lauxlib.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dispatch.h"
#include "fetcher.h"
#include "json.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* Jobs fetch_take hands out per call at most (the rest wait for the next
 * step: other coroutines get their turn). */
#define TAKE_MAX 256

static core *check_fetching(lua_State *L) {
  core *c = core_check(L);
  if (!c->fetch) luaL_error(L, "scheduler: the concurrent worker is not started");
  return c;
}

/* c:fetch_start(concurrency) -> true | nil, err */
static int l_fetch_start(lua_State *L) {
  core *c = core_check(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 1 && n <= 100000, 2, "concurrency must be 1..100000");
  if (c->running || c->fetch) {
    lua_pushnil(L);
    lua_pushliteral(L, "scheduler: run: already running");
    return 2;
  }
  fetcher_opts o = {c->database, c->worker_id, (size_t)n, c->batch_max, c->lease,
                    c->max_attempts, c->history > 0 || c->history_any};
  buf err = BUF_INIT;
  c->fetch = fetcher_start(&o, &err);
  if (!c->fetch) {
    lua_pushnil(L);
    lua_pushfstring(L, "scheduler: run: %s", buf_cstr(&err));
    buf_free(&err);
    return 2;
  }
  c->running = 1;
  c->stopping = 0;
  lua_getiuservalue(L, 1, 1);
  if (core_sync_names(L, c, lua_gettop(L)) != STORE_OK) return luaL_error(L, "not enough memory");
  lua_pushboolean(L, 1);
  return 1;
}

/* c:fetch_fd() -> descriptor, readable when fetch_take or fetch_news has
 * something */
static int l_fetch_fd(lua_State *L) {
  core *c = check_fetching(L);
  lua_pushinteger(L, fetcher_fd(c->fetch));
  return 1;
}

/* Protected part of fetch_take: (fetched job, core, env) -> the entry
 * {fn, payload, job, limit, id, token, attempt, max}; or nil, "release"
 * (no listener for its name any more); or nil, message, max (its payload
 * cannot be read: it fails as a listener error would). */
static int build_entry(lua_State *L) {
  const fetched_job *x = lua_touserdata(L, 1);
  core *c = lua_touserdata(L, 2);
  const store_job *j = &x->job;
  lua_getfield(L, 3, "listeners");
  lua_pushlstring(L, j->name, j->name_len);
  int name_idx = lua_gettop(L);
  lua_pushvalue(L, name_idx);
  if (lua_rawget(L, -3) == LUA_TNIL) {
    lua_pushnil(L);
    lua_pushliteral(L, "release");
    return 2;
  }
  int fn = lua_gettop(L);
  long long max = dispatch_max_attempts(L, c, 3, name_idx, j->max_attempts);
  double limit = dispatch_timeout(L, c, 3, j);
  double keep = dispatch_history(L, c, 3, j->name, j->name_len);
  lua_createtable(L, 0, 10);
  int e = lua_gettop(L);
  if (keep > 0) {
    /* history: it starts now (fetch_take), on the worker's wall clock */
    lua_pushnumber(L, keep);
    lua_setfield(L, e, "keep");
    lua_pushnumber(L, clock_wall());
    lua_setfield(L, e, "wall");
  }
  if (j->payload) {
    if (!json_decode(L, j->payload, j->payload_len)) {
      lua_pushnil(L);
      lua_pushfstring(L, "payload of job %I: %s", (lua_Integer)j->id, lua_tostring(L, -2));
      lua_pushinteger(L, (lua_Integer)max);
      return 3;
    }
    lua_setfield(L, e, "payload");
  }
  lua_pushvalue(L, fn);
  lua_setfield(L, e, "fn");
  dispatch_push_job(L, j, name_idx, max);
  lua_setfield(L, e, "job");
  lua_pushnumber(L, limit);
  lua_setfield(L, e, "limit");
  lua_pushinteger(L, (lua_Integer)j->id);
  lua_setfield(L, e, "id");
  lua_pushinteger(L, (lua_Integer)j->token);
  lua_setfield(L, e, "token");
  lua_pushinteger(L, (lua_Integer)j->attempt);
  lua_setfield(L, e, "attempt");
  lua_pushinteger(L, (lua_Integer)max);
  lua_setfield(L, e, "max");
  lua_pushboolean(L, x->alone);
  lua_setfield(L, e, "alone");
  lua_pushvalue(L, e);
  return 1;
}

/* Hand job x's outcome back at once (it never starts): kind, or with
 * msg a failure (dispatch_failure). */
static void end_unstarted(lua_State *L, core *c, int env, const fetched_job *x,
                          outcome_kind kind, const char *msg, size_t len, long long max) {
  store_outcome o = {{x->job.id, x->job.token}, kind, 0, BUF_INIT, 0, NAN, 0};
  if (msg) dispatch_failure(L, env, x->job.attempt, max, msg, len, 0, &o);
  if (fetcher_done(c->fetch, &o) != 0) {
    /* out of memory: its lease covers it (it runs again) */
  }
  buf_free(&o.error);
}

/* c:fetch_take() -> array of entries (see build_entry), each a job that
 * starts now (its time limit counts from here) */
static int l_fetch_take(lua_State *L) {
  core *c = check_fetching(L);
  lua_getiuservalue(L, 1, 1);
  int env = lua_gettop(L);
  lua_newtable(L);
  int out = lua_gettop(L);
  lua_Integer k = 0;
  fetched_job *x;
  while (k < TAKE_MAX && fetcher_take(c->fetch, &x, 1) == 1) {
    lua_pushcfunction(L, build_entry);
    lua_pushlightuserdata(L, x);
    lua_pushlightuserdata(L, c);
    lua_pushvalue(L, env);
    int status = lua_pcall(L, 3, 3, 0);
    if (status != LUA_OK) {
      /* out of memory building it: back unattempted */
      lua_pop(L, 1);
      end_unstarted(L, c, env, x, OUTCOME_RELEASE, NULL, 0, 0);
    } else if (lua_istable(L, -3)) {
      lua_pop(L, 2); /* the entry alone */
      lua_getfield(L, -1, "limit");
      fetcher_begin(c->fetch, (store_claim){x->job.id, x->job.token}, lua_tonumber(L, -1));
      lua_pop(L, 1);
      lua_rawseti(L, out, ++k);
    } else if (lua_isinteger(L, -1)) {
      size_t len;
      const char *msg = lua_tolstring(L, -2, &len);
      end_unstarted(L, c, env, x, OUTCOME_FAILED, msg, len, lua_tointeger(L, -1));
      lua_pop(L, 3);
    } else {
      end_unstarted(L, c, env, x, OUTCOME_RELEASE, NULL, 0, 0);
      lua_pop(L, 3);
    }
    free(x);
  }
  lua_pushvalue(L, out);
  return 1;
}

/* c:fetch_done(id, token, attempt, max, ok [, err [, keep, wall, took]])
 * -> outcome, retry_in: the listener of job (id, token) returned (ok; err
 * its first result, a snooze or anything) or raised err (a string, with
 * its traceback); outcome "done", "retry" (in retry_in seconds), "failed"
 * or "snoozed" (again in retry_in seconds, no attempt counted).  keep,
 * wall (the entry's) and took (its listener's seconds): for history, when
 * keep is given. */
static int l_fetch_done(lua_State *L) {
  core *c = check_fetching(L);
  store_outcome o = {{luaL_checkinteger(L, 2), luaL_checkinteger(L, 3)}, OUTCOME_DONE, 0, BUF_INIT, 0, NAN, 0};
  lua_Integer attempt = luaL_checkinteger(L, 4), max = luaL_checkinteger(L, 5);
  /* read before anything is pushed */
  o.keep = luaL_optnumber(L, 8, 0);
  o.started_at = luaL_optnumber(L, 9, NAN);
  o.duration = luaL_optnumber(L, 10, 0);
  lua_settop(L, 7);
  if (lua_toboolean(L, 6)) {
    if (dispatch_snooze(L, 7, &o.retry_in)) o.kind = OUTCOME_SNOOZE;
  } else {
    size_t len = 0;
    const char *msg = luaL_tolstring(L, 7, &len);
    lua_getiuservalue(L, 1, 1);
    dispatch_failure(L, lua_gettop(L), attempt, max, msg, len, 0, &o);
  }
  int rc = fetcher_done(c->fetch, &o);
  buf_free(&o.error);
  if (rc != 0) return luaL_error(L, "not enough memory");
  /* what becomes of it, for the job's log line (concurrent.lua) */
  lua_pushstring(L, o.kind == OUTCOME_DONE     ? "done"
                   : o.kind == OUTCOME_RETRY  ? "retry"
                   : o.kind == OUTCOME_SNOOZE ? "snoozed"
                                              : "failed");
  lua_pushnumber(L, o.retry_in);
  return 2;
}

/* c:fetch_paused(name) -> true when job name `name` is paused (as the
 * fetcher last saw: see fetcher_paused) */
static int l_fetch_paused(lua_State *L) {
  core *c = check_fetching(L);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  lua_pushboolean(L, fetcher_paused(c->fetch, name, len));
  return 1;
}

/* c:fetch_release(id, token): job (id, token), taken and not started, goes
 * back unattempted */
static int l_fetch_release(lua_State *L) {
  core *c = check_fetching(L);
  store_outcome o = {{luaL_checkinteger(L, 2), luaL_checkinteger(L, 3)}, OUTCOME_RELEASE, 0, BUF_INIT, 0, NAN, 0};
  if (fetcher_done(c->fetch, &o) != 0) return luaL_error(L, "not enough memory");
  return 0;
}

/* c:fetch_wait(seconds) -> true when fetch_fd became readable within
 * `seconds` (for step() outside an event loop) */
static int l_fetch_wait(lua_State *L) {
  core *c = check_fetching(L);
  double t = luaL_checknumber(L, 2);
  struct pollfd p = {fetcher_fd(c->fetch), POLLIN, 0};
  int ms = !(t > 0) ? 0 : t > 86400 ? 86400000 : (int)ceil(t * 1000);
  lua_pushboolean(L, poll(&p, 1, ms) > 0);
  return 1;
}

/* c:fetch_tick(ahead): due recurring schedules become jobs (env.tick, on
 * this instance's own connection) */
static int l_fetch_tick(lua_State *L) {
  check_fetching(L);
  double ahead = luaL_checknumber(L, 2);
  lua_getiuservalue(L, 1, 1);
  int env = lua_gettop(L);
  core *c = lua_touserdata(L, 1);
  int handler = dispatch_handler(L, c);
  lua_pushboolean(L, dispatch_tick(L, env, handler, 1, ahead) == 0);
  return 1;
}

/* c:fetch_schedule(name, payload, at, delay, key, priority, max_attempts)
 * -> request number: as s:schedule, sent by the fetcher (fetch_answers) */
static int l_fetch_schedule(lua_State *L) {
  core *c = check_fetching(L);
  store_new_job j;
  core_read_new_job(L, c, &j);
  unsigned long long seq = fetcher_schedule(c->fetch, &j);
  if (!seq) return luaL_error(L, "not enough memory");
  lua_pushinteger(L, (lua_Integer)seq);
  return 1;
}

/* c:fetch_answers() -> array of {seq, id} or {seq, nil, err} */
static int l_fetch_answers(lua_State *L) {
  core *c = check_fetching(L);
  lua_newtable(L);
  fetch_answer a;
  lua_Integer k = 0;
  while (fetcher_answers(c->fetch, &a, 1) == 1) {
    lua_createtable(L, 3, 0);
    lua_pushinteger(L, (lua_Integer)a.seq);
    lua_rawseti(L, -2, 1);
    if (a.id) {
      lua_pushinteger(L, (lua_Integer)a.id);
      lua_rawseti(L, -2, 2);
    } else {
      lua_pushfstring(L, "scheduler: schedule: %s", a.error ? a.error : "not enough memory");
      lua_rawseti(L, -2, 3);
    }
    free(a.error);
    lua_rawseti(L, -2, ++k);
  }
  return 1;
}

/* c:fetch_stop(): claim nothing more; jobs not taken go back */
static int l_fetch_stop(lua_State *L) {
  core *c = check_fetching(L);
  c->stopping = 1;
  fetcher_stop(c->fetch);
  return 0;
}

/* c:fetch_next_start() -> seconds until a job held for its rate's token
 * may be taken (fetcher_next_start), or nil: none is held */
static int l_fetch_next_start(lua_State *L) {
  core *c = check_fetching(L);
  double t = fetcher_next_start(c->fetch);
  if (t < 0) lua_pushnil(L);
  else lua_pushnumber(L, t);
  return 1;
}

/* c:fetch_settled() -> true once stopped with everything recorded */
static int l_fetch_settled(lua_State *L) {
  core *c = check_fetching(L);
  lua_pushboolean(L, fetcher_settled(c->fetch));
  return 1;
}

/* c:fetch_news() -> level | nil, message | nil, seconds to the next
 * recurring schedule (monotonic; nil: none known) */
static int l_fetch_news(lua_State *L) {
  core *c = check_fetching(L);
  double cron;
  const char *level = fetcher_news(c->fetch, &c->msg, &cron);
  if (level) {
    lua_pushstring(L, level);
    lua_pushlstring(L, buf_cstr(&c->msg), c->msg.len);
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  if (isfinite(cron))
    lua_pushnumber(L, cron - clock_mono());
  else
    lua_pushnil(L);
  return 3;
}

/* c:fetch_close(): the fetcher stops (one last write of what is left) */
static int l_fetch_close(lua_State *L) {
  core *c = core_check(L);
  if (c->fetch) {
    fetcher_free(c->fetch);
    c->fetch = NULL;
    c->running = 0;
    c->stopping = 0;
  }
  return 0;
}

/* c:guard(limit) on the listener's coroutine, before its call;
 * c:unguard() after it */
static int l_guard(lua_State *L) {
  core_check(L);
  dispatch_guard(L, luaL_checknumber(L, 2));
  return 0;
}

static int l_unguard(lua_State *L) {
  core_check(L);
  dispatch_unguard(L);
  return 0;
}

/* c:handler() -> the message handler for listener calls (a traceback) */
static int l_handler(lua_State *L) {
  core *c = core_check(L);
  dispatch_handler(L, c);
  return 1;
}

const luaL_Reg concurrent_methods[] = {
    {"fetch_start", l_fetch_start}, {"fetch_fd", l_fetch_fd},
    {"fetch_take", l_fetch_take},   {"fetch_done", l_fetch_done},
    {"fetch_paused", l_fetch_paused}, {"fetch_release", l_fetch_release},
    {"fetch_stop", l_fetch_stop},   {"fetch_settled", l_fetch_settled},
    {"fetch_news", l_fetch_news},   {"fetch_close", l_fetch_close},
    {"fetch_wait", l_fetch_wait},   {"fetch_tick", l_fetch_tick},
    {"fetch_schedule", l_fetch_schedule}, {"fetch_answers", l_fetch_answers},
    {"fetch_next_start", l_fetch_next_start},
    {"guard", l_guard},             {"unguard", l_unguard},
    {"handler", l_handler},         {NULL, NULL}};
