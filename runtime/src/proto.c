/*
 * proto.c -- prototype caches on both sides of a message.
 *
 * Why: a Lua function travels as its bytecode plus its upvalues.  lua_dump
 * costs ~0.2 us and lua_load ~2 us for a tiny closure, more than everything
 * else a trivial task costs together, and a loop that submits
 * `function() return x end` makes a new closure (of the same prototype) on
 * every iteration.  So both sides cache per PROTOTYPE:
 *
 *   - The sender keys its cache by the closure's Proto pointer, read from the
 *     closure object.  Lua has no API for it, so proto_open() verifies the
 *     layout on live closures first and, if anything looks different, falls
 *     back to keying by the dumped bytes (correct, but pays lua_dump).  The
 *     cache holds one closure of each prototype, so a cached Proto pointer
 *     can never be freed and reused by another prototype.
 *
 *   - The receiver must produce a NEW closure per message (a task may keep
 *     the function it was given; two closures of one prototype may arrive in
 *     one message), which only lua_load or the CLOSURE instruction can do.
 *     We use CLOSURE: once per prototype we splice the function's dumped
 *     prototype into a compiled template chunk
 *
 *         local u1, ..., un  return function() return u1, ..., un end
 *
 *     in place of the inner function, and rewrite the spliced prototype's
 *     upvalue descriptors to capture the template's locals u1..un.  Loading
 *     the result gives a "factory": each call runs CLOSURE and returns a new
 *     closure with fresh upvalue cells, which the decoder then fills.  If
 *     the splice is refused (more than 200 upvalues, unexpected format) we
 *     fall back to lua_load per instance.
 */
#include "proto.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* Registry keys (their addresses are the keys). */
static const char SEND_CACHE = 's';   /* Proto ptr -> holder (blob, closure) */
static const char RECV_CACHE = 'r';   /* blob ptr or code string -> factory */
static const char RECV_HOLDS = 'h';   /* list of holders keeping blobs alive */
static const char SEND_BYTES = 'b';   /* the same, keyed by bytes (fallback) */

#define HOLDER_MT "weft.protohold"

/* === blobs =============================================================== */

void proto_blob_ref(proto_blob *b) {
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void proto_blob_unref(proto_blob *b) {
  if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
    free(b);
}

static int holder_gc(lua_State *L) {
  proto_blob **h = luaL_checkudata(L, 1, HOLDER_MT);
  proto_blob_unref(*h);
  *h = NULL;
  return 0;
}

/* Pushes a userdata owning one reference to `b`. */
static void push_holder(lua_State *L, proto_blob *b) {
  proto_blob **h = lua_newuserdatauv(L, sizeof *h, 1);
  *h = b;
  luaL_setmetatable(L, HOLDER_MT);
}

/* === keep-alive sets ==================================================== */

static size_t blob_slot(const proto_keep *k, const proto_blob *b) {
  uintptr_t x = (uintptr_t)b >> 4;
  return (size_t)(x * 0x9E3779B97F4A7C15ull) & (k->cap - 1);
}

int proto_keep_add(proto_keep *k, proto_blob *b) {
  size_t i;
  if (k->last == b) return 0;
  if (k->cap) {
    for (i = blob_slot(k, b); k->slots[i]; i = (i + 1) & (k->cap - 1))
      if (k->slots[i] == b) {
        k->last = b;
        return 0;
      }
  }
  if ((k->n + 1) * 2 > k->cap) {   /* grow: load stays under 1/2 */
    proto_keep bigger = {NULL, 0, k->cap ? k->cap * 2 : 16, NULL};
    size_t j;
    bigger.slots = calloc(bigger.cap, sizeof *bigger.slots);
    if (bigger.slots == NULL) return -1;
    for (j = 0; j < k->cap; j++) {
      if (!k->slots[j]) continue;
      for (i = blob_slot(&bigger, k->slots[j]); bigger.slots[i]; i = (i + 1) & (bigger.cap - 1)) {}
      bigger.slots[i] = k->slots[j];
    }
    free(k->slots);
    k->slots = bigger.slots;
    k->cap = bigger.cap;
  }
  for (i = blob_slot(k, b); k->slots[i]; i = (i + 1) & (k->cap - 1)) {}
  k->slots[i] = b;
  k->n++;
  k->last = b;
  proto_blob_ref(b);
  return 0;
}

void proto_keep_free(proto_keep *k) {
  size_t i;
  for (i = 0; i < k->cap; i++) proto_blob_unref(k->slots[i]);
  free(k->slots);
  memset(k, 0, sizeof *k);
}

/* === the Proto pointer of a closure ====================================== */

/* The head of Lua 5.4's LClosure (lobject.h); checked in peek_selftest. */
struct lclosure_head {
  void *next;
  unsigned char tt, marked, nupvalues;
  void *gclist;
  const void *p;
};

#define LUA_VLCL_TAG 0x06   /* LUA_TFUNCTION | (0 << 4) */
#define LUA_VPROTO_TAG 0x0a /* LUA_NUMTYPES + 1 */

static const void *closure_proto(lua_State *L, int idx) {
  const struct lclosure_head *cl = lua_topointer(L, idx);
  return cl->p;
}

static int looks_like_lclosure(lua_State *L, int idx) {
  const struct lclosure_head *cl = lua_topointer(L, idx);
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  return cl->tt == LUA_VLCL_TAG && cl->nupvalues == ar.nups && cl->p != NULL &&
         ((const struct lclosure_head *)cl->p)->tt == LUA_VPROTO_TAG;
}

static int peek_selftest(lua_State *L) {
  int ok, top = lua_gettop(L);
  const char *src =
      "local function mk(a) return function() return a end end\n"
      "return mk(1), mk(2), function() end, mk";
  if (luaL_loadstring(L, src) != LUA_OK || lua_pcall(L, 0, 4, 0) != LUA_OK) {
    lua_settop(L, top);
    return 0;
  }
  ok = looks_like_lclosure(L, -4) && looks_like_lclosure(L, -3) &&
       looks_like_lclosure(L, -2) && looks_like_lclosure(L, -1) &&
       closure_proto(L, -4) == closure_proto(L, -3) &&
       closure_proto(L, -4) != closure_proto(L, -2) &&
       closure_proto(L, -2) != closure_proto(L, -1);
  lua_settop(L, top);
  return ok;
}

/* === sending side ======================================================== */

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  return buf_put(ud, p, n);
}

