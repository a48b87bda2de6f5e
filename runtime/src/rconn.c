/*
 * rconn.c -- Redis connections: URLs, AUTH, SELECT, back-off (rconn.h).
 */
#include "rconn.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deadline.h"

/* === URLs ================================================================ */

static int hexval(int c) {
  return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

/* Copies s[0..n) percent-decoded into out; -1 if it does not fit or a %
 * escape is bad. */
static int decode(const char *s, size_t n, char *out, size_t size) {
  size_t i, o = 0;
  for (i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) return -1;
      c = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
      i += 2;
    }
    if (o + 1 >= size) return -1;
    out[o++] = (char)c;
  }
  out[o] = '\0';
  return 0;
}

static int parse_int(const char *s, size_t n, long lo, long hi, long *v) {
  char tmp[32], *end;
  if (n == 0 || n >= sizeof tmp) return -1;
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  errno = 0;
  *v = strtol(tmp, &end, 10);
  return *end || errno || !isdigit((unsigned char)tmp[0]) || *v < lo || *v > hi ? -1 : 0;
}

#define BAD(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* The query string: db= and queue=. */
static int parse_query(const char *q, rconn_addr *a, char *err, size_t errlen) {
  while (q && *q) {
    const char *amp = strchr(q, '&'), *eq;
    size_t n = amp ? (size_t)(amp - q) : strlen(q);
    long v;
    eq = memchr(q, '=', n);
    if (eq == NULL) return BAD("the URL's query part %.*s is not name=value", (int)n, q);
    if ((size_t)(eq - q) == 5 && memcmp(q, "queue", 5) == 0) {
      if (decode(eq + 1, n - 6, a->queue, sizeof a->queue) || a->queue[0] == '\0')
        return BAD("the URL's queue name is empty, too long or badly escaped");
    } else if ((size_t)(eq - q) == 2 && memcmp(q, "db", 2) == 0) {
      if (parse_int(eq + 1, n - 3, 0, 1 << 20, &v))
        return BAD("the URL's db must be a number, got %.*s", (int)(n - 3), eq + 1);
      a->db = (int)v;
    } else {
      return BAD("the URL has an unknown parameter %.*s (known: queue, db)", (int)(eq - q), q);
    }
    q = amp ? amp + 1 : NULL;
  }
  return 0;
}

int rconn_parse_url(const char *url, rconn_addr *a, char *err, size_t errlen) {
  const char *s, *at, *slash, *query, *hostend, *colon;
  char path[1024];
  memset(a, 0, sizeof *a);
  a->port = 6379;
  if (strncmp(url, "unix://", 7) == 0) {
    s = url + 7;
    query = strchr(s, '?');
    if (decode(s, query ? (size_t)(query - s) : strlen(s), path, sizeof path) || path[0] != '/')
      return BAD("%s: a unix:// URL needs an absolute socket path, as in unix:///run/redis.sock",
                 url);
    snprintf(a->path, sizeof a->path, "%s", path);
    return parse_query(query ? query + 1 : NULL, a, err, errlen);
  }
  if (strncmp(url, "redis://", 8) != 0)
    return BAD("%s: not a Redis URL (redis://[user:password@]host[:port][/db][?queue=name] "
               "or unix:///path/to/redis.sock)", url);
  s = url + 8;
  query = strchr(s, '?');
  slash = strchr(s, '/');
  if (query && slash && slash > query) slash = NULL;
  hostend = slash ? slash : query ? query : s + strlen(s);
  at = memchr(s, '@', (size_t)(hostend - s));
  if (at) {   /* user:password@ */
    const char *c = memchr(s, ':', (size_t)(at - s));
    if (c == NULL) return BAD("%s: the credentials must read user:password@ (or :password@)", url);
    if (decode(s, (size_t)(c - s), a->user, sizeof a->user) ||
        decode(c + 1, (size_t)(at - c - 1), a->pass, sizeof a->pass))
      return BAD("%s: the user name or password is too long or badly escaped", url);
    s = at + 1;
  }
  colon = memchr(s, ':', (size_t)(hostend - s));
  if ((colon ? colon : hostend) == s) return BAD("%s: the URL names no host", url);
  if ((size_t)((colon ? colon : hostend) - s) >= sizeof a->host)
    return BAD("%s: the host name is too long", url);
  memcpy(a->host, s, (size_t)((colon ? colon : hostend) - s));
  if (colon) {
    long v;
    if (parse_int(colon + 1, (size_t)(hostend - colon - 1), 1, 65535, &v))
      return BAD("%s: the port must be a number from 1 to 65535, got %.*s", url,
                 (int)(hostend - colon - 1), colon + 1);
    a->port = (int)v;
  }
  if (slash) {
    const char *dbend = query ? query : slash + strlen(slash);
    long v;
    if (dbend > slash + 1 && parse_int(slash + 1, (size_t)(dbend - slash - 1), 0, 1 << 20, &v))
      return BAD("%s: the database must be a number, as in redis://host:6379/0, got %.*s", url,
                 (int)(dbend - slash - 1), slash + 1);
    if (dbend > slash + 1) a->db = (int)v;
  }
  if (parse_query(query ? query + 1 : NULL, a, err, errlen)) {
    char why[256];
    snprintf(why, sizeof why, "%s", err);
    return BAD("%s: %s", url, why);
  }
  return 0;
}

