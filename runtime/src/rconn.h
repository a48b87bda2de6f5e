/*
 * rconn.h -- connections to a Redis server for the Redis executor and
 * `weft worker` (rconn_*): the address a URL names, connecting with AUTH
 * and SELECT, and reconnecting with back-off.
 *
 *   redis://[user:password@]host[:port][/db][?queue=q]
 *   unix:///path/to/redis.sock[?db=n&queue=q]
 *
 * Each connection is blocking and belongs to one thread at a time.
 */
#ifndef WEFT_RCONN_H
#define WEFT_RCONN_H

#include <hiredis/hiredis.h>
#include <stdatomic.h>

typedef struct rconn_addr {
  char host[256];              /* "" for a Unix socket */
  int port;
  char path[1024];             /* the socket, or "" */
  char user[128], pass[256];
  int db;
  char queue[128];             /* "" when the URL names none */
} rconn_addr;

/* Parses url into *a; 0, or -1 with a message a user can act on in err. */
int rconn_parse_url(const char *url, rconn_addr *a, char *err, size_t errlen);
/* The address for messages, without the password. */
void rconn_describe(const rconn_addr *a, char *out, size_t size);

typedef struct rconn {
  const rconn_addr *addr;
  redisContext *c;             /* NULL while disconnected */
  double timeout;              /* seconds for connect and each reply */
  double backoff;              /* the next wait before reconnecting */
  int auth_failed;             /* the server refused our credentials */
  /* weft_now() when the server stopped serving us (a failed connect, a
   * lost connection, or a transient error reply: see rconn_transient);
   * 0 once a command got any other reply.  A successful connect does
   * not clear it: a server loading its data takes AUTH and SELECT and
   * refuses the rest. */
  double down_since;
  char err[2400];               /* why the last connect or command failed */
} rconn;

/* 1 when r is an error reply a server gives while it cannot serve for a
 * while and the command should be sent again later: LOADING (it reads
 * its AOF or RDB), BUSY (a script runs too long), TRYAGAIN, MASTERDOWN. */
int rconn_transient(const redisReply *r);
/* Seconds since the server stopped serving us, 0 while it serves. */
double rconn_down_for(const rconn *rc);

void rconn_init(rconn *rc, const rconn_addr *a, double timeout);
/* Connects (AUTH, SELECT) unless connected: 0, or -1 with rc->err. */
int rconn_open(rconn *rc);
/* Sleeps `seconds`, in slices: -1 as soon as *stop becomes non-zero or
 * `deadline` (weft_now() based, < 0: none) passes, else 0. */
int rconn_sleep(double seconds, atomic_int *stop, double deadline);
/* Connects, retrying with back-off (50 ms doubling to 2 s) until it works,
 * *stop becomes non-zero or `deadline` (weft_now() based, < 0: none)
 * passes.  0 when connected. */
int rconn_ensure(rconn *rc, atomic_int *stop, double deadline);
void rconn_close(rconn *rc);
/* rc, connected within `patience` seconds (retrying with back-off), or
 * NULL with rc->err. */
rconn *rconn_ready(rconn *rc, double patience);
/* Creates the consumer group `group` of `stream` (and the stream) unless
 * it exists, reading from the start: 0, or -1 with rc->err. */
int rconn_create_group(rconn *rc, const char *stream, const char *group);
/* Sets the reply timeout (for blocking commands that wait longer). */
void rconn_set_timeout(rconn *rc, double seconds);

/* Runs one command; the reply (free with freeReplyObject), or NULL when
 * the connection failed (it is then closed, rc->err says why).  A Redis
 * error reply is returned as a reply of type REDIS_REPLY_ERROR. */
redisReply *rconn_cmd(rconn *rc, int argc, const char **argv, const size_t *lens);
/* Appends a command to the pipeline; send and read with rconn_reply. */
int rconn_append(rconn *rc, int argc, const char **argv, const size_t *lens);
redisReply *rconn_reply(rconn *rc);

/* At connect: may the server evict keys (maxmemory set and a
 * maxmemory-policy other than noeviction)?  Evicted stream keys are lost
 * tasks.  0: it may not (msg ""); 1: go on, with the warning in msg (it
 * may and `allow` is set, or CONFIG GET is denied, by an ACL say, so no
 * one can tell); -1: refuse, the reason and the fix in msg; -2: the
 * connection failed (rc->err).  `insist` names the option that allows
 * eviction, for the messages. */
int rconn_check_eviction(rconn *rc, int allow, const char *insist, char *msg, size_t size);

/* The server's proto-max-bulk-len (the largest string it takes), or 0
 * when it does not say (CONFIG denied); -1 when the connection failed. */
long long rconn_max_bulk(rconn *rc);

/* Runs a command given as printf-style text (no binary arguments). */
redisReply *rconn_cmdf(rconn *rc, const char *fmt, ...);

#endif
