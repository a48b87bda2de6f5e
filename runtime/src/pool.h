/*
 * pool.h -- executors that run tasks in this process (pool_*): the thread
 * pool, and the inline executor (a pool of one that runs in the caller).
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

typedef enum { POOL_INLINE, POOL_THREADS } pool_kind;

typedef struct task {
  struct task *next;
  struct task *wprev, *wnext;   /* pool->waiting (guarded by pool->lock) */
  future *f;
  struct pool *pool;
  /* One allocation holds the task, then blobs[], deps[] and msg bytes. */
  char *msg;
  size_t len;
  proto_blob **blobs;           /* owned references */
  size_t nblobs;
  future **deps;                /* owned references */
  size_t ndeps;
  atomic_int pending;           /* unsettled dependencies (+1 while submitting) */
  size_t size;                  /* bytes allocated, for reuse */
  int waiting;                  /* on pool->waiting */
} task;

typedef struct pool_stats {
  atomic_long queued, busy, completed, failed, cancelled, timed_out;
} pool_stats;

typedef struct flink {
  struct flink *next;
  future *f;
} flink;

typedef struct worker {
  struct pool *pool;
  pthread_t thread;
  int index;
  int started;
} worker;

typedef struct pool {
  atomic_int refs;
  pool_kind kind;
  pthread_mutex_t lock;          /* rank 1 ("pool"); may take a home lock */
  pthread_cond_t work;           /* tasks queued, or shutdown */
  task *head, *tail;             /* ready to run */
  task *waiting;                 /* accepted, waiting on dependencies */
  int nidle;                     /* workers asleep on `work` */
  int nwaking;                   /* of those, signalled and not yet up */
  int spinning;                  /* a worker polls the queue before sleeping */
  atomic_int qlen;               /* tasks in head..tail (read while spinning) */
  int shutdown;                  /* no more submits */
  int joined;
  atomic_int nalive;             /* worker threads still running */
  int nworkers;
  worker *workers;
  home *home;                    /* the owner, woken when workers exit */
  char *name;
  char *path, *cpath;            /* package.path/cpath for worker states */
  char *init_msg;                /* encoded init call, or NULL */
  size_t init_len;
  proto_blob **init_blobs;
  size_t ninit_blobs;
  flink *failed;                 /* failed futures, for the shutdown report */
  buf encbuf;                    /* the owner's encode buffer, reused */
  /* Finished tasks come back from the workers for reuse (p->lock), so
   * task memory does not ping-pong between malloc arenas. */
  task *free_tasks;
  int nfree;
  task *spare;                   /* owner's: taken from free_tasks */
  size_t nfailed, nfailed_pruned;
  pool_stats stats;
} pool;

void pool_ref(pool *p);
void pool_unref(pool *p);

/* Registers the executor constructors and methods into the module table at
 * the top of the stack. */
void pool_open(lua_State *L);

#endif
