/*
 * wire.c -- the message format shared by every executor.
 *
 *   message := version:u8 flags:u8 item*
 *   value   := tag:u8 payload
 *
 *   NIL FALSE TRUE
 *   INT    8 bytes little endian (all 64 bits)
 *   FLOAT  8 bytes, the IEEE bits (NaN payloads, -0.0, inf survive)
 *   STR    size bytes
 *   TABLE  narray nhash:u32 value*narray (key value)*nhash
 *   TASK   as TABLE, for a weft.task: it gets the receiving state's
 *          weft.Task metatable (a task's function may call another task)
 *   OBJECT name TABLE-payload      a table whose metatable was registered
 *          under `name` (weft.register): it gets the metatable registered
 *          under that name in the receiving state
 *   FUNC   nupvalues proto upvalue*nupvalues
 *          proto := 0 blob-pointer (in-process only) | 1 size bytes
 *   REF    ordinal                 an object seen earlier in this message
 *   UPREF  ordinal n               upvalue n of function `ordinal` (shared cell)
 *   ENV    the receiving state's globals (upvalues named _ENV)
 *   MODULE name                    require(name) there (package.loaded tables)
 *   CFUNC  "lib.name"              a standard-library C function
 *   DEP    index                   the first result of the message's index-th
 *                                  dependency (a future among task arguments)
 *
 * Sizes are LEB128 (narray may be padded to 5 bytes: see put_table).
 * A table's keys 1..narray travel in order as values, every other key as a
 * pair.  Tables and functions get ordinals in order of first
 * appearance; the tag of one that is referenced again carries REFD, so the
 * decoder only keeps those.  Metatables are not copied, except a
 * weft.task's (TASK) and registered ones (OBJECT).
 */
#include "wire.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "future.h"

enum {
  W_NIL, W_FALSE, W_TRUE, W_INT, W_FLOAT, W_STR, W_TABLE, W_FUNC, W_REF,
  W_UPREF, W_ENV, W_MODULE, W_CFUNC, W_DEP, W_TASK, W_OBJECT, W_NTAGS
};

const char wire_task_mt = 't';   /* registry key: the weft.Task metatable */
#define W_REFD 0x80
#define WF_HASREFS 0x01

/* Registry key of the reverse map: module table -> name, C function ->
 * "lib.name" (standard library only). */
static const char REVMAP = 'm';

static const char *const stdlibs[] = {
    "_G", "string", "table", "math", "io", "os", "coroutine", "utf8",
    "debug", "package", NULL};

/* === the reverse map ===================================================== */

static void revmap_build(lua_State *L) {
  int i;
  lua_newtable(L);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {     /* every loaded module table -> its name */
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
      lua_pushvalue(L, -2);
      lua_rawset(L, -5);
    } else {
      lua_pop(L, 1);
    }
  }
  for (i = 0; stdlibs[i]; i++) {   /* standard C functions -> "lib.name" */
    if (lua_getfield(L, -1, stdlibs[i]) != LUA_TTABLE) { lua_pop(L, 1); continue; }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
        lua_pushfstring(L, "%s.%s", stdlibs[i], lua_tostring(L, -2));
        lua_rawset(L, -6);
      } else {
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &REVMAP);
}

/* Pushes the name that the registry's table at `key` gives the value at
 * idx, or returns 0 (no such table, or no name). */
static int registry_name(lua_State *L, const void *key, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

/* Pushes the reverse-map name of the value at idx, or returns 0. */
static int revmap_name(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &REVMAP) != LUA_TTABLE) revmap_build(L);
  lua_pop(L, 1);
  return registry_name(L, &REVMAP, idx);
}

/* === registered types (weft.register) ==================================== */

/* Registry key of the type table: name -> metatable and metatable -> name,
 * one per state.  A table whose metatable is in it crosses as an OBJECT
 * that names it, and the receiving state re-attaches its own metatable of
 * that name. */
static const char TYPES = 'y';

static void push_types(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TYPES) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &TYPES);
  }
}

void wire_type_register(lua_State *L, int name, int mt) {
  name = lua_absindex(L, name);
  mt = lua_absindex(L, mt);
  push_types(L);
  /* Forget what either side was bound to, so the map stays one to one. */
  lua_pushvalue(L, name);
  if (lua_rawget(L, -2) != LUA_TNIL) { lua_pushnil(L); lua_rawset(L, -3); } else lua_pop(L, 1);
  lua_pushvalue(L, mt);
  if (lua_rawget(L, -2) != LUA_TNIL) { lua_pushnil(L); lua_rawset(L, -3); } else lua_pop(L, 1);
  lua_pushvalue(L, name);
  lua_pushvalue(L, mt);
  lua_rawset(L, -3);
  lua_pushvalue(L, mt);
  lua_pushvalue(L, name);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Pushes the registered name of the metatable at idx, or returns 0. */
static int type_name_of(lua_State *L, int idx) { return registry_name(L, &TYPES, idx); }

/* Pushes the metatable registered under the name, or returns 0. */
static int type_lookup(lua_State *L, const char *name, size_t len) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TYPES) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushlstring(L, name, len);
  if (lua_rawget(L, -2) == LUA_TTABLE) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

/* === encoder: bookkeeping ================================================ */

