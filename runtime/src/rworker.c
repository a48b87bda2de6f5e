/*
 * rworker.c -- `weft worker`: serving a Redis executor's queue (rworker.h).
 */
#include "rworker.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "deadline.h"
#include "future.h"
#include "log.h"
#include "pool.h"
#include "rconn.h"
#include "rkeys.h"
#include "rmsg.h"
#include "wire.h"

#define CMD_TIMEOUT 5.0
#define FETCH_BLOCK_MS "1000"
/* Without --prefetch, a worker holds its running tasks plus up to
 * HOLD_BUDGET seconds of queued ones (by the running average of its
 * tasks' times), at least one more a slot and at most HOLD_MAX more a
 * slot: short tasks are taken in batches (a round trip per task would
 * cap the rate), long ones are left in the stream for idle workers. */
#define HOLD_BUDGET 0.05
#define HOLD_MAX 16

/* An entry this worker holds: handed in by the fetcher, run as a local
 * task, held until its result is written (or it is refused).  On w->held
 * (w->lock) the whole time, so the heartbeat keeps it fresh. */
typedef struct entry {
  struct entry *prev, *next;       /* w->held */
  struct entry *next_in;           /* w->inbox, then w->done */
  char id[48];                     /* the stream entry */
  char task[64];                   /* the task id ("" until parsed; w->lock) */
  uint32_t deliveries;
  char *m, *s;                     /* the fields (s NULL when unsigned) */
  size_t mlen, slen;
  /* The owner's, once parsed: */
  char *reply;
  uint32_t ttl;
  char nonce[RMSG_NONCE];
  double expires;                  /* (server clock) */
  /* Whether it may run, as the fetcher found before handing it in
   * (prejudge): V_NONE when it did not ask, else the server's verdict. */
  int verdict;
  double verdict_at;               /* V_EXPIRED: the server's time */
  char seen_in[48];                /* V_SEEN: the entry that has its nonce */
  future *f;                       /* the local task's future */
  int fref;                        /* its userdata in the registry */
  int answered;                    /* its result message is made (w->done) */
  int timed_out;
  double started;                  /* wall clock */
  buf result;                      /* the result message, once done */
} entry;

typedef struct rworker {
  lua_State *L;
  pool *local;
  rconn_addr addr;
  char where[1100];
  rkeys keys;
  rmsg_key key;
  char consumer[128];
  double heartbeat, claim_idle;
  double window;                   /* --reconnect-window, seconds */
  size_t max_message;              /* bytes a result may have (--max-message, the server's) */
  char limit_why[100];             /* where that limit comes from */
  int slots;                       /* tasks the local pool runs at once */
  int prefetch;                    /* --prefetch: entries held at most, 0: adaptive */
  _Atomic double avg;              /* running average of a task's time, s (0: none yet) */
  int efd;                         /* wakes the owner */
  atomic_int stopping;             /* no new entries (SIGTERM) */
  atomic_int hb_stop;
  atomic_int fetching;             /* the fetcher still runs */
  atomic_llong fetch_client;       /* the fetcher's CLIENT ID, 0: none */
  /* Guarded by lock, rank 0: no other lock is taken under it. */
  pthread_mutex_t lock;
  pthread_cond_t room;             /* an entry was let go, or stopping */
  pthread_cond_t tick;             /* the heartbeat's sleep */
  entry *held;                     /* every entry held */
  int nheld;
  entry *inbox, *inbox_tail;       /* handed in, not looked at yet */
  char (*kills)[64];               /* task ids with kill marks */
  size_t nkills, capkills;
  int ready;                       /* the fetcher has connected once */
  char fetch_err[2400];            /* why the fetcher cannot connect */
  double fetch_down;               /* weft_now() since the fetcher is not served, 0: it is */
  /* The owner's: */
  rconn cmd;
  entry *done, *done_tail;         /* results to write */
  entry *retry;                    /* parsed, not admitted yet (server away) */
  struct outlog *logs, **logs_tail;   /* log messages to send before them */
  long served, refused;
} rworker;

/* A weft.log record of a task, on its way back to the task's client. */
typedef struct outlog {
  struct outlog *next;
  char *reply;                     /* the client's list */
  buf msg;
} outlog;

static volatile sig_atomic_t got_signal;
static int signal_efd = -1;

static void on_signal(int sig) {
  uint64_t one = 1;
  int saved = errno;
  got_signal = sig;
  if (signal_efd >= 0) (void)!write(signal_efd, &one, sizeof one);
  errno = saved;
}

