/*
 * pool.c -- the thread pool and the inline executor.
 *
 * Thread pool: N worker threads, each owning a lua_State opened with the
 * standard libraries, the creator's package.path/cpath, weft.core preloaded
 * and the pool's init function run once.
 *
 * Two queues feed the workers.  The owner's submits go through a lock-free
 * ring (one producer, the workers consume with a CAS), so a submit takes no
 * lock and, while a worker is busy or polling, no system call.  Tasks
 * released by a dependency (on whatever thread settled it) and overflow
 * from a full ring go to a FIFO guarded by pool->lock.  A worker that finds
 * both empty polls them briefly, then sleeps on pool->work; the owner wakes
 * one only when it sees a sleeper (a fence on each side, as in Dekker's
 * algorithm, so no wake-up is lost).
 *
 * A task whose arguments hold futures waits on pool->waiting until the last
 * of them settles (future.c calls pool_on_dependency_settled on whatever
 * thread settled it); then it is queued, or failed with kind "dependency"
 * without running.  `pending` counts unsettled dependencies plus one held by
 * the submitter until it has hung the task on all of them, so the task
 * cannot start half-registered.
 *
 * Deadlines.  An attempt with a timeout runs inside a stop level (stop.h)
 * whose timer fires on the deadline service's thread: it fails the future
 * at once (unless a retry is due) and stops the Lua code, which unwinds;
 * the worker then rebuilds its state (init again) before its next task.
 * A forced cancel stops the attempt the same way.  An attempt that has not
 * come back STUCK_GRACE after being stopped is blocked in a C call: its
 * worker is abandoned (it exits when the call returns) and a new one takes
 * its slot, so the pool keeps its capacity.
 *
 * Retries.  A failed or timed-out attempt of a task with retries left goes
 * on pool->delayed until its retry_timer fires (or straight back to the
 * queue without a delay); its future stays running meanwhile.
 *
 * Inline executor: the same submit path, but ready tasks are run by the
 * submitting state itself before submit returns.
 */
#include "pool.h"

#include <lauxlib.h>
#include <lualib.h>
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child.h"
#include "log.h"
#include "procs.h"
#include "rclient.h"
#include "rconn.h"
#include "run.h"
#include "wire.h"

#define EXECUTOR_MT "weft.Executor"
#define GIVE_BACK_MT "weft.GiveBack"
/* The most workers one pool may have (core.max_workers). */
#define POOL_MAX_WORKERS 4096
/* How long an idle worker polls the queue before it sleeps: a submitter
 * faster than this never pays for a wake-up system call. */
#define SPIN_SECONDS 50e-6

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() sched_yield()
#endif
#define WORKER_STACK (8u << 20)
/* How long a stopped attempt may take to come back before its worker is
 * taken for blocked in a C call and replaced. */
#define STUCK_GRACE 0.1
/* Giving memory back (below): the fewest seconds between two trims, the
 * trim threshold weft sets, and the size of a worker's token block. */
#define POOL_TRIM_INTERVAL 0.05
#define POOL_IDLE_TRIM_INTERVAL 1.0   /* (for a pool going idle: often) */
#define POOL_TRIM_LATER 0.1           /* (after the collection that comes next) */
#define POOL_TRIM_THRESHOLD (512u << 10)
#define POOL_TRIM_TOKEN (80u << 10)

int luaopen_weft_core(lua_State *L);

/* === life ================================================================ */

void pool_ref(pool *p) { atomic_fetch_add(&p->refs, 1); }

/* === giving memory back ==================================================
 *
 * glibc's malloc keeps freed memory for reuse, so after a burst of tasks
 * the process stayed at its peak (56 MB after 100,000 tasks).  It gives
 * back the top of the main heap by itself only above a threshold that
 * grows with the largest block ever freed (4 MB once a script has had a
 * 100,000-entry table), and the top of a thread's arena never through
 * malloc_trim.  Each worker thread has an arena, which holds its Lua state
 * and the results it encoded until the owner frees them, much later.  So:
 *   - weft fixes the trim threshold (POOL_TRIM_THRESHOLD) when it starts
 *     its first worker thread, unless the environment tunes malloc;
 *   - each worker takes a token block from its own arena when it starts:
 *     freeing it once the arena's other blocks are free merges it into the
 *     arena's top, and a free that big makes glibc trim that arena;
 *   - a pool that is freed (its executor and its last future are gone)
 *     frees its workers' tokens and trims; a collected executor trims
 *     again after the next collection, which frees the results its
 *     futures held (a sentinel object's __gc); a worker going idle frees
 *     and takes back its token (its arena's top goes back), and the last
 *     one to go idle trims, at most once a second. */

static struct {
  pthread_mutex_t lock;     /* rank 9, a leaf */
  double last;              /* when the last trim began (0: never) */
  double armed_at;          /* when the armed trim fires (0: none armed) */
  dl_timer timer;
  atomic_long count;        /* trims done (core.memory) */
  atomic_long tokens;       /* workers' token blocks held (core.memory) */
} give_back = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void trim(void) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  atomic_fetch_add(&give_back.count, 1);
}

static void *trim_main(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "weft:trim");
  trim();
  return NULL;
}

/* malloc_trim takes up to ~15 ms on a big fragmented heap: never on the
 * deadline service (real-time, and every deadline would wait) nor on a
 * worker about to take a task.  Those start a short-lived thread for it. */
static void trim_elsewhere(void) {
  pthread_attr_t attr;
  pthread_t thread;
  sigset_t all, old;
  struct sched_param sp = {.sched_priority = 0};
  int rc;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 128u << 10);
  pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
  pthread_attr_setschedpolicy(&attr, SCHED_OTHER);
  pthread_attr_setschedparam(&attr, &sp);
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  rc = pthread_create(&thread, &attr, trim_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) trim();   /* (no thread to be had: here, then) */
}

static void give_back_fire(dl_timer *t) {
  (void)t;
  pthread_mutex_lock(&give_back.lock);
  give_back.armed_at = 0;
  give_back.last = weft_now();
  pthread_mutex_unlock(&give_back.lock);
  trim_elsewhere();
}

/* Trims now if the last trim is `interval` seconds old (on this thread,
 * or elsewhere when `away`), else makes sure one comes by the end of the
 * interval.  With a `delay`, not now but that many seconds from now (or
 * at the end of the interval, if later). */
static void give_back_within(double interval, int away, double delay) {
  double now = weft_now(), at;
  pthread_mutex_lock(&give_back.lock);
  if (delay <= 0 && (give_back.last == 0 || now - give_back.last >= interval)) {
    give_back.last = now;
    pthread_mutex_unlock(&give_back.lock);
    if (away || dl_on_service_thread()) trim_elsewhere(); else trim();
    return;
  }
  at = give_back.last + interval;
  if (at < now + delay) at = now + delay;
  if (give_back.armed_at > 0 && give_back.armed_at <= at) {
    pthread_mutex_unlock(&give_back.lock);   /* (it comes after our caller's frees) */
    return;
  }
  give_back.armed_at = at;
  pthread_mutex_unlock(&give_back.lock);
  if (dl_arm(&give_back.timer, at, give_back_fire) != 0) {   /* no memory for it */
    pthread_mutex_lock(&give_back.lock);
    give_back.armed_at = 0;
    pthread_mutex_unlock(&give_back.lock);
    trim_elsewhere();
  }
}

void pool_give_back(void) { give_back_within(POOL_TRIM_INTERVAL, 0, 0); }

static void tune_malloc(void) {
#ifdef __GLIBC__
  const char *t = getenv("GLIBC_TUNABLES");
  if (getenv("MALLOC_TRIM_THRESHOLD_") || getenv("MALLOC_MMAP_THRESHOLD_") ||
      getenv("MALLOC_TOP_PAD_") || (t && strstr(t, "glibc.malloc.")))
    return;   /* the user's own tuning wins */
  mallopt(M_TRIM_THRESHOLD, POOL_TRIM_THRESHOLD);
#endif
}
static pthread_once_t tune_once = PTHREAD_ONCE_INIT;

/* A worker's token: taken on its own thread (so from its arena), given
 * back on any thread once the worker no longer runs. */
static void token_take(worker *w) {
  w->trim_token = malloc(POOL_TRIM_TOKEN);   /* (NULL: nothing to trim with) */
  if (w->trim_token) atomic_fetch_add(&give_back.tokens, 1);
}

static void token_free(worker *w) {
  if (w->trim_token == NULL) return;
  free(w->trim_token);
  w->trim_token = NULL;
  atomic_fetch_sub(&give_back.tokens, 1);
}

/* A worker about to sleep (its thread, no lock held): its arena's free top
 * goes back, and the last worker to go idle trims the rest. */
static void worker_idle(pool *p, worker *w) {
  token_free(w);
  token_take(w);
  if (atomic_load(&p->nidle) + 1 >= p->nworkers) give_back_within(POOL_IDLE_TRIM_INTERVAL, 1, 0);
}

/* Drops what a task holds; its memory stays for reuse (and is not
 * written: the submitter re-initializes it). */
static void task_clear(task *t) {
  size_t i;
  for (i = 0; i < t->nblobs; i++) proto_blob_unref(t->blobs[i]);
  for (i = 0; i < t->ndeps; i++) future_unref(t->deps[i]);
  future_unref(t->f);
}

void pool_task_free(task *t) {
  task_clear(t);
  free(t);
}

/* Caller holds p->lock.  Returns t when the free stack is full. */
static task *task_recycle_locked(pool *p, task *t) {
  if (p->nfree >= POOL_FREE_TASKS) return t;
  p->free_tasks[p->nfree++] = t;
  return NULL;
}

/* The workers' tokens go back, once (see "giving memory back"). */
static void release_tokens(pool *p) {
  if (atomic_exchange(&p->tokens_released, 1)) return;
  for (worker *w = atomic_load(&p->all); w; w = w->next_all) token_free(w);
}

