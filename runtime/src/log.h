/*
 * log.h -- weft.log's records (log_*): made by Lua code anywhere, delivered
 * in the state that submitted the task.
 *
 * A record made by a task on a worker thread is queued on the home of the
 * task's future (home->log_head, under home->lock) and delivered there by
 * home_dispatch: whenever that state waits on futures or dispatches its
 * completions.  A task in a worker process sends it to its pool as a LOG
 * frame (frame.h), and the supervisor queues it the same way.  A record made
 * in the home's own state (its script, an inline task, a done-callback) is
 * delivered at once.
 *
 * Delivery runs in the home's state: it calls the state's sink
 * (core.set_log_sink) with a table {time, level, message, flow, task,
 * attempt, worker}, or writes one line on stderr.  The submitting state's
 * level (core.set_log_level, WEFT_LOG_LEVEL at first) filters records where
 * they are made (a worker process gets it with each task), and again on
 * delivery.
 */
#ifndef WEFT_LOG_H
#define WEFT_LOG_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "future.h"

enum { LOG_DEBUG = 10, LOG_INFO = 20, LOG_WARN = 30, LOG_ERROR = 40 };

/* Records queued past this many on one home are counted and dropped. */
#define LOG_QUEUE_MAX 100000

typedef struct log_record {
  struct log_record *next;
  double time;                 /* seconds since the epoch */
  int level;
  int attempt;                 /* 0: not made by a task */
  int worker_kind, worker_id;  /* as in future_meta */
  future *f;                   /* the task's future (a reference), or NULL */
  const char *worker;          /* a remote worker's label (in this allocation),
                                  or NULL: worker_kind and worker_id name it */
  size_t len;
  char message[];
} log_record;

/* The task running on the calling thread, as its records should name it.
 * Whoever runs a task sets it around the run (log_enter/log_leave). */
typedef struct log_task {
  future *f;                   /* in-process tasks; NULL in a worker process */
  int attempt;
  int worker_kind, worker_id;
  uint32_t id;                 /* a worker process's task id */
  /* A worker process sends its records to the pool instead (serve.c). */
  int (*forward)(const struct log_task *lt, int level, double time, const char *msg,
                 size_t len);
  int level;                   /* ...the records from this level up */
} log_task;

/* Makes lt the calling thread's running task; returns the one it hides. */
log_task *log_enter(log_task *lt);
void log_leave(log_task *prev);

/* A record of `len` bytes of message (the caller fills in the rest), or
 * NULL when out of memory. */
log_record *log_record_new(int level, double time, const char *msg, size_t len);
/* The same, made by a remote worker that `worker` names (rclient.c). */
log_record *log_record_remote(int level, double time, const char *msg, size_t len,
                              const char *worker, size_t wlen);
void log_record_free(log_record *r);

/* A home may forward its tasks' records elsewhere instead of delivering
 * them (`weft worker` sends them back to the submitter): the hook is
 * called in the home's state with each record made by a task; 1 when it
 * took care of it. */
typedef int (*log_hook)(void *ctx, const log_record *r);
void log_set_hook(home *h, log_hook hook, void *ctx);

/* Delivers a record made by the runtime itself in L, now. */
void log_here(lua_State *L, int level, const char *msg);

/* Queues r (taking it) for delivery in h; any thread. */
void log_post(home *h, log_record *r);

/* Takes the records queued on h, and how many were dropped (h->lock
 * held); log_deliver then delivers them in the home's state, in order. */
log_record *log_take_locked(home *h, long *dropped);
void log_deliver(lua_State *L, log_record *r, long dropped);

/* Writes the records still queued on a closing home on stderr. */
void log_flush_closed(home *h);

/* The level a new home starts with (WEFT_LOG_LEVEL, default info). */
int log_default_level(void);

/* Registers log_emit, set_log_sink, set_log_level and log_level into the
 * module table at the top of the stack. */
void log_open(lua_State *L);

#endif
