/*
 * future.c -- futures, homes, waits, done-callbacks and error objects.
 *
 * The split follows CPython's concurrent.futures._base: this file knows
 * nothing about executors; pools create futures and settle them.
 *
 * Wake-ups without a lock per completion.  A completer (usually a worker
 * thread) stores the final state, then looks at f->watched; a waiter sets
 * f->watched (under the home lock) before it checks the state.  Both are
 * sequentially consistent, so either the waiter sees the final state or the
 * completer sees `watched` and takes the home lock to run the waiters,
 * dependents and callbacks hung on f and to signal the home's condition.
 * A future nobody waits on is settled with two atomic operations.
 *
 * Locks: pool locks (rank 1) may be held while taking a home lock (rank 2);
 * never the other way round.  No lock is held while Lua code runs.
 */
#include "future.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "log.h"
#include "stop.h"
#include "wire.h"

#define FUTURE_MT "weft.Future"
#define ERROR_MT "weft.Error"
#define HOME_MT "weft.home"
#define ASCOMPLETED_MT "weft.as_completed"

static const char HOME_KEY = 'h';       /* registry: this state's home */
static const char CALLBACKS = 'c';      /* registry: future ptr -> {ud, cb...} */
static const char TICKER = 't';         /* registry: core.set_ticker's function */
static const char FUTURE_MT_KEY = 'f';  /* registry: the future metatable */

static const char *const kind_names[WK_COUNT] = {
    "none", "task", "timeout", "cancelled", "dependency", "shutdown",
    "broken", "worker_died", "invalid_state", "serialization", "config",
    "exit", "closed", "memory"};

const char *weft_kind_name(weft_kind k) {
  return (unsigned)k < WK_COUNT ? kind_names[k] : "unknown";
}

/* === time ================================================================ */

double weft_opt_timeout(lua_State *L, int arg, const char *what) {
  lua_Number t;
  if (lua_isnoneornil(L, arg)) return -1;
  if (lua_type(L, arg) != LUA_TNUMBER)
    weft_error(L, WK_CONFIG, "%s must be a number of seconds, got %s", what,
               luaL_typename(L, arg));
  t = lua_tonumber(L, arg);
  if (!(t >= 0))
    weft_error(L, WK_CONFIG, "%s must be a non-negative number of seconds, got %s",
               what, lua_tostring(L, arg));
  return t;
}

/* === error objects ======================================================= */

static void push_errorv(lua_State *L, weft_kind kind, const char *fmt, va_list ap) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, weft_kind_name(kind));
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, ERROR_MT);
}

void weft_push_error(lua_State *L, weft_kind kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
}

int weft_error(lua_State *L, weft_kind kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

int weft_bad_self(lua_State *L, int idx, const char *what, const char *var) {
  lua_Debug ar;
  const char *name = NULL;
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar)) name = ar.name;
  if (name == NULL)
    return weft_error(L, WK_CONFIG, "a method expected %s as self, got %s (call it as %s:method(...))",
                      what, luaL_typename(L, idx), var);
  return weft_error(L, WK_CONFIG, "%s: expected %s as self, got %s (call it as %s:%s(...))",
                    name, what, luaL_typename(L, idx), var, name);
}

/* Gives the error-record table at the top (and its cause chain) the
 * weft.Error metatable. */
void weft_bless_error(lua_State *L) {
  int depth = 0;
  lua_pushvalue(L, -1);
  while (lua_istable(L, -1) && depth++ < 100) {
    if (lua_getfield(L, -1, "kind") != LUA_TSTRING) { lua_pop(L, 1); break; }
    lua_pop(L, 1);
    luaL_setmetatable(L, ERROR_MT);
    lua_getfield(L, -1, "cause");
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
}

/* tostring(err): "weft.Error [kind] in task 'x': message", the worker's
 * traceback, then each cause the same way. */
static int error_tostring(lua_State *L) {
  int depth = 0, err;
  lua_pushliteral(L, "");
  lua_pushvalue(L, 1);
  while (lua_istable(L, -1) && depth < 20) {
    const char *kind, *msg, *task, *tb;
    err = lua_gettop(L);
    lua_getfield(L, err, "kind");
    lua_getfield(L, err, "message");
    lua_getfield(L, err, "task");
    lua_getfield(L, err, "traceback");
    kind = lua_tostring(L, err + 1);
    msg = lua_tostring(L, err + 2);
    task = lua_tostring(L, err + 3);
    tb = lua_tostring(L, err + 4);
    lua_pushvalue(L, err - 1);
    lua_pushfstring(L, "%sweft.Error [%s]%s%s%s: %s%s%s", depth ? "\ncaused by: " : "",
                    kind ? kind : "?", task ? " in task '" : "", task ? task : "",
                    task ? "'" : "", msg ? msg : "(no message)", tb ? "\n" : "",
                    tb ? tb : "");
    lua_concat(L, 2);
    lua_replace(L, err - 1);
    lua_settop(L, err);
    lua_getfield(L, err, "cause");
    lua_remove(L, err);
    depth++;
  }
  lua_pop(L, 1);
  return 1;
}

/* weft.is(err, kind) */
static int l_is(lua_State *L) {
  int ok = 0;
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, ERROR_MT);
    ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  if (ok && !lua_isnoneornil(L, 2)) {
    lua_getfield(L, 1, "kind");
    ok = lua_rawequal(L, -1, 2) || (lua_type(L, 2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
                                    strcmp(lua_tostring(L, -1), lua_tostring(L, 2)) == 0);
    lua_pop(L, 1);
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* weft.core.error(kind, message [, fields]) -> error object (not raised) */
static int l_make_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  int k;
  for (k = 1; k < WK_COUNT && strcmp(kind_names[k], kind) != 0; k++) {}
  if (k == WK_COUNT) return luaL_argerror(L, 1, "unknown error kind");
  weft_push_error(L, (weft_kind)k, "%s", msg);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  return 1;
}

/* === homes =============================================================== */

static int home_gc(lua_State *L) {
  home **hp = luaL_checkudata(L, 1, HOME_MT);
  if (*hp) {
    pool_close_orphans(L, *hp);  /* their tasks end before the state does */
    pthread_mutex_lock(&(*hp)->lock);
    (*hp)->closed = 1;
    pthread_mutex_unlock(&(*hp)->lock);
    log_flush_closed(*hp);   /* records nobody can deliver here any more */
    free((*hp)->flow);
    (*hp)->flow = NULL;
    home_unref(*hp);
    *hp = NULL;
  }
  return 0;
}

home *home_of(lua_State *L) {
  home *h, **hp;
  pthread_condattr_t ca;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &HOME_KEY) == LUA_TUSERDATA) {
    h = *(home **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
  }
  lua_pop(L, 1);
  h = calloc(1, sizeof *h);
  if (h == NULL) luaL_error(L, "weft: out of memory");
  atomic_init(&h->refs, 1);
  atomic_init(&h->log_level, log_default_level());
  h->efd = -1;
  {
    pthread_mutexattr_t ma;   /* short critical sections: spin, then sleep */
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&h->lock, &ma);
    pthread_mutexattr_destroy(&ma);
  }
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cond, &ca);
  pthread_condattr_destroy(&ca);
  hp = lua_newuserdatauv(L, sizeof *hp, 0);
  *hp = h;
  luaL_setmetatable(L, HOME_MT);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &HOME_KEY);
  return h;
}

void home_ref(home *h) { atomic_fetch_add(&h->refs, 1); }

