/*
 * rmsg.c -- Redis task and result messages, signed (see rmsg.h).
 */
#include "rmsg.h"

#include <math.h>
#include <sodium.h>
#include <string.h>

#include "frame.h"
#include "future.h"

static const char MAGIC[3] = {'W', 'F', 'T'};

int rmsg_key_init(rmsg_key *k, const char *secret, size_t len) {
  memset(k, 0, sizeof *k);
  if (secret == NULL || len == 0) return 0;
  if (sodium_init() < 0) return -1;
  crypto_generichash(k->k, sizeof k->k, (const unsigned char *)secret, len, NULL, 0);
  k->set = 1;
  return 0;
}

void rmsg_sign(const rmsg_key *k, const char *msg, size_t len, unsigned char sig[RMSG_SIG]) {
  crypto_auth_hmacsha256(sig, (const unsigned char *)msg, len, k->k);
}

static int verify(const rmsg_key *k, const char *msg, size_t len, const char *sig) {
  return crypto_auth_hmacsha256_verify((const unsigned char *)sig, (const unsigned char *)msg,
                                       len, k->k) == 0;
}

/* --- writing -------------------------------------------------------------- */

static int put_f64(buf *b, double v) {
  uint64_t u;
  unsigned char c[8];
  int i;
  memcpy(&u, &v, sizeof u);
  for (i = 0; i < 8; i++) c[i] = (unsigned char)(u >> (8 * i));
  return buf_put(b, c, 8);
}

static int put_head(buf *b, char type) {
  return buf_put(b, MAGIC, 3) || buf_putc(b, RMSG_VERSION) || buf_putc(b, type);
}

static int put_s(buf *b, rmsg_str s) { return buf_put_str(b, s.p, s.len); }

int rmsg_put_task(buf *b, const rmsg_task *t, const char *const *deps, const size_t *deplens) {
  uint32_t i;
  int bad = put_head(b, 'T') || put_s(b, t->id) || put_s(b, t->reply) || put_s(b, t->nonce) ||
            put_f64(b, t->expires) || put_s(b, t->name) ||
            put_f64(b, t->timeout) || buf_put_u32(b, t->retries) ||
            buf_put_u32(b, t->ndelays);
  for (i = 0; !bad && i < t->ndelays; i++) bad = put_f64(b, t->delays[i]);
  bad = bad || buf_put_u32(b, t->max_deliveries) || buf_put_u32(b, t->ttl) ||
        buf_putc(b, t->level) ||
        buf_put_u32(b, t->ndeps);
  for (i = 0; !bad && i < t->ndeps; i++) bad = buf_put_str(b, deps[i], deplens[i]);
  return bad || put_s(b, t->message) ? -1 : 0;
}

/* Signs the element written to b from `at` on, when there is a key. */
static int end_element(buf *b, const rmsg_key *k, size_t at) {
  unsigned char sig[RMSG_SIG];
  if (!k->set) return 0;
  rmsg_sign(k, b->data + at, b->len - at, sig);
  return buf_put(b, sig, sizeof sig);
}

int rmsg_put_result(buf *b, const rmsg_key *k, const rmsg_result *r) {
  size_t at = b->len;
  if (put_head(b, 'R') || put_s(b, r->id) || put_s(b, r->nonce) || buf_putc(b, r->state) ||
      buf_putc(b, r->flags) || buf_put_u32(b, r->deliveries) || put_s(b, r->worker) ||
      put_f64(b, r->started) || put_f64(b, r->finished) || put_s(b, r->outcome))
    return -1;
  return end_element(b, k, at);
}

int rmsg_put_log(buf *b, const rmsg_key *k, const rmsg_log *l) {
  size_t at = b->len;
  if (put_head(b, 'L') || put_s(b, l->id) || put_s(b, l->nonce) || buf_putc(b, l->level) ||
      buf_put_u32(b, l->attempt) || put_f64(b, l->time) || put_s(b, l->worker) ||
      put_s(b, l->message))
    return -1;
  return end_element(b, k, at);
}

int rmsg_put_notice(buf *b, const rmsg_notice *n) {
  return put_head(b, 'X') || put_s(b, n->id) || put_s(b, n->nonce) || buf_putc(b, n->reason) ||
                 put_f64(b, n->at) || put_s(b, n->worker) || put_s(b, n->entry)
             ? -1
             : 0;
}

/* --- reading -------------------------------------------------------------- */