void pool_unref(pool *p) {
  if (p == NULL) return;
  /* A thread pool whose workers are gone (shut down) and whose last future
   * goes now, while its executor is still referenced: its workers' arenas
   * need not wait for the executor to be collected, and a trim follows
   * once the collection that frees the futures' Lua values has likely run
   * (a future goes in a collection's finalizers; its values in the next
   * one).  (We still hold our reference: the pool stays meanwhile.) */
  if (p->kind == POOL_THREADS && atomic_load(&p->refs) == 2 && atomic_load(&p->nalive) == 0 &&
      !atomic_load(&p->tokens_released)) {
    release_tokens(p);
    give_back_within(POOL_TRIM_INTERVAL, 1, POOL_TRIM_LATER);
  }
  if (atomic_fetch_sub(&p->refs, 1) != 1) return;
  while (p->failed) {
    flink *l = p->failed;
    p->failed = l->next;
    future_unref(l->f);
    free(l);
  }
  while (p->nfree > 0) free(p->free_tasks[--p->nfree]);
  while (p->nspares > 0) free(p->spares[--p->nspares]);
  release_tokens(p);   /* (the workers' arenas' tops go back: see above) */
  for (worker *w = atomic_load(&p->all), *next; w; w = next) {
    next = w->next_all;
    pthread_mutex_destroy(&w->lock);
    free(w);
  }
  procs_free(p);
  rclient_free(p);
  free(p->ring);
  proto_keep_free(&p->blobs);
  free(p->init_msg);
  buf_free(&p->encbuf);
  free(p->slots);
  free(p->name);
  free(p->path);
  free(p->cpath);
  home_unref(p->home);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->work);
  free(p);
  pool_give_back();
}

/* === queue =============================================================== */

/* Caller holds p->lock.  Shut down, and nothing can arrive any more. */
static int pool_drained(pool *p) {
  return p->shutdown && p->waiting == NULL && p->delayed == NULL;
}

/* Queues a ready task, at the back (or at the front: a task handed back
 * by a worker process that died before it could start it).  Takes
 * p->lock. */
static void enqueue(pool *p, task *t, int front) {
  pthread_mutex_lock(&p->lock);
  if (t->waiting == TASK_DEPS) {
    if (t->wprev) t->wprev->wnext = t->wnext; else p->waiting = t->wnext;
    if (t->wnext) t->wnext->wprev = t->wprev;
    t->waiting = 0;
  }
  if (front) {
    t->next = p->head;
    p->head = t;
    if (p->tail == NULL) p->tail = t;
  } else {
    t->next = NULL;
    if (p->tail) p->tail->next = t; else p->head = t;
    p->tail = t;
  }
  atomic_fetch_add_explicit(&p->qlen, 1, memory_order_release);
  /* Wake a sleeper unless a worker is polling the queues or enough are
   * already on their way up. */
  if (!atomic_load(&p->spinning) && atomic_load(&p->nidle) > p->nwaking) {
    p->nwaking++;
    pthread_cond_signal(&p->work);
  }
  /* Once the lock is released the task may run, its future be freed, and
   * the pool with it (the future held the last reference), while the
   * wake-ups below still read p: the deadline thread (a retry) and the
   * thread that settled a dependency hold no reference of their own. */
  pool_ref(p);
  pthread_mutex_unlock(&p->lock);
  if (p->kind == POOL_INLINE) {   /* the owner may wait in inline_run */
    pthread_mutex_lock(&p->home->lock);
    if (p->home->sleeping) pthread_cond_signal(&p->home->cond);
    pthread_mutex_unlock(&p->home->lock);
  } else if (p->kind == POOL_PROCESSES) {
    procs_wake(p);
  } else if (p->kind == POOL_REDIS) {
    rclient_wake(p);
  }
  pool_unref(p);
}

void pool_enqueue(pool *p, task *t) { enqueue(p, t, 0); }
void pool_requeue(pool *p, task *t) { enqueue(p, t, 1); }

/* === the owner's ring ==================================================== */

/* Owner only.  Returns 0 when the ring is full. */
static int ring_push(pool *p, task *t) {
  size_t pos = p->ring_tail;
  ring_cell *c = &p->ring[pos & (POOL_RING - 1)];
  if (atomic_load_explicit(&c->seq, memory_order_acquire) != pos) return 0;
  c->t = t;
  /* seq_cst: ordered before the owner's look at nidle (pool_submit_ready) */
  atomic_store_explicit(&c->seq, pos + 1, memory_order_seq_cst);
  p->ring_tail = pos + 1;
  return 1;
}

/* Any thread; NULL when the ring is empty. */
static task *ring_pop(pool *p) {
  size_t pos = atomic_load_explicit(&p->ring_head, memory_order_relaxed);
  for (;;) {
    ring_cell *c = &p->ring[pos & (POOL_RING - 1)];
    size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
    if (seq == pos + 1) {
      if (atomic_compare_exchange_weak_explicit(&p->ring_head, &pos, pos + 1,
                                                memory_order_relaxed,
                                                memory_order_relaxed)) {
        task *t = c->t;
        atomic_store_explicit(&c->seq, pos + POOL_RING, memory_order_release);
        return t;
      }
    } else if (seq < pos + 1) {
      return NULL;   /* empty */
    } else {
      pos = atomic_load_explicit(&p->ring_head, memory_order_relaxed);
    }
  }
}

static int ring_nonempty(pool *p) {
  size_t pos = atomic_load(&p->ring_head);
  return atomic_load(&p->ring[pos & (POOL_RING - 1)].seq) == pos + 1;
}

/* Owner: queues a ready task, through the ring when it has room. */
static void pool_submit_ready(pool *p, task *t) {
  if (p->ring == NULL || !ring_push(p, t)) {
    pool_enqueue(p, t);
    return;
  }
  if (p->kind == POOL_PROCESSES || p->kind == POOL_REDIS) {   /* (their one
                                                                    thread counts in nidle) */
    if (atomic_load(&p->nidle) > 0) {
      if (p->kind == POOL_PROCESSES) procs_wake(p); else rclient_wake(p);
    }
    return;
  }
  /* Dekker with pool_take, all seq_cst: we published the task, then look
   * at nidle; a worker counts itself in nidle, then looks at the ring.
   * One of the two sees the other. */
  if (atomic_load(&p->nidle) > 0 && !atomic_load(&p->spinning)) {
    pthread_mutex_lock(&p->lock);
    if (!atomic_load(&p->spinning) && atomic_load(&p->nidle) > p->nwaking) {
      p->nwaking++;
      pthread_cond_signal(&p->work);
    }
    pthread_mutex_unlock(&p->lock);
  }
}

/* Takes the next task, sleeping while there is none; NULL once the pool is
 * shut down and nothing is queued or waiting on dependencies.  `done`, a
 * finished task, goes back to the free stack on the way.  Before it first
 * sleeps after a task, it calls worker_idle(p, w). */
static task *pool_take(pool *p, task *done, worker *w) {
  task *t;
  int idled = done == NULL;   /* (nothing ran since it last slept) */
  if (done == NULL && (t = ring_pop(p)) != NULL) return t;
  pthread_mutex_lock(&p->lock);
  if (done) done = task_recycle_locked(p, done);
  for (;;) {
    if ((t = p->head) != NULL) {
      p->head = t->next;
      if (p->head == NULL) p->tail = NULL;
      atomic_fetch_sub_explicit(&p->qlen, 1, memory_order_relaxed);
      break;
    }
    if ((t = ring_pop(p)) != NULL) break;
    if (pool_drained(p)) {
      pthread_cond_broadcast(&p->work);   /* let the others see the end too */
      break;
    }
    if (!atomic_load(&p->spinning) && p->nworkers > 1) {
      /* Poll a little before sleeping (one poller at a time, so the
       * others leave the CPU to the submitter). */
      double until = weft_now() + SPIN_SECONDS;
      int found = 0, spins = 0;
      atomic_store(&p->spinning, 1);
      pthread_mutex_unlock(&p->lock);
      while (!(found = ring_nonempty(p) ||
                       atomic_load_explicit(&p->qlen, memory_order_acquire) > 0)) {
        if ((++spins & 63) == 0 && weft_now() > until) break;
        cpu_relax();
      }
      pthread_mutex_lock(&p->lock);
      atomic_store(&p->spinning, 0);
      if (found) continue;
    }
    if (!idled && !pool_drained(p)) {
      idled = 1;
      pthread_mutex_unlock(&p->lock);
      worker_idle(p, w);
      pthread_mutex_lock(&p->lock);
      continue;
    }
    /* Count ourselves idle, then look once more (see pool_submit_ready). */
    atomic_fetch_add(&p->nidle, 1);
    if (!ring_nonempty(p) && p->head == NULL && !pool_drained(p))
      pthread_cond_wait(&p->work, &p->lock);
    atomic_fetch_sub(&p->nidle, 1);
    if (p->nwaking > 0) p->nwaking--;
  }
  /* Submitters wake nobody while a worker polls, counting on it: when it
   * (or a woken worker) takes one task and more are queued, it passes the
   * wake-up on, or they would wait for a busy worker while another
   * sleeps. */
  if (t != NULL && (p->head != NULL || ring_nonempty(p)) && !atomic_load(&p->spinning) &&
      atomic_load(&p->nidle) > p->nwaking) {
    p->nwaking++;
    pthread_cond_signal(&p->work);
  }
  pthread_mutex_unlock(&p->lock);
  free(done);
  return t;
}

/* Takes the next queued task without waiting, NULL when there is none
 * (the process supervisor's pool_take). */
task *pool_poll(pool *p) {
  task *t = ring_pop(p);
  if (t != NULL || atomic_load_explicit(&p->qlen, memory_order_acquire) == 0) return t;
  pthread_mutex_lock(&p->lock);
  if ((t = p->head) != NULL) {
    p->head = t->next;
    if (p->head == NULL) p->tail = NULL;
    atomic_fetch_sub_explicit(&p->qlen, 1, memory_order_relaxed);
  }
  pthread_mutex_unlock(&p->lock);
  return t;
}

/* 1 when something is queued (any thread). */
int pool_has_queued(pool *p) {
  return ring_nonempty(p) || atomic_load_explicit(&p->qlen, memory_order_acquire) > 0;
}

