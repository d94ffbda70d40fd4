/*
 * json.c: the payload codec, Lua value <-> JSON text.  See json.h for the
 * contract.
 *
 * Both directions are iterative: the tables being written or built live on
 * the Lua stack and the per-level bookkeeping lives in a small array on the C
 * stack that moves to a Lua userdata when the nesting gets deep, so depth
 * costs neither C stack nor memory that a Lua error could leak.
 */
#include "json.h"

#include <float.h>
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

#if defined(__GNUC__)
#define J_COLD __attribute__((cold, noinline))
#define J_LIKELY(x) __builtin_expect(!!(x), 1)
#define J_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define J_COLD
#define J_LIKELY(x) (x)
#define J_UNLIKELY(x) (x)
#endif

#define J_STR_(x) #x
#define J_STR(x) J_STR_(x)
#define DEPTH_MSG "nesting deeper than " J_STR(JSON_MAX_DEPTH) " levels"

/* Frames kept on the C stack before moving to a Lua userdata. */
#define LOCAL_FRAMES 32
/* Up to this depth cycles are found by scanning the open tables; deeper, a
   Lua table keyed by table identity is used (O(1) per table). */
#define CYCLE_SCAN_MAX 32

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                             */
/* ------------------------------------------------------------------------ */

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Nonzero when one of the 8 bytes in w is < 0x20, '"', '\\' or >= 0x80,
   i.e. when the word cannot be copied verbatim between JSON quotes. */
static inline int word_special(uint64_t w) {
  uint64_t ctl = (w - ONES * 0x20) & ~w;
  uint64_t q = w ^ (ONES * 0x22);
  uint64_t bs = w ^ (ONES * 0x5C);
  q = (q - ONES) & ~q;
  bs = (bs - ONES) & ~bs;
  return ((ctl | q | bs | w) & HIGHS) != 0;
}

/* Length of the well-formed UTF-8 sequence at s (s[0] >= 0x80, n bytes
   available), or 0 if it is not one (overlong, surrogate, > U+10FFFF,
   truncated, stray continuation byte). */
static inline size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0], lo = 0x80, hi = 0xBF;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3) return 0;
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
  }
  if (c < 0xF5) {
    if (n < 4) return 0;
    if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 &&
                   (s[3] & 0xC0) == 0x80
               ? 4
               : 0;
  }
  return 0;
}

static const char digits2[201] =
    "0001020304050607080910111213141516171819"
    "2021222324252627282930313233343536373839"
    "4041424344454647484950515253545556575859"
    "6061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Writes the decimal digits of u so that they end just before `end`;
   returns the first digit. */
static inline char *u64_digits(char *end, uint64_t u) {
  while (u >= 100) {
    unsigned r = (unsigned)(u % 100);
    u /= 100;
    end -= 2;
    memcpy(end, digits2 + 2 * r, 2);
  }
  if (u >= 10) {
    end -= 2;
    memcpy(end, digits2 + 2 * u, 2);
  } else {
    *--end = (char)('0' + u);
  }
  return end;
}

/* A fixed-size, truncating string builder for error messages. */
typedef struct sbuf {
  char *p;
  size_t n, cap; /* cap includes room for the NUL */
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  size_t room = b->cap - 1 - b->n;
  if (n > room) n = room;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static void sb_adds(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  if (r > 0) b->n += (size_t)r < b->cap - b->n ? (size_t)r : b->cap - 1 - b->n;
}

/* Appends at most ~40 bytes of s, readable and safe for an error message. */
static void sb_quoted(sbuf *b, const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n && i < 40) {
    unsigned c = s[i];
    char esc[8];
    if (c >= 0x80) {
      size_t k = utf8_seq(s + i, n - i);
      if (k) {
        sb_add(b, (const char *)s + i, k);
        i += k;
        continue;
      }
      snprintf(esc, sizeof esc, "\\x%02X", c);
      sb_adds(b, esc);
    } else if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      sb_add(b, esc, 2);
    } else if (c == '\n') {
      sb_adds(b, "\\n");
    } else if (c < 0x20 || c == 0x7F) {
      snprintf(esc, sizeof esc, "\\x%02X", c);
      sb_adds(b, esc);
    } else {
      sb_add(b, (const char *)s + i, 1);
    }
    i++;
  }
  if (i < n) sb_adds(b, "...");
}

/* ------------------------------------------------------------------------ */
/* Encoder                                                                    */
/* ------------------------------------------------------------------------ */

/* Per open table.  n says how the table is being written:
     ENC_OBJ  an object, driven by lua_next (its current key is on the stack);
     ENC_SEQ  an array whose keys lua_next has so far returned as 1, 2, ...,
              i, written as they come (its current key is on the stack);
     >= 0     an array written by index, items i..n (a nil placeholder sits
              in the key slot).  A table leaves ENC_SEQ for this mode as soon
              as lua_next returns a key out of order. */
