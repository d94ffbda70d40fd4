/*
 * fuzz/json_encode.c: libFuzzer harness for json_encode (csrc/json.c).  The
 * input is a small program that builds a Lua value (numbers with any bit
 * pattern, strings of any bytes, tables with any keys, deep nesting, shared
 * and cyclic references); the value is encoded, and then either the encoding
 * refused it with one of the documented messages (json.h), or its text
 * decodes to the same value.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../csrc/json.h"
#include "lua_value.h"

#define MAX_VALUES 200

static lua_State *L;

typedef struct program {
  const uint8_t *p, *end;
} program;

static uint8_t next_byte(program *g) { return g->p < g->end ? *g->p++ : 0; }

static uint64_t next_u64(program *g) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | next_byte(g);
  return v;
}

static const double special[] = {0.0, -0.0, 1.0, 0.1, 1e300, 5e-324, 9223372036854775808.0,
                                 -9223372036854775808.0, 18446744073709551616.0, 1e16, 1e18};

/* Runs the program on the (empty) stack of L.  Every op checks what it
 * needs and is skipped otherwise. */
static void build(lua_State *L, program *g) {
  luaL_checkstack(L, MAX_VALUES + 8, "fuzz program");
  while (g->p < g->end) {
    uint8_t op = next_byte(g) % 14;
    int top = lua_gettop(L);
    if (op <= 7 || op == 11) {
      if (top >= MAX_VALUES) continue;
    }
    switch (op) {
      case 0: lua_pushinteger(L, (lua_Integer)next_u64(g)); break;
      case 1: lua_pushinteger(L, (int8_t)next_byte(g)); break;
      case 2: {
        uint64_t u = next_u64(g);
        double d;
        memcpy(&d, &u, sizeof d);
        lua_pushnumber(L, d);
        break;
      }
      case 3: {
        uint8_t k = next_byte(g);
        size_t n = sizeof special / sizeof *special;
        double d = k % (n + 2) < n ? special[k % (n + 2)] : (k & 1 ? NAN : INFINITY);
        lua_pushnumber(L, k & 0x80 ? -d : d);
        break;
      }
      case 4: {
        size_t n = next_byte(g);
        if (n > (size_t)(g->end - g->p)) n = (size_t)(g->end - g->p);
        lua_pushlstring(L, (const char *)g->p, n);
        g->p += n;
        break;
      }
      case 5: lua_pushnil(L); break;
      case 6: lua_pushboolean(L, next_byte(g) & 1); break;
      case 7: lua_newtable(L); break;
      case 8: /* t, k, v -> t with t[k] = v */
        if (top >= 3 && lua_istable(L, -3) && !lua_isnil(L, -2) &&
            !(lua_type(L, -2) == LUA_TNUMBER && isnan(lua_tonumber(L, -2))))
          lua_rawset(L, -3);
        else if (top >= 2)
          lua_pop(L, 2);
        break;
      case 9: /* t, v -> t with v appended */
        if (top >= 2 && lua_istable(L, -2)) lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        break;
      case 10: { /* v -> {v}, repeated */
        int times = next_byte(g) % 64 + 1;
        for (int i = 0; top >= 1 && i < times; i++) {
          lua_createtable(L, 1, 0);
          lua_rotate(L, -2, 1);
          lua_rawseti(L, -2, 1);
        }
        break;
      }
      case 11: /* a copy of (a reference to) an earlier value */
        if (top >= 1) lua_pushvalue(L, 1 + next_byte(g) % top);
        break;
      case 12: { /* v -> {k = v} with a short key from the program */
        if (top < 1) break;
        size_t n = next_byte(g) % 4;
        if (n > (size_t)(g->end - g->p)) n = (size_t)(g->end - g->p);
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, (const char *)g->p, n);
        g->p += n;
        lua_rotate(L, -3, -1); /* table, key, value */
        lua_rawset(L, -3);
        break;
      }
      case 13:
        if (top >= 1) lua_pop(L, 1);
        break;
    }
  }
}

static int run(lua_State *L) {
  program *g = lua_touserdata(L, 1);
  buf *b = lua_touserdata(L, 2);
  lua_settop(L, 0);
  build(L, g);
  if (lua_gettop(L) == 0) return 0;
  json_encode(L, -1, b, "value");
  return 1;
}

static const char *const refusals[] = {
    "cannot encode a",       "cyclic table (refers back to", "table mixes array items and string keys",
    "is not a string or a positive integer", "sparse array (key", "cannot encode NaN or infinity",
    "string is not valid UTF-8", "table key is not valid UTF-8", "nesting deeper than 20000 levels",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) L = fuzz_state();
  lua_settop(L, 0);
  program g = {data, data + size};
  buf b = BUF_INIT;
  lua_pushcfunction(L, run);
  lua_pushlightuserdata(L, &g);
  lua_pushlightuserdata(L, &b);
  int st = lua_pcall(L, 2, 1, 0);
  if (st != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    int known = 0;
    for (size_t i = 0; msg && i < sizeof refusals / sizeof *refusals; i++)
      if (strstr(msg, refusals[i]) && strncmp(msg, "value", 5) == 0) known = 1;
    if (!known) {
      fprintf(stderr, "unexpected encoding error: %s\n", msg ? msg : "(not a string)");
      abort();
    }
    buf_free(&b);
    return 0;
  }
  if (lua_isnil(L, -1) && b.len == 0) {
    buf_free(&b);
    return 0; /* the program built nothing */
  }
  int value = lua_gettop(L);
  if (!json_decode(L, b.data ? b.data : "", b.len)) {
    fprintf(stderr, "encoded text does not decode: %s\n%.*s\n", lua_tostring(L, -1), (int)b.len,
            b.data);
    abort();
  }
  if (!same_value(L, value, -1)) {
    fprintf(stderr, "round trip changed the value:\n%.*s\n", (int)b.len, b.data);
    abort();
  }
  buf_free(&b);
  lua_settop(L, 0);
  return 0;
}