/* 1 once the pool is shut down and nothing can be queued any more. */
int pool_is_drained(pool *p) {
  int r;
  pthread_mutex_lock(&p->lock);
  r = pool_drained(p) && p->head == NULL;
  pthread_mutex_unlock(&p->lock);
  return r && !ring_nonempty(p);
}

/* A finished task's references are dropped and its memory kept for reuse. */
void pool_task_done(pool *p, task *t) {
  task_clear(t);
  pthread_mutex_lock(&p->lock);
  t = task_recycle_locked(p, t);
  pthread_mutex_unlock(&p->lock);
  free(t);
}

/* Remembers a failed future for the report at shutdown. */
static void pool_note_failure(pool *p, future *f) {
  flink *l = malloc(sizeof *l);
  if (l == NULL) return;   /* only the report is lost, never the error */
  future_ref(f);
  l->f = f;
  pthread_mutex_lock(&p->lock);
  l->next = p->failed;
  p->failed = l;
  p->nfailed++;
  pthread_mutex_unlock(&p->lock);
}

/* === dependencies ======================================================== */

/* The last dependency settled (or none were pending): run or drop. */
static void task_ready(task *t) {
  pool *p = t->pool;
  if (FS_IS_FINAL(future_state(t->f))) {   /* cancelled or failed meanwhile */
    if (t->waiting) {
      pthread_mutex_lock(&p->lock);
      if (t->wprev) t->wprev->wnext = t->wnext; else p->waiting = t->wnext;
      if (t->wnext) t->wnext->wprev = t->wprev;
      t->waiting = 0;
      if (pool_drained(p)) pthread_cond_broadcast(&p->work);
      pthread_mutex_unlock(&p->lock);
    }
    pool_task_free(t);
    return;
  }
  pool_enqueue(p, t);
}

void pool_on_dependency_settled(struct task *t, future *upstream, dlink **work) {
  if (future_state(upstream) != FS_FINISHED) {
    future_ref(upstream);
    atomic_fetch_add(&t->pool->dep_failed, 1);   /* (counted first, as in pool_finish) */
    if (future_settle_into(t->f, FS_FAILED, NULL, 0, upstream, work) == 0) {
      pool_note_failure(t->pool, t->f);
    } else {
      atomic_fetch_sub(&t->pool->dep_failed, 1);
      future_unref(upstream);
    }
  }
  if (atomic_fetch_sub(&t->pending, 1) == 1) task_ready(t);
}

/* === deadlines, retries and stuck workers ================================ */

static void *worker_main(void *arg);