typedef struct enc_frame {
  lua_Integer i; /* arrays: index of the item being written */
  lua_Integer n;
  const void *t; /* identity of the table, for cycle detection */
} enc_frame;

#define ENC_OBJ (-1)
#define ENC_SEQ (-2)

/* Lua stack while encoding: [base+1] visiting set (nil until needed),
   [base+2] frame storage (nil until needed), then two slots per open table:
   the table of level d (1-based) at ENC_TAB(d) and, above it, its current key
   or a nil placeholder; the value being written is on top. */
typedef struct enc {
  lua_State *L;
  buf *out;
  const char *root;
  int base;
  int depth;
  int flags;
  int useset;
  int max_depth; /* JSON_MAX_DEPTH, or less for a payload */
  enc_frame *f;
  size_t fcap;
} enc;

#define ENC_SET(e) ((e)->base + 1)
#define ENC_FRAMES(e) ((e)->base + 2)
#define ENC_TAB(e, d) ((e)->base + 2 * (d) + 1)

J_COLD static void enc_nomem(enc *e) {
  lua_pushliteral(e->L, "not enough memory");
  lua_error(e->L);
}

static void enc_path_level(enc *e, sbuf *b, int d) {
  const enc_frame *f = &e->f[d - 1];
  if (f->n != ENC_OBJ) {
    sb_printf(b, "[%lld]", (long long)f->i);
    return;
  }
  size_t n;
  const char *k = lua_type(e->L, ENC_TAB(e, d) + 1) == LUA_TSTRING
                      ? lua_tolstring(e->L, ENC_TAB(e, d) + 1, &n)
                      : NULL;
  if (!k) {
    sb_adds(b, "[?]");
    return;
  }
  int ident = n > 0 && n <= 40 && !(k[0] >= '0' && k[0] <= '9');
  for (size_t i = 0; ident && i < n; i++) {
    unsigned char c = (unsigned char)k[i];
    ident = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '_';
  }
  if (ident) {
    sb_add(b, ".", 1);
    sb_add(b, k, n);
  } else {
    sb_adds(b, "[\"");
    sb_quoted(b, k, n);
    sb_adds(b, "\"]");
  }
}

/* Appends the root name and the components of levels 1..nlev. */
static void enc_path(enc *e, sbuf *b, int nlev) {
  sb_quoted(b, e->root, strlen(e->root));
  if (nlev <= 10) {
    for (int d = 1; d <= nlev; d++) enc_path_level(e, b, d);
  } else {
    for (int d = 1; d <= 4; d++) enc_path_level(e, b, d);
    sb_printf(b, "...(%d more)...", nlev - 8);
    for (int d = nlev - 3; d <= nlev; d++) enc_path_level(e, b, d);
  }
}

/* Raises "<path of the first nlev levels>: <message>". */
J_COLD static void enc_fail(enc *e, int nlev, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
J_COLD static void enc_fail(enc *e, int nlev, const char *fmt, ...) {
  char msg[720];
  sbuf b = {msg, 0, sizeof msg};
  msg[0] = '\0';
  enc_path(e, &b, nlev);
  sb_adds(&b, ": ");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg + b.n, sizeof msg - b.n, fmt, ap);
  va_end(ap);
  lua_pushstring(e->L, msg);
  lua_error(e->L);
}

/* Raises for a table (about to be opened at level depth+1) that is the
   open table of level anc+1. */
J_COLD static void enc_cyclic(enc *e, int anc) {
  char to[360];
  sbuf b = {to, 0, sizeof to};
  to[0] = '\0';
  enc_path(e, &b, anc);
  enc_fail(e, e->depth, "cyclic table (refers back to %s)", to);
}

/* Output: wr_begin makes room for n more bytes and returns where they go;
   wr_end(e, p) ends the output at p (keeping buf's NUL terminator). */
static inline char *wr_begin(enc *e, size_t n) {
  buf *b = e->out;
  if (J_UNLIKELY(b->cap - b->len <= n) && buf_reserve(b, n) != 0)
    enc_nomem(e);
  return b->data + b->len;
}

static inline void wr_end(enc *e, char *p) {
  e->out->len = (size_t)(p - e->out->data);
  *p = '\0';
}

static inline void put(enc *e, const char *s, size_t n) {
  char *p = wr_begin(e, n);
  memcpy(p, s, n);
  wr_end(e, p + n);
}

static inline void putc1(enc *e, char c) {
  char *p = wr_begin(e, 1);
  *p++ = c;
  wr_end(e, p);
}

