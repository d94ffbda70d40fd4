/*
 * process.c: fork/exec, reaping, kill and synchronous signal waiting for the
 * supervisor of `lua-scheduler run` (see process.h).  Policy (when to
 * restart a worker, what a signal means) is in lua/scheduler/cli/run.lua.
 */
#define _GNU_SOURCE /* memmem */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "clock.h"

/* declared before the visibility pragma: it belongs to libc */
extern char **environ;

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

static int blocked;           /* process_block_signals is in force */
static sigset_t wanted;       /* the signals the supervisor waits for */
static sigset_t saved_mask;   /* the mask before: children get it back */

/* Some systems discard a signal whose action is "ignore" (SIGCHLD's
 * default) even while it is blocked; a handler, never run because the
 * signal stays blocked, keeps SIGCHLD pending until it is waited for. */
static void on_chld(int sig) { (void)sig; }

int process_block_signals(void) {
  if (blocked) return 0;
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGCHLD);
  sigaddset(&wanted, SIGHUP);
  sigaddset(&wanted, SIGINT);
  sigaddset(&wanted, SIGTERM);
  /* a worker's "connected, running" (run.lua): the supervisor's readiness.
   * A real-time signal, because those queue: two workers that say so in
   * the same instant are two signals, each with its sender's pid (two
   * SIGUSR1s merged into one, and READY=1 never came). */
  sigaddset(&wanted, SIGRTMIN);
  int rc = pthread_sigmask(SIG_BLOCK, &wanted, &saved_mask);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_chld;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  blocked = 1;
  return 0;
}

int process_wait_signal(double timeout, pid_t *from) {
  if (!blocked) {
    errno = EINVAL;
    return -1;
  }
  double until = timeout >= 0 ? clock_mono() + timeout : INFINITY;
  for (;;) {
    siginfo_t info;
    int sig;
    if (isfinite(until)) {
      double left = until - clock_mono();
      if (left < 0) left = 0;
      struct timespec ts;
      ts.tv_sec = (time_t)left;
      ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
      sig = sigtimedwait(&wanted, &info, &ts);
    } else {
      sig = sigwaitinfo(&wanted, &info);
    }
    if (sig > 0) {
      if (from) *from = info.si_pid;
      return sig;
    }
    if (errno == EAGAIN) return 0;
    if (errno != EINTR) return -1;
    /* interrupted by another signal's handler: wait for what is left */
  }
}

/* The program to exec for argv0: itself when it has a '/', else the first
 * executable regular file named argv0 in PATH.  0, or -1 with the message
 * in err. */
static int find_program(const char *argv0, buf *path, buf *err) {
  if (strchr(argv0, '/')) return buf_adds(path, argv0);
  const char *dirs = getenv("PATH");
  if (!dirs || !*dirs) dirs = "/usr/local/bin:/usr/bin:/bin";
  for (const char *d = dirs;;) {
    size_t n = strcspn(d, ":");
    buf_reset(path);
    path->len = 0;
    if (buf_add(path, n ? d : ".", n ? n : 1) || buf_addc(path, '/') || buf_adds(path, argv0))
      return -1;
    struct stat st;
    if (stat(buf_cstr(path), &st) == 0 && S_ISREG(st.st_mode) &&
        access(buf_cstr(path), X_OK) == 0)
      return 0;
    if (!d[n]) break;
    d += n + 1;
  }
  buf_printf(err, "%s: not found in PATH", argv0);
  return -1;
}

/* A NULL-terminated copy of environ with each "NAME=value" of set applied
 * (replacing NAME or appended).  The strings are not copied.  NULL when out
 * of memory. */
static char **build_env(const char *const *set) {
  size_t n = 0, k = 0;
  while (environ && environ[n]) n++;
  while (set && set[k]) k++;
  char **env = malloc((n + k + 1) * sizeof *env);
  if (!env) return NULL;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    int replaced = 0;
    for (size_t j = 0; j < k && !replaced; j++) {
      size_t name = strcspn(set[j], "=");
      replaced = strncmp(environ[i], set[j], name) == 0 && environ[i][name] == '=';
    }
    if (!replaced) env[m++] = environ[i];
  }
  for (size_t j = 0; j < k; j++) env[m++] = (char *)set[j];
  env[m] = NULL;
  return env;
}

static int set_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFD);
  return fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0 ? -1 : 0;
}