/* A new worker for slot `index` (not started), on p->all. */
worker *pool_worker_new(pool *p, int index) {
  worker *w = aligned_alloc(CACHE_LINE, (sizeof *w + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
  if (w == NULL) return NULL;
  memset(w, 0, sizeof *w);
  w->pool = p;
  w->index = index;
  pthread_mutex_init(&w->lock, NULL);
  w->next_all = atomic_load(&p->all);
  while (!atomic_compare_exchange_weak(&p->all, &w->next_all, w)) {}
  return w;
}

int pool_start_thread(pool *p, pthread_t *thread, void *(*fn)(void *), void *arg,
                      size_t stack) {
  pthread_attr_t attr;
  sigset_t all, old;
  int rc;
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  pthread_attr_init(&attr);
  if (stack) pthread_attr_setstacksize(&attr, stack);
  if (dl_on_service_thread()) {   /* (a replacement worker: not real-time) */
    struct sched_param sp = {.sched_priority = 0};
    pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
    pthread_attr_setschedpolicy(&attr, SCHED_OTHER);
    pthread_attr_setschedparam(&attr, &sp);
  }
  pool_ref(p);
  atomic_fetch_add(&p->nalive, 1);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  rc = pthread_create(thread, &attr, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    atomic_fetch_sub(&p->nalive, 1);
    pool_unref(p);
  }
  return rc;
}

/* Starts w's thread (worker_main unblocks the stop signal).  Returns 0 or
 * an errno. */
static int worker_start(pool *p, worker *w) {
  int rc = pool_start_thread(p, &w->thread, worker_main, w, WORKER_STACK);
  if (rc == 0) w->running = 1;
  return rc;
}

/* Wakes the owner, who may wait in shutdown for workers to exit. */
void pool_wake_owner(pool *p) {
  pthread_mutex_lock(&p->home->lock);
  if (p->home->sleeping) pthread_cond_signal(&p->home->cond);
  pthread_mutex_unlock(&p->home->lock);
}

/* Fails f with kind timeout, counted.  Any thread. */
void pool_settle_timeout(pool *p, future *f, double seconds) {
  char msg[96];
  size_t len;
  char *data;
  snprintf(msg, sizeof msg, "the task did not finish within %g s", seconds);
  data = wire_record("timeout", msg, future_name(f), &len);
  atomic_fetch_add(&p->timed_out, 1);   /* (counted first, as in pool_finish) */
  if (future_settle(f, FS_FAILED, data, data ? len : 0, NULL) != 0) {
    atomic_fetch_sub(&p->timed_out, 1);
    free(data);
    return;
  }
  pool_note_failure(p, f);
}

static double retry_delay(const task *t) {
  int k = t->attempt < t->ndelays ? t->attempt : t->ndelays;
  return k > 0 ? t->delays[k - 1] : 0;
}

static void retry_fire(dl_timer *tm) {
  task *t = (task *)(void *)((char *)tm - offsetof(task, retry_timer));
  pool *p = t->pool;
  pthread_mutex_lock(&p->lock);
  if (t->waiting != TASK_DELAYED) {   /* cancelled meanwhile */
    pthread_mutex_unlock(&p->lock);
    return;
  }
  if (t->wprev) t->wprev->wnext = t->wnext; else p->delayed = t->wnext;
  if (t->wnext) t->wnext->wprev = t->wprev;
  t->waiting = 0;
  pthread_mutex_unlock(&p->lock);
  pool_enqueue(p, t);
}

/* Schedules the next attempt of t, after its retry delay. */
void pool_task_retry(pool *p, task *t) {
  double delay = retry_delay(t);
  t->attempt++;
  if (delay > 0) {
    int armed;
    /* Armed under the lock: a forced cancel may find the task on the
     * list (and free it) as soon as the lock is released. */
    pthread_mutex_lock(&p->lock);
    memset(&t->retry_timer, 0, sizeof t->retry_timer);
    armed = dl_arm(&t->retry_timer, weft_now() + delay, retry_fire) == 0;
    if (armed) {
      t->waiting = TASK_DELAYED;
      t->wprev = NULL;
      t->wnext = p->delayed;
      if (p->delayed) p->delayed->wprev = t;
      p->delayed = t;
    }
    pthread_mutex_unlock(&p->lock);
    if (armed) return;   /* (out of memory for the timer: retry now) */
  }
  pool_enqueue(p, t);
}

/* A copy of t for another attempt (its stuck original stays with the
 * worker that runs it), or NULL when out of memory. */
static task *task_clone(const task *t) {
  task *c = malloc(t->size);
  size_t i;
  if (c == NULL) return NULL;
  memcpy(c, t, t->size);
  c->delays = (double *)(void *)(c + 1);
  c->blobs = (proto_blob **)(void *)((char *)c + ((char *)t->blobs - (char *)t));
  c->deps = (future **)(void *)((char *)c + ((char *)t->deps - (char *)t));
  c->msg = (char *)c + (t->msg - (char *)t);
  for (i = 0; i < c->nblobs; i++) proto_blob_ref(c->blobs[i]);
  for (i = 0; i < c->ndeps; i++) future_ref(c->deps[i]);
  future_ref(c->f);
  c->next = c->wprev = c->wnext = NULL;
  c->waiting = 0;
  c->worker = NULL;
  return c;
}

/* Takes a new worker into w's slot; w is abandoned to its C call. */
static void pool_replace_worker(pool *p, worker *w) {
  worker *nw = pool_worker_new(p, w->index);
  int i;
  if (nw && worker_start(p, nw) == 0) {
    pthread_mutex_lock(&p->lock);
    for (i = 0; i < p->nworkers; i++)
      if (p->slots[i] == w) p->slots[i] = nw;
    pthread_mutex_unlock(&p->lock);
  }
  pthread_detach(w->thread);   /* nobody joins it: it may never return */
  atomic_fetch_sub(&p->nalive, 1);
  pool_wake_owner(p);
}

/* The stuck check: an attempt stopped STUCK_GRACE ago is still running. */
static void worker_stuck(dl_timer *tm) {
  worker *w = (worker *)(void *)((char *)tm - offsetof(worker, stuck));
  pool *p = w->pool;
  task *retry = NULL;
  future *f;
  double seconds;
  pthread_mutex_lock(&w->lock);
  if (w->task == NULL || w->seq != w->stuck_seq || w->abandoned) {
    pthread_mutex_unlock(&w->lock);
    return;
  }
  w->abandoned = 1;
  f = w->task->f;
  future_ref(f);
  seconds = w->task->timeout;
  if (!FS_IS_FINAL(future_state(f)) && w->task->attempt <= w->task->retries)
    retry = task_clone(w->task);
  pthread_mutex_unlock(&w->lock);
  atomic_store(&w->busy, 0);
  pool_replace_worker(p, w);
  if (retry)
    pool_task_retry(p, retry);
  else
    pool_settle_timeout(p, f, seconds);   /* (a no-op if it was settled) */
  future_unref(f);
}

/* Caller holds w->lock: watch the stopped attempt for getting stuck. */
static void watch_stuck(worker *w) {
  w->stuck_seq = w->seq;
  dl_arm(&w->stuck, weft_now() + STUCK_GRACE, worker_stuck);
}

/* After a deadline passed on w: the pool's other workers that hold or
 * wait for a CPU yield it once (stop_nudge), so that w (to be stopped) and
 * the owner (woken by the failure) get one now: with more busy workers
 * than cores they waited for a scheduler tick or more (p99 9 ms on 2 cores
 * with 4 workers).  Only workers inside an attempt: their level is set
 * under their lock, so their thread is alive. */
static void nudge_peers(pool *p, worker *w) {
  worker *peers[64];
  int i, n;
  pthread_mutex_lock(&p->lock);
  n = p->nworkers < 64 ? p->nworkers : 64;
  memcpy(peers, p->slots, (size_t)n * sizeof *peers);
  pthread_mutex_unlock(&p->lock);
  for (i = 0; i < n; i++) {
    worker *o = peers[i];
    if (o == w || !atomic_load_explicit(&o->busy, memory_order_relaxed)) continue;
    pthread_mutex_lock(&o->lock);
    if (o->level && !o->abandoned) stop_nudge(&o->ctx);
    pthread_mutex_unlock(&o->lock);
  }
}

/* The attempt's deadline (deadline service thread). */
static void task_deadline(stop_level *lv) {
  task *t = lv->data;
  pool *p = t->pool;
  worker *w = t->worker;
  if (!stop_fire(lv, WK_TIMEOUT)) return;   /* cancelled first */
  if (t->attempt > t->retries) pool_settle_timeout(p, t->f, t->timeout);
  if (p->kind == POOL_THREADS) {
    pthread_mutex_lock(&w->lock);
    if (w->task == t) watch_stuck(w);
    pthread_mutex_unlock(&w->lock);
    nudge_peers(p, w);
  }
}

void pool_on_cancel(struct pool *p, future *f) {
  (void)f;
  atomic_fetch_add(&p->cancelled, 1);
}

int pool_cancel_pending(struct pool *p, future *f) {
  if (p->kind == POOL_PROCESSES) return procs_cancel_pending(p, f);
  if (p->kind == POOL_REDIS) return rclient_cancel_pending(p, f);
  return future_settle(f, FS_CANCELLED, NULL, 0, NULL);
}

void pool_refresh(struct pool *p, future *f) {
  if (p->kind == POOL_PROCESSES) procs_refresh(f);
}

/* cancel{force = true} of a running future (the owner's thread). */
int pool_force_cancel(struct pool *p, future *f) {
  worker **slots;
  task *t;
  int i, n, found = 0;
  /* The future is ours first: stopping first would let a stuck check
   * (worker_stuck) settle it as timed out before we settle it. */
  if (future_settle(f, FS_CANCELLED, NULL, 0, NULL) != 0) return 0;
  atomic_fetch_add(&p->stopped, 1);
  pthread_mutex_lock(&p->lock);
  for (t = p->delayed; t && t->f != f; t = t->wnext) {}
  if (t) {   /* between attempts: take it off the delayed list */
    if (t->wprev) t->wprev->wnext = t->wnext; else p->delayed = t->wnext;
    if (t->wnext) t->wnext->wprev = t->wprev;
    t->waiting = 0;
    if (pool_drained(p)) pthread_cond_broadcast(&p->work);
  }
  n = p->nworkers;
  slots = malloc((size_t)n * sizeof *slots);
  if (slots) memcpy(slots, p->slots, (size_t)n * sizeof *slots);
  pthread_mutex_unlock(&p->lock);
  if (t) {
    dl_disarm(&t->retry_timer);
    pool_task_free(t);
    found = 1;
  }
  if (!found && p->kind == POOL_PROCESSES) procs_force_cancel(p, f);
  if (!found && p->kind == POOL_REDIS) rclient_force_cancel(p, f);
  for (i = 0; slots && !found && p->kind < POOL_PROCESSES && i < n; i++) {
    worker *w = slots[i];
    pthread_mutex_lock(&w->lock);
    if (w->task && w->task->f == f && !w->abandoned) {
      found = 1;
      if (w->level && stop_fire(w->level, WK_CANCELLED) && p->kind == POOL_THREADS)
        watch_stuck(w);
    }
    pthread_mutex_unlock(&w->lock);
  }
  free(slots);
  /* Not found: about to start, and the worker that takes it finds it
   * cancelled. */
  return 1;
}

/* === running ============================================================= */


/* Settles a task's future with a run outcome and counts it (first, so
 * stats() never lags behind a future somebody saw settle). */
static void pool_finish(pool *p, worker *w, task *t, run_outcome *out) {
  int failed = out->state == FS_FAILED;
  atomic_long *counter = failed ? &w->failed : &w->completed;
  pool_bump(counter);
  if (future_settle(t->f, out->state, out->data, out->len, NULL) != 0) {
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    free(out->data);
    return;
  }
  if (failed) pool_note_failure(p, t->f);
}

void pool_remote_done(pool *p, future *f, int state, char *data, size_t len) {
  worker *w = p->slots[0];
  atomic_long *counter = state == FS_FINISHED ? &w->completed : &w->failed;
  atomic_fetch_add(&w->started, 1);
  if (state != FS_CANCELLED) atomic_fetch_add(counter, 1);
  if (future_settle(f, state, data, len, NULL) != 0) {
    if (state != FS_CANCELLED) atomic_fetch_sub(counter, 1);
    atomic_fetch_sub(&w->started, 1);
    free(data);
  } else if (state == FS_FAILED) {
    pool_note_failure(p, f);
  } else if (state == FS_CANCELLED) {
    atomic_fetch_add(&p->stopped, 1);
  }
}

int pool_attempt_start(worker *w, task *t) {
  if (!t->begun) {   /* (a task handed back by a dead worker process has) */
    if (!future_start(t->f)) return 0;   /* cancelled while queued */
    pool_bump(&w->started);
    t->begun = 1;
  }
  atomic_store_explicit(&t->f->attempts, t->attempt, memory_order_relaxed);
  return 1;
}

int pool_attempt_end(pool *p, worker *w, task *t, run_outcome *out, int kind) {
  if (kind) {   /* stopped: whatever it produced is void */
    free(out->data);
    out->data = NULL;
    out->len = 0;
    out->state = FS_FAILED;
  }
  if (kind == WK_CANCELLED || FS_IS_FINAL(future_state(t->f))) {
    free(out->data);
    return TASK_DONE;
  }
  if (out->state == FS_FAILED && t->attempt <= t->retries) {
    free(out->data);
    pool_task_retry(p, t);
    return TASK_KEPT;
  }
  if (kind == WK_TIMEOUT) {
    pool_settle_timeout(p, t->f, t->timeout);
    return TASK_DONE;
  }
  if (kind == WK_EXIT)   /* os.exit in a thread task (stop_guard_exit) */
    out->data = wire_record("exit", STOP_EXIT_MESSAGE, future_name(t->f), &out->len);
  pool_finish(p, w, t, out);
  return TASK_DONE;
}

/* Runs t's message in L, with its dependencies' results. */
static void run_task(lua_State *L, task *t, run_outcome *out) {
  wire_dep small[8], *deps = small;
  size_t i;
  if (t->ndeps > 8 && (deps = malloc(t->ndeps * sizeof *deps)) == NULL) {
    run_error_record(L, WK_MEMORY, "out of memory for the task's dependencies", NULL, 0, out);
    return;
  }
  for (i = 0; i < t->ndeps; i++) deps[i] = task_dep(t, i);
  run_message(L, t->msg, t->len, deps, t->ndeps, future_name(t->f), !t->outside, out);
  if (deps != small) free(deps);
}

/* Runs one attempt of t on w, in L (a worker's state, or the inline
 * owner's).  Returns TASK_DONE (t cleared, for reuse), TASK_KEPT (t went
 * back for a retry) or TASK_ABANDONED (w was replaced; t stays with the
 * call it is stuck in and is freed here).  *stopped: L was stopped in the
 * middle of Lua code and must be rebuilt. */
static int worker_attempt(pool *p, worker *w, lua_State *L, task *t,
                          run_outcome *broken, int *stopped) {
  run_outcome out = {FS_FAILED, NULL, 0};
  stop_level lv;
  int kind, abandoned, inline_run = p->kind == POOL_INLINE;
  log_task lt = {t->f, t->attempt, inline_run ? META_INLINE : META_THREAD, w->index, 0, NULL, 0};
  log_task *outer;
  if (!pool_attempt_start(w, t)) {
    task_clear(t);
    return TASK_DONE;
  }
  future_mark_started(t->f, lt.worker_kind, lt.worker_id, weft_now());
  outer = log_enter(&lt);
  t->worker = w;
  memset(&lv, 0, sizeof lv);
  lv.on_deadline = task_deadline;
  lv.data = t;
  pthread_mutex_lock(&w->lock);
  w->task = t;
  w->seq++;
  pthread_mutex_unlock(&w->lock);
  stop_push(&lv, L, t->timeout, SIGURG);   /* (without a deadline if out of memory) */
  pthread_mutex_lock(&w->lock);
  w->level = &lv;
  pthread_mutex_unlock(&w->lock);
  atomic_store_explicit(&w->busy, 1, memory_order_relaxed);
  if (FS_IS_FINAL(future_state(t->f))) {
    /* cancelled with force before it began */
  } else if (broken && broken->data) {
    run_error_record(L, WK_BROKEN, "the worker's init function failed", broken->data,
                     broken->len, &out);
  } else {
    run_task(L, t, &out);
  }
  log_leave(outer);
  atomic_store_explicit(&w->busy, 0, memory_order_relaxed);
  pthread_mutex_lock(&w->lock);
  w->level = NULL;
  pthread_mutex_unlock(&w->lock);
  kind = stop_pop(&lv);
  if (kind) dl_disarm(&w->stuck);
  pthread_mutex_lock(&w->lock);
  abandoned = w->abandoned;
  w->task = NULL;
  pthread_mutex_unlock(&w->lock);
  if (abandoned) {
    free(out.data);
    pool_task_free(t);
    return TASK_ABANDONED;
  }
  if (kind) *stopped = 1;
  if (pool_attempt_end(p, w, t, &out, kind) == TASK_KEPT) return TASK_KEPT;
  task_clear(t);
  return TASK_DONE;
}

static lua_State *worker_state_new(pool *p, run_outcome *broken) {
  return run_state_new(p->path, p->cpath, p->init_msg, p->init_len, 1, luaopen_weft_core,
                       broken);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  pool *p = w->pool;
  run_outcome broken;
  lua_State *L;
  task *t, *done = NULL;
  int abandoned = 0;
  char name[16];
  snprintf(name, sizeof name, "weft:%.6s:%d", p->name ? p->name : "pool", w->index);
  pthread_setname_np(pthread_self(), name);
  stop_attach(&w->ctx, 1);
  token_take(w);
  L = worker_state_new(p, &broken);
  while ((t = pool_take(p, done, w)) != NULL) {
    int stopped = 0, r;
    done = NULL;
    if (L == NULL) {   /* no memory for a Lua state: fail, don't hang */
      run_outcome out = {FS_FAILED, NULL, 0};
      out.data = wire_record("memory", "out of memory: no room for the worker's Lua state",
                             future_name(t->f), &out.len);
      if (pool_attempt_start(w, t)) pool_finish(p, w, t, &out); else free(out.data);
      task_clear(t);
      done = t;
      L = worker_state_new(p, &broken);
      continue;
    }
    r = worker_attempt(p, w, L, t, broken.data ? &broken : NULL, &stopped);
    if (r == TASK_ABANDONED) {
      abandoned = 1;
      break;
    }
    if (r == TASK_DONE) done = t;
    if (stopped) {   /* the stopped code may have left anything half done */
      lua_close(L);
      free(broken.data);
      L = worker_state_new(p, &broken);
    }
  }
  free(broken.data);   /* (pool_take took the last `done`) */
  if (L) lua_close(L);
  stop_detach(&w->ctx);
  if (!abandoned) {   /* (an abandoned worker no longer counts) */
    atomic_fetch_sub(&p->nalive, 1);
    pool_wake_owner(p);
  }
  pool_unref(p);
  return NULL;
}

/* Runs every ready task of an inline pool in the caller's state. */
static void inline_drain(lua_State *L, pool *p) {
  task *t;
  for (;;) {
    int stopped = 0;
    pthread_mutex_lock(&p->lock);
    t = p->head;
    if (t) {
      p->head = t->next;
      if (p->head == NULL) p->tail = NULL;
      atomic_fetch_sub_explicit(&p->qlen, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&p->lock);
    if (t == NULL) break;
    if (worker_attempt(p, p->slots[0], L, t, NULL, &stopped) == TASK_DONE) free(t);
  }
}

/* === the executor userdata =============================================== */

static pool *check_pool(lua_State *L, int idx) {
  pool **pp = luaL_testudata(L, idx, EXECUTOR_MT);
  if (pp == NULL) weft_bad_self(L, idx, "an executor", "ex");
  if (*pp == NULL) weft_error(L, WK_CONFIG, "the executor was already collected");
  return *pp;
}

/* Reports, once, the failed futures nobody looked at. */
static void pool_report_failures(lua_State *L, pool *p, int all) {
  flink *list, *keep = NULL, *l;
  pthread_mutex_lock(&p->lock);
  list = p->failed;
  p->failed = NULL;
  p->nfailed = 0;
  pthread_mutex_unlock(&p->lock);
  while ((l = list) != NULL) {
    list = l->next;
    if (all) future_report_failure(L, l->f);
    if (!all && !l->f->observed && !l->f->reported && atomic_load(&l->f->refs) > 1) {
      l->next = keep;
      keep = l;
      continue;
    }
    future_unref(l->f);
    free(l);
  }
  if (keep) {
    size_t n = 0;
    for (l = keep; l->next; l = l->next) n++;
    pthread_mutex_lock(&p->lock);
    l->next = p->failed;
    p->failed = keep;
    p->nfailed += (long)n + 1;
    pthread_mutex_unlock(&p->lock);
  }
}

/* Stops taking work; with `wait`, runs the queue dry and joins the workers
 * while still running this state's done-callbacks. */
/* Joins p's threads once no worker is alive (so none is being replaced:
 * the slots hold the threads to join; abandoned ones were detached). */
static void pool_join(pool *p) {
  int i;
  if (p->kind == POOL_PROCESSES) {
    procs_join(p);
  } else if (p->kind == POOL_REDIS) {
    rclient_join(p);
  } else {
    for (i = 0; i < p->nworkers; i++)
      if (p->slots[i]->running) pthread_join(p->slots[i]->thread, NULL);
  }
  p->joined = 1;
}

static void pool_shutdown(lua_State *L, pool *p, int wait, int cancel) {
  task *queued = NULL, *t;
  future **tocancel = NULL;
  size_t ncancel = 0, i;
  pthread_mutex_lock(&p->lock);
  p->shutdown = 1;
  if (cancel) {
    size_t n = 0;
    for (t = p->waiting; t; t = t->wnext) n++;
    tocancel = malloc((n ? n : 1) * sizeof *tocancel);
    for (t = p->waiting; t && tocancel; t = t->wnext) {
      future_ref(t->f);
      tocancel[ncancel++] = t->f;
    }
    queued = p->head;
    p->head = p->tail = NULL;
    atomic_store(&p->qlen, 0);
    if (p->ring) {   /* the ring's tasks too, in order, behind the list */
      task **last = &queued;
      while (*last) last = &(*last)->next;
      while ((t = ring_pop(p)) != NULL) {
        t->next = NULL;
        *last = t;
        last = &t->next;
      }
    }
  }
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->lock);
  if (p->kind == POOL_PROCESSES) procs_wake(p);
  if (p->kind == POOL_REDIS) rclient_wake(p);
  /* Cancel outside the lock: cancelling settles futures, which may release
   * dependents into this very pool. */
  while ((t = queued) != NULL) {
    queued = t->next;
    future_cancel(t->f);
    pool_task_free(t);
  }
  for (i = 0; i < ncancel; i++) {
    future_cancel(tocancel[i]);
    future_unref(tocancel[i]);
  }
  free(tocancel);
  if (cancel && p->kind == POOL_REDIS) rclient_cancel_queued(p);
  if (p->kind == POOL_INLINE) {
    inline_drain(L, p);
  } else if (wait && !p->joined) {
    home *h = p->home;
    while (atomic_load(&p->nalive) > 0) {
      home_dispatch(L);
      pthread_mutex_lock(&h->lock);   /* exiting workers signal it */
      if (atomic_load(&p->nalive) > 0 && !home_has_work(h)) home_sleep(h, -1);
      pthread_mutex_unlock(&h->lock);
    }
    pool_join(p);
  }
  home_dispatch(L);
  if (wait || p->kind == POOL_INLINE) pool_report_failures(L, p, 1);
}

pool *pool_from_lua(lua_State *L, int idx) { return check_pool(L, idx); }

static int ex_shutdown(lua_State *L) {
  pool *p = check_pool(L, 1);
  int wait = 1, cancel = 0;
  if (lua_istable(L, 2)) {
    if (lua_getfield(L, 2, "wait") != LUA_TNIL) wait = lua_toboolean(L, -1);
    if (lua_getfield(L, 2, "cancel_futures") != LUA_TNIL) cancel = lua_toboolean(L, -1);
    lua_pop(L, 2);
  } else if (!lua_isnoneornil(L, 2)) {
    return weft_error(L, WK_CONFIG, "shutdown takes an optional table {wait =, cancel_futures =}");
  }
  pool_shutdown(L, p, wait, cancel);
  return 0;
}

/* === orphans ============================================================= */

/* An executor collected while its workers still run is shut down without
 * waiting and becomes an orphan of its home: its tasks go on, and the
 * state joins it once its workers are gone, or waits for it when it closes
 * (Python's executors behave alike).  Waiting in __gc would hang whatever
 * code happened to allocate, forever if a task never ends.  The home's
 * thread only. */

/* Joins and drops the orphans whose workers are all gone (wait: all of
 * them, waiting; a closing state's home, so no callback runs).  Their
 * failures nobody looked at are reported, as a waiting shutdown does: the
 * list holds references to futures that hold the pool, so it must be
 * emptied before the last pool_unref or the pool is never freed. */
static void orphans_reap(lua_State *L, home *h, int wait) {
  pool **pp = &h->orphans;
  while (*pp) {
    pool *p = *pp;
    if (wait) {
      pthread_mutex_lock(&h->lock);
      while (atomic_load(&p->nalive) > 0) home_sleep(h, -1);
      pthread_mutex_unlock(&h->lock);
    } else if (atomic_load(&p->nalive) > 0) {
      pp = &p->next_orphan;
      continue;
    }
    *pp = p->next_orphan;
    pool_join(p);
    pool_report_failures(L, p, 1);
    pool_unref(p);
  }
}

void pool_close_orphans(lua_State *L, home *h) { orphans_reap(L, h, 1); }

static int ex_gc(lua_State *L) {
  pool **pp = luaL_checkudata(L, 1, EXECUTOR_MT);
  pool *p = *pp;
  if (p == NULL) return 0;
  *pp = NULL;
  orphans_reap(L, p->home, 0);
  if (p->kind != POOL_INLINE && !p->joined && atomic_load(&p->nalive) > 0 &&
      !p->home->closed) {       /* (closed: lua_close, where waiting is the point) */
    pool_shutdown(L, p, 0, 0);
    p->next_orphan = p->home->orphans;   /* (it keeps our reference) */
    p->home->orphans = p;
    return 0;
  }
  {
    int pooled = p->kind != POOL_INLINE;
    home *h = p->home;
    home_ref(h);
    pool_shutdown(L, p, 1, 0);
    pool_unref(p);
    /* An executor is collected, usually with the futures of its work: give
     * the memory back.  The home's spare futures go (they are scattered
     * over the heap and would keep whole pages), and glibc returns the
     * free pages it keeps (it trims only the top of the main heap by
     * itself): after a run of big batches, the memory it held stayed
     * resident for good (30 MB after batches of 20,000 tasks, 7 MB with
     * this). */
    if (pooled && !h->closed) {
      home_release_spares(h);
      pool_give_back();
      /* What the futures kept (their results' Lua values) is freed only by
       * the next collection: a sentinel trims again when it has run. */
      lua_newuserdatauv(L, 0, 0);
      luaL_setmetatable(L, GIVE_BACK_MT);
      lua_pop(L, 1);
    }
    home_unref(h);
  }
  return 0;
}

static int give_back_gc(lua_State *L) {
  (void)L;
  pool_give_back();
  return 0;
}

/* core.memory() -> {trims = n, tokens = n}: how many times weft gave free
 * memory back, and how many worker arenas it has yet to give back */
static int l_memory(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)atomic_load(&give_back.count));
  lua_setfield(L, -2, "trims");
  lua_pushinteger(L, (lua_Integer)atomic_load(&give_back.tokens));
  lua_setfield(L, -2, "tokens");
  return 1;
}