void rconn_describe(const rconn_addr *a, char *out, size_t size) {
  if (a->path[0])
    snprintf(out, size, "unix://%s%s", a->path, a->db ? "?db=" : "");
  else
    snprintf(out, size, "redis://%s:%d/%d", a->host, a->port, a->db);
  if (a->path[0] && a->db) {
    size_t n = strlen(out);
    snprintf(out + n, size > n ? size - n : 0, "%d", a->db);
  }
}

/* === connections ========================================================= */

/* A write to a connection the server closed raises SIGPIPE, which would
 * kill the program (a weft worker, or the application of a client).  Each
 * call that may write blocks it for its thread and drops the one it
 * raised. */
static void pipe_block(sigset_t *old) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &s, old);
}

static void pipe_restore(const sigset_t *old) {
  sigset_t s, pending;
  struct timespec zero = {0, 0};
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  if (!sigismember(old, SIGPIPE) && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
    while (sigtimedwait(&s, NULL, &zero) > 0) {}
  pthread_sigmask(SIG_SETMASK, old, NULL);
}

void rconn_init(rconn *rc, const rconn_addr *a, double timeout) {
  memset(rc, 0, sizeof *rc);
  rc->addr = a;
  rc->timeout = timeout;
  rc->backoff = 0.05;
}

static struct timeval tv_of(double s) {
  struct timeval tv;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
  return tv;
}

void rconn_close(rconn *rc) {
  if (rc->c) redisFree(rc->c);
  rc->c = NULL;
}

void rconn_set_timeout(rconn *rc, double seconds) {
  if (rc->c) redisSetTimeout(rc->c, tv_of(seconds));
}

/* The server stopped serving us (from now, unless it had already). */
static void mark_down(rconn *rc) {
  if (rc->down_since == 0) rc->down_since = weft_now();
}

int rconn_transient(const redisReply *r) {
  static const char *const words[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"};
  size_t i, n;
  if (r == NULL || r->type != REDIS_REPLY_ERROR || r->str == NULL) return 0;
  for (i = 0; i < sizeof words / sizeof *words; i++) {
    n = strlen(words[i]);   /* (the whole first word: BUSYGROUP is another matter) */
    if (strncmp(r->str, words[i], n) == 0 && (r->str[n] == ' ' || r->str[n] == '\0')) return 1;
  }
  return 0;
}

double rconn_down_for(const rconn *rc) {
  return rc->down_since > 0 ? weft_now() - rc->down_since : 0;
}

/* After a reply: a transient error marks the server down (and says so in
 * rc->err), anything else marks it up. */
static void note_reply(rconn *rc, const redisReply *r) {
  if (rconn_transient(r)) {
    char where[1100];
    rconn_describe(rc->addr, where, sizeof where);
    snprintf(rc->err, sizeof rc->err, "Redis at %s answers %s", where, r->str);
    mark_down(rc);
  } else {
    rc->down_since = 0;
  }
}

static void fail(rconn *rc, const char *what) {
  char where[1100];
  mark_down(rc);
  rconn_describe(rc->addr, where, sizeof where);
  snprintf(rc->err, sizeof rc->err, "%s Redis at %s: %s", what, where,
           rc->c && rc->c->errstr[0] ? rc->c->errstr : "connection lost");
  rconn_close(rc);
}

static int open_unguarded(rconn *rc);

int rconn_open(rconn *rc) {
  sigset_t old;
  int r;
  if (rc->c) return 0;
  pipe_block(&old);
  r = open_unguarded(rc);
  pipe_restore(&old);
  return r;
}

static int open_unguarded(rconn *rc) {
  const rconn_addr *a = rc->addr;
  redisReply *r;
  char where[1100];
  if (rc->c) return 0;
  rc->auth_failed = 0;
  rc->c = a->path[0] ? redisConnectUnixWithTimeout(a->path, tv_of(rc->timeout))
                     : redisConnectWithTimeout(a->host, a->port, tv_of(rc->timeout));
  if (rc->c == NULL) {
    snprintf(rc->err, sizeof rc->err, "cannot connect to Redis: out of memory");
    mark_down(rc);
    return -1;
  }
  if (rc->c->err) {
    fail(rc, "cannot connect to");
    return -1;
  }
  /* Not inherited by the programs a task or the application starts: a
   * child holding our socket would keep a dead connection open. */
  fcntl(rc->c->fd, F_SETFD, fcntl(rc->c->fd, F_GETFD) | FD_CLOEXEC);
  redisSetTimeout(rc->c, tv_of(rc->timeout));
  if (!a->path[0]) redisEnableKeepAlive(rc->c);
  rconn_describe(a, where, sizeof where);
  if (a->pass[0]) {
    r = a->user[0] ? redisCommand(rc->c, "AUTH %s %s", a->user, a->pass)
                   : redisCommand(rc->c, "AUTH %s", a->pass);
    if (r == NULL) {
      fail(rc, "lost");
      return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      snprintf(rc->err, sizeof rc->err, "Redis at %s refused the authentication (AUTH): %s",
               where, r->str);
      rc->auth_failed = 1;
      freeReplyObject(r);
      rconn_close(rc);
      mark_down(rc);
      return -1;
    }
    freeReplyObject(r);
  }
  r = redisCommand(rc->c, "SELECT %d", a->db);
  if (r == NULL) {
    fail(rc, "lost");
    return -1;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    snprintf(rc->err, sizeof rc->err, "Redis at %s: SELECT %d: %s%s", where, a->db, r->str,
             strstr(r->str, "NOAUTH") ? " (the server wants a password: put it in the URL, "
                                        "redis://:password@host:port/db)" : "");
    rc->auth_failed = strstr(r->str, "NOAUTH") != NULL;
    freeReplyObject(r);
    rconn_close(rc);
    mark_down(rc);
    return -1;
  }
  freeReplyObject(r);
  rc->backoff = 0.05;
  return 0;
}

int rconn_sleep(double seconds, atomic_int *stop, double deadline) {
  double until = weft_now() + seconds;
  for (;;) {   /* in slices, so a stop is heard */
    struct timespec ts = {0, 20 * 1000 * 1000};
    if ((stop && atomic_load(stop)) || (deadline >= 0 && weft_now() >= deadline)) return -1;
    if (weft_now() >= until) return 0;
    nanosleep(&ts, NULL);
  }
}

int rconn_ensure(rconn *rc, atomic_int *stop, double deadline) {
  while (rconn_open(rc) != 0) {
    double pause = rc->backoff;
    rc->backoff = fmin(2.0, rc->backoff * 2);
    if (rconn_sleep(pause, stop, deadline) != 0) return -1;
  }
  return 0;
}

rconn *rconn_ready(rconn *rc, double patience) {
  if (rc->c == NULL && rconn_ensure(rc, NULL, weft_now() + patience) != 0) return NULL;
  return rc;
}

int rconn_create_group(rconn *rc, const char *stream, const char *group) {
  const char *argv[6] = {"XGROUP", "CREATE", stream, group, "0", "MKSTREAM"};
  redisReply *r = rconn_cmd(rc, 6, argv, NULL);
  int ok;
  if (r == NULL) return -1;
  ok = r->type != REDIS_REPLY_ERROR || strncmp(r->str, "BUSYGROUP", 9) == 0;
  if (!ok)
    snprintf(rc->err, sizeof rc->err, "cannot create the consumer group %s of %s: %s", group,
             stream, r->str);
  freeReplyObject(r);
  return ok ? 0 : -1;
}

redisReply *rconn_cmd(rconn *rc, int argc, const char **argv, const size_t *lens) {
  redisReply *r;
  sigset_t old;
  if (rc->c == NULL) return NULL;
  pipe_block(&old);
  r = redisCommandArgv(rc->c, argc, argv, lens);
  pipe_restore(&old);
  if (r == NULL) fail(rc, "lost the connection to");
  else note_reply(rc, r);
  return r;
}

int rconn_append(rconn *rc, int argc, const char **argv, const size_t *lens) {
  if (rc->c == NULL) return -1;
  if (redisAppendCommandArgv(rc->c, argc, argv, lens) != REDIS_OK) {
    fail(rc, "lost the connection to");
    return -1;
  }
  return 0;
}

redisReply *rconn_reply(rconn *rc) {
  void *r = NULL;
  sigset_t old;
  int rc_;
  if (rc->c == NULL) return NULL;
  pipe_block(&old);
  rc_ = redisGetReply(rc->c, &r);
  pipe_restore(&old);
  if (rc_ != REDIS_OK || r == NULL) {
    fail(rc, "lost the connection to");
    return NULL;
  }
  note_reply(rc, r);
  return r;
}

redisReply *rconn_cmdf(rconn *rc, const char *fmt, ...) {
  va_list ap;
  redisReply *r;
  sigset_t old;
  if (rc->c == NULL) return NULL;
  pipe_block(&old);
  va_start(ap, fmt);
  r = redisvCommand(rc->c, fmt, ap);
  va_end(ap);
  pipe_restore(&old);
  if (r == NULL) fail(rc, "lost the connection to");
  else note_reply(rc, r);
  return r;
}

/* === what the server's configuration allows ============================ */

/* CONFIG GET name: the value into out; 0, 1 when CONFIG is refused (the
 * reply in out), -1 when the connection failed. */
static int config_get(rconn *rc, const char *name, char *out, size_t size) {
  const char *argv[3] = {"CONFIG", "GET", name};
  redisReply *r = rconn_cmd(rc, 3, argv, NULL);
  int status = 1;
  if (r == NULL) return -1;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
      r->element[1]->type == REDIS_REPLY_STRING) {
    snprintf(out, size, "%s", r->element[1]->str);
    status = 0;
  } else {
    snprintf(out, size, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "no such setting");
  }
  freeReplyObject(r);
  return status;
}

int rconn_check_eviction(rconn *rc, int allow, const char *insist, char *msg, size_t size) {
  char policy[256], maxmem[256] = "", where[1100];
  int a, b = 0;
  rconn_describe(rc->addr, where, sizeof where);
  msg[0] = '\0';
  if ((a = config_get(rc, "maxmemory-policy", policy, sizeof policy)) < 0 ||
      (a == 0 && (b = config_get(rc, "maxmemory", maxmem, sizeof maxmem)) < 0))
    return -2;
  if (a == 0 && b == 1) {   /* (policy readable, maxmemory not: unlikely) */
    snprintf(policy, sizeof policy, "%s", maxmem);
    a = 1;
  }
  if (a == 1) {
    snprintf(msg, size,
             "cannot read the eviction policy of Redis at %s (CONFIG GET maxmemory-policy: %s); "
             "make sure it is noeviction (or maxmemory 0): a server that evicts keys can "
             "lose the queue's tasks", where, policy);
    return 1;
  }
  if (strcmp(policy, "noeviction") == 0 || strtoll(maxmem, NULL, 10) == 0) return 0;
  snprintf(msg, size,
           "Redis at %s may evict keys (maxmemory %s bytes, maxmemory-policy %s): the queue's "
           "tasks and results could vanish.  Set maxmemory-policy noeviction (CONFIG SET "
           "maxmemory-policy noeviction, and in redis.conf)%s%s%s",
           where, maxmem, policy, allow ? "" : ", or pass ", allow ? "" : insist,
           allow ? "" : " to run anyway");
  return allow ? 1 : -1;
}

long long rconn_max_bulk(rconn *rc) {
  char v[64];
  int a = config_get(rc, "proto-max-bulk-len", v, sizeof v);
  if (a < 0) return -1;
  return a == 0 ? strtoll(v, NULL, 10) : 0;
}
