/*
 * spec/support/memlimit.c: the module `spec.memlimit`, for specs and the
 * fault suite only (not part of the rock).  It wraps the Lua state's
 * allocator so that a test can make allocations fail for real, and so
 * provoke a memory error inside the scheduler's C code (e.g. while run()
 * builds a listener's arguments), which no Lua code can do by itself.
 *
 *   memlimit.refuse(what)  from now on refuse: "tables" every new table,
 *                          "all" every allocation that needs memory
 *   memlimit.allow()       allocate normally again; returns how many
 *                          allocations were refused
 *
 * Lua answers a refused allocation with an emergency collection and one
 * more try, then raises "not enough memory" (LUA_ERRMEM).  The allocator
 * is swapped with lua_setallocf, which the manual allows on a live state;
 * the previous one is called for everything that is let through.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>

enum { ALLOW, REFUSE_TABLES, REFUSE_ALL };

static struct {
  lua_Alloc f;
  void *ud;
  int mode;
  long refused;
} wrap;

static void *limited(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  /* a new object is allocated with ptr NULL and osize its Lua type */
  int refuse = (wrap.mode == REFUSE_ALL && nsize > (ptr ? osize : 0)) ||
               (wrap.mode == REFUSE_TABLES && ptr == NULL && osize == LUA_TTABLE && nsize > 0);
  if (refuse) {
    wrap.refused++;
    return NULL;
  }
  return wrap.f(wrap.ud, ptr, osize, nsize);
}

static int l_refuse(lua_State *L) {
  static const char *const modes[] = {"tables", "all", NULL};
  int mode = luaL_checkoption(L, 1, NULL, modes) == 0 ? REFUSE_TABLES : REFUSE_ALL;
  if (!wrap.f) {
    wrap.f = lua_getallocf(L, &wrap.ud);
    lua_setallocf(L, limited, NULL);
  }
  wrap.refused = 0;
  wrap.mode = mode;
  return 0;
}

static int l_allow(lua_State *L) {
  long n = wrap.refused;
  wrap.mode = ALLOW;
  if (wrap.f) {
    lua_setallocf(L, wrap.f, wrap.ud);
    wrap.f = NULL;
  }
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

int luaopen_spec_memlimit(lua_State *L) {
  static const luaL_Reg fns[] = {{"refuse", l_refuse}, {"allow", l_allow}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
