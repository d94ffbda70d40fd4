/*
 * fuzz/pg_text.c: libFuzzer harness for the text store_pg.c builds for and
 * reads from PostgreSQL without the server: the text[] literal of the
 * worker's listener names (set_names; every claim sends it) and the payload
 * of a wake-up notification ("<epoch> <name>", which any client can send).
 * It reaches those functions through the backend's internal header.
 *
 * Input: names separated by 0xFF bytes (NUL-free, as on() guarantees),
 * then, after a 0xFE byte, a notification payload.  The literal must parse
 * back, by PostgreSQL's rules for a quoted array element, to exactly the
 * names; the payload must be read without a crash, and a payload for a
 * registered name whose time is plain digits must give that time.
 */
#include "../csrc/store_pg_internal.h"

#include <stdint.h>

/* Parse a text[] literal of quoted elements; 1 if it holds exactly names. */
static int literal_holds(const char *lit, char **names, const size_t *lens, size_t n) {
  const char *p = lit;
  if (*p++ != '{') return 0;
  for (size_t i = 0; i < n; i++) {
    if (i && *p++ != ',') return 0;
    if (*p++ != '"') return 0;
    size_t k = 0;
    while (*p != '"') {
      if (!*p) return 0;
      if (*p == '\\') p++;
      if (!*p || k >= lens[i] || *p != names[i][k]) return 0;
      p++, k++;
    }
    p++;
    if (k != lens[i]) return 0;
  }
  return *p == '}' && p[1] == '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *end = data + size, *sep = memchr(data, 0xFE, size);
  const uint8_t *names_end = sep ? sep : end;
  /* the names */
  size_t n = 0, cap = 64;
  const char **names = malloc(cap * sizeof *names);
  size_t *lens = malloc(cap * sizeof *lens);
  if (!names || !lens) abort();
  for (const uint8_t *p = data; p <= names_end && n < 64;) {
    const uint8_t *q = memchr(p, 0xFF, (size_t)(names_end - p));
    if (!q) q = names_end;
    if (q > p && !memchr(p, 0, (size_t)(q - p))) {
      if (n == cap) abort();
      names[n] = (const char *)p;
      lens[n++] = (size_t)(q - p);
    }
    p = q + 1;
  }
  pg_store *st = (pg_store *)store_pg_open("dbname=fuzz", &(buf)BUF_INIT);
  if (!st) abort();
  if (pg_set_names(&st->base, names, lens, n) != STORE_OK) abort();
  if (!literal_holds(buf_cstr(&st->names_literal), st->names, st->name_lens, n)) {
    fprintf(stderr, "the names literal does not hold the names: %s\n", buf_cstr(&st->names_literal));
    abort();
  }
  /* the notification */
  if (sep) {
    size_t len = (size_t)(end - sep - 1);
    char *payload = malloc(len + 1);
    if (!payload) abort();
    memcpy(payload, sep + 1, len);
    payload[len] = '\0';
    double t = 0;
    int due = pg_notification_due(st, payload, &t);
    if (due && isnan(t)) abort();
    const char *space = strchr(payload, ' ');
    if (due && space && space > payload && space - payload < 16 &&
        strspn(payload, "0123456789") == (size_t)(space - payload) &&
        t != strtod(payload, NULL)) {
      fprintf(stderr, "notification %s read as %.17g\n", payload, t);
      abort();
    }
    free(payload);
  }
  store_close(&st->base);
  free(names);
  free(lens);
  return 0;
}
