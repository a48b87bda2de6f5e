/*
 * weft-worker -- the worker entry point of weft's process-based executors.
 *
 * weft starts it by exec (never a bare fork of a process that has
 * threads), whatever loaded weft: plain lua5.4, the weft program or a host
 * application.  It links the runtime itself, so it needs no Lua module
 * search to start; the parent sends package.path and package.cpath.
 *
 *   weft-worker --oneshot    run one call read from fd 3, answer on fd 3
 *                            (weft.timeout.process)
 *   weft-worker --pool       serve a process pool's tasks over fd 3
 *                            (weft.processes; see runtime/src/frame.h)
 */
#include <lua.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "child.h"
#include "serve.h"
#include "weft.h"

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--oneshot") == 0)
    _exit(child_serve_oneshot(3, luaopen_weft_core));
  if (argc == 2 && strcmp(argv[1], "--pool") == 0) _exit(serve_pool(3, luaopen_weft_core));
  fprintf(stderr,
          "weft-worker %s: the worker program of weft; weft starts it itself.\n"
          "usage: weft-worker --oneshot   (one call, over fd 3)\n"
          "       weft-worker --pool      (a process pool's tasks, over fd 3)\n",
          WEFT_VERSION);
  return 2;
}