void home_release_spares(home *h) {
  future *f;
  while ((f = h->free_futures) != NULL) {
    h->free_futures = f->next_done;
    free(f);
  }
  h->nfree = 0;
}

void home_unref(home *h) {
  if (h && atomic_fetch_sub(&h->refs, 1) == 1) {
    future *f = h->done_head;
    while (f) {               /* callbacks that can no longer run */
      future *next = f->next_done;
      future_unref(f);
      f = next;
    }
    while ((f = h->free_futures) != NULL) {
      h->free_futures = f->next_done;
      free(f);
    }
    log_flush_closed(h);
    if (h->efd >= 0) close(h->efd);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
  }
}

/* === futures: life and settling ========================================== */

#define HOME_MAX_FREE 16384

/* Called on the home's thread only (submit, weft.future()). */
future *future_new(home *h, struct pool *p) {
  future *f = h->free_futures;
  if (f) {
    h->free_futures = f->next_done;
    h->nfree--;
    memset(f, 0, sizeof *f);
  } else if ((f = calloc(1, sizeof *f)) == NULL) {
    return NULL;
  }
  atomic_init(&f->refs, 1);
  atomic_init(&f->state, FS_PENDING);
  atomic_init(&f->watched, 0);
  home_ref(h);
  f->home = h;
  f->pool = p;
  return f;
}

int future_meta_init(future *f, const char *name, const char *flow) {
  future_meta *m = calloc(1, sizeof *m);
  if (m == NULL) return -1;
  m->name = name && name[0] ? strdup(name) : NULL;
  m->flow = flow ? strdup(flow) : NULL;
  if ((name && name[0] && m->name == NULL) || (flow && m->flow == NULL)) {
    free(m->name);
    free(m->flow);
    free(m);
    return -1;
  }
  m->submitted = weft_now();
  f->meta = m;
  return 0;
}

void future_ref(future *f) {
  atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

/* Drops what a dead future holds, except its home reference. */
static void future_clear(future *f) {
  if (f->data != f->inline_data) free(f->data);
  if (f->meta) {
    free(f->meta->name);
    free(f->meta->flow);
    free(atomic_load(&f->meta->remote));
    free(f->meta);
  }
  if (f->cause) future_unref(f->cause);
  if (f->pool) pool_unref(f->pool);
}

void future_unref(future *f) {
  if (f && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
    future_clear(f);
    home_unref(f->home);
    free(f);
  }
}

/* future_unref for the home's own thread: the memory goes back to the
 * home's free list. */
static void future_unref_at_home(future *f) {
  home *h = f->home;
  if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
  future_clear(f);
  if (h->nfree < HOME_MAX_FREE && !h->closed) {
    f->next_done = h->free_futures;
    h->free_futures = f;
    h->nfree++;
  } else {
    free(f);
  }
  home_unref(h);   /* if this was the last reference, it frees the list */
}

int future_state(const future *f) {
  return atomic_load_explicit(&((future *)f)->state, memory_order_acquire);
}

int future_start(future *f) {
  int expected = FS_PENDING;
  return atomic_compare_exchange_strong(&f->state, &expected, FS_RUNNING);
}

/* A waiter hung on several futures by wait() or as_completed(). */
typedef struct wlink {
  struct wlink *next;
  struct waiter *w;
  size_t index;
} wlink;

enum { WAIT_ALL, WAIT_FIRST_COMPLETED, WAIT_FIRST_EXCEPTION, WAIT_EACH };

/* As CPython's _Waiter: the completer does the counting, under the home
 * lock, and wakes the waiting thread only when its condition holds. */
typedef struct waiter {
  size_t n;
  future **fs;          /* unique futures, one reference each */
  wlink *links;
  int mode;             /* WAIT_*; WAIT_EACH: as_completed */
  int installed;
  /* Guarded by home->lock. */
  size_t *fin;          /* indexes of futures that settled, in order */
  size_t nfin;
  unsigned char *seen;  /* counted in ndone */
  size_t ndone;
  int failed;
  int ready;            /* the condition holds */
} waiter;

/* Caller holds h->lock.  Counts future i as done, once. */
static void waiter_account(waiter *w, size_t i) {
  if (!w->seen[i]) {
    w->seen[i] = 1;
    w->ndone++;
    if (future_state(w->fs[i]) == FS_FAILED) w->failed = 1;
  }
}

/* Caller holds h->lock. */
static void waiter_check(waiter *w) {
  switch (w->mode) {
    case WAIT_ALL: w->ready = w->ndone == w->n; break;
    case WAIT_FIRST_COMPLETED: w->ready = w->ndone > 0 || w->n == 0; break;
    case WAIT_FIRST_EXCEPTION: w->ready = w->failed || w->ndone == w->n; break;
    default: w->ready = w->nfin > 0; break;
  }
}

/* Caller holds h->lock.  Returns 1 when the waiter should be woken. */
static int waiter_hit(wlink *l) {
  waiter *w = l->w;
  w->fin[w->nfin++] = l->index;
  waiter_account(w, l->index);
  waiter_check(w);
  return w->ready;
}

/* Makes an eventfd readable. */
static void signal_efd(int fd) {
  uint64_t one = 1;
  while (write(fd, &one, sizeof one) < 0 && errno == EINTR) {}
}

/* Publishes f's final state to whoever watches it.  Dependents are moved to
 * `*work` for the caller to process without any lock held. */
static void future_notify(future *f, dlink **work) {
  home *h = f->home;
  wlink *l;
  dlink *d;
  int wake;
  if (!atomic_load(&f->watched)) return;
  pthread_mutex_lock(&h->lock);
  wake = h->waiting_on == f;
  for (l = f->waiters; l; l = l->next) wake |= waiter_hit(l);
  while ((d = f->dependents) != NULL) {
    f->dependents = d->next;
    d->upstream = f;
    future_ref(f);
    d->next = *work;
    *work = d;
  }
  f->notified = 1;
  if (f->has_callbacks && !f->queued_done && !h->closed) {
    future_ref(f);
    f->queued_done = 1;
    f->next_done = NULL;
    if (h->done_tail) h->done_tail->next_done = f; else h->done_head = f;
    h->done_tail = f;
    home_post_unlock(h);       /* waits run callbacks as they come */
    return;
  }
  if (wake && h->sleeping) pthread_cond_signal(&h->cond);
  pthread_mutex_unlock(&h->lock);
}

void home_post_unlock(home *h) {
  /* Every post writes: a dispatch reading the eventfd between another
   * post's flag and its write would otherwise swallow that write and leave
   * the flag set, and the next post would skip its own (a lost wake-up). */
  int poke = h->efd >= 0;
  if (poke) h->signaled = 1;
  if (h->sleeping) pthread_cond_signal(&h->cond);
  pthread_mutex_unlock(&h->lock);
  if (poke) signal_efd(h->efd);   /* an event loop watches the completion source */
}

int home_completion_fd(lua_State *L) {
  home *h = home_of(L);
  int fd;
  if (h->efd >= 0) return h->efd;
  if ((fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) return -1;
  pthread_mutex_lock(&h->lock);
  h->efd = fd;
  h->signaled = home_has_work(h);   /* (ready already) */
  pthread_mutex_unlock(&h->lock);
  if (h->signaled) signal_efd(fd);
  return fd;
}

int future_settle_into(future *f, int state, char *data, size_t len,
                       future *cause, dlink **work) {
  int s = atomic_load(&f->state);
  do {
    if (s >= FS_SETTLING) return -1;
  } while (!atomic_compare_exchange_weak(&f->state, &s, FS_SETTLING));
  if (data && len <= FUTURE_INLINE) {
    memcpy(f->inline_data, data, len);
    free(data);
    data = f->inline_data;
  }
  f->data = data;
  f->len = len;
  f->cause = cause;
  if (f->meta) atomic_store_explicit(&f->meta->finished, weft_now(), memory_order_relaxed);
  atomic_store(&f->state, state);
  future_notify(f, work);
  return 0;
}

int future_settle(future *f, int state, char *data, size_t len, future *cause) {
  dlink *work = NULL;
  int rc = future_settle_into(f, state, data, len, cause, &work);
  while (work) {
    dlink *d = work;
    future *up = d->upstream;
    work = d->next;
    pool_on_dependency_settled(d->task, up, &work);
    future_unref(up);
    free(d);
  }
  return rc;
}

int future_cancel(future *f) {
  int s = atomic_load(&f->state);
  if (s == FS_CANCELLED) return 1;
  if (s != FS_PENDING) return 0;
  if ((f->pool ? pool_cancel_pending(f->pool, f)
               : future_settle(f, FS_CANCELLED, NULL, 0, NULL)) != 0)
    return future_state(f) == FS_CANCELLED;
  if (f->pool) pool_on_cancel(f->pool, f);
  return 1;
}

int future_add_dependent(future *f, struct task *t) {
  home *h = f->home;
  dlink *d = malloc(sizeof *d);
  int done;
  if (d == NULL) return -1;
  d->task = t;
  d->upstream = NULL;
  pthread_mutex_lock(&h->lock);
  atomic_store(&f->watched, 1);
  done = FS_IS_FINAL(future_state(f));
  if (!done) {
    d->next = f->dependents;
    f->dependents = d;
  }
  pthread_mutex_unlock(&h->lock);
  if (done) free(d);
  return done;
}

/* === waiting ============================================================= */

/* Writes a message through weft's logger (the state's sink, or stderr). */
static void report_message(lua_State *L, const char *msg) {
  log_here(L, LOG_ERROR, msg);
}

/* Errors in done-callbacks are reported and ignored. */
static void report_callback_error(lua_State *L, int err) {
  int top = lua_gettop(L);
  err = lua_absindex(L, err);
  lua_pushfstring(L, "weft: error in a done-callback (ignored): %s",
                  luaL_tolstring(L, err, NULL));
  report_message(L, lua_tostring(L, -1));
  lua_settop(L, top);
}

/* Runs the ticker (core.set_ticker); not from inside a callback or itself. */
static void home_tick(lua_State *L, home *h) {
  int top = lua_gettop(L);
  h->tick_at = weft_now() + h->tick_every;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TICKER) == LUA_TFUNCTION) {
    h->dispatching++;
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
      lua_pushfstring(L, "weft: error in the ticker (ignored): %s", luaL_tolstring(L, -1, NULL));
      report_message(L, lua_tostring(L, -1));
    }
    h->dispatching--;
  }
  lua_settop(L, top);
}

