/*
 * dir: what the `lua-scheduler` command needs from the file system to load
 * a directory of listener files: is a path a directory, and what is in it.
 * Plain C, no Lua; -1 with errno set on failure.
 */
#ifndef SCHEDULER_DIR_H
#define SCHEDULER_DIR_H

#include <stddef.h>

/* *is_dir = 1 when path (following symbolic links) is a directory, else 0.
 * 0, or -1 with errno set (ENOENT: no such file). */
int dir_is_dir(const char *path, int *is_dir);

/* The entry names of directory `path`, without "." and "..", unsorted.  On
 * success *names is a malloc'd array of *n malloc'd strings, freed with
 * dir_free.  0, or -1 with errno set. */
int dir_list(const char *path, char ***names, size_t *n);
void dir_free(char **names, size_t n);

#endif
