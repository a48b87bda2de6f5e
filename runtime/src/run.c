/*
 * run.c -- decode, call, encode: one task inside one Lua state.
 */
#include "run.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "stop.h"
#include "wire.h"

/* The message of Lua's memory errors (lstate.c). */
#define MEMERRMSG "not enough memory"

/* Is the value at idx Lua's memory error message ("not enough memory",
 * or "where: not enough memory")? */
static int is_memory_message(lua_State *L, int idx) {
  size_t len, n = sizeof MEMERRMSG - 1;
  const char *s;
  if (lua_type(L, idx) != LUA_TSTRING) return 0;
  s = lua_tolstring(L, idx, &len);
  return len >= n && strcmp(s + len - n, MEMERRMSG) == 0 &&
         (len == n || (len > n + 2 && s[len - n - 2] == ':' && s[len - n - 1] == ' '));
}

/* The message handler: turns any error value into a record table
 * {message, traceback, value} while the failing stack still exists. */
static int run_msgh(lua_State *L) {
  const char *msg;
  lua_createtable(L, 0, 5);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "value");
  if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER) {
    lua_pushvalue(L, 1);
    lua_tostring(L, -1);
  } else if (luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    luaL_tolstring(L, 1, NULL);
  } else if (lua_istable(L, 1) && lua_getfield(L, 1, "message") == LUA_TSTRING) {
    /* kept: a table error with a message field */
  } else {
    if (lua_istable(L, 1)) lua_pop(L, 1);
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  msg = lua_tostring(L, -1);
  /* Lua's own memory error, raised again as a plain error on its way out
   * (coroutine.wrap, a C function's pcall, maybe with a position put in
   * front): still a memory error. */
  if (is_memory_message(L, 1)) {
    lua_pushliteral(L, "memory");
    lua_setfield(L, -3, "kind");
    lua_pushfstring(L, "out of memory while the task ran (an allocation failed: %s)",
                    lua_tostring(L, 1));
    lua_replace(L, -2);
    msg = lua_tostring(L, -1);
  }
  /* A nil global in a worker is almost always a global of the submitting
   * script, which workers do not see. */
  if (msg && strstr(msg, "(global '") && strstr(msg, "nil value")) {
    lua_pushliteral(L, " (workers do not see the submitting script's globals: "
                       "pass the value as an argument or upvalue, or define it "
                       "in the executor's init function)");
    lua_concat(L, 2);
  }
  lua_setfield(L, -2, "message");
  luaL_traceback(L, L, NULL, 1);
  lua_setfield(L, -2, "traceback");
  return 1;
}

/* Encodes the values at [first, top] as the outcome. */
static int encode_tuple(lua_State *L, int first, int state, run_outcome *out,
                        const char *what) {
  wire_enc e;
  int rc;
  /* Outcomes outlive this state's caches, so functions in them carry their
   * bytecode (self-contained), never a pointer into this state. */
  wire_enc_init(&e, L, 1, 0);
  rc = wire_encode_tuple(&e, first, lua_gettop(L) - first + 1, what);
  if (rc == 0) {
    out->state = state;
    out->data = buf_steal(&e.out, &out->len);
  } else {
    lua_pushstring(L, wire_error(&e));
  }
  wire_enc_free(&e);
  return rc;
}

/* Completes the error record at the top (kind, task) and encodes it.  If
 * its value cannot be copied, the record is sent without it. */
static void encode_record(lua_State *L, const char *kind, const char *name,
                          run_outcome *out) {
  int rec = lua_gettop(L);
  if (!lua_istable(L, rec)) {   /* a bare error value (no handler ran): wrap it */
    lua_createtable(L, 0, 4);
    lua_insert(L, rec);
    lua_setfield(L, rec, "message");
  }
  if (lua_getfield(L, rec, "kind") == LUA_TSTRING && strcmp(kind, "task") == 0) {
    lua_pop(L, 1);   /* the handler's (a memory error) */
  } else {
    lua_pop(L, 1);
    lua_pushstring(L, kind);
    lua_setfield(L, rec, "kind");
  }
  if (name) {
    lua_pushstring(L, name);
    lua_setfield(L, rec, "task");
  }
  if (encode_tuple(L, rec, FS_FAILED, out, "error") == 0) return;
  lua_getfield(L, rec, "value");
  lua_getfield(L, rec, "message");
  lua_pushfstring(L, "%s (the error value, a %s, cannot be copied: %s)",
                  lua_tostring(L, -1), luaL_typename(L, -2), lua_tostring(L, -3));
  lua_setfield(L, rec, "message");
  lua_settop(L, rec);
  lua_pushnil(L);
  lua_setfield(L, rec, "value");
  if (encode_tuple(L, rec, FS_FAILED, out, "error") != 0) {
    out->state = FS_FAILED;
    out->data = NULL;
    out->len = 0;
  }
}