/* The log records taken off h's queue (h->lock held), unless a delivery
 * is under way further up the stack: records are delivered in the order
 * they were made, so a dispatch nested in a delivery (an executor's __gc
 * while the sink allocates, a sink that waits) leaves the newer ones to
 * the outer delivery, which takes them once its batch is done. */
static log_record *take_logs_locked(home *h, long *dropped) {
  if (h->delivering_logs) {
    h->logs_deferred = 1;
    return NULL;
  }
  return h->log_head || h->dropped_logs ? log_take_locked(h, dropped) : NULL;
}

static void deliver_logs(lua_State *L, home *h, log_record *logs, long dropped) {
  while (logs || dropped) {
    h->delivering_logs = 1;
    h->logs_deferred = 0;
    log_deliver(L, logs, dropped);
    h->delivering_logs = 0;
    logs = NULL;
    dropped = 0;
    if (h->logs_deferred) {
      pthread_mutex_lock(&h->lock);
      logs = log_take_locked(h, &dropped);
      pthread_mutex_unlock(&h->lock);
    }
  }
}

/* Delivers the log records queued, then runs the callbacks of futures that
 * settled since the last dispatch.  A future's records come before its
 * callbacks: those posted before it settled are taken with it.  Must be
 * called by the home's own thread, with no lock held. */
int home_dispatch(lua_State *L) {
  home *h = home_of(L);
  int ran = 0, drain;
  log_record *logs = NULL;
  long dropped = 0;
  /* Quiet the completion source first: a future queued after this point
   * makes it readable again. */
  pthread_mutex_lock(&h->lock);
  drain = h->signaled;
  h->signaled = 0;
  logs = take_logs_locked(h, &dropped);
  pthread_mutex_unlock(&h->lock);
  if (drain) {
    uint64_t v;
    ssize_t n;
    while ((n = read(h->efd, &v, sizeof v)) < 0 && errno == EINTR) {}
    if (n < 0) {
      /* The post that set the flag has not written yet (home_post_unlock
       * writes after unlocking): its write is still to come, and must be
       * read by the next dispatch, or the descriptor stays readable. */
      pthread_mutex_lock(&h->lock);
      h->signaled = 1;
      pthread_mutex_unlock(&h->lock);
    }
  }
  deliver_logs(L, h, logs, dropped);
  if (h->tick_every > 0 && !h->dispatching && weft_now() >= h->tick_at) home_tick(L, h);
  for (;;) {
    future *f;
    int top = lua_gettop(L), i, n;
    logs = NULL;
    dropped = 0;
    pthread_mutex_lock(&h->lock);
    f = h->done_head;
    if (f) {
      h->done_head = f->next_done;
      if (h->done_head == NULL) h->done_tail = NULL;
      f->queued_done = 0;
      logs = take_logs_locked(h, &dropped);
    }
    pthread_mutex_unlock(&h->lock);
    if (f == NULL) return ran;
    deliver_logs(L, h, logs, dropped);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CALLBACKS);
    if (lua_rawgetp(L, -1, f) == LUA_TTABLE) {
      lua_pushnil(L);
      lua_rawsetp(L, -3, f);        /* each callback runs once */
      h->ncallbacks--;
      n = (int)lua_rawlen(L, -1);
      for (i = 2; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -2, 1);      /* the future userdata */
        h->dispatching++;
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) report_callback_error(L, -1);
        h->dispatching--;
        lua_settop(L, top + 2);
        ran++;
      }
    }
    lua_settop(L, top);
    future_unref(f);
  }
}

int home_sleep(home *h, double deadline) {
  int rc;
  h->sleeping = 1;
  if (deadline < 0) {
    rc = pthread_cond_wait(&h->cond, &h->lock);
  } else {
    struct timespec ts;
    dl_timespec(deadline, &ts);
    rc = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
  }
  h->sleeping = 0;
  return rc;
}

/* How often a sleeping wait looks for a pending interrupt. */
#define WATCH_SLICE 0.1

void home_watch_init(lua_State *L, home_watch *w) {
  w->hook = lua_gethook(L);
  w->mask = lua_gethookmask(L);
}

/* A Ctrl-C (weft_interrupt) to raise in the wait now: not while callbacks
 * run (see stop_raise_interrupt). */
static int interrupt_due(const home *h) { return stop_interrupt_pending() && !h->dispatching; }

