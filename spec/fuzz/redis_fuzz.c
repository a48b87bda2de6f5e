/*
 * redis_fuzz.c -- libFuzzer target: the messages the Redis executor reads
 * from the server (rmsg.c): task entries, read by a worker, and the
 * elements of a client's list (results, log records, refusal notices),
 * read by the client that submitted the task.  Anybody who can write to
 * the server can write them: whatever the bytes, the parsers must refuse
 * or accept them without reading outside them, and with a secret they
 * must refuse anything not signed with it (but notices, which are never
 * signed and only ever fail a task: rmsg.h).
 *
 *   input := mode:u8 rest
 *     mode bit 0   0: a task (rmsg_parse_task, and rmsg_task_address), 1: a
 *                  client list element (rmsg_parse_result, rmsg_parse_log, and
 *                  rmsg_parse_notice on the bytes before any signature)
 *          bit 1   the reader has a key (the secret "fuzz-secret")
 *          bit 2   task: the entry has a signature field (else sig = NULL)
 *          bit 3   re-sign: the harness signs the message itself, so that
 *                  the fuzzer reaches the parser behind the verifier:
 *                  task: rest is the message, its signature field the
 *                  HMAC of it (bit 2 is then implied); result: rest is the
 *                  message, the element is rest + its HMAC
 *          bit 4   with bit 3: sign with another secret ("other-secret"):
 *                  a reader with a key must refuse it
 *          bit 5   decode: a parsed task's message (with its dependencies)
 *                  and a parsed result's outcome go through the wire
 *                  decoder, as the worker and the client read them next
 *          bits 6, 7  unused
 *     rest, task with bit 2 and not bit 3:  siglen:u8 sig:siglen message
 *          (siglen is cut to what is there), otherwise rest is the
 *          message (task) or the whole result element (result)
 *
 * Checked with abort() beyond what ASan and UBSan see:
 *   - the parsers return 0 or -1 (a task: 0 or an RMSG_R_* reason), and
 *     on failure a reason;
 *   - with a key, nothing parses unless it carries the HMAC of its bytes
 *     under that key (recomputed here), whatever the mode said; without
 *     one, no task with a signature field parses (RMSG_R_NO_SECRET);
 *   - a task that parses has the address rmsg_task_address reads without
 *     verifying (the same id, reply and nonce);
 *   - every string of a parsed message lies inside the message bytes, and
 *     the field limits rmsg.c promises hold (id, reply, nonce lengths,
 *     expiry, delays, timeout, retries, states, outcome, notice reasons);
 *   - rmsg_next_dep returns exactly ndeps strings, back to back between
 *     deps and deps_end, each of them read byte by byte, then -1;
 *   - a parsed message re-encoded with rmsg_put_task / rmsg_put_result /
 *     rmsg_put_log / rmsg_put_notice gives back exactly the bytes read
 *     (signature included): the format has one encoding of each message.
 *
 * The wire decoder runs under a pcall on one Lua state, put back as it was
 * after every input (lua_reset.h), as in wire_fuzz.c.  Set
 * RMSG_FUZZ_VERBOSE=1 to print what each input parsed to.
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
#include "rmsg.h"
#include "run.h"
#include "wire.h"


enum {
  M_RESULT = 1, M_KEY = 2, M_SIG = 4, M_RESIGN = 8, M_WRONG_KEY = 16, M_DECODE = 32
};

static lua_State *L;
static rmsg_key KEY, NOKEY, OTHER;
static int verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  verbose = getenv("RMSG_FUZZ_VERBOSE") != NULL;
  if (rmsg_key_init(&KEY, "fuzz-secret", 11) || rmsg_key_init(&OTHER, "other-secret", 12) ||
      rmsg_key_init(&NOKEY, NULL, 0) || !KEY.set || !OTHER.set || NOKEY.set)
    abort();
  L = lua_reset_worker_state("redis_fuzz");
  return 0;
}

#define CHECK(c)                                                            \
  do {                                                                      \
    if (!(c)) {                                                             \
      fprintf(stderr, "redis_fuzz: %s:%d: check failed: %s\n", __FILE__,    \
              __LINE__, #c);                                                \
      abort();                                                              \
    }                                                                       \
  } while (0)

/* Every byte of s is read (ASan sees a read outside), and s lies in [lo, hi). */
static volatile unsigned sink;
static void touch(rmsg_str s, const char *lo, const char *hi) {
  unsigned sum = 0;
  size_t i;
  CHECK(s.p != NULL && s.p >= lo && s.p <= hi && s.len <= (size_t)(hi - s.p));
  for (i = 0; i < s.len; i++) sum += (unsigned char)s.p[i];
  sink += sum;
}

