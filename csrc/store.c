/* store.c: backend selection and the helpers every backend shares. */
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "store_pg.h"
#include "store_sqlite.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

store *store_open(const char *database, buf *err) {
  if (strncmp(database, "sqlite:", 7) == 0) return store_sqlite_open(database, err);
  /* Everything that is not another backend's URL is handed to libpq, which
   * accepts postgresql:// and postgres:// URLs and keyword strings. */
  return store_pg_open(database, err);
}

int store_secrets(const char *database, buf *out) {
  if (strncmp(database, "sqlite:", 7) == 0) return 0; /* no credentials */
  return store_pg_secrets(database, out);
}

void store_close(store *s) {
  if (!s) return;
  s->ops->destroy(s);
}

const char *store_error(const store *s) { return buf_cstr(&s->err); }

int store_fail(store *s, int code, const char *fmt, ...) {
  va_list ap;
  buf_reset(&s->err);
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n >= 0 && buf_reserve(&s->err, (size_t)n) == 0) {
    va_start(ap, fmt);
    vsnprintf(s->err.data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->err.len = (size_t)n;
  }
  return code;
}
