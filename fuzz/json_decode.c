/*
 * fuzz/json_decode.c: libFuzzer harness for json_decode (csrc/json.c) on
 * arbitrary bytes, with a round trip: whatever decodes must encode (unless
 * it is a sparse array, which the encoder refuses by contract), and the
 * encoded text must decode to the same value.  A decoding failure must be
 * the documented "invalid JSON at byte N: ..." message with N in range.
 */
#include <stdint.h>
#include <string.h>

#include "../csrc/json.h"
#include "lua_value.h"

static lua_State *L;

static int decode(lua_State *L) {
  size_t n;
  const char *s = lua_tolstring(L, 1, &n);
  lua_pushboolean(L, json_decode(L, s, n));
  return 2; /* value or message, ok */
}

static int encode(lua_State *L) {
  buf *b = lua_touserdata(L, 2);
  json_encode(L, 1, b, NULL);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) L = fuzz_state();
  lua_settop(L, 0);
  lua_pushcfunction(L, decode);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) abort(); /* only memory errors may raise */
  if (!lua_toboolean(L, 2)) {
    const char *msg = lua_tostring(L, 1);
    unsigned long long at;
    if (!msg || sscanf(msg, "invalid JSON at byte %llu: ", &at) != 1 || at > size) {
      fprintf(stderr, "unexpected decoding error: %s\n", msg ? msg : "(not a string)");
      abort();
    }
    return 0;
  }
  lua_settop(L, 1); /* the decoded value */

  buf b = BUF_INIT;
  lua_pushcfunction(L, encode);
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, &b);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (!msg || !strstr(msg, "sparse array")) {
      fprintf(stderr, "a decoded value does not encode: %s\n", msg ? msg : "?");
      abort();
    }
    buf_free(&b);
    return 0;
  }
  lua_pushcfunction(L, decode);
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK || !lua_toboolean(L, -1)) {
    fprintf(stderr, "encoded text does not decode: %s\n%.*s\n", lua_tostring(L, -2), (int)b.len,
            b.data);
    abort();
  }
  if (!same_value(L, 1, -2)) {
    fprintf(stderr, "round trip changed the value:\n%.*s\n", (int)b.len, b.data);
    abort();
  }
  buf_free(&b);
  lua_settop(L, 0);
  return 0;
}