int home_sleep_watch(lua_State *L, home *h, double deadline, home_watch *w) {
  double until = weft_now() + WATCH_SLICE, now;
  int rc;
  if (deadline >= 0 && deadline < until) until = deadline;
  if (h->tick_every > 0 && h->tick_at < until) until = h->tick_at;
  if (stop_pending() || interrupt_due(h)) return EINTR;
  stop_watch_home(h);          /* a stop wakes us at once */
  rc = home_sleep(h, until);
  stop_watch_home(NULL);
  if (stop_pending() || interrupt_due(h)) return EINTR;
  if (rc != ETIMEDOUT) return 0;
  now = weft_now();
  if (deadline >= 0 && now >= deadline) return ETIMEDOUT;
  if (lua_gethook(L) != w->hook || lua_gethookmask(L) != w->mask) return EINTR;
  if (h->tick_every > 0 && now >= h->tick_at && !h->dispatching) return EAGAIN;
  return 0;
}

static int noop(lua_State *L) {
  (void)L;
  return 0;
}

void home_deliver_interrupt(lua_State *L, home_watch *w) {
  stop_check(L);              /* the running task is being stopped */
  stop_raise_interrupt(L);    /* Ctrl-C (weft_interrupt) */
  lua_pushcfunction(L, noop);
  lua_call(L, 0, 0);          /* the call hook runs here, and may raise */
  home_watch_init(L, w);      /* it did not (a debugger's hook): go on */
}

/* Runs f's done-callbacks before a wait on f returns.  A completer stores
 * the final state before its notify queues the callbacks, so a waiter can
 * see f final first; when callbacks were registered while f was pending,
 * that notify is bound to come (the completer saw `watched`): wait for it.
 * Inside a callback, the dispatch running it goes on once it returns:
 * dispatching from here would nest a level of C stack per callback (a
 * coroutine resumed by a callback that calls result(), as weft.luv.await
 * does, hundreds deep). */
static void future_flush_callbacks(lua_State *L, future *f) {
  home *h = f->home;
  pthread_mutex_lock(&h->lock);
  while (f->has_callbacks && !f->notified) {
    h->waiting_on = f;
    home_sleep(h, -1);
  }
  h->waiting_on = NULL;
  pthread_mutex_unlock(&h->lock);
  if (!h->dispatching) home_dispatch(L);
}

int future_wait(lua_State *L, future *f, double deadline) {
  home *h = f->home;
  if (FS_IS_FINAL(future_state(f))) {
    /* Even with no callbacks: the task's log records were queued before it
     * completed, and are delivered before its result is returned. */
    future_flush_callbacks(L, f);
    return 1;
  }
  /* A future is only reachable from the state that made it (futures are
   * not copyable), so its home is the caller's. */
  home_watch watch;
  home_watch_init(L, &watch);
  atomic_store(&f->watched, 1);
  for (;;) {
    int rc = 0;
    home_dispatch(L);
    pthread_mutex_lock(&h->lock);
    h->waiting_on = f;
    while (!FS_IS_FINAL(future_state(f)) && !home_has_work(h) && rc == 0)
      rc = home_sleep_watch(L, h, deadline, &watch);
    h->waiting_on = NULL;
    pthread_mutex_unlock(&h->lock);
    if (FS_IS_FINAL(future_state(f))) {
      future_flush_callbacks(L, f);
      return 1;
    }
    if (rc == ETIMEDOUT) return 0;
    if (rc == EINTR) {
      if (interrupt_due(h)) future_cancel_force(f);
      home_deliver_interrupt(L, &watch);
    }
  }
}

static void waiter_uninstall(home *h, waiter *w) {
  size_t i;
  if (!w->installed) return;
  pthread_mutex_lock(&h->lock);
  for (i = 0; i < w->n; i++) {
    wlink **pp = &w->fs[i]->waiters;
    while (*pp && *pp != &w->links[i]) pp = &(*pp)->next;
    if (*pp) *pp = w->links[i].next;
  }
  pthread_mutex_unlock(&h->lock);
  w->installed = 0;
}

static void waiter_free(home *h, waiter *w) {
  size_t i;
  waiter_uninstall(h, w);
  for (i = 0; i < w->n; i++) future_unref(w->fs[i]);
  free(w->fs);
  free(w->links);
  free(w->fin);
  free(w->seen);
  w->fs = NULL;
  w->n = 0;
}

/* Fills w with the unique futures of the list at `idx`; `pos` (if given)
 * receives, for each list element, its index among the unique ones. */
static int waiter_init(lua_State *L, waiter *w, int idx, size_t **pos) {
  size_t n = (size_t)lua_rawlen(L, idx), i, j;
  memset(w, 0, sizeof *w);
  w->fs = calloc(n ? n : 1, sizeof *w->fs);
  w->links = calloc(n ? n : 1, sizeof *w->links);
  w->fin = calloc(n ? n : 1, sizeof *w->fin);
  w->seen = calloc(n ? n : 1, 1);
  if (pos) *pos = calloc(n ? n : 1, sizeof **pos);
  if (!w->fs || !w->links || !w->fin || !w->seen || (pos && !*pos)) {
    if (pos) free(*pos);
    return -1;
  }
  lua_newtable(L);     /* future userdata -> unique index, for dedup */
  for (i = 0; i < n; i++) {
    future *f;
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    f = future_check(L, -1);
    if (f == NULL) {
      lua_pop(L, 2);
      waiter_free(home_of(L), w);
      if (pos) free(*pos);
      return -2 - (int)i;
    }
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TNUMBER) {
      j = (size_t)lua_tointeger(L, -1);
      lua_pop(L, 2);
    } else {
      lua_pop(L, 1);
      j = w->n++;
      future_ref(f);
      w->fs[j] = f;
      lua_pushinteger(L, (lua_Integer)j);
      lua_rawset(L, -3);
    }
    if (pos) (*pos)[i] = j;
  }
  lua_pop(L, 1);
  return 0;
}

/* Hangs w on its futures, then counts those already final; both under the
 * home lock, so each future is counted exactly once whenever it settles. */
static void waiter_install(home *h, waiter *w, int mode) {
  size_t i;
  w->mode = mode;
  pthread_mutex_lock(&h->lock);
  for (i = 0; i < w->n; i++) {
    future *f = w->fs[i];
    w->links[i].w = w;
    w->links[i].index = i;
    w->links[i].next = f->waiters;
    f->waiters = &w->links[i];
    atomic_store(&f->watched, 1);
  }
  for (i = 0; i < w->n; i++)
    if (FS_IS_FINAL(future_state(w->fs[i]))) waiter_account(w, i);
  waiter_check(w);
  w->installed = 1;
  pthread_mutex_unlock(&h->lock);
}

static void bad_future_arg(lua_State *L, const char *what, int code) {
  if (code == -1) luaL_error(L, "weft: out of memory");
  weft_error(L, WK_CONFIG, "%s: element %d of the list is not a future", what, -code - 1);
}

/* Checks that the argument is a list (table) of futures. */
static void check_future_list(lua_State *L, int arg) {
  if (!lua_istable(L, arg)) {
    lua_pushfstring(L, "a list of futures expected, got %s", luaL_typename(L, arg));
    weft_error(L, WK_CONFIG, "%s", lua_tostring(L, -1));
  }
}

