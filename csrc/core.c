/*
 * core.c: the Lua binding, module `scheduler.core`.  The only file with
 * luaL_Reg tables and the only exported symbol (luaopen_scheduler_core).
 *
 * The pure-Lua module `scheduler` validates options and arguments and holds
 * policy (defaults, backoff, log formatting); this layer checks types again
 * (a programmer error raises) and turns runtime failures into
 * `nil, "scheduler: <operation>: <detail>"`.
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "core.h"
#include "dispatch.h"
#include "json.h"
#include "loop.h"
#include "store.h"

/* Only luaopen_scheduler_core is exported (see core.c). */
#pragma GCC visibility push(hidden)

#define CORE_MT "scheduler.Core"
#define CORE_VERSION "0.1.0"
#define DEFAULT_BATCH 500

/* The one place that builds runtime-failure returns: nil, message. */
static int fail(lua_State *L, const char *op, const char *detail) {
  lua_pushnil(L);
  lua_pushfstring(L, "scheduler: %s: %s", op, detail);
  return 2;
}

static core *check_core(lua_State *L) {
  core *c = luaL_checkudata(L, 1, CORE_MT);
  if (c->closed) luaL_error(L, "scheduler: the instance is closed");
  return c;
}

/* Push the env table of the core at index 1; returns its index. */
static int push_env(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  return lua_gettop(L);
}

static int64_t check_id(lua_State *L, int i) {
  lua_Integer id = luaL_checkinteger(L, i);
  return (int64_t)id;
}

/* Release everything; safe to call twice (close, __gc, __close).  Never
 * calls Lua code and never raises. */
static void core_release(core *c) {
  if (c->closed) return;
  c->closed = 1;
  store_close(c->st);
  c->st = NULL;
  for (size_t i = 0; i < c->outcomes_cap; i++) buf_free(&c->outcomes[i].error);
  free(c->outcomes);
  c->outcomes = NULL;
  c->outcomes_cap = c->n_outcomes = 0;
  buf_free(&c->payload);
  buf_free(&c->msg);
  free(c->database);
  free(c->worker_id);
  c->database = c->worker_id = NULL;
}

/* "hostname:pid", the default worker id. */
static void default_worker_id(char *out, size_t size) {
  char host[256];
  if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  snprintf(out, size, "%s:%ld", host, (long)getpid());
}

static int l_default_worker_id(lua_State *L) {
  char id[300];
  default_worker_id(id, sizeof id);
  lua_pushstring(L, id);
  return 1;
}

static int sync_names(lua_State *L, core *c, int env);

/* core.new{database=, worker_id=, lease=, max_attempts=, listeners=,
 * limits=, backoff=, log=, tick=} -> Core | nil, err.  Does not connect.
 * tick(core) is called by run() when a recurring schedule is due.
 * listeners (name -> callable) and limits (name -> max_attempts) are the
 * caller's tables, shared: on()/off() below update them. */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "database");
  const char *database = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "worker_id");
  const char *worker = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "lease");
  double lease = luaL_checknumber(L, -1);
  lua_getfield(L, 1, "max_attempts");
  lua_Integer max_attempts = luaL_checkinteger(L, -1);
  lua_getfield(L, 1, "batch_max");
  lua_Integer batch_max = luaL_optinteger(L, -1, DEFAULT_BATCH);
  luaL_argcheck(L, isfinite(lease) && lease > 0, 1, "lease must be a positive number");
  luaL_argcheck(L, max_attempts >= 1, 1, "max_attempts must be at least 1");
  luaL_argcheck(L, batch_max >= 1 && batch_max <= 100000, 1, "batch_max must be 1..100000");

  core *c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  c->closed = 1; /* until fully built, so __gc has nothing to free */
  luaL_setmetatable(L, CORE_MT);
  int ud = lua_gettop(L);

  lua_createtable(L, 0, 5); /* env */
  static const char *const fields[] = {"listeners", "limits", "backoff", "log", "tick"};
  static const int types[] = {LUA_TTABLE, LUA_TTABLE, LUA_TFUNCTION, LUA_TNIL, LUA_TNIL};
  for (int i = 0; i < 5; i++) {
    int t = lua_getfield(L, 1, fields[i]);
    if (t == LUA_TNIL && types[i] == LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
    } else if (types[i] != LUA_TNIL && t != types[i]) {
      return luaL_error(L, "core.new: %s must be a %s", fields[i], lua_typename(L, types[i]));
    }
    lua_setfield(L, -2, fields[i]);
  }
  lua_setiuservalue(L, ud, 1);

  char id[300];
  if (!worker) {
    default_worker_id(id, sizeof id);
    worker = id;
  }
  c->closed = 0;
  c->lease = lease;
  c->max_attempts = (long long)max_attempts;
  c->batch_max = (size_t)batch_max;
  c->job_seconds = 0.005; /* small first batches until listeners are measured */
  c->database = strdup(database);
  c->worker_id = strdup(worker);
  if (!c->database || !c->worker_id) {
    core_release(c);
    return luaL_error(L, "not enough memory");
  }
  buf err = BUF_INIT;
  c->st = store_open(database, &err);
  if (!c->st) {
    core_release(c);
    lua_pushnil(L);
    lua_pushfstring(L, "scheduler: configure: %s", buf_cstr(&err));
    buf_free(&err);
    return 2;
  }
  lua_settop(L, ud);
  lua_pushvalue(L, ud);
  lua_replace(L, 1); /* push_env and sync_names work on index 1 */
  if (sync_names(L, c, push_env(L)) != STORE_OK) return luaL_error(L, "not enough memory");
  lua_settop(L, 1);
  return 1;
}

