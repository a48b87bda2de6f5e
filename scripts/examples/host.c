/*
 * host.c -- a small C program that embeds Lua and weft, runs a Lua flow
 * given on its command line, and drives weft's done-callbacks from its own
 * poll() loop, next to its own work (here: a tick every 50 ms).
 *
 *   host [--stop-after SECONDS] FLOW.lua [args...]
 *
 * The flow runs to its end first (it submits tasks and registers
 * done-callbacks); then the host loops until no callback is left to run,
 * or until --stop-after seconds have passed, when it shuts weft down (the
 * tasks still queued or running are cancelled) before it closes the state.
 * Exit status: 0, 1 if the flow raised, 2 for a usage error.
 *
 * Build against an installed weft:
 *   cc host.c -o host $(pkg-config --cflags --libs weft lua5.4)
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft.h>

#define TICK_MS 50

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_weft(lua_State *L) {
  luaL_requiref(L, "weft", luaopen_weft, 1);
  return 0;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : luaL_tolstring(L, 1, NULL), 1);
  return 1;
}

/* Runs the flow file with its arguments in `arg`, as lua5.4 would. */
static int run_flow(lua_State *L, int argc, char **argv, int first) {
  int i;
  lua_createtable(L, argc - first - 1, first + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - first);
  }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, traceback);
  if (luaL_loadfile(L, argv[first]) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  for (i = first + 1; i < argc; i++) lua_pushstring(L, argv[i]);
  if (lua_pcall(L, argc - first - 1, 0, -(argc - first) - 1) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pop(L, 1);
  return 0;
}

int main(int argc, char **argv) {
  double stop_after = -1, start, next_tick;
  long ticks = 0, dispatched = 0;
  int first = 1, rc;
  struct pollfd pfd;
  lua_State *L;
  if (argc > 2 && strcmp(argv[1], "--stop-after") == 0) {
    stop_after = atof(argv[2]);
    first = 3;
  }
  if (first >= argc) {
    fprintf(stderr, "usage: host [--stop-after SECONDS] FLOW.lua [args...]\n");
    return 2;
  }
  L = luaL_newstate();
  if (L == NULL) return 1;
  luaL_openlibs(L);
  lua_pushcfunction(L, open_weft);   /* (raises if lua/weft is not on package.path) */
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr, "host: cannot open weft: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }

  rc = run_flow(L, argc, argv, first);
  pfd.fd = weft_completion_fd(L);
  pfd.events = POLLIN;
  start = now();
  next_tick = start + TICK_MS / 1000.0;
  while (rc == 0 && weft_pending(L) > 0) {
    double t = now();
    int wait_ms;
    if (stop_after >= 0 && t - start >= stop_after) {
      printf("host: stopping with %d callbacks pending\n", weft_pending(L));
      break;
    }
    wait_ms = (int)((next_tick - t) * 1000) + 1;
    if (poll(&pfd, 1, wait_ms < 0 ? 0 : wait_ms) > 0 && (pfd.revents & POLLIN))
      dispatched += weft_dispatch(L);
    if (now() >= next_tick) {   /* the host's own work */
      ticks++;
      next_tick += TICK_MS / 1000.0;
    }
  }
  printf("host: %ld callbacks dispatched, %ld ticks\n", dispatched, ticks);
  weft_shutdown(L);   /* cancels what is still queued or running */
  lua_close(L);
  return rc;
}