void run_error_record(lua_State *L, weft_kind kind, const char *message,
                      const char *cause_data, size_t cause_len,
                      run_outcome *out) {
  int top = lua_gettop(L);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  if (cause_data && wire_decode_tuple(L, cause_data, cause_len, 0, 1) == 1)
    lua_setfield(L, -2, "cause");
  else
    lua_settop(L, top + 1);
  encode_record(L, weft_kind_name(kind), NULL, out);
  lua_settop(L, top);
}

typedef struct run_args {
  const char *msg;
  size_t len;
  const wire_dep *deps;
  size_t ndeps;
  const char *name;
  int trusted;
  run_outcome *out;
  const char *phase;   /* where the task is, for a memory error: "while the task ran" */
} run_args;

/* Fails the outcome with kind memory: the task's state ran out of memory
 * `where` (a Lua allocation failed; the message handler does not run for
 * memory errors, so there is no traceback).  May itself raise a memory
 * error, which run_message's pcall turns into a record made without Lua. */
static void fail_memory(lua_State *L, const char *where, const char *name, run_outcome *out) {
  lua_createtable(L, 0, 4);
  lua_pushfstring(L, "out of memory %s (an allocation failed)", where);
  lua_setfield(L, -2, "message");
  encode_record(L, weft_kind_name(WK_MEMORY), name, out);
}

/* Results or an error that could not be encoded for want of memory is a
 * memory error, not a serialization one. */
static int encoder_ran_out(const char *err) { return err && strstr(err, "out of memory"); }

/* Fails the outcome with a serialization record for message `what`. */
static void fail_serialization(lua_State *L, const char *what, const char *name,
                               run_outcome *out) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, what);
  lua_setfield(L, -2, "message");
  encode_record(L, "serialization", name, out);
}

static void run_call(lua_State *L, wire_dec *d, run_args *a) {
  size_t n, i;
  int base = lua_gettop(L), fn, rc;
  if (wire_get_size(d, &n) || n == 0 || n > (size_t)(d->end - d->p)) {
    fail_serialization(L, d->err ? d->err : "bad task message", a->name, a->out);
    return;
  }
  lua_pushcfunction(L, run_msgh);
  fn = base + 2;
  luaL_checkstack(L, (int)(n < 1000000 ? n : 1000000) + 8, "weft: too many arguments");
  for (i = 0; i < n; i++) {
    if (wire_get(d, L)) {
      lua_settop(L, base);
      if (i == 0)
        lua_pushfstring(L, "cannot decode the task's function: %s", d->err);
      else
        lua_pushfstring(L, "cannot decode the task's argument %d%s%s", (int)i,
                        d->err[0] == '.' || d->err[0] == '[' ? " " : ": ", d->err);
      fail_serialization(L, lua_tostring(L, -1), a->name, a->out);
      return;
    }
  }
  a->phase = "while the task ran";
  rc = lua_pcall(L, (int)n - 1, LUA_MULTRET, base + 1);
  if (rc == LUA_ERRMEM) {
    lua_settop(L, base);
    fail_memory(L, a->phase, a->name, a->out);
    return;
  }
  if (rc != LUA_OK) {
    a->phase = "while the task's error was recorded";
    encode_record(L, "task", a->name, a->out);
    return;
  }
  a->phase = "while the task's results were copied out";
  if (encode_tuple(L, fn, FS_FINISHED, a->out, "result") != 0) {
    if (encoder_ran_out(lua_tostring(L, -1))) {
      lua_settop(L, base);
      fail_memory(L, a->phase, a->name, a->out);
      return;
    }
    lua_pushfstring(L, "the task's results cannot be copied back: %s", lua_tostring(L, -1));
    fail_serialization(L, lua_tostring(L, -1), a->name, a->out);
  }
}

