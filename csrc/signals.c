#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

static int pipe_fds[2] = {-1, -1};
static int users;
static int seen; /* a signal arrived since the first acquire: every run stops */
/* Set by the handler: the pipe has bytes to read.  signals_take() is called
 * before every job, so it reads the pipe only then (no system call per job). */
static volatile sig_atomic_t arrived;
static struct sigaction previous_int, previous_term;

static void on_signal(int sig) {
  int saved = errno;
  unsigned char byte = (unsigned char)sig;
  arrived = 1;
  if (pipe_fds[1] >= 0) {
    ssize_t ignored = write(pipe_fds[1], &byte, 1);
    (void)ignored;
  }
  errno = saved;
}

static int set_flags(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
                 fcntl(fd, F_SETFD, FD_CLOEXEC) < 0
             ? -1
             : 0;
}

int signals_acquire(void) {
  if (users++ > 0) return 0;
  seen = 0;
  arrived = 0;
  if (pipe(pipe_fds) < 0 || set_flags(pipe_fds[0]) < 0 || set_flags(pipe_fds[1]) < 0) {
    int e = errno;
    users = 0;
    for (int i = 0; i < 2; i++)
      if (pipe_fds[i] >= 0) close(pipe_fds[i]), pipe_fds[i] = -1;
    errno = e;
    return -1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &previous_int);
  sigaction(SIGTERM, &sa, &previous_term);
  return 0;
}

void signals_release(void) {
  if (users == 0 || --users > 0) return;
  sigaction(SIGINT, &previous_int, NULL);
  sigaction(SIGTERM, &previous_term, NULL);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  pipe_fds[0] = pipe_fds[1] = -1;
}

int signals_fd(void) { return pipe_fds[0]; }

int signals_take(void) {
  unsigned char bytes[16];
  int last = 0;
  ssize_t n;
  if (pipe_fds[0] < 0) return 0;
  if (!arrived) return seen;
  arrived = 0; /* before reading: a signal from now on sets it again */
  while ((n = read(pipe_fds[0], bytes, sizeof bytes)) > 0) last = bytes[n - 1];
  if (last) seen = last;
  return seen;
}