static double get_f64(frame_reader *r) {
  uint64_t u;
  double v;
  if (r->end - r->p < 8) {
    r->bad = 1;
    return 0;
  }
  u = frame_get(r->p, 8);
  r->p += 8;
  memcpy(&v, &u, sizeof v);
  return v;
}

static rmsg_str get_s(frame_reader *r) {
  rmsg_str s;
  s.p = frame_str(r, &s.len);
  return s;
}

static int get_head(frame_reader *r, char type, const char **why) {
  if (r->end - r->p < 5 || memcmp(r->p, MAGIC, 3) != 0) {
    *why = "not a weft message";
    return -1;
  }
  if (r->p[3] != RMSG_VERSION) {
    *why = "a message of another weft version";
    return -1;
  }
  if (r->p[4] != (unsigned char)type) {
    *why = type == 'T' ? "not a task message" : type == 'R' ? "not a result message"
                                              : "not a log message";
    return -1;
  }
  r->p += 5;
  return 0;
}

/* A timeout or delay as a sender may mean it: a number, not NaN. */
static int bad_seconds(double v) { return isnan(v) || v > 1e9; }

/* The id, reply and nonce every task from version 2 on starts with. */
static int get_address(frame_reader *r, rmsg_str *id, rmsg_str *reply, rmsg_str *nonce) {
  *id = get_s(r);
  *reply = get_s(r);
  *nonce = get_s(r);
  return r->bad || id->len == 0 || id->len > 200 || reply->len == 0 || reply->len > 400 ||
                 nonce->len != RMSG_NONCE
             ? -1
             : 0;
}

int rmsg_task_address(const char *m, size_t len, rmsg_str *id, rmsg_str *reply,
                      rmsg_str *nonce, int *version) {
  frame_reader r = {(const unsigned char *)m, (const unsigned char *)m + len, 0};
  if (len < 5 || memcmp(m, MAGIC, 3) != 0 || (unsigned char)m[3] < 2 || m[4] != 'T') return -1;
  *version = (unsigned char)m[3];
  r.p += 5;
  return get_address(&r, id, reply, nonce);
}

int rmsg_parse_task(const rmsg_key *k, const char *m, size_t len, const char *sig,
                    size_t siglen, rmsg_task *t, const char **why) {
  frame_reader r = {(const unsigned char *)m, (const unsigned char *)m + len, 0};
  uint32_t i;
  if (k->set) {
    if (sig == NULL) {
      *why = "unsigned message (this worker has a secret)";
      return RMSG_R_UNSIGNED;
    }
    if (siglen != RMSG_SIG || !verify(k, m, len, sig)) {
      *why = "bad signature (tampered, or signed with another secret)";
      return RMSG_R_BAD_SIGNATURE;
    }
  } else if (sig != NULL) {
    *why = "signed message (this worker has no secret)";
    return RMSG_R_NO_SECRET;
  }
  memset(t, 0, sizeof *t);
  if (len >= 5 && memcmp(m, MAGIC, 3) == 0 && m[4] == 'T' && m[3] != RMSG_VERSION) {
    *why = "a task of another message format version";
    return RMSG_R_VERSION;
  }
  if (get_head(&r, 'T', why)) return RMSG_R_MALFORMED;
  if (get_address(&r, &t->id, &t->reply, &t->nonce) != 0) {
    *why = "malformed task header";
    return RMSG_R_MALFORMED;
  }
  t->expires = get_f64(&r);
  t->name = get_s(&r);
  t->timeout = get_f64(&r);
  t->retries = frame_u32(&r);
  t->ndelays = frame_u32(&r);
  if (r.bad || t->ndelays > RMSG_MAX_DELAYS || bad_seconds(t->timeout) || t->retries > 1000000 ||
      !(t->expires >= 0 && t->expires < 1e11)) {
    *why = "malformed task header";
    return RMSG_R_MALFORMED;
  }
  for (i = 0; i < t->ndelays; i++) {
    t->delays[i] = get_f64(&r);
    if (bad_seconds(t->delays[i]) || t->delays[i] < 0) r.bad = 1;
  }
  t->max_deliveries = frame_u32(&r);
  t->ttl = frame_u32(&r);
  t->level = frame_u8(&r);
  t->ndeps = frame_u32(&r);
  if (r.bad || t->ndeps > RMSG_MAX_DEPS || t->ttl == 0) {
    *why = "malformed task header";
    return RMSG_R_MALFORMED;
  }
  t->deps = r.p;
  for (i = 0; i < t->ndeps && !r.bad; i++) (void)get_s(&r);
  t->deps_end = r.p;
  t->message = get_s(&r);
  if (r.bad || r.p != r.end) {
    *why = r.bad ? "truncated task message" : "trailing bytes after the task message";
    return RMSG_R_MALFORMED;
  }
  return 0;
}

