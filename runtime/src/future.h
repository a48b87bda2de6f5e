/*
 * future.h -- futures, their owners ("homes") and the waits on them.
 *
 * A future is a C object shared by the Lua state that created it (its home)
 * and whatever completes it (a worker thread, a supervisor, the home itself).
 * Its state moves PENDING -> RUNNING -> FINISHED/FAILED, or PENDING ->
 * CANCELLED; a final state is written once, by whoever wins the move to
 * SETTLING, and after that the outcome fields are immutable.
 *
 * A home is the per-lua_State hub: one mutex and condition variable that all
 * waits of that state sleep on, the queue of futures whose done-callbacks
 * must run there, and the lists (waiters, dependent tasks) hung on its
 * futures.  Only the home's own thread runs its Lua code, so callbacks,
 * result decoding and Lua-side caches need no locks.
 */
#ifndef WEFT_FUTURE_H
#define WEFT_FUTURE_H

#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "deadline.h"

enum {
  FS_PENDING,
  FS_RUNNING,
  FS_SETTLING,   /* transient: an outcome is being written */
  FS_FINISHED,
  FS_FAILED,
  FS_CANCELLED
};

#define FS_IS_FINAL(s) ((s) >= FS_FINISHED)

/* Error kinds of API.md; their names are in future.c. */
typedef enum {
  WK_NONE, WK_TASK, WK_TIMEOUT, WK_CANCELLED, WK_DEPENDENCY, WK_SHUTDOWN,
  WK_BROKEN, WK_WORKER_DIED, WK_INVALID_STATE, WK_SERIALIZATION, WK_CONFIG,
  WK_MEMORY,
  WK_COUNT
} weft_kind;

const char *weft_kind_name(weft_kind k);

#define FUTURE_INLINE 16

typedef struct home home;
typedef struct future future;
struct task;
struct pool;

/* Kept under 128 bytes: glibc serves that size from its fast bins. */
struct future {
  atomic_int refs;
  atomic_int state;
  atomic_int watched;          /* someone hung a waiter/dependent/callback */
  /* Guarded by home->lock. */
  unsigned char has_callbacks, queued_done, notified;
  /* Guarded by the home's thread (only it touches these). */
  unsigned char observed, reported;
  atomic_int attempts;         /* attempts started (pools), read once final */
  home *home;                  /* counted reference */
  struct pool *pool;           /* counted reference, or NULL (bare future) */
  /* The outcome, written in SETTLING and immutable once final.  FINISHED:
   * `data` is a tuple message of the results.  FAILED: `data` is a message
   * holding one error-record table, or `cause` is the failed/cancelled
   * upstream future of a dependency failure. */
  char *data;                  /* heap, or inline_data for small outcomes */
  size_t len;
  future *cause;
  /* Guarded by home->lock. */
  struct wlink *waiters;
  struct dlink *dependents;
  future *next_done;           /* link in home->done queue */
  struct future_meta *meta;    /* what is known besides the outcome, or NULL */
  /* A process pool's task waiting in a worker's socket: its claim word in
   * the page shared with that worker (frame.h), and the task's id there.
   * Set and cleared by the supervisor under its claim lock. */
  _Atomic(atomic_uint *) claim;
  uint32_t claim_id;
  /* Small outcomes (one number, a short string) live here, so no
   * allocation crosses threads for them. */
  char inline_data[FUTURE_INLINE];
};

/* What a task's future knows besides its outcome, for error messages, log
 * records and flow-run records (f:info()).  Made at submit, only for
 * weft.task submissions and tasks submitted under a flow label, so plain
 * submits pay nothing.  name, flow and submitted are written before the
 * future is shared and never change; the rest is written by whoever runs
 * or settles the task and read by the home at any time (atomics). */
typedef struct future_meta {
  char *name;                  /* the task's name, or NULL */
  char *flow;                  /* the flow label at submit, or NULL */
  double submitted;            /* weft_now() at submit */
  _Atomic double started;      /* its first attempt began (0: not yet) */
  _Atomic double finished;     /* it settled (0: not yet) */
  atomic_int worker_kind;      /* META_THREAD, META_PROCESS, META_INLINE or 0 */
  atomic_int worker_id;        /* the thread's index, or the process id */
  _Atomic(char *) remote;      /* META_REMOTE: the remote worker's label */
} future_meta;

