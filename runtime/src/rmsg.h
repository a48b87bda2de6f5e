/*
 * rmsg.h -- the messages the Redis executor puts on the server (rmsg_*):
 * tasks (stream entries, client -> worker) and results (list elements,
 * worker -> client), and their signatures.
 *
 * Both cross a network and a server anybody with access can write to, so
 * the parsers trust nothing (every length is checked; they are fuzzed,
 * spec/fuzz/redis_fuzz.c) and, with a secret, nothing is parsed before its
 * signature is verified.
 *
 *   task   := "WFT" version:u8 'T' id:str reply:str name:str timeout:f64
 *             retries:u32 ndelays:u32 delay:f64* max_deliveries:u32 ttl:u32
 *             level:u8 ndeps:u32 dep:str* message:str
 *   result := "WFT" version:u8 'R' id:str state:u8 flags:u8 deliveries:u32
 *             worker:str started:f64 finished:f64 outcome:str
 *   log    := "WFT" version:u8 'L' id:str level:u8 attempt:u32 time:f64
 *             worker:str message:str
 *   str    := len:u32 bytes            (little-endian, as frame.h)
 *
 * `id` names the task ("<client id>-<n>"), `reply` is the list its result
 * goes to, `message` is a self-contained wire message (run.h), `dep` the
 * encoded results of its i-th dependency, `state` FS_FINISHED, FS_FAILED or
 * FS_CANCELLED, `flags` RMSG_TIMED_OUT and RMSG_DEAD, and `outcome` what
 * run.h's run_outcome holds (empty when cancelled).  A log message is a
 * weft.log record the task made, sent on the result's way (log.h).  Times are seconds since the epoch.
 *
 * Signatures: HMAC-SHA-256 (libsodium) of the message bytes, keyed by the
 * BLAKE2b hash of the secret.  A task carries it in its entry's `s` field;
 * a result or log element is the message followed by its 32-byte
 * signature.
 */
#ifndef WEFT_RMSG_H
#define WEFT_RMSG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define RMSG_VERSION 1
#define RMSG_SIG 32                    /* bytes of a signature */
#define RMSG_MAX_DELAYS 32
#define RMSG_MAX_DEPS 100000

enum { RMSG_TIMED_OUT = 1, RMSG_DEAD = 2 };   /* result flags */

typedef struct rmsg_key {
  int set;                             /* 0: no secret, nothing signed */
  unsigned char k[32];
} rmsg_key;

/* A task as parsed: pointers into the message bytes (not terminated). */
typedef struct rmsg_str {
  const char *p;
  size_t len;
} rmsg_str;

typedef struct rmsg_task {
  rmsg_str id, reply, name, message;
  double timeout;                      /* < 0: none */
  uint32_t retries, ndelays, max_deliveries, ttl, ndeps;   /* ttl: seconds the
                                                             result is kept */
  double delays[RMSG_MAX_DELAYS];
  int level;
  const unsigned char *deps;           /* ndeps str's, read with rmsg_dep */
  const unsigned char *deps_end;
} rmsg_task;

typedef struct rmsg_result {
  rmsg_str id, worker, outcome;
  int state, flags;
  uint32_t deliveries;
  double started, finished;
} rmsg_result;

typedef struct rmsg_log {
  rmsg_str id, worker, message;
  int level;
  uint32_t attempt;
  double time;
} rmsg_log;

/* Derives the key of a secret (NULL or "": no key).  0, or -1 when
 * libsodium cannot start. */
int rmsg_key_init(rmsg_key *k, const char *secret, size_t len);
void rmsg_sign(const rmsg_key *k, const char *msg, size_t len, unsigned char sig[RMSG_SIG]);

/* Appends a task message to b.  deps[i] / deplens[i]: the i-th
 * dependency's results.  0, or -1 when out of memory. */
int rmsg_put_task(buf *b, const rmsg_task *t, const char *const *deps, const size_t *deplens);
/* Appends a result message, and its signature when k is set. */
int rmsg_put_result(buf *b, const rmsg_key *k, const rmsg_result *r);

/* Parses a task entry's message m (and signature sig, NULL when the entry
 * has none).  With a key, a missing or wrong signature is refused before
 * anything is read.  0, or -1 with *why naming the problem. */
int rmsg_parse_task(const rmsg_key *k, const char *m, size_t len, const char *sig,
                    size_t siglen, rmsg_task *t, const char **why);
/* The i-th dependency of a parsed task, in order: call with i = 0, 1...;
 * each call advances.  0, or -1 past the end. */
int rmsg_next_dep(rmsg_task *t, rmsg_str *dep);
/* Parses a result element (message, then the signature when k is set). */
int rmsg_parse_result(const rmsg_key *k, const char *m, size_t len, rmsg_result *r,
                      const char **why);

/* A log message, written and read as a result element is. */
int rmsg_put_log(buf *b, const rmsg_key *k, const rmsg_log *l);
int rmsg_parse_log(const rmsg_key *k, const char *m, size_t len, rmsg_log *l, const char **why);

/* The type byte of a client list element ('R' or 'L'; read, not trusted:
 * the parser of that type verifies), or 0. */
static inline int rmsg_type(const char *m, size_t len) {
  return len >= 5 && m[0] == 'W' && m[1] == 'F' && m[2] == 'T' ? (unsigned char)m[4] : 0;
}

#endif
