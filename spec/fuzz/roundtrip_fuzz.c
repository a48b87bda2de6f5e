/*
 * roundtrip_fuzz.c -- libFuzzer target: the wire ENCODER and decoder
 * together.  The input is a small program that builds Lua values; the
 * values are encoded (as a message that leaves the process), decoded, and
 * the copy must equal the original: every key, sharing and cycles, float
 * bits, integer/float subtypes, shared upvalue cells, registered
 * metatables kept and others dropped.  A difference aborts (the fuzzer's
 * crash).  The decoder-only targets cannot find an encoder that drops or
 * invents data; this one can.
 *
 * The program: one opcode byte at a time, operands after it.
 *
 *   0 nil        1 false      2 true       3 INT8 (small integer)
 *   4 INT64      5 FLOAT64    6 STR len:u8 bytes
 *   7 {}         new table (remembered as an object)
 *   8 SET        pops v, k; t[k] = v on the table below (if a table and a
 *                valid key; nil v deletes: holes and keys that migrate)
 *   9 SETI i:u8  pops v; t[i] = v
 *  10 OBJ n:u8   pushes remembered object n % count (sharing, cycles)
 *  11 POP
 *  12 FN         pops a, b; pushes function() return a, b end
 *  13 CELL       pops a; pushes {get, set}, two closures sharing one cell
 *  14 TYPED      new table with the registered metatable "T" (kept), or
 *                every other time with an unregistered one (dropped)
 *  15 EDGE k:u8  pushes an edge integer (maxinteger, mininteger, 0, 2^53...)
 *  16 FILL n:u8  t[1..n] = n distinct integers on the table on top (an
 *                array part), then the later ops may punch holes in it
 *
 * At most 4,096 operations and 200 stack slots; the values left on the
 * stack (up to 8, from the top) are the message.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_reset.h"
#include "wire.h"

static lua_State *L;
static int objs;         /* stack index of the list of built objects */

static const char FACTORIES[] =
    "local pair = function(a, b) return function() return a, b end end\n"
    "local cell = function(x)\n"
    "  return { get = function() return x end, set = function(v) x = v end }\n"
    "end\n"
    "return pair, cell\n";

static const char T_KEY = 't', U_KEY = 'u', PAIR = 'p', CELL = 'c';

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = lua_reset_worker_state("roundtrip_fuzz");
  if (luaL_loadstring(L, FACTORIES) != LUA_OK || lua_pcall(L, 0, 2, 0) != LUA_OK) abort();
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CELL);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &PAIR);
  lua_newtable(L);                      /* the registered type "T" */
  lua_pushliteral(L, "T");
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "T");
  wire_type_register(L, -1, -2);
  lua_pop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &T_KEY);
  lua_newtable(L);                      /* an unregistered metatable */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &U_KEY);
  {   /* the encoder's reverse map of modules, built once, kept by the reset */
    wire_enc e;
    lua_newtable(L);
    wire_enc_init(&e, L, 1, 0);
    wire_encode_tuple(&e, -1, 1, "value");
    wire_enc_free(&e);
    lua_pop(L, 1);
  }
  lua_reset_snapshot(L);
  return 0;
}

/* === building ============================================================ */

typedef struct prog {
  const uint8_t *p, *end;
} prog;

static int byte(prog *g) { return g->p < g->end ? *g->p++ : 0; }

static uint64_t u64(prog *g) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)byte(g) << (8 * i);
  return v;
}

static void remember(void) {
  lua_pushvalue(L, -1);
  lua_rawseti(L, objs, (lua_Integer)lua_rawlen(L, objs) + 1);
}

static int valid_key(int idx) {
  return !lua_isnil(L, idx) &&
         !(lua_type(L, idx) == LUA_TNUMBER && isnan(lua_tonumber(L, idx)));
}

