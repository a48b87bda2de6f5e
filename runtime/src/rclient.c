/*
 * rclient.c -- the Redis executor's client side (see rclient.h).
 */
#include "rclient.h"

#include <errno.h>
#include <inttypes.h>
#include <lauxlib.h>
#include <math.h>
#include <poll.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "deadline.h"
#include "log.h"
#include "rconn.h"
#include "rkeys.h"
#include "rmsg.h"

#define BATCH 256                /* XADDs per pipeline */
#define CMD_TIMEOUT 5.0          /* seconds for a reply */
#define LISTEN_BLOCK "0.5"       /* seconds BLMPOP waits */
#define REFUSED_PAUSE 0.25       /* seconds before the listener retries a refused BLMPOP */
#define WAKE "W"                 /* a list element that only wakes the listener */

/* A task on its way: sent (or being sent) and not settled. */
typedef struct rtask {
  struct rtask *next;            /* bucket chain (or a list of taken ones) */
  struct rtask *next_resend;     /* the sender's list of XADDs to send again */
  task *t;
  future *f;                     /* fail_expired's own reference */
  double timeout;                /* the task's, < 0: none */
  uint32_t seq;
  int sent;                      /* the XADD was answered: entry holds the id */
  char entry[48];
  unsigned char nonce[RMSG_NONCE];   /* drawn once: every copy sent carries it */
  _Atomic double expires;        /* of the copy sent last (server clock); the
                                    sender writes it, the listener reads it */
} rtask;

typedef struct rclient {
  pool *p;
  rconn_addr addr;
  char where[1100];
  rkeys keys;
  rmsg_key key;
  char cid[17];                  /* this client's id (hex) */
  double window;                 /* reconnect_window, seconds */
  size_t max_message;            /* bytes a task message may have */
  char limit_why[200];           /* where that limit comes from */
  double ttl;
  double message_ttl;            /* seconds a task may wait for a worker */
  double clock_offset;           /* the server's clock minus ours, s */
  int max_deliveries;
  int efd;                       /* wakes the sender */
  atomic_int stop;               /* abort: the threads leave now */
  atomic_int sender_gone;
  pthread_t sender, listener;
  int started;                   /* threads started (0, 1 or 2) */
  /* Guarded by lock, rank 0 ("rclient"): taken before any pool or home
   * lock, never under one. */
  pthread_mutex_t lock;
  pthread_cond_t sent_cond;      /* an XADD was answered */
  rtask **buckets;
  size_t nbuckets, count;
  uint32_t next_seq;             /* the sender's */
  /* The owner's connection (cancels, stats, shutdown), under cmd_lock,
   * rank 0.5: taken with no other lock held. */
  pthread_mutex_t cmd_lock;
  rconn cmd;
  /* Counters, for stats(). */
  atomic_long completed, failed, timed_out, redelivered, dead_lettered, refused;
  atomic_int down;               /* the listener has no connection */
} rclient;

#define RC(p) ((rclient *)(p)->rc)

/* === the table of tasks in flight (rc->lock) ============================ */

static rtask **slot_of(rclient *rc, uint32_t seq) {
  return &rc->buckets[seq & (rc->nbuckets - 1)];
}

static int table_put(rclient *rc, rtask *rt) {
  if (rc->count >= rc->nbuckets) {   /* grow: load factor 1 */
    size_t n = rc->nbuckets * 2, i;
    rtask **nb = calloc(n, sizeof *nb);
    if (nb == NULL) return -1;
    for (i = 0; i < rc->nbuckets; i++) {
      rtask *x, *next;
      for (x = rc->buckets[i]; x; x = next) {
        next = x->next;
        x->next = nb[x->seq & (n - 1)];
        nb[x->seq & (n - 1)] = x;
      }
    }
    free(rc->buckets);
    rc->buckets = nb;
    rc->nbuckets = n;
  }
  rt->next = *slot_of(rc, rt->seq);
  *slot_of(rc, rt->seq) = rt;
  rc->count++;
  return 0;
}

static rtask *table_get(rclient *rc, uint32_t seq) {
  rtask *x;
  for (x = *slot_of(rc, seq); x && x->seq != seq; x = x->next) {}
  return x;
}

static rtask *table_take(rclient *rc, uint32_t seq) {
  rtask **at;
  for (at = slot_of(rc, seq); *at && (*at)->seq != seq; at = &(*at)->next) {}
  if (*at) {
    rtask *x = *at;
    *at = x->next;
    rc->count--;
    return x;
  }
  return NULL;
}

/* The in-flight record of f, if it has one. */
static rtask *table_of(rclient *rc, future *f) {
  rtask *rt = table_get(rc, f->claim_id);
  return rt && rt->t->f == f ? rt : NULL;
}

/* The key of the result of our task seq. */
static void result_key(const rclient *rc, uint32_t seq, char *key, size_t size) {
  snprintf(key, size, "%s%s-%" PRIu32, rc->keys.result, rc->cid, seq);
}

/* === settling ============================================================ */

/* Ownership of an rtask: whoever takes it out of the table owns it if it
 * was sent (then it calls pool_task_done and frees it); an unsent one stays
 * the sender's, which frees it once it finds it gone from the table.
 * Whoever takes it settles its future, holding a reference of its own. */

