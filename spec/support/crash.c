/*
 * spec/support/crash.c: the module `spec.crash`, for specs only (not part
 * of the rock): a worker that ends itself in the middle of a job, as a
 * crash would, without running the process's exit handlers.
 *
 *   crash.exit(code)   flush stdio, then _exit(code)
 *
 * os.exit(code) runs them, and under `make test-memory` one of them is
 * LeakSanitizer's leak check: stopping the world while the worker's other
 * threads (heartbeat, fetcher) are in the middle of their work, its tracer
 * now and then crashes and the exit status becomes LSAN_OPTIONS exitcode
 * (0), so the spec that waits for `code` saw 0.  A crash leaves its
 * memory to the kernel anyway: nothing is there to check.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <unistd.h>

static int l_exit(lua_State *L) {
  int code = (int)luaL_checkinteger(L, 1);
  fflush(NULL);
  _exit(code);
  return 0;
}

int luaopen_spec_crash(lua_State *L) {
  static const luaL_Reg fns[] = {{"exit", l_exit}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