static void run_program(prog *g, int base) {
  static const lua_Integer edges[] = {
      LUA_MAXINTEGER, LUA_MININTEGER, 0, -1, 1, 2, 127, 128, (lua_Integer)1 << 53,
      (lua_Integer)1 << 31, ((lua_Integer)1 << 32) + 1, LUA_MAXINTEGER - 1};
  int ops = 0;
  while (g->p < g->end && ops++ < 4096) {
    int top = lua_gettop(L) - base, op = byte(g) % 17;
    if (top >= 200 && op != 8 && op != 9 && op != 11) continue;
    switch (op) {
      case 0: lua_pushnil(L); break;
      case 1: lua_pushboolean(L, 0); break;
      case 2: lua_pushboolean(L, 1); break;
      case 3: lua_pushinteger(L, (int8_t)byte(g)); break;
      case 4: lua_pushinteger(L, (lua_Integer)u64(g)); break;
      case 5: {
        uint64_t bits = u64(g);
        double d;
        memcpy(&d, &bits, sizeof d);
        lua_pushnumber(L, d);
        break;
      }
      case 6: {
        size_t n = (size_t)byte(g);
        if (n > (size_t)(g->end - g->p)) n = (size_t)(g->end - g->p);
        lua_pushlstring(L, (const char *)g->p, n);
        g->p += n;
        break;
      }
      case 7: lua_newtable(L); remember(); break;
      case 8:
        if (top >= 3 && lua_istable(L, -3) && valid_key(-2)) lua_rawset(L, -3);
        else if (top >= 2) lua_pop(L, 2);
        break;
      case 9: {
        int i = byte(g);
        if (top >= 2 && lua_istable(L, -2)) lua_rawseti(L, -2, i);
        else if (top >= 1) lua_pop(L, 1);
        break;
      }
      case 10: {
        lua_Unsigned n = lua_rawlen(L, objs);
        int i = byte(g);
        if (n == 0) lua_pushnil(L);
        else lua_rawgeti(L, objs, (lua_Integer)((lua_Unsigned)i % n) + 1);
        break;
      }
      case 11: if (top >= 1) lua_pop(L, 1); break;
      case 12:
        if (top < 2) { lua_pushnil(L); break; }
        lua_rawgetp(L, LUA_REGISTRYINDEX, &PAIR);
        lua_insert(L, -3);
        lua_call(L, 2, 1);
        remember();
        break;
      case 13:
        if (top < 1) lua_pushnil(L);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &CELL);
        lua_insert(L, -2);
        lua_call(L, 1, 1);
        remember();
        break;
      case 14:
        lua_newtable(L);
        lua_rawgetp(L, LUA_REGISTRYINDEX, byte(g) & 1 ? &T_KEY : &U_KEY);
        lua_setmetatable(L, -2);
        remember();
        break;
      case 15: lua_pushinteger(L, edges[byte(g) % (sizeof edges / sizeof edges[0])]); break;
      case 16: {
        int n = byte(g);
        if (top >= 1 && lua_istable(L, -1))
          for (int i = 1; i <= n; i++) {
            lua_pushinteger(L, i * 3);
            lua_rawseti(L, -2, i);
          }
        break;
      }
    }
  }
}

/* === comparing =========================================================== */

static void differ(const char *what) {
  fprintf(stderr, "roundtrip_fuzz: the copy differs from the original: %s\n", what);
  abort();
}

static int map;   /* stack index: original object -> its copy, and back */

static void same(int a, int b, int depth);

/* Entries of table a keyed by objects are compared once the key object is
 * paired (it is reached as a value elsewhere, or only as a key: then its
 * copy is the one key of b left unpaired). */
static void same_table(int a, int b, int depth) {
  lua_Integer na = 0, nb = 0;
  int mta = lua_getmetatable(L, a), mtb;
  if (mta) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &T_KEY);
    if (!lua_rawequal(L, -1, -2)) { lua_pop(L, 2); mta = 0; }
    else lua_pop(L, 1);
  }
  mtb = lua_getmetatable(L, b);
  if (mta != mtb || (mta && !lua_rawequal(L, -1, -2))) differ("metatable");
  lua_pop(L, mta + mtb);
  lua_pushnil(L);
  while (lua_next(L, a)) {
    int k = lua_gettop(L) - 1;
    na++;
    lua_pushvalue(L, k);
    if (lua_istable(L, k) || lua_isfunction(L, k)) {
      if (lua_rawget(L, map) == LUA_TNIL) {
        lua_pop(L, 2);
        continue;   /* a key object reached nowhere else: counted only */
      }
    }
    if (lua_rawget(L, b) == LUA_TNIL) differ("a key is missing");
    same(k + 1, lua_gettop(L), depth + 1);
    lua_pop(L, 2);
  }
  lua_pushnil(L);
  while (lua_next(L, b)) { nb++; lua_pop(L, 1); }
  if (na != nb) differ("key count");
}

