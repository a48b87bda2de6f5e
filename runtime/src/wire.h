/*
 * wire.h -- copying Lua values between states (wire_*).
 *
 * A message is one flat byte buffer: a version byte, a flags byte, then
 * values in the format described at the top of wire.c.  The same format
 * serves threads (in-process), processes (pipes) and Redis (a stream); only
 * how functions travel differs: in-process messages carry a pointer to a
 * shared, reference-counted bytecode blob (proto.h), messages that leave
 * the process carry the bytecode itself.
 *
 * Encoding never calls Lua code and never raises: errors come back as -1
 * with a message naming where the bad value was found.  Decoding trusts
 * nothing: every length, count, depth and reference is checked.
 */
#ifndef WEFT_WIRE_H
#define WEFT_WIRE_H

#include <lua.h>
#include <stddef.h>

#include "buf.h"
#include "proto.h"

#define WIRE_VERSION 1
#define WIRE_MAX_DEPTH 1000   /* tables/functions nested in one value */
#define WIRE_MAX_ARRAY 0x7fffffff   /* a table's array section, at most */

struct future;

typedef struct wire_seen {
  const void *key;   /* a table, a function, or an upvalue cell id */
  size_t ordinal;    /* objects: order of appearance; cells: owner's ordinal */
  size_t at;         /* objects: offset of its tag byte; cells: upvalue n */
} wire_seen;

typedef struct wire_enc {
  lua_State *L;
  buf out;
  int self_contained;          /* ship bytecode, not blob pointers */
  int allow_futures;           /* futures become dependencies (task args) */
  proto_keep *keep;            /* blobs kept alive by the receiver's owner:
                                  then the message holds no references */
  /* what the message holds references to (the message owns them) */
  proto_blob **blobs;
  size_t nblobs, capblobs;
  struct future **deps;
  size_t ndeps, capdeps;
  void *blobs_small[4], *deps_small[4];
  /* objects seen so far (open addressing, power-of-two size) */
  wire_seen *seen;
  size_t nseen, capseen, nobjects;
  size_t *objat, capobjat;     /* ordinal -> offset of the object's tag */
  size_t objat_small[16];
  wire_seen seen_small[16];
  /* where we are, for error messages */
  int depth;
  int argno;                   /* 1-based argument number, 0 = not an arg */
  const char *what;            /* "argument", "result", "upvalue"... */
  /* Each level's key: its stack index, or -(function index * 256 + n)
   * for upvalue n of a function. */
  int pathidx[WIRE_MAX_DEPTH + 2];
  char err[512];
} wire_enc;

/* Starts a message.  `storage`, if not NULL, lends its allocation to the
 * encoder (it is left empty); give it back with wire_enc_keep_buffer. */
void wire_enc_init(wire_enc *e, lua_State *L, int self_contained,
                   int allow_futures);
void wire_enc_init_with(wire_enc *e, lua_State *L, int self_contained,
                        int allow_futures, buf *storage);
/* Moves the encoder's buffer (emptied) into `storage` for the next message. */
void wire_enc_keep_buffer(wire_enc *e, buf *storage);
/* Appends the value at `idx` (the message's `argno`-th value, for errors). */
int wire_put(wire_enc *e, int idx, const char *what, int argno);
int wire_put_size(wire_enc *e, size_t n);
int wire_put_byte(wire_enc *e, int c);
/* Releases everything the encoder holds, including blobs and deps. */
void wire_enc_free(wire_enc *e);
/* Encodes n values starting at stack index `first` as a complete message
 * (a count then the values) into e->out; returns 0 or -1 (e->err). */
int wire_encode_tuple(wire_enc *e, int first, int n, const char *what);

/* A dependency's outcome as a message reads it: the encoded results of a
 * finished future (data NULL when it did not finish). */
typedef struct wire_dep {
  const char *data;
  size_t len;
} wire_dep;

typedef struct wire_dec {
  const unsigned char *p, *end;
  int trusted;                 /* accept in-process blob pointers */
  const wire_dep *deps;        /* the message's dependencies, in order */
  size_t ndeps;
  int refs;                    /* stack index of the ordinal->object table */
  size_t nobjects;
  int depth;
  const char *err;             /* what went wrong, with the path to it */
  /* on failure: the reason, and the path built as the failure unwinds */
  const char *reason;
  char path[256], errbuf[400], typebuf[200];
} wire_dec;

/* Starts reading a message: checks version and flags, and pushes one value
 * (the reference table, or nil) that the caller pops when done. */
int wire_dec_init(wire_dec *d, lua_State *L, const char *data, size_t len,
                  int trusted);
/* Pushes the next value; returns 0 or -1 (d->err, nothing pushed). */
int wire_get(wire_dec *d, lua_State *L);
int wire_get_size(wire_dec *d, size_t *n);
int wire_get_byte(wire_dec *d, int *c);
/* Decodes a whole tuple message; pushes its values and returns how many,
 * or -1 with an error message pushed.  `max` > 0 keeps only the first
 * `max` values. */
int wire_decode_tuple(lua_State *L, const char *data, size_t len, int trusted,
                      int max);

/* Encodes, with no Lua state, a tuple message of one error-record table
 * {kind =, message = [, task =]} (the form run.c produces).  Returns the
 * malloc'd bytes, or NULL when out of memory. */
char *wire_record(const char *kind, const char *message, const char *task,
                  size_t *len);

/* The serialization-error message of a failed encode, for raising. */
const char *wire_error(const wire_enc *e);

/* weft.register(name, mt): binds name and metatable both ways in this
 * state (replacing what either was bound to), so that tables with `mt`
 * cross as `name` and arrive with the receiver's metatable of that name.
 * `name` is a string and `mt` a table at the given indices. */
void wire_type_register(lua_State *L, int name, int mt);

/* The registry key under which the Lua layer registers weft.Task's
 * metatable (core._task_metatable): submit and the wire know tasks by it. */
extern const char wire_task_mt;

#endif
