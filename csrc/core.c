/*
 * core.c: the Lua binding, module `scheduler.core`, and its only exported
 * symbol (luaopen_scheduler_core).  The methods of a concurrent worker are
 * in concurrent.c; core.c registers them with its own.
 *
 * The pure-Lua module `scheduler` validates options and arguments and holds
 * policy (defaults, backoff, log formatting); this layer checks types again
 * (a programmer error raises) and turns runtime failures into
 * `nil, "scheduler: <operation>: <detail>"`.
 */
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "concurrent.h"
#include "core.h"
#include "dispatch.h"
#include "fetcher.h"
#include "heartbeat.h"
#include "json.h"
#include "loop.h"
#include "store.h"

/* for the lua-scheduler command (block before luaopen_scheduler_core) */
#include <errno.h>
#include "dir.h"
#include "notify.h"
#include "process.h"

/* Only luaopen_scheduler_core is exported (see core.c). */
#pragma GCC visibility push(hidden)

#define CORE_VERSION "0.1.0"
#define DEFAULT_BATCH 500

/* The one place that builds runtime-failure returns: nil, message. */
static int fail(lua_State *L, const char *op, const char *detail) {
  lua_pushnil(L);
  lua_pushfstring(L, "scheduler: %s: %s", op, detail);
  return 2;
}

core *core_check(lua_State *L) {
  core *c = luaL_checkudata(L, 1, CORE_MT);
  if (c->closed) luaL_error(L, "scheduler: the instance is closed");
  return c;
}

/* core_check for the operations that use the store.  A listener (or the
 * log function) may call them while run() holds a batch in an open
 * transaction on this very connection: settle the batch first, so the
 * call commits on its own, at once (see store_ops.settle). */
static core *check_store(lua_State *L) {
  core *c = core_check(L);
  if (c->hb) heartbeat_settle(c->hb);
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
  fetcher_free(c->fetch); /* a concurrent worker left running: its leases cover its jobs */
  c->fetch = NULL;
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

/* Random bits for worker ids: getrandom(2), else /dev/urandom (a kernel
 * without getrandom, or its pool not ready at early boot), else the clocks
 * and the pid, mixed (unlikely to repeat, even if not unpredictable). */
static void random_bytes(unsigned char *out, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t k = getrandom(out + got, n - got, GRND_NONBLOCK);
    if (k <= 0) break;
    got += (size_t)k;
  }
  if (got < n) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && got < n) {
      ssize_t k = read(fd, out + got, n - got);
      if (k <= 0 && !(k < 0 && errno == EINTR)) break;
      if (k > 0) got += (size_t)k;
    }
    if (fd >= 0) close(fd);
  }
  if (got < n) {
    uint64_t x = (uint64_t)(clock_wall() * 1e6) ^ ((uint64_t)(clock_mono() * 1e9) << 17) ^
                 ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)out;
    for (size_t i = got; i < n; i++) {
      x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 29; /* a 64-bit mix */
      out[i] = (unsigned char)x;
    }
  }
}

#define SUFFIX_BYTES 6 /* 12 hex digits: 48 bits */