/* <close>: shut down and wait; the executor object stays usable for
 * stats and raises kind shutdown on submit. */
static int ex_close(lua_State *L) {
  pool_shutdown(L, check_pool(L, 1), 1, 0);
  return 0;
}

/* Raises kind shutdown if the executor no longer takes work. */
static int ex_check_open(lua_State *L) {
  if (check_pool(L, 1)->shutdown)
    return weft_error(L, WK_SHUTDOWN, "%s after the executor was shut down",
                      luaL_optstring(L, 2, "submit"));
  return 0;
}

static const char *kind_name(const pool *p) {
  static const char *const names[] = {"inline", "threads", "processes", "redis"};
  return names[p->kind];
}

static int ex_stats(lua_State *L) {
  pool *p = check_pool(L, 1);
  long started = 0, completed = 0, failed = 0, busy = 0;
  long dep_failed = atomic_load(&p->dep_failed), cancelled = atomic_load(&p->cancelled);
  long timed_out = atomic_load(&p->timed_out);
  worker *w;
  for (w = atomic_load(&p->all); w; w = w->next_all) {
    started += atomic_load(&w->started);
    completed += atomic_load(&w->completed);
    failed += atomic_load(&w->failed);
    busy += atomic_load(&w->busy);
  }
  if (p->kind == POOL_PROCESSES) procs_counts(p, &started, &busy);
  lua_createtable(L, 0, 10);
#define STAT(name, value) (lua_pushinteger(L, (lua_Integer)(value)), lua_setfield(L, -2, name))
  STAT("workers", p->nworkers);
  STAT("busy", busy);
  STAT("queued", atomic_load(&p->submitted) - started - cancelled - dep_failed);
  STAT("completed", completed);
  STAT("failed", failed + dep_failed + timed_out);
  STAT("cancelled", cancelled + atomic_load(&p->stopped));
  STAT("timed_out", timed_out);
#undef STAT
  if (p->timeout >= 0) {
    lua_pushnumber(L, p->timeout);
    lua_setfield(L, -2, "timeout");
  }
  lua_pushstring(L, kind_name(p));
  lua_setfield(L, -2, "kind");
  if (p->kind == POOL_PROCESSES) procs_stats(L, p);
  if (p->kind == POOL_REDIS) rclient_stats(L, p);
  if (p->name) {
    lua_pushstring(L, p->name);
    lua_setfield(L, -2, "name");
  }
  return 1;
}

