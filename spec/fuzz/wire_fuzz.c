/*
 * wire_fuzz.c -- libFuzzer target: the wire decoder (wire.c) on untrusted
 * bytes, the way weft reads a message that came from outside the process
 * (a worker process's results, a child's answer, later a Redis stream).
 *
 * One input is one message.  It goes through every reader weft has:
 *   - wire_decode_tuple(all values): a task's results (f:result(),
 *     core._wire_decode);
 *   - wire_decode_tuple(first value) then, if that is a table, the error
 *     record path of future_push_error: weft_bless_error, then tostring()
 *     of the blessed weft.Error (which reads the record's fields, whatever
 *     their types);
 *   - wire_dec_init + wire_get as run.c reads a task message, with two
 *     dependencies (one finished, whose results are the input itself, one
 *     not finished) so DEP tags are followed too.
 * Decoded functions are never called: running bytecode from a message is
 * the executor's business (and trusting it is the verifier's), the decoder
 * must only never crash on it.
 *
 * One Lua state per process (as a worker has), reset after every input so
 * that nothing one input leaves behind changes how the next one decodes:
 * the stack is emptied, every registry entry and every entry of a table
 * the registry holds (package.loaded, the globals, weft's prototype caches)
 * is put back as it was after setup, and a full collection runs.  An input
 * that crashes therefore crashes alone, and replays the same way.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "future.h"
#include "lua_reset.h"
#include "wire.h"


static lua_State *L;

typedef struct input {
  const char *data;
  size_t len;
} input;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = lua_reset_worker_state("wire_fuzz");
  return 0;
}

/* === the readers ========================================================= */

static int decode_all(lua_State *L) {
  input *in = lua_touserdata(L, 1);
  int n;
  lua_settop(L, 0);
  n = wire_decode_tuple(L, in->data, in->len, 0, 0);
  if (n < 0 && !lua_isstring(L, -1)) abort();   /* an error is a message */
  return 0;
}

static int decode_record(lua_State *L) {
  input *in = lua_touserdata(L, 1);
  lua_settop(L, 0);
  if (wire_decode_tuple(L, in->data, in->len, 0, 1) == 1 && lua_istable(L, -1)) {
    weft_bless_error(L);
    luaL_tolstring(L, -1, NULL);    /* weft.Error's __tostring */
  }
  return 0;
}

static int decode_task(lua_State *L) {
  input *in = lua_touserdata(L, 1);
  wire_dep deps[2] = {{in->data, in->len}, {NULL, 0}};
  wire_dec d;
  size_t n, i;
  int kind;
  lua_settop(L, 0);
  if (wire_dec_init(&d, L, in->data, in->len, 0) || wire_get_byte(&d, &kind)) return 0;
  d.deps = deps;
  d.ndeps = 2;
  if (wire_get_size(&d, &n) || n > (size_t)(d.end - d.p)) return 0;
  for (i = 0; i < n; i++)
    if (wire_get(&d, L)) return 0;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const lua_CFunction readers[] = {decode_all, decode_record, decode_task};
  input in = {(const char *)data, size};
  size_t i;
  for (i = 0; i < sizeof readers / sizeof readers[0]; i++) {
    /* Under a pcall, as weft always decodes: a Lua error (out of memory,
     * a stack overflow raised by luaL_checkstack) is an error, not a crash. */
    lua_pushcfunction(L, readers[i]);
    lua_pushlightuserdata(L, &in);
    lua_pcall(L, 1, 0, 0);
    lua_reset(L);
  }
  return 0;
}
