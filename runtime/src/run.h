/*
 * run.h -- running one task message inside a Lua state (run_*).
 *
 * Every executor ends here: the inline executor in the caller's state, a
 * thread worker in its own state, a process worker in its process.  The
 * message is decoded, the function called under a handler that keeps the
 * original error value and the traceback, and the outcome encoded: a tuple
 * of results, or one error-record table {kind, message, traceback, value,
 * task} that the owner turns into a weft.Error.
 *
 *   task message  := wire header, RUN_CALL  nvalues fn arg*
 *                  | wire header, RUN_CHUNK fn spread:u8 count item*
 *   chunk results := tuple (values table, errors table or nil, count)
 */
#ifndef WEFT_RUN_H
#define WEFT_RUN_H

#include <lua.h>
#include <stddef.h>

#include "future.h"
#include "wire.h"

enum { RUN_CALL = 0, RUN_CHUNK = 1 };

typedef struct run_outcome {
  int state;        /* FS_FINISHED or FS_FAILED */
  char *data;       /* the encoded results or error record (malloc'd) */
  size_t len;
} run_outcome;

/* Runs the message in L (left as it was).  `trusted`: the message comes
 * from this process (it may point at bytecode blobs here). */
void run_message(lua_State *L, const char *msg, size_t len,
                 const wire_dep *deps, size_t ndeps, const char *name, int trusted,
                 run_outcome *out);

/* Encodes an error record {kind, message [, cause = record]} with no Lua
 * error value, for failures outside a task (init errors, broken pools). */
void run_error_record(lua_State *L, weft_kind kind, const char *message,
                      const char *cause_data, size_t cause_len,
                      run_outcome *out);

/* Runs init(args...) from an encoded call message; returns 0, or -1 with
 * out holding the error record. */
int run_init(lua_State *L, const char *msg, size_t len, int trusted, run_outcome *out);

/* Opens a worker's state: the standard libraries, package.path and cpath
 * (NULL: left as they are), coroutine tracking (stop.h), weft.core
 * preloaded with open_core, then the init call (NULL: none).  A failed
 * init leaves its error record in *broken (data NULL otherwise).  NULL when
 * out of memory. */
lua_State *run_state_new(const char *path, const char *cpath, const char *init,
                         size_t init_len, int trusted, lua_CFunction open_core,
                         run_outcome *broken);

#endif