void wire_enc_init(wire_enc *e, lua_State *L, int self_contained,
                   int allow_futures) {
  wire_enc_init_with(e, L, self_contained, allow_futures, NULL);
}

void wire_enc_keep_buffer(wire_enc *e, buf *storage) {
  buf_free(storage);
  *storage = e->out;
  storage->len = 0;
  e->out.data = NULL;
  e->out.len = e->out.cap = 0;
}

void wire_enc_init_with(wire_enc *e, lua_State *L, int self_contained,
                        int allow_futures, buf *storage) {
  memset(e, 0, offsetof(wire_enc, objat_small));
  if (storage) {
    e->out = *storage;
    e->out.len = 0;
    storage->data = NULL;
    storage->len = storage->cap = 0;
  }
  e->objat = e->objat_small;
  e->capobjat = sizeof e->objat_small / sizeof e->objat_small[0];
  e->blobs = (proto_blob **)e->blobs_small;
  e->capblobs = 4;
  e->deps = (struct future **)e->deps_small;
  e->capdeps = 4;
  e->L = L;
  e->self_contained = self_contained;
  e->allow_futures = allow_futures;
  e->seen = e->seen_small;
  e->capseen = sizeof e->seen_small / sizeof e->seen_small[0];
  memset(e->seen_small, 0, sizeof e->seen_small);
  e->err[0] = '\0';
  buf_putc(&e->out, WIRE_VERSION);
  buf_putc(&e->out, 0);
}

void wire_enc_free(wire_enc *e) {
  size_t i;
  buf_free(&e->out);
  for (i = 0; i < e->nblobs; i++) proto_blob_unref(e->blobs[i]);
  for (i = 0; i < e->ndeps; i++) future_unref(e->deps[i]);
  if (e->blobs != (proto_blob **)e->blobs_small) free(e->blobs);
  if (e->deps != (struct future **)e->deps_small) free(e->deps);
  if (e->objat != e->objat_small) free(e->objat);
  e->objat = e->objat_small;
  if (e->seen != e->seen_small) free(e->seen);
  e->blobs = (proto_blob **)e->blobs_small;
  e->deps = (struct future **)e->deps_small;
  e->nblobs = e->ndeps = 0;
  e->seen = e->seen_small;
}

const char *wire_error(const wire_enc *e) { return e->err; }

static size_t ptr_hash(const void *p) {
  uintptr_t x = (uintptr_t)p;
  x ^= x >> 17;
  x *= (uintptr_t)0xed5ad4bbU;
  x ^= x >> 11;
  return (size_t)x;
}

static wire_seen *seen_find(wire_enc *e, const void *key) {
  size_t mask = e->capseen - 1, i = ptr_hash(key) & mask;
  while (e->seen[i].key != NULL) {
    if (e->seen[i].key == key) return &e->seen[i];
    i = (i + 1) & mask;
  }
  return NULL;
}

static int seen_add(wire_enc *e, const void *key, size_t ordinal, size_t at) {
  size_t mask, i;
  if ((e->nseen + 1) * 4 > e->capseen * 3) {   /* keep load under 3/4 */
    size_t j, cap = e->capseen * 2;
    wire_seen *old = e->seen, *n = calloc(cap, sizeof *n);
    if (n == NULL) return -1;
    e->seen = n;
    e->capseen = cap;
    for (j = 0; j < cap / 2; j++) {
      if (old[j].key == NULL) continue;
      i = ptr_hash(old[j].key) & (cap - 1);
      while (n[i].key != NULL) i = (i + 1) & (cap - 1);
      n[i] = old[j];
    }
    if (old != e->seen_small) free(old);
  }
  mask = e->capseen - 1;
  i = ptr_hash(key) & mask;
  while (e->seen[i].key != NULL) i = (i + 1) & mask;
  e->seen[i].key = key;
  e->seen[i].ordinal = ordinal;
  e->seen[i].at = at;
  e->nseen++;
  return 0;
}

/* Marks the object whose tag is at byte `at` as referenced again. */
static void mark_refd(wire_enc *e, size_t at) {
  e->out.data[at] |= (char)W_REFD;
  e->out.data[1] |= WF_HASREFS;
}

/* Appends to an array that starts in the encoder's inline `small` slots. */
static int push_ptr(void ***arr, size_t *n, size_t *cap, void **small, void *p) {
  if (*n == *cap) {
    size_t nc = *cap * 2;
    void **a = malloc(nc * sizeof *a);
    if (a == NULL) return -1;
    memcpy(a, *arr, *n * sizeof *a);
    if (*arr != small) free(*arr);
    *arr = a;
    *cap = nc;
  }
  (*arr)[(*n)++] = p;
  return 0;
}

/* === paths in error messages ============================================= */

/* Writes a string key as a path segment: `.name` for an identifier,
 * otherwise `["..."]` with bytes outside printable ASCII escaped and long
 * keys cut, so binary keys cannot garble the message. */