/* Appends a JSON string literal; 0, or -1 if s is not valid UTF-8. */
static int enc_string(enc *e, const char *str, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0, run = 0;
  wr_begin(e, n + 2);
  putc1(e, '"');
  while (i < n) {
    size_t lim = n;
    if (n - i >= 8) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (!word_special(w)) {
        i += 8;
        continue;
      }
      lim = i + 8;
    }
    while (i < lim) {
      unsigned c = s[i];
      if (c >= 0x80) {
        size_t k = utf8_seq(s + i, n - i);
        if (J_UNLIKELY(!k)) return -1;
        i += k;
        continue;
      }
      if (c >= 0x20 && c != '"' && c != '\\') {
        i++;
        continue;
      }
      if (i > run) put(e, str + run, i - run);
      char *p = wr_begin(e, 6);
      *p++ = '\\';
      switch (c) {
        case '"': *p++ = '"'; break;
        case '\\': *p++ = '\\'; break;
        case '\n': *p++ = 'n'; break;
        case '\t': *p++ = 't'; break;
        case '\r': *p++ = 'r'; break;
        case '\b': *p++ = 'b'; break;
        case '\f': *p++ = 'f'; break;
        default:
          memcpy(p, "u00", 3);
          p[3] = hex[c >> 4];
          p[4] = hex[c & 15];
          p += 5;
          if (c == 0) e->flags |= JSON_HAS_NUL;
      }
      wr_end(e, p);
      run = ++i;
    }
  }
  char *p = wr_begin(e, n - run + 1);
  memcpy(p, str + run, n - run);
  p += n - run;
  *p++ = '"';
  wr_end(e, p);
  return 0;
}

/* Formats a finite float into out (>= 48 bytes); returns the length. */
static size_t fmt_float(double x, char *out) {
  double ax = fabs(x);
  if (ax < 18446744073709551616.0) { /* 2^64 */
    uint64_t u = (uint64_t)ax;
    if ((double)u == ax) { /* integral: all the digits + ".0" */
      char tmp[24], *end = tmp + sizeof tmp, *p = u64_digits(end, u);
      size_t n = 0;
      if (u != 0 && x < 0) out[n++] = '-'; /* -0.0 is written 0.0 (json.h) */
      memcpy(out + n, p, (size_t)(end - p));
      n += (size_t)(end - p);
      memcpy(out + n, ".0", 3);
      return n + 2;
    }
  }
  for (int prec = 15;; prec++) {
    snprintf(out, 48, "%.*g", prec, x);
    if (prec == 17 || strtod(out, NULL) == x) break;
  }
  /* Whatever the C locale uses as decimal point becomes '.'. */
  int dot = 0, expo = 0;
  size_t j = 0;
  for (size_t i = 0; out[i]; i++) {
    char c = out[i];
    if ((c >= '0' && c <= '9') || c == '-' || c == '+') {
      out[j++] = c;
    } else if (c == 'e' || c == 'E') {
      out[j++] = c;
      expo = 1;
    } else if (!dot && !expo) {
      out[j++] = '.';
      dot = 1;
    }
  }
  out[j] = '\0';
  if (!dot && !expo) {
    memcpy(out + j, ".0", 3);
    j += 2;
  }
  return j;
}

/* Writes the number on top of the stack. */
static void enc_number(enc *e) {
  lua_State *L = e->L;
  if (lua_isinteger(L, -1)) {
    lua_Integer v = lua_tointeger(L, -1);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *p = wr_begin(e, 21), tmp[24], *end = tmp + sizeof tmp;
    char *d = u64_digits(end, u);
    if (v < 0) *p++ = '-';
    memcpy(p, d, (size_t)(end - d));
    wr_end(e, p + (end - d));
    return;
  }
  double x = (double)lua_tonumber(L, -1);
  if (J_UNLIKELY(!isfinite(x)))
    enc_fail(e, e->depth, "cannot encode NaN or infinity");
  char tmp[48];
  put(e, tmp, fmt_float(x, tmp));
}

J_COLD static void enc_grow(enc *e) {
  size_t ncap = e->fcap * 2;
  enc_frame *nf = (enc_frame *)lua_newuserdatauv(e->L, ncap * sizeof *nf, 0);
  memcpy(nf, e->f, (size_t)e->depth * sizeof *nf);
  lua_replace(e->L, ENC_FRAMES(e));
  e->f = nf;
  e->fcap = ncap;
}

/* Raises the error for the key at stack index k of a table whose path is
   the first nlev levels. */