/* Dumps the function at the top of the stack into a new blob. */
static proto_blob *dump_blob(lua_State *L) {
  buf b = BUF_INIT;
  proto_blob *blob = NULL;
  if (lua_dump(L, dump_writer, &b, 0) == 0 &&
      (blob = malloc(sizeof *blob + b.len)) != NULL) {
    atomic_init(&blob->refs, 1);
    blob->len = b.len;
    memcpy(blob->code, b.data, b.len);
  }
  buf_free(&b);
  return blob;
}

proto_blob *proto_blob_of(lua_State *L, int idx) {
  proto_blob *blob;
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &SEND_CACHE) == LUA_TTABLE) {
    /* Keyed by the Proto pointer (verified usable by proto_open). */
    const void *key = closure_proto(L, idx);
    if (lua_rawgetp(L, -1, key) == LUA_TUSERDATA) {
      blob = *(proto_blob **)lua_touserdata(L, -1);
      lua_pop(L, 2);
      return blob;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    blob = dump_blob(L);
    lua_pop(L, 1);
    if (blob == NULL) { lua_pop(L, 1); return NULL; }
    push_holder(L, blob);
    lua_pushvalue(L, idx);        /* keeps the Proto alive with its key */
    lua_setiuservalue(L, -2, 1);
    lua_rawsetp(L, -2, key);
    lua_pop(L, 1);
    return blob;
  }
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &SEND_BYTES) != LUA_TTABLE) {
    lua_pop(L, 1);
    proto_open(L);
    return proto_blob_of(L, idx);
  }
  /* Fallback: keyed by the bytes (pays lua_dump every time, not lua_load). */
  lua_pushvalue(L, idx);
  blob = dump_blob(L);
  lua_pop(L, 1);
  if (blob == NULL) { lua_pop(L, 1); return NULL; }
  lua_pushlstring(L, blob->code, blob->len);
  if (lua_rawget(L, -2) == LUA_TUSERDATA) {
    proto_blob_unref(blob);
    blob = *(proto_blob **)lua_touserdata(L, -1);
    lua_pop(L, 2);
    return blob;
  }
  lua_pop(L, 1);
  lua_pushlstring(L, blob->code, blob->len);
  push_holder(L, blob);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return blob;
}

/* === reading a dump (lundump.c's format, Lua 5.4) ======================== */

typedef struct reader {
  const unsigned char *p, *end;
  int bad;
} reader;

static size_t rd_size(reader *r) {
  size_t x = 0;
  int b;
  do {
    if (r->p >= r->end || x > (SIZE_MAX >> 7)) { r->bad = 1; return 0; }
    b = *r->p++;
    x = (x << 7) | (size_t)(b & 0x7f);
  } while ((b & 0x80) == 0);
  return x;
}

static void rd_skip(reader *r, size_t n, size_t each) {
  if (each && n > (size_t)(r->end - r->p) / each) {
    r->bad = 1;
    r->p = r->end;
  } else {
    r->p += n * each;
  }
}

