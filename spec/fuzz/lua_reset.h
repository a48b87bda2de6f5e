/*
 * lua_reset.h -- for the fuzz harnesses: puts a Lua state back as it was
 * after setup, so that nothing one input leaves behind (a cached prototype
 * factory, a registry entry, a global) changes how the next one runs.
 *
 * lua_reset_snapshot(L) takes a copy of the registry and of every table it
 * holds (package.loaded, the globals, weft's caches), one level deep;
 * lua_reset(L) empties the stack, puts those entries back exactly, and
 * runs a full collection.
 */
#ifndef WEFT_FUZZ_LUA_RESET_H
#define WEFT_FUZZ_LUA_RESET_H

#include <lauxlib.h>
#include <lua.h>

/* Its address keys the snapshot in the registry:
 * {[key] = {value, copy-of-the-table-or-false}}. */
static const char SNAPSHOT = 's';

/* Takes a copy of the registry, and of each table it holds, one level deep. */
static void lua_reset_snapshot(lua_State *L) {
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, LUA_REGISTRYINDEX)) {
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

#endif
