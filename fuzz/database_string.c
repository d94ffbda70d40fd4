/*
 * fuzz/database_string.c: libFuzzer harness for the parsing of database
 * strings (store_open in csrc/store.c: sqlite: paths and memory names in
 * store_sqlite.c; URLs and keyword strings in store_pg.c, whose passwords
 * must never appear in an error message).
 *
 * The first byte picks a mode:
 *   0  the rest, as is (up to its first NUL), is the database string;
 *   1  "postgresql://" A ":" SECRET "@" B      (SECRET is the password)
 *   2  "postgresql://" B "/db?" C "&password=" SECRET "&" D
 *   3  "dbname=x " B " password=" SECRET " " C   (a keyword string)
 * where A, B, C, D and the secret's tail come from the rest of the input
 * (split at 0xFF bytes), with the bytes that would move the secret out of
 * its place removed.  In modes 1-3, an error from store_open must not
 * contain the secret.  Nothing is opened: store_open does not connect.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../csrc/buf.h"
#include "../csrc/store.h"

/* Field i (0-based) of the rest, split at 0xFF, without the bytes in
 * `drop` and NULs, appended to b. */
static void add_field(buf *b, const uint8_t *p, size_t n, int i, const char *drop) {
  const uint8_t *end = p + n;
  while (i-- > 0) {
    while (p < end && *p != 0xFF) p++;
    if (p < end) p++;
  }
  for (; p < end && *p != 0xFF; p++)
    if (*p && !strchr(drop, *p)) buf_addc(b, (char)*p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  int mode = data[0] % 4;
  const uint8_t *rest = data + 1;
  size_t n = size - 1;
  buf s = BUF_INIT, secret = BUF_INIT;
  if (mode == 0) {
    buf_add(&s, rest, strnlen((const char *)rest, n));
  } else {
    /* distinctive, so that finding it in a message means it leaked */
    buf_adds(&secret, "Zq9");
    add_field(&secret, rest, n, 0, mode == 1 ? "@/" : mode == 2 ? "&=" : " \t\n\r\f\v'\"\\=");
  }
  if (mode == 1) {
    buf_adds(&s, "postgresql://");
    add_field(&s, rest, n, 1, "@/:");
    buf_addc(&s, ':');
    buf_add(&s, secret.data, secret.len);
    buf_addc(&s, '@');
    add_field(&s, rest, n, 2, "");
  } else if (mode == 2) {
    buf_adds(&s, "postgresql://");
    add_field(&s, rest, n, 1, "?/");
    buf_adds(&s, "/db?");
    add_field(&s, rest, n, 2, "");
    buf_adds(&s, "&password=");
    buf_add(&s, secret.data, secret.len);
    buf_addc(&s, '&');
    add_field(&s, rest, n, 3, "");
  } else if (mode == 3) {
    buf_adds(&s, "dbname=x ");
    add_field(&s, rest, n, 1, "");
    buf_adds(&s, " password=");
    buf_add(&s, secret.data, secret.len);
    buf_addc(&s, ' ');
    add_field(&s, rest, n, 2, "");
  }
  const char *database = buf_cstr(&s);
  /* the secret must be the only place its text appears */
  int check = mode != 0;
  if (check) {
    const char *first = strstr(database, secret.data);
    check = first && !strstr(first + 1, secret.data);
  }
  buf err = BUF_INIT;
  store *st = store_open(database, &err);
  if (st) {
    store_close(st);
  } else {
    if (err.len == 0) {
      fprintf(stderr, "store_open failed without a message for: %s\n", database);
      abort();
    }
    if (check && strstr(buf_cstr(&err), secret.data)) {
      fprintf(stderr, "the password leaked into the error message\n  database: %s\n  error: %s\n",
              database, buf_cstr(&err));
      abort();
    }
  }
  buf_free(&err);
  buf_free(&s);
  buf_free(&secret);
  return 0;
}
