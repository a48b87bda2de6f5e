/*
 * stop.h -- stopping running Lua code at a deadline or on a forced cancel
 * (stop_*).
 *
 * Code that may be stopped runs inside a stop level: a task on a worker
 * thread, an inline task, a weft.timeout.* call.  Levels nest per OS
 * thread (a stop context).  To stop a level, some other thread (the
 * deadline service, or the owner forcing a cancel) marks it fired and sends
 * a signal to the level's thread; the handler, on that very thread, installs
 * a hook on the Lua thread running there (lua_sethook is what lua.c does on
 * Ctrl-C), and the hook raises at the next instruction.  It keeps raising
 * at every instruction until the code has unwound to the fired level, so a
 * pcall inside cannot swallow the stop.  No hook is installed otherwise:
 * Lua code under a deadline runs at full speed.
 *
 * Signals: SIGURG for pool tasks and weft.timeout.call (default-ignored,
 * and used the same way by Go's runtime), SIGALRM for weft.timeout.signal.
 * Neither is installed with SA_RESTART, so a stop also breaks a blocking
 * system call that does not retry on EINTR.
 *
 * Coroutines: in worker states, coroutine.resume and coroutine.wrap are
 * wrapped so the context knows which Lua thread runs now; elsewhere a stop
 * reaches the Lua thread that entered the level (and every coroutine
 * created after the stop, which inherits the hook).
 */
#ifndef WEFT_STOP_H
#define WEFT_STOP_H

#include <lua.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "deadline.h"
#include "future.h"

typedef struct stop_ctx stop_ctx;
typedef struct stop_level stop_level;

struct stop_level {
  stop_level *outer;
  stop_ctx *ctx;
  lua_State *L;              /* the Lua thread that entered the level */
  lua_State *prev_L;         /* ctx->L before it */
  atomic_int fired;          /* 0, or the kind it was stopped with */
  int sig;                   /* SIGURG or SIGALRM */
  double seconds;            /* its timeout, for messages (< 0: none) */
  dl_timer timer;            /* its deadline */
  /* Called on the deadline service's thread at the deadline; NULL means
   * stop_fire(level, WK_TIMEOUT). */
  void (*on_deadline)(stop_level *lv);
  void *data;                /* for on_deadline */
  lua_Hook saved_hook;       /* L's hook when the level was entered */
  int saved_mask, saved_count;
};

struct stop_ctx {
  pthread_t thread;
  _Atomic(lua_State *) L;    /* the Lua thread running on this OS thread */
  atomic_int pending;        /* some level of this context fired */
  stop_level *top;           /* the innermost level (this thread only) */
  int worker;                /* a weft worker thread (coroutines tracked) */
  pthread_mutex_t mu;        /* rank 4 ("stop"): guards waiting_home */
  home *waiting_home;        /* the home this thread sleeps on, if any */
  pid_t tid;                 /* the thread's kernel id */
  atomic_int nudged;         /* stop_nudge: yield the CPU once */
};

/* Installs the SIGURG handler (once per process). */
void stop_init(void);

/* The calling thread's context, created on first use; NULL when out of
 * memory.  stop_current() never creates one. */
stop_ctx *stop_self(void);
stop_ctx *stop_current(void);

/* Sets up ctx (embedded in a worker) as the calling thread's context. */
void stop_attach(stop_ctx *ctx, int worker);
void stop_detach(stop_ctx *ctx);

/* Enters a level on the calling thread for code about to run in L, with a
 * deadline (-1: none) delivered by `sig`.  Returns 0, or -1 when the timer
 * cannot be armed. */
int stop_push(stop_level *lv, lua_State *L, double seconds, int sig);
/* Leaves the innermost level (lv).  Returns the kind it was stopped with,
 * or 0.  When no level of the context remains fired, the stop hook is
 * taken off lv->L and its saved hook put back. */
int stop_pop(stop_level *lv);

/* Stops a level (any thread).  The caller guarantees that the level is
 * entered and cannot be left meanwhile (its timer's fire function, or a
 * lock its owner takes before stop_pop).  Returns 1 if this call stopped
 * it, 0 if it was stopped already. */
int stop_fire(stop_level *lv, int kind);

/* Asks c's thread to give up its CPU once (sched_yield in the signal
 * handler), if it is running or waiting for a CPU (not asleep in a system
 * call, which the signal would interrupt).  For a deadline that passed
 * while its thread was waiting for a core that busy threads held: the
 * stopped thread, and the owner waiting for the failure, get one at once
 * instead of at the next scheduler tick or later.  The caller guarantees
 * the thread does not exit meanwhile.  Returns 1 if it was asked. */
int stop_nudge(stop_ctx *c);

/* 1 if the calling thread has a fired level. */
int stop_pending(void);
/* Raises the stop error in L if the calling thread has a fired level (and
 * makes sure the hook keeps raising); returns otherwise. */
void stop_check(lua_State *L);

/* Thread workers' states: os.exit fails the task (kind exit) instead of
 * ending the process, and debug.sethook cannot take the stop hook off while
 * a stop is pending.  (The standard streams need no guard: Lua's io library
 * refuses to close them.) */
#define STOP_EXIT_MESSAGE \
  "os.exit is not allowed in a thread task (it would end the whole program); " \
  "return or error() to end the task"
void stop_guard_thread_state(lua_State *L);

/* Worker states: wraps coroutine.resume and coroutine.wrap (see above). */
void stop_track_coroutines(lua_State *L);

/* Registers weft.sleep and the weft.timeout functions into the module
 * table at the top of the stack. */
void stop_open(lua_State *L);

/* User interrupts (weft_interrupt in weft.h, from a SIGINT handler): 1
 * while one has not been raised yet; stop_raise_interrupt raises it in L
 * (kind cancelled, "interrupted") if so, unless L's home is running
 * callbacks (their pcall would swallow it: it waits until they return). */
int stop_interrupt_pending(void);
void stop_raise_interrupt(lua_State *L);

/* While the calling thread sleeps on h (h->lock held), a stop also wakes
 * it: stop_watch_home(h) before sleeping, stop_watch_home(NULL) after. */
void stop_watch_home(home *h);

#endif