J_COLD static void enc_badkey(enc *e, int nlev, int k) {
  lua_State *L = e->L;
  switch (lua_type(L, k)) {
    case LUA_TSTRING:
      enc_fail(e, nlev, "table mixes array items and string keys");
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, k)) {
        if (lua_tointeger(L, k) > 0)
          enc_fail(e, nlev, "table mixes array items and string keys");
        enc_fail(e, nlev, "table key %lld is not a string or a positive integer",
                 (long long)lua_tointeger(L, k));
      }
      enc_fail(e, nlev, "table key %.14g is not a string or a positive integer",
               (double)lua_tonumber(L, k));
      break;
    case LUA_TBOOLEAN:
      enc_fail(e, nlev, "table key %s is not a string or a positive integer",
               lua_toboolean(L, k) ? "true" : "false");
      break;
    default:
      enc_fail(e, nlev,
               "table key of type %s is not a string or a positive integer",
               luaL_typename(L, k));
  }
}

/* Checks the keys of an array from the one lua_next just returned (the
   stack ends with tab, key, value) to the last one, adding them to *count
   and *max; the stack ends with tab.  Raises for a non-array key or when
   the array is too sparse. */
static void enc_scan(enc *e, int nlev, int tab, lua_Integer *count,
                     lua_Integer *max) {
  lua_State *L = e->L;
  do {
    lua_pop(L, 1);
    if (J_UNLIKELY(!lua_isinteger(L, tab + 1))) enc_badkey(e, nlev, tab + 1);
    lua_Integer k = lua_tointeger(L, tab + 1);
    if (J_UNLIKELY(k <= 0)) enc_badkey(e, nlev, tab + 1);
    ++*count;
    if (k > *max) *max = k;
  } while (lua_next(L, tab));
  if (J_UNLIKELY(*max > 16 && *max - *count > *count)) /* max > 2 * count */
    enc_fail(e, nlev, "sparse array (key %lld of %lld items)", (long long)*max,
             (long long)*count);
}

static void enc_key(enc *e, int nlev, int k) {
  size_t n;
  const char *s = lua_tolstring(e->L, k, &n);
  if (J_UNLIKELY(enc_string(e, s, n) != 0))
    enc_fail(e, nlev, "table key is not valid UTF-8");
  putc1(e, ':');
}

/* The table on top of the stack is to be written.  Returns 0 if it was
   written whole (it was empty) and popped; else opens a new level, writes
   '[' or '{' (and the first key) and leaves the first item on top. */