/* weft.wait(futures, timeout, return_when) -> done, not_done */
static int l_wait(lua_State *L) {
  waiter w;
  size_t *pos = NULL, i;
  home *h = home_of(L);
  double timeout, deadline;
  int mode, rc;
  check_future_list(L, 1);
  timeout = weft_opt_timeout(L, 2, "wait timeout");
  if (lua_isnoneornil(L, 3)) {
    mode = WAIT_ALL;
  } else if (!lua_isinteger(L, 3) || lua_tointeger(L, 3) < WAIT_ALL ||
             lua_tointeger(L, 3) > WAIT_FIRST_EXCEPTION) {
    return weft_error(L, WK_CONFIG, "return_when must be weft.ALL_COMPLETED, "
                      "weft.FIRST_COMPLETED or weft.FIRST_EXCEPTION, got %s",
                      luaL_tolstring(L, 3, NULL));
  } else {
    mode = (int)lua_tointeger(L, 3);
  }
  deadline = dl_after(timeout);
  if ((rc = waiter_init(L, &w, 1, &pos)) != 0) bad_future_arg(L, "weft.wait", rc);
  waiter_install(h, &w, mode);
  for (;;) {
    int ready;
    home_watch watch;
    home_watch_init(L, &watch);
    home_dispatch(L);
    rc = 0;
    pthread_mutex_lock(&h->lock);
    while (!w.ready && !home_has_work(h) && rc == 0)
      rc = home_sleep_watch(L, h, deadline, &watch);
    ready = w.ready;
    pthread_mutex_unlock(&h->lock);
    if (ready || rc == ETIMEDOUT) break;
    if (rc == EINTR) {
      if (interrupt_due(h))
        for (i = 0; i < w.n; i++) future_cancel_force(w.fs[i]);
      /* nothing of ours may be left hanging on the futures if it raises */
      free(pos);
      waiter_free(h, &w);
      home_deliver_interrupt(L, &watch);
      lua_settop(L, 3);
      return l_wait(L);         /* not interrupted after all: start over */
    }
  }
  waiter_uninstall(h, &w);
  for (i = 0; i < w.n; i++)
    if (FS_IS_FINAL(future_state(w.fs[i]))) future_flush_callbacks(L, w.fs[i]);
  /* done and not_done, in input order, duplicates as given */
  {
    lua_Integer ndone_out = 0, nrest = 0;
    int done_t, rest_t;
    lua_newtable(L);
    done_t = lua_gettop(L);
    lua_newtable(L);
    rest_t = done_t + 1;
    for (i = 0; i < (size_t)lua_rawlen(L, 1); i++) {
      int fin = FS_IS_FINAL(future_state(w.fs[pos[i]]));
      lua_rawgeti(L, 1, (lua_Integer)i + 1);
      lua_rawseti(L, fin ? done_t : rest_t, fin ? ++ndone_out : ++nrest);
    }
  }
  free(pos);
  waiter_free(h, &w);
  return 2;
}

/* === as_completed ======================================================== */

typedef struct ascompleted {
  waiter w;
  unsigned char *first;  /* finished when the iteration started */
  unsigned char *given;  /* yielded already */
  size_t next_initial;   /* scan position over `first` */
  size_t fin_taken;      /* position in w.fin */
  size_t yielded;
  double deadline;
  double timeout;
} ascompleted;

static void ac_free(home *h, ascompleted *a) {
  if (a->w.fs) waiter_free(h, &a->w);
  free(a->first);
  free(a->given);
  a->first = a->given = NULL;
}

static int ac_close(lua_State *L) {
  ac_free(home_of(L), luaL_checkudata(L, 1, ASCOMPLETED_MT));
  return 0;
}

/* Marks unique future i yielded and pushes its userdata. */
static int ac_yield(lua_State *L, int ud, ascompleted *a, size_t i) {
  a->given[i] = 1;
  a->yielded++;
  future_flush_callbacks(L, a->w.fs[i]);
  lua_getiuservalue(L, ud, 2);   /* unique index -> userdata */
  lua_rawgeti(L, -1, (lua_Integer)i + 1);
  lua_remove(L, -2);
  return 1;
}

static int ac_next(lua_State *L) {
  int ud = lua_upvalueindex(1);
  ascompleted *a = luaL_checkudata(L, ud, ASCOMPLETED_MT);
  home *h = home_of(L);
  if (a->w.fs == NULL) return 0;
  /* First the futures that were finished when we started, in input order. */
  while (a->next_initial < a->w.n) {
    size_t i = a->next_initial++;
    if (a->first[i] && !a->given[i]) return ac_yield(L, ud, a, i);
  }
  for (;;) {
    int timed_out = 0, rc = 0;
    home_watch watch;
    if (a->yielded == a->w.n) {
      ac_free(h, a);
      return 0;
    }
    pthread_mutex_lock(&h->lock);
    while (a->fin_taken < a->w.nfin) {
      size_t i = a->w.fin[a->fin_taken++];
      if (!a->given[i]) {
        pthread_mutex_unlock(&h->lock);
        return ac_yield(L, ud, a, i);
      }
    }
    pthread_mutex_unlock(&h->lock);
    home_dispatch(L);
    home_watch_init(L, &watch);
    pthread_mutex_lock(&h->lock);
    while (a->fin_taken == a->w.nfin && !home_has_work(h) && rc == 0)
      rc = home_sleep_watch(L, h, a->deadline, &watch);
    pthread_mutex_unlock(&h->lock);
    timed_out = rc == ETIMEDOUT;
    if (rc == EINTR) {
      if (interrupt_due(h)) {
        size_t i;
        for (i = 0; i < a->w.n; i++) future_cancel_force(a->w.fs[i]);
      }
      home_deliver_interrupt(L, &watch);   /* the iterator's __close cleans up */
      rc = 0;
    }
    if (timed_out) {
      size_t left = a->w.n - a->yielded;
      ac_free(h, a);
      return weft_error(L, WK_TIMEOUT, "as_completed: %d of %d futures unfinished after %f s",
                        (int)left, (int)(left + a->yielded), a->timeout);
    }
  }
}

/* weft.as_completed(futures [, timeout]) -> iterator, nil, nil, closer */
static int l_as_completed(lua_State *L) {
  ascompleted *a;
  home *h = home_of(L);
  double timeout;
  size_t i, seen = 0;
  int rc;
  check_future_list(L, 1);
  timeout = weft_opt_timeout(L, 2, "as_completed timeout");
  a = lua_newuserdatauv(L, sizeof *a, 2);
  memset(a, 0, sizeof *a);
  luaL_setmetatable(L, ASCOMPLETED_MT);
  a->timeout = timeout;
  a->deadline = dl_after(timeout);
  if ((rc = waiter_init(L, &a->w, 1, NULL)) != 0) bad_future_arg(L, "weft.as_completed", rc);
  a->first = calloc(a->w.n ? a->w.n : 1, 1);
  a->given = calloc(a->w.n ? a->w.n : 1, 1);
  if (a->first == NULL || a->given == NULL) {
    ac_free(h, a);
    return luaL_error(L, "weft: out of memory");
  }
  /* the unique futures' userdata, in order (uservalue 2) */
  lua_createtable(L, (int)a->w.n, 0);
  lua_newtable(L);
  for (i = 0; i < (size_t)lua_rawlen(L, 1); i++) {
    lua_rawgeti(L, 1, (lua_Integer)i + 1);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushboolean(L, 1);
      lua_rawset(L, -4);
      lua_rawseti(L, -3, (lua_Integer)++seen);
    } else {
      lua_pop(L, 2);
    }
  }
  lua_pop(L, 1);
  lua_setiuservalue(L, -2, 2);
  waiter_install(h, &a->w, WAIT_EACH);
  pthread_mutex_lock(&h->lock);
  memcpy(a->first, a->w.seen, a->w.n);
  pthread_mutex_unlock(&h->lock);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, ac_next, 1);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushvalue(L, -4);    /* to-be-closed: uninstalls on break */
  return 4;
}

/* === the future userdata ================================================= */