static void path_string_key(char *dst, size_t cap, const char *s, size_t len) {
  size_t i, n = 0, shown = len > 24 ? 24 : len;
  int ident = len > 0 && len <= 40 && !(s[0] >= '0' && s[0] <= '9');
  for (i = 0; i < len && ident; i++)
    ident = s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
            (s[i] >= '0' && s[i] <= '9');
  if (cap == 0) return;
  if (ident) {
    snprintf(dst, cap, ".%.*s", (int)len, s);
    return;
  }
  n = (size_t)snprintf(dst, cap, "[\"");
  for (i = 0; i < shown && n + 8 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      dst[n++] = (char)c;
    else
      n += (size_t)snprintf(dst + n, cap - n, "\\%u", c);
  }
  dst[n < cap ? n : cap - 1] = '\0';
  snprintf(dst + strlen(dst), cap - strlen(dst), "%s\"]", shown < len ? "..." : "");
}

/* === encoder: errors with the path to the bad value ===================== */

/* Appends the path (".a.b[3]") from the keys left on the stack. */
static void path_append(wire_enc *e, char *dst, size_t cap) {
  lua_State *L = e->L;
  int i;
  size_t n = strlen(dst);
  for (i = 1; i <= e->depth && n + 1 < cap; i++) {
    int k = e->pathidx[i];
    const char *s;
    if (k == 0) continue;
    if (k < 0) {       /* upvalue n of the function at index -k / 256 */
      s = lua_getupvalue(L, -k / 256, -k % 256);
      if (s) lua_pop(L, 1);
      n += (size_t)snprintf(dst + n, cap - n, " upvalue '%s'", s ? s : "?");
    } else if (lua_type(L, k) == LUA_TSTRING) {
      size_t len;
      const char *key = lua_tolstring(L, k, &len);
      path_string_key(dst + n, cap - n, key, len);
      n += strlen(dst + n);
    } else if (lua_isinteger(L, k)) {
      n += (size_t)snprintf(dst + n, cap - n, "[%lld]", (long long)lua_tointeger(L, k));
    } else {
      n += (size_t)snprintf(dst + n, cap - n, "[%s]", luaL_typename(L, k));
    }
    if (n >= cap) { n = cap - 1; break; }
    if (i > 8 && e->depth > 16 && i < e->depth - 4) {   /* elide the middle */
      n += (size_t)snprintf(dst + n, cap - n, "...");
      if (n >= cap) n = cap - 1;
      i = e->depth - 4;
    }
  }
}

/* Sets the error: "argument 2 .config.handle: userdata",
 * "function upvalue 'h': userdata". */
static int enc_fail(wire_enc *e, const char *fmt, ...) {
  char what[200], path[300] = "";
  const char *sep;
  va_list ap;
  int n;
  if (e->err[0]) return -1;   /* keep the innermost message */
  path_append(e, path, sizeof path);
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  sep = path[0] == '.' || path[0] == '[' ? " " : "";
  if (e->argno > 0)
    n = snprintf(e->err, sizeof e->err, "%s %d%s%s: %s", e->what, e->argno,
                 sep, path, what);
  else
    n = snprintf(e->err, sizeof e->err, "%s%s%s: %s", e->what, sep, path, what);
  /* A long path and a long message can overflow err: end a cut message
   * with "..." so it does not read as complete. */
  if (n < 0 || (size_t)n >= sizeof e->err)
    memcpy(e->err + sizeof e->err - 4, "...", 4);
  return -1;
}

static int enc_oom(wire_enc *e) { return enc_fail(e, "out of memory"); }

/* === encoder: values ===================================================== */

static int put_value(wire_enc *e, int idx);

static int put_u64(wire_enc *e, int tag, uint64_t v) {
  unsigned char b[9];
  int i;
  b[0] = (unsigned char)tag;
  for (i = 0; i < 8; i++) b[1 + i] = (unsigned char)(v >> (8 * i));
  return buf_put(&e->out, b, 9) ? enc_oom(e) : 0;
}

static int put_str(wire_enc *e, int tag, const char *s, size_t n) {
  if (buf_putc(&e->out, tag) || buf_putvar(&e->out, n) || buf_put(&e->out, s, n))
    return enc_oom(e);
  return 0;
}

/* Emits REF if the object was seen; else registers it.  Returns 1 when a
 * REF was written, 0 when the caller must write the object, -1 on error. */
static int put_seen(wire_enc *e, const void *p) {
  wire_seen *s = seen_find(e, p);
  if (s) {
    mark_refd(e, s->at);
    if (buf_putc(&e->out, W_REF) || buf_putvar(&e->out, s->ordinal)) return enc_oom(e);
    return 1;
  }
  if (seen_add(e, p, e->nobjects, e->out.len)) return enc_oom(e);
  if (e->nobjects == e->capobjat) {
    size_t nc = e->capobjat * 2;
    size_t *a = malloc(nc * sizeof *a);
    if (a == NULL) return enc_oom(e);
    memcpy(a, e->objat, e->capobjat * sizeof *a);
    if (e->objat != e->objat_small) free(e->objat);
    e->objat = a;
    e->capobjat = nc;
  }
  e->objat[e->nobjects++] = e->out.len;
  return 0;
}

/* A table's array section is the run of keys 1, 2, 3... that lua_next
 * yields first (Lua visits the array part first, in order).  A short gap of
 * nils is carried as nils so that `#t` survives; a key that breaks the run
 * (not the next integer, or past a gap as long as what came before) ends the
 * section, and it and every later key travel as key-value pairs.  One
 * traversal visits every key exactly once, whatever the table's layout: the
 * array and hash parts, holes, or integer keys that live in the hash part.
 * (Resuming lua_next from the border, as weft once did, skips the hash
 * entries before the border's key when that key lives in the hash part.) */
