/*
 * stop.c -- stop levels, the stop signal and hook, weft.sleep and the
 * in-thread weft.timeout mechanisms.  See stop.h for the design.
 */
#include "stop.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "weft.h"

#define STOP_MASK (LUA_MASKCOUNT | LUA_MASKCALL)

/* The calling thread's context, for code running in normal context. */
static __thread stop_ctx *tls_ctx;

/* The signal handler finds its thread's context here instead: the first
 * touch of a dlopen'd module's thread-local variable may allocate, which a
 * signal handler must not do.  Entries are claimed and released under
 * reg_lock; the handler reads them without a lock, matching on the thread
 * id first, and only its own thread's context is ever dereferenced. */
#define REG_MAX 16384
static struct {
  atomic_ulong thread;
  _Atomic(stop_ctx *) ctx;
} registry[REG_MAX];
static atomic_int reg_high;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;   /* rank 9, a leaf */

static void reg_add(stop_ctx *c) {
  int i, n;
  pthread_mutex_lock(&reg_lock);
  n = atomic_load(&reg_high);
  for (i = 0; i < n && atomic_load(&registry[i].thread) != 0; i++) {}
  if (i < REG_MAX) {
    atomic_store(&registry[i].ctx, c);
    atomic_store(&registry[i].thread, (unsigned long)c->thread);
    if (i == n) atomic_store(&reg_high, n + 1);
  }
  pthread_mutex_unlock(&reg_lock);
}

static void reg_del(stop_ctx *c) {
  int i, n;
  pthread_mutex_lock(&reg_lock);
  n = atomic_load(&reg_high);
  for (i = 0; i < n; i++) {
    if (atomic_load(&registry[i].ctx) == c) {
      atomic_store(&registry[i].thread, 0);
      atomic_store(&registry[i].ctx, NULL);
    }
  }
  pthread_mutex_unlock(&reg_lock);
}