static void say(rworker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(rworker *w, const char *fmt, ...) {
  va_list ap;
  (void)w;
  va_start(ap, fmt);
  fputs("weft worker: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stderr);
}

static void wake_owner(rworker *w) {
  uint64_t one = 1;
  (void)!write(w->efd, &one, sizeof one);
}

static void entry_free(entry *e) {
  free(e->m);
  free(e->reply);
  buf_free(&e->result);
  free(e);
}

/* Lets go of e (its result is written, or it was refused): off the held
 * list, and the fetcher has room again. */
static void release(rworker *w, entry *e) {
  pthread_mutex_lock(&w->lock);
  if (e->prev) e->prev->next = e->next; else w->held = e->next;
  if (e->next) e->next->prev = e->prev;
  w->nheld--;
  pthread_cond_signal(&w->room);
  pthread_mutex_unlock(&w->lock);
  if (e->f) {
    luaL_unref(w->L, LUA_REGISTRYINDEX, e->fref);
    future_unref(e->f);
  }
  entry_free(e);
}

/* === replies to arrays of entries ======================================= */

/* Copies one [id, [field, value...]] entry; NULL when it has no `m`
 * (deleted meanwhile) or is malformed. */
static entry *entry_of(redisReply *x, uint32_t deliveries) {
  redisReply *fields;
  entry *e;
  const redisReply *m = NULL, *s = NULL;
  size_t i;
  if (x->type != REDIS_REPLY_ARRAY || x->elements != 2 ||
      x->element[0]->type != REDIS_REPLY_STRING || x->element[0]->len >= sizeof e->id)
    return NULL;
  fields = x->element[1];
  e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  memcpy(e->id, x->element[0]->str, x->element[0]->len);
  e->deliveries = deliveries;
  e->fref = LUA_NOREF;
  if (fields->type == REDIS_REPLY_ARRAY) {
    for (i = 0; i + 1 < fields->elements; i += 2) {
      redisReply *k = fields->element[i], *v = fields->element[i + 1];
      if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || k->len != 1) continue;
      if (k->str[0] == 'm') m = v;
      if (k->str[0] == 's') s = v;
    }
  }
  /* One allocation for both fields (m may be empty: still an entry to
   * refuse). */
  e->m = malloc((m ? m->len : 0) + (s ? s->len : 0) + 1);
  if (e->m == NULL) {
    free(e);
    return NULL;
  }
  if (m) memcpy(e->m, m->str, e->mlen = m->len);
  if (s) {
    e->s = e->m + e->mlen;
    memcpy(e->s, s->str, e->slen = s->len);
  }
  return e;
}

/* Hands entries to the owner (they are held from here on). */
static void hand_in(rworker *w, entry *list) {
  pthread_mutex_lock(&w->lock);
  while (list) {
    entry *e = list;
    list = e->next_in;
    e->next_in = NULL;
    e->prev = NULL;
    e->next = w->held;
    if (w->held) w->held->prev = e;
    w->held = e;
    w->nheld++;
    if (w->inbox_tail) w->inbox_tail->next_in = e; else w->inbox = e;
    w->inbox_tail = e;
  }
  pthread_mutex_unlock(&w->lock);
  wake_owner(w);
}

/* Verdicts on entries (ADMIT_LUA). */
enum { V_NONE, V_OK, V_SEEN, V_EXPIRED };

static void prejudge(rworker *w, rconn *c, entry *list);

/* === the fetcher ======================================================== */

/* Claims up to `room` entries idle for claim_idle seconds (their worker
 * is gone); returns them as a list. */
static entry *claim(rworker *w, rconn *c, int room) {
  char idle[32], count[16];
  const char *argv[8] = {"XPENDING", w->keys.stream, RKEYS_GROUP, "IDLE", idle, "-", "+", count};
  redisReply *r, *got;
  entry *list = NULL, **tail = &list;
  const char **cargv;
  uint32_t *counts;
  size_t i, n;
  snprintf(idle, sizeof idle, "%lld", (long long)(w->claim_idle * 1000));
  snprintf(count, sizeof count, "%d", room);
  if ((r = rconn_cmd(c, 8, argv, NULL)) == NULL) return NULL;
  n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
  if (n == 0) {
    freeReplyObject(r);
    return NULL;
  }
  cargv = malloc((n + 5) * sizeof *cargv);
  counts = malloc(n * sizeof *counts);
  if (cargv == NULL || counts == NULL) {
    free(cargv);
    free(counts);
    freeReplyObject(r);
    return NULL;
  }
  cargv[0] = "XCLAIM";
  cargv[1] = w->keys.stream;
  cargv[2] = RKEYS_GROUP;
  cargv[3] = w->consumer;
  cargv[4] = idle;
  for (i = 0; i < n; i++) {   /* [id, consumer, idle, deliveries] */
    redisReply *x = r->element[i];
    if (x->type != REDIS_REPLY_ARRAY || x->elements < 4 ||
        x->element[0]->type != REDIS_REPLY_STRING) {
      n = i;
      break;
    }
    cargv[5 + i] = x->element[0]->str;
    counts[i] = (uint32_t)x->element[3]->integer;
  }
  got = n ? rconn_cmd(c, (int)(5 + n), cargv, NULL) : NULL;
  /* XCLAIM answers in the order asked, skipping entries that went away
   * (deleted, or claimed by a quicker worker): match them by id. */
  for (i = 0; got && got->type == REDIS_REPLY_ARRAY && i < got->elements; i++) {
    redisReply *x = got->element[i];
    size_t j;
    uint32_t deliveries = 1;
    entry *e;
    if (x->type != REDIS_REPLY_ARRAY || x->elements != 2) continue;
    for (j = 0; j < n; j++)
      if (strcmp(cargv[5 + j], x->element[0]->str) == 0) deliveries = counts[j] + 1;
    if ((e = entry_of(x, deliveries)) != NULL) {
      *tail = e;
      tail = &e->next_in;
    }
  }
  if (got) freeReplyObject(got);
  freeReplyObject(r);
  free(cargv);
  free(counts);
  return list;
}

/* How many entries the worker may hold now (see HOLD_BUDGET). */
static int capacity(rworker *w) {
  double avg = atomic_load(&w->avg), extra;
  if (w->prefetch > 0) return w->prefetch;
  extra = avg > 0 ? HOLD_BUDGET / avg : 1;
  if (extra > HOLD_MAX * w->slots) extra = HOLD_MAX * w->slots;
  if (extra < w->slots) extra = w->slots;
  return w->slots + (int)extra;
}

static void *fetch_main(void *arg) {
  rworker *w = arg;
  rconn conn;
  double last_claim = 0;
  char count[16];
  const char *argv[10] = {"XREADGROUP", "GROUP", RKEYS_GROUP, w->consumer, "COUNT", count,
                          "BLOCK", FETCH_BLOCK_MS, "STREAMS", NULL};
  const char *full[11];
  rconn_init(&conn, &w->addr, CMD_TIMEOUT + 1.0);
  memcpy(full, argv, sizeof argv);
  full[9] = w->keys.stream;
  full[10] = ">";
  pthread_setname_np(pthread_self(), "weft:rfetch");
  while (!atomic_load(&w->stopping)) {
    redisReply *r;
    entry *list = NULL, **tail = &list;
    int room;
    size_t i, j;
    if (conn.c == NULL) {
      if (rconn_open(&conn) != 0 || rconn_create_group(&conn, w->keys.stream, RKEYS_GROUP) != 0) {
        pthread_mutex_lock(&w->lock);
        snprintf(w->fetch_err, sizeof w->fetch_err, "%s", conn.err);
        w->fetch_down = conn.down_since;
        pthread_mutex_unlock(&w->lock);
        rconn_close(&conn);
        wake_owner(w);
        rconn_ensure(&conn, &w->stopping, weft_now() + 0.5);
        if (conn.c) rconn_close(&conn);   /* (opened: set up again above) */
        continue;
      }
      {   /* its id, so a stop can end its blocking read at once */
        redisReply *id = rconn_cmdf(&conn, "CLIENT ID");
        if (id && id->type == REDIS_REPLY_INTEGER) atomic_store(&w->fetch_client, id->integer);
        if (id) freeReplyObject(id);
      }
      pthread_mutex_lock(&w->lock);
      w->ready = 1;
      w->fetch_err[0] = '\0';
      w->fetch_down = conn.down_since;
      pthread_mutex_unlock(&w->lock);
      wake_owner(w);
    }
    pthread_mutex_lock(&w->lock);
    while ((room = capacity(w) - w->nheld) <= 0 && !atomic_load(&w->stopping)) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 200 * 1000 * 1000;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&w->room, &w->lock, &ts);
    }
    pthread_mutex_unlock(&w->lock);
    if (atomic_load(&w->stopping)) break;
    if (weft_now() - last_claim >= w->claim_idle / 2) {
      last_claim = weft_now();
      if ((list = claim(w, &conn, room)) != NULL) {
        prejudge(w, &conn, list);
        hand_in(w, list);
        continue;
      }
      if (conn.c == NULL) continue;
    }
    snprintf(count, sizeof count, "%d", room);
    if ((r = rconn_cmd(&conn, 11, full, NULL)) == NULL) continue;
    pthread_mutex_lock(&w->lock);
    w->fetch_down = conn.down_since;
    if (conn.down_since == 0) w->fetch_err[0] = '\0';
    else snprintf(w->fetch_err, sizeof w->fetch_err, "%s", conn.err);
    pthread_mutex_unlock(&w->lock);
    if (conn.down_since == 0) conn.backoff = 0.05;
    if (rconn_transient(r)) {   /* loading, busy: asked again after a pause */
      double pause = conn.backoff;
      conn.backoff = fmin(2.0, conn.backoff * 2);
      wake_owner(w);
      rconn_sleep(pause, &w->stopping, -1);
    } else if (r->type == REDIS_REPLY_ERROR) {
      if (strncmp(r->str, "NOGROUP", 7) == 0) {   /* the server lost its data */
        rconn_create_group(&conn, w->keys.stream, RKEYS_GROUP);
      } else {
        say(w, "reading %s: %s", w->keys.stream, r->str);
        rconn_close(&conn);
      }
    } else if (r->type == REDIS_REPLY_ARRAY) {   /* [[stream, [entry...]]] */
      for (i = 0; i < r->elements; i++) {
        redisReply *s = r->element[i];
        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
            s->element[1]->type != REDIS_REPLY_ARRAY)
          continue;
        for (j = 0; j < s->element[1]->elements; j++) {
          entry *e = entry_of(s->element[1]->element[j], 1);
          if (e) {
            *tail = e;
            tail = &e->next_in;
          }
        }
      }
      if (list) {
        prejudge(w, &conn, list);
        hand_in(w, list);
      }
    }
    freeReplyObject(r);
  }
  rconn_close(&conn);
  atomic_store(&w->fetching, 0);
  wake_owner(w);
  return NULL;
}