static int array_extends(lua_State *L, int key, lua_Unsigned narr) {
  lua_Integer k;
  if (!lua_isinteger(L, key) || narr >= WIRE_MAX_ARRAY) return 0;
  k = lua_tointeger(L, key);
  return k > 0 && (lua_Unsigned)k > narr &&
         (lua_Unsigned)k - narr - 1 <= narr / 2 + 8 &&
         (lua_Unsigned)k <= WIRE_MAX_ARRAY;
}

/* The size of the array section is known only after the traversal: it is
 * written as a 5-byte LEB128 (padded with continuation bits, which the
 * decoder reads like any other size) and filled in at the end.  A table
 * whose first key is not 1 has no array section, and a 1-byte 0. */
static void patch_size5(char *at, uint32_t v) {
  int i;
  for (i = 0; i < 4; i++) at[i] = (char)((v >> (7 * i)) & 0x7f) | (char)0x80;
  at[4] = (char)(v >> 28);
}

static int put_table_entries(wire_enc *e, int idx) {
  lua_State *L = e->L;
  lua_Unsigned narr = 0;
  uint32_t nhash = 0;
  size_t narr_at = 0, nhash_at;
  int has_next, in_array;
  luaL_checkstack(L, 6, "weft: copying a table");
  lua_pushnil(L);
  has_next = lua_next(L, idx);
  in_array = has_next && lua_isinteger(L, -2) && lua_tointeger(L, -2) == 1;
  if (in_array) {
    if (buf_reserve(&e->out, 5)) goto oom;
    narr_at = e->out.len;
    e->out.len += 5;
  } else if (buf_putc(&e->out, 0)) {
    goto oom;
  }
  if (buf_reserve(&e->out, 4)) goto oom;
  nhash_at = e->out.len;
  e->out.len += 4;
  for (; has_next; has_next = lua_next(L, idx)) {
    e->pathidx[e->depth] = lua_gettop(L) - 1;
    if (in_array && array_extends(L, -2, narr)) {
      lua_Unsigned k = (lua_Unsigned)lua_tointeger(L, -2);
      for (; narr + 1 < k; narr++)   /* a short run of nils */
        if (buf_putc(&e->out, W_NIL)) goto oom_pop;
      if (put_value(e, -1)) { lua_pop(L, 2); return -1; }
      narr = k;
    } else {
      in_array = 0;
      if (put_value(e, -2) || put_value(e, -1)) { lua_pop(L, 2); return -1; }
      if (++nhash == UINT32_MAX) { lua_pop(L, 2); return enc_fail(e, "table too large"); }
    }
    lua_pop(L, 1);
  }
  if (narr_at) patch_size5(e->out.data + narr_at, (uint32_t)narr);
  for (int i = 0; i < 4; i++) e->out.data[nhash_at + i] = (char)(nhash >> (8 * i));
  return 0;
oom_pop:
  lua_pop(L, 2);
  return enc_oom(e);
oom:
  if (has_next) lua_pop(L, 2);
  return enc_oom(e);
}

static int put_table(wire_enc *e, int idx) {
  lua_State *L = e->L;
  int r = put_seen(e, lua_topointer(L, idx)), tag = W_TABLE;
  if (r) return r < 0 ? -1 : 0;
  if (lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &wire_task_mt);
    if (lua_rawequal(L, -1, -2)) {
      tag = W_TASK;
    } else if (type_name_of(L, -2)) {   /* a registered type: its name */
      size_t len;
      const char *name = lua_tolstring(L, -1, &len);
      tag = W_OBJECT;
      r = put_str(e, W_OBJECT, name, len);
      lua_pop(L, 1);
      if (r) { lua_pop(L, 2); return -1; }
    }
    lua_pop(L, 2);
  }
  if (tag != W_OBJECT && buf_putc(&e->out, (char)tag)) return enc_oom(e);
  return put_table_entries(e, idx);
}

