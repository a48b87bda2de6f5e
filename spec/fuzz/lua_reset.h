/*
 * lua_reset.h -- for the fuzz harnesses: puts a Lua state back as it was
 * after setup, so that nothing one input leaves behind (a cached prototype
 * factory, a registry entry, a global) changes how the next one runs.
 *
 * lua_reset_snapshot(L) takes a copy of the registry and of every table it
 * holds (package.loaded, the globals, weft's caches), one level deep (a
 * harness may take another after more setup: it replaces the first);
 * lua_reset(L) empties the stack, puts those entries back exactly, and
 * runs a full collection.
 */
#ifndef WEFT_FUZZ_LUA_RESET_H
#define WEFT_FUZZ_LUA_RESET_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

/* Its address keys the snapshot in the registry:
 * {[key] = {value, copy-of-the-table-or-false}}. */
static const char SNAPSHOT = 's';

/* Takes a copy of the registry, and of each table it holds, one level deep. */
static void lua_reset_snapshot(lua_State *L) {
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, LUA_REGISTRYINDEX)) {
    if (lua_touserdata(L, -2) == &SNAPSHOT) {   /* an earlier snapshot: replaced */
      lua_pop(L, 1);
      continue;
    }
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 1);
    if (lua_istable(L, -2)) {
      lua_newtable(L);
      lua_pushnil(L);
      while (lua_next(L, -4)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
      }
    } else {
      lua_pushboolean(L, 0);
    }
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, -3);     /* key */
    lua_insert(L, -2);
    lua_rawset(L, -5);        /* snap[key] = {value, copy} */
    lua_pop(L, 1);
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SNAPSHOT);
}

/* Makes table `t` hold exactly what `copy` holds. */
static void restore_table(lua_State *L, int t, int copy) {
  lua_pushnil(L);
  while (lua_next(L, t)) {          /* drop keys the copy does not have */
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, copy) == LUA_TNIL) {
      lua_pushvalue(L, -2);
      lua_pushnil(L);
      lua_rawset(L, t);             /* (assigning nil to a present key is allowed in next) */
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, copy)) {       /* and put every value back */
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, t);
  }
}

static void lua_reset(lua_State *L) {
  int snap;
  lua_settop(L, 0);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SNAPSHOT);
  snap = lua_gettop(L);
  /* Registry entries made since setup go, except the snapshot itself. */
  lua_pushnil(L);
  while (lua_next(L, LUA_REGISTRYINDEX)) {
    lua_pop(L, 1);
    if (lua_touserdata(L, -1) == &SNAPSHOT) continue;
    lua_pushvalue(L, -1);
    if (lua_rawget(L, snap) == LUA_TNIL) {
      lua_pushvalue(L, -2);
      lua_pushnil(L);
      lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, snap)) {       /* key {value, copy} */
    lua_pushvalue(L, -2);
    lua_rawgeti(L, -2, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    if (lua_rawgeti(L, -1, 2) == LUA_TTABLE) {
      lua_rawgeti(L, -2, 1);
      restore_table(L, lua_gettop(L), lua_gettop(L) - 1);
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT);
}

int luaopen_weft_core(lua_State *L);

/* A state as a worker has it: the standard libraries, weft.core, and
 * weft's Lua layer loaded once (a TASK value gets the weft.Task metatable
 * it registers); then package.path and cpath are emptied, so a MODULE tag
 * finds only what is loaded already (loading more from disk would run
 * code that is not the decoder's).  Snapshotted for lua_reset.  `who`
 * names the harness in the message when weft cannot be loaded. */
static inline lua_State *lua_reset_worker_state(const char *who) {
  lua_State *L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  luaL_requiref(L, "weft.core", luaopen_weft_core, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_pushliteral(L, WEFT_FUZZ_LUADIR "/?.lua;" WEFT_FUZZ_LUADIR "/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "weft");
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s: cannot load weft from %s: %s\n", who, WEFT_FUZZ_LUADIR,
            lua_tostring(L, -1));
    abort();
  }
  lua_getglobal(L, "package");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  lua_settop(L, 0);
  lua_reset_snapshot(L);
  return L;
}

#endif
