/*
 * lweft.c -- luaopen_weft_core: the C core as a Lua module.
 *
 * Thin on purpose: each part registers its own functions (future_open,
 * pool_open); the idiom (options tables, map, gather, executor specs) lives
 * in lua/weft/init.lua.
 */
#include <lauxlib.h>
#include <lua.h>

#include "future.h"
#include "pool.h"
#include "proto.h"
#include "weft.h"

int luaopen_weft_core(lua_State *L) {
  lua_newtable(L);
  proto_open(L);
  future_open(L);
  pool_open(L);
  lua_pushliteral(L, WEFT_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