static int put_function(wire_enc *e, int idx) {
  lua_State *L = e->L;
  proto_blob *blob;
  size_t ordinal = e->nobjects, count_at;
  int r, n;
  const char *name;
  if (lua_iscfunction(L, idx)) {
    if (revmap_name(L, idx)) {
      size_t len;
      name = lua_tolstring(L, -1, &len);
      r = put_str(e, W_CFUNC, name, len);
      lua_pop(L, 1);
      return r;
    }
    return enc_fail(e, "C function (only the standard library's C functions can be copied)");
  }
  if ((r = put_seen(e, lua_topointer(L, idx))) != 0) return r < 0 ? -1 : 0;
  blob = proto_blob_of(L, idx);
  if (blob == NULL) return enc_oom(e);
  /* the upvalue count (at most 255) is patched in once we have walked them */
  if (buf_putc(&e->out, W_FUNC) || buf_putc(&e->out, 0)) return enc_oom(e);
  count_at = e->out.len - 1;
  if (e->self_contained) {
    if (buf_putc(&e->out, 1) || buf_putvar(&e->out, blob->len) ||
        buf_put(&e->out, blob->code, blob->len))
      return enc_oom(e);
  } else {
    if (buf_putc(&e->out, 0) || buf_put(&e->out, &blob, sizeof blob))
      return enc_oom(e);
    if (e->keep) {
      if (proto_keep_add(e->keep, blob)) return enc_oom(e);
    } else {
      if (push_ptr((void ***)&e->blobs, &e->nblobs, &e->capblobs, e->blobs_small, blob))
        return enc_oom(e);
      proto_blob_ref(blob);
    }
  }
  luaL_checkstack(L, 4, "weft: copying a function");
  for (n = 1; (name = lua_getupvalue(L, idx, n)) != NULL; n++) {
    void *cell = lua_upvalueid(L, idx, n);
    wire_seen *s;
    if (strcmp(name, "_ENV") == 0) {
      lua_pop(L, 1);
      if (buf_putc(&e->out, W_ENV)) return enc_oom(e);
      continue;
    }
    if ((s = seen_find(e, cell)) != NULL) {   /* a cell another function has */
      lua_pop(L, 1);
      mark_refd(e, e->objat[s->ordinal]);
      if (buf_putc(&e->out, W_UPREF) || buf_putvar(&e->out, s->ordinal) ||
          buf_putvar(&e->out, s->at))
        return enc_oom(e);
      continue;
    }
    if (seen_add(e, cell, ordinal, (size_t)n)) { lua_pop(L, 1); return enc_oom(e); }
    e->pathidx[e->depth] = -(idx * 256 + n);
    r = put_value(e, -1);
    lua_pop(L, 1);
    if (r) return -1;
  }
  e->out.data[count_at] = (char)(n - 1);
  return 0;
}

static int put_value(wire_enc *e, int idx) {
  lua_State *L = e->L;
  int r;
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return buf_putc(&e->out, W_NIL) ? enc_oom(e) : 0;
    case LUA_TBOOLEAN:
      return buf_putc(&e->out, lua_toboolean(L, idx) ? W_TRUE : W_FALSE) ? enc_oom(e) : 0;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        return put_u64(e, W_INT, (uint64_t)lua_tointeger(L, idx));
      {
        lua_Number d = lua_tonumber(L, idx);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        return put_u64(e, W_FLOAT, bits);
      }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return put_str(e, W_STR, s, n);
    }
    case LUA_TTABLE:
    case LUA_TFUNCTION:
      if (e->depth >= WIRE_MAX_DEPTH)
        return enc_fail(e, "nested deeper than %d levels", WIRE_MAX_DEPTH);
      if (lua_istable(L, idx) && revmap_name(L, idx)) {
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        r = put_str(e, W_MODULE, name, len);
        lua_pop(L, 1);
        return r;
      }
      e->depth++;
      e->pathidx[e->depth] = 0;
      r = lua_istable(L, idx) ? put_table(e, idx) : put_function(e, idx);
      e->depth--;
      return r;
    case LUA_TUSERDATA: {
      future *f = future_check(L, idx);
      size_t i;
      if (f == NULL) return enc_fail(e, "userdata");
      if (!e->allow_futures)
        return enc_fail(e, "future (a future can only be passed as a task argument)");
      for (i = 0; i < e->ndeps && e->deps[i] != f; i++) {}
      if (i == e->ndeps) {
        if (push_ptr((void ***)&e->deps, &e->ndeps, &e->capdeps, e->deps_small, f))
          return enc_oom(e);
        future_ref(f);
      }
      if (buf_putc(&e->out, W_DEP) || buf_putvar(&e->out, i)) return enc_oom(e);
      return 0;
    }
    case LUA_TTHREAD:
      return enc_fail(e, "coroutine");
    case LUA_TLIGHTUSERDATA:
      return enc_fail(e, "light userdata");
    default:
      return enc_fail(e, "%s", luaL_typename(L, idx));
  }
}

int wire_put(wire_enc *e, int idx, const char *what, int argno) {
  e->what = what;
  e->argno = argno;
  e->depth = 0;
  return put_value(e, idx);
}

int wire_put_size(wire_enc *e, size_t n) {
  return buf_putvar(&e->out, n) ? enc_oom(e) : 0;
}

int wire_put_byte(wire_enc *e, int c) {
  return buf_putc(&e->out, c) ? enc_oom(e) : 0;
}

int wire_encode_tuple(wire_enc *e, int first, int n, const char *what) {
  int i;
  first = lua_absindex(e->L, first);
  if (wire_put_size(e, (size_t)n)) return -1;
  for (i = 0; i < n; i++)
    if (wire_put(e, first + i, what, i + 1)) return -1;
  return 0;
}

static void record_field(buf *b, const char *key, const char *value, int *fails) {
  size_t k = strlen(key), v = strlen(value);
  *fails |= buf_putc(b, W_STR) | buf_putvar(b, k) | buf_put(b, key, k);
  *fails |= buf_putc(b, W_STR) | buf_putvar(b, v) | buf_put(b, value, v);
}