/* === the heartbeat ====================================================== */

/* Resets the idle time of the entries still ours (XCLAIM ... JUSTID does
 * not count a delivery); an entry another worker claimed is left alone. */
static const char REFRESH_LUA[] =
    "local n = 0\n"
    "for i = 3, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
    "  if #p > 0 and p[1][2] == ARGV[2] then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

static void beat(rworker *w, rconn *c) {
  const char **argv = NULL, **kargv = NULL;
  char (*ids)[48] = NULL, (*tasks)[64] = NULL, expiry[32];
  size_t n = 0, nt = 0, i;
  entry *e;
  redisReply *r;
  pthread_mutex_lock(&w->lock);
  if (w->nheld > 0) {
    ids = malloc((size_t)w->nheld * sizeof *ids);
    tasks = malloc((size_t)w->nheld * sizeof *tasks);
    for (e = w->held; ids && tasks && e; e = e->next) {
      memcpy(ids[n++], e->id, sizeof e->id);
      if (e->task[0]) memcpy(tasks[nt++], e->task, sizeof e->task);
    }
  }
  pthread_mutex_unlock(&w->lock);
  if (n > 0 && (argv = malloc((n + 6) * sizeof *argv)) != NULL) {
    argv[0] = "EVAL";
    argv[1] = REFRESH_LUA;
    argv[2] = "1";
    argv[3] = w->keys.stream;
    argv[4] = RKEYS_GROUP;
    argv[5] = w->consumer;
    for (i = 0; i < n; i++) argv[6 + i] = ids[i];
    if ((r = rconn_cmd(c, (int)(6 + n), argv, NULL)) != NULL) freeReplyObject(r);
  }
  if (nt > 0 && c->c && (kargv = malloc((nt + 2) * sizeof *kargv)) != NULL) {
    kargv[0] = "HMGET";
    kargv[1] = w->keys.kill;
    for (i = 0; i < nt; i++) kargv[2 + i] = tasks[i];
    if ((r = rconn_cmd(c, (int)(2 + nt), kargv, NULL)) != NULL) {
      int any = 0;
      pthread_mutex_lock(&w->lock);
      for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && i < nt; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING) continue;
        if (w->nkills == w->capkills) {
          size_t cap = w->capkills ? 2 * w->capkills : 8;
          char(*more)[64] = realloc(w->kills, cap * sizeof *more);
          if (more == NULL) break;
          w->kills = more;
          w->capkills = cap;
        }
        memcpy(w->kills[w->nkills++], tasks[i], sizeof tasks[i]);
        any = 1;
      }
      pthread_mutex_unlock(&w->lock);
      freeReplyObject(r);
      if (any) wake_owner(w);
    }
  }
  /* Registered as alive until three beats from now (clients count these). */
  snprintf(expiry, sizeof expiry, "%.3f", rkeys_wallclock() + 3 * w->heartbeat + 1);
  if (c->c) {
    const char *zargv[4] = {"ZADD", w->keys.workers, expiry, w->consumer};
    if ((r = rconn_cmd(c, 4, zargv, NULL)) != NULL) freeReplyObject(r);
  }
  free(argv);
  free(kargv);
  free(ids);
  free(tasks);
}

static void *heartbeat_main(void *arg) {
  rworker *w = arg;
  rconn conn;
  rconn_init(&conn, &w->addr, CMD_TIMEOUT);
  pthread_setname_np(pthread_self(), "weft:rbeat");
  while (!atomic_load(&w->hb_stop)) {
    struct timespec ts;
    double until = rkeys_wallclock() + w->heartbeat;
    if (conn.c || rconn_ensure(&conn, &w->hb_stop, weft_now() + w->heartbeat) == 0) beat(w, &conn);
    pthread_mutex_lock(&w->lock);
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    if (!atomic_load(&w->hb_stop)) pthread_cond_timedwait(&w->tick, &w->lock, &ts);
    pthread_mutex_unlock(&w->lock);
  }
  if (conn.c) {   /* gone: no longer counted */
    const char *argv[3] = {"ZREM", w->keys.workers, w->consumer};
    redisReply *r = rconn_cmd(&conn, 3, argv, NULL);
    if (r) freeReplyObject(r);
  }
  rconn_close(&conn);
  return NULL;
}

/* === the owner: results ================================================= */

/* Writes each result once (the first completion wins), pushes it to its
 * client's list, drops the kill marks, acknowledges and deletes the
 * entries.  ARGV: group, result key prefix, kill hash, then per result:
 * entry, task id, reply list, ttl, message.  What can be done once a
 * batch is (the list TTLs, the kill marks, XACK and XDEL): a short task
 * costs the server two calls. */
static const char RESULT_LUA[] =
    "local kills = redis.call('EXISTS', ARGV[3]) == 1\n"
    "local lists, ids = {}, {}\n"
    "for i = 4, #ARGV, 5 do\n"
    "  if redis.call('SET', ARGV[2] .. ARGV[i + 1], ARGV[i + 4], 'NX', 'EX', ARGV[i + 3]) then\n"
    "    redis.call('RPUSH', ARGV[i + 2], ARGV[i + 4])\n"
    "    lists[ARGV[i + 2]] = ARGV[i + 3]\n"
    "  end\n"
    "  if kills then redis.call('HDEL', ARGV[3], ARGV[i + 1]) end\n"
    "  if ARGV[i] ~= '' then ids[#ids + 1] = ARGV[i] end\n"
    "end\n"
    "for list, ttl in pairs(lists) do redis.call('EXPIRE', list, ttl) end\n"
    "if #ids > 0 then\n"
    "  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))\n"
    "  redis.call('XDEL', KEYS[1], unpack(ids))\n"
    "end\n"
    "return 1\n";

/* Moves an entry to the dead-letter stream, and pushes a refusal notice
 * to its client's list when there is one (ARGV[8..10]: the list, the
 * notice, the list's TTL should it have none).  A dead letter keeps the
 * message but never its signature (field `signature` says what the
 * worker found): put back on the task stream, it is an unsigned entry,
 * which a worker with a secret refuses. */
static const char DEAD_LUA[] =
    "redis.call('XADD', KEYS[2], '*', 'm', ARGV[3], 'reason', ARGV[4], 'signature', ARGV[7],\n"
    "           'deliveries', ARGV[5], 'consumer', ARGV[6], 'entry', ARGV[2])\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "if ARGV[8] then\n"
    "  redis.call('RPUSH', ARGV[8], ARGV[9])\n"
    "  if redis.call('TTL', ARGV[8]) < 0 then redis.call('EXPIRE', ARGV[8], ARGV[10]) end\n"
    "end\n"
    "return 1\n";

/* Admits entries to run, or tells why not, by the server's clock: per
 * entry, ARGV holds its seen key (rkeys.h), its stream entry id and its
 * message's expiry; ARGV[1] is how long a seen mark outlives the expiry.
 * An entry whose nonce was first taken from this very entry id is a
 * redelivery (its worker died, another claimed it: the consumer group
 * delivers the same entry id again) and runs again, expired or not; a
 * nonce first taken from another entry id is a replay (the same signed
 * bytes added again); otherwise an expired message is refused and a
 * fresh one marked.  The mark lives GRACE seconds past the expiry: after
 * that, the expiry alone refuses a copy.  Answers per entry "ok",
 * "seen <entry>" or "expired <server time>". */
