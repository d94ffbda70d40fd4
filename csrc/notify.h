/*
 * notify: the service manager's notification protocol (systemd's
 * sd_notify, Type=notify) without libsystemd: one datagram of
 * "NAME=value" lines sent to the unix socket named by $NOTIFY_SOCKET (a
 * path, or an abstract name written with a leading '@').  Plain C, no Lua.
 */
#ifndef SCHEDULER_NOTIFY_H
#define SCHEDULER_NOTIFY_H

#include <stddef.h>

/* Send `msg` (len bytes, e.g. "READY=1\nSTATUS=running 4 workers") to
 * `socket_name`.  1 sent; 0 when socket_name is NULL or empty (no service
 * manager listens: nothing to do); -1 with errno set (ENAMETOOLONG: the
 * name does not fit a unix socket address). */
int notify_send(const char *socket_name, const char *msg, size_t len);

#endif