char *wire_record(const char *kind, const char *message, const char *task,
                  size_t *len) {
  buf b = BUF_INIT;
  uint32_t nhash = task ? 3 : 2;
  unsigned char count[4] = {(unsigned char)nhash, 0, 0, 0};
  int fails = buf_putc(&b, WIRE_VERSION) | buf_putc(&b, 0) | buf_putvar(&b, 1) |
              buf_putc(&b, W_TABLE) | buf_putvar(&b, 0) | buf_put(&b, count, 4);
  record_field(&b, "kind", kind, &fails);
  record_field(&b, "message", message, &fails);
  if (task) record_field(&b, "task", task, &fails);
  if (fails) {
    buf_free(&b);
    return NULL;
  }
  return buf_steal(&b, len);
}

/* === decoder ============================================================= */

static int dec_fail(wire_dec *d, const char *msg) {
  if (!d->err) d->err = d->reason = msg;
  return -1;
}

/* As a failure unwinds through the tables and functions around the bad
 * value, each one puts its key in front of the path, so the message ends
 * up as ".items[3]: type 'Point' is not registered here".  Only failures
 * pay for this. */
static void dec_path_prepend(wire_dec *d, const char *seg) {
  size_t n = strlen(seg), have = strlen(d->path);
  if (d->reason == NULL) return;
  if (have + n >= sizeof d->path) return;   /* keep the innermost part */
  memmove(d->path + n, d->path, have + 1);
  memcpy(d->path, seg, n);
  snprintf(d->errbuf, sizeof d->errbuf, "%s: %s", d->path, d->reason);
  d->err = d->errbuf;
}

/* The key at `key` as a path segment: ".name", "[3]", "[true]". */
static void dec_path_key(wire_dec *d, lua_State *L, int key) {
  char seg[80];
  if (lua_type(L, key) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, key, &len);
    path_string_key(seg, sizeof seg, s, len);
  } else if (lua_isinteger(L, key))
    snprintf(seg, sizeof seg, "[%lld]", (long long)lua_tointeger(L, key));
  else if (lua_type(L, key) == LUA_TNUMBER)
    snprintf(seg, sizeof seg, "[%.17g]", lua_tonumber(L, key));
  else if (lua_type(L, key) == LUA_TBOOLEAN)
    snprintf(seg, sizeof seg, "[%s]", lua_toboolean(L, key) ? "true" : "false");
  else
    snprintf(seg, sizeof seg, "[%s]", luaL_typename(L, key));
  dec_path_prepend(d, seg);
}

static void dec_path_index(wire_dec *d, size_t i) {
  char seg[32];
  snprintf(seg, sizeof seg, "[%zu]", i);
  dec_path_prepend(d, seg);
}

int wire_get_byte(wire_dec *d, int *c) {
  if (d->p >= d->end) return dec_fail(d, "truncated message");
  *c = *d->p++;
  return 0;
}

int wire_get_size(wire_dec *d, size_t *n) {
  uint64_t x = 0;
  int shift = 0, b;
  do {
    if (d->p >= d->end) return dec_fail(d, "truncated message");
    if (shift > 63) return dec_fail(d, "bad size in message");
    b = *d->p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    shift += 7;
  } while (b & 0x80);
  if (x > SIZE_MAX) return dec_fail(d, "bad size in message");
  *n = (size_t)x;
  return 0;
}

static int get_u64(wire_dec *d, uint64_t *v) {
  int i;
  if (d->end - d->p < 8) return dec_fail(d, "truncated message");
  *v = 0;
  for (i = 0; i < 8; i++) *v |= (uint64_t)d->p[i] << (8 * i);
  d->p += 8;
  return 0;
}

static int get_bytes(wire_dec *d, const char **s, size_t *n) {
  if (wire_get_size(d, n)) return -1;
  if ((size_t)(d->end - d->p) < *n) return dec_fail(d, "truncated message");
  *s = (const char *)d->p;
  d->p += *n;
  return 0;
}

static void dec_register(wire_dec *d, lua_State *L, int refd) {
  size_t ordinal = d->nobjects++;
  if (refd) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->refs, (lua_Integer)ordinal + 1);
  }
}

static int get_value(wire_dec *d, lua_State *L);

static int get_table(wire_dec *d, lua_State *L, int refd) {
  size_t narr, i, remaining;
  uint32_t nhash = 0;
  int t;
  if (wire_get_size(d, &narr)) return -1;
  if (d->end - d->p < 4) return dec_fail(d, "truncated message");
  for (i = 0; i < 4; i++) nhash |= (uint32_t)d->p[i] << (8 * i);
  d->p += 4;
  remaining = (size_t)(d->end - d->p);
  /* every element takes at least one byte: refuse sizes the data can't hold */
  if (narr > remaining || nhash > remaining / 2 || narr > WIRE_MAX_ARRAY)
    return dec_fail(d, "bad table size in message");
  lua_createtable(L, (int)narr, (int)nhash);
  t = lua_gettop(L);
  dec_register(d, L, refd);
  for (i = 1; i <= narr; i++) {
    if (get_value(d, L)) {
      dec_path_index(d, i);
      lua_settop(L, t - 1);
      return -1;
    }
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (i = 0; i < nhash; i++) {
    if (get_value(d, L)) { lua_settop(L, t - 1); return -1; }
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))) {
      lua_settop(L, t - 1);
      return dec_fail(d, "bad table key in message");
    }
    if (get_value(d, L)) {
      dec_path_key(d, L, -1);
      lua_settop(L, t - 1);
      return -1;
    }
    lua_rawset(L, t);
  }
  return 0;
}