static const char ADMIT_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"
    "local grace = tonumber(ARGV[1])\n"
    "local out = {}\n"
    "for i = 2, #ARGV, 3 do\n"
    "  local key, entry, expires = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])\n"
    "  local left = math.max(math.ceil(expires - now), 0)\n"
    "  if now <= expires and redis.call('SET', key, entry, 'NX', 'EX', left + grace) then\n"
    "    out[#out + 1] = 'ok'\n"   /* (the common case: one call) */
    "  else\n"
    "    local held = redis.call('GET', key)\n"
    "    if held == entry then\n"
    "      redis.call('EXPIRE', key, left + grace)\n"
    "      out[#out + 1] = 'ok'\n"
    "    elseif held then\n"
    "      out[#out + 1] = 'seen ' .. held\n"
    "    else\n"
    "      out[#out + 1] = string.format('expired %.3f', now)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Seconds a seen mark outlives its message's expiry (ADMIT_LUA). */
#define SEEN_GRACE "300"

static rconn *owner_conn(rworker *w, double patience) { return rconn_ready(&w->cmd, patience); }

/* The log hook (log.h): a record made by one of our tasks goes to the
 * task's client, on the list its result will take (so it arrives first). */
static int forward_log(void *ctx, const log_record *r) {
  rworker *w = ctx;
  entry *e;
  outlog *o;
  rmsg_log l;
  char who[64] = "", label[300];
  pthread_mutex_lock(&w->lock);
  for (e = w->held; e && e->f != r->f; e = e->next) {}
  pthread_mutex_unlock(&w->lock);
  if (e == NULL || e->reply == NULL || (o = calloc(1, sizeof *o)) == NULL) return 0;
  future_worker_label(r->worker_kind, r->worker_id, who, sizeof who);
  snprintf(label, sizeof label, "%s%s%s", w->consumer, who[0] ? " " : "", who);
  memset(&l, 0, sizeof l);
  l.id.p = e->task;
  l.id.len = strlen(e->task);
  l.nonce.p = e->nonce;
  l.nonce.len = RMSG_NONCE;
  l.level = r->level;
  l.attempt = (uint32_t)r->attempt;
  l.time = r->time;
  l.worker.p = label;
  l.worker.len = strlen(label);
  l.message.p = r->message;
  l.message.len = r->len;
  if ((o->reply = strdup(e->reply)) == NULL || rmsg_put_log(&o->msg, &w->key, &l) != 0 ||
      o->msg.len > w->max_message) {   /* (too big for the server: written here instead) */
    free(o->reply);
    buf_free(&o->msg);
    free(o);
    return 0;   /* (delivered here instead) */
  }
  *w->logs_tail = o;
  w->logs_tail = &o->next;
  return 1;
}

/* Sends the log messages waiting, pipelined; 0 when none is left. */
static int flush_logs(rworker *w) {
  outlog *o;
  rconn *c;
  size_t n = 0, i;
  if (w->logs == NULL) return 0;
  if ((c = owner_conn(w, 0.5)) == NULL) return -1;
  for (o = w->logs; o; o = o->next, n++) {
    const char *argv[3] = {"RPUSH", o->reply, o->msg.data};
    size_t lens[3] = {5, strlen(o->reply), o->msg.len};
    if (rconn_append(c, 3, argv, lens)) return -1;
  }
  for (i = 0; i < n; i++) {
    redisReply *r = rconn_reply(c);
    if (r == NULL) return -1;   /* (all are sent again: a few may come twice) */
    freeReplyObject(r);
  }
  while ((o = w->logs) != NULL) {
    w->logs = o->next;
    free(o->reply);
    buf_free(&o->msg);
    free(o);
  }
  w->logs_tail = &w->logs;
  return 0;
}

/* Results a script call writes at most (the script unpacks their ids),
 * and the bytes after which no more are added to it. */
#define FLUSH_MAX 1000
#define FLUSH_BYTES (64 * 1024 * 1024)

/* Writes the results waiting in w->done, FLUSH_MAX a call; what cannot be
 * written now stays there for the next round. */
static void flush_results(rworker *w) {
  const char **argv = NULL;
  size_t *lens = NULL, i, n;
  char (*ttls)[16] = NULL;
  entry *e;
  rconn *c;
  redisReply *r;
  if (w->done == NULL || flush_logs(w) != 0 || (c = owner_conn(w, 0.5)) == NULL) return;
  argv = malloc((7 + 5 * FLUSH_MAX) * sizeof *argv);
  lens = malloc((7 + 5 * FLUSH_MAX) * sizeof *lens);
  ttls = malloc(FLUSH_MAX * sizeof *ttls);
  if (argv == NULL || lens == NULL || ttls == NULL) goto out;
  argv[0] = "EVAL";
  argv[1] = RESULT_LUA;
  argv[2] = "1";
  argv[3] = w->keys.stream;
  argv[4] = RKEYS_GROUP;
  argv[5] = w->keys.result;
  argv[6] = w->keys.kill;
  for (i = 0; i < 7; i++) lens[i] = strlen(argv[i]);
  while (w->done) {
    int ok;
    size_t bytes = 0;
    /* (a bounded request: the server limits a client's query buffer) */
    for (e = w->done, n = 0; e && n < FLUSH_MAX && (n == 0 || bytes < FLUSH_BYTES);
         e = e->next_in, n++) {
      bytes += e->result.len;
      size_t k = 7 + 5 * n;
      snprintf(ttls[n], sizeof ttls[n], "%u", e->ttl ? e->ttl : 3600u);
      argv[k] = e->id;
      argv[k + 1] = e->task;
      argv[k + 2] = e->reply;
      argv[k + 3] = ttls[n];
      argv[k + 4] = e->result.data;
      lens[k] = strlen(e->id);
      lens[k + 1] = strlen(e->task);
      lens[k + 2] = strlen(e->reply);
      lens[k + 3] = strlen(ttls[n]);
      lens[k + 4] = e->result.len;
    }
    if ((r = rconn_cmd(c, (int)(7 + 5 * n), argv, lens)) == NULL) break;
    ok = r->type != REDIS_REPLY_ERROR;
    if (!ok && !rconn_transient(r))   /* (loading, busy: said by the owner's loop) */
      say(w, "cannot store results: %s (will retry)", r->str);
    freeReplyObject(r);
    if (!ok) break;
    for (i = 0; i < n; i++) {
      e = w->done;
      w->done = e->next_in;
      w->served++;
      release(w, e);
    }
    if (w->done == NULL) w->done_tail = NULL;
  }
out:
  free(argv);
  free(lens);
  free(ttls);
}

static void queue_result(rworker *w, entry *e) {
  e->answered = 1;
  e->next_in = NULL;
  if (w->done_tail) w->done_tail->next_in = e; else w->done = e;
  w->done_tail = e;
}

/* A result for e without running it: cancelled, or failed with `kind`. */
static void result_now(rworker *w, entry *e, int state, weft_kind kind, int flags,
                       const char *msg) {
  rmsg_result r;
  size_t len = 0;
  char *data = state == FS_FAILED ? wire_record(weft_kind_name(kind), msg, NULL, &len) : NULL;
  memset(&r, 0, sizeof r);
  r.id.p = e->task;
  r.id.len = strlen(e->task);
  r.nonce.p = e->nonce;
  r.nonce.len = RMSG_NONCE;
  r.state = state == FS_FAILED && data == NULL ? FS_CANCELLED : state;
  r.flags = flags;
  r.deliveries = e->deliveries;
  r.worker.p = w->consumer;
  r.worker.len = strlen(w->consumer);
  r.started = r.finished = rkeys_wallclock();
  r.outcome.p = data;
  r.outcome.len = len;
  if (rmsg_put_result(&e->result, &w->key, &r) != 0) say(w, "out of memory writing a result");
  free(data);
  queue_result(w, e);
}