static void rd_string(reader *r) {
  size_t n = rd_size(r);
  if (n > 0) rd_skip(r, n - 1, 1);
}

/* Walks one prototype; stores where its upvalue descriptors start. */
static void rd_proto(reader *r, const unsigned char **upvals, size_t *nupvals,
                     int depth) {
  size_t i, n, nup;
  if (depth > 200) { r->bad = 1; return; }
  rd_string(r);                   /* source */
  rd_size(r);                     /* linedefined */
  rd_size(r);                     /* lastlinedefined */
  rd_skip(r, 3, 1);               /* numparams, is_vararg, maxstacksize */
  rd_skip(r, rd_size(r), 4);      /* code */
  n = rd_size(r);                 /* constants */
  for (i = 0; i < n && !r->bad; i++) {
    int tag = r->p < r->end ? *r->p++ : (r->bad = 1, 0);
    switch (tag) {
      case 0x00: case 0x01: case 0x11: break;          /* nil, false, true */
      case 0x03: case 0x13: rd_skip(r, 8, 1); break;   /* integer, float */
      case 0x04: case 0x14: rd_string(r); break;       /* strings */
      default: r->bad = 1;
    }
  }
  nup = rd_size(r);               /* upvalues: instack, idx, kind */
  if (upvals) { *upvals = r->p; *nupvals = nup; }
  rd_skip(r, nup, 3);
  n = rd_size(r);                 /* nested prototypes */
  for (i = 0; i < n && !r->bad; i++) rd_proto(r, NULL, NULL, depth + 1);
  rd_skip(r, rd_size(r), 1);      /* lineinfo */
  n = rd_size(r);                 /* abslineinfo: pc, line */
  for (i = 0; i < n && !r->bad; i++) { rd_size(r); rd_size(r); }
  n = rd_size(r);                 /* locvars: name, startpc, endpc */
  for (i = 0; i < n && !r->bad; i++) { rd_string(r); rd_size(r); rd_size(r); }
  /* Upvalue names: none (stripped) or one per upvalue, as lua_dump writes
   * them.  Lua 5.4.4's loader stores as many names as the dump says into
   * the upvalue array without checking its size: more would be written
   * past its end. */
  n = rd_size(r);
  if (n != 0 && n != nup) r->bad = 1;
  for (i = 0; i < n && !r->bad; i++) rd_string(r);
}

/* Skips the header (signature ... LUAC_NUM) and the main upvalue count. */
#define DUMP_HEADER 31

/* === receiving side ====================================================== */

/* Compiles `local u1..un return function() return u1..un end` and appends
 * its stripped dump to `out`. */
static int template_dump(lua_State *L, size_t n, buf *out) {
  buf src = BUF_INIT;
  char name[24];
  size_t i;
  int rc = 0;
  for (i = 1; i <= n && rc == 0; i++) {
    snprintf(name, sizeof name, "%su%zu", i == 1 ? "local " : ",", i);
    rc |= buf_put(&src, name, strlen(name));
  }
  {
    static const char mid[] = " return function() return ";
    rc |= buf_put(&src, mid, sizeof mid - 1);
  }
  for (i = 1; i <= n && rc == 0; i++) {
    snprintf(name, sizeof name, "%su%zu", i == 1 ? "" : ",", i);
    rc |= buf_put(&src, name, strlen(name));
  }
  rc |= buf_put(&src, " end", 4);
  if (rc == 0 && luaL_loadbuffer(L, src.data, src.len, "=weft") == LUA_OK) {
    rc = lua_dump(L, dump_writer, out, 1) != 0;
    lua_pop(L, 1);
  } else {
    if (rc == 0) lua_pop(L, 1);
    rc = -1;
  }
  buf_free(&src);
  return rc;
}

/* Pushes a factory for `code`.  Returns -1 (nothing pushed) when the splice
 * does not apply and the caller may fall back to lua_load, and -2 when the
 * dump is malformed: lua_load does not check that a binary chunk is
 * consistent (a closure sized by the header's upvalue count but a
 * prototype with more would be read out of bounds), so such bytes must
 * never reach it. */