/* OBJECT: the table gets the metatable this state registered under the
 * name.  A name weft itself registers (weft.Error) may need weft's Lua
 * layer loaded first, as a task does. */
static int get_object(wire_dec *d, lua_State *L, int refd) {
  const char *name;
  size_t len;
  if (get_bytes(d, &name, &len)) return -1;
  if (!type_lookup(L, name, len)) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "weft");
    if (!lua_isfunction(L, -2) || lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
    if (!type_lookup(L, name, len)) {
      snprintf(d->typebuf, sizeof d->typebuf,
               "type '%.*s' is not registered here (call weft.register('%.*s', mt) "
               "in this state too: for a pool, in its init)",
               (int)(len > 60 ? 60 : len), name, (int)(len > 60 ? 60 : len), name);
      return dec_fail(d, d->typebuf);
    }
  }
  if (get_table(d, L, refd)) { lua_pop(L, 1); return -1; }
  lua_insert(L, -2);
  lua_setmetatable(L, -2);
  return 0;
}

/* The table at the top becomes a weft.task here too: weft's Lua layer,
 * loaded on first need, registers the metatable.  Without it the table
 * stays plain (calling it then fails with Lua's own message). */
static void set_task_metatable(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &wire_task_mt) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "weft");
    if (!lua_isfunction(L, -2) || lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &wire_task_mt);
  }
  if (lua_istable(L, -1)) lua_setmetatable(L, -2); else lua_pop(L, 1);
}

static int get_function(wire_dec *d, lua_State *L, int refd) {
  size_t i, nup;
  int kind, f, nupb;
  if (wire_get_byte(d, &nupb) || wire_get_byte(d, &kind)) return -1;
  nup = (size_t)nupb;
  if (kind == 0) {
    proto_blob *blob;
    if (!d->trusted) return dec_fail(d, "in-process function in an outside message");
    if (d->end - d->p < (ptrdiff_t)sizeof blob) return dec_fail(d, "truncated message");
    memcpy(&blob, d->p, sizeof blob);
    d->p += sizeof blob;
    if (proto_instantiate(L, blob, blob->code, blob->len)) {
      lua_pop(L, 1);
      return dec_fail(d, "cannot load a function's bytecode");
    }
  } else if (kind == 1) {
    const char *code;
    size_t len;
    if (get_bytes(d, &code, &len)) return -1;
    if (proto_instantiate(L, NULL, code, len)) {
      lua_pop(L, 1);
      return dec_fail(d, "cannot load a function's bytecode");
    }
  } else {
    return dec_fail(d, "bad function in message");
  }
  f = lua_gettop(L);
  /* the prototype must have exactly nup upvalues */
  if ((nup > 0 && lua_getupvalue(L, f, (int)nup) == NULL) ||
      (nup > 0 && (lua_pop(L, 1), 0)) || lua_getupvalue(L, f, (int)nup + 1) != NULL) {
    lua_settop(L, f - 1);
    return dec_fail(d, "upvalue count does not match the function");
  }
  dec_register(d, L, refd);
  for (i = 1; i <= nup; i++) {
    int tag;
    if (d->p >= d->end) { lua_settop(L, f - 1); return dec_fail(d, "truncated message"); }
    tag = *d->p;
    if (tag == W_ENV) {
      d->p++;
      lua_pushglobaltable(L);
    } else if (tag == W_UPREF) {
      size_t ord, n;
      d->p++;
      if (wire_get_size(d, &ord) || wire_get_size(d, &n)) { lua_settop(L, f - 1); return -1; }
      if (d->refs == 0 || ord >= d->nobjects ||
          lua_rawgeti(L, d->refs, (lua_Integer)ord + 1) != LUA_TFUNCTION ||
          lua_iscfunction(L, -1) || n < 1 || lua_getupvalue(L, -1, (int)n) == NULL) {
        lua_settop(L, f - 1);
        return dec_fail(d, "bad shared upvalue in message");
      }
      lua_pop(L, 1);
      lua_upvaluejoin(L, f, (int)i, -1, (int)n);
      lua_pop(L, 1);
      continue;
    } else if (get_value(d, L)) {
      const char *upname = lua_getupvalue(L, f, (int)i);
      char seg[80];
      snprintf(seg, sizeof seg, " upvalue '%.60s'", upname && *upname ? upname : "?");
      dec_path_prepend(d, seg);
      lua_settop(L, f - 1);
      return -1;
    }
    lua_setupvalue(L, f, (int)i);
  }
  return 0;
}