/* What the worker found of e's signature, for its dead letter. */
static const char *signature_word(rworker *w, entry *e, int code) {
  if (code == RMSG_R_UNSIGNED) return "none";
  if (code == RMSG_R_BAD_SIGNATURE) return "bad";
  if (!w->key.set) return e->s ? "not checked (signed; this worker has no secret)" : "none";
  return "verified";
}

/* Moves e to the dead-letter stream, with `reason`; `code` is the
 * RMSG_R_* reason to tell its client, or 0 to tell nobody; `at` when it
 * was refused (server clock, 0: now).  0 when done. */
static int dead_letter(rworker *w, entry *e, const char *reason, int code, double at) {
  char deliveries[16], ttl[16], list[512];
  const char *argv[15] = {"EVAL", DEAD_LUA, "2", w->keys.stream, w->keys.dead, RKEYS_GROUP,
                          e->id, e->m, reason, deliveries, w->consumer,
                          signature_word(w, e, code), list, NULL, ttl};
  size_t lens[15];
  rmsg_str id, reply, nonce;
  int version, argc = 12;
  size_t plen = strlen(w->keys.stream) - strlen("tasks");
  buf notice = BUF_INIT;
  rconn *c;
  redisReply *r;
  int i, ok;
  snprintf(deliveries, sizeof deliveries, "%u", e->deliveries);
  /* The notice goes to the list the message names (read without trusting
   * it: see rclient.c, "Refusal notices"), and only to a client list of
   * this queue. */
  if (code > 0 && rmsg_task_address(e->m, e->mlen, &id, &reply, &nonce, &version) == 0 &&
      reply.len > plen + 7 && reply.len < sizeof list &&
      memcmp(reply.p, w->keys.stream, plen) == 0 && memcmp(reply.p + plen, "client:", 7) == 0) {
    rmsg_notice n;
    memset(&n, 0, sizeof n);
    n.id = id;
    n.nonce = nonce;
    n.reason = code;
    n.at = at > 0 ? at : rkeys_wallclock();
    n.worker.p = w->consumer;
    n.worker.len = strlen(w->consumer);
    n.entry.p = e->id;
    n.entry.len = strlen(e->id);
    if (rmsg_put_notice(&notice, &n) == 0) {
      memcpy(list, reply.p, reply.len);
      list[reply.len] = '\0';
      snprintf(ttl, sizeof ttl, "%u", e->ttl ? e->ttl : 3600u);
      argv[13] = notice.data;
      argc = 15;
    }
  }
  for (i = 0; i < argc; i++)   /* (m and the notice are bytes, not strings) */
    lens[i] = i == 7 ? e->mlen : i == 13 ? notice.len : strlen(argv[i]);
  c = owner_conn(w, CMD_TIMEOUT);
  r = c ? rconn_cmd(c, argc, argv, lens) : NULL;
  buf_free(&notice);
  if (r == NULL) return -1;
  ok = r->type != REDIS_REPLY_ERROR;
  if (!ok) say(w, "cannot move entry %s to %s: %s", e->id, w->keys.dead, r->str);
  freeReplyObject(r);
  return ok ? 0 : -1;
}

/* === the owner: running entries ========================================= */

/* The local future of an entry settled (its done-callback, in L). */
static int on_done(lua_State *L) {
  rworker *w = lua_touserdata(L, lua_upvalueindex(1));
  entry *e = lua_touserdata(L, lua_upvalueindex(2));
  future *f = e->f;
  future_meta *m = f->meta;
  rmsg_result r;
  char label[300], who[64] = "";
  char *made = NULL;
  int state = future_state(f);
  memset(&r, 0, sizeof r);
  r.id.p = e->task;
  r.id.len = strlen(e->task);
  r.nonce.p = e->nonce;
  r.nonce.len = RMSG_NONCE;
  r.state = state;
  r.deliveries = e->deliveries;
  if (m)
    future_worker_label(atomic_load(&m->worker_kind), atomic_load(&m->worker_id), who,
                        sizeof who);
  snprintf(label, sizeof label, "%s%s%s", w->consumer, who[0] ? " " : "", who);
  r.worker.p = label;
  r.worker.len = strlen(label);
  r.started = e->started;
  r.finished = rkeys_wallclock();
  {   /* (a time from submit to done: what holding a task costs the others) */
    double avg = atomic_load(&w->avg), t = r.finished - r.started;
    atomic_store(&w->avg, avg > 0 ? avg + (t - avg) / 16 : t);
  }
  if (state == FS_FINISHED || (state == FS_FAILED && f->data)) {
    r.outcome.p = f->data;
    r.outcome.len = f->len;
  } else if (state == FS_FAILED) {   /* (no record: cannot happen here) */
    made = wire_record("task", "the task failed", NULL, &r.outcome.len);
    r.outcome.p = made;
    if (made == NULL) r.state = FS_CANCELLED;
  }
  if (state == FS_FAILED) {   /* timed out? (counted by the client) */
    lua_getfield(L, 1, "exception");
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1)) {
      lua_getfield(L, -1, "kind");
      if (lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "timeout") == 0)
        r.flags |= RMSG_TIMED_OUT;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (rmsg_put_result(&e->result, &w->key, &r) != 0) say(w, "out of memory writing a result");
  free(made);
  if (e->result.len > w->max_message) {
    /* Too big for the server (it would break the connection, and the
     * worker would try again forever): the task fails instead, saying so;
     * the worker goes on. */
    char msg[600];
    size_t len = 0;
    char *data;
    snprintf(msg, sizeof msg,
             "the task's result is %zu bytes, more than the %zu bytes a message to Redis may "
             "have (%s, on worker %s): return large data another way (a file, or a key of "
             "your own), or raise the limit",
             e->result.len, w->max_message, w->limit_why, w->consumer);
    say(w, "task %s: %s", e->task, msg);
    buf_free(&e->result);   /* (the message is made again, in its place) */
    data = wire_record(weft_kind_name(WK_SERIALIZATION), msg, NULL, &len);
    r.state = data ? FS_FAILED : FS_CANCELLED;
    r.flags &= ~RMSG_TIMED_OUT;
    r.outcome.p = data;
    r.outcome.len = len;
    if (rmsg_put_result(&e->result, &w->key, &r) != 0) say(w, "out of memory writing a result");
    free(data);
  }
  queue_result(w, e);
  return 0;
}

/* Submits e's task to the local pool (protected: may raise). */
static int submit_entry(lua_State *L) {
  rworker *w = lua_touserdata(L, 1);
  entry *e = lua_touserdata(L, 2);
  rmsg_task *t = lua_touserdata(L, 3);
  wire_dep small[8], *deps = small;
  rmsg_str d;
  size_t i;
  if (t->ndeps > 8) deps = lua_newuserdatauv(L, t->ndeps * sizeof *deps, 0);
  for (i = 0; i < t->ndeps && rmsg_next_dep(t, &d) == 0; i++) {
    deps[i].data = d.p;
    deps[i].len = d.len;
  }
  {
    char name[129];
    snprintf(name, sizeof name, "%.*s", (int)(t->name.len < 128 ? t->name.len : 128), t->name.p);
    pool_submit_outside(L, w->local, t->message.p, t->message.len, deps, i, name, t->timeout,
                        (int)t->retries, t->delays, (int)t->ndelays);
  }
  e->f = future_check(L, -1);
  future_ref(e->f);
  lua_pushvalue(L, -1);
  e->fref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "add_done_callback");
  lua_pushvalue(L, -2);
  lua_pushlightuserdata(L, w);
  lua_pushlightuserdata(L, e);
  lua_pushcclosure(L, on_done, 2);
  lua_call(L, 2, 0);
  return 0;
}