static int seconds_ok(double v) { return v == v && v <= 1e9; }

/* === the wire decoder, as a worker and a client read what parsed ========= */

typedef struct decode_args {
  rmsg_str msg;
  const wire_dep *deps;
  size_t ndeps;
  int tuple;                   /* 1: a result's outcome, 0: a task message */
} decode_args;

static int decode(lua_State *L) {
  decode_args *a = lua_touserdata(L, 1);
  wire_dec d;
  size_t n, i;
  int kind;
  lua_settop(L, 0);
  if (a->tuple) {
    int got = wire_decode_tuple(L, a->msg.p, a->msg.len, 0, 0);
    if (verbose)
      fprintf(stderr, "    outcome: %d values%s%s\n", got < 0 ? 0 : got, got < 0 ? ", " : "",
              got < 0 ? lua_tostring(L, -1) : "");
    return 0;
  }
  /* What run.c reads before it calls anything (run_protected, run_call,
   * run_chunk); nothing decoded is called. */
  if (wire_dec_init(&d, L, a->msg.p, a->msg.len, 0) || wire_get_byte(&d, &kind)) goto bad;
  d.deps = a->deps;
  d.ndeps = a->ndeps;
  if (kind == RUN_CHUNK) {   /* fn spread:u8 count item* */
    int spread;
    if (wire_get(&d, L) || wire_get_byte(&d, &spread)) goto bad;
  } else if (kind != RUN_CALL) {
    goto bad;
  }
  if (wire_get_size(&d, &n) || n > (size_t)(d.end - d.p)) goto bad;
  luaL_checkstack(L, (int)(n < 1000000 ? n : 1000000) + 8, "too many values");
  for (i = 0; i < n; i++)
    if (wire_get(&d, L)) goto bad;
  if (verbose) fprintf(stderr, "    message: kind %d, %zu values\n", kind, n);
  return 0;
bad:
  if (verbose) fprintf(stderr, "    message: %s\n", d.err ? d.err : "not a task message");
  return 0;
}

static void run_decode(decode_args *a) {
  lua_pushcfunction(L, decode);
  lua_pushlightuserdata(L, a);
  lua_pcall(L, 1, 0, 0);   /* a Lua error (out of memory) is no crash */
  lua_reset(L);
}

/* === tasks ================================================================ */