static int l_gc(lua_State *L) {
  core *c = luaL_checkudata(L, 1, CORE_MT);
  core_release(c);
  return 0;
}

static int l_close(lua_State *L) {
  core *c = luaL_checkudata(L, 1, CORE_MT);
  if (c->running) return luaL_error(L, "scheduler: close: the instance is running (call stop())");
  core_release(c);
  return 0;
}

static int l_tostring(lua_State *L) {
  core *c = luaL_checkudata(L, 1, CORE_MT);
  if (c->closed)
    lua_pushfstring(L, "scheduler (closed): %p", (void *)c);
  else
    lua_pushfstring(L, "scheduler (%s): %p", c->worker_id, (void *)c);
  return 1;
}

/* Hand the store the names of the registered listeners. */
static int sync_names(lua_State *L, core *c, int env) {
  lua_getfield(L, env, "listeners");
  int t = lua_gettop(L);
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) n++, lua_pop(L, 1);
  const char **names = lua_newuserdatauv(L, (n ? n : 1) * sizeof *names, 0);
  size_t *lens = lua_newuserdatauv(L, (n ? n : 1) * sizeof *lens, 0);
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    names[i] = lua_tolstring(L, -1, &lens[i]); /* anchored as a key of t */
    i++;
  }
  int rc = c->st->ops->set_names(c->st, names, lens, n);
  lua_settop(L, t - 1);
  return rc;
}

/* s:on(name, fn [, max_attempts]) */
static int l_on(lua_State *L) {
  core *c = check_core(L);
  luaL_checkstring(L, 2);
  luaL_checkany(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, 0);
  int env = push_env(L);
  lua_getfield(L, env, "listeners");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  lua_getfield(L, env, "limits");
  lua_pushvalue(L, 2);
  if (max > 0)
    lua_pushinteger(L, max);
  else
    lua_pushnil(L);
  lua_rawset(L, -3);
  if (sync_names(L, c, env) != STORE_OK) return luaL_error(L, "not enough memory");
  return 0;
}

/* s:off(name) */
static int l_off(lua_State *L) {
  core *c = check_core(L);
  luaL_checkstring(L, 2);
  int env = push_env(L);
  lua_getfield(L, env, "listeners");
  lua_pushvalue(L, 2);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_getfield(L, env, "limits");
  lua_pushvalue(L, 2);
  lua_pushnil(L);
  lua_rawset(L, -3);
  if (sync_names(L, c, env) != STORE_OK) return luaL_error(L, "not enough memory");
  return 0;
}

/* s:schedule(name, payload, at, delay, key, priority, max_attempts)
 * -> id | nil, err.  at/delay/key may be nil; max_attempts 0 or nil: unset.
 * Raises when the payload cannot be encoded (naming the value). */
