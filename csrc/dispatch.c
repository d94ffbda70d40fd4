#include "dispatch.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "json.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* Stored errors are capped: a listener may raise with megabytes of text. */
#define MAX_ERROR_BYTES 65536

/* Protected helper for the handler: JSON text of the table at index 1. */
static int encode_error_object(lua_State *L) {
  core *c = lua_touserdata(L, lua_upvalueindex(1));
  buf_reset(&c->msg);
  json_encode(L, 1, &c->msg, "error");
  lua_pushlstring(L, buf_cstr(&c->msg), c->msg.len);
  return 1;
}

/* Message handler: any error value becomes a string with a traceback.
 * Tables without __tostring are shown as JSON when they can be. */
static int on_error(lua_State *L) {
  const char *msg = NULL;
  if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER) {
    msg = lua_tostring(L, 1);
  } else if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
    msg = lua_tostring(L, -1);
  } else if (lua_type(L, 1) == LUA_TTABLE) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, encode_error_object, 1);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK)
      msg = lua_pushfstring(L, "error object: %s", lua_tostring(L, -1));
    else
      msg = "(error object is a table value)";
  } else {
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int dispatch_handler(lua_State *L, core *c) {
  lua_pushlightuserdata(L, c);
  lua_pushcclosure(L, on_error, 1);
  return lua_gettop(L);
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
  else return 0;
  if (n < len) return 0;
  unsigned cp = c & (0x3F >> (len - 1));
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

/* Copy an error message into out as storable text: valid UTF-8 (bad bytes
 * become U+FFFD), no NUL (shown as \0), at most MAX_ERROR_BYTES. */
static int store_text(buf *out, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  int err = 0;
  size_t i = 0;
  buf_reset(out);
  while (i < n && !err) {
    if (out->len >= MAX_ERROR_BYTES) {
      err |= buf_adds(out, "\n... (truncated)");
      break;
    }
    size_t k = u[i] ? utf8_seq(u + i, n - i) : 0;
    if (k) {
      err |= buf_add(out, s + i, k);
      i += k;
    } else {
      err |= buf_adds(out, u[i] ? "\xEF\xBF\xBD" : "\\0");
      i++;
    }
  }
  return err;
}

/* ------------------------------------------------------------------ */
/* Listener time limits.  While a listener with a limit runs, a count hook
 * on its Lua thread looks at the monotonic clock every HOOK_EVERY
 * instructions; past the deadline it raises "timeout: ..." and from then on
 * fires at every instruction, so a listener that catches the error (pcall
 * in a loop) cannot carry on either.  The hook is installed only around
 * that listener's call, so listeners without a limit cost nothing.
 * Coroutines the listener creates inherit the hook (Lua copies it to new
 * threads); one that outlives the call removes it from itself the next time
 * it fires.  A listener blocked inside a C function runs no instruction:
 * the heartbeat thread stops renewing its lease instead (heartbeat.h). */

#define HOOK_EVERY 1000

typedef struct guard {
  lua_State *L;        /* the thread the listener was called on */
  double deadline;     /* monotonic; INFINITY: none (inherited from outer) */
  double limit;        /* seconds, for the message */
  int expired;
  struct guard *outer; /* a listener of another instance that is running us */
} guard;

/* The innermost listener call with a time limit on this OS thread. */
static _Thread_local guard *active_guard;

/* Raise the time limit's error: "timeout: listener ran longer than Ns". */
static void raise_timeout(lua_State *L, double limit) {
  char secs[32];
  snprintf(secs, sizeof secs, "%g", limit);
  lua_pushfstring(L, "timeout: listener ran longer than %ss", secs);
  lua_error(L);
}

static void timeout_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  guard *g = active_guard;
  if (!g) {
    /* a coroutine made by a listener that has returned: not ours to stop */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (!g->expired) {
    if (clock_mono() < g->deadline) return;
    g->expired = 1;
    lua_sethook(g->L, timeout_hook, LUA_MASKCOUNT, 1);
  }
  if (L != g->L) lua_sethook(L, timeout_hook, LUA_MASKCOUNT, 1);
  raise_timeout(L, g->limit);
}

double dispatch_timeout(lua_State *L, core *c, int env, const store_job *j) {
  double v = c->timeout;
  lua_getfield(L, env, "timeouts");
  lua_pushlstring(L, j->name, j->name_len);
  if (lua_rawget(L, -2) == LUA_TNUMBER) v = lua_tonumber(L, -1);
  lua_pop(L, 2);
  return v > 0 && isfinite(v) ? v : 0;
}

double dispatch_history(lua_State *L, core *c, int env, const char *name, size_t len) {
  double v = c->history;
  if (!c->history_any) return v > 0 && isfinite(v) ? v : 0; /* no table lookup */
  lua_getfield(L, env, "histories");
  lua_pushlstring(L, name, len);
  if (lua_rawget(L, -2) == LUA_TNUMBER) v = lua_tonumber(L, -1);
  lua_pop(L, 2);
  return v > 0 && isfinite(v) ? v : 0;
}

/* lua_pcall(L, nargs, 1, handler), stopped after `limit` seconds (0: no
 * limit of its own; an outer listener's still applies): the listener's
 * first result is kept (a snooze, see dispatch_snooze).  The hook in place
 * before (a debugger's, an outer listener's) is back when it returns, even
 * when the listener raised or tried to yield. */
static int call_listener(lua_State *L, int nargs, int handler, double limit) {
  guard *outer = active_guard;
  if (limit <= 0 && !outer) return lua_pcall(L, nargs, 1, handler);
  guard g = {L, limit > 0 ? clock_mono() + limit : INFINITY, limit, 0, outer};
  if (outer && outer->deadline < g.deadline) g.deadline = outer->deadline, g.limit = outer->limit;
  lua_Hook prev = lua_gethook(L);
  int prev_mask = lua_gethookmask(L), prev_count = lua_gethookcount(L);
  lua_sethook(L, timeout_hook, LUA_MASKCOUNT, HOOK_EVERY);
  active_guard = &g;
  int status = lua_pcall(L, nargs, 1, handler);
  active_guard = outer;
  lua_sethook(L, prev, prev_mask, prev_count);
  /* an expired outer guard keeps firing at every instruction */
  if (outer && outer->expired && outer->L == L) lua_sethook(L, timeout_hook, LUA_MASKCOUNT, 1);
  return status;
}

/* Time limits of listeners that run in coroutines (a concurrent worker,
 * concurrent.c): the same rule per coroutine.  A count hook on the job's
 * coroutine looks at the clock every HOOK_EVERY instructions; past the
 * deadline it raises "timeout: ..." and from then on fires at every
 * instruction, as long as the listener's frames are on the stack (deeper
 * than the wrapper that called dispatch_guard): the wrapper's own code
 * after the call runs on.  A coroutine suspended past its deadline (its
 * I/O never answered) raises at its first instruction if it is ever
 * resumed.  Guards live in a weak-keyed registry table, by coroutine. */
static const char guards_key = 'g';

typedef struct co_guard {
  double deadline, limit;
  int depth; /* stack depth at dispatch_guard: deeper is the listener */
  int expired;
  lua_Hook prev;
  int prev_mask, prev_count;
} co_guard;

static int stack_depth(lua_State *L) {
  lua_Debug ar;
  int n = 0;
  while (lua_getstack(L, n, &ar)) n++;
  return n;
}

static void co_timeout_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  co_guard *g = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &guards_key) == LUA_TTABLE) {
    lua_pushthread(L);
    lua_rawget(L, -2);
    g = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (!g) {
    /* a coroutine the listener made inherited the hook: not ours */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (!g->expired) {
    if (clock_mono() < g->deadline) return;
    g->expired = 1;
    lua_sethook(L, co_timeout_hook, LUA_MASKCOUNT, 1);
  }
  if (stack_depth(L) < g->depth) return; /* the wrapper, after the call */
  raise_timeout(L, g->limit);
}

void dispatch_guard(lua_State *L, double limit) {
  if (!(limit > 0)) return;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &guards_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &guards_key);
  }
  lua_pushthread(L);
  co_guard *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->deadline = clock_mono() + limit;
  g->limit = limit;
  g->depth = stack_depth(L);
  g->expired = 0;
  g->prev = lua_gethook(L);
  g->prev_mask = lua_gethookmask(L);
  g->prev_count = lua_gethookcount(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_sethook(L, co_timeout_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

void dispatch_unguard(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &guards_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pushthread(L);
  lua_rawget(L, -2);
  co_guard *g = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (g) {
    lua_sethook(L, g->prev, g->prev_mask, g->prev_count);
    lua_pushthread(L);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
}

long long dispatch_max_attempts(lua_State *L, core *c, int env, int name_idx, long long job_max) {
  if (job_max > 0) return job_max;
  long long v = c->max_attempts;
  lua_getfield(L, env, "limits");
  lua_pushvalue(L, name_idx);
  if (lua_rawget(L, -2) == LUA_TNUMBER && lua_isinteger(L, -1)) v = lua_tointeger(L, -1);
  lua_pop(L, 2);
  return v;
}

/* Seconds until the next attempt: env.backoff(attempt).  The Lua side
 * guards the user's function; this only defends against the impossible. */
static double backoff(lua_State *L, int env, long long attempt) {
  double d = 1;
  lua_getfield(L, env, "backoff");
  lua_pushinteger(L, attempt);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TNUMBER) {
    double v = lua_tonumber(L, -1);
    if (isfinite(v) && v >= 0) d = v;
  }
  lua_pop(L, 1);
  return d;
}

/* dispatch_log's protected part: (log function, level, message as light
 * userdata).  Building the strings may raise a memory error too. */
static int call_log(lua_State *L) {
  const char *level = lua_touserdata(L, 2), *message = lua_touserdata(L, 3);
  lua_settop(L, 1);
  lua_pushstring(L, level);
  lua_pushstring(L, message);
  lua_call(L, 2, 0); /* protected by dispatch_log's lua_pcall */
  return 0;
}

void dispatch_log(lua_State *L, int env, const char *level, const char *message) {
  if (lua_getfield(L, env, "log") != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  /* never raises: the loop logs while it cleans up after an error too */
  lua_pushcfunction(L, call_log);
  lua_insert(L, -2);
  lua_pushlightuserdata(L, (void *)level);
  lua_pushlightuserdata(L, (void *)message);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* dispatch_log_job's protected part: (log function, level, message,
 * fields), the last three as light userdata. */
static int call_log_job(lua_State *L) {
  const char *level = lua_touserdata(L, 2), *message = lua_touserdata(L, 3);
  const job_log *f = lua_touserdata(L, 4);
  lua_settop(L, 1);
  lua_pushstring(L, level);
  lua_pushstring(L, message);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, f->event);
  lua_setfield(L, -2, "event");
  lua_pushinteger(L, (lua_Integer)f->id);
  lua_setfield(L, -2, "job_id");
  lua_pushlstring(L, f->name, f->name_len);
  lua_setfield(L, -2, "name");
  lua_pushinteger(L, (lua_Integer)f->attempt);
  lua_setfield(L, -2, "attempt");
  if (f->duration >= 0) {
    lua_pushnumber(L, f->duration);
    lua_setfield(L, -2, "duration");
  }
  if (f->outcome) {
    lua_pushstring(L, f->outcome);
    lua_setfield(L, -2, "outcome");
  }
  if (f->retry_in >= 0) {
    lua_pushnumber(L, f->retry_in);
    lua_setfield(L, -2, "retry_in");
  }
  if (f->worker) {
    lua_pushstring(L, f->worker);
    lua_setfield(L, -2, "worker_id");
  }
  lua_call(L, 3, 0); /* protected by dispatch_log_job's lua_pcall */
  return 0;
}

void dispatch_log_job(lua_State *L, int env, const char *level, const char *message,
                      const job_log *fields) {
  if (lua_getfield(L, env, "log") != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  lua_pushcfunction(L, call_log_job);
  lua_insert(L, -2);
  lua_pushlightuserdata(L, (void *)level);
  lua_pushlightuserdata(L, (void *)message);
  lua_pushlightuserdata(L, (void *)fields);
  if (lua_pcall(L, 4, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* ------------------------------------------------------------------ */
/* Snoozes.  scheduler.snooze(seconds) returns a full userdata holding
 * the seconds, with a metatable of its own (SNOOZE_MT, hidden behind
 * __metatable): Lua code cannot make one any other way (a string, a
 * number or a table that looks alike is not a snooze), so a listener's
 * return value is a snooze only when snooze() made it. */

static int snooze_tostring(lua_State *L) {
  const double *secs = luaL_checkudata(L, 1, SNOOZE_MT);
  char text[32];
  snprintf(text, sizeof text, "%.14g", *secs);
  lua_pushfstring(L, "scheduler.snooze(%s)", text);
  return 1;
}

void dispatch_open_snooze(lua_State *L) {
  if (luaL_newmetatable(L, SNOOZE_MT)) {
    lua_pushcfunction(L, snooze_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "scheduler.snooze");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
}

void dispatch_push_snooze(lua_State *L, double seconds) {
  double *secs = lua_newuserdatauv(L, sizeof *secs, 0);
  *secs = seconds;
  luaL_setmetatable(L, SNOOZE_MT);
}

int dispatch_snooze(lua_State *L, int idx, double *seconds) {
  const double *secs = luaL_testudata(L, idx, SNOOZE_MT);
  if (!secs) return 0;
  *seconds = *secs;
  return 1;
}

int dispatch_tick(lua_State *L, int env, int handler, int core_idx, double within) {
  if (lua_getfield(L, env, "tick") != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushvalue(L, core_idx);
  lua_pushnumber(L, within);
  if (lua_pcall(L, 2, 0, handler) == LUA_OK) return 0;
  lua_pushfstring(L, "recurring schedules: %s", lua_tostring(L, -1));
  dispatch_log(L, env, "error", lua_tostring(L, -1));
  lua_pop(L, 2);
  return -1;
}

void dispatch_push_job(lua_State *L, const store_job *j, int name_idx, long long max) {
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, (lua_Integer)j->id);
  lua_setfield(L, -2, "id");
  lua_pushvalue(L, name_idx);
  lua_setfield(L, -2, "name");
  lua_pushinteger(L, (lua_Integer)j->attempt);
  lua_setfield(L, -2, "attempt");
  lua_pushinteger(L, (lua_Integer)max);
  lua_setfield(L, -2, "max_attempts");
  lua_pushnumber(L, j->run_at);
  lua_setfield(L, -2, "run_at");
  if (j->key) {
    lua_pushlstring(L, j->key, j->key_len);
    lua_setfield(L, -2, "key");
  }
  lua_pushinteger(L, (lua_Integer)j->priority);
  lua_setfield(L, -2, "priority");
}

int dispatch_job(lua_State *L, core *c, int env, int handler, const store_job *j,
                 double timeout, store_outcome *out) {
  int top = lua_gettop(L), status = LUA_OK;
  luaL_checkstack(L, 8, "dispatching a job");
  out->claim.id = j->id;
  out->claim.token = j->token;
  out->retry_in = 0;
  buf_reset(&out->error);

  lua_getfield(L, env, "listeners");
  lua_pushlstring(L, j->name, j->name_len);
  int name_idx = lua_gettop(L);
  lua_pushvalue(L, name_idx);
  if (lua_rawget(L, -3) == LUA_TNIL) {
    /* its listener was removed (off) during the batch: give it back */
    out->kind = OUTCOME_RELEASE;
    lua_settop(L, top);
    return LUA_OK;
  }
  long long max = dispatch_max_attempts(L, c, env, name_idx, j->max_attempts);
  if (j->payload && !json_decode(L, j->payload, j->payload_len)) {
    /* stored payload unreadable: fails like a listener error */
    lua_pushfstring(L, "payload of job %I: %s", (lua_Integer)j->id, lua_tostring(L, -1));
    status = LUA_ERRRUN;
  } else {
    if (!j->payload) lua_pushnil(L);
    dispatch_push_job(L, j, name_idx, max);
    status = call_listener(L, 2, handler, timeout);
  }
  if (status == LUA_OK) {
    out->kind = dispatch_snooze(L, -1, &out->retry_in) ? OUTCOME_SNOOZE : OUTCOME_DONE;
    lua_settop(L, top);
    return LUA_OK;
  }
  size_t len = 0;
  const char *msg = status == LUA_ERRMEM ? NULL : lua_tolstring(L, -1, &len);
  dispatch_failure(L, env, j->attempt, max, msg, len, status == LUA_ERRMEM, out);
  lua_settop(L, top);
  return status == LUA_ERRMEM ? LUA_ERRMEM : LUA_OK;
}

void dispatch_failure(lua_State *L, int env, long long attempt, long long max, const char *msg,
                      size_t len, int nomem, store_outcome *out) {
  if (nomem) msg = "not enough memory", len = strlen(msg);
  if (!msg) msg = "(error without a message)", len = strlen(msg);
  if (store_text(&out->error, msg, len)) buf_reset(&out->error);
  if (attempt >= max || nomem) {
    out->kind = nomem ? OUTCOME_RETRY : OUTCOME_FAILED;
    out->retry_in = 0;
  } else {
    out->kind = OUTCOME_RETRY;
    out->retry_in = backoff(L, env, attempt);
  }
}