static void task(int mode, const char *in, size_t inlen) {
  const rmsg_key *k = mode & M_KEY ? &KEY : &NOKEY;
  const char *m = in, *sig = NULL, *why = NULL;
  char *sigcopy = NULL;
  size_t len = inlen, siglen = 0;
  unsigned char mac[RMSG_SIG];
  rmsg_task t, t0;
  rmsg_str dep, aid, areply, anonce;
  int arc, aversion;
  const char **deps = NULL;
  size_t *deplens = NULL;
  wire_dep *wdeps = NULL;
  const unsigned char *next;
  uint32_t i;
  int rc;
  buf b = BUF_INIT;

  if (mode & M_RESIGN) {
    rmsg_sign(mode & M_WRONG_KEY ? &OTHER : &KEY, m, len, mac);
    sigcopy = malloc(RMSG_SIG);
    if (sigcopy == NULL) abort();
    memcpy(sigcopy, mac, RMSG_SIG);
    sig = sigcopy;
    siglen = RMSG_SIG;
  } else if (mode & M_SIG) {
    if (len > 0) {
      siglen = (unsigned char)m[0];
      m++;
      len--;
    }
    if (siglen > len) siglen = len;
    sigcopy = malloc(siglen ? siglen : 1);   /* its own block: ASan sees past siglen */
    if (sigcopy == NULL) abort();
    memcpy(sigcopy, m, siglen);
    sig = sigcopy;
    m += siglen;
    len -= siglen;
  }

  rc = rmsg_parse_task(k, m, len, sig, siglen, &t, &why);
  CHECK(rc >= 0 && rc < RMSG_R_MAX);
  CHECK(k->set || sig == NULL || rc == RMSG_R_NO_SECRET);
  if (verbose)
    fprintf(stderr, "  task (mode %#x, %zu bytes): %s\n", mode, len, rc ? why : "parsed");
  /* The address a worker reads, unverified, to tell a refusal. */
  arc = rmsg_task_address(m, len, &aid, &areply, &anonce, &aversion);
  CHECK(arc == 0 || arc == -1);
  if (arc == 0) {
    touch(aid, m, m + len);
    touch(areply, m, m + len);
    touch(anonce, m, m + len);
    CHECK(anonce.len == RMSG_NONCE && aversion >= 2 && aversion <= 255);
  }
  if (rc) {
    CHECK(why != NULL);
    sink += (unsigned)strlen(why);
    goto done;
  }
  CHECK(arc == 0 && aversion == RMSG_VERSION && aid.p == t.id.p && aid.len == t.id.len &&
        areply.p == t.reply.p && areply.len == t.reply.len && anonce.p == t.nonce.p);

  /* Behind the verifier only what the key signed. */
  if (k->set) {
    CHECK(sig != NULL && siglen == RMSG_SIG);
    rmsg_sign(k, m, len, mac);
    CHECK(memcmp(mac, sig, RMSG_SIG) == 0);
    CHECK(!(mode & M_RESIGN) || !(mode & M_WRONG_KEY));
  }

  touch(t.id, m, m + len);
  touch(t.reply, m, m + len);
  touch(t.nonce, m, m + len);
  touch(t.name, m, m + len);
  touch(t.message, m, m + len);
  CHECK(t.id.len >= 1 && t.id.len <= 200);
  CHECK(t.reply.len >= 1 && t.reply.len <= 400);
  CHECK(t.nonce.len == RMSG_NONCE);
  CHECK(t.expires >= 0 && t.expires < 1e11);
  CHECK(seconds_ok(t.timeout));
  CHECK(t.retries <= 1000000);
  CHECK(t.ndelays <= RMSG_MAX_DELAYS);
  for (i = 0; i < t.ndelays; i++) CHECK(seconds_ok(t.delays[i]) && t.delays[i] >= 0);
  CHECK(t.ttl > 0);
  CHECK(t.level >= 0 && t.level <= 255);
  CHECK(t.ndeps <= RMSG_MAX_DEPS);
  CHECK((const char *)t.deps >= m && t.deps <= t.deps_end &&
        (const char *)t.deps_end <= t.message.p);
  CHECK((size_t)(t.deps_end - t.deps) >= 4 * (size_t)t.ndeps);

  /* The dependencies, back to back, exactly ndeps of them. */
  t0 = t;
  if (t.ndeps) {
    deps = malloc(t.ndeps * sizeof *deps);
    deplens = malloc(t.ndeps * sizeof *deplens);
    wdeps = malloc(t.ndeps * sizeof *wdeps);
    if (!deps || !deplens || !wdeps) abort();
  }
  next = t.deps;
  for (i = 0; i < t.ndeps; i++) {
    CHECK(rmsg_next_dep(&t, &dep) == 0);
    CHECK((const unsigned char *)dep.p == next + 4);
    touch(dep, (const char *)t0.deps, (const char *)t0.deps_end);
    next = (const unsigned char *)dep.p + dep.len;
    CHECK(t.deps == next);
    deps[i] = dep.p;
    deplens[i] = dep.len;
    wdeps[i].data = dep.p;
    wdeps[i].len = dep.len;
  }
  CHECK(next == t0.deps_end);
  CHECK(rmsg_next_dep(&t, &dep) == -1);
  CHECK(rmsg_next_dep(&t, &dep) == -1);

  /* One encoding: what parsed re-encodes to the very bytes. */
  CHECK(rmsg_put_task(&b, &t0, deps, deplens) == 0);
  CHECK(b.len == len && memcmp(b.data, m, len) == 0);

  if (mode & M_DECODE) {
    decode_args a = {t0.message, wdeps, t0.ndeps, 0};
    run_decode(&a);
  }

done:
  free(b.data);
  free(deps);
  free(deplens);
  free(wdeps);
  free(sigcopy);
}

/* === client list elements ================================================ */

/* A log message: the same checks as a result's. */
static void log_element(const rmsg_key *k, int mode, const char *m, size_t len) {
  const char *why = NULL;
  unsigned char mac[RMSG_SIG];
  rmsg_log l;
  size_t body = len;
  buf b = BUF_INIT;
  int rc = rmsg_parse_log(k, m, len, &l, &why);
  CHECK(rc == 0 || rc == -1);
  if (verbose) fprintf(stderr, "  log (mode %#x, %zu bytes): %s\n", mode, len, rc ? why : "parsed");
  if (rc) {
    CHECK(why != NULL);
    sink += (unsigned)strlen(why);
    return;
  }
  if (k->set) {
    CHECK(len >= RMSG_SIG);
    body = len - RMSG_SIG;
    rmsg_sign(k, m, body, mac);
    CHECK(memcmp(mac, m + body, RMSG_SIG) == 0);
    CHECK(!(mode & M_RESIGN) || !(mode & M_WRONG_KEY));
  }
  touch(l.id, m, m + body);
  touch(l.nonce, m, m + body);
  touch(l.worker, m, m + body);
  touch(l.message, m, m + body);
  CHECK(l.nonce.len == RMSG_NONCE);
  CHECK(l.level >= 0 && l.level <= 255);
  CHECK(rmsg_put_log(&b, k, &l) == 0);
  CHECK(b.len == len && memcmp(b.data, m, len) == 0);
  free(b.data);
}

