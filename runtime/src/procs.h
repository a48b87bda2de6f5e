/*
 * procs.h -- the process pool's supervisor (procs_*).
 *
 * A process pool is a pool (pool.h) whose tasks run in worker processes:
 * the weft-worker program started by exec (child_spawn), one socket each,
 * spoken to in frames (frame.h).  One supervisor thread owns them all: it
 * hands queued tasks out, reads the answers and settles the futures,
 * enforces deadlines (SIGTERM, then SIGKILL after kill_grace), carries out
 * forced cancels, recycles workers after max_tasks_per_worker, and starts a
 * replacement for every worker that dies.  A death fails only the task that
 * worker was running (kind worker_died, naming the signal or exit status);
 * the tasks queued behind it go back to the front of the queue.
 */
#ifndef WEFT_PROCS_H
#define WEFT_PROCS_H

#include <lua.h>

#include "pool.h"

typedef struct procs_opts {
  const char *worker_path;   /* the weft-worker program */
  double kill_grace;         /* seconds from SIGTERM to SIGKILL */
  long max_tasks;            /* tasks per worker process before it is
                                replaced; 0: no limit */
} procs_opts;

/* Starts p's supervisor, which starts the workers.  Returns 0 or an errno. */
int procs_start(pool *p, const procs_opts *o);

/* Wakes the supervisor: work was queued, the pool shut down, or a forced
 * cancel is waiting (any thread). */
void procs_wake(pool *p);

/* Asks the supervisor to stop the attempt running for f, if one is
 * (the owner's thread; f has been or is about to be settled cancelled). */
void procs_force_cancel(pool *p, future *f);

/* pool_cancel_pending and pool_refresh (future.h) for process pools. */
int procs_cancel_pending(pool *p, future *f);
void procs_refresh(future *f);

/* Adds the tasks the workers have started (first attempts) and are
 * running now to *started and *busy. */
void procs_counts(pool *p, long *started, long *busy);

/* Stops every running task (its future ends cancelled) and cancels what
 * comes back from the workers: the pool is being torn down. */
void procs_abort(pool *p);

/* Joins the supervisor once it has said it is gone (p->nalive is 0). */
void procs_join(pool *p);

/* Frees what procs_start allocated (from pool_unref). */
void procs_free(pool *p);

/* Adds `restarts` and `pids` to the stats table at the top of L. */
void procs_stats(lua_State *L, pool *p);

#endif
