/*
 * spec/support/notifysock.c: the module `spec.notifysock`, for specs only
 * (not part of the rock): a unix datagram socket that receives what a
 * service manager would, so that a spec checks the sd_notify messages of
 * `lua-scheduler run` (READY=1, STATUS=..., WATCHDOG=1) as systemd gets
 * them.
 *
 *   notifysock.bind(name)        a socket bound to `name` (a path, or an
 *                                abstract name starting with '@'): its fd
 *   notifysock.recv(fd, seconds) the next datagram, or nil after `seconds`
 *   notifysock.close(fd)
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int l_bind(lua_State *L) {
  size_t n;
  const char *name = luaL_checklstring(L, 1, &n);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  luaL_argcheck(L, n > 0 && n < sizeof sa.sun_path, 1, "name too long for a unix socket");
  memcpy(sa.sun_path, name, n);
  if (name[0] == '@') sa.sun_path[0] = '\0';
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (name[0] != '@'));
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd < 0) return luaL_error(L, "socket: %s", strerror(errno));
  if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
    int e = errno;
    close(fd);
    return luaL_error(L, "bind %s: %s", name, strerror(e));
  }
  lua_pushinteger(L, fd);
  return 1;
}

static int l_recv(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  double seconds = luaL_checknumber(L, 2);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r;
  do {
    r = poll(&p, 1, (int)(seconds * 1000));
  } while (r < 0 && errno == EINTR);
  if (r <= 0) return 0;
  /* a notification is a few lines; a longer datagram is cut (a spec failure) */
  size_t size = 65536;
  char *b = malloc(size);
  if (!b) return luaL_error(L, "not enough memory");
  ssize_t got = recv(fd, b, size, 0);
  if (got < 0) {
    free(b);
    return luaL_error(L, "recv: %s", strerror(errno));
  }
  lua_pushlstring(L, b, (size_t)got);
  free(b);
  return 1;
}

static int l_close(lua_State *L) {
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

int luaopen_spec_notifysock(lua_State *L) {
  static const luaL_Reg f[] = {{"bind", l_bind}, {"recv", l_recv}, {"close", l_close}, {NULL, NULL}};
  luaL_newlib(L, f);
  return 1;
}