/* Settles f, whose task got no result, with an error record of `kind`. */
static void settle_error(rclient *rc, future *f, weft_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void settle_error(rclient *rc, future *f, weft_kind kind, const char *fmt, ...) {
  char msg[2600];
  size_t len;
  char *data;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  data = wire_record(weft_kind_name(kind), msg, future_name(f), &len);
  atomic_fetch_add(&rc->failed, 1);
  pool_remote_done(rc->p, f, data ? FS_FAILED : FS_CANCELLED, data, len);
}

/* The sequence number of one of our task ids ("<client id>-<n>"); -1 for
 * anything else (cannot happen on our own list). */
static int seq_of(const rclient *rc, rmsg_str id, uint32_t *seq) {
  size_t cl = strlen(rc->cid);
  unsigned long long n;
  char num[32], *end;
  if (id.len <= cl + 1 || id.len > cl + 1 + 10 || memcmp(id.p, rc->cid, cl) != 0 ||
      id.p[cl] != '-')
    return -1;
  memcpy(num, id.p + cl + 1, id.len - cl - 1);
  num[id.len - cl - 1] = '\0';
  n = strtoull(num, &end, 10);
  if (*end || n > UINT32_MAX) return -1;
  *seq = (uint32_t)n;
  return 0;
}

/* A weft.log record one of our tasks made on its worker: delivered here,
 * as records of local tasks are. */
static void handle_log(rclient *rc, const char *elem, size_t len) {
  rmsg_log l;
  const char *why;
  rtask *rt;
  log_record *rec;
  uint32_t seq;
  future *f = NULL;
  if (rmsg_parse_log(&rc->key, elem, len, &l, &why) != 0) {
    fprintf(stderr, "weft: ignored a log message on %s: %s\n", rc->keys.reply, why);
    return;
  }
  if (seq_of(rc, l.id, &seq) != 0) return;
  pthread_mutex_lock(&rc->lock);
  if ((rt = table_get(rc, seq)) != NULL && memcmp(rt->nonce, l.nonce.p, RMSG_NONCE) == 0) {
    f = rt->t->f;
    future_ref(f);
  }
  pthread_mutex_unlock(&rc->lock);
  if (f == NULL) return;   /* (its future settled: cancelled here) */
  rec = log_record_remote(l.level, l.time, l.message.p, l.message.len, l.worker.p, l.worker.len);
  if (rec == NULL) {
    future_unref(f);
    return;
  }
  rec->attempt = (int)l.attempt;
  rec->f = f;   /* (our reference goes to the record) */
  log_post(f->home, rec);
}

static void handle_result(rclient *rc, const char *elem, size_t len) {
  rmsg_result r;
  const char *why;
  rtask *rt;
  char *data = NULL, label[300];
  uint32_t seq;
  future *f = NULL;
  int owned = 0;
  if (rmsg_parse_result(&rc->key, elem, len, &r, &why) != 0) {
    fprintf(stderr, "weft: ignored a result on %s: %s\n", rc->keys.reply, why);
    return;
  }
  if (seq_of(rc, r.id, &seq) != 0) return;
  pthread_mutex_lock(&rc->lock);
  /* Bound to the task: its id and its nonce, both signed with it. */
  rt = table_get(rc, seq);
  if (rt != NULL && memcmp(rt->nonce, r.nonce.p, RMSG_NONCE) == 0) {
    table_take(rc, seq);
    owned = rt->sent;
    f = rt->t->f;
    future_ref(f);
  } else {
    rt = NULL;
  }
  pthread_mutex_unlock(&rc->lock);
  if (rt == NULL) return;   /* cancelled here already, or a second result */
  snprintf(label, sizeof label, "%.*s", (int)r.worker.len, r.worker.p);
  future_mark_remote(f, label, r.started);
  atomic_store(&f->attempts, (int)r.deliveries);
  if (r.deliveries > 1) atomic_fetch_add(&rc->redelivered, 1);
  if (r.flags & RMSG_TIMED_OUT) atomic_fetch_add(&rc->timed_out, 1);
  if (r.flags & RMSG_DEAD) atomic_fetch_add(&rc->dead_lettered, 1);
  if (r.state != FS_CANCELLED) {
    data = malloc(r.outcome.len);
    if (data == NULL) {
      settle_error(rc, f, WK_TASK, "out of memory reading the result of a Redis task");
      goto out;
    }
    memcpy(data, r.outcome.p, r.outcome.len);
  }
  atomic_fetch_add(r.state == FS_FINISHED ? &rc->completed : &rc->failed, 1);
  pool_remote_done(rc->p, f, r.state, data, r.outcome.len);
out:
  future_unref(f);
  if (owned) {
    pool_task_done(rc->p, rt->t);
    free(rt);
  }
}

/* Refusal notices.  A worker that refuses a task (rworker.c, refuse)
 * pushes an UNSIGNED notice to the task's client list, because the
 * reason may be that it does not share our secret.  Anybody who can write
 * to the server can push one too.  What such a writer (without the
 * secret) can and cannot do with notices:
 *
 *   - it CAN fail a task this client still waits for, with kind broken:
 *     it reads the task's id and nonce from the stream entry (they are
 *     not secret) and pushes a notice naming them.  It could stop the
 *     task from running anyway: delete its entry, or the whole stream.
 *   - it CANNOT deliver a result, or change one: a notice is a type of
 *     its own ('X'), read by its own parser (rmsg_parse_notice) into a
 *     failure, never into a result; results and log records are read only
 *     when they carry our HMAC over their bytes, task id and nonce
 *     included.
 *   - it CANNOT fail a task that is done (its future is settled: the
 *     notice finds nothing in the table), a task of another client (ids
 *     start with the client id), nor a later task of ours with the same
 *     number (the nonce is drawn at random for each task).
 *   - it CANNOT put words in front of the user: the reason is a code and
 *     the message is ours; the worker name and entry id it carries are
 *     cut to 100 printable bytes.
 *
 * So a notice can only turn "pending" into "failed, kind broken" for a
 * task we wait for: less harm than deleting its entry (after which the
 * task never runs, and waits for its timeout), and what the user of a
 * task a worker refused expects to see. */

/* Copies the bytes s into out as printable ASCII, at most 100 of them. */
static void printable(rmsg_str s, char *out, size_t size) {
  size_t i, n = s.len < 100 ? s.len : 100;
  if (n >= size) n = size - 1;
  for (i = 0; i < n; i++) out[i] = s.p[i] >= ' ' && s.p[i] < 127 ? s.p[i] : '?';
  out[n] = '\0';
}

static void handle_notice(rclient *rc, const char *elem, size_t len) {
  rmsg_notice n;
  const char *why;
  rtask *rt;
  uint32_t seq;
  future *f = NULL;
  int owned = 0;
  double expires = 0;
  char worker[104], entry[104];
  if (rmsg_parse_notice(elem, len, &n, &why) != 0) {
    fprintf(stderr, "weft: ignored a notice on %s: %s\n", rc->keys.reply, why);
    return;
  }
  if (seq_of(rc, n.id, &seq) != 0) return;
  pthread_mutex_lock(&rc->lock);
  rt = table_get(rc, seq);
  if (rt != NULL && memcmp(rt->nonce, n.nonce.p, RMSG_NONCE) == 0) {
    table_take(rc, seq);
    owned = rt->sent;   /* (else the sender's, which frees it) */
    f = rt->t->f;
    expires = atomic_load(&rt->expires);
    future_ref(f);
  }
  pthread_mutex_unlock(&rc->lock);
  if (f == NULL) return;   /* done, cancelled, or not ours: nothing to fail */
  printable(n.worker, worker, sizeof worker);
  printable(n.entry, entry, sizeof entry);
  atomic_fetch_add(&rc->refused, 1);
#define REFUSED "worker %s refused the task (stream entry %s of %s): "
  switch (n.reason) {
    case RMSG_R_UNSIGNED:
      settle_error(rc, f, WK_BROKEN,
                   REFUSED "the task is not signed and the worker has a secret; give this "
                           "executor the workers' secret (the secret option, or WEFT_SECRET)",
                   worker, entry, rc->keys.stream);
      break;
    case RMSG_R_BAD_SIGNATURE:
      settle_error(rc, f, WK_BROKEN,
                   REFUSED "the task's signature does not match the worker's secret: this "
                           "executor and the workers have different secrets (or the entry "
                           "was altered on the server)",
                   worker, entry, rc->keys.stream);
      break;
    case RMSG_R_NO_SECRET:
      settle_error(rc, f, WK_BROKEN,
                   REFUSED "the task is signed and the worker has no secret; start the "
                           "workers with this executor's secret (WEFT_SECRET)",
                   worker, entry, rc->keys.stream);
      break;
    case RMSG_R_VERSION:
      settle_error(rc, f, WK_BROKEN,
                   REFUSED "the worker reads weft message format %d and this executor "
                           "writes format %d; run the same weft version on both sides",
                   worker, entry, rc->keys.stream, n.version, RMSG_VERSION);
      break;
    case RMSG_R_EXPIRED:
      settle_error(rc, f, WK_BROKEN,
                   REFUSED "a worker took the task %.0f s after its message expired "
                           "(message_ttl %g s, by the Redis server's clock): it waited in "
                           "the stream longer than message_ttl",
                   worker, entry, rc->keys.stream, n.at - expires, rc->message_ttl);
      break;
    default:
      settle_error(rc, f, WK_BROKEN, REFUSED "the worker cannot read the task message", worker,
                   entry, rc->keys.stream);
      break;
  }
#undef REFUSED
  future_unref(f);
  if (owned) {
    pool_task_done(rc->p, rt->t);
    free(rt);
  }
}

/* One element of our list: a result, a log record, a refusal notice, or
 * the wake-up. */
static void handle_element(rclient *rc, const char *elem, size_t len) {
  int type = rmsg_type(elem, len);
  if (len == 1 && elem[0] == WAKE[0]) return;
  if (type == 'L')
    handle_log(rc, elem, len);
  else if (type == 'X')
    handle_notice(rc, elem, len);
  else
    handle_result(rc, elem, len);
}

/* After the listener reconnects: reads the stored result of every task
 * sent and not settled.  A result element BLMPOP took off our list is gone
 * from the server even when the reply carrying it never reached us (the
 * server died, or the connection broke, between the two); the result key
 * the worker wrote beside it is still there (results are written once,
 * with a TTL).  A result that also comes by the list is the second one,
 * and is ignored. */
static int recover_results(rclient *rc, rconn *conn) {
  uint32_t *seqs = NULL;
  size_t n = 0, i, j;
  rtask *rt;
  int status = -1;
  pthread_mutex_lock(&rc->lock);
  if (rc->count > 0 && (seqs = malloc(rc->count * sizeof *seqs)) == NULL) {
    pthread_mutex_unlock(&rc->lock);
    return -1;   /* (the next round tries again) */
  }
  if (rc->count > 0) {
    for (i = 0; i < rc->nbuckets; i++)
      for (rt = rc->buckets[i]; rt; rt = rt->next)
        if (rt->sent) seqs[n++] = rt->seq;
  }
  pthread_mutex_unlock(&rc->lock);
  for (i = 0; i < n; i += BATCH) {
    size_t m = n - i < BATCH ? n - i : BATCH;
    for (j = 0; j < m; j++) {
      char key[300];
      const char *argv[2] = {"GET", key};
      result_key(rc, seqs[i + j], key, sizeof key);
      if (rconn_append(conn, 2, argv, NULL) != 0) goto out;
    }
    for (j = 0; j < m; j++) {
      redisReply *r = rconn_reply(conn);
      if (r == NULL) goto out;   /* (the next connection tries again) */
      if (r->type == REDIS_REPLY_STRING) handle_result(rc, r->str, r->len);
      if (r->type == REDIS_REPLY_ERROR) status = -2;   /* (the next round tries again) */
      freeReplyObject(r);
    }
  }
  if (status == -1) status = 0;
out:
  free(seqs);
  return status < 0 ? -1 : 0;
}

/* While the server is gone (since `since`, weft_now() based): fails every
 * task in flight once it has been gone for the reconnect window, else the
 * tasks whose own timeout has passed since it went away. */
static void fail_expired(rclient *rc, double since, const char *err) {
  double now = weft_now();
  int all = now - since >= rc->window;
  rtask *expired = NULL, *rt;
  size_t i;
  if (since <= 0) return;   /* (not away) */
  pthread_mutex_lock(&rc->lock);
  for (i = 0; i < rc->nbuckets; i++) {
    rtask **at = &rc->buckets[i];
    while ((rt = *at) != NULL) {
      if (all || (rt->t->timeout >= 0 && now - since > rt->t->timeout)) {
        *at = rt->next;
        rc->count--;
        rt->next = expired;
        expired = rt;
        rt->f = rt->t->f;   /* (the sender may free an unsent task) */
        future_ref(rt->f);
      } else {
        at = &rt->next;
      }
    }
  }
  pthread_mutex_unlock(&rc->lock);
  while ((rt = expired) != NULL) {
    expired = rt->next;
    if (all && !(rt->timeout >= 0 && now - since > rt->timeout))
      settle_error(rc, rt->f, WK_BROKEN,
                   "Redis at %s was unreachable for %.1f s, the reconnect window "
                   "(reconnect_window = %g s): %s",
                   rc->where, now - since, rc->window, err);
    else
      settle_error(rc, rt->f, WK_BROKEN,
                   "%s, and it did not come back within the task's timeout (%g s)", err,
                   rt->timeout);
    future_unref(rt->f);
    if (rt->sent) {
      pool_task_done(rc->p, rt->t);
      free(rt);
    }
  }
}

/* Pushes the wake element to our list, so the listener looks at once
 * whether it is done. */
static void push_wake(rclient *rc, rconn *c) {
  const char *argv[3] = {"RPUSH", rc->keys.reply, WAKE};
  redisReply *r = rconn_cmd(c, 3, argv, NULL);
  if (r) freeReplyObject(r);
}

/* === sizes ============================================================= */

int rclient_check_size(pool *p, const char *what, size_t len, char *err, size_t errlen) {
  rclient *rc = RC(p);
  if (rc == NULL || len <= rc->max_message) return 0;
  snprintf(err, errlen,
           "%s is %zu bytes, more than the %zu bytes a message to Redis at %s may have (%s): "
           "pass large data another way (a file, or a key of your own), or raise the limit",
           what, len, rc->max_message, rc->where, rc->limit_why);
  return -1;
}

/* === the sender ========================================================= */

static void sender_sleep(rclient *rc) {
  pool *p = rc->p;
  struct pollfd pfd = {rc->efd, POLLIN, 0};
  atomic_store(&p->nidle, 1);
  if (!pool_has_queued(p) && !pool_is_drained(p) && !atomic_load(&rc->stop))
    poll(&pfd, 1, 1000);
  atomic_store(&p->nidle, 0);
  if (pfd.revents & POLLIN) {
    uint64_t v;
    while (read(rc->efd, &v, sizeof v) < 0 && errno == EINTR) {}
  }
}

/* The task message of rt (signed when there is a key) into *b; its
 * signature into sig.  -1 when it cannot be encoded. */
static int encode_task(rclient *rc, rtask *rt, buf *b, unsigned char sig[RMSG_SIG]) {
  task *t = rt->t;
  rmsg_task m;
  char id[64];
  const char *small[8], **deps = small;
  size_t smalll[8], *lens = smalll, i;
  int rc_;
  memset(&m, 0, sizeof m);
  snprintf(id, sizeof id, "%s-%" PRIu32, rc->cid, rt->seq);
  m.id.p = id;
  m.id.len = strlen(id);
  m.reply.p = rc->keys.reply;
  m.reply.len = strlen(rc->keys.reply);
  m.nonce.p = (const char *)rt->nonce;
  m.nonce.len = RMSG_NONCE;
  /* (whole milliseconds: the worker passes it on to a script as text) */
  m.expires = floor((rkeys_wallclock() + rc->clock_offset + rc->message_ttl) * 1000) / 1000;
  atomic_store(&rt->expires, m.expires);
  m.name.p = future_name(t->f) ? future_name(t->f) : "";
  m.name.len = strlen(m.name.p);
  m.timeout = t->timeout;
  m.retries = (uint32_t)t->retries;
  m.ndelays = (uint32_t)(t->ndelays < RMSG_MAX_DELAYS ? t->ndelays : RMSG_MAX_DELAYS);
  for (i = 0; i < m.ndelays; i++) m.delays[i] = t->delays[i];
  m.max_deliveries = (uint32_t)rc->max_deliveries;
  m.ttl = (uint32_t)ceil(rc->ttl);
  m.level = atomic_load_explicit(&t->f->home->log_level, memory_order_relaxed);
  m.ndeps = (uint32_t)t->ndeps;
  m.message.p = t->msg;
  m.message.len = t->len;
  if (t->ndeps > 8) {
    deps = malloc(t->ndeps * sizeof *deps);
    lens = malloc(t->ndeps * sizeof *lens);
  }
  if (deps == NULL || lens == NULL) {
    rc_ = -1;
  } else {
    for (i = 0; i < t->ndeps; i++) {
      wire_dep d = task_dep(t, i);
      deps[i] = d.data ? d.data : "";
      lens[i] = d.len;
    }
    b->len = 0;
    rc_ = rmsg_put_task(b, &m, deps, lens);
    if (rc_ == 0 && rc->key.set) rmsg_sign(&rc->key, b->data, b->len, sig);
  }
  if (deps != small) free(deps);
  if (lens != smalll) free(lens);
  return rc_;
}

/* Appends rt's XADD: 0; -1 when the connection failed; 1 when the task
 * cannot be encoded, 2 when it is too big (why in err). */
static int append_xadd(rclient *rc, rconn *conn, rtask *rt, buf *b, char *err, size_t errlen) {
  unsigned char sig[RMSG_SIG];
  const char *argv[7] = {"XADD", rc->keys.stream, "*", "m", NULL, "s", (const char *)sig};
  size_t lens[7] = {4, strlen(rc->keys.stream), 1, 1, 0, 1, RMSG_SIG};
  if (encode_task(rc, rt, b, sig) != 0) {
    snprintf(err, errlen, "the task cannot be sent to Redis: out of memory");
    return 1;
  }
  /* (a bulk string over the server's limit breaks the connection, and
   * the task would be sent again forever) */
  if (rclient_check_size(rc->p, "the task's message (its function, arguments and inputs)",
                         b->len, err, errlen) != 0)
    return 2;
  argv[4] = b->data;
  lens[4] = b->len;
  return rconn_append(conn, rc->key.set ? 7 : 5, argv, lens) ? -1 : 0;
}

/* Takes the next task to send: a resend first, else the pool's queue.
 * NULL when there is none. */
static rtask *next_to_send(rclient *rc, rtask **resend) {
  pool *p = rc->p;
  for (;;) {
    rtask *rt;
    task *t;
    if (*resend) {
      int mine;
      rt = *resend;
      *resend = rt->next_resend;
      pthread_mutex_lock(&rc->lock);
      mine = table_get(rc, rt->seq) == rt;
      pthread_mutex_unlock(&rc->lock);
      if (mine) return rt;
      pool_task_done(p, rt->t);   /* cancelled meanwhile (rclient_abort) */
      free(rt);
      continue;
    }
    if ((t = pool_poll(p)) == NULL) return NULL;
    rt = calloc(1, sizeof *rt);
    pthread_mutex_lock(&rc->lock);
    if (FS_IS_FINAL(future_state(t->f)) || rt == NULL) {   /* cancelled while queued */
      pthread_mutex_unlock(&rc->lock);
      if (rt == NULL) settle_error(rc, t->f, WK_TASK, "out of memory sending a task to Redis");
      pool_task_done(p, t);
      free(rt);
      continue;
    }
    rt->t = t;
    rt->timeout = t->timeout;
    randombytes_buf(rt->nonce, sizeof rt->nonce);
    do rt->seq = ++rc->next_seq; while (rt->seq == 0 || table_get(rc, rt->seq));
    t->f->claim_id = rt->seq;
    atomic_store_explicit(&t->f->attempts, 1, memory_order_relaxed);
    if (table_put(rc, rt) != 0) {
      pthread_mutex_unlock(&rc->lock);
      settle_error(rc, t->f, WK_TASK, "out of memory sending a task to Redis");
      pool_task_done(p, t);
      free(rt);
      continue;
    }
    pthread_mutex_unlock(&rc->lock);
    return rt;
  }
}

/* Takes rt out of the table (it failed before it was sent). */
static void drop_unsent(rclient *rc, rtask *rt, weft_kind kind, const char *why) {
  int mine;
  pthread_mutex_lock(&rc->lock);
  mine = table_get(rc, rt->seq) == rt;
  if (mine) table_take(rc, rt->seq);
  pthread_cond_broadcast(&rc->sent_cond);
  pthread_mutex_unlock(&rc->lock);
  if (mine) settle_error(rc, rt->t->f, kind, "%s", why);
  pool_task_done(rc->p, rt->t);
  free(rt);
}

/* The server has been away for the reconnect window (as the sender's
 * connection sees it): the tasks waiting to be sent fail, saying so. */
static void sender_give_up(rclient *rc, rconn *conn, rtask **resend) {
  double down = rconn_down_for(conn);
  char why[4000];
  rtask *rt;
  if (down == 0 || down < rc->window) return;
  snprintf(why, sizeof why,
           "Redis at %s was unreachable for %.1f s, the reconnect window "
           "(reconnect_window = %g s): %s",
           rc->where, down, rc->window, conn->err);
  while ((rt = next_to_send(rc, resend)) != NULL) drop_unsent(rc, rt, WK_BROKEN, why);
}

static void *sender_main(void *arg) {
  rclient *rc = arg;
  pool *p = rc->p;
  rconn conn;
  buf b = BUF_INIT;
  rtask *resend = NULL, *batch[BATCH], *again[BATCH];
  rconn_init(&conn, &rc->addr, CMD_TIMEOUT);
  pthread_setname_np(pthread_self(), "weft:rsend");
  while (!atomic_load(&rc->stop)) {
    int n = 0, i, bad, nagain = 0;
    /* (in slices: the reconnect window is looked at between them) */
    if (conn.c == NULL && rconn_ensure(&conn, &rc->stop, weft_now() + 0.25) != 0) {
      sender_give_up(rc, &conn, &resend);
      if (pool_is_drained(p) && resend == NULL) break;
      continue;
    }
    while (n < BATCH) {
      rtask *rt = next_to_send(rc, &resend);
      if (rt == NULL) break;
      char why[2000];
      bad = append_xadd(rc, &conn, rt, &b, why, sizeof why);
      if (bad > 0) {
        drop_unsent(rc, rt, WK_SERIALIZATION, why);
        continue;
      }
      batch[n++] = rt;
      if (bad < 0) break;   /* the connection failed: resend this batch */
    }
    if (n == 0) {
      if (pool_is_drained(p) && resend == NULL) break;
      sender_sleep(rc);
      continue;
    }
    for (i = 0; i < n; i++) {
      redisReply *r = conn.c ? rconn_reply(&conn) : NULL;
      if (r == NULL) {   /* resend the rest after reconnecting, in order */
        for (; i < n; i++) again[nagain++] = batch[i];
        break;
      }
      if (r->type == REDIS_REPLY_STRING) {
        int mine;
        pthread_mutex_lock(&rc->lock);
        mine = table_get(rc, batch[i]->seq) == batch[i];
        snprintf(batch[i]->entry, sizeof batch[i]->entry, "%s", r->str);
        batch[i]->sent = 1;
        pthread_cond_broadcast(&rc->sent_cond);
        pthread_mutex_unlock(&rc->lock);
        if (!mine) {   /* cancelled while on its way */
          pool_task_done(p, batch[i]->t);
          free(batch[i]);
        }
      } else if (rconn_transient(r)) {   /* loading, busy: the same again later */
        again[nagain++] = batch[i];
      } else {
        char why[2000];
        snprintf(why, sizeof why, "Redis at %s refused the task: %s", rc->where,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply to XADD");
        drop_unsent(rc, batch[i], WK_BROKEN, why);
      }
      freeReplyObject(r);
    }
    if (nagain > 0) {   /* first in the resend list, in their order */
      for (i = nagain - 1; i >= 0; i--) {
        again[i]->next_resend = resend;
        resend = again[i];
      }
      if (conn.c) {   /* (refused, not lost: wait before asking again) */
        double pause = conn.backoff;
        conn.backoff = fmin(2.0, conn.backoff * 2);
        rconn_sleep(pause, &rc->stop, -1);
      }
      sender_give_up(rc, &conn, &resend);
    } else if (conn.c) {
      conn.backoff = 0.05;
    }
  }
  /* Gone: what is left unsent fails (an abort, or a stop while the server
   * is unreachable). */
  while (resend) {
    rtask *rt = resend;
    resend = rt->next_resend;
    drop_unsent(rc, rt, WK_CANCELLED, "the executor was shut down before the task was sent");
  }
  if (conn.c) push_wake(rc, &conn);   /* the listener may wait for results no longer coming */
  rconn_close(&conn);
  buf_free(&b);
  atomic_store(&rc->sender_gone, 1);
  atomic_fetch_sub(&p->nalive, 1);
  pool_wake_owner(p);
  pool_unref(p);
  return NULL;
}

/* === the listener ======================================================= */

static int listener_done(rclient *rc) {
  int done;
  if (atomic_load(&rc->stop)) return 1;
  if (!atomic_load(&rc->sender_gone)) return 0;
  pthread_mutex_lock(&rc->lock);
  done = rc->count == 0;
  pthread_mutex_unlock(&rc->lock);
  return done;
}

static void *listener_main(void *arg) {
  rclient *rc = arg;
  pool *p = rc->p;
  rconn conn;
  int connected_before = 0, recover = 0;
  const char *argv[7] = {"BLMPOP", LISTEN_BLOCK, "1", rc->keys.reply, "LEFT", "COUNT", "512"};
  rconn_init(&conn, &rc->addr, CMD_TIMEOUT);
  pthread_setname_np(pthread_self(), "weft:rlisten");
  while (!listener_done(rc)) {
    redisReply *r;
    size_t i;
    if (conn.c == NULL) {
      if (rconn_open(&conn) != 0) {
        atomic_store(&rc->down, 1);
        fail_expired(rc, conn.down_since, conn.err);
        if (rconn_ensure(&conn, &rc->stop, weft_now() + 0.25) != 0) continue;
      }
      recover |= connected_before;
      connected_before = 1;
    }
    r = rconn_cmd(&conn, 7, argv, NULL);
    if (r == NULL) continue;
    if (rconn_transient(r)) {   /* loading, busy: up, but not serving yet */
      double pause = conn.backoff;
      atomic_store(&rc->down, 1);
      conn.backoff = fmin(2.0, conn.backoff * 2);
      fail_expired(rc, conn.down_since, conn.err);
      rconn_sleep(pause, &rc->stop, -1);
    } else if (r->type == REDIS_REPLY_ERROR) {   /* (a server that lost our AUTH) */
      snprintf(conn.err, sizeof conn.err, "Redis at %s: %s", rc->where, r->str);
      if (recover && recover_results(rc, &conn) == 0) recover = 0;   /* (GET may be allowed) */
      rconn_close(&conn);
      rconn_sleep(REFUSED_PAUSE, &rc->stop, -1);   /* (not a busy loop of refusals) */
    } else {
      atomic_store(&rc->down, 0);
      conn.backoff = 0.05;
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
          r->element[1]->type == REDIS_REPLY_ARRAY) {
        redisReply *items = r->element[1];
        for (i = 0; i < items->elements; i++)
          if (items->element[i]->type == REDIS_REPLY_STRING)
            handle_element(rc, items->element[i]->str, items->element[i]->len);
      }
      /* After a reconnect, once the server serves again (it may take
       * SELECT while it still loads, and refuse the GETs). */
      if (recover && recover_results(rc, &conn) == 0) recover = 0;
    }
    freeReplyObject(r);
  }
  rconn_close(&conn);
  atomic_fetch_sub(&p->nalive, 1);
  pool_wake_owner(p);
  pool_unref(p);
  return NULL;
}

/* === the owner's side =================================================== */

/* The owner's connection, connected (cmd_lock held), or NULL.  While the
 * listener finds the server away, one try only: cancels of many futures
 * must not wait CMD_TIMEOUT each for a server that is gone. */
static rconn *owner_conn(rclient *rc) {
  return rconn_ready(&rc->cmd, atomic_load(&rc->down) ? 0 : CMD_TIMEOUT);
}

/* The server's clock minus ours (TIME, halfway through the round trip):
 * a task's expiry is stamped and checked by the server's clock, so the
 * clocks of clients and workers need not agree.  0 when it cannot tell. */
static double server_clock_offset(rconn *c) {
  double before = rkeys_wallclock(), after;
  redisReply *r = rconn_cmdf(c, "TIME");
  double offset = 0;
  after = rkeys_wallclock();
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
      r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING)
    offset = atof(r->element[0]->str) + atof(r->element[1]->str) / 1e6 - (before + after) / 2;
  if (r) freeReplyObject(r);
  return offset;
}