static int ex_tostring(lua_State *L) {
  pool *p = check_pool(L, 1);
  lua_pushfstring(L, "weft.Executor(%s%s%s, %d workers%s)", kind_name(p), p->name ? " " : "",
                  p->name ? p->name : "", p->nworkers, p->shutdown ? ", shut down" : "");
  return 1;
}

/* === submit ============================================================== */

/* What a submit knows of its task besides the function: the metadata of a
 * weft.task, or the executor's defaults. */
#define SPEC_MAX_DELAYS 32
typedef struct task_spec {
  double timeout;                    /* < 0: none */
  int retries;
  double delays[SPEC_MAX_DELAYS];    /* (a longer list repeats its last) */
  int ndelays;
  char name[128];                    /* "" for none */
} task_spec;


static void submit_msg(lua_State *L, pool *p, wire_enc *e, const char *msg, size_t len,
                       proto_blob **blobs, size_t nblobs, future **deps, size_t ndeps,
                       const task_spec *spec, int outside);

/* core._task_metatable(mt): tells submit what a weft.task looks like. */
static int l_task_metatable(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &wire_task_mt);
  return 0;
}

static double opt_number(lua_State *L, int t, const char *k, double dflt) {
  double v = lua_getfield(L, t, k) == LUA_TNUMBER ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

/* Reads the task at arg 2: a function, or a weft.task (whose function
 * then replaces it on the stack).  weft.task has checked the fields. */
static void read_task(lua_State *L, pool *p, const char *what, task_spec *spec) {
  int is_task = 0, i, n;
  spec->timeout = p->timeout;
  spec->retries = 0;
  spec->ndelays = 0;
  spec->name[0] = '\0';
  if (lua_type(L, 2) == LUA_TFUNCTION) return;
  if (lua_istable(L, 2) && lua_getmetatable(L, 2)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &wire_task_mt);
    is_task = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  if (!is_task || lua_getfield(L, 2, "fn") != LUA_TFUNCTION)
    weft_error(L, WK_CONFIG, "%s: the task must be a function or a weft.task, got %s", what,
               luaL_typename(L, 2));
  if (lua_getfield(L, 2, "name") == LUA_TSTRING)
    snprintf(spec->name, sizeof spec->name, "%s", lua_tostring(L, -1));
  lua_pop(L, 1);
  spec->timeout = opt_number(L, 2, "timeout", p->timeout);
  spec->retries = (int)opt_number(L, 2, "retries", 0);
  switch (lua_getfield(L, 2, "retry_delay")) {
    case LUA_TNUMBER:
      spec->delays[0] = lua_tonumber(L, -1);
      spec->ndelays = 1;
      break;
    case LUA_TTABLE:
      n = (int)lua_rawlen(L, -1);
      for (i = 1; i <= n && i <= SPEC_MAX_DELAYS; i++) {
        lua_rawgeti(L, -1, i);
        spec->delays[spec->ndelays++] = lua_tonumber(L, -1);
        lua_pop(L, 1);
      }
      break;
    default:
      break;
  }
  lua_pop(L, 1);
  lua_replace(L, 2);   /* the function */
}

/* Builds the task for an encoded message and hangs it on its
 * dependencies; pushes its future.  The task takes over the references
 * the encoder holds. */
static void submit_encoded(lua_State *L, pool *p, wire_enc *e, const task_spec *spec) {
  submit_msg(L, p, e, e->out.data, e->out.len, e->blobs, e->nblobs, e->deps, e->ndeps, spec, 0);
}

static void submit_msg(lua_State *L, pool *p, wire_enc *e, const char *msg, size_t len,
                       proto_blob **blobs, size_t nblobs, future **deps, size_t ndeps,
                       const task_spec *spec, int outside) {
  size_t delays = (size_t)spec->ndelays * sizeof(double);
  size_t ptrs = (nblobs + ndeps) * sizeof(void *);
  size_t need = sizeof(task) + delays + ptrs + len;
  future *f;
  if (p->kind == POOL_REDIS && !outside) {   /* too big for the server: said now */
    char why[2000];
    if (rclient_check_size(p, "the task (its function and arguments)", len, why, sizeof why)) {
      if (e) wire_enc_free(e);
      weft_error(L, WK_SERIALIZATION, "%s", why);
    }
  }
  f = future_new(p->home, p);
  task *t = NULL;
  size_t i;
  int failed_dep = -1;
  if (p->nspares == 0) {   /* a batch of finished tasks, one lock for 16 */
    pthread_mutex_lock(&p->lock);
    while (p->nfree > 0 && p->nspares < POOL_SPARES)
      p->spares[p->nspares++] = p->free_tasks[--p->nfree];
    pthread_mutex_unlock(&p->lock);
  }
  if (p->nspares > 0 && p->spares[p->nspares - 1]->size >= need) t = p->spares[--p->nspares];
  if (t == NULL) {
    t = malloc(need < 256 ? 256 : need);
    if (t) t->size = need < 256 ? 256 : need;
  }
  if (f == NULL || t == NULL ||
      ((spec->name[0] || p->home->flow || p->kind == POOL_REDIS || outside) && future_meta_init(f, spec->name, p->home->flow))) {
    free(t);
    if (f) future_unref(f);
    if (e) wire_enc_free(e);
    luaL_error(L, "weft: out of memory");
  }
  pool_ref(p);
  future_ref(f);                    /* one for the task, one for Lua */
  need = t->size;
  memset(t, 0, sizeof *t);
  t->size = need;
  t->f = f;
  t->pool = p;
  t->timeout = spec->timeout;
  t->retries = spec->retries;
  t->attempt = 1;
  t->outside = outside;
  t->delays = (double *)(void *)(t + 1);
  t->ndelays = spec->ndelays;
  memcpy(t->delays, spec->delays, delays);
  /* The message owns the references the encoder took. */
  t->blobs = (proto_blob **)(void *)(t->delays + spec->ndelays);
  t->nblobs = nblobs;
  if (nblobs) memcpy(t->blobs, blobs, nblobs * sizeof *t->blobs);
  t->deps = (future **)(t->blobs + nblobs);
  t->ndeps = ndeps;
  if (ndeps) memcpy(t->deps, deps, ndeps * sizeof *t->deps);
  t->msg = (char *)(t->deps + ndeps);
  t->len = len;
  memcpy(t->msg, msg, len);
  if (e) {
    e->nblobs = e->ndeps = 0;
    wire_enc_keep_buffer(e, &p->encbuf);
    wire_enc_free(e);
  }
  future_push(L, f);
  pool_bump(&p->submitted);
  /* Keep the list of failures-to-report from growing without bound: drop
   * the ones somebody looked at or whose future is gone. */
  if (atomic_load_explicit(&p->nfailed, memory_order_relaxed) > p->prune_at) {
    pool_report_failures(L, p, 0);
    p->prune_at = 2 * atomic_load(&p->nfailed) + 1024;
  }
  if (t->ndeps == 0) {
    atomic_init(&t->pending, 0);
    pool_submit_ready(p, t);
    return;
  }
  atomic_init(&t->pending, (int)t->ndeps + 1);
  pthread_mutex_lock(&p->lock);
  t->waiting = TASK_DEPS;
  t->wprev = NULL;
  t->wnext = p->waiting;
  if (p->waiting) p->waiting->wprev = t;
  p->waiting = t;
  pthread_mutex_unlock(&p->lock);
  for (i = 0; i < t->ndeps; i++) {
    future *d = t->deps[i];
    d->observed = 1;                 /* its error travels on in ours */
    if (future_add_dependent(d, t) != 0) {
      if (future_state(d) != FS_FINISHED && failed_dep < 0) failed_dep = (int)i;
      atomic_fetch_sub(&t->pending, 1);
    }
  }
  if (failed_dep >= 0) {
    future *up = t->deps[failed_dep];
    future_ref(up);
    atomic_fetch_add(&p->dep_failed, 1);
    if (future_settle(f, FS_FAILED, NULL, 0, up) == 0) {
      pool_note_failure(p, f);
    } else {
      atomic_fetch_sub(&p->dep_failed, 1);
      future_unref(up);
    }
  }
  if (atomic_fetch_sub(&t->pending, 1) == 1) task_ready(t);
}

void pool_submit_outside(lua_State *L, pool *p, const char *msg, size_t len,
                         const wire_dep *deps, size_t ndeps, const char *name, double timeout,
                         int retries, const double *delays, int ndelays) {
  task_spec spec;
  future *small[8], **fs = small;
  size_t i;
  if (ndeps > 8 && (fs = malloc(ndeps * sizeof *fs)) == NULL) luaL_error(L, "weft: out of memory");
  spec.timeout = timeout;
  spec.retries = retries;
  spec.ndelays = ndelays < SPEC_MAX_DELAYS ? ndelays : SPEC_MAX_DELAYS;
  memcpy(spec.delays, delays, (size_t)spec.ndelays * sizeof *delays);
  snprintf(spec.name, sizeof spec.name, "%s", name ? name : "");
  /* Each dependency becomes a finished future of its results. */
  for (i = 0; i < ndeps; i++) {
    char *copy = malloc(deps[i].len ? deps[i].len : 1);
    fs[i] = future_new(p->home, NULL);
    if (fs[i] == NULL || copy == NULL) {
      free(copy);
      if (fs[i]) future_unref(fs[i]);
      while (i-- > 0) future_unref(fs[i]);
      if (fs != small) free(fs);
      luaL_error(L, "weft: out of memory");
    }
    if (deps[i].len) memcpy(copy, deps[i].data, deps[i].len);
    future_settle(fs[i], FS_FINISHED, copy, deps[i].len, NULL);
  }
  submit_msg(L, p, NULL, msg, len, NULL, 0, fs, ndeps, &spec, 1);
  if (fs != small) free(fs);
}

static pool *submittable(lua_State *L, const char *what, task_spec *spec) {
  pool *p = check_pool(L, 1);
  if (p->shutdown)
    weft_error(L, WK_SHUTDOWN, "%s after the executor was shut down", what);
  read_task(L, p, what, spec);
  return p;
}

static void raise_encode_error(lua_State *L, pool *p, wire_enc *e, const char *what) {
  lua_pushfstring(L, "%s: %s", what, wire_error(e));
  wire_enc_keep_buffer(e, &p->encbuf);
  wire_enc_free(e);
  weft_error(L, WK_SERIALIZATION, "%s", lua_tostring(L, -1));
}

/* The inline executor runs the task submitted last (future at fidx)
 * before submit returns.  If it waits on dependencies, the thread that
 * settles the last of them queues it (pool_enqueue then wakes us), or fails
 * it; meanwhile this state keeps running its done-callbacks, which may be
 * what settles a dependency. */
static void inline_run(lua_State *L, pool *p, int fidx) {
  future *f = future_check(L, fidx);
  home *h = p->home;
  home_watch watch;
  atomic_store(&f->watched, 1);
  for (;;) {
    int rc = 0;
    inline_drain(L, p);
    if (FS_IS_FINAL(future_state(f))) break;
    home_dispatch(L);
    home_watch_init(L, &watch);
    pthread_mutex_lock(&h->lock);
    h->waiting_on = f;
    while (atomic_load(&p->qlen) == 0 && !FS_IS_FINAL(future_state(f)) &&
           !home_has_work(h) && rc == 0)
      rc = home_sleep_watch(L, h, -1, &watch);
    h->waiting_on = NULL;
    pthread_mutex_unlock(&h->lock);
    if (rc == EINTR) {
      if (stop_interrupt_pending() && !h->dispatching) future_cancel_force(f);
      home_deliver_interrupt(L, &watch);
    }
  }
  home_dispatch(L);
}

/* Starts a task message: in-process pools get pointers to shared bytecode
 * (kept alive by the pool), a process pool the bytecode itself. */
static void encoder_init(wire_enc *e, lua_State *L, pool *p) {
  int outside = p->kind >= POOL_PROCESSES;
  wire_enc_init_with(e, L, outside, 1, &p->encbuf);
  if (!outside) e->keep = &p->blobs;
}

/* ex:submit(fn, ...) -> future */
static int ex_submit(lua_State *L) {
  task_spec spec;
  pool *p = submittable(L, "submit", &spec);
  wire_enc e;
  int i, n = lua_gettop(L);
  encoder_init(&e, L, p);
  /* Errors name the task's own arguments: "argument 1" is the first one
   * after the function. */
  if (wire_put_byte(&e, RUN_CALL) || wire_put_size(&e, (size_t)(n - 1)) ||
      wire_put(&e, 2, "function", 0))
    raise_encode_error(L, p, &e, "submit");
  for (i = 3; i <= n; i++)
    if (wire_put(&e, i, "argument", i - 2)) raise_encode_error(L, p, &e, "submit");
  submit_encoded(L, p, &e, &spec);
  if (p->kind == POOL_INLINE) inline_run(L, p, lua_gettop(L));
  return 1;
}

/* ex:_submit_chunk(fn, items, i, j, spread) -> future of (values, errors, n) */
static int ex_submit_chunk(lua_State *L) {
  task_spec spec;
  pool *p = submittable(L, "map", &spec);
  lua_Integer i = luaL_checkinteger(L, 4), j = luaL_checkinteger(L, 5), k;
  int spread = lua_toboolean(L, 6);
  wire_enc e;
  luaL_checktype(L, 3, LUA_TTABLE);
  encoder_init(&e, L, p);
  if (wire_put_byte(&e, RUN_CHUNK) || wire_put(&e, 2, "function", 0) ||
      wire_put_byte(&e, spread) || wire_put_size(&e, (size_t)(j - i + 1)))
    raise_encode_error(L, p, &e, "map");
  for (k = i; k <= j; k++) {
    lua_rawgeti(L, 3, k);
    if (wire_put(&e, -1, "item", (int)k)) raise_encode_error(L, p, &e, "map");
    lua_pop(L, 1);
  }
  submit_encoded(L, p, &e, &spec);
  if (p->kind == POOL_INLINE) inline_run(L, p, lua_gettop(L));
  return 1;
}

/* === constructors ======================================================== */

static char *dup_field(lua_State *L, int t, const char *k) {
  char *s = NULL;
  if (lua_getfield(L, t, k) == LUA_TSTRING) s = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  return s;
}

/* Every executor of a state, in a weak table, for pool_abort_all. */
static const char EXECUTORS = 'e';

static void remember_executor(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &EXECUTORS) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_pushvalue(L, -1);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &EXECUTORS);
  }
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* core.executors() -> the executors of this state not collected yet */
static int l_executors(lua_State *L) {
  lua_Integer n = 0;
  lua_newtable(L);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &EXECUTORS) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      pool **pp = luaL_testudata(L, -2, EXECUTOR_MT);
      lua_pop(L, 1);
      if (pp && *pp) {
        lua_pushvalue(L, -1);
        lua_rawseti(L, -4, ++n);
      }
    }
  }
  lua_pop(L, 1);
  return 1;
}