future *future_check(lua_State *L, int idx) {
  future **fp = luaL_testudata(L, idx, FUTURE_MT);
  return fp ? *fp : NULL;
}

static future *check_future(lua_State *L, int idx) {
  future **fp = luaL_testudata(L, idx, FUTURE_MT);
  if (fp == NULL) weft_bad_self(L, idx, "a future", "f");
  return *fp;
}

void future_push(lua_State *L, future *f) {
  future **fp = lua_newuserdatauv(L, sizeof *fp, 1);
  *fp = f;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &FUTURE_MT_KEY);   /* by pointer: no string */
  lua_setmetatable(L, -2);
}

static void report(lua_State *L, int err) {
  int top = lua_gettop(L);
  lua_pushfstring(L, "weft: a task failed and nobody retrieved its error: %s",
                  luaL_tolstring(L, err, NULL));
  report_message(L, lua_tostring(L, -1));
  lua_settop(L, top);
}

void future_push_error(lua_State *L, future *f) {
  int s = future_state(f), base = lua_gettop(L);
  if (s == FS_CANCELLED) {
    weft_push_error(L, WK_CANCELLED, "the future was cancelled");
  } else if (f->cause) {
    future_push_error(L, f->cause);                          /* cause */
    lua_getfield(L, -1, "message");                          /* cause msg */
    weft_push_error(L, WK_DEPENDENCY, "a dependency %s: %s",
                    future_state(f->cause) == FS_CANCELLED ? "was cancelled" : "failed",
                    lua_tostring(L, -1));                    /* cause msg err */
    lua_replace(L, -2);                                      /* cause err */
    lua_insert(L, -2);                                       /* err cause */
    lua_setfield(L, -2, "cause");
  } else if (f->data && wire_decode_tuple(L, f->data, f->len, 0, 1) == 1 &&
             lua_istable(L, -1)) {
    weft_bless_error(L);
    if (atomic_load(&f->attempts) > 0) {
      lua_pushinteger(L, atomic_load(&f->attempts));
      lua_setfield(L, -2, "attempts");
    }
    return;
  } else {
    lua_settop(L, base);
    weft_push_error(L, WK_TASK, "the task failed (its error could not be decoded)");
  }
  if (future_name(f)) {
    lua_pushstring(L, future_name(f));
    lua_setfield(L, -2, "task");
  }
}

/* Pushes a table {n = k, v1, ..., vk} of the k values at the top (which it
 * pops). */
static void pack_values(lua_State *L, int n) {
  int i, first = lua_gettop(L) - n + 1;
  lua_createtable(L, n, 1);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, first + i - 1);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  lua_replace(L, first);
  lua_settop(L, first);
}

/* decode_results(f) -> the results of finished f (for lua_pcall). */
static int decode_results(lua_State *L) {
  future *f = lua_touserdata(L, 1);
  int n;
  lua_settop(L, 0);
  n = f->data ? wire_decode_tuple(L, f->data, f->len, 0, 0) : 0;
  if (n < 0)
    weft_error(L, WK_SERIALIZATION, "cannot decode the results: %s", lua_tostring(L, -1));
  return n;
}

/* Pushes the results of finished f; returns how many.  Out of memory
 * while copying them here is kind memory, like in a worker. */
static int push_results(lua_State *L, future *f) {
  int top = lua_gettop(L), rc;
  lua_pushcfunction(L, decode_results);
  lua_pushlightuserdata(L, f);
  rc = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (rc == LUA_ERRMEM)   /* (the partial copy is garbage now: room for the error) */
    weft_error(L, WK_MEMORY, "out of memory while the task's results (%I bytes) were "
               "copied into this state", (lua_Integer)f->len);
  if (rc != LUA_OK) lua_error(L);
  return lua_gettop(L) - top;
}

/* Pushes the cached outcome (uservalue 1), building it on first use: the
 * packed results, or the error object. */
static void push_outcome(lua_State *L, int ud, future *f) {
  if (lua_getiuservalue(L, ud, 1) != LUA_TNIL) return;
  lua_pop(L, 1);
  if (future_state(f) == FS_FINISHED) {
    pack_values(L, push_results(L, f));
  } else {
    future_push_error(L, f);
  }
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, ud, 1);
}

/* Reports f's error once if nobody looked at it: from the outcome cached in
 * its userdata at `ud` when there is one (the very error object), else
 * decoded afresh. */
static void report_failure(lua_State *L, future *f, int ud) {
  if (future_state(f) != FS_FAILED || f->observed || f->reported) return;
  f->reported = 1;
  if (ud) push_outcome(L, ud, f); else future_push_error(L, f);
  report(L, -1);
  lua_pop(L, 1);
}

void future_report_failure(lua_State *L, future *f) { report_failure(L, f, 0); }

static void wait_or_timeout(lua_State *L, future *f, int arg) {
  double timeout = weft_opt_timeout(L, arg, "timeout");
  if (!future_wait(L, f, dl_after(timeout)))
    weft_error(L, WK_TIMEOUT, "the future was not done within %f s", timeout);
}

static int f_result(lua_State *L) {
  future *f = check_future(L, 1);
  int s, n, i;
  wait_or_timeout(L, f, 2);
  f->observed = 1;
  s = future_state(f);
  lua_settop(L, 1);
  if (s == FS_FINISHED && f->data && lua_getiuservalue(L, 1, 1) == LUA_TNIL) {
    /* First look: decode.  Results holding tables or functions are cached
     * so that every call returns the same objects; plain values are not
     * (decoding them again is cheaper than a cache table). */
    lua_pop(L, 1);
    n = push_results(L, f);
    for (i = 2; i <= n + 1; i++) {
      int t = lua_type(L, i);
      if (t == LUA_TTABLE || t == LUA_TFUNCTION) {
        pack_values(L, n);
        lua_setiuservalue(L, 1, 1);
        break;
      }
    }
    if (i > n + 1) return n;
  }
  lua_settop(L, 1);
  push_outcome(L, 1, f);
  if (s != FS_FINISHED) return lua_error(L);
  lua_getfield(L, 2, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "weft: too many results");
  for (i = 1; i <= n; i++) lua_rawgeti(L, 2, i);
  return n;
}

static int f_exception(lua_State *L) {
  future *f = check_future(L, 1);
  int s;
  wait_or_timeout(L, f, 2);
  f->observed = 1;
  s = future_state(f);
  if (s == FS_FINISHED) { lua_pushnil(L); return 1; }
  lua_settop(L, 1);
  push_outcome(L, 1, f);
  if (s == FS_CANCELLED) return lua_error(L);
  return 1;
}

static int f_done(lua_State *L) {
  lua_pushboolean(L, FS_IS_FINAL(future_state(check_future(L, 1))));
  return 1;
}

/* The state as a user sees it: a process pool's task may have started
 * without its future knowing yet. */
static int user_state(future *f) {
  if (f->pool && atomic_load(&f->state) == FS_PENDING) pool_refresh(f->pool, f);
  return future_state(f);
}

static int f_running(lua_State *L) {
  lua_pushboolean(L, user_state(check_future(L, 1)) == FS_RUNNING);
  return 1;
}

static int f_cancelled(lua_State *L) {
  lua_pushboolean(L, future_state(check_future(L, 1)) == FS_CANCELLED);
  return 1;
}

/* f:attempts() -> how many times its task was started (retries count) */
static int f_attempts(lua_State *L) {
  future *f = check_future(L, 1);
  lua_pushinteger(L, atomic_load_explicit(&f->attempts, memory_order_relaxed));
  return 1;
}