int rclient_start(pool *p, rclient_opts *o, int *kind, char *err, size_t errlen) {
  rclient *rc = calloc(1, sizeof *rc);
  unsigned char id[8];
  int i, rc_;
  *kind = WK_CONFIG;
  if (rc == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  p->rc = rc;
  rc->p = p;
  rc->efd = -1;
  pthread_mutex_init(&rc->lock, NULL);
  pthread_mutex_init(&rc->cmd_lock, NULL);
  pthread_cond_init(&rc->sent_cond, NULL);
  if (rconn_parse_url(o->url, &rc->addr, err, errlen) != 0) return -1;
  rconn_describe(&rc->addr, rc->where, sizeof rc->where);
  if (rkeys_init(&rc->keys, o->queue ? o->queue : rc->addr.queue[0] ? rc->addr.queue : "default",
                 err, errlen) != 0)
    return -1;
  if (rmsg_key_init(&rc->key, o->secret, o->secret_len) != 0) {
    snprintf(err, errlen, "libsodium cannot start (needed to sign messages)");
    return -1;
  }
  if (sodium_init() < 0) {
    snprintf(err, errlen, "libsodium cannot start (needed to make the client id)");
    return -1;
  }
  randombytes_buf(id, sizeof id);
  for (i = 0; i < 8; i++) snprintf(rc->cid + 2 * i, 3, "%02x", id[i]);
  rkeys_reply(&rc->keys, rc->cid);
  rc->ttl = o->result_ttl;
  rc->window = o->reconnect_window > 0 ? o->reconnect_window : 60;
  rc->message_ttl = o->message_ttl > 0 ? o->message_ttl : 86400;
  rc->max_deliveries = o->max_deliveries;
  rc->nbuckets = 64;
  if ((rc->buckets = calloc(rc->nbuckets, sizeof *rc->buckets)) == NULL ||
      (rc->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
    snprintf(err, errlen, "out of resources: %s", strerror(errno));
    return -1;
  }
  rconn_init(&rc->cmd, &rc->addr, CMD_TIMEOUT);
  if (rconn_open(&rc->cmd) != 0) {
    *kind = rc->cmd.auth_failed ? WK_CONFIG : WK_BROKEN;
    snprintf(err, errlen, "%s", rc->cmd.err);
    return -1;
  }
  /* Evicted stream keys are lost tasks. */
  o->warning[0] = '\0';
  switch (rconn_check_eviction(&rc->cmd, o->allow_eviction, "allow_eviction = true", o->warning,
                               sizeof o->warning)) {
  case -1:
    snprintf(err, errlen, "%s", o->warning);
    o->warning[0] = '\0';
    return -1;   /* (kind config) */
  case -2:
    *kind = WK_BROKEN;
    snprintf(err, errlen, "%s", rc->cmd.err);
    return -1;
  }
  {   /* the largest message: ours, or the server's when smaller */
    long long bulk = rconn_max_bulk(&rc->cmd);
    double mine = o->max_message > 0 ? o->max_message : RCLIENT_MAX_MESSAGE;
    rc->max_message = (size_t)mine;
    snprintf(rc->limit_why, sizeof rc->limit_why, "max_message");
    if (bulk > 0 && (double)bulk < mine) {
      rc->max_message = (size_t)bulk;
      snprintf(rc->limit_why, sizeof rc->limit_why, "the server's proto-max-bulk-len");
    }
  }
  /* A server that answers but does not serve yet (it loads its data):
   * waited for, within the reconnect window.  (One that cannot be reached
   * at all fails at once, above: most often a wrong address.) */
  while (rconn_create_group(&rc->cmd, rc->keys.stream, RKEYS_GROUP) != 0) {
    double pause = rc->cmd.backoff;
    if (rc->cmd.down_since == 0 || rconn_down_for(&rc->cmd) + pause > rc->window) {
      snprintf(err, errlen, "%s", rc->cmd.err);
      *kind = WK_BROKEN;
      return -1;
    }
    rc->cmd.backoff = fmin(2.0, rc->cmd.backoff * 2);
    rconn_sleep(pause, NULL, -1);
    if (rconn_open(&rc->cmd) != 0) {
      snprintf(err, errlen, "%s", rc->cmd.err);
      *kind = rc->cmd.auth_failed ? WK_CONFIG : WK_BROKEN;
      return -1;
    }
  }
  rc->clock_offset = server_clock_offset(&rc->cmd);   /* (it serves by now) */
  if ((rc_ = pool_start_thread(p, &rc->sender, sender_main, rc, 0)) == 0) {
    rc->started = 1;
    if ((rc_ = pool_start_thread(p, &rc->listener, listener_main, rc, 0)) == 0) rc->started = 2;
  }
  if (rc->started < 2) {
    *kind = WK_BROKEN;
    snprintf(err, errlen, "cannot start the Redis executor's threads: %s", strerror(rc_));
    atomic_store(&rc->stop, 1);
    rclient_wake(p);
    return -1;
  }
  return 0;
}

void rclient_wake(pool *p) {
  rclient *rc = RC(p);
  uint64_t one = 1;
  if (rc && rc->efd >= 0) (void)!write(rc->efd, &one, sizeof one);
}

/* The same from the owner (shutdown). */
static void wake_listener(rclient *rc) {
  rconn *c;
  pthread_mutex_lock(&rc->cmd_lock);
  if ((c = owner_conn(rc)) != NULL) push_wake(rc, c);
  pthread_mutex_unlock(&rc->cmd_lock);
}

/* The cancel script: deletes the entry unless a worker has read it.
 * 1: deleted, or gone without a result (deleted by hand, or lost by a
 * server that restarted without its data): it will never run; 0: a
 * worker has it; a string: done, and this is its result (taken here, not
 * awaited: its element on our list may be the one a lost reply took). */
static const char CANCEL_LUA[] =
    "if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) > 0 then return 0 end\n"
    "if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then return 1 end\n"
    "return redis.call('GET', KEYS[2]) or 1\n";

int rclient_cancel_pending(pool *p, future *f) {
  rclient *rc = RC(p);
  rtask *rt;
  char entry[48], result[300];
  rconn *c;
  redisReply *r = NULL;
  long long verdict = -2;
  double give_up = weft_now() + CMD_TIMEOUT;
  int rc_;
  pthread_mutex_lock(&rc->lock);
  rt = table_of(rc, f);
  if (rt == NULL) {   /* still in the pool's queue: the sender drops it */
    rc_ = future_settle(f, FS_CANCELLED, NULL, 0, NULL);
    pthread_mutex_unlock(&rc->lock);
    return rc_;
  }
  while ((rt = table_of(rc, f)) != NULL && !rt->sent && weft_now() < give_up) {
    struct timespec ts;
    double until = weft_now() + 0.05;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&rc->sent_cond, &rc->lock, &ts);   /* (CLOCK_REALTIME) */
  }
  if (rt == NULL || !rt->sent) {   /* settled meanwhile, or not sent in time */
    pthread_mutex_unlock(&rc->lock);
    return -1;
  }
  snprintf(entry, sizeof entry, "%s", rt->entry);
  result_key(rc, rt->seq, result, sizeof result);
  pthread_mutex_unlock(&rc->lock);
  pthread_mutex_lock(&rc->cmd_lock);
  if ((c = owner_conn(rc)) != NULL) {
    const char *argv[7] = {"EVAL", CANCEL_LUA, "2", rc->keys.stream, result, RKEYS_GROUP, entry};
    r = rconn_cmd(c, 7, argv, NULL);
  }
  pthread_mutex_unlock(&rc->cmd_lock);
  if (r != NULL) {
    if (r->type == REDIS_REPLY_INTEGER) verdict = r->integer;
    if (r->type == REDIS_REPLY_STRING) handle_result(rc, r->str, r->len);
    freeReplyObject(r);
  }
  if (verdict == 1) {   /* deleted: it will never run */
    pthread_mutex_lock(&rc->lock);
    rt = table_of(rc, f);
    if (rt) table_take(rc, rt->seq);
    pthread_mutex_unlock(&rc->lock);
    if (rt == NULL) return -1;
    rc_ = future_settle(f, FS_CANCELLED, NULL, 0, NULL);
    pool_task_done(p, rt->t);
    free(rt);
    return rc_;
  }
  if (verdict == 0) future_start(f);   /* a worker runs it */
  return -1;
}

/* Leaves kill marks for these task ids (cmd_lock held). */
static void send_kills(rclient *rc, char (*ids)[64], size_t n) {
  rconn *c = owner_conn(rc);
  char ttl[32];
  size_t i;
  if (c == NULL || n == 0) return;
  snprintf(ttl, sizeof ttl, "%ld", (long)ceil(rc->ttl));
  for (i = 0; i < n; i++) {
    const char *argv[4] = {"HSET", rc->keys.kill, ids[i], "1"};
    if (rconn_append(c, 4, argv, NULL)) return;
  }
  {
    const char *argv[3] = {"EXPIRE", rc->keys.kill, ttl};
    if (rconn_append(c, 3, argv, NULL)) return;
  }
  for (i = 0; i <= n; i++) {
    redisReply *r = rconn_reply(c);
    if (r == NULL) return;
    freeReplyObject(r);
  }
}

void rclient_force_cancel(pool *p, future *f) {
  rclient *rc = RC(p);
  rtask *rt;
  char id[1][64];
  int sent;
  pthread_mutex_lock(&rc->lock);
  rt = table_of(rc, f);
  if (rt) table_take(rc, rt->seq);
  sent = rt && rt->sent;
  pthread_mutex_unlock(&rc->lock);
  if (!sent) return;   /* (none, or the sender's: it drops it) */
  snprintf(id[0], sizeof id[0], "%s-%" PRIu32, rc->cid, rt->seq);
  pthread_mutex_lock(&rc->cmd_lock);
  send_kills(rc, id, 1);
  pthread_mutex_unlock(&rc->cmd_lock);
  pool_task_done(p, rt->t);
  free(rt);
}

void rclient_abort(pool *p) {
  rclient *rc = RC(p);
  rtask *all = NULL, *rt;
  char (*ids)[64];
  size_t i, n = 0;
  if (rc == NULL) return;
  pthread_mutex_lock(&rc->lock);
  ids = malloc((rc->count ? rc->count : 1) * sizeof *ids);
  for (i = 0; i < rc->nbuckets; i++) {
    while ((rt = rc->buckets[i]) != NULL) {
      rc->buckets[i] = rt->next;
      rt->next = all;
      all = rt;
      if (ids && rt->sent) snprintf(ids[n++], sizeof ids[0], "%s-%" PRIu32, rc->cid, rt->seq);
    }
  }
  rc->count = 0;
  pthread_cond_broadcast(&rc->sent_cond);
  pthread_mutex_unlock(&rc->lock);
  /* Ours now: the sender and the listener no longer find them. */
  while ((rt = all) != NULL) {
    all = rt->next;
    if (future_settle(rt->t->f, FS_CANCELLED, NULL, 0, NULL) == 0)
      atomic_fetch_add(&p->stopped, 1);
    if (!rt->sent) continue;   /* (the sender still holds it: it drops it) */
    pool_task_done(p, rt->t);
    free(rt);
  }
  if (ids) {
    pthread_mutex_lock(&rc->cmd_lock);
    send_kills(rc, ids, n);
    pthread_mutex_unlock(&rc->cmd_lock);
  }
  free(ids);
  atomic_store(&rc->stop, 1);
  rclient_wake(p);
  wake_listener(rc);
}

void rclient_cancel_queued(pool *p) {
  rclient *rc = RC(p);
  future **fs;
  size_t i, n = 0;
  rtask *rt;
  pthread_mutex_lock(&rc->lock);
  fs = malloc((rc->count ? rc->count : 1) * sizeof *fs);
  for (i = 0; fs && i < rc->nbuckets; i++)
    for (rt = rc->buckets[i]; rt; rt = rt->next) {
      fs[n] = rt->t->f;
      future_ref(fs[n++]);
    }
  pthread_mutex_unlock(&rc->lock);
  for (i = 0; i < n; i++) {
    future_cancel(fs[i]);
    future_unref(fs[i]);
  }
  free(fs);
}

void rclient_join(pool *p) {
  rclient *rc = RC(p);
  if (rc == NULL) return;
  if (rc->started >= 1) pthread_join(rc->sender, NULL);
  if (rc->started >= 2) pthread_join(rc->listener, NULL);
  rc->started = 0;
}

void rclient_free(pool *p) {
  rclient *rc = RC(p);
  size_t i;
  if (rc == NULL) return;
  for (i = 0; rc->buckets && i < rc->nbuckets; i++) {
    rtask *rt, *next;
    for (rt = rc->buckets[i]; rt; rt = next) {
      next = rt->next;
      pool_task_free(rt->t);
      free(rt);
    }
  }
  free(rc->buckets);
  rconn_close(&rc->cmd);
  if (rc->efd >= 0) close(rc->efd);
  pthread_mutex_destroy(&rc->lock);
  pthread_mutex_destroy(&rc->cmd_lock);
  pthread_cond_destroy(&rc->sent_cond);
  free(rc);
  p->rc = NULL;
}

static void set_int(lua_State *L, const char *k, long long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

void rclient_stats(lua_State *L, pool *p) {
  rclient *rc = RC(p);
  long long inflight, workers = -1, backlog = -1, busy = -1;
  rconn *c;
  pthread_mutex_lock(&rc->lock);
  inflight = (long long)rc->count;
  pthread_mutex_unlock(&rc->lock);
  pthread_mutex_lock(&rc->cmd_lock);
  /* The fleet, as the server sees it: one try to connect, no waiting (a
   * server that is away leaves those fields out). */
  if ((c = rconn_ready(&rc->cmd, 0)) != NULL) {
    char now[32];
    redisReply *r;
    snprintf(now, sizeof now, "%.3f", rkeys_wallclock());
    {
      const char *a1[4] = {"ZCOUNT", rc->keys.workers, now, "+inf"};
      const char *a2[2] = {"XLEN", rc->keys.stream};
      const char *a3[3] = {"XPENDING", rc->keys.stream, RKEYS_GROUP};
      if (!rconn_append(c, 4, a1, NULL) && !rconn_append(c, 2, a2, NULL) &&
          !rconn_append(c, 3, a3, NULL)) {
        if ((r = rconn_reply(c)) != NULL) {
          if (r->type == REDIS_REPLY_INTEGER) workers = r->integer;
          freeReplyObject(r);
        }
        if ((r = rconn_reply(c)) != NULL) {
          if (r->type == REDIS_REPLY_INTEGER) backlog = r->integer;
          freeReplyObject(r);
        }
        if ((r = rconn_reply(c)) != NULL) {
          if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
              r->element[0]->type == REDIS_REPLY_INTEGER)
            busy = r->element[0]->integer;
          freeReplyObject(r);
        }
      }
    }
  }
  pthread_mutex_unlock(&rc->cmd_lock);
  if (busy >= 0 && backlog >= 0) backlog -= busy;
  set_int(L, "submitted", atomic_load(&p->submitted));
  set_int(L, "in_flight", inflight);
  set_int(L, "completed", atomic_load(&rc->completed));
  set_int(L, "redelivered", atomic_load(&rc->redelivered));
  set_int(L, "dead_lettered", atomic_load(&rc->dead_lettered));
  set_int(L, "refused", atomic_load(&rc->refused));
  if (workers >= 0) set_int(L, "workers", workers);
  if (busy >= 0) set_int(L, "busy", busy);
  if (backlog >= 0) set_int(L, "backlog", backlog < 0 ? 0 : backlog);
  set_int(L, "timed_out", atomic_load(&rc->timed_out));
  lua_pushboolean(L, !atomic_load(&rc->down));
  lua_setfield(L, -2, "connected");
  lua_pushstring(L, rc->where);
  lua_setfield(L, -2, "url");
  lua_pushstring(L, rc->keys.queue);
  lua_setfield(L, -2, "queue");
}