/* Async-signal-safe: no lock, no allocation. */
static stop_ctx *reg_find(void) {
  unsigned long me = (unsigned long)pthread_self();
  int i, n = atomic_load(&reg_high);
  for (i = 0; i < n; i++)
    if (atomic_load(&registry[i].thread) == me) return atomic_load(&registry[i].ctx);
  return NULL;
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_key_t ctx_key;            /* frees contexts made by stop_self */
static struct sigaction old_urg;         /* chained when the signal is not ours */
static struct sigaction old_alrm;        /* put back after the last signal level */
static int alarm_levels;                 /* main thread only */

static int is_main_thread(void) { return getpid() == (pid_t)syscall(SYS_gettid); }

/* === the hook ============================================================ */

/* The outermost fired level of c (this thread only). */
static stop_level *fired_level(stop_ctx *c) {
  stop_level *lv, *found = NULL;
  for (lv = c->top; lv; lv = lv->outer)
    if (atomic_load(&lv->fired)) found = lv;
  return found;
}

static void push_stop_error(lua_State *L, stop_ctx *c) {
  stop_level *lv = fired_level(c);
  int kind = lv ? atomic_load(&lv->fired) : WK_CANCELLED;
  if (kind == WK_TIMEOUT && lv->seconds >= 0)
    weft_push_error(L, WK_TIMEOUT, "stopped: the deadline (%f s) passed", lv->seconds);
  else if (kind == WK_TIMEOUT)
    weft_push_error(L, WK_TIMEOUT, "stopped: the deadline passed");
  else if (kind == WK_EXIT)
    weft_push_error(L, WK_EXIT, "%s", STOP_EXIT_MESSAGE);
  else
    weft_push_error(L, WK_CANCELLED, "stopped: the task was cancelled");
}

/* Raises at every instruction and call while a level is fired. */
static void stop_hook(lua_State *L, lua_Debug *ar) {
  stop_ctx *c = tls_ctx;
  (void)ar;
  if (c == NULL || !atomic_load(&c->pending)) {
    lua_sethook(L, NULL, 0, 0);   /* a stale hook: the stop is over */
    return;
  }
  push_stop_error(L, c);
  lua_error(L);
}

static void set_stop_hook(lua_State *L) {
  if (L) lua_sethook(L, stop_hook, STOP_MASK, 1);
}

/* === user interrupts (Ctrl-C) ============================================ */

/* Set by weft_interrupt (a signal handler), read anywhere.  `interrupted`
 * stays set until the host clears it; `undelivered` until the interrupt
 * error has been raised once, by the hook or by a wait. */
static atomic_int interrupted, undelivered;

static void push_interrupt_error(lua_State *L) {
  weft_push_error(L, WK_CANCELLED, "interrupted");
}

/* As lua.c's: the first instruction or call raises, and the hook goes.
 * Not inside a done-callback, the ticker or a log sink, though: their
 * pcall would swallow it.  Then it stays until the state is back in the
 * code that was interrupted (or in the wait that ran them, which raises
 * it). */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  if (!atomic_load(&undelivered)) {
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (home_of(L)->dispatching) return;
  lua_sethook(L, NULL, 0, 0);
  stop_raise_interrupt(L);
}

void weft_interrupt(lua_State *L) {
  atomic_store(&interrupted, 1);
  atomic_store(&undelivered, 1);
  lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

int weft_interrupted(void) { return atomic_load(&interrupted); }

void weft_clear_interrupt(void) {
  atomic_store(&interrupted, 0);
  atomic_store(&undelivered, 0);
}

int stop_interrupt_pending(void) { return atomic_load(&undelivered); }

void stop_raise_interrupt(lua_State *L) {
  if (home_of(L)->dispatching || !atomic_exchange(&undelivered, 0)) return;
  push_interrupt_error(L);
  lua_error(L);
}

static int l_interrupted(lua_State *L) {
  lua_pushboolean(L, weft_interrupted());
  return 1;
}

static int l_clear_interrupt(lua_State *L) {
  (void)L;
  weft_clear_interrupt();
  return 0;
}

/* === the signal ========================================================== */

static void chain(const struct sigaction *old, int sig, siginfo_t *si, void *uc) {
  if (old->sa_flags & SA_SIGINFO) {
    if (old->sa_sigaction) old->sa_sigaction(sig, si, uc);
  } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
    old->sa_handler(sig);
  }
}

static void on_stop_signal(int sig, siginfo_t *si, void *uc) {
  stop_ctx *c = reg_find();
  int saved = errno, nudged = c && sig == SIGURG && atomic_exchange(&c->nudged, 0);
  if (nudged) sched_yield();
  if (c && atomic_load(&c->pending))
    set_stop_hook(atomic_load(&c->L));
  else if (!nudged)
    chain(sig == SIGURG ? &old_urg : &old_alrm, sig, si, uc);
  errno = saved;
}

/* 1 if thread `tid` of this process is running or runnable ('R' in its
 * /proc stat: not asleep in a system call). */
static int thread_runnable(pid_t tid) {
  char path[64], buf[512], *p;
  ssize_t n;
  int fd;
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) return 0;
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  p = strrchr(buf, ')');   /* (the name in parentheses may hold anything) */
  return p && p[1] == ' ' && p[2] == 'R';
}

static atomic_long nudges;   /* sent, for core._nudges() */

int stop_nudge(stop_ctx *c) {
  if (!thread_runnable(c->tid)) return 0;
  atomic_store(&c->nudged, 1);
  pthread_kill(c->thread, SIGURG);
  atomic_fetch_add(&nudges, 1);
  return 1;
}

/* core._nudges() -> how many times stop_nudge asked a thread to yield */
static int l_nudges(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)atomic_load(&nudges));
  return 1;
}

static void free_ctx(void *p) {
  stop_ctx *c = p;
  reg_del(c);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static void init_once_fn(void) {
  struct sigaction sa;
  pthread_key_create(&ctx_key, free_ctx);
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_stop_signal;
  sa.sa_flags = SA_SIGINFO;        /* no SA_RESTART: break blocking calls */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGURG, &sa, &old_urg);
}

void stop_init(void) { pthread_once(&init_once, init_once_fn); }

/* === contexts ============================================================ */

static void ctx_init(stop_ctx *c, int worker) {
  memset(c, 0, sizeof *c);
  c->thread = pthread_self();
  c->tid = (pid_t)syscall(SYS_gettid);
  c->worker = worker;
  atomic_init(&c->L, NULL);
  atomic_init(&c->pending, 0);
  pthread_mutex_init(&c->mu, NULL);
}

void stop_attach(stop_ctx *c, int worker) {
  sigset_t urg;
  stop_init();
  ctx_init(c, worker);
  tls_ctx = c;
  reg_add(c);
  sigemptyset(&urg);
  sigaddset(&urg, SIGURG);
  pthread_sigmask(SIG_UNBLOCK, &urg, NULL);
}

void stop_detach(stop_ctx *c) {
  reg_del(c);
  if (tls_ctx == c) tls_ctx = NULL;
  pthread_mutex_destroy(&c->mu);
}