/* Shuts p down now: queued tasks cancelled, running ones stopped (as by
 * a forced cancel), workers joined. */
static void pool_abort(lua_State *L, pool *p) {
  int i;
  pool_shutdown(L, p, 0, 1);
  if (p->kind == POOL_REDIS) {
    rclient_abort(p);
  } else if (p->kind == POOL_PROCESSES) {
    procs_abort(p);
  } else if (p->kind == POOL_THREADS) {
    for (i = 0; i < p->nworkers; i++) {
      worker *w;
      future *f = NULL;
      pthread_mutex_lock(&p->lock);
      w = p->slots[i];
      pthread_mutex_unlock(&p->lock);
      pthread_mutex_lock(&w->lock);
      if (w->task && !w->abandoned) {
        f = w->task->f;
        future_ref(f);
      }
      pthread_mutex_unlock(&w->lock);
      if (f) {
        pool_force_cancel(p, f);
        future_unref(f);
      }
    }
  }
  pool_shutdown(L, p, 1, 1);
}

void pool_abort_all(lua_State *L) {
  /* No collection meanwhile: an executor nobody references any more would
   * otherwise be finalized in the middle (its __gc waits for its running
   * tasks) before its turn to be aborted came. */
  int gc_was_on = lua_gc(L, LUA_GCISRUNNING);
  if (gc_was_on) lua_gc(L, LUA_GCSTOP);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &EXECUTORS) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      pool **pp = luaL_testudata(L, -2, EXECUTOR_MT);
      if (pp && *pp) pool_abort(L, *pp);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  {
    home *h = home_of(L);
    pool *p;
    for (p = h->orphans; p; p = p->next_orphan) pool_abort(L, p);
    orphans_reap(L, h, 0);
  }
  if (gc_was_on) lua_gc(L, LUA_GCRESTART);
}

/* The default of `workers` (weft_set_default_workers); 0: the CPU count. */
static atomic_int default_workers;

void pool_set_default_workers(int n) { atomic_store(&default_workers, n > 0 ? n : 0); }