static int enc_open(enc *e) {
  lua_State *L = e->L;
  int tab = lua_gettop(L);
  const void *p = lua_topointer(L, tab);
  if (J_UNLIKELY(e->depth >= e->max_depth))
    enc_fail(e, e->depth, "nesting deeper than %d levels", e->max_depth);
  if (J_UNLIKELY(!lua_checkstack(L, 8)))
    enc_fail(e, e->depth, "nesting too deep for the Lua stack");
  if (!e->useset) {
    if (e->depth < CYCLE_SCAN_MAX) {
      for (int d = 0; d < e->depth; d++)
        if (J_UNLIKELY(e->f[d].t == p)) enc_cyclic(e, d);
    } else { /* deep: switch to a set of the open tables */
      lua_createtable(L, 0, 2 * CYCLE_SCAN_MAX);
      lua_replace(L, ENC_SET(e));
      for (int d = 0; d < e->depth; d++) {
        lua_pushinteger(L, d);
        lua_rawsetp(L, ENC_SET(e), e->f[d].t);
      }
      e->useset = 1;
    }
  }
  if (e->useset) {
    if (J_UNLIKELY(lua_rawgetp(L, ENC_SET(e), p) != LUA_TNIL))
      enc_cyclic(e, (int)lua_tointeger(L, -1));
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  if (!lua_next(L, tab)) {
    lua_pop(L, 1);
    put(e, "{}", 2);
    return 0;
  }
  lua_Integer n;
  if (lua_type(L, tab + 1) == LUA_TSTRING) {
    n = ENC_OBJ;
  } else if (lua_isinteger(L, tab + 1) && lua_tointeger(L, tab + 1) == 1) {
    n = ENC_SEQ;
  } else {
    lua_Integer count = 0;
    n = 0;
    enc_scan(e, e->depth, tab, &count, &n);
    lua_pushnil(L); /* the placeholder in the key slot */
  }
  if (e->depth == (int)e->fcap) enc_grow(e);
  enc_frame *f = &e->f[e->depth++];
  f->i = 1;
  f->n = n;
  f->t = p;
  if (e->useset) {
    lua_pushinteger(L, e->depth - 1);
    lua_rawsetp(L, ENC_SET(e), p);
  }
  if (n == ENC_OBJ) {
    putc1(e, '{');
    enc_key(e, e->depth - 1, tab + 1);
  } else {
    putc1(e, '[');
    if (n >= 0) lua_rawgeti(L, tab, 1);
  }
  return 1;
}

/* The value of the innermost open table was written: pushes the next one
   (after writing the ',' and key) and returns 1, or writes the closing
   bracket, pops the table and returns 0. */
static int enc_next(enc *e) {
  lua_State *L = e->L;
  enc_frame *f = &e->f[e->depth - 1];
  int tab = ENC_TAB(e, e->depth);
  if (f->n == ENC_OBJ) {
    if (lua_next(L, tab)) {
      if (J_UNLIKELY(lua_type(L, tab + 1) != LUA_TSTRING))
        enc_badkey(e, e->depth - 1, tab + 1);
      putc1(e, ',');
      enc_key(e, e->depth - 1, tab + 1);
      return 1;
    }
    putc1(e, '}');
    goto close;
  }
  if (f->n == ENC_SEQ) {
    if (!lua_next(L, tab)) {
      putc1(e, ']');
      goto close;
    }
    if (J_LIKELY(lua_isinteger(L, tab + 1) &&
                 lua_tointeger(L, tab + 1) == f->i + 1)) {
      f->i++;
      putc1(e, ',');
      return 1;
    }
    /* Out of order: 1..i are written; check the remaining keys (none of
       them is <= i) and write the rest by index. */
    lua_Integer count = f->i, max = f->i;
    enc_scan(e, e->depth - 1, tab, &count, &max);
    lua_pushnil(L); /* the placeholder in the key slot */
    f->n = max;
  }
  if (f->i < f->n) {
    putc1(e, ',');
    lua_rawgeti(L, tab, ++f->i);
    return 1;
  }
  putc1(e, ']');
close:
  if (e->useset) {
    lua_pushnil(L);
    lua_rawsetp(L, ENC_SET(e), f->t);
  }
  lua_settop(L, tab - 1);
  e->depth--;
  return 0;
}

int json_encode(lua_State *L, int idx, buf *out, const char *root) {
  return json_encode_depth(L, idx, out, root, JSON_MAX_DEPTH);
}

int json_encode_depth(lua_State *L, int idx, buf *out, const char *root, int max_depth) {
  enc_frame local[LOCAL_FRAMES];
  enc e;
  idx = lua_absindex(L, idx);
  e.L = L;
  e.out = out;
  e.root = root ? root : "value";
  e.base = lua_gettop(L);
  e.depth = 0;
  e.flags = 0;
  e.useset = 0;
  e.max_depth = max_depth > 0 && max_depth < JSON_MAX_DEPTH ? max_depth : JSON_MAX_DEPTH;
  e.f = local;
  e.fcap = LOCAL_FRAMES;
  luaL_checkstack(L, 8, "json_encode");
  lua_pushnil(L); /* ENC_SET */
  lua_pushnil(L); /* ENC_FRAMES */
  lua_pushvalue(L, idx);
  for (;;) {
    /* Write the value on top of the stack and pop it, or descend. */
    int t = lua_type(L, -1);
    switch (t) {
      case LUA_TNIL:
        put(&e, "null", 4);
        break;
      case LUA_TBOOLEAN:
        if (lua_toboolean(L, -1))
          put(&e, "true", 4);
        else
          put(&e, "false", 5);
        break;
      case LUA_TNUMBER:
        enc_number(&e);
        break;
      case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        if (J_UNLIKELY(enc_string(&e, s, n) != 0))
          enc_fail(&e, e.depth, "string is not valid UTF-8");
        break;
      }
      case LUA_TTABLE:
        if (enc_open(&e)) continue;
        goto written; /* enc_open popped the empty table */
      case LUA_TLIGHTUSERDATA:
        enc_fail(&e, e.depth, "cannot encode a light userdata");
        break;
      default:
        enc_fail(&e, e.depth, "cannot encode a %s", lua_typename(L, t));
    }
    lua_pop(L, 1);
  written:
    while (e.depth > 0 && !enc_next(&e)) {
    }
    if (e.depth == 0) break;
  }
  lua_settop(L, e.base);
  return e.flags;
}

/* ------------------------------------------------------------------------ */
/* Decoder                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct dec {
  lua_State *L;
  const unsigned char *s, *end;
  const unsigned char *errpos;
  const char *err;
  char errbuf[40];
} dec;

#define IS_DIGIT(c) ((unsigned)((c) - '0') < 10u)
#define SKIP_WS(p, end)                                                     \
  while ((p) < (end) && (*(p) == ' ' || *(p) == '\n' || *(p) == '\r' ||     \
                         *(p) == '\t'))                                     \
  (p)++

static const unsigned char *dec_err(dec *d, const unsigned char *at,
                                    const char *msg) {
  d->errpos = at;
  d->err = msg;
  return NULL;
}

J_COLD static const unsigned char *dec_unexpected(dec *d,
                                                  const unsigned char *at) {
  if (at >= d->end) return dec_err(d, at, "unexpected end of input");
  if (*at > 0x20 && *at < 0x7F)
    snprintf(d->errbuf, sizeof d->errbuf, "unexpected character '%c'", *at);
  else
    snprintf(d->errbuf, sizeof d->errbuf, "unexpected byte 0x%02X", *at);
  return dec_err(d, at, d->errbuf);
}

static int hex4(const unsigned char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i];
    int h;
    if (c >= '0' && c <= '9') h = (int)(c - '0');
    else if (c >= 'a' && c <= 'f') h = (int)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') h = (int)(c - 'A' + 10);
    else return -1;
    v = v * 16 + h;
  }
  return v;
}

/* String with escapes: p is at the first backslash, start after the opening
   quote.  Pushes the string; returns the position after the closing quote,
   or NULL. */