enum { META_THREAD = 1, META_PROCESS, META_INLINE, META_REMOTE };

/* The task name of f for messages, or NULL. */
static inline const char *future_name(const future *f) {
  return f->meta ? f->meta->name : NULL;
}

/* A worker as f:info() and log records name it: "thread 2", "process
 * 1234", "inline", or "" for none. */
void future_worker_label(int kind, int id, char *out, size_t size);

/* Gives f (new, not shared yet) its meta; -1 when out of memory. */
int future_meta_init(future *f, const char *name, const char *flow);

/* Notes that an attempt of f's task began on a worker at `when`
 * (weft_now()); any thread. */
void future_mark_started(future *f, int worker_kind, int worker_id, double when);
/* Notes that f's task ran on a remote worker (`label`, e.g. "host:123
 * process 456") from `started`, seconds since the epoch; before f
 * settles, by the one thread that settles it. */
void future_mark_remote(future *f, const char *label, double started);

/* A dependent task hung on a future; also a work item once the future
 * settles (see future_settle and pool.c). */
typedef struct dlink {
  struct dlink *next;
  struct task *task;
  future *upstream;
} dlink;

struct home {
  atomic_int refs;
  pthread_mutex_t lock;        /* rank 2 ("home"): after pool locks */
  pthread_cond_t cond;
  int sleeping;                /* the home thread waits on cond */
  future *waiting_on;          /* ...for this future to settle, or NULL */
  future *done_head, *done_tail;   /* futures whose callbacks must run */
  int closed;
  /* The completion source (home_completion_fd): an eventfd, readable while
   * done_head is not empty; -1 until somebody asks for it. */
  int efd;
  int signaled;                /* efd may be readable: dispatch reads it */
  /* The home's thread only: futures with done-callbacks still to run, and
   * how deep in running callbacks it is. */
  long ncallbacks;
  int dispatching;
  /* Log records made by tasks on workers, to be delivered here (log.c);
   * guarded by lock, and the completion source is readable while any
   * wait.  Past LOG_QUEUE_MAX records, more are counted and dropped. */
  struct log_record *log_head, *log_tail;
  long nlogs, dropped_logs;
  /* The home's thread only: records are being delivered (home_dispatch),
   * and a dispatch nested in that delivery left the newer ones queued. */
  int delivering_logs, logs_deferred;
  atomic_int log_level;        /* records below it are not made (log.h) */
  /* The home's thread only: where its tasks' records go instead (log.h,
   * log_set_hook), or NULL. */
  int (*log_hook)(void *ctx, const struct log_record *r);
  void *log_hook_ctx;
  /* The home's thread only: the flow label that tasks submitted now carry
   * (core.set_flow), and the ticker's period and next run (core.set_ticker;
   * 0: none). */
  char *flow;
  double tick_every, tick_at;
  /* Executors collected while their workers ran (pool.c, "orphans"). */
  struct pool *orphans;
  /* Released futures kept for reuse (the home's thread only): creating
   * and collecting futures then costs no malloc and no fresh pages. */
  future *free_futures;
  int nfree;
};

/* === homes === */
/* Called with h->lock held after queuing work for the home's thread:
 * wakes it, makes its completion source readable, and unlocks. */
void home_post_unlock(home *h);
/* Work for the home's thread (h->lock held): callbacks or log records. */
static inline int home_has_work(const home *h) {
  return h->done_head != NULL || h->log_head != NULL;
}

home *home_of(lua_State *L);           /* the calling state's home */
/* A file descriptor that becomes readable when callbacks of L's futures
 * are ready to run (home_dispatch runs them); -1 with errno on failure. */
int home_completion_fd(lua_State *L);
void home_ref(home *h);
void home_unref(home *h);
/* Frees the futures h keeps for reuse (the home's thread only). */
void home_release_spares(home *h);

/* === futures === */
future *future_new(home *h, struct pool *p);
void future_ref(future *f);
void future_unref(future *f);
int future_state(const future *f);

/* PENDING -> RUNNING; returns 0 when the future was cancelled meanwhile. */
int future_start(future *f);
/* Settles f with its outcome (ownership of `data` and of one reference to
 * `cause` pass to f on success).  Returns 0, or -1 when f was already final
 * (then nothing is taken).  Dependent tasks are released or failed before
 * it returns. */