stop_ctx *stop_current(void) { return tls_ctx; }

stop_ctx *stop_self(void) {
  stop_ctx *c = tls_ctx;
  if (c) return c;
  stop_init();
  if ((c = malloc(sizeof *c)) == NULL) return NULL;
  ctx_init(c, 0);
  pthread_setspecific(ctx_key, c);
  tls_ctx = c;
  reg_add(c);
  return c;
}

int stop_pending(void) {
  stop_ctx *c = tls_ctx;
  return c && atomic_load(&c->pending);
}

void stop_check(lua_State *L) {
  stop_ctx *c = tls_ctx;
  if (c == NULL || !atomic_load(&c->pending)) return;
  set_stop_hook(L);
  push_stop_error(L, c);
  lua_error(L);
}

void stop_watch_home(home *h) {
  stop_ctx *c = tls_ctx;
  if (c == NULL) return;
  pthread_mutex_lock(&c->mu);
  c->waiting_home = h;
  pthread_mutex_unlock(&c->mu);
}

/* === levels ============================================================== */

static void level_deadline(dl_timer *t) {
  stop_level *lv = (stop_level *)((char *)t - offsetof(stop_level, timer));
  if (lv->on_deadline)
    lv->on_deadline(lv);
  else
    stop_fire(lv, WK_TIMEOUT);
}

/* SIGALRM is ours only while a weft.timeout.signal runs. */
static void alarm_take(void) {
  struct sigaction sa;
  if (alarm_levels++ > 0) return;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_stop_signal;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, &old_alrm);
}

