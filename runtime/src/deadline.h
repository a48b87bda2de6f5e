/*
 * deadline.h -- the one clock and the one timer service behind every
 * deadline in weft (dl_*).
 *
 * A deadline is an absolute time in seconds on CLOCK_MONOTONIC (weft_now),
 * or -1 for none.  Every timeout the API takes becomes one with dl_after,
 * so they all read the same clock and accept the same values.
 *
 * A thread that waits for something itself (result, wait, as_completed,
 * map) sleeps on its own condition variable until the deadline: nothing
 * else needs to happen then.  A deadline at which something must happen to
 * SOMEONE ELSE (stop a running task, fail its future, start a retry) is a
 * dl_timer: memory owned by the caller, kept in one binary heap, and fired
 * on the service's thread.  Arming or disarming costs a lock and O(log n)
 * moves, and wakes the service only when the new timer is the earliest.
 */
#ifndef WEFT_DEADLINE_H
#define WEFT_DEADLINE_H

#include <stddef.h>
#include <time.h>

typedef struct dl_timer dl_timer;
typedef void (*dl_fire_fn)(dl_timer *t);

struct dl_timer {
  double when;        /* the deadline (while armed) */
  dl_fire_fn fire;    /* called on the service thread, no lock held */
  size_t slot;        /* heap index + 1 while armed, 0 otherwise */
};

/* Seconds on CLOCK_MONOTONIC. */
double weft_now(void);

/* The deadline `seconds` from now; -1 (none) for a negative or infinite
 * number of seconds. */
double dl_after(double seconds);

/* The absolute CLOCK_MONOTONIC time of a deadline. */
void dl_timespec(double deadline, struct timespec *ts);

/* Arms t to call fire(t) at `when` (moving it if it is armed already).
 * Returns 0, or -1 when out of memory (then t is not armed).  A fire
 * function may re-arm its own timer. */
int dl_arm(dl_timer *t, double when, dl_fire_fn fire);

/* Disarms t.  Returns 1 when it was armed (it will not fire), 0 when it
 * was not armed or has fired.  If its fire function is running right now,
 * waits for it to return, so after dl_disarm the timer's memory may be
 * freed.  Hence: never call it holding a lock that a fire function takes,
 * nor from t's own fire function. */
int dl_disarm(dl_timer *t);

/* 1 on the service's own thread (a fire function): a thread started there
 * must not inherit its real-time priority. */
int dl_on_service_thread(void);

#endif