/* Kill marks left for redelivered entries (a forced cancel that came while
 * no worker held them). */
static int killed(rworker *w, const char *task) {
  const char *argv[3] = {"HEXISTS", w->keys.kill, task};
  rconn *c = owner_conn(w, CMD_TIMEOUT);
  redisReply *r;
  int yes = 0;
  if (c && (r = rconn_cmd(c, 3, argv, NULL)) != NULL) {
    yes = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
  }
  return yes;
}

/* Refuses e: it never runs; it goes to the dead letters, and with a
 * code (RMSG_R_*) its client is told why (dead_letter).  `at`: when, by
 * the server's clock (0: now, by ours). */
static void refuse(rworker *w, entry *e, int code, double at, const char *why) {
  w->refused++;
  say(w, "refused entry %s of %s: %s; moved to %s, not run", e->id, w->keys.stream, why,
      w->keys.dead);
  dead_letter(w, e, why, code, at);
  release(w, e);
}

/* Reads e's task into t, or refuses e (-1).  The first time (e->reply
 * NULL) it also keeps what e needs beyond t: its reply list, result TTL,
 * nonce and expiry. */
static int check_entry(rworker *w, entry *e, rmsg_task *t) {
  const char *why;
  size_t plen = strlen(w->keys.stream) - strlen("tasks");
  int code = rmsg_parse_task(&w->key, e->m, e->mlen, e->s, e->slen, t, &why);
  if (code != 0) {
    refuse(w, e, code, 0, why);
    return -1;
  }
  if (e->reply) return 0;   /* (read before: a retry) */
  /* A reply list must be a client list of this queue: a message may not
   * make the worker write anywhere else.  A signed task naming another
   * queue's list was copied from that queue, where it runs: nobody here
   * waits for it, so nobody is told. */
  if (t->reply.len <= plen + 7 || memcmp(t->reply.p, w->keys.stream, plen) != 0 ||
      memcmp(t->reply.p + plen, "client:", 7) != 0) {
    refuse(w, e, 0, 0, "its reply list is not a client list of this queue");
    return -1;
  }
  e->reply = malloc(t->reply.len + 1);
  if (e->reply == NULL) {
    say(w, "out of memory: entry %s left for another worker", e->id);
    release(w, e);
    return -1;
  }
  memcpy(e->reply, t->reply.p, t->reply.len);
  e->reply[t->reply.len] = '\0';
  e->ttl = t->ttl;
  memcpy(e->nonce, t->nonce.p, RMSG_NONCE);
  e->expires = t->expires;
  return 0;
}

/* Asks the server, on c (NULL: not connected), which of the n entries may
 * run (ADMIT_LUA): its answer (an array of n strings), or NULL when it
 * cannot be asked now. */
static redisReply *admit(rworker *w, rconn *c, entry **es, size_t n) {
  const char **argv = malloc((3 + 1 + 3 * n) * sizeof *argv);
  char (*keys)[200] = malloc(n * sizeof *keys), (*exps)[32] = malloc(n * sizeof *exps);
  redisReply *r = NULL;
  size_t i, j;
  if (argv && keys && exps && c != NULL) {
    argv[0] = "EVAL";
    argv[1] = ADMIT_LUA;
    argv[2] = "0";
    argv[3] = SEEN_GRACE;
    for (i = 0; i < n; i++) {
      int at = snprintf(keys[i], sizeof keys[i], "%s", w->keys.seen);
      for (j = 0; j < RMSG_NONCE; j++)
        at += snprintf(keys[i] + at, sizeof keys[i] - (size_t)at, "%02x",
                       (unsigned char)es[i]->nonce[j]);
      snprintf(exps[i], sizeof exps[i], "%.3f", es[i]->expires);
      argv[4 + 3 * i] = keys[i];
      argv[5 + 3 * i] = es[i]->id;
      argv[6 + 3 * i] = exps[i];
    }
    r = rconn_cmd(c, (int)(4 + 3 * n), argv, NULL);
    if (r && (r->type != REDIS_REPLY_ARRAY || r->elements != n)) {
      say(w, "cannot check entries against replays and expiry: %s (will retry)",
          r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
      freeReplyObject(r);
      r = NULL;
    }
  }
  free(argv);
  free(keys);
  free(exps);
  return r;
}

/* Reads one of ADMIT_LUA's answers into e's verdict. */
static void read_verdict(entry *e, const redisReply *v) {
  const char *s = v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_STATUS ? v->str : "";
  e->verdict = V_NONE;
  if (strcmp(s, "ok") == 0) {
    e->verdict = V_OK;
  } else if (strncmp(s, "seen ", 5) == 0) {
    e->verdict = V_SEEN;
    snprintf(e->seen_in, sizeof e->seen_in, "%s", s + 5);
  } else if (strncmp(s, "expired ", 8) == 0) {
    e->verdict = V_EXPIRED;
    e->verdict_at = atof(s + 8);
  }
}

/* The fetcher's part of admitting entries (the fetcher's thread, on its
 * own connection, before it hands them in): one ADMIT_LUA call for the
 * entries that read as tasks, so that the owner, which runs the tasks,
 * does not wait for that round trip.  Entries that do not read, or that
 * it could not ask about, keep V_NONE: the owner sees to them. */
static void prejudge(rworker *w, rconn *c, entry *list) {
  entry *e, **es;
  rmsg_task t;
  const char *why;
  redisReply *r;
  size_t n = 0, cap = 0, i;
  for (e = list; e; e = e->next_in) cap++;
  if ((es = malloc(cap * sizeof *es)) == NULL) return;
  for (e = list; e; e = e->next_in) {
    if (rmsg_parse_task(&w->key, e->m, e->mlen, e->s, e->slen, &t, &why) != 0) continue;
    memcpy(e->nonce, t.nonce.p, RMSG_NONCE);
    e->expires = t.expires;
    es[n++] = e;
  }
  if (n > 0 && (r = admit(w, c->c ? c : NULL, es, n)) != NULL) {
    for (i = 0; i < n; i++) read_verdict(es[i], r->element[i]);
    freeReplyObject(r);
  }
  free(es);
}

/* Runs an admitted entry (its task read into t). */
static void start_entry(rworker *w, entry *e, rmsg_task *t) {
  lua_State *L = w->L;
  char msg[400];
  if (t->level < atomic_load(&home_of(L)->log_level))   /* (the client filters them again) */
    atomic_store(&home_of(L)->log_level, t->level);
  pthread_mutex_lock(&w->lock);
  snprintf(e->task, sizeof e->task, "%.*s", (int)t->id.len, t->id.p);
  pthread_mutex_unlock(&w->lock);
  if (e->deliveries > 1 && killed(w, e->task)) {
    result_now(w, e, FS_CANCELLED, WK_NONE, 0, NULL);
    return;
  }
  if (t->max_deliveries > 0 && e->deliveries > t->max_deliveries) {
    snprintf(msg, sizeof msg,
             "the task was delivered %u times and its worker died each time (max_deliveries "
             "%u); it was moved to the dead-letter stream %s",
             e->deliveries - 1, t->max_deliveries, w->keys.dead);
    if (dead_letter(w, e, "max_deliveries", 0, 0) == 0) e->id[0] = '\0';   /* (acknowledged) */
    result_now(w, e, FS_FAILED, WK_WORKER_DIED, RMSG_DEAD, msg);
    return;
  }
  e->started = rkeys_wallclock();
  lua_pushcfunction(L, submit_entry);
  lua_pushlightuserdata(L, w);
  lua_pushlightuserdata(L, e);
  lua_pushlightuserdata(L, t);
  if (lua_pcall(L, 3, 0, 0) != 0) {
    snprintf(msg, sizeof msg, "the worker could not start the task: %s",
             lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error)");
    lua_pop(L, 1);
    if (e->f) {   /* (submitted: its callback will answer) */
      say(w, "%s", msg);
      return;
    }
    result_now(w, e, FS_FAILED, WK_BROKEN, 0, msg);
  }
}

/* Takes the entries the fetcher handed in (a list on next_in), and those
 * left to retry: reads each, asks the server in one call which may run
 * (replays and expired messages may not), runs those. */
static void take_entries(rworker *w, entry *in) {
  entry *e, **es, **ask, **tail = &w->retry;
  rmsg_task *ts;
  redisReply *verdicts;
  size_t n = 0, m, cap = 0, i;
  if (w->retry) {   /* (they go first) */
    for (e = w->retry; e->next_in; e = e->next_in) {}
    e->next_in = in;
    in = w->retry;
    w->retry = NULL;
  }
  for (e = in; e; e = e->next_in) cap++;
  if (cap == 0) return;
  es = malloc(2 * cap * sizeof *es);
  ts = malloc(cap * sizeof *ts);
  if (es == NULL || ts == NULL) {
    free(es);
    free(ts);
    w->retry = in;   /* (held: the heartbeat keeps them ours) */
    say(w, "out of memory taking entries (will retry)");
    return;
  }
  ask = es + cap;
  while ((e = in) != NULL) {
    in = e->next_in;
    e->next_in = NULL;
    if (check_entry(w, e, &ts[n]) == 0) es[n++] = e;
  }
  /* Those the fetcher could not ask about: asked here. */
  for (i = 0, m = 0; i < n; i++)
    if (es[i]->verdict == V_NONE) ask[m++] = es[i];
  if (m > 0) {
    if ((verdicts = admit(w, owner_conn(w, CMD_TIMEOUT), ask, m)) != NULL) {
      for (i = 0; i < m; i++) read_verdict(ask[i], verdicts->element[i]);
      freeReplyObject(verdicts);
    }
  }
  for (i = 0; i < n; i++) {
    entry *x = es[i];
    char msg[300];
    switch (x->verdict) {
      case V_OK:
        start_entry(w, x, &ts[i]);
        break;
      case V_SEEN:   /* the first entry of this task answers for it: nobody is told */
        snprintf(msg, sizeof msg,
                 "replayed: the same signed task was first taken from entry %s; a copy "
                 "added again does not run (a client that lost the reply to its XADD "
                 "sends the task again: such copies end here too)",
                 x->seen_in);
        refuse(w, x, 0, 0, msg);
        break;
      case V_EXPIRED:
        snprintf(msg, sizeof msg,
                 "its message had expired %.0f s before (the client's message_ttl, by the "
                 "Redis server's clock)",
                 x->verdict_at - x->expires);
        refuse(w, x, RMSG_R_EXPIRED, x->verdict_at, msg);
        break;
      default:   /* not asked (the server is away): next round, in order */
        *tail = x;
        tail = &x->next_in;
        break;
    }
  }
  *tail = NULL;
  free(es);
  free(ts);
}

/* Forced cancels: stops the local tasks whose kill marks were found. */
static void take_kills(rworker *w, char (*kills)[64], size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    entry *e, *found = NULL;
    pthread_mutex_lock(&w->lock);
    for (e = w->held; e && !found; e = e->next)
      if (e->f && strcmp(e->task, kills[i]) == 0) found = e;
    pthread_mutex_unlock(&w->lock);
    if (found && !FS_IS_FINAL(future_state(found->f))) {
      say(w, "task %s was cancelled with force by its client: stopping it", found->task);
      future_cancel_force(found->f);
    }
  }
}

