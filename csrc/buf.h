/*
 * buf: a growable byte buffer for user data of any size (payloads, SQL
 * parameters, error messages).  Plain C, no Lua.  The owner of a `buf` frees
 * it with buf_free(); every other function leaves ownership where it is.
 * Allocation failures are reported by return value (-1), never by exit().
 */
#ifndef SCHEDULER_BUF_H
#define SCHEDULER_BUF_H

#include <stddef.h>

typedef struct buf {
  char *data;   /* NUL-terminated when len > 0 or after buf_cstr() */
  size_t len;
  size_t cap;
} buf;

#define BUF_INIT {NULL, 0, 0}

void buf_free(buf *b);
/* Ensure room for `extra` more bytes plus a terminating NUL: 0 or -1. */
int buf_reserve(buf *b, size_t extra);
int buf_add(buf *b, const void *p, size_t n);
int buf_addc(buf *b, char c);
int buf_adds(buf *b, const char *s);
/* Append s[0, n) as a JSON string: quoted, with '"', '\\' and control
 * characters escaped (s: valid UTF-8 without NUL, as the stores' text). */
int buf_add_json_string(buf *b, const char *s, size_t n);
/* printf-style append: 0 or -1. */
int buf_printf(buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Keep the allocation, forget the contents. */
static inline void buf_reset(buf *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}
/* The contents as a C string ("" for an empty buffer, never NULL). */
const char *buf_cstr(const buf *b);

#endif