/* The process pool's options (arg 7 of core.pool): checked by weft.processes. */
static void read_procs_opts(lua_State *L, int t, procs_opts *o, char *path, size_t size) {
  const char *s;
  o->kill_grace = 0.5;
  o->max_tasks = 0;
  if (lua_istable(L, t)) {
    o->kill_grace = opt_number(L, t, "kill_grace", o->kill_grace);
    o->max_tasks = (long)opt_number(L, t, "max_tasks_per_worker", 0);
  }
  if (lua_istable(L, t) && lua_getfield(L, t, "worker_path") == LUA_TSTRING) {
    snprintf(path, size, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    if (access(path, X_OK) != 0)
      weft_error(L, WK_CONFIG, "weft.processes: worker_path %s is not an executable program", path);
    o->worker_path = path;
    return;
  }
  if (lua_istable(L, t)) lua_pop(L, 1);
  if ((s = child_worker_path(path, size)) == NULL)
    weft_error(L, WK_CONFIG,
               "weft.processes: cannot find the weft-worker program (looked for %s); "
               "set WEFT_WORKER or the worker_path option to its path", path);
  o->worker_path = s;
}

/* A Redis executor's client, from the options at index t (checked by
 * weft.redis): url, queue, secret, result_ttl, message_ttl, max_deliveries,
 * reconnect_window. */
static void start_redis(lua_State *L, pool *p, int t) {
  rclient_opts o;
  char err[2600];
  int kind;
  memset(&o, 0, sizeof o);
  luaL_checktype(L, t, LUA_TTABLE);
  lua_getfield(L, t, "url");
  o.url = luaL_checkstring(L, -1);
  if (lua_getfield(L, t, "queue") == LUA_TSTRING) o.queue = lua_tostring(L, -1);
  if (lua_getfield(L, t, "secret") == LUA_TSTRING) o.secret = lua_tolstring(L, -1, &o.secret_len);
  o.result_ttl = opt_number(L, t, "result_ttl", 3600);
  o.message_ttl = opt_number(L, t, "message_ttl", 86400);
  o.max_deliveries = (int)opt_number(L, t, "max_deliveries", 3);
  o.reconnect_window = opt_number(L, t, "reconnect_window", 60);
  o.max_message = opt_number(L, t, "max_message", 0);
  o.allow_eviction = lua_getfield(L, t, "allow_eviction") == LUA_TBOOLEAN && lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (rclient_start(p, &o, &kind, err, sizeof err) != 0) {
    pool_shutdown(L, p, 1, 1);
    weft_error(L, (weft_kind)kind, "weft.redis: %s", err);
  }
  if (o.warning[0]) {
    char msg[1700];
    snprintf(msg, sizeof msg, "weft.redis: %s", o.warning);
    log_here(L, LOG_WARN, msg);
  }
  lua_pop(L, 3);
}

/* core.redis_url_error(url) -> nil, or why the URL is not a usable Redis
 * URL (executor specs are checked before anything is built). */
static int l_redis_url_error(lua_State *L) {
  rconn_addr a;
  char err[1200];
  if (rconn_parse_url(luaL_checkstring(L, 1), &a, err, sizeof err) == 0) return 0;
  lua_pushstring(L, err);
  return 1;
}

/* core.pool(kind, workers, name, init, init_args, timeout, opts) -> executor */
static int l_pool(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  char worker_path[2 * 4096 + 64];   /* (PATH_MAX twice: where child_worker_path looked) */
  procs_opts po;
  pool *p, **pp;
  int i;
  pool_kind k = strcmp(kind, "inline") == 0      ? POOL_INLINE
                : strcmp(kind, "processes") == 0 ? POOL_PROCESSES
                : strcmp(kind, "redis") == 0     ? POOL_REDIS
                                                 : POOL_THREADS;
  lua_settop(L, 7);
  if (n <= 0 || n > POOL_MAX_WORKERS)
    return weft_error(L, WK_CONFIG, "workers must be between 1 and %d, got %I", POOL_MAX_WORKERS,
                      (LUAI_UACINT)n);
  if (k == POOL_PROCESSES) read_procs_opts(L, 7, &po, worker_path, sizeof worker_path);
  p = aligned_alloc(CACHE_LINE, (sizeof *p + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
  if (p == NULL) return luaL_error(L, "weft: out of memory");
  memset(p, 0, sizeof *p);
  atomic_init(&p->refs, 1);
  p->kind = k;
  p->nworkers = p->kind == POOL_INLINE || p->kind == POOL_REDIS ? 1 : (int)n;
  p->timeout = lua_type(L, 6) == LUA_TNUMBER ? lua_tonumber(L, 6) : -1;
  atomic_init(&p->all, NULL);
  {
    /* Held for a few instructions at a time by the submitter and the
     * workers: spinning briefly beats sleeping in the kernel. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->lock, &ma);
    pthread_mutexattr_destroy(&ma);
  }
  pthread_cond_init(&p->work, NULL);
  p->slots = calloc((size_t)p->nworkers, sizeof *p->slots);
  for (i = 0; p->slots && i < p->nworkers; i++) {
    if ((p->slots[i] = pool_worker_new(p, i + 1)) == NULL) break;
  }
  if (p->slots == NULL || i < p->nworkers) {
    pool_unref(p);
    return luaL_error(L, "weft: out of memory");
  }
  p->home = home_of(L);
  atomic_fetch_add(&p->home->refs, 1);
  if (lua_isstring(L, 3)) p->name = strdup(lua_tostring(L, 3));
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    int pk = lua_gettop(L);
    p->path = dup_field(L, pk, "path");
    p->cpath = dup_field(L, pk, "cpath");
  }
  lua_pop(L, 1);
  pp = lua_newuserdatauv(L, sizeof *pp, 0);
  *pp = p;
  luaL_setmetatable(L, EXECUTOR_MT);
  remember_executor(L);
  if (!lua_isnoneornil(L, 4)) {
    wire_enc e;
    int nargs = 0;
    if (lua_type(L, 4) != LUA_TFUNCTION)
      return weft_error(L, WK_CONFIG, "init must be a function, got %s", luaL_typename(L, 4));
    if (!lua_isnoneornil(L, 5) && !lua_istable(L, 5))
      return weft_error(L, WK_CONFIG, "init_args must be a list, got %s", luaL_typename(L, 5));
    lua_pushvalue(L, 4);
    if (lua_istable(L, 5)) {
      lua_Unsigned len = lua_rawlen(L, 5);
      if (len > 1000000 || !lua_checkstack(L, (int)len))
        return weft_error(L, WK_CONFIG, "init_args: too many values (%I)", (LUAI_UACINT)len);
      nargs = (int)len;
      for (i = 1; i <= nargs; i++) lua_rawgeti(L, 5, i);
    }
    wire_enc_init(&e, L, p->kind == POOL_PROCESSES, 0);
    if (p->kind != POOL_PROCESSES) e.keep = &p->blobs;   /* keeps init's functions alive */
    if (wire_put_byte(&e, RUN_CALL) ||
        wire_encode_tuple(&e, -(nargs + 1), nargs + 1, "init argument")) {
      lua_pushfstring(L, "init: %s", wire_error(&e));
      wire_enc_free(&e);
      return weft_error(L, WK_SERIALIZATION, "%s", lua_tostring(L, -1));
    }
    lua_pop(L, nargs + 1);
    p->init_msg = buf_steal(&e.out, &p->init_len);
    wire_enc_free(&e);
  }
  if (p->kind != POOL_INLINE) {
    size_t k;
    int rc;
    p->ring = aligned_alloc(CACHE_LINE, POOL_RING * sizeof *p->ring);
    if (p->ring == NULL) return luaL_error(L, "weft: out of memory");
    for (k = 0; k < POOL_RING; k++) {
      atomic_init(&p->ring[k].seq, k);
      p->ring[k].t = NULL;
    }
    if (p->kind == POOL_REDIS) start_redis(L, p, 7);
    if (p->kind == POOL_PROCESSES && (rc = procs_start(p, &po)) != 0) {
      pool_shutdown(L, p, 1, 1);
      return weft_error(L, WK_CONFIG, "cannot start the process pool's supervisor: %s",
                        strerror(rc));
    }
    if (p->kind == POOL_THREADS) pthread_once(&tune_once, tune_malloc);
    for (i = 0; p->kind == POOL_THREADS && i < p->nworkers; i++) {
      if ((rc = worker_start(p, p->slots[i])) != 0) {
        pool_shutdown(L, p, 1, 1);
        return weft_error(L, WK_CONFIG, "cannot start worker thread %d of %d: %s", i + 1,
                          p->nworkers, strerror(rc));
      }
    }
  }
  return 1;
}

static int l_is_executor(lua_State *L) {
  lua_pushboolean(L, luaL_testudata(L, 1, EXECUTOR_MT) != NULL);
  return 1;
}

/* core.default_workers() -> workers when the option is left out */
static int l_default_workers(lua_State *L) {
  long n = atomic_load(&default_workers);
  if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

static int l_cpu_count(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, weft_now());
  return 1;
}

void pool_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"submit", ex_submit},
      {"_submit_chunk", ex_submit_chunk},
      {"shutdown", ex_shutdown},
      {"stats", ex_stats},
      {"_check_open", ex_check_open},
      {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"pool", l_pool},
      {"redis_url_error", l_redis_url_error},
      {"cpu_count", l_cpu_count},
      {"default_workers", l_default_workers},
      {"_task_metatable", l_task_metatable},
      {"is_executor", l_is_executor},
      {"executors", l_executors},
      {"now", l_now},
      {"memory", l_memory},
      {NULL, NULL}};
  int mod = lua_gettop(L);
  luaL_newmetatable(L, GIVE_BACK_MT);
  lua_pushcfunction(L, give_back_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, EXECUTOR_MT);
  luaL_newlib(L, methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, mod, "Executor");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ex_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, ex_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, ex_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "weft.Executor");
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  lua_pushinteger(L, POOL_MAX_WORKERS);
  lua_setfield(L, -2, "max_workers");
}
