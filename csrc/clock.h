/*
 * clock: the two clocks the core uses.  Deadlines and durations use the
 * monotonic clock (immune to host clock changes); the wall clock is only
 * for scheduler.now().  Job times are on the database's clock (store.h).
 */
#ifndef SCHEDULER_CLOCK_H
#define SCHEDULER_CLOCK_H

#include <time.h>

/* Monotonic seconds since an arbitrary start. */
static inline double clock_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Host wall-clock Unix time in seconds (sub-microsecond resolution). */
static inline double clock_wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