int future_settle(future *f, int state, char *data, size_t len, future *cause);
/* The same, for code already draining a settle: dependents of f are added
 * to `*work` instead of being processed (keeps long chains off the stack). */
int future_settle_into(future *f, int state, char *data, size_t len,
                       future *cause, dlink **work);
/* Hangs task t on f.  Returns 1 when f is already final (nothing hung). */
int future_add_dependent(future *f, struct task *t);
/* Cancels a PENDING future; returns 1 if it is now cancelled. */
int future_cancel(future *f);
/* f:cancel{force = true}: cancels a pending f, or stops its running task;
 * 1 if it did either. */
int future_cancel_force(future *f);

/* The future held by the userdata at idx, or NULL. */
future *future_check(lua_State *L, int idx);
/* Pushes a new future userdata owning one reference to f. */
void future_push(lua_State *L, future *f);

/* Pushes the error object a failed/cancelled future raises. */
void future_push_error(lua_State *L, future *f);

/* Pushes a weft.Error table {kind, message} (no raise). */
void weft_push_error(lua_State *L, weft_kind kind, const char *fmt, ...);
/* Gives the error-record table at the top, and its causes, the weft.Error
 * metatable. */
void weft_bless_error(lua_State *L);
/* Raises a weft.Error of `kind`. */
int weft_error(lua_State *L, weft_kind kind, const char *fmt, ...);
/* Raises kind config for a method called on something that is not its
 * object `what` ("a future"), as obj.method() for obj:method() does;
 * `var` ("f") spells the call in the message. */
int weft_bad_self(lua_State *L, int idx, const char *what, const char *var);

/* Registers futures' methods, module functions and metatables into the
 * table at the top of the stack (the weft.core module). */
void future_open(lua_State *L);

/* Waits until f is final or `deadline` (weft_now() based; < 0 = none)
 * passes, running done-callbacks of this state meanwhile.  Returns 1 when
 * final. */
int future_wait(lua_State *L, future *f, double deadline);
/* Runs the pending done-callbacks of this state; returns how many ran. */
int home_dispatch(lua_State *L);

/* Reads an optional timeout argument (nil/none = -1, else >= 0 seconds);
 * raises kind config for negative, NaN or non-numbers. */
double weft_opt_timeout(lua_State *L, int arg, const char *what);

/* Interrupts.  lua.c (and the weft REPL) stop a running state on Ctrl-C by
 * installing a hook from the signal handler; the hook raises at the next
 * call or instruction.  A wait runs none, so it sleeps in slices and, when
 * the state's hook changes, returns EINTR from home_sleep_watch: the caller
 * releases what it holds and calls home_deliver_interrupt, which makes the
 * hook run (raising "interrupted!" for Ctrl-C). */
typedef struct home_watch {
  lua_Hook hook;
  int mask;
} home_watch;

void home_watch_init(lua_State *L, home_watch *w);
/* Caller holds h->lock.  Returns 0 (woken, or a slice ended), ETIMEDOUT
 * (deadline passed) or EINTR (an interrupt is pending). */
int home_sleep_watch(lua_State *L, home *h, double deadline, home_watch *w);
/* Lets a pending hook run; may raise.  Call with no lock held. */
void home_deliver_interrupt(lua_State *L, home_watch *w);

/* Reports f's error, once, if nobody looked at it (pools, at shutdown). */
void future_report_failure(lua_State *L, future *f);
/* Sleeps on the home's condition (caller holds h->lock) until signalled or
 * `deadline` (weft_now() based, < 0 = none); returns ETIMEDOUT after it. */
int home_sleep(home *h, double deadline);

/* Hooks the pools give us (pool.c) so futures stay executor-agnostic. */
void pool_on_dependency_settled(struct task *t, future *upstream,
                                dlink **work);
void pool_on_cancel(struct pool *p, future *f);
/* Cancels a pending future of p (0), unless a worker process has started
 * its task (-1: then the future is marked running). */
int pool_cancel_pending(struct pool *p, future *f);
/* A pending future of p whose task a worker process has started is marked
 * running. */
void pool_refresh(struct pool *p, future *f);
int pool_force_cancel(struct pool *p, future *f);
/* Waits for the orphaned executors of a closing home, and joins them. */
void pool_close_orphans(lua_State *L, home *h);
void pool_unref(struct pool *p);

#endif
