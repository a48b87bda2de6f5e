/*
 * serve.h -- the worker side of the process pool (serve_*): what the
 * weft-worker program runs when a pool starts it (see frame.h and procs.h).
 */
#ifndef WEFT_SERVE_H
#define WEFT_SERVE_H

#include <lua.h>

/* Serves tasks from fd until the pool closes it; returns an exit status.
 * open_core opens weft.core in the worker's states. */
int serve_pool(int fd, lua_CFunction open_core);

#endif
