/*
 * pool.h -- executors (pool_*): the thread pool, the process pool (whose
 * supervisor lives in procs.c) and the inline executor (a pool of one that
 * runs in the caller).  They share the submit path, the queue, dependencies,
 * retries and stats; only who runs a task differs.
 *
 * A pool only creates futures and settles them; waiting lives in future.c.
 */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>

#include "buf.h"
#include "future.h"
#include "proto.h"
#include "run.h"
#include "stop.h"

typedef enum { POOL_INLINE, POOL_THREADS, POOL_PROCESSES, POOL_REDIS } pool_kind;

struct worker;
struct procs;
struct rclient;

typedef struct task {
  struct task *next;
  struct task *wprev, *wnext;   /* pool->waiting or pool->delayed (pool->lock) */
  future *f;
  struct pool *pool;
  /* One allocation holds the task, then delays[], blobs[], deps[] and the
   * msg bytes. */
  char *msg;
  size_t len;
  proto_blob **blobs;           /* owned references */
  size_t nblobs;
  future **deps;                /* owned references */
  size_t ndeps;
  atomic_int pending;           /* unsettled dependencies (+1 while submitting) */
  size_t size;                  /* bytes allocated, for reuse */
  int waiting;                  /* TASK_DEPS: on pool->waiting; TASK_DELAYED:
                                   on pool->delayed, until retry_timer fires */
  /* From the task's metadata (weft.task) and the executor's defaults. */
  double timeout;               /* seconds per attempt, < 0: none */
  int retries;                  /* attempts after the first failed one */
  int attempt;                  /* 1-based number of the current attempt */
  int begun;                    /* its future was moved to running */
  double *delays;               /* before retry k: delays[min(k, ndelays) - 1] */
  int ndelays;
  dl_timer retry_timer;
  struct worker *worker;        /* the worker running the attempt */
  int outside;                  /* the message came from another process
                                   (Redis): it is decoded as untrusted */
} task;

enum { TASK_DEPS = 1, TASK_DELAYED = 2 };

typedef struct flink {
  struct flink *next;
  future *f;
} flink;

#define CACHE_LINE 64
#define POOL_FREE_TASKS 64
#define POOL_SPARES 16
#define POOL_RING 1024           /* owner-submitted tasks in flight, lock-free */

/* A slot of the owner's submission ring (Vyukov's bounded queue with one
 * producer): seq == pos when free for the producer's pos, pos + 1 when it
 * holds the task for the consumers' pos. */
typedef struct ring_cell {
  atomic_size_t seq;
  struct task *t;
} ring_cell;

/* A worker: its counters, written only by that worker (the inline
 * executor's single slot by its owner, a process pool's slots by its
 * supervisor) and read by stats(); and what it runs now, for deadlines and
 * forced cancels.  Workers are never freed before their pool: a replaced
 * worker stays on pool->all. */
typedef struct worker {
  _Alignas(CACHE_LINE) atomic_long started, completed, failed;
  atomic_int busy;
  struct pool *pool;
  struct worker *next_all;     /* pool->all */
  pthread_t thread;
  int index;
  int running;                 /* the thread was created */
  /* Guarded by lock, rank 2 ("worker"): taken with no pool lock held; a
   * home or stop lock may be taken under it. */
  pthread_mutex_t lock;
  task *task;                  /* the attempt running now, or NULL */
  stop_level *level;           /* ...and its stop level, while it may be stopped */
  unsigned seq, stuck_seq;     /* attempts started; the one `stuck` watches */
  int abandoned;               /* stuck in C: replaced, exits when it returns */
  dl_timer stuck;              /* a stopped attempt that has not returned */
  stop_ctx ctx;                /* the thread's stop context */
  /* A block of the thread's own malloc arena, freed with the pool (see
   * "giving memory back" in pool.c), or NULL. */
  void *trim_token;
  size_t idle_kb;              /* its Lua state's size after the last idle collection */
} worker;

/* Fields are grouped by who writes them, one cache line apart, so the
 * submitter and the workers do not steal each other's lines on every task:
 *   - the queue (p->lock) is the one line everybody must share;
 *   - the owner's line: only the submitting state's thread writes it;
 *   - counters per worker (struct worker).
 * stats() derives `queued` as submitted - started - cancelled - dep_failed.
 * Timeouts are counted in pool->timed_out (whoever settles them). */