/* A fresh random worker id suffix: 2 * SUFFIX_BYTES hex digits. */
static void random_suffix(char out[2 * SUFFIX_BYTES + 1]) {
  unsigned char b[SUFFIX_BYTES];
  random_bytes(b, sizeof b);
  for (size_t i = 0; i < sizeof b; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* "hostname:pid:suffix", the default worker id: the suffix (random when
 * NULL) keeps two hosts apart that share a hostname and a pid (two
 * containers started from one image, each with its own pid namespace), so
 * that nobody releases the jobs of a live worker of another host. */
static void default_worker_id(char *out, size_t size, const char *suffix) {
  char host[256], own[2 * SUFFIX_BYTES + 1];
  if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  if (!suffix) random_suffix(own), suffix = own;
  snprintf(out, size, "%s:%ld:%s", host, (long)getpid(), suffix);
}

#define WORKER_ID_MAX 400 /* host (255) : pid : suffix (checked <= 64) */

/* core.default_worker_id([suffix]) -> "hostname:pid:suffix"; suffix: up to
 * 64 letters and digits (default: 12 random hex digits). */
static int l_default_worker_id(lua_State *L) {
  size_t len = 0;
  const char *suffix = luaL_optlstring(L, 1, NULL, &len);
  if (suffix) {
    int ok = len > 0 && len <= 64;
    for (size_t i = 0; ok && i < len; i++)
      ok = (suffix[i] >= '0' && suffix[i] <= '9') || (suffix[i] >= 'a' && suffix[i] <= 'z') ||
           (suffix[i] >= 'A' && suffix[i] <= 'Z');
    luaL_argcheck(L, ok, 1, "a suffix is 1 to 64 letters and digits");
  }
  char id[WORKER_ID_MAX];
  default_worker_id(id, sizeof id, suffix);
  lua_pushstring(L, id);
  return 1;
}

/* core.random_suffix() -> 12 random hex digits, for default_worker_id (the
 * supervisor gives one to each worker it starts, so it knows its id). */
static int l_random_suffix(lua_State *L) {
  char suffix[2 * SUFFIX_BYTES + 1];
  random_suffix(suffix);
  lua_pushstring(L, suffix);
  return 1;
}


/* core.new{database=, worker_id=, lease=, max_attempts=, timeout=,
 * listeners=, limits=, timeouts=, backoff=, log=, log_debug=, tick=} -> Core | nil, err.
 * Does not connect.  tick(core) is called by run() when a recurring
 * schedule is due.  listeners (name -> callable), limits (name ->
 * max_attempts) and timeouts (name -> seconds) are the caller's tables,
 * shared: on()/off() below update them.  timeout: the default time limit of
 * a listener call (nil: none). */
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
  lua_getfield(L, 1, "timeout");
  double timeout = luaL_optnumber(L, -1, 0);
  lua_getfield(L, 1, "log_debug");
  int log_debug = lua_toboolean(L, -1);
  lua_getfield(L, 1, "history");
  double history = luaL_optnumber(L, -1, 0);
  luaL_argcheck(L, isfinite(history) && history >= 0, 1, "history must be a positive number");
  luaL_argcheck(L, isfinite(lease) && lease > 0, 1, "lease must be a positive number");
  luaL_argcheck(L, isfinite(timeout) && timeout >= 0, 1, "timeout must be a positive number");
  luaL_argcheck(L, max_attempts >= 1, 1, "max_attempts must be at least 1");
  luaL_argcheck(L, batch_max >= 1 && batch_max <= 100000, 1, "batch_max must be 1..100000");

  core *c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  c->closed = 1; /* until fully built, so __gc has nothing to free */
  luaL_setmetatable(L, CORE_MT);
  int ud = lua_gettop(L);

  lua_createtable(L, 0, 8); /* env */
  static const char *const fields[] = {"listeners", "limits", "timeouts", "slots",
                                       "backoff",   "log",    "tick",     "histories"};
  static const int types[] = {LUA_TTABLE,    LUA_TTABLE, LUA_TTABLE, LUA_TTABLE,
                              LUA_TFUNCTION, LUA_TNIL,   LUA_TNIL,   LUA_TTABLE};
  for (int i = 0; i < 8; i++) {
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

  char id[WORKER_ID_MAX];
  if (!worker) {
    default_worker_id(id, sizeof id, NULL);
    worker = id;
  }
  c->closed = 0;
  c->lease = lease;
  c->max_attempts = (long long)max_attempts;
  c->timeout = timeout;
  c->history = history;
  c->log_debug = log_debug;
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
  c->st->history = history; /* what cancel() keeps (store.h) */
  if (c->st->ops->database) {
    /* the string that reopens this very database (the heartbeat thread's
     * connection): e.g. an SQLite path made absolute */
    char *same = strdup(c->st->ops->database(c->st));
    if (!same) {
      core_release(c);
      return luaL_error(L, "not enough memory");
    }
    free(c->database);
    c->database = same;
  }
  lua_settop(L, ud);
  lua_pushvalue(L, ud);
  lua_replace(L, 1); /* push_env and sync_names work on index 1 */
  if (core_sync_names(L, c, push_env(L)) != STORE_OK) return luaL_error(L, "not enough memory");
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

int core_sync_names(lua_State *L, core *c, int env) {
  lua_getfield(L, env, "listeners");
  int t = lua_gettop(L);
  lua_getfield(L, env, "slots");
  int slots = lua_gettop(L);
  lua_getfield(L, env, "limits");
  int max_idx = lua_gettop(L);
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) n++, lua_pop(L, 1);
  const char **names = lua_newuserdatauv(L, (n ? n : 1) * sizeof *names, 0);
  size_t *lens = lua_newuserdatauv(L, (n ? n : 1) * sizeof *lens, 0);
  size_t *limits = lua_newuserdatauv(L, (n ? n : 1) * sizeof *limits, 0);
  long long *maxes = lua_newuserdatauv(L, (n ? n : 1) * sizeof *maxes, 0);
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    names[i] = lua_tolstring(L, -1, &lens[i]); /* anchored as a key of t */
    lua_pushvalue(L, -1);
    lua_Integer k = lua_rawget(L, slots) == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    limits[i] = k > 0 ? (size_t)k : 0;
    lua_pushvalue(L, -1);
    lua_Integer m = lua_rawget(L, max_idx) == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    maxes[i] = m > 0 ? (long long)m : 0;
    i++;
  }
  int rc = c->st->ops->set_names(c->st, names, lens, n);
  if (rc == STORE_OK) rc = c->st->ops->set_max_attempts(c->st, names, lens, maxes, n);
  /* a concurrent worker's fetcher claims for them too */
  if (rc == STORE_OK && c->fetch &&
      fetcher_set_names(c->fetch, names, lens, limits, maxes, n) != 0)
    rc = STORE_NOMEM;
  lua_settop(L, t - 1);
  return rc;
}

/* Set env[field][name at index 2] = the value on top (popped); nil clears. */
static void set_per_name(lua_State *L, int env, const char *field) {
  lua_getfield(L, env, field);
  lua_pushvalue(L, 2);
  lua_rotate(L, -3, -1); /* table, name, value */
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* s:on(name, fn [, max_attempts [, timeout [, concurrency [, history]]]])
 * history: seconds its finished jobs are kept, 0 none (nil: the
 * instance's) */
static int l_on(lua_State *L) {
  core *c = core_check(L);
  luaL_checkstring(L, 2);
  luaL_checkany(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, 0);
  double timeout = luaL_optnumber(L, 5, 0);
  lua_Integer slots = luaL_optinteger(L, 6, 0);
  double history = luaL_optnumber(L, 7, -1);
  luaL_argcheck(L, isfinite(timeout) && timeout >= 0, 5, "timeout must be a positive number");
  luaL_argcheck(L, isfinite(history), 7, "history must be a number");
  luaL_argcheck(L, slots >= 0, 6, "concurrency must be positive");
  int env = push_env(L);
  lua_getfield(L, env, "listeners");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  if (max > 0)
    lua_pushinteger(L, max);
  else
    lua_pushnil(L);
  set_per_name(L, env, "limits");
  if (timeout > 0)
    lua_pushnumber(L, timeout);
  else
    lua_pushnil(L);
  set_per_name(L, env, "timeouts");
  if (slots > 0)
    lua_pushinteger(L, slots);
  else
    lua_pushnil(L);
  set_per_name(L, env, "slots");
  if (history >= 0) {
    lua_pushnumber(L, history);
    c->history_any = 1; /* dispatch_history looks per name from now on */
  } else {
    lua_pushnil(L);
  }
  set_per_name(L, env, "histories");
  if (core_sync_names(L, c, env) != STORE_OK) return luaL_error(L, "not enough memory");
  return 0;
}

/* s:off(name) */
static int l_off(lua_State *L) {
  core *c = core_check(L);
  luaL_checkstring(L, 2);
  int env = push_env(L);
  lua_getfield(L, env, "listeners");
  lua_pushvalue(L, 2);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pushnil(L);
  set_per_name(L, env, "limits");
  lua_pushnil(L);
  set_per_name(L, env, "timeouts");
  lua_pushnil(L);
  set_per_name(L, env, "slots");
  lua_pushnil(L);
  set_per_name(L, env, "histories");
  if (core_sync_names(L, c, env) != STORE_OK) return luaL_error(L, "not enough memory");
  return 0;
}

/* Encode the payload at index idx into c->payload (nil: *out = NULL).
 * Raises, naming the value, when it cannot be encoded.  *out stays valid
 * until the next encoding on this instance. */
static void encode_payload(lua_State *L, core *c, int idx, const char **out, size_t *len,
                           int *has_nul) {
  buf_reset(&c->payload);
  *out = NULL;
  *len = 0;
  *has_nul = 0;
  if (lua_isnoneornil(L, idx)) return;
  *has_nul =
      (json_encode_depth(L, idx, &c->payload, "payload", JSON_PAYLOAD_MAX_DEPTH) & JSON_HAS_NUL) != 0;
  *out = buf_cstr(&c->payload);
  *len = c->payload.len;
}

/* s:schedule(name, payload, at, delay, key, priority, max_attempts)
 * -> id | nil, err.  at/delay/key may be nil; max_attempts 0 or nil: unset.
 * Raises when the payload cannot be encoded (naming the value). */
void core_read_new_job(lua_State *L, core *c, store_new_job *j) {
  memset(j, 0, sizeof *j);
  j->name = luaL_checklstring(L, 2, &j->name_len);
  j->has_at = !lua_isnoneornil(L, 4);
  if (j->has_at) j->at = luaL_checknumber(L, 4);
  j->has_delay = !lua_isnoneornil(L, 5);
  if (j->has_delay) j->delay = luaL_checknumber(L, 5);
  j->key = luaL_optlstring(L, 6, NULL, &j->key_len);
  j->priority = (long long)luaL_optinteger(L, 7, 0);
  j->max_attempts = (long long)luaL_optinteger(L, 8, 0);
  encode_payload(L, c, 3, &j->payload, &j->payload_len, &j->payload_has_nul);
}

static int l_schedule(lua_State *L) {
  core *c = check_store(L);
  store_new_job j;
  core_read_new_job(L, c, &j);
  int64_t id;
  if (c->st->ops->schedule(c->st, &j, &id) != STORE_OK) return fail(L, "schedule", store_error(c->st));
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

/* "items[i].payload" in out (at least 48 bytes), for json_encode's
 * messages: cheaper than snprintf, which would run for every item. */
static const char *item_payload(char *out, size_t i) {
  char digits[24];
  size_t n = 0;
  do digits[n++] = (char)('0' + i % 10); while ((i /= 10) > 0);
  char *p = out;
  memcpy(p, "items[", 6), p += 6;
  while (n) *p++ = digits[--n];
  memcpy(p, "].payload", 10); /* with its NUL */
  return out;
}

/* s:schedule_many(list, whens) -> array of ids | nil, err.  list: the
 * user's array of {name, payload [, when]} (checked by the Lua side);
 * whens[i]: item i's `when`, parsed into {at=, delay=, key=, priority=,
 * max_attempts=}, or nil.  All are stored in one transaction or none. */
static int l_schedule_many(lua_State *L) {
  core *c = check_store(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
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
    lua_geti(L, item, 1);
    j->name = luaL_checklstring(L, -1, &j->name_len); /* anchored in the item */
    if (lua_geti(L, 3, (lua_Integer)i + 1) == LUA_TTABLE) { /* its `when`, parsed */
      int when = lua_gettop(L);
      lua_getfield(L, when, "at");
      if ((j->has_at = !lua_isnil(L, -1))) j->at = luaL_checknumber(L, -1);
      lua_getfield(L, when, "delay");
      if ((j->has_delay = !lua_isnil(L, -1))) j->delay = luaL_checknumber(L, -1);
      lua_getfield(L, when, "key");
      j->key = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &j->key_len);
      lua_getfield(L, when, "priority");
      j->priority = (long long)luaL_optinteger(L, -1, 0);
      lua_getfield(L, when, "max_attempts");
      j->max_attempts = (long long)luaL_optinteger(L, -1, 0);
    }
    offsets[i] = c->payload.len;
    if (lua_geti(L, item, 2) != LUA_TNIL) {
      char where[48];
      j->payload_has_nul =
          (json_encode_depth(L, -1, &c->payload, item_payload(where, i + 1), JSON_PAYLOAD_MAX_DEPTH) &
           JSON_HAS_NUL) != 0;
      j->payload = ""; /* pointed into the buffer below, once it stops moving */
      j->payload_len = c->payload.len - offsets[i];
    }
    lua_settop(L, item - 1); /* strings stay anchored in the list */
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
  core *c = check_store(L);
  int64_t id = check_id(L, 2);
  int done = 0;
  if (fn(c->st, id, &done) != STORE_OK) return fail(L, op, store_error(c->st));
  lua_pushboolean(L, done);
  return 1;
}

static int l_cancel(lua_State *L) {
  core *c = core_check(L);
  return id_op(L, "cancel", c->st->ops->cancel);
}

static int l_retry(lua_State *L) {
  core *c = core_check(L);
  return id_op(L, "retry", c->st->ops->retry);
}

static void set_string(lua_State *L, const char *field, const char *s, size_t n) {
  if (!s) return;
  lua_pushlstring(L, s, n);
  lua_setfield(L, -2, field);
}

/* Set the payload field of the table on top: the decoded JSON; or, when
 * the stored text does not decode (a row another client wrote, e.g. a
 * number beyond a double), payload_error (the decoder's message) and
 * payload_text (the text as stored), so that one such row neither hides
 * its job nor fails a whole listing. */
static void set_payload(lua_State *L, const char *payload, size_t len) {
  if (!payload) return;
  if (json_decode(L, payload, len)) {
    lua_setfield(L, -2, "payload");
    return;
  }
  lua_setfield(L, -2, "payload_error");
  set_string(L, "payload_text", payload, len);
}

/* s:job(id) -> table | nil (no such job) | nil, err */
static int l_job(lua_State *L) {
  core *c = check_store(L);
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
  set_payload(L, j.payload, j.payload_len);
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

/* s:abandon(worker_id) -> n | false, err | nil, err: the jobs a dead worker
 * held go back now (its supervisor saw it exit), instead of when their
 * lease expires.  false: it is still connected, nothing was released. */
static int l_abandon(lua_State *L) {
  core *c = check_store(L);
  const char *worker = luaL_checkstring(L, 2);
  size_t n = 0;
  int rc = c->st->ops->abandon(c->st, worker, c->max_attempts, &n);
  if (rc == STORE_LIVE) {
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "scheduler: abandon: %s", store_error(c->st));
    return 2;
  }
  if (rc != STORE_OK) return fail(L, "abandon", store_error(c->st));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* s:db_now() -> the database's clock (Unix seconds) | nil, err */
static int l_db_now(lua_State *L) {
  core *c = check_store(L);
  store_wake w;
  if (c->st->ops->next_wake(c->st, 0, &w) != STORE_OK) return fail(L, "clock", store_error(c->st));
  lua_pushnumber(L, w.db_now);
  return 1;
}

/* s:cron_put(id, expr, tz, name, payload, priority, max_attempts, catch_up,
 * backfill, next_at [, owner]) -> true | nil, err.  Raises when the payload
 * cannot be encoded. */
static int l_cron_put(lua_State *L) {
  core *c = check_store(L);
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
  k.owner = luaL_optlstring(L, 12, NULL, &k.owner_len);
  encode_payload(L, c, 6, &k.payload, &k.payload_len, &k.payload_has_nul);
  if (c->st->ops->cron_put(c->st, &k) != STORE_OK) return fail(L, "cron", store_error(c->st));
  lua_pushboolean(L, 1);
  return 1;
}

/* s:cron_remove(id [, owner]) -> boolean | nil, err.  With owner: only if
 * that owner declared it last. */
static int l_cron_remove(lua_State *L) {
  core *c = check_store(L);
  size_t len, owner_len = 0;
  const char *id = luaL_checklstring(L, 2, &len);
  const char *owner = luaL_optlstring(L, 3, NULL, &owner_len);
  int done = 0;
  if (c->st->ops->cron_remove(c->st, id, len, owner, owner_len, &done) != STORE_OK)
    return fail(L, "uncron", store_error(c->st));
  lua_pushboolean(L, done);
  return 1;
}

/* s:crons([within]) -> array of schedules, db_now | nil, err.  within: only
 * those of this instance's listeners due within that many seconds. */
static int l_crons(lua_State *L) {
  core *c = check_store(L);
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
    if (k[i].owner) {
      lua_pushlstring(L, k[i].owner, k[i].owner_len);
      lua_setfield(L, -2, "owner");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_pushnumber(L, db_now);
  return 2;
}

/* s:cron_fire(id, expected_next_at, slots, next_at) -> won | nil, err */
static int l_cron_fire(lua_State *L) {
  core *c = check_store(L);
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

static void set_number(lua_State *L, const char *field, double v) {
  if (isnan(v)) return;
  lua_pushnumber(L, v);
  lua_setfield(L, -2, field);
}

static void set_integer(lua_State *L, const char *field, long long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, field);
}

/* The filter of s:jobs and s:history: arguments 2 to 5 (state, name, id,
 * limit), each nil matching every job; limit nil: no limit. */
static void check_filter(lua_State *L, store_filter *f) {
  memset(f, 0, sizeof *f);
  f->state = luaL_optstring(L, 2, NULL);
  f->name = luaL_optlstring(L, 3, NULL, &f->name_len);
  f->has_id = !lua_isnoneornil(L, 4);
  if (f->has_id) f->id = check_id(L, 4);
  f->limit = (long long)luaL_optinteger(L, 5, 0);
}

/* Push a new table with the fields a waiting and a kept job share: id,
 * name, state, payload (set_payload), attempt, priority, key, last_error. */
static void push_job_fields(lua_State *L, const store_job *j) {
  lua_createtable(L, 0, 13);
  set_integer(L, "id", (long long)j->id);
  set_string(L, "name", j->name, j->name_len);
  set_string(L, "state", j->state, strlen(j->state));
  set_payload(L, j->payload, j->payload_len);
  set_integer(L, "attempt", j->attempt);
  set_integer(L, "priority", j->priority);
  set_string(L, "key", j->key, j->key_len);
  set_string(L, "last_error", j->last_error, j->last_error_len);
}

/* s:jobs(state, name, id, limit) -> rows, db_now | nil, err (check_filter).
 * Rows in (run_at, id) order: {id, name, state, payload, run_at, attempt,
 * max_attempts (absent when the job sets none), priority, key,
 * last_error, locked_by, locked_until, created_at}. */
static int l_jobs(lua_State *L) {
  core *c = check_store(L);
  store_filter f;
  check_filter(L, &f);
  store_job_row *rows;
  size_t n;
  double db_now;
  if (c->st->ops->list(c->st, &f, &rows, &n, &db_now) != STORE_OK)
    return fail(L, "jobs", store_error(c->st));
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const store_job_row *x = &rows[i];
    const store_job *j = &x->job;
    push_job_fields(L, j);
    set_number(L, "run_at", j->run_at);
    if (j->max_attempts > 0) set_integer(L, "max_attempts", j->max_attempts);
    set_string(L, "locked_by", x->locked_by, x->locked_by_len);
    set_number(L, "locked_until", x->locked_until);
    set_number(L, "created_at", x->created_at);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_pushnumber(L, db_now);
  return 2;
}

/* s:history(state, name, id, limit) -> rows | nil, err: finished jobs
 * kept by history (store_history), newest first (check_filter).  Rows:
 * {id, name, state, payload, attempt, priority, key, last_error, worker,
 * started_at, finished_at, duration, kept_until}. */
static int l_history(lua_State *L) {
  core *c = check_store(L);
  store_filter f;
  check_filter(L, &f);
  store_history *rows = NULL;
  size_t n = 0;
  if (c->st->ops->history && c->st->ops->history(c->st, &f, &rows, &n) != STORE_OK)
    return fail(L, "history", store_error(c->st));
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const store_history *x = &rows[i];
    const store_job *j = &x->job;
    push_job_fields(L, j);
    set_string(L, "worker", x->worker, x->worker_len);
    set_number(L, "started_at", x->started_at);
    set_number(L, "finished_at", x->finished_at);
    if (!isnan(x->started_at)) set_number(L, "duration", x->finished_at - x->started_at);
    set_number(L, "kept_until", x->kept_until);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* s:prune(limit) -> n | nil, err: delete at most `limit` history rows
 * whose time is up (what a worker does every PRUNE_EVERY seconds). */
static int l_prune(lua_State *L) {
  core *c = check_store(L);
  lua_Integer limit = luaL_checkinteger(L, 2);
  luaL_argcheck(L, limit > 0, 2, "limit must be positive");
  size_t n = 0;
  if (c->st->ops->prune && c->st->ops->prune(c->st, (size_t)limit, &n) != STORE_OK)
    return fail(L, "prune", store_error(c->st));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* s:stats() -> rows | nil, err.  Each row: {name, due, later, running,
 * failed, late (absent: none due), done_last_minute}. */
static int l_stats(lua_State *L) {
  core *c = check_store(L);
  store_stat *rows;
  size_t n;
  if (c->st->ops->stats(c->st, &rows, &n) != STORE_OK) return fail(L, "stats", store_error(c->st));
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const store_stat *x = &rows[i];
    lua_createtable(L, 0, 7);
    set_string(L, "name", x->name, x->name_len);
    set_integer(L, "due", x->due);
    set_integer(L, "later", x->later);
    set_integer(L, "running", x->running);
    set_integer(L, "failed", x->failed);
    set_number(L, "late", x->late);
    set_integer(L, "done_last_minute", x->done_last_minute);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* s:totals() -> rows | nil, err.  Each row: {name, done, failed}: jobs
 * completed and failed for good ever (store.h, totals); {} when the
 * store keeps none. */
static int l_totals(lua_State *L) {
  core *c = check_store(L);
  store_total *rows = NULL;
  size_t n = 0;
  if (c->st->ops->totals && c->st->ops->totals(c->st, &rows, &n) != STORE_OK)
    return fail(L, "totals", store_error(c->st));
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 3);
    set_string(L, "name", rows[i].name, rows[i].name_len);
    set_integer(L, "done", rows[i].done);
    set_integer(L, "failed", rows[i].failed);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* Push {jobs = {count per bucket, DURATION_BUCKETS + 1 of them: not
 * cumulative}, seconds = total}: one histogram of a store_duration. */
static void push_histogram(lua_State *L, const long long *jobs, double seconds) {
  lua_createtable(L, 0, 2);
  lua_createtable(L, DURATION_BUCKETS + 1, 0);
  for (int k = 0; k <= DURATION_BUCKETS; k++) {
    lua_pushinteger(L, (lua_Integer)jobs[k]);
    lua_rawseti(L, -2, k + 1);
  }
  lua_setfield(L, -2, "jobs");
  set_number(L, "seconds", seconds);
}

static void push_bounds(lua_State *L, const double *bounds) {
  lua_createtable(L, DURATION_BUCKETS, 0);
  for (int k = 0; k < DURATION_BUCKETS; k++) {
    lua_pushnumber(L, bounds[k]);
    lua_rawseti(L, -2, k + 1);
  }
}

/* s:durations() -> rows, bounds, late_bounds | nil, err.  Each row: the
 * listener durations of a name, {name, jobs, seconds} (push_histogram),
 * and late = {jobs, seconds}, how late they started; bounds and
 * late_bounds: the buckets' upper bounds (store.h, durations); {} when
 * the store keeps none. */
static int l_durations(lua_State *L) {
  core *c = check_store(L);
  store_duration *rows = NULL;
  size_t n = 0;
  if (c->st->ops->durations && c->st->ops->durations(c->st, &rows, &n) != STORE_OK)
    return fail(L, "durations", store_error(c->st));
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    push_histogram(L, rows[i].jobs, rows[i].seconds);
    set_string(L, "name", rows[i].name, rows[i].name_len);
    push_histogram(L, rows[i].late, rows[i].late_seconds);
    lua_setfield(L, -2, "late");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  static const double bounds[DURATION_BUCKETS] = DURATION_BOUNDS_INIT;
  static const double late_bounds[DURATION_BUCKETS] = LATENESS_BOUNDS_INIT;
  push_bounds(L, bounds);
  push_bounds(L, late_bounds);
  return 3;
}

/* s:retry_failed([name]) -> retried, skipped | nil, err */
static int l_retry_failed(lua_State *L) {
  core *c = check_store(L);
  size_t len = 0;
  const char *name = luaL_optlstring(L, 2, NULL, &len);
  size_t retried, skipped;
  if (c->st->ops->retry_failed(c->st, name, len, &retried, &skipped) != STORE_OK)
    return fail(L, "retry_failed", store_error(c->st));
  lua_pushinteger(L, (lua_Integer)retried);
  lua_pushinteger(L, (lua_Integer)skipped);
  return 2;
}

/* s:remove(id|nil, name|nil, scheduled, failed, older_than|nil) -> removed
 * | nil, err (store_ops.remove; scheduler.lua checks the arguments) */
static int l_remove(lua_State *L) {
  core *c = check_store(L);
  store_removal r;
  memset(&r, 0, sizeof r);
  r.has_id = !lua_isnoneornil(L, 2);
  if (r.has_id) r.id = check_id(L, 2);
  r.name = luaL_optlstring(L, 3, NULL, &r.name_len);
  r.scheduled = lua_toboolean(L, 4);
  r.failed = lua_toboolean(L, 5);
  r.older_than = luaL_optnumber(L, 6, -1);
  if (isnan(r.older_than)) return luaL_argerror(L, 6, "older_than is NaN");
  size_t removed;
  if (c->st->ops->remove(c->st, &r, &removed) != STORE_OK) return fail(L, "remove", store_error(c->st));
  lua_pushinteger(L, (lua_Integer)removed);
  return 1;
}

/* s:pause(name, on) -> changed | nil, err (store_ops.pause; on false:
 * resume) */
static int l_pause(lua_State *L) {
  core *c = check_store(L);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  int on = lua_toboolean(L, 3), changed = 0;
  if (c->st->ops->pause(c->st, name, len, on, &changed) != STORE_OK)
    return fail(L, on ? "pause" : "resume", store_error(c->st));
  lua_pushboolean(L, changed);
  return 1;
}

/* s:paused() -> { name, ... } (in name order) | nil, err */
static int l_paused(lua_State *L) {
  core *c = check_store(L);
  const char *const *names;
  const size_t *lens;
  size_t n;
  if (c->st->ops->paused_names(c->st, &names, &lens, &n) != STORE_OK)
    return fail(L, "paused", store_error(c->st));
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushlstring(L, names[i], lens[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* s:limit(name, concurrency[, by[, rate, per]]) -> changed | nil, err
 * (store_ops.limit; concurrency nil: none; by nil: the whole name; rate
 * nil: none; concurrency and rate nil: no limit) */
static int l_limit(lua_State *L) {
  core *c = check_store(L);
  size_t len, by_len = 0;
  const char *name = luaL_checklstring(L, 2, &len);
  lua_Integer n = luaL_optinteger(L, 3, 0);
  if (n < 0 || n > 2147483647) return luaL_argerror(L, 3, "concurrency out of range");
  const char *by = luaL_optlstring(L, 4, NULL, &by_len);
  lua_Integer rate = luaL_optinteger(L, 5, 0);
  if (rate < 0 || rate > 2147483647) return luaL_argerror(L, 5, "rate out of range");
  double per = rate ? luaL_checknumber(L, 6) : 0;
  if (rate && !(per > 0 && per <= STORE_RATE_PER_MAX)) return luaL_argerror(L, 6, "per out of range");
  int changed = 0;
  if (c->st->ops->limit(c->st, name, len, (long long)n, by, by_len, (long long)rate, per,
                        &changed) != STORE_OK)
    return fail(L, "limit", store_error(c->st));
  lua_pushboolean(L, changed);
  return 1;
}

/* s:limits() -> { { name = , concurrency = , by = , rate = , per = }, ... }
 * (in name order; nil fields: none) | nil, err */
static int l_limits(lua_State *L) {
  core *c = check_store(L);
  const char *const *names, *const *by;
  const size_t *lens, *by_lens;
  const long long *conc, *rate;
  const double *per;
  size_t n;
  if (c->st->ops->limits(c->st, &names, &lens, &conc, &by, &by_lens, &rate, &per, &n) != STORE_OK)
    return fail(L, "limits", store_error(c->st));
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, names[i], lens[i]);
    lua_setfield(L, -2, "name");
    if (conc[i]) {
      lua_pushinteger(L, (lua_Integer)conc[i]);
      lua_setfield(L, -2, "concurrency");
    }
    if (by[i]) {
      lua_pushlstring(L, by[i], by_lens[i]);
      lua_setfield(L, -2, "by");
    }
    if (rate[i]) {
      lua_pushinteger(L, (lua_Integer)rate[i]);
      lua_setfield(L, -2, "rate");
      /* a whole number of seconds as an integer (60, not 60.0) */
      if (per[i] == floor(per[i]) && per[i] <= 9007199254740992.0)
        lua_pushinteger(L, (lua_Integer)per[i]);
      else
        lua_pushnumber(L, per[i]);
      lua_setfield(L, -2, "per");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* s:schema_version() -> version | nil, err */
static int l_schema_version(lua_State *L) {
  core *c = check_store(L);
  int version;
  if (c->st->ops->schema_version(c->st, &version) != STORE_OK)
    return fail(L, "schema_version", store_error(c->st));
  lua_pushinteger(L, version);
  return 1;
}

/* s:run(seconds, drain) -> true | count (drain) | nil, err */
static int l_run(lua_State *L) {
  core *c = core_check(L);
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
  if (rc == -2) return lua_error(L); /* the loop cleaned up: raise it again */
  if (rc != 0) return fail(L, "run", buf_cstr(&c->msg));
  if (o.drain)
    lua_pushinteger(L, (lua_Integer)count);
  else
    lua_pushboolean(L, 1);
  return 1;
}

/* s:stop(): the job in hand finishes; the rest of the batch goes back. */
static int l_stop(lua_State *L) {
  core *c = core_check(L);
  c->stopping = c->running;
  if (c->fetch) fetcher_stop(c->fetch); /* a concurrent worker: see concurrent.lua */
  return 0;
}

/* s:running() -> boolean */
static int l_running(lua_State *L) {
  core *c = core_check(L);
  lua_pushboolean(L, c->running);
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, clock_wall());
  return 1;
}

/* core.snooze(seconds) -> the value a listener returns to be run again
 * `seconds` later without counting an attempt (dispatch.h).  scheduler.lua
 * checks the argument with a clearer message first; this is the last
 * guard (a number, not a numeric string; 0..SNOOZE_MAX). */
static int l_snooze(lua_State *L) {
  luaL_argexpected(L, lua_type(L, 1) == LUA_TNUMBER, 1, "number");
  double secs = lua_tonumber(L, 1);
#define SNOOZE_TEXT(n) #n
#define SNOOZE_RANGE(n) "seconds must be within 0.." SNOOZE_TEXT(n)
  luaL_argcheck(L, secs >= 0 && secs <= SNOOZE_MAX, 1, SNOOZE_RANGE(SNOOZE_MAX));
  dispatch_push_snooze(L, secs);
  return 1;
}

static const luaL_Reg core_methods[] = {
    {"schedule", l_schedule}, {"schedule_many", l_schedule_many}, {"cancel", l_cancel}, {"retry", l_retry}, {"job", l_job},
    {"on", l_on},             {"off", l_off},       {"run", l_run},     {"stop", l_stop},
    {"running", l_running},   {"abandon", l_abandon}, {"close", l_close},
    {"db_now", l_db_now},     {"cron_put", l_cron_put}, {"cron_remove", l_cron_remove},
    {"crons", l_crons},       {"cron_fire", l_cron_fire}, {"jobs", l_jobs},
    {"stats", l_stats},       {"totals", l_totals}, {"durations", l_durations},       {"retry_failed", l_retry_failed}, {"remove", l_remove},
    {"pause", l_pause}, {"paused", l_paused}, {"history", l_history}, {"prune", l_prune},
    {"limit", l_limit}, {"limits", l_limits},
    {"schema_version", l_schema_version}, {NULL, NULL}};

static const luaL_Reg core_meta[] = {
    {"__gc", l_gc}, {"__close", l_gc}, {"__tostring", l_tostring}, {"__index", NULL}, {NULL, NULL}};

static const luaL_Reg module_functions[] = {
    {"new", l_new},         {"now", l_now}, {"default_worker_id", l_default_worker_id},
    {"random_suffix", l_random_suffix}, {"snooze", l_snooze}, {NULL, NULL}};

/* ------------------------------------------------------------------ */
/* For the lua-scheduler command (lua/scheduler/cli*.lua):             */
/* core.process, core.dir, core.json_encode / core.json_decode.  Thin  */
/* bindings of process.c, dir.c and json.c.                            */

/* A signal argument: a name ("TERM", "SIGTERM") or a number. */
static int check_signal(lua_State *L, int i) {
  if (lua_type(L, i) == LUA_TNUMBER) return (int)luaL_checkinteger(L, i);
  int sig = process_signal_number(luaL_checkstring(L, i));
  if (sig == 0)
    return luaL_argerror(L, i, lua_pushfstring(L, "unknown signal %s", lua_tostring(L, i)));
  return sig;
}

static void push_signal(lua_State *L, int sig) {
  const char *name = process_signal_name(sig);
  if (name)
    lua_pushstring(L, name);
  else
    lua_pushinteger(L, sig);
}

static int errno_fail(lua_State *L, const char *op) { return fail(L, op, strerror(errno)); }

/* process.block_signals() -> true | nil, err: CHLD, HUP, INT, TERM and RTMIN now
 * wait for process.wait_signal. */
static int l_process_block_signals(lua_State *L) {
  if (process_block_signals() != 0) return errno_fail(L, "block_signals");
  lua_pushboolean(L, 1);
  return 1;
}

/* process.wait_signal([timeout]) -> "CHLD"|"HUP"|"INT"|"TERM"|"RTMIN" and the
 * sender's pid, or nil after timeout seconds (nil: no limit).  Raises unless
 * the signals are blocked. */
static int l_process_wait_signal(lua_State *L) {
  double timeout = luaL_optnumber(L, 1, -1);
  luaL_argcheck(L, !isnan(timeout), 1, "timeout is NaN");
  pid_t from = 0;
  int sig = process_wait_signal(timeout, &from);
  if (sig < 0)
    return luaL_error(L, "scheduler: wait_signal: %s (call block_signals first)", strerror(errno));
  if (sig == 0) return 0;
  push_signal(L, sig);
  lua_pushinteger(L, (lua_Integer)from);
  return 2;
}

/* process.spawn(argv, env) -> pid | nil, err.  argv: array of strings
 * (argv[1] is the program, searched in PATH); env: optional NAME -> value
 * table set in the child's environment (the rest is inherited). */
static int l_process_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer argc = luaL_len(L, 1);
  luaL_argcheck(L, argc >= 1 && argc < INT_MAX / 2, 1,
                "argv must hold the program and its arguments");
  int has_env = !lua_isnoneornil(L, 2);
  if (has_env) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  /* the arrays live in userdata, their strings on the stack: nothing leaks
   * when a conversion raises */
  const char **argv = lua_newuserdatauv(L, (size_t)(argc + 1) * sizeof *argv, 0);
  for (lua_Integer i = 1; i <= argc; i++) {
    luaL_checkstack(L, 2, "too many arguments");
    lua_geti(L, 1, i);
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_argerror(L, 1, "argv must hold only strings");
    argv[i - 1] = lua_tostring(L, -1);
  }
  argv[argc] = NULL;
  size_t nenv = 0;
  if (has_env) {
    lua_pushnil(L);
    while (lua_next(L, 2)) nenv++, lua_pop(L, 1);
  }
  const char **env = lua_newuserdatauv(L, (nenv + 1) * sizeof *env, 0);
  size_t k = 0;
  if (has_env) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 2, "env must map names to strings");
      luaL_checkstack(L, 2, "too many environment variables");
      const char *entry = lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
      lua_insert(L, -3); /* keep the entry below the key */
      lua_pop(L, 1);
      env[k++] = entry;
    }
  }
  env[k] = NULL;
  buf err = BUF_INIT;
  pid_t pid;
  if (process_spawn(argv, env, &pid, &err) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "scheduler: spawn: %s", buf_cstr(&err));
    buf_free(&err);
    return 2;
  }
  buf_free(&err);
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

/* process.reap() -> pid, "exit", status | pid, "signal", name (or number)
 * | nil when no child has terminated. */
static int l_process_reap(lua_State *L) {
  pid_t pid;
  int signaled, code;
  int rc = process_reap(&pid, &signaled, &code);
  if (rc < 0) return errno_fail(L, "reap");
  if (rc == 0) return 0;
  lua_pushinteger(L, (lua_Integer)pid);
  lua_pushstring(L, signaled ? "signal" : "exit");
  if (signaled)
    push_signal(L, code);
  else
    lua_pushinteger(L, code);
  return 3;
}

/* process.kill(pid, signal) -> true | nil, err */
static int l_process_kill(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int sig = check_signal(L, 2);
  luaL_argcheck(L, pid > 0, 1, "pid must be positive");
  if (process_kill((pid_t)pid, sig) != 0) return errno_fail(L, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* process.kill_group(pgid, signal) -> true | nil, err: to every process of
 * the group (a spawned child's pid); ESRCH when none is left */
static int l_process_kill_group(lua_State *L) {
  lua_Integer pgid = luaL_checkinteger(L, 1);
  int sig = check_signal(L, 2);
  luaL_argcheck(L, pgid > 1, 1, "process group must be above 1");
  if (process_kill_group((pid_t)pgid, sig) != 0) return errno_fail(L, "kill_group");
  lua_pushboolean(L, 1);
  return 1;
}

/* process.monotonic() -> seconds on the monotonic clock (for timers) */
static int l_process_monotonic(lua_State *L) {
  lua_pushnumber(L, clock_mono());
  return 1;
}

static int l_process_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

static int l_process_getppid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getppid());
  return 1;
}

/* process.sleep(seconds): a signal's handler ends it early */
static int l_process_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s < 1e9, 1, "seconds must be between 0 and 1e9");
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
  return 0;
}

/* process.hide_arg(secret) -> n: hide `secret` from this process's command
 * line as `ps` shows it (see process_hide_arg). */
static int l_process_hide_arg(lua_State *L) {
  lua_pushinteger(L, process_hide_arg(luaL_checkstring(L, 1)));
  return 1;
}

/* process.isatty(fd) -> boolean */
static int l_process_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* dir.is_dir(path) -> boolean | nil, err */
static int l_dir_is_dir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int is_dir;
  if (dir_is_dir(path, &is_dir) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, is_dir);
  return 1;
}

typedef struct dir_names {
  char **names;
  size_t n;
} dir_names;

static int dir_names_table(lua_State *L) {
  const dir_names *d = lua_touserdata(L, 1);
  lua_createtable(L, d->n > INT_MAX ? INT_MAX : (int)d->n, 0);
  for (size_t i = 0; i < d->n; i++) {
    lua_pushstring(L, d->names[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* dir.list(path) -> names (unsorted) | nil, err.  The C array is copied in
 * a protected call, so a memory error cannot leak it. */
static int l_dir_list(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  dir_names d;
  if (dir_list(path, &d.names, &d.n) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_pushcfunction(L, dir_names_table);
  lua_pushlightuserdata(L, &d);
  int st = lua_pcall(L, 1, 1, 0);
  dir_free(d.names, d.n);
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

static int secrets_table(lua_State *L) {
  const buf *x = lua_touserdata(L, 1);
  lua_createtable(L, 2, 0);
  int n = 0;
  for (size_t at = 0; at < x->len; at += strlen(x->data + at) + 1) {
    int seen = 0;
    for (int i = 1; i <= n && !seen; i++) {
      lua_rawgeti(L, -1, i);
      seen = strcmp(lua_tostring(L, -1), x->data + at) == 0;
      lua_pop(L, 1);
    }
    if (!seen) lua_pushstring(L, x->data + at), lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* core.database_secrets(database) -> array: the passwords a database string
 * holds, as written and as decoded (each once; empty when there is none).
 * The C strings are copied in a protected call, so a memory error cannot
 * leak them. */
static int l_database_secrets(lua_State *L) {
  const char *database = luaL_checkstring(L, 1);
  buf x = BUF_INIT;
  if (store_secrets(database, &x)) {
    buf_free(&x);
    return luaL_error(L, "not enough memory");
  }
  lua_pushcfunction(L, secrets_table);
  lua_pushlightuserdata(L, &x);
  int st = lua_pcall(L, 1, 1, 0);
  buf_free(&x);
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

/* core.current_dir() -> the working directory, or nil, why.  The command
 * names the absolute path of the SQLite file it uses (a relative sqlite:PATH
 * is resolved against it, as store_sqlite does).  Paths have no fixed length
 * limit: the buffer (Lua's, so an error cannot leak it) grows until getcwd
 * fits. */
static int l_current_dir(lua_State *L) {
  for (size_t size = 256;; size *= 2) {
    luaL_Buffer lb;
    char *p = luaL_buffinitsize(L, &lb, size);
    if (getcwd(p, size)) {
      luaL_pushresultsize(&lb, strlen(p));
      return 1;
    }
    int e = errno;
    luaL_pushresultsize(&lb, 0);
    lua_pop(L, 1);
    if (e != ERANGE || size > SIZE_MAX / 2) {
      lua_pushnil(L);
      lua_pushstring(L, strerror(e));
      return 2;
    }
  }
}

/* json_encode's output buffer is freed even when encoding raises: the
 * encoding runs in a protected call. */
static int encode_protected(lua_State *L) {
  buf *b = lua_touserdata(L, 2);
  json_encode(L, 1, b, NULL);
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  return 1;
}

/* core.json_encode(value) -> JSON text; raises (naming the value) when it
 * cannot be encoded. */
static int l_json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  buf b = BUF_INIT;
  lua_pushcfunction(L, encode_protected);
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, &b);
  int st = lua_pcall(L, 2, 1, 0);
  buf_free(&b);
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

/* core.json_decode(text) -> value, nil | nil, "invalid JSON at byte N: ..." */
static int l_json_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (json_decode(L, s, len)) {
    lua_pushnil(L);
    return 2;
  }
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

static const luaL_Reg process_functions[] = {{"block_signals", l_process_block_signals},
                                             {"wait_signal", l_process_wait_signal},
                                             {"spawn", l_process_spawn},
                                             {"reap", l_process_reap},
                                             {"kill", l_process_kill},
                                             {"kill_group", l_process_kill_group},
                                             {"getpid", l_process_getpid},
                                             {"getppid", l_process_getppid},
                                             {"sleep", l_process_sleep},
                                             {"monotonic", l_process_monotonic},
                                             {"isatty", l_process_isatty},
                                             {"hide_arg", l_process_hide_arg},
                                             {NULL, NULL}};

static const luaL_Reg dir_functions[] = {
    {"is_dir", l_dir_is_dir}, {"list", l_dir_list}, {NULL, NULL}};

/* notify(message) -> true (sent) | false (no $NOTIFY_SOCKET: no service
 * manager listens) | nil, err */
static int l_notify(lua_State *L) {
  size_t len;
  const char *msg = luaL_checklstring(L, 1, &len);
  const char *name = getenv("NOTIFY_SOCKET");
  int rc = notify_send(name, msg, len);
  if (rc < 0) return fail(L, "notify", strerror(errno));
  lua_pushboolean(L, rc);
  return 1;
}

static const luaL_Reg cli_functions[] = {{"database_secrets", l_database_secrets},
                                         {"json_encode", l_json_encode},
                                         {"json_decode", l_json_decode},
                                         {"current_dir", l_current_dir},
                                         {"notify", l_notify},
                                         {NULL, NULL}};

/* Add the command's functions to the module table on top of the stack. */
static void open_cli(lua_State *L) {
  luaL_setfuncs(L, cli_functions, 0);
  luaL_newlib(L, process_functions);
  lua_setfield(L, -2, "process");
  luaL_newlib(L, dir_functions);
  lua_setfield(L, -2, "dir");
}
/* End of the lua-scheduler command's block. */

__attribute__((visibility("default"))) int luaopen_scheduler_core(lua_State *L) {
  luaL_newmetatable(L, CORE_MT);
  luaL_setfuncs(L, core_meta, 0);
  luaL_newlib(L, core_methods);
  luaL_setfuncs(L, concurrent_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  dispatch_open_snooze(L);
  luaL_newlib(L, module_functions);
  lua_pushliteral(L, CORE_VERSION);
  lua_setfield(L, -2, "_VERSION");
  open_cli(L); /* the lua-scheduler command's functions */
  return 1;
}