J_COLD static const unsigned char *dec_string_esc(dec *d,
                                                  const unsigned char *start,
                                                  const unsigned char *p) {
  const unsigned char *end = d->end;
  luaL_Buffer b;
  luaL_buffinit(d->L, &b);
  luaL_addlstring(&b, (const char *)start, (size_t)(p - start));
  for (;;) {
    const unsigned char *run = p;
    for (;;) {
      if (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        if (!word_special(w)) {
          p += 8;
          continue;
        }
      }
      if (p >= end) return dec_err(d, start - 1, "unterminated string");
      unsigned c = *p;
      if (c == '"' || c == '\\') break;
      if (c < 0x20) return dec_err(d, p, "control character in string");
      if (c >= 0x80) {
        size_t k = utf8_seq(p, (size_t)(end - p));
        if (!k) return dec_err(d, p, "invalid UTF-8 in string");
        p += k;
      } else {
        p++;
      }
    }
    if (p > run) luaL_addlstring(&b, (const char *)run, (size_t)(p - run));
    if (*p == '"') {
      luaL_pushresult(&b);
      return p + 1;
    }
    const unsigned char *esc = p++;
    if (p >= end) return dec_err(d, start - 1, "unterminated string");
    switch (*p++) {
      case '"': luaL_addchar(&b, '"'); break;
      case '\\': luaL_addchar(&b, '\\'); break;
      case '/': luaL_addchar(&b, '/'); break;
      case 'b': luaL_addchar(&b, '\b'); break;
      case 'f': luaL_addchar(&b, '\f'); break;
      case 'n': luaL_addchar(&b, '\n'); break;
      case 'r': luaL_addchar(&b, '\r'); break;
      case 't': luaL_addchar(&b, '\t'); break;
      case 'u': {
        long cp = end - p >= 4 ? hex4(p) : -1;
        if (cp < 0) return dec_err(d, esc, "invalid \\u escape");
        p += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
          return dec_err(d, esc, "lone surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          long lo = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2) : -1;
          if (lo < 0xDC00 || lo > 0xDFFF)
            return dec_err(d, esc, "lone surrogate in \\u escape");
          p += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        char u[4];
        size_t n;
        if (cp < 0x80) {
          u[0] = (char)cp;
          n = 1;
        } else if (cp < 0x800) {
          u[0] = (char)(0xC0 | (cp >> 6));
          u[1] = (char)(0x80 | (cp & 0x3F));
          n = 2;
        } else if (cp < 0x10000) {
          u[0] = (char)(0xE0 | (cp >> 12));
          u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
          u[2] = (char)(0x80 | (cp & 0x3F));
          n = 3;
        } else {
          u[0] = (char)(0xF0 | (cp >> 18));
          u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
          u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
          u[3] = (char)(0x80 | (cp & 0x3F));
          n = 4;
        }
        luaL_addlstring(&b, u, n);
        break;
      }
      default:
        return dec_err(d, esc, "invalid escape in string");
    }
  }
}

/* p is just after the opening quote.  Pushes the string; returns the
   position after the closing quote, or NULL. */
static const unsigned char *dec_string(dec *d, const unsigned char *p) {
  const unsigned char *start = p, *end = d->end;
  for (;;) {
    const unsigned char *lim = end;
    if (end - p >= 8) {
      uint64_t w;
      memcpy(&w, p, 8);
      if (!word_special(w)) {
        p += 8;
        continue;
      }
      lim = p + 8;
    }
    if (p >= end) return dec_err(d, start - 1, "unterminated string");
    while (p < lim) {
      unsigned c = *p;
      if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
        p++;
        continue;
      }
      if (c == '"') {
        lua_pushlstring(d->L, (const char *)start, (size_t)(p - start));
        return p + 1;
      }
      if (c == '\\') return dec_string_esc(d, start, p);
      if (c < 0x20) return dec_err(d, p, "control character in string");
      size_t k = utf8_seq(p, (size_t)(end - p));
      if (!k) return dec_err(d, p, "invalid UTF-8 in string");
      p += k;
    }
  }
}

/* Slow path for floats: glibc strtod, made locale-independent by writing the
   number without a decimal point ("12.5e3" -> "125e2"). */
