/*
 * weft.c -- the `weft` program: Lua 5.4 with weft preloaded.
 *
 *   weft run FILE [args...]   run a flow script (arg set as lua5.4 sets it)
 *   weft --version | --help
 *
 * It embeds Lua the way a host application does: a new state, the standard
 * libraries, weft.core preloaded with luaL_requiref's loader, and the Lua
 * layer found on package.path (the installed share/lua/5.4, or the source
 * tree next to a build).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"

#ifndef WEFT_LUADIR
#define WEFT_LUADIR "/usr/local/share/lua/5.4"
#endif

static const char *progname = "weft";

static void usage(FILE *out) {
  fprintf(out,
          "usage: %s run FILE [args...]   run a Lua flow script with weft\n"
          "       %s --version            print the version\n"
          "       %s --help               this text\n",
          progname, progname, progname);
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* package.path gets, in front, where weft's Lua layer is: next to this
 * program (<prefix>/bin/weft -> <prefix>/share/lua/5.4), in the source tree
 * when it runs from build/weft/ (-> <tree>/lua), and the configured
 * WEFT_LUADIR. */
static void set_paths(lua_State *L) {
  char exe[PATH_MAX], *cut;
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  luaL_Buffer b;
  lua_getglobal(L, "package");
  luaL_buffinit(L, &b);
  if (n > 0) {
    exe[n] = '\0';
    if ((cut = strstr(exe, "/build/weft/weft")) != NULL) {
      *cut = '\0';
      lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", exe, exe);
      luaL_addvalue(&b);
    } else if ((cut = strstr(exe, "/bin/weft")) != NULL && cut[9] == '\0') {
      *cut = '\0';
      lua_pushfstring(L, "%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;", exe, exe);
      luaL_addvalue(&b);
    }
  }
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", WEFT_LUADIR, WEFT_LUADIR);
  luaL_addvalue(&b);
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

static int run_file(lua_State *L, int argc, char **argv, int script) {
  int i, status;
  lua_createtable(L, argc - script - 1, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, traceback);
  if (luaL_loadfile(L, argv[script]) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    return 2;
  }
  for (i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
  status = lua_pcall(L, argc - script - 1, 0, 1);
  if (status != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  lua_State *L;
  int rc;
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("weft %s (%s)\n", WEFT_VERSION, LUA_RELEASE);
    return 0;
  }
  if (strcmp(argv[1], "run") != 0 || argc < 3) {
    fprintf(stderr, "%s: unknown command '%s'\n", progname, argv[1]);
    usage(stderr);
    return 2;
  }
  L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create a Lua state\n", progname);
    return 1;
  }
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_weft_core);
  lua_setfield(L, -2, "weft.core");
  lua_pop(L, 1);
  set_paths(L);
  rc = run_file(L, argc, argv, 2);
  lua_close(L);
  return rc;
}