int rmsg_next_dep(rmsg_task *t, rmsg_str *dep) {
  frame_reader r = {t->deps, t->deps_end, 0};
  if (t->deps >= t->deps_end) return -1;
  *dep = get_s(&r);
  if (r.bad) return -1;
  t->deps = r.p;
  return 0;
}

/* Verifies a client list element and starts reading it: 0, or -1. */
static int open_element(const rmsg_key *k, const char *m, size_t len, int type,
                        frame_reader *r, const char **why) {
  if (k->set) {
    if (len < RMSG_SIG || !verify(k, m, len - RMSG_SIG, m + len - RMSG_SIG)) {
      *why = "bad signature on a result or log message (tampered, or signed with another "
             "secret)";
      return -1;
    }
    len -= RMSG_SIG;
  }
  r->p = (const unsigned char *)m;
  r->end = r->p + len;
  r->bad = 0;
  return get_head(r, (char)type, why);
}

int rmsg_parse_log(const rmsg_key *k, const char *m, size_t len, rmsg_log *l, const char **why) {
  frame_reader r;
  memset(l, 0, sizeof *l);
  if (open_element(k, m, len, 'L', &r, why)) return -1;
  l->id = get_s(&r);
  l->nonce = get_s(&r);
  l->level = frame_u8(&r);
  l->attempt = frame_u32(&r);
  l->time = get_f64(&r);
  l->worker = get_s(&r);
  l->message = get_s(&r);
  if (r.bad || r.p != r.end || l->nonce.len != RMSG_NONCE) {
    *why = r.bad || r.p != r.end ? "truncated log message" : "malformed log message";
    return -1;
  }
  return 0;
}

int rmsg_parse_result(const rmsg_key *k, const char *m, size_t len, rmsg_result *res,
                      const char **why) {
  frame_reader r;
  memset(res, 0, sizeof *res);
  if (open_element(k, m, len, 'R', &r, why)) return -1;
  res->id = get_s(&r);
  res->nonce = get_s(&r);
  res->state = frame_u8(&r);
  res->flags = frame_u8(&r);
  res->deliveries = frame_u32(&r);
  res->worker = get_s(&r);
  res->started = get_f64(&r);
  res->finished = get_f64(&r);
  res->outcome = get_s(&r);
  if (r.bad || r.p != r.end) {
    *why = "truncated result message";
    return -1;
  }
  if (res->nonce.len != RMSG_NONCE) {
    *why = "malformed result message";
    return -1;
  }
  if (res->state != FS_FINISHED && res->state != FS_FAILED && res->state != FS_CANCELLED) {
    *why = "a result in an unknown state";
    return -1;
  }
  if (res->state != FS_CANCELLED && res->outcome.len == 0) {
    *why = "a result without its outcome";
    return -1;
  }
  return 0;
}

int rmsg_parse_notice(const char *m, size_t len, rmsg_notice *n, const char **why) {
  frame_reader r = {(const unsigned char *)m, (const unsigned char *)m + len, 0};
  memset(n, 0, sizeof *n);
  /* Any version from 2 on: the layout of a notice does not change. */
  if (len < 5 || memcmp(m, MAGIC, 3) != 0 || (unsigned char)m[3] < 2 || m[4] != 'X') {
    *why = "not a refusal notice";
    return -1;
  }
  n->version = (unsigned char)m[3];
  r.p += 5;
  n->id = get_s(&r);
  n->nonce = get_s(&r);
  n->reason = frame_u8(&r);
  n->at = get_f64(&r);
  n->worker = get_s(&r);
  n->entry = get_s(&r);
  if (r.bad || r.p != r.end) {
    *why = "truncated refusal notice";
    return -1;
  }
  if (n->id.len == 0 || n->id.len > 200 || n->nonce.len != RMSG_NONCE || n->reason < 1 ||
      n->reason >= RMSG_R_MAX || n->worker.len > 200 || n->entry.len > 48 || isnan(n->at)) {
    *why = "malformed refusal notice";
    return -1;
  }
  return 0;
}