static void same_function(int a, int b, int depth) {
  int i, j;
  if (lua_iscfunction(L, a) || lua_iscfunction(L, b)) {
    if (!lua_rawequal(L, a, b)) differ("C function");
    return;
  }
  for (i = 1;; i++) {
    const char *na = lua_getupvalue(L, a, i), *nb;
    if (na == NULL) {
      if (lua_getupvalue(L, b, i) != NULL) differ("upvalue count");
      break;
    }
    nb = lua_getupvalue(L, b, i);
    if (nb == NULL) differ("upvalue count");
    same(lua_gettop(L) - 1, lua_gettop(L), depth + 1);
    lua_pop(L, 2);
    /* sharing of cells between this function's upvalues */
    for (j = 1; j < i; j++)
      if ((lua_upvalueid(L, a, i) == lua_upvalueid(L, a, j)) !=
          (lua_upvalueid(L, b, i) == lua_upvalueid(L, b, j)))
        differ("shared upvalue");
  }
}

static void same(int a, int b, int depth) {
  int t = lua_type(L, a);
  if (depth > WIRE_MAX_DEPTH + 10) differ("deeper than the limit");
  if (t != lua_type(L, b)) differ("type");
  switch (t) {
    case LUA_TNUMBER:
      if (lua_isinteger(L, a) != lua_isinteger(L, b)) differ("integer/float");
      if (lua_isinteger(L, a)) {
        if (lua_tointeger(L, a) != lua_tointeger(L, b)) differ("integer");
      } else {
        double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
        if (isnan(x) ? !isnan(y) : memcmp(&x, &y, sizeof x) != 0) differ("float bits");
      }
      return;
    case LUA_TTABLE:
    case LUA_TFUNCTION:
      lua_pushvalue(L, a);
      if (lua_rawget(L, map) != LUA_TNIL) {
        if (!lua_rawequal(L, -1, b)) differ("sharing");
        lua_pop(L, 1);
        return;
      }
      lua_pop(L, 1);
      lua_pushvalue(L, b);
      if (lua_rawget(L, map) != LUA_TNIL) differ("two objects became one");
      lua_pop(L, 1);
      lua_pushvalue(L, a);
      lua_pushvalue(L, b);
      lua_rawset(L, map);
      lua_pushvalue(L, b);
      lua_pushvalue(L, a);
      lua_rawset(L, map);
      luaL_checkstack(L, 10, "roundtrip_fuzz");
      if (t == LUA_TTABLE) same_table(a, b, depth); else same_function(a, b, depth);
      return;
    default:
      if (!lua_rawequal(L, a, b)) differ("value");
  }
}

/* === one input =========================================================== */

static int one(lua_State *L_) {
  prog *g = lua_touserdata(L_, 1);
  int base, n, first, got, i;
  wire_enc e;
  lua_settop(L, 0);
  luaL_checkstack(L, 260, "roundtrip_fuzz");   /* the program's 200 slots and more */
  lua_newtable(L);
  objs = 1;
  base = lua_gettop(L);
  run_program(g, base);
  n = lua_gettop(L) - base;
  if (n > 8) n = 8;
  first = lua_gettop(L) - n + 1;
  wire_enc_init(&e, L, 1, 0);
  if (wire_encode_tuple(&e, first, n, "value") != 0) {   /* too deep: refused */
    if (strstr(wire_error(&e), "nested deeper") == NULL &&
        strstr(wire_error(&e), "out of memory") == NULL)
      differ(wire_error(&e));
    wire_enc_free(&e);
    return 0;
  }
  lua_pushlstring(L, e.out.data, e.out.len);
  wire_enc_free(&e);
  got = wire_decode_tuple(L, lua_tostring(L, -1), lua_rawlen(L, -1), 0, 0);
  if (got != n) differ(got < 0 ? lua_tostring(L, -1) : "value count");
  lua_newtable(L);
  map = lua_gettop(L);
  for (i = 0; i < n; i++) same(first + i, first + n + 1 + i, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  prog g = {data, data + size};
  lua_pushcfunction(L, one);
  lua_pushlightuserdata(L, &g);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    /* only a memory error may end a run: anything else is a bug here */
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL || strstr(msg, "not enough memory") == NULL) differ(msg ? msg : "error");
  }
  lua_reset(L);
  return 0;
}
