/*
 * concurrent: the Core methods of a worker that runs several listeners at
 * once (concurrent.c), registered by core.c next to its own.
 */
#ifndef SCHEDULER_CONCURRENT_H
#define SCHEDULER_CONCURRENT_H

#include <lauxlib.h>

#include "core.h"

extern const luaL_Reg concurrent_methods[];

#endif
