/* dir.c: directory listing for loading listener files (see dir.h). */
#include "dir.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

int dir_is_dir(const char *path, int *is_dir) {
  struct stat st;
  if (stat(path, &st) < 0) return -1;
  *is_dir = S_ISDIR(st.st_mode) ? 1 : 0;
  return 0;
}

void dir_free(char **names, size_t n) {
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

int dir_list(const char *path, char ***names, size_t *n) {
  DIR *d = opendir(path);
  if (!d) return -1;
  char **out = NULL;
  size_t count = 0, cap = 0;
  int e = 0;
  for (;;) {
    errno = 0;
    struct dirent *ent = readdir(d);
    if (!ent) {
      e = errno; /* 0 at the end of the directory */
      break;
    }
    if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
    if (count == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      char **grown = realloc(out, ncap * sizeof *grown);
      if (!grown) {
        e = ENOMEM;
        break;
      }
      out = grown, cap = ncap;
    }
    size_t len = strlen(ent->d_name);
    char *copy = malloc(len + 1);
    if (!copy) {
      e = ENOMEM;
      break;
    }
    memcpy(copy, ent->d_name, len + 1);
    out[count++] = copy;
  }
  closedir(d);
  if (e) {
    dir_free(out, count);
    errno = e;
    return -1;
  }
  *names = out;
  *n = count;
  return 0;
}