int process_spawn(const char *const *argv, const char *const *env, pid_t *pid, buf *err) {
  buf path = BUF_INIT;
  char **envp = NULL;
  int fds[2] = {-1, -1}, rc = -1;
  if (!argv || !argv[0]) {
    buf_adds(err, "no program to start");
    return -1;
  }
  if (find_program(argv[0], &path, err)) {
    if (err->len == 0) buf_adds(err, "not enough memory");
    goto out;
  }
  envp = build_env(env);
  if (!envp) {
    buf_adds(err, "not enough memory");
    goto out;
  }
  /* exec reports success by closing the pipe (close-on-exec) and failure by
   * writing errno to it, so the caller learns a bad program at once */
  if (pipe(fds) < 0 || set_cloexec(fds[0]) < 0 || set_cloexec(fds[1]) < 0) {
    buf_printf(err, "pipe: %s", strerror(errno));
    goto out;
  }
  pid_t parent = getpid();
  pid_t child = fork();
  if (child < 0) {
    buf_printf(err, "fork: %s", strerror(errno));
    goto out;
  }
  if (child == 0) {
    /* Only async-signal-safe calls from here to exec. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);
    /* its own session, so its own process group: a forced stop kills the
     * group (the worker and what its listeners started, os.execute's shell
     * and its children), and a terminal's Ctrl-C reaches the supervisor
     * only, which forwards it as the graceful stop.  A session rather than
     * a mere group: a background group of the terminal would be stopped by
     * SIGTTOU when writing its log there under `stty tostop`. */
    setsid();
#ifdef __linux__
    /* a worker outlives a killed supervisor only until it finished the job
     * in hand (SIGTERM is its graceful stop) */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127); /* the parent died before prctl */
#else
    (void)parent;
#endif
    sigprocmask(SIG_SETMASK, blocked ? &saved_mask : NULL, NULL);
    execve(buf_cstr(&path), (char *const *)argv, envp);
    int e = errno;
    ssize_t ignored = write(fds[1], &e, sizeof e);
    (void)ignored;
    _exit(127);
  }
  close(fds[1]);
  fds[1] = -1;
  int child_errno = 0;
  ssize_t got;
  do {
    got = read(fds[0], &child_errno, sizeof child_errno);
  } while (got < 0 && errno == EINTR);
  if (got == (ssize_t)sizeof child_errno) {
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    buf_printf(err, "%s: %s", buf_cstr(&path), strerror(child_errno));
    goto out;
  }
  *pid = child;
  rc = 0;
out:
  for (int i = 0; i < 2; i++)
    if (fds[i] >= 0) close(fds[i]);
  free(envp);
  buf_free(&path);
  return rc;
}

int process_reap(pid_t *pid, int *signaled, int *code) {
  for (;;) {
    int status;
    pid_t p = waitpid(-1, &status, WNOHANG);
    if (p == 0) return 0;
    if (p < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) return 0;
      return -1;
    }
    if (WIFEXITED(status)) {
      *pid = p, *signaled = 0, *code = WEXITSTATUS(status);
      return 1;
    }
    if (WIFSIGNALED(status)) {
      *pid = p, *signaled = 1, *code = WTERMSIG(status);
      return 1;
    }
    /* stopped/continued: not a termination */
  }
}

int process_kill(pid_t pid, int sig) { return kill(pid, sig); }

static const struct {
  const char *name;
  int sig;
} signal_names[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"ABRT", SIGABRT}, {"FPE", SIGFPE},   {"KILL", SIGKILL}, {"SEGV", SIGSEGV},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"USR1", SIGUSR1},
    {"USR2", SIGUSR2}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"BUS", SIGBUS},   {"TRAP", SIGTRAP}, {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ},
};

/* SIGRTMIN is not a constant (the C library keeps the first real-time
 * signals for itself): named apart. */
int process_signal_number(const char *name) {
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  if (strcmp(name, "RTMIN") == 0) return SIGRTMIN;
  for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++)
    if (strcmp(name, signal_names[i].name) == 0) return signal_names[i].sig;
  return 0;
}

const char *process_signal_name(int sig) {
  if (sig == SIGRTMIN) return "RTMIN";
  for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++)
    if (signal_names[i].sig == sig) return signal_names[i].name;
  return NULL;
}

/* The command-line area [start, end) of this process: fields 48 and 49 of
 * /proc/self/stat (Linux 3.5 and later).  0, or -1. */
static int cmdline_area(char **start, char **end) {
#ifdef __linux__
  int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  buf b = BUF_INIT;
  char chunk[512];
  ssize_t n;
  while ((n = read(fd, chunk, sizeof chunk)) > 0)
    if (buf_add(&b, chunk, (size_t)n)) break;
  close(fd);
  /* fields after the command name, which is in parentheses and may hold
   * anything: field 3 follows the last ')' */
  const char *p = b.data ? strrchr(buf_cstr(&b), ')') : NULL;
  unsigned long long v[2] = {0, 0};
  int ok = 0;
  if (p) {
    p++;
    for (int field = 3; field <= 49 && *p; field++) {
      while (*p == ' ') p++;
      char *after;
      unsigned long long x = strtoull(p, &after, 10);
      if (field >= 48) v[field - 48] = x;
      ok = field == 49 && after != p;
      p = after;
      while (*p && *p != ' ') p++;
    }
  }
  buf_free(&b);
  if (!ok || v[0] == 0 || v[1] <= v[0]) return -1;
  *start = (char *)(uintptr_t)v[0];
  *end = (char *)(uintptr_t)v[1];
  return 0;
#else
  (void)start;
  (void)end;
  return -1;
#endif
}

int process_hide_arg(const char *secret) {
  size_t k = secret ? strlen(secret) : 0;
  char *start, *end;
  if (k == 0 || cmdline_area(&start, &end) != 0) return 0;
  size_t stars = k < 3 ? k : 3;
  char *from = start + strlen(start) + 1; /* after argv[0] */
  int hidden = 0;
  while (from + k <= end) {
    char *at = memmem(from, (size_t)(end - from), secret, k);
    if (!at) break;
    memset(at, '*', stars);
    memmove(at + stars, at + k, (size_t)(end - (at + k)));
    memset(end - (k - stars), 0, k - stars);
    end -= k - stars;
    from = at + stars;
    hidden++;
  }
  return hidden;
}

int process_kill_group(pid_t pgid, int sig) { return kill(-pgid, sig); }
