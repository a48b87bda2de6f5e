/*
 * rclient.h -- the Redis executor's client side (rclient_*).
 *
 * A Redis executor is a pool (pool.h) whose tasks run on `weft worker`
 * processes anywhere (rworker.h).  Dependencies, the queue and the futures
 * are the pool's; what this part adds is the trip through the server:
 *
 *   - the sender thread takes ready tasks off the pool's queue, signs them
 *     (rmsg.h) and adds each to the stream weft:<queue>:tasks (XADD,
 *     pipelined), remembering its entry id;
 *   - the listener thread blocks on this client's own result list
 *     (BLMPOP on weft:<queue>:client:<id>) and settles the futures; a list,
 *     not pub/sub, so no result is lost while it reconnects;
 *   - the owner's connection carries cancels: a queued entry is deleted by
 *     a script that checks, atomically, that no worker has read it; a
 *     forced cancel leaves a kill mark the workers honour (rworker.c).
 *
 * Lost connections are retried with back-off on each thread, and so are
 * the commands a server refuses for a while (LOADING, BUSY, TRYAGAIN,
 * MASTERDOWN: rconn_transient).  A task is resent when its XADD got no
 * answer (delivery is at-least-once: the first result settles the
 * future, later ones are ignored).  While the server is gone, a task
 * whose timeout passes fails with kind broken, and once it has been gone
 * for the reconnect window every task in flight fails so, saying for how
 * long (and a task submitted while it stays gone fails after one more
 * try to reach it).
 */
#ifndef WEFT_RCLIENT_H
#define WEFT_RCLIENT_H

#include <lua.h>

#include "pool.h"

typedef struct rclient_opts {
  const char *url;
  const char *queue;           /* NULL: the URL's, else "default" */
  const char *secret;          /* NULL or "": messages are not signed */
  size_t secret_len;
  double result_ttl;           /* seconds results are kept on the server */
  double message_ttl;          /* seconds a task may wait for a worker (0: 24 h) */
  int max_deliveries;
  double reconnect_window;     /* seconds the server may be away before tasks fail */
  int allow_eviction;          /* a server that may evict keys: warn, not refuse */
  double max_message;          /* bytes a task message may have (0: the default) */
  char warning[1600];          /* out: a warning for the user, or "" */
} rclient_opts;

/* Connects (the calling thread), then starts p's sender and listener.
 * 0, or -1 with a message in err and *kind (WK_CONFIG or WK_BROKEN). */
int rclient_start(pool *p, rclient_opts *o, int *kind, char *err, size_t errlen);

/* The default of max_message: well under the server's own default limit
 * (proto-max-bulk-len, 512 MB), so a message that is too big fails at
 * once, on our side, instead of breaking the connection. */
#define RCLIENT_MAX_MESSAGE (64.0 * 1024 * 1024)

/* 0 when a task message of `len` bytes may be sent; else -1 with a
 * message in err (kind serialization), naming `what`, the size and the
 * limit. */
int rclient_check_size(pool *p, const char *what, size_t len, char *err, size_t errlen);

/* Work was queued, or the pool shut down (any thread). */
void rclient_wake(pool *p);

/* pool_cancel_pending and pool_force_cancel for Redis executors (the
 * owner's thread). */
int rclient_cancel_pending(pool *p, future *f);
void rclient_force_cancel(pool *p, future *f);

/* shutdown{cancel_futures = true}: cancels the tasks in flight that no
 * worker has read (the owner's thread). */
void rclient_cancel_queued(pool *p);

/* Cancels everything in flight (kill marks for what runs): the pool is
 * being torn down. */
void rclient_abort(pool *p);
void rclient_join(pool *p);
void rclient_free(pool *p);

/* Fills the stats table at the top of L. */
void rclient_stats(lua_State *L, pool *p);

#endif
