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
 *   task   := "WFT" version:u8 'T' id:str reply:str nonce:str expires:f64
 *             name:str timeout:f64 retries:u32 ndelays:u32 delay:f64*
 *             max_deliveries:u32 ttl:u32 level:u8 ndeps:u32 dep:str*
 *             message:str
 *   result := "WFT" version:u8 'R' id:str nonce:str state:u8 flags:u8
 *             deliveries:u32 worker:str started:f64 finished:f64 outcome:str
 *   log    := "WFT" version:u8 'L' id:str nonce:str level:u8 attempt:u32
 *             time:f64 worker:str message:str
 *   notice := "WFT" version:u8 'X' id:str nonce:str reason:u8 at:f64
 *             worker:str entry:str
 *   str    := len:u32 bytes            (little-endian, as frame.h)
 *
 * `id` names the task ("<client id>-<n>"), `reply` is the list its result
 * goes to, `nonce` RMSG_NONCE random bytes the client drew for this task
 * (the same in every copy it sends of it, and in every answer to it),
 * `expires` the time after which no worker may start it (the Redis
 * server's clock), `message` is a self-contained wire message (run.h),
 * `dep` the encoded results of its i-th dependency, `state` FS_FINISHED,
 * FS_FAILED or FS_CANCELLED, `flags` RMSG_TIMED_OUT and RMSG_DEAD, and
 * `outcome` what run.h's run_outcome holds (empty when cancelled).  A log
 * message is a weft.log record the task made, sent on the result's way
 * (log.h).  Times are seconds since the epoch.
 *
 * Signatures: HMAC-SHA-256 (libsodium) of the message bytes, keyed by the
 * BLAKE2b hash of the secret.  A task carries it in its entry's `s` field;
 * a result or log element is the message followed by its 32-byte
 * signature.
 *
 * Refusal notices ('X') are NOT signed: a worker sends one to the client
 * of a task it refuses, and it may refuse a task precisely because it
 * does not share the client's secret.  The client takes a notice only as
 * the failure (kind broken) of a task it still waits for, matched by id
 * and nonce; a notice never carries a result; its reason is a code (the
 * client writes the message itself, so no text of the sender's reaches
 * the user but the worker's name and the entry id, bounded and made
 * printable: rclient.c, "Refusal notices").
 *
 * Replays.  A task carries a nonce and an expiry, both signed.  A worker
 * admits an entry by a server-side script (rworker.c, ADMIT_LUA) that
 * reads the server's clock: an expired message is refused; the first
 * entry id a nonce is taken from is recorded (weft:<q>:seen:<nonce>,
 * kept until a while after the expiry), so that the same entry delivered
 * again (its worker died; the consumer group hands the same entry id to
 * another worker) runs, while a copy added under another entry id is a
 * replay and is refused.  Dead letters keep no signature.
 *
 * What somebody who can read and write the server, but has not the
 * secret, can and cannot do (with a secret on both sides):
 *
 *   can     read every task and result (signed, not encrypted);
 *           delay, drop or delete tasks, results and dead letters, or
 *           stop the queue: availability is not protected;
 *           fail a task its client still waits for (a notice naming its
 *           id and nonce, both readable in the stream; or by making a
 *           worker refuse a tampered copy);
 *           run a task once more while it is not expired, but only by
 *           also deleting its seen mark (or by forcing a redelivery of
 *           an entry still pending, as delivery is at least once anyway).
 *   cannot  run code of its own on a worker, or change anything of a
 *           task (code, arguments, timeout, retries, reply list, nonce,
 *           expiry): a worker runs only what carries the HMAC of its
 *           bytes;
 *           deliver or alter a result or log record: they are signed
 *           with the task's id and nonce, which the client checks, and a
 *           notice is read only as a failure;
 *           replay a task after its expiry (checked on the server's
 *           clock, which Redis commands do not set), or a dead letter as
 *           it is (no signature);
 *           make a worker write anywhere but this queue's client lists.
 *
  * Versions.  From version 2 on, a task starts with id, reply and nonce
 * in this order and a notice keeps its layout, whatever else changes: a
 * worker can tell the client of a task written in another version why it
 * refuses it (rmsg_task_address), and a client reads the notices of any
 * version.
 */
#ifndef WEFT_RMSG_H
#define WEFT_RMSG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define RMSG_VERSION 2
#define RMSG_NONCE 16                  /* bytes of a task's nonce */
#define RMSG_SIG 32                    /* bytes of a signature */
#define RMSG_MAX_DELAYS 32
#define RMSG_MAX_DEPS 100000

enum { RMSG_TIMED_OUT = 1, RMSG_DEAD = 2 };   /* result flags */

/* Why a worker refused a task (a notice's reason). */
enum {
  RMSG_R_UNSIGNED = 1,     /* no signature, and the worker has a secret */
  RMSG_R_BAD_SIGNATURE,    /* signed with another secret (or tampered with) */
  RMSG_R_NO_SECRET,        /* signed, and the worker has no secret */
  RMSG_R_VERSION,          /* written in another message format version */
  RMSG_R_MALFORMED,        /* cannot be read */
  RMSG_R_EXPIRED,          /* its `expires` passed before a worker took it */
  RMSG_R_MAX               /* (reasons are below this) */
};

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
  rmsg_str id, reply, nonce, name, message;
  double expires;                      /* seconds since the epoch, server clock */
  double timeout;                      /* < 0: none */
  uint32_t retries, ndelays, max_deliveries, ttl, ndeps;   /* ttl: seconds the
                                                             result is kept */
  double delays[RMSG_MAX_DELAYS];
  int level;
  const unsigned char *deps;           /* ndeps str's, read with rmsg_dep */
  const unsigned char *deps_end;
} rmsg_task;

typedef struct rmsg_result {
  rmsg_str id, nonce, worker, outcome;
  int state, flags;
  uint32_t deliveries;
  double started, finished;
} rmsg_result;

typedef struct rmsg_log {
  rmsg_str id, nonce, worker, message;
  int level;
  uint32_t attempt;
  double time;
} rmsg_log;

typedef struct rmsg_notice {
  rmsg_str id, nonce, worker, entry;
  int version;                         /* the sender's format version */
  int reason;                          /* RMSG_R_* */
  double at;                           /* when it refused (server clock) */
} rmsg_notice;

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
 * anything is read; without one, a signature is refused too (the client
 * could not verify the answer).  0, or the reason (RMSG_R_*, > 0) with
 * *why naming the problem. */
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

/* Refusal notices (unsigned: see above).  rmsg_parse_notice takes any
 * version from 2 on, and checks the id and nonce lengths and the reason
 * code; the worker and entry are bytes the caller must make printable. */
int rmsg_put_notice(buf *b, const rmsg_notice *n);
int rmsg_parse_notice(const char *m, size_t len, rmsg_notice *n, const char **why);

/* Reads where to send a notice about the task message m, WITHOUT checking
 * its signature or anything past its nonce (see "Versions"): its id,
 * reply list and nonce, and the version it says it is.  0, or -1 when the
 * message does not start as a task of version 2 or later would. */
int rmsg_task_address(const char *m, size_t len, rmsg_str *id, rmsg_str *reply,
                      rmsg_str *nonce, int *version);

/* The type byte of a client list element ('R', 'L' or 'X'; read, not trusted:
 * the parser of that type verifies), or 0. */
static inline int rmsg_type(const char *m, size_t len) {
  return len >= 5 && m[0] == 'W' && m[1] == 'F' && m[2] == 'T' ? (unsigned char)m[4] : 0;
}

#endif
