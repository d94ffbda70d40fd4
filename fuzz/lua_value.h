/*
 * fuzz/lua_value.h: what the JSON harnesses share: a Lua state with the
 * standard libraries, and same_value(), which compares two Lua values
 * exactly (subtypes, float bits, table contents) except that -0.0 equals
 * 0.0 (json.h: -0.0 is written 0.0).  The comparison is Lua code, iterative,
 * so that 20,000 levels of nesting need no C stack.
 */
#ifndef FUZZ_LUA_VALUE_H
#define FUZZ_LUA_VALUE_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

static const char same_value_lua[] =
    "local a, b = ...\n"
    "local stack = { a, b }\n"
    "while #stack > 0 do\n"
    "  local y = table.remove(stack)\n"
    "  local x = table.remove(stack)\n"
    "  if type(x) ~= type(y) then return false end\n"
    "  if type(x) == 'number' then\n"
    "    if math.type(x) ~= math.type(y) or x ~= y then return false end\n"
    "  elseif type(x) == 'table' then\n"
    "    local n = 0\n"
    "    for k, v in pairs(x) do\n"
    "      n = n + 1\n"
    "      stack[#stack + 1] = v\n"
    "      stack[#stack + 1] = rawget(y, k)\n"
    "    end\n"
    "    for _ in pairs(y) do n = n - 1 end\n"
    "    if n ~= 0 then return false end\n"
    "  elseif x ~= y then\n"
    "    return false\n"
    "  end\n"
    "end\n"
    "return true\n";

/* A fresh state (aborts if it cannot be made) with the comparison function
 * in the registry field "same_value". */
static lua_State *fuzz_state(void) {
  lua_State *L = luaL_newstate();
  if (!L) abort();
  luaL_openlibs(L);
  if (luaL_loadstring(L, same_value_lua) != LUA_OK) abort();
  lua_setfield(L, LUA_REGISTRYINDEX, "same_value");
  return L;
}

/* Are the values at indexes a and b the same (see above)? */
static int same_value(lua_State *L, int a, int b) {
  a = lua_absindex(L, a);
  b = lua_absindex(L, b);
  lua_getfield(L, LUA_REGISTRYINDEX, "same_value");
  lua_pushvalue(L, a);
  lua_pushvalue(L, b);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    fprintf(stderr, "same_value: %s\n", lua_tostring(L, -1));
    abort();
  }
  int same = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return same;
}

#endif
