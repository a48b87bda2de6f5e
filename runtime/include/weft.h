/*
 * weft.h -- the public C API of weft, for host applications that embed Lua.
 *
 * weft is a parallel-execution runtime for Lua 5.4: thread pools, futures,
 * wait/as_completed, and (in later releases) process pools, deadlines and a
 * Redis executor.  Everything else in runtime/src is internal.
 */
#ifndef WEFT_H
#define WEFT_H

#include <lua.h>

#define WEFT_VERSION "0.1.0"

/* Opens the C core as a Lua module (the table `require "weft.core"`
 * returns).  A host preloads it with
 *     luaL_requiref(L, "weft.core", luaopen_weft_core, 0);
 * and then `require "weft"` loads the Lua layer from package.path. */
int luaopen_weft_core(lua_State *L);

#endif