static void run_chunk(lua_State *L, wire_dec *d, run_args *a) {
  size_t count, i;
  int spread, base = lua_gettop(L), vals, errs, fn, msgh, rc;
  const char *kind = "task";
  if (wire_get(d, L) || wire_get_byte(d, &spread) || wire_get_size(d, &count) ||
      count > (size_t)(d->end - d->p)) {
    lua_settop(L, base);
    fail_serialization(L, d->err ? d->err : "bad chunk message", a->name, a->out);
    return;
  }
  fn = base + 1;
  lua_pushcfunction(L, run_msgh);
  msgh = base + 2;
  lua_createtable(L, (int)count, 0);
  vals = base + 3;
  lua_pushnil(L);
  errs = base + 4;
  for (i = 1; i <= count; i++) {
    int nargs = 1;
    lua_pushvalue(L, fn);
    if (wire_get(d, L)) {
      lua_settop(L, base);
      lua_pushfstring(L, "cannot decode item %d: %s", (int)i, d->err);
      fail_serialization(L, lua_tostring(L, -1), a->name, a->out);
      return;
    }
    if (spread) {
      int t = lua_gettop(L), k, n;
      if (!lua_istable(L, t)) {
        lua_settop(L, fn + 3);
        lua_createtable(L, 0, 3);
        lua_pushfstring(L, "map with spread: item %d is a %s, not a table of arguments",
                        (int)i, luaL_typename(L, t));
        lua_setfield(L, -2, "message");
        kind = "task";
        goto item_failed;
      }
      n = (int)lua_rawlen(L, t);
      luaL_checkstack(L, n + 4, "weft: too many arguments");
      for (k = 1; k <= n; k++) lua_rawgeti(L, t, k);
      lua_remove(L, t);
      nargs = n;
    }
    a->phase = "while the task ran";
    kind = "task";
    rc = lua_pcall(L, nargs, 1, msgh);
    if (rc == LUA_OK) {
      lua_rawseti(L, vals, (lua_Integer)i);
      continue;
    }
    if (rc == LUA_ERRMEM) {   /* (no handler ran: the top is a string) */
      lua_settop(L, errs);
      lua_createtable(L, 0, 3);
      lua_pushfstring(L, "out of memory %s (an allocation failed)",
                      a->phase);
      lua_setfield(L, -2, "message");
      kind = weft_kind_name(WK_MEMORY);
    }
  item_failed:
    {
      int rec = lua_gettop(L);
      if (lua_getfield(L, rec, "kind") != LUA_TSTRING) {   /* (the handler's, if it set one) */
        lua_pushstring(L, kind);
        lua_setfield(L, rec, "kind");
      }
      lua_pop(L, 1);
      if (a->name) {
        lua_pushstring(L, a->name);
        lua_setfield(L, rec, "task");
      }
      if (lua_isnil(L, errs)) {
        lua_newtable(L);
        lua_replace(L, errs);
      }
      lua_rawseti(L, errs, (lua_Integer)i);
      lua_settop(L, errs);
    }
  }
  lua_pushinteger(L, (lua_Integer)count);
  a->phase = "while the task's results were copied out";
  if (encode_tuple(L, vals, FS_FINISHED, a->out, "result") == 0) return;
  if (encoder_ran_out(lua_tostring(L, -1))) {
    lua_settop(L, base);
    fail_memory(L, a->phase, a->name, a->out);
    return;
  }
  /* Some value or error cannot be copied: find which, fail just that item. */
  lua_settop(L, errs + 1);
  for (i = 1; i <= count; i++) {
    int bad = 0;
    wire_enc e;
    wire_enc_init(&e, L, 1, 0);
    lua_rawgeti(L, vals, (lua_Integer)i);
    bad = wire_put(&e, -1, "result", 0) != 0;
    if (bad) {
      lua_pushfstring(L, "item %d: the result cannot be copied back: %s", (int)i, wire_error(&e));
      lua_pushnil(L);
      lua_rawseti(L, vals, (lua_Integer)i);
      if (lua_isnil(L, errs)) {
        lua_newtable(L);
        lua_replace(L, errs);
      }
      lua_createtable(L, 0, 3);
      lua_insert(L, -2);
      lua_setfield(L, -2, "message");
      lua_pushliteral(L, "serialization");
      lua_setfield(L, -2, "kind");
      lua_rawseti(L, errs, (lua_Integer)i);
    }
    wire_enc_free(&e);
    lua_settop(L, errs + 1);
    if (!lua_isnil(L, errs)) {
      lua_rawgeti(L, errs, (lua_Integer)i);
      if (!lua_isnil(L, -1)) {
        wire_enc_init(&e, L, 1, 0);
        if (wire_put(&e, -1, "error", 0) != 0) {
          lua_pushnil(L);
          lua_setfield(L, -2, "value");
        }
        wire_enc_free(&e);
      }
      lua_settop(L, errs + 1);
    }
  }
  if (encode_tuple(L, vals, FS_FINISHED, a->out, "result") != 0)
    fail_serialization(L, lua_tostring(L, -1), a->name, a->out);
}