static int get_value(wire_dec *d, lua_State *L) {
  int tag, refd, r;
  uint64_t v;
  if (wire_get_byte(d, &tag)) return -1;
  refd = tag & W_REFD;
  tag &= ~W_REFD;
  if (!lua_checkstack(L, 8)) return dec_fail(d, "message nested too deeply for the Lua stack");
  switch (tag) {
    case W_NIL: lua_pushnil(L); return 0;
    case W_FALSE: lua_pushboolean(L, 0); return 0;
    case W_TRUE: lua_pushboolean(L, 1); return 0;
    case W_INT:
      if (get_u64(d, &v)) return -1;
      lua_pushinteger(L, (lua_Integer)v);
      return 0;
    case W_FLOAT: {
      lua_Number n;
      if (get_u64(d, &v)) return -1;
      memcpy(&n, &v, sizeof n);
      lua_pushnumber(L, n);
      return 0;
    }
    case W_STR: {
      const char *s;
      size_t n;
      if (get_bytes(d, &s, &n)) return -1;
      lua_pushlstring(L, s, n);
      return 0;
    }
    case W_TABLE:
    case W_TASK:
    case W_OBJECT:
    case W_FUNC:
      if (d->depth >= WIRE_MAX_DEPTH) return dec_fail(d, "message nested too deeply");
      if (refd && d->refs == 0) return dec_fail(d, "bad reference flag in message");
      d->depth++;
      r = tag == W_FUNC     ? get_function(d, L, refd)
          : tag == W_OBJECT ? get_object(d, L, refd)
                            : get_table(d, L, refd);
      d->depth--;
      if (r == 0 && tag == W_TASK) set_task_metatable(L);
      return r;
    case W_REF: {
      size_t ord;
      if (wire_get_size(d, &ord)) return -1;
      if (d->refs == 0 || ord >= d->nobjects ||
          lua_rawgeti(L, d->refs, (lua_Integer)ord + 1) == LUA_TNIL) {
        if (d->refs != 0) lua_pop(L, 1);
        return dec_fail(d, "bad reference in message");
      }
      return 0;
    }
    case W_ENV:
      lua_pushglobaltable(L);
      return 0;
    case W_MODULE: {
      const char *s;
      size_t n;
      if (get_bytes(d, &s, &n)) return -1;
      lua_getglobal(L, "require");
      lua_pushlstring(L, s, n);
      if (!lua_isfunction(L, -2) || lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        return dec_fail(d, "a module the message refers to cannot be loaded here");
      }
      return 0;
    }
    case W_CFUNC: {
      const char *s, *dot;
      size_t n;
      if (get_bytes(d, &s, &n)) return -1;
      dot = memchr(s, '.', n);
      if (dot == NULL) return dec_fail(d, "bad C function name in message");
      lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
      lua_pushlstring(L, s, (size_t)(dot - s));
      if (lua_rawget(L, -2) != LUA_TTABLE) { lua_pop(L, 2); return dec_fail(d, "unknown library in message"); }
      lua_pushlstring(L, dot + 1, n - (size_t)(dot - s) - 1);
      if (lua_rawget(L, -2) != LUA_TFUNCTION || !lua_iscfunction(L, -1)) {
        lua_pop(L, 3);
        return dec_fail(d, "unknown C function in message");
      }
      lua_replace(L, -3);
      lua_pop(L, 1);
      return 0;
    }
    case W_DEP: {
      size_t i;
      if (wire_get_size(d, &i)) return -1;
      if (i >= d->ndeps) return dec_fail(d, "bad dependency in message");
      if (d->deps[i].data == NULL) return dec_fail(d, "dependency is not finished");
      r = wire_decode_tuple(L, d->deps[i].data, d->deps[i].len, 0, 1);
      if (r < 0) { lua_pop(L, 1); return dec_fail(d, "a dependency's result cannot be decoded"); }
      if (r == 0) lua_pushnil(L);
      return 0;
    }
    default:
      return dec_fail(d, "unknown value tag in message");
  }
}

int wire_dec_init(wire_dec *d, lua_State *L, const char *data, size_t len,
                  int trusted) {
  memset(d, 0, offsetof(wire_dec, path));   /* the buffers are set on failure */
  d->path[0] = '\0';
  d->p = (const unsigned char *)data;
  d->end = d->p + len;
  d->trusted = trusted;
  if (len < 2 || d->p[0] != WIRE_VERSION || (d->p[1] & ~WF_HASREFS)) {
    lua_pushnil(L);
    return dec_fail(d, len < 2 ? "truncated message" : "unknown message version");
  }
  if (d->p[1] & WF_HASREFS) {
    lua_newtable(L);
    d->refs = lua_gettop(L);
  } else {
    lua_pushnil(L);
  }
  d->p += 2;
  return 0;
}

int wire_get(wire_dec *d, lua_State *L) { return get_value(d, L); }

int wire_decode_tuple(lua_State *L, const char *data, size_t len, int trusted,
                      int max) {
  wire_dec d;
  size_t n, i;
  int base = lua_gettop(L);
  if (wire_dec_init(&d, L, data, len, trusted) || wire_get_size(&d, &n)) goto fail;
  if (n > (size_t)(d.end - d.p)) { dec_fail(&d, "bad value count in message"); goto fail; }
  for (i = 0; i < n; i++) {
    if (max > 0 && i >= (size_t)max) break;
    if (get_value(&d, L)) {
      if (n > 1) {
        char seg[40];
        snprintf(seg, sizeof seg, "value %zu", i + 1);
        dec_path_prepend(&d, seg);
      }
      goto fail;
    }
  }
  if (max <= 0 && d.p != d.end) { dec_fail(&d, "trailing bytes in message"); goto fail; }
  lua_remove(L, base + 1);      /* the reference table */
  return lua_gettop(L) - base;
fail:
  lua_settop(L, base);
  lua_pushstring(L, d.err ? d.err : "bad message");
  return -1;
}
