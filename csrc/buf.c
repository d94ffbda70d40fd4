#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

void buf_free(buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

int buf_reserve(buf *b, size_t extra) {
  if (extra >= SIZE_MAX - b->len - 1) return -1;
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *p = realloc(b->data, cap);
  if (!p) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

int buf_add(buf *b, const void *p, size_t n) {
  if (buf_reserve(b, n) != 0) return -1;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int buf_addc(buf *b, char c) { return buf_add(b, &c, 1); }

int buf_adds(buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

int buf_printf(buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || buf_reserve(b, (size_t)n) != 0) return -1;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

const char *buf_cstr(const buf *b) { return b->data ? b->data : ""; }

/* (The appends are separate statements: the operands of | are not
 * evaluated in any set order.) */
int buf_add_json_string(buf *b, const char *s, size_t n) {
  int err = buf_addc(b, '"');
  size_t from = 0;
  for (size_t i = 0; i < n && !err; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    err |= buf_add(b, s + from, i - from);
    if (c == '"' || c == '\\') {
      err |= buf_addc(b, '\\');
      err |= buf_addc(b, (char)c);
    } else if (c == '\n') {
      err |= buf_adds(b, "\\n");
    } else if (c == '\t') {
      err |= buf_adds(b, "\\t");
    } else {
      err |= buf_printf(b, "\\u%04x", c);
    }
    from = i + 1;
  }
  err |= buf_add(b, s + from, n - from);
  err |= buf_addc(b, '"');
  return err;
}