static int run_protected(lua_State *L) {
  run_args *a = lua_touserdata(L, 1);
  wire_dec d;
  int kind;
  lua_settop(L, 0);
  if (wire_dec_init(&d, L, a->msg, a->len, a->trusted) || wire_get_byte(&d, &kind)) {
    lua_settop(L, 0);
    fail_serialization(L, d.err ? d.err : "bad task message", a->name, a->out);
    return 0;
  }
  d.deps = a->deps;
  d.ndeps = a->ndeps;
  if (kind == RUN_CALL)
    run_call(L, &d, a);
  else if (kind == RUN_CHUNK)
    run_chunk(L, &d, a);
  else
    fail_serialization(L, "unknown task message kind", a->name, a->out);
  return 0;
}

void run_message(lua_State *L, const char *msg, size_t len, const wire_dep *deps,
                 size_t ndeps, const char *name, int trusted, run_outcome *out) {
  run_args a = {msg, len, deps, ndeps, name, trusted, out,
                "while the task's function and arguments were copied in"};
  int top = lua_gettop(L), rc;
  char text[512];
  out->data = NULL;
  out->len = 0;
  out->state = FS_FAILED;
  lua_pushcfunction(L, run_protected);
  lua_pushlightuserdata(L, &a);
  if ((rc = lua_pcall(L, 1, 0, 0)) != LUA_OK) {
    /* Out of memory (anywhere: decoding, running, recording), or an error
     * while decoding (a require that failed).  The record is made in C:
     * the state may have no memory left for it. */
    free(out->data);
    out->data = NULL;
    if (rc == LUA_ERRMEM)
      snprintf(text, sizeof text, "out of memory %s (an allocation "
               "failed)", a.phase);
    else
      snprintf(text, sizeof text, "the task could not run: %s",
               lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error while decoding");
    out->data = wire_record(weft_kind_name(rc == LUA_ERRMEM ? WK_MEMORY : WK_TASK), text, name,
                            &out->len);
    if (out->data == NULL) out->len = 0;   /* (the owner reports a failure it cannot decode) */
  }
  lua_settop(L, top);
}

int run_init(lua_State *L, const char *msg, size_t len, int trusted, run_outcome *out) {
  run_message(L, msg, len, NULL, 0, "init", trusted, out);
  if (out->state == FS_FINISHED) {
    free(out->data);
    out->data = NULL;
    out->len = 0;
    return 0;
  }
  return -1;
}

lua_State *run_state_new(const char *path, const char *cpath, const char *init,
                         size_t init_len, int trusted, lua_CFunction open_core,
                         run_outcome *broken) {
  lua_State *L = luaL_newstate();
  broken->data = NULL;
  broken->len = 0;
  if (L == NULL) return NULL;
  luaL_openlibs(L);
  stop_track_coroutines(L);
  /* An in-process (trusted) state is a thread worker's: it shares the
   * process, so os.exit there must not end it.  A worker process's own
   * os.exit ends only that worker, which the pool replaces. */
  if (trusted) stop_guard_thread_state(L);
  lua_getglobal(L, "package");
  if (path) { lua_pushstring(L, path); lua_setfield(L, -2, "path"); }
  if (cpath) { lua_pushstring(L, cpath); lua_setfield(L, -2, "cpath"); }
  lua_pop(L, 1);
  luaL_requiref(L, "weft.core", open_core, 0);
  lua_pop(L, 1);
  if (init && run_init(L, init, init_len, trusted, broken) != 0 && broken->data == NULL)
    run_error_record(L, WK_TASK, "init failed", NULL, 0, broken);
  lua_settop(L, 0);
  return L;
}