void future_worker_label(int kind, int id, char *out, size_t size) {
  switch (kind) {
    case META_THREAD: snprintf(out, size, "thread %d", id); break;
    case META_PROCESS: snprintf(out, size, "process %d", id); break;
    case META_INLINE: snprintf(out, size, "inline"); break;
    default: out[0] = '\0';
  }
}

void future_mark_remote(future *f, const char *label, double started) {
  future_meta *m = f->meta;
  char *copy;
  double zero = 0, offset;
  struct timespec ts;
  if (m == NULL || atomic_load(&m->remote) != NULL || (copy = strdup(label)) == NULL) return;
  atomic_store(&m->remote, copy);
  atomic_store_explicit(&m->worker_kind, META_REMOTE, memory_order_release);
  /* From the epoch to this process's clock (weft_now()). */
  clock_gettime(CLOCK_REALTIME, &ts);
  offset = weft_now() - ((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
  if (started > 0) atomic_compare_exchange_strong(&m->started, &zero, started + offset);
}

void future_mark_started(future *f, int worker_kind, int worker_id, double when) {
  future_meta *m = f->meta;
  double zero = 0;
  if (m == NULL) return;
  atomic_store_explicit(&m->worker_kind, worker_kind, memory_order_relaxed);
  atomic_store_explicit(&m->worker_id, worker_id, memory_order_relaxed);
  atomic_compare_exchange_strong(&m->started, &zero, when);   /* the first attempt's */
}

static void set_time(lua_State *L, const char *k, double t) {
  if (t <= 0) return;
  lua_pushnumber(L, t);
  lua_setfield(L, -2, k);
}

/* f:info() -> {task, flow, attempts, worker, submitted, started, finished}:
 * what is known of its task besides the outcome (times are core.now()). */
static int f_info(lua_State *L) {
  future *f = check_future(L, 1);
  future_meta *m = f->meta;
  char who[300];
  if (f->pool && atomic_load(&f->state) == FS_PENDING) pool_refresh(f->pool, f);
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, atomic_load_explicit(&f->attempts, memory_order_relaxed));
  lua_setfield(L, -2, "attempts");
  if (m == NULL) return 1;
  if (m->name) {
    lua_pushstring(L, m->name);
    lua_setfield(L, -2, "task");
  }
  if (m->flow) {
    lua_pushstring(L, m->flow);
    lua_setfield(L, -2, "flow");
  }
  if (atomic_load_explicit(&m->worker_kind, memory_order_acquire) == META_REMOTE)
    snprintf(who, sizeof who, "%s", atomic_load(&m->remote));
  else
    future_worker_label(atomic_load_explicit(&m->worker_kind, memory_order_relaxed),
                        atomic_load_explicit(&m->worker_id, memory_order_relaxed), who,
                        sizeof who);
  if (who[0]) lua_pushstring(L, who); else lua_pushnil(L);
  lua_setfield(L, -2, "worker");
  set_time(L, "submitted", m->submitted);
  set_time(L, "started", atomic_load_explicit(&m->started, memory_order_relaxed));
  /* (finished is written before the final state, so a final future has it) */
  if (FS_IS_FINAL(future_state(f)))
    set_time(L, "finished", atomic_load_explicit(&m->finished, memory_order_relaxed));
  return 1;
}

static int f_state(lua_State *L) {
  static const char *const names[] = {"pending", "running", "running",
                                      "finished", "failed", "cancelled"};
  lua_pushstring(L, names[user_state(check_future(L, 1))]);
  return 1;
}

int future_cancel_force(future *f) {
  int ok = future_cancel(f);
  if (!ok && f->pool && future_state(f) == FS_RUNNING) ok = pool_force_cancel(f->pool, f);
  return ok;
}

static int f_cancel(lua_State *L) {
  future *f = check_future(L, 1);
  int force = 0, ok;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "force");
    force = lua_toboolean(L, -1);
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, 2)) {
    return weft_error(L, WK_CONFIG, "cancel takes an optional table {force = boolean}");
  }
  ok = force ? future_cancel_force(f) : future_cancel(f);
  home_dispatch(L);
  lua_pushboolean(L, ok);
  return 1;
}

static int f_add_done_callback(lua_State *L) {
  future *f = check_future(L, 1);
  home *h = f->home;
  int later, fresh = 0;
  if (lua_type(L, 2) != LUA_TFUNCTION)
    return weft_error(L, WK_CONFIG, "add_done_callback: the callback must be a function, got %s",
                      luaL_typename(L, 2));
  lua_settop(L, 2);
  f->observed = 1;
  /* No collection until the callback is on f's list: a finalizer may
   * dispatch (an executor's __gc shuts it down), and a dispatch that took
   * f off the done queue before the list existed would drop it for good.
   * So f's list is made first: lua_createtable is the one call here that
   * may collect; the raw gets and sets below never do.  (Stopping the
   * collector around it instead made every call cost a collection step
   * once restarted, and thousands of pending callbacks took quadratic
   * time.) */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CALLBACKS);              /* 3 */
  if (lua_rawgetp(L, 3, f) != LUA_TTABLE) {                   /* 4 */
    lua_pop(L, 1);
    lua_createtable(L, 2, 0);
    if (lua_rawgetp(L, 3, f) == LUA_TTABLE) {   /* (a finalizer made one) */
      lua_remove(L, -2);
    } else {
      lua_pop(L, 1);
      fresh = 1;
    }
  }
  /* Run it now unless a notify has queued, or is bound to queue, this
   * future for dispatch (then it must run after the earlier callbacks).  A
   * notify is bound to come when earlier callbacks set has_callbacks while
   * the future was not final: the completer then saw `watched`. */
  pthread_mutex_lock(&h->lock);
  /* `watched` first, then the state (Dekker with the completer, which
   * stores the state and then looks at `watched`): had we looked first, a
   * completer could store the state after our look and check `watched`
   * before our store, and the callback would never be queued. */
  atomic_store(&f->watched, 1);
  if (!FS_IS_FINAL(atomic_load(&f->state))) {
    f->has_callbacks = 1;
    later = 1;
  } else {
    later = f->notified ? f->queued_done : f->has_callbacks;
  }
  pthread_mutex_unlock(&h->lock);
  if (!later) {
    lua_settop(L, 2);
    /* Earlier callbacks first; inside a dispatch, the one running them
     * goes on after us (nesting here would grow the C stack with every
     * callback that registers another, as weft.luv.await does). */
    if (!h->dispatching) home_dispatch(L);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) report_callback_error(L, -1);
    return 0;
  }
  if (fresh) {
    lua_pushvalue(L, 1);
    lua_rawseti(L, 4, 1);
    lua_pushvalue(L, 4);
    lua_rawsetp(L, 3, f);
    h->ncallbacks++;
  }
  lua_pushvalue(L, 2);
  lua_rawseti(L, 4, (lua_Integer)lua_rawlen(L, 4) + 1);
  return 0;
}

static int f_set_running_or_notify_cancel(lua_State *L) {
  future *f = check_future(L, 1);
  int s;
  if (future_start(f)) { lua_pushboolean(L, 1); return 1; }
  s = future_state(f);
  if (s == FS_CANCELLED) { lua_pushboolean(L, 0); return 1; }
  return weft_error(L, WK_INVALID_STATE, "set_running_or_notify_cancel on a %s future",
                    s == FS_RUNNING ? "running" : "finished");
}

