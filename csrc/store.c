/* store.c: backend selection and the helpers every backend shares. */
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "store_pg.h"
#include "store_sqlite.h"

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

/* A URL of a scheme no backend speaks ("mysql://..."): libpq would take it
 * for a keyword string and answer with a parse error that names neither
 * the scheme nor the backends.  Returns 1 (and says so in err) for one. */
static int unsupported_scheme(const char *database, buf *err) {
  size_t n = strspn(database, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
  if (n == 0 || strncmp(database + n, "://", 3) != 0) return 0;
  if ((n == 10 && strncmp(database, "postgresql", n) == 0) ||
      (n == 8 && strncmp(database, "postgres", n) == 0))
    return 0;
  buf_printf(err, "unsupported database scheme \"%.*s\" (sqlite:PATH, or a PostgreSQL URL "
                  "postgresql://... or libpq keyword string)", (int)n, database);
  return 1;
}

store *store_open(const char *database, buf *err) {
  if (strncmp(database, "sqlite:", 7) == 0) return store_sqlite_open(database, err);
  if (unsupported_scheme(database, err)) return NULL;
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

int store_prune_due(store *s, double now, double *next_prune) {
  if (!s->ops->prune || now < *next_prune) return STORE_OK;
  size_t pruned = 0;
  int rc = s->ops->prune(s, PRUNE_BATCH, &pruned);
  if (rc == STORE_OK) *next_prune = now + (pruned > 0 ? PRUNE_AGAIN : PRUNE_EVERY);
  return rc;
}

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

int store_check_by(store *s, const char *by, size_t len) {
  if (len == 0 || len > LIMIT_BY_MAX)
    return store_fail(s, STORE_ERROR, "a limit's by must be 1 to %d bytes", LIMIT_BY_MAX);
  if (memchr(by, 0, len) || memchr(by, '"', len) || memchr(by, '\\', len))
    return store_fail(s, STORE_ERROR,
                      "a limit's by cannot contain a NUL byte, '\"' or '\\'");
  return STORE_OK;
}