static int build_factory(lua_State *L, const char *code, size_t len) {
  reader r = {(const unsigned char *)code, (const unsigned char *)code + len, 0};
  reader t;
  const unsigned char *fup, *inner, *inner_end;
  size_t nup, i, fstart = DUMP_HEADER + 1;
  buf tpl = BUF_INIT, out = BUF_INIT;
  int rc = -1;

  if (len <= fstart) return -2;
  r.p += fstart;
  rd_proto(&r, &fup, &nup, 0);
  if (r.bad || r.p != r.end || nup != (unsigned char)code[DUMP_HEADER]) return -2;
  if (nup > 200 || template_dump(L, nup, &tpl) != 0 || tpl.len <= fstart)
    goto done;
  if (memcmp(tpl.data, code, DUMP_HEADER) != 0) {   /* another Lua build */
    rc = -2;
    goto done;
  }
  /* Walk the template's main function up to its one nested prototype. */
  t.p = (const unsigned char *)tpl.data + fstart;
  t.end = (const unsigned char *)tpl.data + tpl.len;
  t.bad = 0;
  rd_string(&t);                       /* source (stripped) */
  rd_size(&t);
  rd_size(&t);
  rd_skip(&t, 3, 1);
  rd_skip(&t, rd_size(&t), 4);         /* code */
  if (rd_size(&t) != 0) t.bad = 1;     /* no constants */
  rd_skip(&t, rd_size(&t), 3);         /* upvalues (_ENV) */
  if (rd_size(&t) != 1) t.bad = 1;     /* exactly one nested function */
  inner = t.p;
  rd_proto(&t, NULL, NULL, 0);
  inner_end = t.p;
  if (t.bad) goto done;

  /* template up to the inner function + our function + template's rest */
  if (buf_put(&out, tpl.data, (size_t)(inner - (const unsigned char *)tpl.data)) ||
      buf_put(&out, code + fstart, len - fstart) ||
      buf_put(&out, inner_end, (size_t)(t.end - inner_end)))
    goto done;
  for (i = 0; i < nup; i++) {
    char *d = out.data + (inner - (const unsigned char *)tpl.data) +
              (size_t)(fup - (const unsigned char *)code) - fstart + 3 * i;
    d[0] = 1;          /* instack: a local of the factory */
    d[1] = (char)i;    /* idx: the register of u(i+1) */
    d[2] = 0;          /* kind: a regular variable */
  }
  rc = luaL_loadbufferx(L, out.data, out.len, "=weft", "b") == LUA_OK ? 0 : -1;
  if (rc != 0) lua_pop(L, 1);
done:
  buf_free(&tpl);
  buf_free(&out);
  return rc;
}

typedef struct span { const char *p; size_t n; } span;

static const char *span_reader(lua_State *L, void *ud, size_t *size) {
  span *s = ud;
  (void)L;
  *size = s->n;
  s->n = 0;
  return *size ? s->p : NULL;
}

static int load_code(lua_State *L, const char *code, size_t len) {
  span s = {code, len};
  return lua_load(L, span_reader, &s, "=?", "b");
}

int proto_instantiate(lua_State *L, proto_blob *key, const char *code,
                      size_t len) {
  int t;
  luaL_checkstack(L, 8, "weft: decoding a function");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RECV_CACHE) != LUA_TTABLE) {
    lua_pop(L, 1);
    proto_open(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &RECV_CACHE);
  }
  t = key ? lua_rawgetp(L, -1, key)
          : (lua_pushlstring(L, code, len), lua_rawget(L, -2));
  if (t == LUA_TNIL) {
    int rc;
    lua_pop(L, 1);
    if ((rc = build_factory(L, code, len)) == -2) {
      lua_pop(L, 1);
      lua_pushliteral(L, "malformed function bytecode");
      return -1;
    }
    if (rc != 0) lua_pushboolean(L, 0);   /* no factory: load every time */
    if (key) {
      lua_pushvalue(L, -1);
      lua_rawsetp(L, -3, key);
      lua_rawgetp(L, LUA_REGISTRYINDEX, &RECV_HOLDS);
      proto_blob_ref(key);
      push_holder(L, key);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
      lua_pop(L, 1);
    } else {
      lua_pushlstring(L, code, len);
      lua_pushvalue(L, -2);
      lua_rawset(L, -4);
    }
  }
  if (lua_isfunction(L, -1)) {
    lua_call(L, 0, 1);           /* the factory: CLOSURE with fresh cells */
    lua_remove(L, -2);
    return 0;
  }
  lua_pop(L, 2);
  if (load_code(L, code, len) != LUA_OK) return -1;
  return 0;
}

/* === setup =============================================================== */

void proto_open(lua_State *L) {
  if (luaL_newmetatable(L, HOLDER_MT)) {
    lua_pushcfunction(L, holder_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RECV_CACHE) == LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RECV_CACHE);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RECV_HOLDS);
  /* The send cache lives under the key that says how it is keyed. */
  lua_newtable(L);
  if (getenv("WEFT_NO_PROTO_PEEK") == NULL && peek_selftest(L))
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SEND_CACHE);
  else
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SEND_BYTES);
}