J_COLD static int dec_strtod(dec *d, const unsigned char *s,
                             const unsigned char *end, double *out) {
  char local[96], *tmp = local;
  size_t need = (size_t)(end - s) + 32;
  int scratch = need > sizeof local;
  if (scratch) tmp = (char *)lua_newuserdatauv(d->L, need, 0);
  size_t n = 0;
  long long frac = 0, ex = 0;
  const unsigned char *p = s;
  if (*p == '-') tmp[n++] = *p++;
  while (p < end && IS_DIGIT(*p)) tmp[n++] = (char)*p++;
  if (p < end && *p == '.') {
    p++;
    while (p < end && IS_DIGIT(*p)) {
      tmp[n++] = (char)*p++;
      frac++;
    }
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    int neg = 0;
    p++;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    while (p < end && IS_DIGIT(*p)) {
      if (ex < 1000000000000LL) ex = ex * 10 + (*p - '0');
      p++;
    }
    if (neg) ex = -ex;
  }
  snprintf(tmp + n, 24, "e%lld", ex - frac);
  char *stop;
  *out = strtod(tmp, &stop);
  int ok = *stop == '\0';
  if (scratch) lua_pop(d->L, 1);
  return ok;
}

static const double pow10_tab[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Pushes the number at p; returns the position after it, or NULL. */
static const unsigned char *dec_number(dec *d, const unsigned char *p) {
  const unsigned char *start = p, *end = d->end;
  int neg = 0, isfloat = 0, slow = 0, nd = 0;
  uint64_t m = 0;
  long long e10 = 0;
  if (*p == '-') {
    neg = 1;
    p++;
  }
  if (p >= end || !IS_DIGIT(*p)) return dec_err(d, start, "invalid number");
  if (*p == '0') {
    p++;
    if (p < end && IS_DIGIT(*p))
      return dec_err(d, start, "leading zeros are not allowed");
  } else {
    do {
      if (nd < 19) {
        m = m * 10 + (uint64_t)(*p - '0');
        nd++;
      } else {
        slow = 1;
      }
      p++;
    } while (p < end && IS_DIGIT(*p));
  }
  if (p < end && *p == '.') {
    isfloat = 1;
    p++;
    if (p >= end || !IS_DIGIT(*p))
      return dec_err(d, start, "invalid number (digit expected after '.')");
    do {
      if (nd < 19) {
        m = m * 10 + (uint64_t)(*p - '0');
        if (m) nd++;
        e10--;
      } else if (*p != '0') {
        slow = 1;
      }
      p++;
    } while (p < end && IS_DIGIT(*p));
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    int eneg = 0;
    long long ex = 0;
    isfloat = 1;
    p++;
    if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
    if (p >= end || !IS_DIGIT(*p))
      return dec_err(d, start, "invalid number (digit expected in exponent)");
    do {
      if (ex < 1000000000000LL) ex = ex * 10 + (*p - '0');
      p++;
    } while (p < end && IS_DIGIT(*p));
    e10 += eneg ? -ex : ex;
  }
  if (!isfloat && !slow) {
    if (!neg && m <= (uint64_t)INT64_MAX) {
      lua_pushinteger(d->L, (lua_Integer)m);
      return p;
    }
    if (neg && m <= (uint64_t)INT64_MAX + 1) {
      lua_pushinteger(d->L, m > (uint64_t)INT64_MAX ? LUA_MININTEGER
                                                     : -(lua_Integer)m);
      return p;
    }
  }
  double v;
#if FLT_EVAL_METHOD == 0
  if (!slow && m == 0) {
    v = neg ? -0.0 : 0.0;
  } else if (!slow && m <= (UINT64_C(1) << 53) && e10 >= -22 && e10 <= 22) {
    /* Exact operands, one correctly rounded operation (Clinger). */
    v = (double)m;
    v = e10 < 0 ? v / pow10_tab[-e10] : v * pow10_tab[e10];
    if (neg) v = -v;
  } else
#endif
  if (!dec_strtod(d, start, p, &v)) {
    return dec_err(d, start, "invalid number");
  }
  if (J_UNLIKELY(isinf(v))) return dec_err(d, start, "number out of range");
  lua_pushnumber(d->L, (lua_Number)v);
  return p;
}

/* p is at the first non-blank byte where a member key is expected.  Pushes
   the key; returns the position after the ':' (or NULL). */
static const unsigned char *dec_key(dec *d, const unsigned char *p) {
  const unsigned char *end = d->end;
  if (J_UNLIKELY(p >= end || *p != '"')) {
    if (p < end && *p != '}') return dec_err(d, p, "expected a string key");
    return dec_unexpected(d, p);
  }
  p = dec_string(d, p + 1);
  if (!p) return NULL;
  SKIP_WS(p, end);
  if (J_UNLIKELY(p >= end || *p != ':')) {
    if (p >= end) return dec_unexpected(d, p);
    return dec_err(d, p, "expected ':'");
  }
  return p + 1;
}

int json_decode(lua_State *L, const char *text, size_t len) {
  lua_Integer local[LOCAL_FRAMES];
  lua_Integer *f = local; /* per open level: item count (array) or -1 */
  size_t fcap = LOCAL_FRAMES;
  int depth = 0, isnull = 0;
  dec d;
  d.L = L;
  d.s = (const unsigned char *)text;
  d.end = d.s + len;
  d.err = NULL;
  d.errpos = d.s;
  const unsigned char *p = d.s, *end = d.end, *q;
  int top = lua_gettop(L);
  int fslot = top + 1;
  if (!lua_checkstack(L, 8)) {
    dec_err(&d, p, "Lua stack overflow");
    goto fail;
  }
  lua_pushnil(L); /* fslot: frame storage once deep */

value:
  SKIP_WS(p, end);
  if (J_UNLIKELY(p >= end)) {
    dec_unexpected(&d, p);
    goto fail;
  }
  switch (*p) {
    case '{':
    case '[':
      if (J_UNLIKELY(depth >= JSON_MAX_DEPTH)) {
        dec_err(&d, p, DEPTH_MSG);
        goto fail;
      }
      if (J_UNLIKELY(!lua_checkstack(L, 8))) {
        dec_err(&d, p, "nesting too deep for the Lua stack");
        goto fail;
      }
      if (J_UNLIKELY((size_t)depth == fcap)) {
        lua_Integer *nf =
            (lua_Integer *)lua_newuserdatauv(L, 2 * fcap * sizeof *nf, 0);
        memcpy(nf, f, fcap * sizeof *nf);
        lua_replace(L, fslot);
        f = nf;
        fcap *= 2;
      }
      if (*p++ == '[') {
        lua_createtable(L, 4, 0);
        f[depth++] = 0;
        SKIP_WS(p, end);
        if (p < end && *p == ']') {
          p++;
          depth--;
          goto have_value;
        }
        goto value;
      }
      lua_createtable(L, 0, 4); /* presized: most objects are small */
      f[depth++] = -1;
      SKIP_WS(p, end);
      if (p < end && *p == '}') {
        p++;
        depth--;
        goto have_value;
      }
      if (!(p = dec_key(&d, p))) goto fail;
      goto value;
    case '"':
      if (!(p = dec_string(&d, p + 1))) goto fail;
      break;
    case 't':
      if (end - p < 4 || memcmp(p, "true", 4) != 0) goto bad_literal;
      lua_pushboolean(L, 1);
      p += 4;
      break;
    case 'f':
      if (end - p < 5 || memcmp(p, "false", 5) != 0) goto bad_literal;
      lua_pushboolean(L, 0);
      p += 5;
      break;
    case 'n':
      if (end - p < 4 || memcmp(p, "null", 4) != 0) goto bad_literal;
      isnull = 1;
      p += 4;
      break;
    default:
      if (*p == '-' || IS_DIGIT(*p)) {
        if (!(p = dec_number(&d, p))) goto fail;
        break;
      }
      dec_unexpected(&d, p);
      goto fail;
  }
have_value: /* the value is on top of the stack (unless isnull) */
  if (depth == 0) goto finish;
  if (f[depth - 1] >= 0) {
    lua_Integer n = ++f[depth - 1];
    if (!isnull) lua_rawseti(L, -2, n);
  } else if (isnull) {
    lua_pop(L, 1); /* the key */
  } else {
    lua_rawset(L, -3);
  }
  isnull = 0;
  SKIP_WS(p, end);
  if (J_UNLIKELY(p >= end)) {
    dec_unexpected(&d, p);
    goto fail;
  }
  if (*p == ',') {
    p++;
    if (f[depth - 1] >= 0) goto value;
    SKIP_WS(p, end);
    if (!(p = dec_key(&d, p))) goto fail;
    goto value;
  }
  if (*p == (f[depth - 1] >= 0 ? ']' : '}')) {
    p++;
    depth--;
    goto have_value;
  }
  dec_err(&d, p, f[depth - 1] >= 0 ? "expected ',' or ']'" : "expected ',' or '}'");
  goto fail;

bad_literal:
  dec_unexpected(&d, p);
  goto fail;

finish:
  if (isnull) lua_pushnil(L);
  SKIP_WS(p, end);
  if (p != end) {
    dec_err(&d, p, "unexpected data after the JSON value");
    goto fail;
  }
  lua_replace(L, fslot);
  return 1;

fail:
  q = d.errpos;
  lua_settop(L, top);
  lua_pushfstring(L, "invalid JSON at byte %I: %s", (lua_Integer)(q - d.s),
                  d.err);
  return 0;
}