static int settle_from_lua(lua_State *L, future *f, int state, char *data, size_t len) {
  if (future_settle(f, state, data, len, NULL) != 0) {
    free(data);
    return weft_error(L, WK_INVALID_STATE, "the future is already done (%s)",
                      future_state(f) == FS_CANCELLED ? "cancelled" : "settled");
  }
  home_dispatch(L);
  return 0;
}

static int f_set_result(lua_State *L) {
  future *f = check_future(L, 1);
  int n = lua_gettop(L) - 1, i;
  wire_enc e;
  char *data = NULL;
  size_t len = 0;
  if (FS_IS_FINAL(future_state(f)))
    return weft_error(L, WK_INVALID_STATE, "set_result on a future that is already done");
  /* The owner gets the very values; other states get copies when possible. */
  wire_enc_init(&e, L, 1, 0);
  if (wire_encode_tuple(&e, 2, n, "result") == 0) data = buf_steal(&e.out, &len);
  wire_enc_free(&e);
  lua_createtable(L, n, 1);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, 1 + i);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  lua_setiuservalue(L, 1, 1);
  return settle_from_lua(L, f, FS_FINISHED, data, len);
}

static int f_set_exception(lua_State *L) {
  future *f = check_future(L, 1);
  wire_enc e;
  char *data = NULL;
  size_t len = 0;
  int isweft;
  if (FS_IS_FINAL(future_state(f)))
    return weft_error(L, WK_INVALID_STATE, "set_exception on a future that is already done");
  lua_settop(L, 2);
  lua_pushcfunction(L, l_is);
  lua_pushvalue(L, 2);
  lua_call(L, 1, 1);
  isweft = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!isweft) {
    weft_push_error(L, WK_TASK, "%s", lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) :
                    luaL_tolstring(L, 2, NULL));
    if (lua_type(L, 2) != LUA_TSTRING) lua_remove(L, -2);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "value");
  } else {
    lua_pushvalue(L, 2);
  }
  /* stack: f, err, errobj */
  wire_enc_init(&e, L, 1, 0);
  if (wire_encode_tuple(&e, 3, 1, "error") != 0) {
    /* keep what can be copied: the record without its value */
    wire_enc_free(&e);
    lua_createtable(L, 0, 2);
    lua_getfield(L, 3, "kind");
    lua_setfield(L, -2, "kind");
    lua_getfield(L, 3, "message");
    lua_setfield(L, -2, "message");
    wire_enc_init(&e, L, 1, 0);
    wire_encode_tuple(&e, -1, 1, "error");
    lua_pop(L, 1);
  }
  data = buf_steal(&e.out, &len);
  wire_enc_free(&e);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 1, 1);
  return settle_from_lua(L, f, FS_FAILED, data, len);
}

static int f_gc(lua_State *L) {
  future **fp = lua_touserdata(L, 1);   /* only ever called on futures */
  future *f = *fp;
  if (f == NULL) return 0;
  report_failure(L, f, 1);
  *fp = NULL;
  future_unref_at_home(f);
  return 0;
}

static int f_tostring(lua_State *L) {
  future *f = check_future(L, 1);
  lua_pushcfunction(L, f_state);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  lua_pushfstring(L, "weft.Future(%s%s%s: %p)", lua_tostring(L, -1),
                  future_name(f) ? ", " : "", future_name(f) ? future_name(f) : "",
                  (void *)f);
  return 1;
}


/* weft.future() */
static int l_future(lua_State *L) {
  future *f = future_new(home_of(L), NULL);
  if (f == NULL) return luaL_error(L, "weft: out of memory");
  future_push(L, f);
  return 1;
}

static int l_dispatch(lua_State *L) {
  lua_pushinteger(L, home_dispatch(L));
  return 1;
}

/* core.completion_fd() -> fd: readable when callbacks are ready to run */
static int l_completion_fd(lua_State *L) {
  int fd = home_completion_fd(L);
  if (fd < 0) return luaL_error(L, "weft: cannot make the completion source: %s", strerror(errno));
  lua_pushinteger(L, fd);
  return 1;
}

/* core.callbacks_pending() -> how many futures have done-callbacks to run */
static int l_callbacks_pending(lua_State *L) {
  lua_pushinteger(L, home_of(L)->ncallbacks);
  return 1;
}

/* core.set_ticker(fn | nil [, interval]): fn() runs about every `interval`
 * seconds (default 0.1) while this state waits on futures, and at dispatch. */
static int l_set_ticker(lua_State *L) {
  home *h = home_of(L);
  double every = luaL_optnumber(L, 2, 0.1);
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  if (!(every >= 0.001)) return luaL_argerror(L, 2, "an interval of at least 0.001 s expected");
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TICKER);
  h->tick_every = lua_isnil(L, 1) ? 0 : every;
  h->tick_at = weft_now() + every;
  return 0;
}

/* core.set_flow(label | nil) -> the previous label.  Tasks submitted from
 * this state while a label is set carry it (f:info().flow, log records). */
static int l_set_flow(lua_State *L) {
  home *h = home_of(L);
  const char *label = luaL_optstring(L, 1, NULL);
  char *copy = label ? strdup(label) : NULL;
  if (label && copy == NULL) return luaL_error(L, "weft: out of memory");
  if (h->flow) lua_pushstring(L, h->flow); else lua_pushnil(L);
  free(h->flow);
  h->flow = copy;
  return 1;
}

static int l_is_future(lua_State *L) {
  lua_pushboolean(L, future_check(L, 1) != NULL);
  return 1;
}

void future_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"result", f_result},
      {"exception", f_exception},
      {"done", f_done},
      {"running", f_running},
      {"cancelled", f_cancelled},
      {"cancel", f_cancel},
      {"state", f_state},
      {"attempts", f_attempts},
      {"info", f_info},
      {"add_done_callback", f_add_done_callback},
      {"set_running_or_notify_cancel", f_set_running_or_notify_cancel},
      {"set_result", f_set_result},
      {"set_exception", f_set_exception},
      {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"future", l_future},
      {"wait", l_wait},
      {"as_completed", l_as_completed},
      {"is", l_is},
      {"error", l_make_error},
      {"dispatch", l_dispatch},
      {"completion_fd", l_completion_fd},
      {"callbacks_pending", l_callbacks_pending},
      {"set_ticker", l_set_ticker},
      {"set_flow", l_set_flow},
      {"is_future", l_is_future},
      {NULL, NULL}};
  int mod = lua_gettop(L);
  if (luaL_newmetatable(L, HOME_MT)) {   /* before the home is made */
    lua_pushcfunction(L, home_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  home_of(L);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CALLBACKS) != LUA_TTABLE) {
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CALLBACKS);
  }
  lua_pop(L, 1);
  luaL_newmetatable(L, FUTURE_MT);
  luaL_newlib(L, methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, mod, "Future");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, f_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, f_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "weft.Future");
  lua_setfield(L, -2, "__name");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &FUTURE_MT_KEY);
  luaL_newmetatable(L, ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "weft.Error");
  lua_setfield(L, -2, "__name");
  lua_setfield(L, mod, "Error");
  luaL_newmetatable(L, ASCOMPLETED_MT);
  lua_pushcfunction(L, ac_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, ac_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  lua_pushinteger(L, WAIT_ALL);
  lua_setfield(L, mod, "ALL_COMPLETED");
  lua_pushinteger(L, WAIT_FIRST_COMPLETED);
  lua_setfield(L, mod, "FIRST_COMPLETED");
  lua_pushinteger(L, WAIT_FIRST_EXCEPTION);
  lua_setfield(L, mod, "FIRST_EXCEPTION");
}