/* A refusal notice: never signed, any version from 2 on. */
static void notice_element(int mode, const char *m, size_t len) {
  const char *why = NULL;
  rmsg_notice n;
  buf b = BUF_INIT;
  int rc = rmsg_parse_notice(m, len, &n, &why);
  CHECK(rc == 0 || rc == -1);
  if (verbose)
    fprintf(stderr, "  notice (mode %#x, %zu bytes): %s\n", mode, len, rc ? why : "parsed");
  if (rc) {
    CHECK(why != NULL);
    sink += (unsigned)strlen(why);
    return;
  }
  touch(n.id, m, m + len);
  touch(n.nonce, m, m + len);
  touch(n.worker, m, m + len);
  touch(n.entry, m, m + len);
  CHECK(n.id.len >= 1 && n.id.len <= 200 && n.nonce.len == RMSG_NONCE);
  CHECK(n.worker.len <= 200 && n.entry.len <= 48);
  CHECK(n.reason >= 1 && n.reason < RMSG_R_MAX);
  CHECK(n.version >= 2 && n.version <= 255 && n.at == n.at);
  CHECK(rmsg_put_notice(&b, &n) == 0);
  /* (the version byte is the writer's: put it back to compare) */
  CHECK(b.len == len && b.len >= 5);
  b.data[3] = (char)n.version;
  CHECK(memcmp(b.data, m, len) == 0);
  free(b.data);
}

static void result(int mode, const char *in, size_t inlen) {
  const rmsg_key *k = mode & M_KEY ? &KEY : &NOKEY;
  const char *m = in, *why = NULL;
  char *copy = NULL;
  size_t len = inlen, body;
  unsigned char mac[RMSG_SIG];
  rmsg_result r;
  int rc;
  buf b = BUF_INIT;

  if (mode & M_RESIGN) {   /* the element: the message, then its HMAC */
    copy = malloc(inlen + RMSG_SIG);
    if (copy == NULL) abort();
    if (inlen) memcpy(copy, in, inlen);
    rmsg_sign(mode & M_WRONG_KEY ? &OTHER : &KEY, in, inlen, (unsigned char *)copy + inlen);
    m = copy;
    len = inlen + RMSG_SIG;
  } else if (inlen) {   /* (its own block: ASan sees a read past the end) */
    copy = malloc(inlen);
    if (copy == NULL) abort();
    memcpy(copy, in, inlen);
    m = copy;
  }

  log_element(k, mode, m, len);
  notice_element(mode, m, inlen);   /* (the bytes before any signature) */

  rc = rmsg_parse_result(k, m, len, &r, &why);
  CHECK(rc == 0 || rc == -1);
  if (verbose)
    fprintf(stderr, "  result (mode %#x, %zu bytes): %s\n", mode, len, rc ? why : "parsed");
  if (rc) {
    CHECK(why != NULL);
    sink += (unsigned)strlen(why);
    goto done;
  }

  body = len;
  if (k->set) {
    CHECK(len >= RMSG_SIG);
    body = len - RMSG_SIG;
    rmsg_sign(k, m, body, mac);
    CHECK(memcmp(mac, m + body, RMSG_SIG) == 0);
    CHECK(!(mode & M_RESIGN) || !(mode & M_WRONG_KEY));
  }
  touch(r.id, m, m + body);
  touch(r.nonce, m, m + body);
  touch(r.worker, m, m + body);
  touch(r.outcome, m, m + body);
  CHECK(r.nonce.len == RMSG_NONCE);
  CHECK(r.state == FS_FINISHED || r.state == FS_FAILED || r.state == FS_CANCELLED);
  CHECK(r.state == FS_CANCELLED || r.outcome.len > 0);
  CHECK(r.flags >= 0 && r.flags <= 255);

  CHECK(rmsg_put_result(&b, k, &r) == 0);
  CHECK(b.len == len && memcmp(b.data, m, len) == 0);

  if ((mode & M_DECODE) && r.outcome.len > 0) {
    decode_args a = {r.outcome, NULL, 0, 1};
    run_decode(&a);
  }

done:
  free(b.data);
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int mode;
  if (size < 1) return 0;
  mode = data[0];
  if (mode & M_RESULT)
    result(mode, (const char *)data + 1, size - 1);
  else
    task(mode, (const char *)data + 1, size - 1);
  return 0;
}
