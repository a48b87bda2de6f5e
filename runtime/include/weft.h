/*
 * weft.h -- the public C API of weft, for host applications that embed Lua.
 *
 * weft is a parallel-execution runtime for Lua 5.4: thread and process
 * pools, futures, wait/as_completed, and deadlines that stop the work.
 * Everything else in runtime/src is internal.  Build against the installed
 * copy with
 *
 *     cc host.c $(pkg-config --cflags --libs weft lua5.4)
 *
 * A host opens weft into its own lua_State, runs Lua code that submits
 * tasks and registers done-callbacks, and drives those callbacks from its
 * own event loop:
 *
 *     luaL_openlibs(L);
 *     luaL_requiref(L, "weft", luaopen_weft, 1);  lua_pop(L, 1);
 *     ... run Lua code ...
 *     struct pollfd p = { weft_completion_fd(L), POLLIN, 0 };
 *     while (weft_pending(L) > 0) {
 *       poll(&p, 1, -1);            (and the host's own descriptors)
 *       weft_dispatch(L);
 *     }
 *     weft_shutdown(L);
 *     lua_close(L);
 *
 * Every function takes the host's state and must be called on the thread
 * that runs it.  None of them raises a Lua error except luaopen_weft.
 */
#ifndef WEFT_H
#define WEFT_H

#include <lua.h>

#define WEFT_VERSION "0.1.0"

/* The module `weft` (the Lua layer over the C core), for luaL_requiref:
 *     luaL_requiref(L, "weft", luaopen_weft, 1);
 * It preloads weft.core from this library and loads lua/weft/init.lua from
 * package.path, to which the installed share/lua/5.4 is appended.  Raises
 * a Lua error if the Lua layer cannot be found. */
int luaopen_weft(lua_State *L);

/* The C core alone: the table `require "weft.core"` returns. */
int luaopen_weft_core(lua_State *L);

/* The completion source of L: a file descriptor that becomes readable when
 * futures created in L have done-callbacks ready to run.  Watch it for
 * reading (poll, epoll, libuv...); do not read or close it.  The same
 * descriptor is returned on every call.  -1 with errno set if it cannot be
 * made. */
int weft_completion_fd(lua_State *L);

/* Runs the done-callbacks that are ready, in L, in the order their futures
 * completed; returns how many ran.  Errors in callbacks are reported on
 * stderr and do not stop the others.  Never blocks. */
int weft_dispatch(lua_State *L);

/* How many futures of L have done-callbacks that have not run yet: the host
 * has something to wait for while this is above 0. */
int weft_pending(lua_State *L);

/* The default of the `workers` option when a pool is made without it
 * (n <= 0: the number of online CPUs, the initial default). */
void weft_set_default_workers(int n);

/* Where process pools find the weft-worker program when WEFT_WORKER is not
 * set (NULL: next to this library, then the installed copy).  Call it
 * before making process pools. */
void weft_set_worker_path(const char *path);

/* Shuts down every executor L made: queued tasks are cancelled, running
 * ones stopped (their futures end cancelled), worker threads joined and
 * worker processes reaped.  Call it before lua_close(L) when the host
 * closes a state whose work should not finish; lua_close alone waits for
 * running tasks. */
void weft_shutdown(lua_State *L);

/* Interrupts the Lua code running in L, as Ctrl-C does in lua5.4: safe to
 * call from a signal handler.  The next instruction or call raises a
 * weft.Error of kind "cancelled" with the message "interrupted"; a wait on
 * futures in progress (result, wait, as_completed, map) wakes within 0.1 s,
 * cancels with force the futures it was waiting on, and raises it.  The
 * state stays marked interrupted (weft_interrupted, core.interrupted()) so
 * that code unwinding can tell, until weft_clear_interrupt. */
void weft_interrupt(lua_State *L);
int weft_interrupted(void);
void weft_clear_interrupt(void);

#endif
