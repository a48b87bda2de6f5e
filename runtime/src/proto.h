/*
 * proto.h -- shipping Lua functions between states without paying for
 * lua_dump/lua_load on every task.
 *
 * Sending side: proto_blob_of() returns the bytecode of a Lua function's
 * prototype, dumped once per prototype and cached in the sending state.
 * Receiving side: proto_instantiate() pushes a NEW closure of that prototype
 * (fresh upvalue cells, all nil), loading the bytecode once per state and
 * then building closures with a "factory" (see proto.c), which costs about
 * as much as running a `function() end` expression.
 */
#ifndef WEFT_PROTO_H
#define WEFT_PROTO_H

#include <stdatomic.h>
#include <stddef.h>
#include <lua.h>

/* An immutable, reference-counted lua_dump of one prototype (with debug
 * information, so tracebacks name files and lines). */
typedef struct proto_blob {
  atomic_int refs;
  size_t len;
  char code[];
} proto_blob;

void proto_blob_ref(proto_blob *b);
void proto_blob_unref(proto_blob *b);

/* A set of blobs kept alive by their owner (an executor), so messages to
 * it need not count references per task: one reference per blob, taken
 * when first added, dropped by proto_keep_free.  Not thread-safe: only the
 * owner adds. */
typedef struct proto_keep {
  proto_blob **slots;
  size_t n, cap;
  proto_blob *last;            /* the most recent, checked first */
} proto_keep;

/* Adds b (taking a reference if it is new); returns 0 or -1 (no memory). */
int proto_keep_add(proto_keep *k, proto_blob *b);
void proto_keep_free(proto_keep *k);

/* Sets up the per-state caches; called once by luaopen_weft_core. */
void proto_open(lua_State *L);

/* Returns the cached blob of the Lua function at `idx` (borrowed: the
 * state's cache keeps it alive), dumping it on first sight.  NULL only when
 * out of memory. */
proto_blob *proto_blob_of(lua_State *L, int idx);

/* Pushes a new closure of the prototype `code` (a lua_dump).  `key` names
 * the prototype in the state's cache: a proto_blob pointer for in-process
 * messages (the cache then holds a reference on it), or NULL to key by the
 * bytes themselves (messages from other processes).  Returns 0, or -1 with
 * an error message pushed. */
int proto_instantiate(lua_State *L, proto_blob *key, const char *code,
                      size_t len);

#endif
