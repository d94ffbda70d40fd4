/*
 * dispatch: the only place that calls user Lua code (listeners, the backoff
 * function, the log function), always through lua_pcall with a message
 * handler that adds a traceback.  Every function leaves the stack as it
 * found it.  `env` is the absolute index of the instance's env table
 * (core.h).
 */
#ifndef SCHEDULER_DISPATCH_H
#define SCHEDULER_DISPATCH_H

#include <lua.h>

#include "core.h"
#include "store.h"

/* Snoozes (README: API, snooze).  The longest snooze, in seconds (30
 * days): a longer one is more likely a mistake (milliseconds for
 * seconds) than a wish; a job to run that far ahead is scheduled. */
#define SNOOZE_MAX 2592000 /* 30 * 86400; lua/scheduler.lua says the same */
#define SNOOZE_MT "scheduler.Snooze"
/* Create the metatable of snooze values (at luaopen). */
void dispatch_open_snooze(lua_State *L);
/* Push the value scheduler.snooze(seconds) returns (seconds checked by the
 * caller: 0 <= seconds <= SNOOZE_MAX). */
void dispatch_push_snooze(lua_State *L, double seconds);
/* 1 (and *seconds) when the value at idx is a snooze, else 0. */
int dispatch_snooze(lua_State *L, int idx, double *seconds);

/* Push the message handler used for listener calls; returns its index. */
int dispatch_handler(lua_State *L, core *c);
/* The time limit in seconds (0: none) of a call of the listener of job j:
 * its on() option, else the instance's default. */
double dispatch_timeout(lua_State *L, core *c, int env, const store_job *j);
/* How long (seconds, 0: not at all) history keeps the finished jobs of
 * name: its on() option, else the instance's default. */
double dispatch_history(lua_State *L, core *c, int env, const char *name, size_t len);
/* Run the listener of claimed job j, stopped with the error "timeout: ..."
 * if it runs Lua code for longer than `timeout` seconds (0: no limit).
 * Fills *out (kind, error, retry_in): OUTCOME_SNOOZE when it returned a
 * snooze.  Returns LUA_OK, or LUA_ERRMEM when
 * Lua ran out of memory (the run must stop; *out then says to retry the
 * job). */
int dispatch_job(lua_State *L, core *c, int env, int handler, const store_job *j,
                 double timeout, store_outcome *out);
/* Push the listener's job table {id, name, attempt, max_attempts, run_at,
 * key, priority} of claimed job j; its name string is at name_idx, max
 * its max_attempts (dispatch_max_attempts). */
void dispatch_push_job(lua_State *L, const store_job *j, int name_idx, long long max);
/* The outcome of a run of a job at attempt `attempt` of `max` that failed
 * with message msg[0, len) (NULL: none; nomem: Lua ran out of memory):
 * retried after env.backoff(attempt), or failed on its last attempt (a
 * memory error always retries).  Fills out->kind, retry_in and error. */
void dispatch_failure(lua_State *L, int env, long long attempt, long long max, const char *msg,
                      size_t len, int nomem, store_outcome *out);
/* Limit the listener about to be called on coroutine L to `limit`
 * seconds (0: nothing to do): past it, "timeout: ..." is raised in it
 * (see dispatch.c).  Called by the wrapper that calls the listener, on
 * the listener's coroutine; dispatch_unguard, after the call, removes
 * it. */
void dispatch_guard(lua_State *L, double limit);
void dispatch_unguard(lua_State *L);
/* The max_attempts that applies to a job of the name at name_idx whose own
 * value is job_max (0: unset): the job's, else its listener's, else the
 * instance default. */
long long dispatch_max_attempts(lua_State *L, core *c, int env, int name_idx, long long job_max);
/* Call env.tick(core, within) (the core userdata at core_idx), if there is
 * one: schedules due within `within` seconds become jobs.  Returns 0, or -1
 * when it raised (the error is logged). */
int dispatch_tick(lua_State *L, int env, int handler, int core_idx, double within);
/* Send a message to env.log(level, message), if there is one; a failing log
 * function is ignored.  Never raises (not even out of memory). */
void dispatch_log(lua_State *L, int env, const char *level, const char *message);

/* A job's start or end, as fields for the log function's third argument
 * (README: Logs): log(level, message, {event =, job_id =, name =,
 * attempt =, duration =, outcome =, retry_in =, worker_id =}). */
typedef struct job_log {
  const char *event;   /* "job_start" or "job_end" */
  const char *outcome; /* job_end: "done", "retry", "failed" or "snoozed"; else NULL */
  long long id, attempt;
  const char *name;
  size_t name_len;
  double duration; /* seconds the listener ran; < 0: none (a start) */
  double retry_in; /* seconds, for "retry" and "snoozed"; < 0: none */
  const char *worker;
} job_log;

/* dispatch_log with the job's fields; never raises either. */
void dispatch_log_job(lua_State *L, int env, const char *level, const char *message,
                      const job_log *fields);

#endif