static int l_schedule(lua_State *L) {
  core *c = check_core(L);
  store_new_job j;
  memset(&j, 0, sizeof j);
  j.name = luaL_checklstring(L, 2, &j.name_len);
  j.has_at = !lua_isnoneornil(L, 4);
  if (j.has_at) j.at = luaL_checknumber(L, 4);
  j.has_delay = !lua_isnoneornil(L, 5);
  if (j.has_delay) j.delay = luaL_checknumber(L, 5);
  j.key = luaL_optlstring(L, 6, NULL, &j.key_len);
  j.priority = (long long)luaL_optinteger(L, 7, 0);
  j.max_attempts = (long long)luaL_optinteger(L, 8, 0);
  buf_reset(&c->payload);
  if (!lua_isnoneornil(L, 3)) {
    int flags = json_encode(L, 3, &c->payload, "payload");
    j.payload = buf_cstr(&c->payload);
    j.payload_len = c->payload.len;
    j.payload_has_nul = (flags & JSON_HAS_NUL) != 0;
  }
  int64_t id;
  if (c->st->ops->schedule(c->st, &j, &id) != STORE_OK) return fail(L, "schedule", store_error(c->st));
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

/* s:schedule_many(items) -> array of ids | nil, err.  items: an array of
 * tables {name=, payload=, at=, delay=, key=, priority=, max_attempts=}
 * (checked by the Lua side); all are stored in one transaction or none. */
static int l_schedule_many(lua_State *L) {
  core *c = check_core(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t n = (size_t)luaL_len(L, 2);
  store_new_job *jobs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *jobs, 0);
  size_t *offsets = lua_newuserdatauv(L, (n ? n : 1) * sizeof *offsets, 0);
  int64_t *ids = lua_newuserdatauv(L, (n ? n : 1) * sizeof *ids, 0);
  buf_reset(&c->payload);
  for (size_t i = 0; i < n; i++) {
    store_new_job *j = &jobs[i];
    memset(j, 0, sizeof *j);
    if (lua_geti(L, 2, (lua_Integer)i + 1) != LUA_TTABLE)
      return luaL_error(L, "schedule_many: item %d is not a table", (int)i + 1);
    int item = lua_gettop(L);
    lua_getfield(L, item, "name");
    j->name = luaL_checklstring(L, -1, &j->name_len);
    lua_getfield(L, item, "at");
    if ((j->has_at = !lua_isnil(L, -1))) j->at = luaL_checknumber(L, -1);
    lua_getfield(L, item, "delay");
    if ((j->has_delay = !lua_isnil(L, -1))) j->delay = luaL_checknumber(L, -1);
    lua_getfield(L, item, "key");
    j->key = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &j->key_len);
    lua_getfield(L, item, "priority");
    j->priority = (long long)luaL_optinteger(L, -1, 0);
    lua_getfield(L, item, "max_attempts");
    j->max_attempts = (long long)luaL_optinteger(L, -1, 0);
    offsets[i] = c->payload.len;
    if (lua_getfield(L, item, "payload") != LUA_TNIL) {
      char where[40];
      snprintf(where, sizeof where, "items[%zu].payload", i + 1);
      j->payload_has_nul = (json_encode(L, -1, &c->payload, where) & JSON_HAS_NUL) != 0;
      j->payload = ""; /* pointed into the buffer below, once it stops moving */
      j->payload_len = c->payload.len - offsets[i];
    }
    lua_settop(L, item - 1); /* strings stay anchored in items */
  }
  for (size_t i = 0; i < n; i++)
    if (jobs[i].payload) jobs[i].payload = c->payload.data + offsets[i];
  if (c->st->ops->schedule_many(c->st, jobs, n, ids) != STORE_OK)
    return fail(L, "schedule_many", store_error(c->st));
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, (lua_Integer)ids[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int id_op(lua_State *L, const char *op,
                 int (*fn)(store *, int64_t, int *)) {
  core *c = check_core(L);
  int64_t id = check_id(L, 2);
  int done = 0;
  if (fn(c->st, id, &done) != STORE_OK) return fail(L, op, store_error(c->st));
  lua_pushboolean(L, done);
  return 1;
}

static int l_cancel(lua_State *L) {
  core *c = check_core(L);
  return id_op(L, "cancel", c->st->ops->cancel);
}

static int l_retry(lua_State *L) {
  core *c = check_core(L);
  return id_op(L, "retry", c->st->ops->retry);
}

static void set_string(lua_State *L, const char *field, const char *s, size_t n) {
  if (!s) return;
  lua_pushlstring(L, s, n);
  lua_setfield(L, -2, field);
}

/* s:job(id) -> table | nil (no such job) | nil, err */
static int l_job(lua_State *L) {
  core *c = check_core(L);
  int64_t id = check_id(L, 2);
  store_job j;
  int found = 0;
  if (c->st->ops->get(c->st, id, &j, &found) != STORE_OK) return fail(L, "job", store_error(c->st));
  if (!found) {
    lua_pushnil(L);
    return 1;
  }
  int env = push_env(L);
  lua_pushlstring(L, j.name, j.name_len);
  int name_idx = lua_gettop(L);
  long long max = dispatch_max_attempts(L, c, env, name_idx, j.max_attempts);
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, (lua_Integer)j.id);
  lua_setfield(L, -2, "id");
  lua_pushvalue(L, name_idx);
  lua_setfield(L, -2, "name");
  if (j.payload) {
    if (!json_decode(L, j.payload, j.payload_len)) return fail(L, "job", lua_tostring(L, -1));
    lua_setfield(L, -2, "payload");
  }
  lua_pushnumber(L, j.run_at);
  lua_setfield(L, -2, "run_at");
  lua_pushinteger(L, (lua_Integer)j.attempt);
  lua_setfield(L, -2, "attempt");
  lua_pushinteger(L, (lua_Integer)max);
  lua_setfield(L, -2, "max_attempts");
  lua_pushstring(L, j.state);
  lua_setfield(L, -2, "state");
  set_string(L, "last_error", j.last_error, j.last_error_len);
  set_string(L, "key", j.key, j.key_len);
  lua_pushinteger(L, (lua_Integer)j.priority);
  lua_setfield(L, -2, "priority");
  return 1;
}

/* s:abandon(worker_id) -> n | nil, err: the jobs a dead worker held go back
 * now (its supervisor saw it exit), instead of when their lease expires. */
static int l_abandon(lua_State *L) {
  core *c = check_core(L);
  const char *worker = luaL_checkstring(L, 2);
  size_t n = 0;
  if (c->st->ops->abandon(c->st, worker, c->max_attempts, &n) != STORE_OK)
    return fail(L, "abandon", store_error(c->st));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* s:db_now() -> the database's clock (Unix seconds) | nil, err */
static int l_db_now(lua_State *L) {
  core *c = check_core(L);
  store_wake w;
  if (c->st->ops->next_wake(c->st, &w) != STORE_OK) return fail(L, "clock", store_error(c->st));
  lua_pushnumber(L, w.db_now);
  return 1;
}

/* s:cron_put(id, expr, tz, name, payload, priority, max_attempts, catch_up,
 * backfill, next_at) -> true | nil, err.  Raises when the payload cannot be
 * encoded. */
static int l_cron_put(lua_State *L) {
  core *c = check_core(L);
  store_cron k;
  memset(&k, 0, sizeof k);
  k.id = luaL_checklstring(L, 2, &k.id_len);
  k.expr = luaL_checklstring(L, 3, &k.expr_len);
  k.tz = luaL_checklstring(L, 4, &k.tz_len);
  k.name = luaL_checklstring(L, 5, &k.name_len);
  k.priority = (long long)luaL_optinteger(L, 7, 0);
  k.max_attempts = (long long)luaL_optinteger(L, 8, 0);
  k.catch_up = lua_toboolean(L, 9);
  k.backfill = luaL_optnumber(L, 10, -1);
  k.next_at = luaL_checknumber(L, 11);
  buf_reset(&c->payload);
  if (!lua_isnoneornil(L, 6)) {
    int flags = json_encode(L, 6, &c->payload, "payload");
    k.payload = buf_cstr(&c->payload);
    k.payload_len = c->payload.len;
    k.payload_has_nul = (flags & JSON_HAS_NUL) != 0;
  }
  if (c->st->ops->cron_put(c->st, &k) != STORE_OK) return fail(L, "cron", store_error(c->st));
  lua_pushboolean(L, 1);
  return 1;
}

/* s:cron_remove(id) -> boolean | nil, err */
static int l_cron_remove(lua_State *L) {
  core *c = check_core(L);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  int done = 0;
  if (c->st->ops->cron_remove(c->st, id, len, &done) != STORE_OK)
    return fail(L, "uncron", store_error(c->st));
  lua_pushboolean(L, done);
  return 1;
}

/* s:crons([within]) -> array of schedules, db_now | nil, err.  within: only
 * those of this instance's listeners due within that many seconds. */
static int l_crons(lua_State *L) {
  core *c = check_core(L);
  double within = luaL_optnumber(L, 2, -1);
  store_cron *k;
  size_t n;
  double db_now;
  if (c->st->ops->cron_list(c->st, within, &k, &n, &db_now) != STORE_OK)
    return fail(L, "crons", store_error(c->st));
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 10);
    set_string(L, "id", k[i].id, k[i].id_len);
    set_string(L, "expr", k[i].expr, k[i].expr_len);
    set_string(L, "tz", k[i].tz, k[i].tz_len);
    set_string(L, "name", k[i].name, k[i].name_len);
    if (k[i].payload) {
      if (!json_decode(L, k[i].payload, k[i].payload_len)) return fail(L, "crons", lua_tostring(L, -1));
      lua_setfield(L, -2, "payload");
    }
    lua_pushinteger(L, (lua_Integer)k[i].priority);
    lua_setfield(L, -2, "priority");
    if (k[i].max_attempts > 0) {
      lua_pushinteger(L, (lua_Integer)k[i].max_attempts);
      lua_setfield(L, -2, "max_attempts");
    }
    lua_pushboolean(L, k[i].catch_up);
    lua_setfield(L, -2, "catch_up");
    if (k[i].backfill >= 0) {
      lua_pushnumber(L, k[i].backfill);
      lua_setfield(L, -2, "backfill");
    }
    lua_pushnumber(L, k[i].next_at);
    lua_setfield(L, -2, "next_at");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_pushnumber(L, db_now);
  return 2;
}

/* s:cron_fire(id, expected_next_at, slots, next_at) -> won | nil, err */
static int l_cron_fire(lua_State *L) {
  core *c = check_core(L);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  double expected = luaL_checknumber(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  double next = luaL_checknumber(L, 5);
  size_t n = (size_t)luaL_len(L, 4);
  double *slots = lua_newuserdatauv(L, (n ? n : 1) * sizeof *slots, 0);
  for (size_t i = 0; i < n; i++) {
    lua_geti(L, 4, (lua_Integer)i + 1);
    slots[i] = luaL_checknumber(L, -1);
    lua_pop(L, 1);
  }
  int won = 0;
  if (c->st->ops->cron_fire(c->st, id, len, expected, slots, n, next, &won) != STORE_OK)
    return fail(L, "cron", store_error(c->st));
  lua_pushboolean(L, won);
  return 1;
}

/* s:run(seconds, drain) -> true | count (drain) | nil, err */
static int l_run(lua_State *L) {
  core *c = check_core(L);
  loop_opts o;
  o.seconds = luaL_optnumber(L, 2, -1);
  o.drain = lua_toboolean(L, 3);
  if (isnan(o.seconds)) return luaL_argerror(L, 2, "seconds is NaN");
  if (c->running) return fail(L, "run", "already running (run() called from a listener)");
  int env = push_env(L);
  long long count = 0;
  c->running = 1;
  c->stopping = 0;
  int rc = loop_run(L, c, 1, env, &o, &count);
  c->running = 0;
  c->stopping = 0;
  if (rc != 0) return fail(L, "run", buf_cstr(&c->msg));
  if (o.drain)
    lua_pushinteger(L, (lua_Integer)count);
  else
    lua_pushboolean(L, 1);
  return 1;
}

/* s:stop(): the job in hand finishes; the rest of the batch goes back. */
static int l_stop(lua_State *L) {
  core *c = check_core(L);
  c->stopping = c->running;
  return 0;
}

/* s:running() -> boolean */
static int l_running(lua_State *L) {
  core *c = check_core(L);
  lua_pushboolean(L, c->running);
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, clock_wall());
  return 1;
}

static const luaL_Reg core_methods[] = {
    {"schedule", l_schedule}, {"schedule_many", l_schedule_many}, {"cancel", l_cancel}, {"retry", l_retry}, {"job", l_job},
    {"on", l_on},             {"off", l_off},       {"run", l_run},     {"stop", l_stop},
    {"running", l_running},   {"abandon", l_abandon}, {"close", l_close},
    {"db_now", l_db_now},     {"cron_put", l_cron_put}, {"cron_remove", l_cron_remove},
    {"crons", l_crons},       {"cron_fire", l_cron_fire}, {NULL, NULL}};

static const luaL_Reg core_meta[] = {
    {"__gc", l_gc}, {"__close", l_gc}, {"__tostring", l_tostring}, {"__index", NULL}, {NULL, NULL}};

static const luaL_Reg module_functions[] = {
    {"new", l_new}, {"now", l_now}, {"default_worker_id", l_default_worker_id}, {NULL, NULL}};

__attribute__((visibility("default"))) int luaopen_scheduler_core(lua_State *L) {
  luaL_newmetatable(L, CORE_MT);
  luaL_setfuncs(L, core_meta, 0);
  luaL_newlib(L, core_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, module_functions);
  lua_pushliteral(L, CORE_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
