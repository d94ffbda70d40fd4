/*
 * notify.c: sd_notify's datagram, written out (see notify.h).  The protocol
 * is a single datagram per message, so a message is sent whole or not at
 * all, and nothing is read back: systemd does not answer.
 */
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#pragma GCC visibility push(hidden) /* internal to scheduler.core */

int notify_send(const char *socket_name, const char *msg, size_t len) {
  if (!socket_name || !*socket_name) return 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t n = strlen(socket_name);
  /* the address is the kernel's fixed structure: a longer name cannot name
   * a unix socket at all */
  if (n >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(sa.sun_path, socket_name, n);
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  if (socket_name[0] == '@')
    sa.sun_path[0] = '\0'; /* abstract: the name's bytes, no terminator */
  else if (socket_name[0] != '/') {
    errno = EINVAL; /* systemd only ever gives these two forms */
    return -1;
  } else
    salen++; /* a path: with its terminating NUL, as sd_notify sends it */
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd < 0) return -1;
  /* not inherited by a worker started meanwhile on another thread (none
   * today; cheap) */
  (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
  ssize_t sent;
  do {
    sent = sendto(fd, msg, len, 0, (struct sockaddr *)&sa, salen);
  } while (sent < 0 && errno == EINTR);
  int e = errno;
  close(fd);
  if (sent < 0) {
    errno = e;
    return -1;
  }
  return 1;
}