static void alarm_give_back(void) {
  sigset_t s, old;
  struct timespec zero = {0, 0};
  if (--alarm_levels > 0) return;
  /* A stop signal sent just before the level ended must not meet the old
   * disposition (by default, SIGALRM kills the process): take it first. */
  sigemptyset(&s);
  sigaddset(&s, SIGALRM);
  pthread_sigmask(SIG_BLOCK, &s, &old);
  while (sigtimedwait(&s, NULL, &zero) > 0) {}
  sigaction(SIGALRM, &old_alrm, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int stop_push(stop_level *lv, lua_State *L, double seconds, int sig) {
  stop_ctx *c = stop_self();
  if (c == NULL) return -1;
  lv->ctx = c;
  lv->L = L;
  lv->prev_L = atomic_load(&c->L);
  lv->outer = c->top;
  atomic_init(&lv->fired, 0);
  lv->sig = sig;
  lv->seconds = seconds;
  lv->timer.slot = 0;
  lv->timer.fire = NULL;
  lv->saved_hook = lua_gethook(L);
  lv->saved_mask = lua_gethookmask(L);
  lv->saved_count = lua_gethookcount(L);
  if (sig == SIGALRM) alarm_take();
  if (!c->worker && seconds >= 0) {
    /* The thread must not block the signal that stops it. */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  }
  c->top = lv;
  atomic_store(&c->L, L);
  if (seconds >= 0 && dl_arm(&lv->timer, weft_now() + seconds, level_deadline) != 0) {
    stop_pop(lv);
    return -1;
  }
  return 0;
}

int stop_pop(stop_level *lv) {
  stop_ctx *c = lv->ctx;
  int kind;
  if (lv->timer.fire) dl_disarm(&lv->timer);
  c->top = lv->outer;
  atomic_store(&c->L, lv->prev_L);
  kind = atomic_load(&lv->fired);
  if (atomic_load(&c->pending)) {
    stop_level *o;
    /* Clear, then look at the outer levels: a stop_fire racing with us
     * either shows in the scan or sets `pending` again after our store. */
    atomic_store(&c->pending, 0);
    for (o = lv->outer; o; o = o->outer) {
      if (atomic_load(&o->fired)) {
        atomic_store(&c->pending, 1);
        set_stop_hook(lv->prev_L ? lv->prev_L : lv->L);
        break;
      }
    }
    if (o == NULL && lua_gethook(lv->L) == stop_hook)
      lua_sethook(lv->L, lv->saved_hook, lv->saved_mask, lv->saved_count);
  }
  if (lv->sig == SIGALRM) alarm_give_back();
  return kind;
}

int stop_fire(stop_level *lv, int kind) {
  stop_ctx *c = lv->ctx;
  int expected = 0;
  home *h;
  if (!atomic_compare_exchange_strong(&lv->fired, &expected, kind)) return 0;
  atomic_store(&c->pending, 1);
  pthread_kill(c->thread, lv->sig);
  /* A thread asleep in a wait does not notice signals: wake it. */
  pthread_mutex_lock(&c->mu);
  h = c->waiting_home;
  if (h) home_ref(h);
  pthread_mutex_unlock(&c->mu);
  if (h) {
    pthread_mutex_lock(&h->lock);
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    home_unref(h);
  }
  return 1;
}

/* === coroutines in worker states ========================================= */

/* Runs the function at upvalue 1 with the arguments on the stack while
 * `co` counts as the running Lua thread; errors pass through unchanged. */
static int call_as(lua_State *L, lua_State *co, int where) {
  stop_ctx *c = tls_ctx;
  lua_State *prev = c ? atomic_load(&c->L) : NULL;
  int status;
  if (c && co) {
    atomic_store(&c->L, co);
    if (atomic_load(&c->pending)) set_stop_hook(co);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  if (c && co) {
    atomic_store(&c->L, prev);
    if (atomic_load(&c->pending)) set_stop_hook(L);
  }
  if (status == LUA_OK) return lua_gettop(L);
  if (where && lua_type(L, -1) == LUA_TSTRING) {
    /* as the original wrap does: the error points at its caller */
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

static int co_resume(lua_State *L) { return call_as(L, lua_tothread(L, 1), 0); }

static int co_wrapped(lua_State *L) {
  return call_as(L, lua_tothread(L, lua_upvalueindex(2)), 1);
}

/* coroutine.wrap(f): the original wrapper, called through co_wrapped. */
static int co_wrap(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));   /* the original wrap */
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);                       /* g */
  if (lua_getupvalue(L, -1, 1) == NULL) return 1;   /* not auxwrap: as is */
  lua_pushcclosure(L, co_wrapped, 2);      /* (g, co) */
  return 1;
}

/* === os.exit in a thread task ============================================ */

/* os.exit in a worker thread's state.  The real one would end the whole
 * program (every pool, the caller, the report it was about to write).
 * Inside a task, it stops the task as a deadline does, with kind exit, so
 * a pcall around it cannot swallow it; elsewhere (a pool's init) it is an
 * ordinary error. */
static int exit_in_thread(lua_State *L) {
  stop_ctx *c = tls_ctx;
  stop_level *lv = c ? c->top : NULL;
  while (lv && lv->outer) lv = lv->outer;   /* the task's own level */
  if (lv == NULL) return weft_error(L, WK_EXIT, "%s", STOP_EXIT_MESSAGE);
  stop_fire(lv, WK_EXIT);
  stop_check(L);
  return weft_error(L, WK_EXIT, "%s", STOP_EXIT_MESSAGE);   /* not reached */
}

/* debug.sethook in a worker thread's state.  A task that sets its own hook
 * while a stop unwinds it (in a pcall's handler, say) would take weft's
 * stop hook off and run on past its deadline: while a stop is pending the
 * call raises the stop instead.  Before a stop, a task's hook is its own;
 * the stop hook replaces it when the stop comes, and the task's hook is put
 * back when the task's level ends. */
static int sethook_in_thread(lua_State *L) {
  stop_check(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

void stop_guard_thread_state(lua_State *L) {
  lua_getglobal(L, "os");
  if (lua_istable(L, -1)) {
    lua_pushcfunction(L, exit_in_thread);
    lua_setfield(L, -2, "exit");
  }
  lua_pop(L, 1);
  lua_getglobal(L, "debug");
  if (lua_istable(L, -1) && lua_getfield(L, -1, "sethook") == LUA_TFUNCTION) {
    lua_pushcclosure(L, sethook_in_thread, 1);
    lua_setfield(L, -2, "sethook");
  } else if (lua_istable(L, -1)) {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

void stop_track_coroutines(lua_State *L) {
  if (lua_getglobal(L, "coroutine") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "resume");
  lua_pushcclosure(L, co_resume, 1);
  lua_setfield(L, -2, "resume");
  lua_getfield(L, -1, "wrap");
  lua_pushcclosure(L, co_wrap, 1);
  lua_setfield(L, -2, "wrap");
  lua_pop(L, 1);
}

/* === weft.sleep ========================================================== */

/* A number of seconds >= 0 at arg (kind config otherwise). */
static double check_seconds(lua_State *L, int arg, const char *what) {
  double s;
  if (lua_type(L, arg) != LUA_TNUMBER)
    weft_error(L, WK_CONFIG, "%s: seconds must be a number, got %s", what,
               luaL_typename(L, arg));
  s = lua_tonumber(L, arg);
  if (!(s >= 0))
    weft_error(L, WK_CONFIG, "%s: seconds must be a non-negative number, got %s", what,
               lua_tostring(L, arg));
  return s;
}

/* weft.sleep(seconds): sleeps, but wakes (raising) when the calling task
 * is stopped, and lets Ctrl-C through on the main thread. */
static int l_sleep(lua_State *L) {
  double s = check_seconds(L, 1, "weft.sleep");
  struct timespec ts;
  home_watch w;
  if (s > 1e9) s = 1e9;
  dl_timespec(weft_now() + s, &ts);
  home_watch_init(L, &w);
  stop_check(L);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    stop_check(L);
    if (lua_gethook(L) != w.hook || lua_gethookmask(L) != w.mask || stop_interrupt_pending())
      home_deliver_interrupt(L, &w);
  }
  return 0;
}

/* === weft.timeout ======================================================== */

static void check_callable(lua_State *L, int arg, const char *what) {
  if (lua_type(L, arg) == LUA_TFUNCTION) return;
  if (luaL_getmetafield(L, arg, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  weft_error(L, WK_CONFIG, "%s: fn must be a function, got %s", what, luaL_typename(L, arg));
}

/* Calls fn(...) (stack: seconds, fn, args...) under a level of this thread
 * delivered by `sig`; returns its results, or raises kind timeout. */
static int guarded_call(lua_State *L, double seconds, int sig, const char *what) {
  stop_level lv;
  int status, kind;
  memset(&lv, 0, sizeof lv);
  if (stop_push(&lv, L, seconds, sig) != 0)
    return luaL_error(L, "weft: cannot arm the deadline (out of memory)");
  status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
  kind = stop_pop(&lv);
  if (kind == WK_TIMEOUT)
    return weft_error(L, WK_TIMEOUT, "%s: the function did not finish within %f s", what,
                      seconds);
  stop_check(L);   /* an outer level fired: keep unwinding */
  if (status != LUA_OK) return lua_error(L);
  return lua_gettop(L) - 1;
}

/* weft.timeout.signal(seconds, fn, ...) */
static int l_timeout_signal(lua_State *L) {
  double s = check_seconds(L, 1, "weft.timeout.signal");
  check_callable(L, 2, "weft.timeout.signal");
  if (!is_main_thread())
    return weft_error(L, WK_INVALID_STATE,
                      "weft.timeout.signal works only on the main thread "
                      "(use weft.timeout.call, which works anywhere)");
  return guarded_call(L, s, SIGALRM, "weft.timeout.signal");
}

/* The mechanism weft.timeout.call uses on this thread. */
static const char *mechanism(void) {
  stop_ctx *c = tls_ctx;
  if (is_main_thread()) return "signal";
  if (c && c->worker) return "thread";
  return "process";
}

/* weft.timeout.call(seconds, fn, ...) */
static int l_timeout_call(lua_State *L) {
  double s = check_seconds(L, 1, "weft.timeout.call");
  const char *m = mechanism();
  check_callable(L, 2, "weft.timeout.call");
  if (m[0] == 's') return guarded_call(L, s, SIGALRM, "weft.timeout.call");
  if (m[0] == 't') return guarded_call(L, s, SIGURG, "weft.timeout.call");
  return child_call(L, s, "weft.timeout.call");
}

/* weft.timeout.process(seconds, fn, ...) */
static int l_timeout_process(lua_State *L) {
  double s = check_seconds(L, 1, "weft.timeout.process");
  check_callable(L, 2, "weft.timeout.process");
  return child_call(L, s, "weft.timeout.process");
}

/* weft.timeout.mechanism() -> "signal" | "thread" | "process" */
static int l_timeout_mechanism(lua_State *L) {
  lua_pushstring(L, mechanism());
  return 1;
}

void stop_open(lua_State *L) {
  static const luaL_Reg timeout[] = {
      {"signal", l_timeout_signal},
      {"process", l_timeout_process},
      {"call", l_timeout_call},
      {"mechanism", l_timeout_mechanism},
      {NULL, NULL}};
  stop_init();
  lua_pushcfunction(L, l_sleep);
  lua_setfield(L, -2, "sleep");
  lua_pushcfunction(L, l_interrupted);
  lua_setfield(L, -2, "interrupted");
  lua_pushcfunction(L, l_clear_interrupt);
  lua_setfield(L, -2, "clear_interrupt");
  lua_pushcfunction(L, l_nudges);
  lua_setfield(L, -2, "_nudges");
  luaL_newlib(L, timeout);
  lua_setfield(L, -2, "timeout");
}
