/*
 * process: child processes and signal waiting for the supervisor of the
 * `lua-scheduler` command (`run --workers N`).  Plain C, no Lua.
 *
 * The supervisor blocks SIGCHLD, SIGHUP, SIGINT and SIGTERM
 * (process_block_signals) and then receives them synchronously, one at a
 * time, with process_wait_signal: no handler runs asynchronously, so there
 * is no self-pipe and no race between "a child died" and "go to sleep".
 * Children are started with fork + exec (process_spawn) and reaped with
 * process_reap; a child never runs code of the parent's Lua state and never
 * touches an inherited database connection.
 *
 * Error convention: -1 with errno set (or a message in `err` for
 * process_spawn), like the system calls underneath.
 */
#ifndef SCHEDULER_PROCESS_H
#define SCHEDULER_PROCESS_H

#include <sys/types.h>

#include "buf.h"

/* Block SIGCHLD, SIGHUP, SIGINT, SIGTERM and SIGRTMIN in the calling thread, so that
 * they wait for process_wait_signal.  The mask in force before is what
 * spawned children get.  Idempotent.  0, or -1 with errno set. */
int process_block_signals(void);

/* Wait at most `timeout` seconds (negative: no limit) for one of the blocked
 * signals.  Returns its number (and, if `from` is not NULL, the sending
 * process in *from: 0 when the kernel sent it), 0 on timeout, -1 with errno
 * set (EINVAL when the signals are not blocked). */
int process_wait_signal(double timeout, pid_t *from);

/* Start argv[0] (searched in PATH when it has no '/') with arguments argv
 * (NULL-terminated) and the current environment, in which each "NAME=value"
 * of `env` (NULL-terminated, may be NULL) is set.  The child gets the signal
 * mask from before process_block_signals, ignores SIGHUP (the supervisor owns
 * reloads), leads a new session and process group (its pid is the group's
 * id: process_kill_group) and, on Linux, receives SIGTERM when the parent
 * dies.  Returns 0 and the child's pid once exec succeeded; -1 with a message
 * in err when the program could not be started (not found, not executable,
 * fork failed). */
int process_spawn(const char *const *argv, const char *const *env, pid_t *pid, buf *err);

/* Reap one terminated child without blocking.  Returns 1 and fills *pid,
 * *signaled (1: killed by a signal) and *code (the exit status, or the
 * signal number); 0 when no child has terminated; -1 with errno set. */
int process_reap(pid_t *pid, int *signaled, int *code);

/* kill(2).  0, or -1 with errno set. */
int process_kill(pid_t pid, int sig);

/* kill(2) to the process group `pgid` (a child of process_spawn: its pid).
 * 0, or -1 with errno set (ESRCH: no process is left in the group). */
int process_kill_group(pid_t pgid, int sig);

/* Hide `secret` in this process's command line as other users see it
 * (/proc/PID/cmdline, ps): each occurrence in the memory the kernel shows
 * (the original argv strings) becomes "***", the rest of the command line
 * moving up, so the length does not show.  argv[0] is left alone; the other
 * argv pointers of main() are stale afterwards (lua.c no longer reads them
 * once the script runs, and the Lua `arg` table is a copy).  Linux only
 * (/proc/self/stat gives the area); elsewhere, and when `secret` does not
 * occur, nothing changes.  Returns how many occurrences were hidden. */
int process_hide_arg(const char *secret);

/* A signal's number from its name ("TERM" or "SIGTERM"), or 0 if unknown;
 * and its name ("TERM") from the number, or NULL. */
int process_signal_number(const char *name);
const char *process_signal_name(int sig);

#endif