typedef struct pool {
  /* === set at creation, then read-only ==================================*/
  pool_kind kind;
  int nworkers;
  worker **slots;                /* nworkers (1 for inline); a stuck worker's
                                    slot gets its replacement (pool->lock) */
  _Atomic(worker *) all;         /* every worker ever started, for stats */
  double timeout;                /* default seconds per task, < 0: none */
  home *home;                    /* the owner, woken when workers exit */
  char *name;
  char *path, *cpath;            /* package.path/cpath for worker states */
  char *init_msg;                /* encoded init call, or NULL */
  size_t init_len;
  ring_cell *ring;               /* POOL_RING cells (not inline) */
  struct procs *procs;           /* a process pool's supervisor */
  struct rclient *rc;            /* a Redis executor's client (rclient.h) */

  /* === the queue: guarded by lock =======================================*/
  _Alignas(CACHE_LINE) pthread_mutex_t lock;   /* rank 1 ("pool"); may take a home lock */
  pthread_cond_t work;           /* tasks queued, or shutdown */
  task *head, *tail;             /* ready to run */
  task *waiting;                 /* accepted, waiting on dependencies */
  task *delayed;                 /* failed attempts waiting to be retried */
  int nwaking;                   /* sleepers signalled and not yet up */
  int shutdown;                  /* no more submits (read unlocked by owner) */
  /* Finished tasks come back from the workers for reuse, so task memory
   * does not ping-pong between malloc arenas.  A stack of pointers, not a
   * list through the tasks: a worker never writes into a task it is done
   * with, so the submitter does not have to fetch that line back. */
  task *free_tasks[POOL_FREE_TASKS];
  int nfree;
  flink *failed;                 /* failed futures, for the shutdown report */
  atomic_long nfailed;           /* its length (read by the owner unlocked) */
  atomic_int qlen;               /* tasks in head..tail (read while spinning) */

  /* === the owner's thread only ===========================================*/
  _Alignas(CACHE_LINE) atomic_int refs;   /* counted by the owner's futures */
  int joined;
  task *spares[POOL_SPARES];     /* taken from free_tasks in batches */
  int nspares;
  size_t ring_tail;              /* the producer's position in `ring` */
  buf encbuf;                    /* the encode buffer, reused */
  proto_keep blobs;              /* every function blob sent to this pool */
  atomic_long submitted;         /* written by the owner, read by stats */
  atomic_long cancelled;         /* pending tasks cancelled (owner's thread) */
  atomic_long stopped;           /* running tasks cancelled with force */
  long prune_at;                 /* prune `failed` when it grows past this */

  /* === the consumers' position in `ring` ================================*/
  _Alignas(CACHE_LINE) atomic_size_t ring_head;

  /* === sleepers: changed by workers going idle, read by every submit ====*/
  _Alignas(CACHE_LINE) atomic_int nidle;   /* workers asleep on `work` (or
                                              the supervisor in poll) */
  atomic_int spinning;           /* a worker polls the queues before sleeping */

  /* === rare, from any thread =============================================*/
  _Alignas(CACHE_LINE) atomic_long dep_failed;   /* failed by a dependency */
  atomic_long timed_out;         /* failed by their deadline */
  atomic_int nalive;             /* worker threads still running */
  atomic_int tokens_released;    /* the workers' trim tokens were freed */
  struct pool *next_orphan;      /* home->orphans (the home's thread) */
} pool;

void pool_ref(pool *p);
void pool_unref(pool *p);

/* Counter updates by their only writer: no read-modify-write needed. */
static inline void pool_bump(atomic_long *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* The i-th dependency of t as its message reads it: the encoded results of
 * a finished future (data NULL when it did not finish). */
static inline wire_dep task_dep(const task *t, size_t i) {
  future *d = t->deps[i];
  wire_dep dep = {NULL, 0};
  if (future_state(d) == FS_FINISHED) {
    dep.data = d->data;
    dep.len = d->len;
  }
  return dep;
}

/* --- for the process supervisor (procs.c) ------------------------------- */

/* What became of a task after an attempt. */
enum { TASK_DONE, TASK_KEPT, TASK_ABANDONED };

worker *pool_worker_new(pool *p, int index);
/* Starts a thread of p's (counted in p->nalive, holding a reference on p)
 * with every asynchronous signal blocked: Ctrl-C and friends reach the
 * program's own threads.  stack 0: the default size.  0 or an errno. */
int pool_start_thread(pool *p, pthread_t *thread, void *(*fn)(void *), void *arg,
                      size_t stack);
/* Queues a ready task at the back; pool_requeue at the front. */
void pool_enqueue(pool *p, task *t);
void pool_requeue(pool *p, task *t);
/* The next queued task, or NULL at once when there is none. */
task *pool_poll(pool *p);
int pool_has_queued(pool *p);
/* Shut down, nothing queued, and nothing can be queued any more. */
int pool_is_drained(pool *p);
/* Starts an attempt of t on w: 0 when its future was cancelled meanwhile
 * (drop the task). */
int pool_attempt_start(worker *w, task *t);
/* An attempt ended: `kind` is 0 when it ran to the end (out holds its
 * outcome, taken over), else WK_TIMEOUT or WK_CANCELLED when it was
 * stopped.  Settles the future, or schedules a retry (TASK_KEPT). */
int pool_attempt_end(pool *p, worker *w, task *t, run_outcome *out, int kind);
void pool_task_retry(pool *p, task *t);
/* Drops a finished task's references, keeping its memory for reuse. */
void pool_task_done(pool *p, task *t);
void pool_task_free(task *t);
void pool_settle_timeout(pool *p, future *f, double seconds);
/* A Redis executor's task got its outcome from the server (any thread):
 * settles its future with `state` and `data` (taken over) and counts it. */
void pool_remote_done(pool *p, future *f, int state, char *data, size_t len);
void pool_wake_owner(pool *p);

/* Submits a task message made by another process (a Redis task: a
 * self-contained wire message, decoded untrusted) with its dependencies'
 * results; pushes its future.  For `weft worker` (rworker.c). */
void pool_submit_outside(lua_State *L, pool *p, const char *msg, size_t len,
                         const wire_dep *deps, size_t ndeps, const char *name, double timeout,
                         int retries, const double *delays, int ndelays);

/* The executor at idx (raises kind config for anything else). */
pool *pool_from_lua(lua_State *L, int idx);

/* weft_shutdown: every executor L made is shut down now, queued tasks
 * cancelled and running ones stopped. */
void pool_abort_all(lua_State *L);
/* weft_set_default_workers. */
void pool_set_default_workers(int n);

/* Gives free heap memory back to the system (malloc_trim), at most every
 * POOL_TRIM_INTERVAL seconds: a call within that time of the last trim
 * arms one on the deadline service instead.  Any thread. */
void pool_give_back(void);

/* Registers the executor constructors and methods into the module table at
 * the top of the stack. */
void pool_open(lua_State *L);

#endif