/* === the owner's loop =================================================== */

static double opt_num(lua_State *L, int t, const char *k, double dflt) {
  double v = lua_getfield(L, t, k) == LUA_TNUMBER ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

static const char *opt_str(lua_State *L, int t, const char *k, size_t *len) {
  const char *s = lua_getfield(L, t, k) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
  lua_pop(L, 1);   /* (t keeps the string alive) */
  return s;
}

int rworker_serve(lua_State *L) {
  rworker *w;
  pool *local = pool_from_lua(L, 1);
  char err[2400];
  const char *url, *queue, *secret, *name, *what;
  size_t secret_len = 0;
  struct sigaction sa, old_term, old_int;
  pthread_t fetcher, beater;
  int cfd, status = 0, said_ready = 0, said_down = 0, giving_up = 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  w = lua_newuserdatauv(L, sizeof *w, 0);   /* (freed with the call's stack) */
  memset(w, 0, sizeof *w);
  w->L = L;
  w->local = local;
  url = opt_str(L, 2, "url", NULL);
  queue = opt_str(L, 2, "queue", NULL);
  secret = opt_str(L, 2, "secret", &secret_len);
  name = opt_str(L, 2, "name", NULL);
  what = opt_str(L, 2, "what", NULL);
  w->heartbeat = opt_num(L, 2, "heartbeat", 1);
  w->claim_idle = opt_num(L, 2, "claim_idle", 10);
  w->window = opt_num(L, 2, "reconnect_window", 60);
  if (!(w->window > 0)) w->window = 60;
  w->slots = local->nworkers;
  w->prefetch = (int)opt_num(L, 2, "prefetch", 0);
  if (url == NULL || rconn_parse_url(url, &w->addr, err, sizeof err) != 0)
    return weft_error(L, WK_CONFIG, "weft worker: %s", url ? err : "no URL");
  rconn_describe(&w->addr, w->where, sizeof w->where);
  if (rkeys_init(&w->keys, queue ? queue : w->addr.queue[0] ? w->addr.queue : "default", err,
                 sizeof err) != 0)
    return weft_error(L, WK_CONFIG, "weft worker: %s", err);
  if (rmsg_key_init(&w->key, secret, secret_len) != 0)
    return weft_error(L, WK_CONFIG, "weft worker: libsodium cannot start");
  if (name && name[0]) {
    snprintf(w->consumer, sizeof w->consumer, "%s", name);
  } else {
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(w->consumer, sizeof w->consumer, "%s:%d", host, (int)getpid());
  }
  rconn_init(&w->cmd, &w->addr, CMD_TIMEOUT);
  if (rconn_open(&w->cmd) != 0) {   /* (waited for: its settings are checked first) */
    if (w->cmd.auth_failed) return weft_error(L, WK_CONFIG, "weft worker: %s", w->cmd.err);
    say(w, "cannot reach Redis: %s (retrying for up to %g s, --reconnect-window)", w->cmd.err,
        w->window);
    if (rconn_ensure(&w->cmd, NULL, weft_now() + w->window) != 0)
      return weft_error(L, w->cmd.auth_failed ? WK_CONFIG : WK_BROKEN,
                        "weft worker: Redis at %s was unreachable for %g s, the reconnect "
                        "window (--reconnect-window): %s", w->where, w->window, w->cmd.err);
  }
  {   /* evicted stream keys are lost tasks */
    char msg[1600];
    int allow = lua_getfield(L, 2, "allow_eviction") == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 1);
    switch (rconn_check_eviction(&w->cmd, allow, "--allow-eviction", msg, sizeof msg)) {
    case -1:
      rconn_close(&w->cmd);
      return weft_error(L, WK_CONFIG, "weft worker: %s", msg);
    case 1:
      say(w, "warning: %s", msg);
      break;
    default:   /* (fine, or lost meanwhile: the threads reconnect) */
      break;
    }
  }
  {   /* the largest result: --max-message, or the server's limit when smaller */
    long long bulk = rconn_max_bulk(&w->cmd);
    double mine = opt_num(L, 2, "max_message", 64.0 * 1024 * 1024);
    w->max_message = (size_t)mine;
    snprintf(w->limit_why, sizeof w->limit_why, "--max-message");
    if (bulk > 0 && (double)bulk < mine) {
      w->max_message = (size_t)bulk;
      snprintf(w->limit_why, sizeof w->limit_why, "the server's proto-max-bulk-len");
    }
  }
  if ((cfd = home_completion_fd(L)) < 0 ||
      (w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
    rconn_close(&w->cmd);
    return weft_error(L, WK_BROKEN, "weft worker: %s", strerror(errno));
  }
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->room, NULL);
  pthread_cond_init(&w->tick, NULL);
  atomic_store(&w->fetching, 1);
  got_signal = 0;
  signal_efd = w->efd;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGINT, &sa, &old_int);
  if (pthread_create(&fetcher, NULL, fetch_main, w) != 0 ||
      pthread_create(&beater, NULL, heartbeat_main, w) != 0) {
    /* (not worth unwinding: the program exits) */
    return weft_error(L, WK_BROKEN, "weft worker: cannot start its threads");
  }
  w->logs_tail = &w->logs;
  log_set_hook(home_of(L), forward_log, w);   /* (taken off before w goes) */
  for (;;) {
    struct pollfd pfd[2] = {{w->efd, POLLIN, 0}, {cfd, POLLIN, 0}};
    entry *in, *e;
    char (*kills)[64];
    size_t nkills;
    int ready;
    double down;
    poll(pfd, 2, w->done || w->retry || giving_up ? 100 : 1000);
    if (pfd[0].revents & POLLIN) {
      uint64_t v;
      (void)!read(w->efd, &v, sizeof v);
    }
    if (got_signal && !atomic_load(&w->stopping)) {
      int n;
      pthread_mutex_lock(&w->lock);
      n = w->nheld;
      atomic_store(&w->stopping, 1);
      pthread_cond_broadcast(&w->room);
      pthread_mutex_unlock(&w->lock);
      say(w, "stopping (%s): finishing %d task%s, taking no new ones",
          got_signal == SIGTERM ? "SIGTERM" : "SIGINT", n, n == 1 ? "" : "s");
      if (atomic_load(&w->fetch_client) > 0) {   /* end the fetcher's blocking read */
        rconn *c = owner_conn(w, 0.5);
        redisReply *r = c ? rconn_cmdf(c, "CLIENT UNBLOCK %lld",
                                       (long long)atomic_load(&w->fetch_client))
                          : NULL;
        if (r) freeReplyObject(r);
      }
    }
    pthread_mutex_lock(&w->lock);
    in = w->inbox;
    w->inbox = w->inbox_tail = NULL;
    kills = w->kills;
    nkills = w->nkills;
    w->kills = NULL;
    w->nkills = w->capkills = 0;
    ready = w->ready;
    if (w->fetch_err[0] && !said_down) {
      say(w, "cannot reach Redis: %s (retrying for up to %g s, --reconnect-window)",
          w->fetch_err, w->window);
      said_down = 1;
    } else if (!w->fetch_err[0] && said_down && said_ready) {
      say(w, "Redis at %s serves again", w->where);
      said_down = 0;
    }
    down = w->fetch_down > 0 ? weft_now() - w->fetch_down : 0;
    snprintf(err, sizeof err, "%s", w->fetch_err);
    pthread_mutex_unlock(&w->lock);
    /* Results waiting that the server will not take count too (the
     * owner's connection is only used while there are some). */
    if (w->done && rconn_down_for(&w->cmd) > down) {
      down = rconn_down_for(&w->cmd);
      snprintf(err, sizeof err, "%s", w->cmd.err);
    }
    if (!giving_up && down >= w->window) {
      /* The server has been away for the whole window: this worker gives
       * up.  What it holds stays pending in the stream (another worker
       * claims it once the server is back); its running tasks are
       * stopped, and it exits with status 1. */
      entry *x;
      future **run;
      int nrun = 0, k;
      say(w, "Redis at %s was unreachable for %.1f s, the reconnect window "
          "(--reconnect-window %g s): %s; giving up: the tasks this worker holds stay in the "
          "stream for other workers, its running tasks are stopped, it exits with status 1",
          w->where, down, w->window, err);
      giving_up = 1;
      status = 1;
      pthread_mutex_lock(&w->lock);
      atomic_store(&w->stopping, 1);
      pthread_cond_broadcast(&w->room);
      run = malloc((w->nheld ? (size_t)w->nheld : 1) * sizeof *run);
      for (x = w->held; run && x; x = x->next)
        if (x->f && !FS_IS_FINAL(future_state(x->f))) {
          future_ref(x->f);
          run[nrun++] = x->f;
        }
      pthread_mutex_unlock(&w->lock);
      for (k = 0; k < nrun; k++) {
        future_cancel_force(run[k]);
        future_unref(run[k]);
      }
      free(run);
    }
    if (ready && !said_ready) {
      said_ready = 1;
      said_down = 0;
      say(w, "ready: queue %s on %s, %s, consumer %s, heartbeat %g s, claim after %g s idle",
          w->keys.queue, w->where, what ? what : "a local pool", w->consumer, w->heartbeat,
          w->claim_idle);
    }
    if (!giving_up) {
      take_entries(w, in);
    } else {
      while ((e = in) != NULL) {   /* let go with the rest, below */
        in = e->next_in;
        e->next_in = NULL;
      }
    }
    take_kills(w, kills, nkills);
    free(kills);
    home_dispatch(L);
    if (giving_up) {   /* done once every task stopped has answered */
      int left = 0;
      if (!atomic_load(&w->fetching)) {
        pthread_mutex_lock(&w->lock);
        for (e = w->held; e; e = e->next)
          if (e->f && !e->answered) left++;
        pthread_mutex_unlock(&w->lock);
        if (left == 0) break;
      }
      continue;
    }
    flush_results(w);
    flush_logs(w);   /* (those of tasks still running) */
    if (atomic_load(&w->stopping) && !atomic_load(&w->fetching)) {
      int n;
      pthread_mutex_lock(&w->lock);
      n = w->nheld + (w->inbox != NULL);
      pthread_mutex_unlock(&w->lock);
      if (n == 0) break;
    }
  }
  log_set_hook(home_of(L), NULL, NULL);
  if (giving_up) {   /* what is held is let go: it stays pending in the stream */
    entry *x;
    pthread_mutex_lock(&w->lock);
    w->inbox = w->inbox_tail = NULL;
    x = w->held;
    pthread_mutex_unlock(&w->lock);
    w->done = w->done_tail = NULL;
    while (x) {
      entry *next = x->next;
      release(w, x);
      x = next;
    }
  }
  while (w->logs) {   /* (unsent: the server is gone) */
    outlog *o = w->logs;
    w->logs = o->next;
    free(o->reply);
    buf_free(&o->msg);
    free(o);
  }
  atomic_store(&w->hb_stop, 1);
  pthread_mutex_lock(&w->lock);
  pthread_cond_broadcast(&w->tick);
  pthread_mutex_unlock(&w->lock);
  pthread_join(fetcher, NULL);
  pthread_join(beater, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  sigaction(SIGINT, &old_int, NULL);
  signal_efd = -1;
  close(w->efd);
  rconn_close(&w->cmd);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->room);
  pthread_cond_destroy(&w->tick);
  say(w, "stopped after %ld task%s (%ld refused)", w->served, w->served == 1 ? "" : "s",
      w->refused);
  lua_pushinteger(L, status);
  return 1;
}
