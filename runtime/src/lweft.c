/*
 * lweft.c -- luaopen_weft_core: the C core as a Lua module.
 *
 * Thin on purpose: each part registers its own functions (future_open,
 * pool_open); the idiom (options tables, map, gather, executor specs) lives
 * in lua/weft/init.lua.
 */
#include <dlfcn.h>
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "future.h"
#include "log.h"
#include "wire.h"
#include "pool.h"
#include "rworker.h"
#include "stop.h"
#include "proto.h"
#include "weft.h"

/* _wire_encode(...) -> string: the values as a self-contained message (the
 * form that leaves the process).  For specs and tools. */
static int l_wire_encode(lua_State *L) {
  wire_enc e;
  wire_enc_init(&e, L, 1, 0);
  if (wire_encode_tuple(&e, 1, lua_gettop(L), "value")) {
    lua_pushstring(L, wire_error(&e));
    wire_enc_free(&e);
    return weft_error(L, WK_SERIALIZATION, "%s", lua_tostring(L, -1));
  }
  lua_pushlstring(L, e.out.data, e.out.len);
  wire_enc_free(&e);
  return 1;
}

/* _wire_decode(s) -> values: decodes untrusted bytes (raises kind
 * serialization for anything malformed). */
static int l_wire_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int n = wire_decode_tuple(L, s, len, 0, 0);
  if (n < 0) return weft_error(L, WK_SERIALIZATION, "bad message: %s", lua_tostring(L, -1));
  return n;
}

/* register(name, mt): tables whose metatable is `mt` cross to other states
 * as `name` (weft.register checks the arguments; see wire.h). */
static int l_register(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  wire_type_register(L, 1, 2);
  return 0;
}

/* Keeps this module loaded for good.  Lua unloads C modules when the
 * state that required them closes, but weft's threads (the deadline
 * service, a worker stuck in a C call) may still run its code then. */
static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)luaopen_weft_core, &info) && info.dli_fname &&
      strstr(info.dli_fname, ".so"))
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

int luaopen_weft_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"_wire_encode", l_wire_encode},
      {"_wire_decode", l_wire_decode},
      {"register", l_register},
      {"redis_serve", rworker_serve},
      {NULL, NULL}};
  pin_module();
  luaL_newlib(L, funcs);
  proto_open(L);
  future_open(L);
  pool_open(L);
  stop_open(L);
  log_open(L);
  lua_pushliteral(L, WEFT_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
