/*
 * host.c -- the public C API (weft.h) for applications that embed Lua.
 *
 * Thin: each call forwards to the part that owns the thing (future.c's
 * homes for the completion source, pool.c for executors, child.c for the
 * worker program).
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "child.h"
#include "future.h"
#include "pool.h"
#include "weft.h"

#ifndef WEFT_LUADIR
#define WEFT_LUADIR "/usr/local/share/lua/5.4"
#endif

/* Appends the installed Lua layer's directory to package.path, unless it
 * is there already. */
static void add_luadir(lua_State *L) {
  const char *path;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  path = lua_tostring(L, -1);
  if (path && strstr(path, WEFT_LUADIR "/?.lua") == NULL) {
    lua_pushfstring(L, "%s;%s/?.lua;%s/?/init.lua", path, WEFT_LUADIR, WEFT_LUADIR);
    lua_setfield(L, -3, "path");
  }
  lua_pop(L, 2);
}

int luaopen_weft(lua_State *L) {
  luaL_requiref(L, "weft.core", luaopen_weft_core, 0);
  lua_pop(L, 1);
  add_luadir(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "weft");
  lua_call(L, 1, 1);
  return 1;
}

int weft_completion_fd(lua_State *L) { return home_completion_fd(L); }

int weft_dispatch(lua_State *L) { return home_dispatch(L); }

int weft_pending(lua_State *L) { return (int)home_of(L)->ncallbacks; }

void weft_set_default_workers(int n) { pool_set_default_workers(n); }

void weft_set_worker_path(const char *path) { child_set_worker_path(path); }

void weft_shutdown(lua_State *L) { pool_abort_all(L); }
