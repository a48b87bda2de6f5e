/*
 * deadline.c -- the clock and the timer service.
 *
 * One thread ("weft:deadline"), started on first use, sleeps until the
 * earliest armed timer, pops it and calls its fire function with no lock
 * held.  It never runs Lua code, and starts with every signal blocked.
 *
 * It asks for real-time priority (SCHED_FIFO, the lowest level), which
 * root, CAP_SYS_NICE or an RLIMIT_RTPRIO allow: as an ordinary thread it
 * woke late whenever busy threads held every core (it waited for a
 * scheduler tick, 4 ms here, or more), and every deadline with it.  Its
 * fire functions are short, so it never keeps a core for long.  Without
 * the right it stays an ordinary thread, asking only for a short time
 * slice (Linux 6.12+), which lets it preempt sooner on waking.
 */
#include "deadline.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The heap, the thread and the timer being fired.  service.lock has rank 9
 * ("deadline"): a leaf, nothing is taken while it is held. */
static struct {
  pthread_once_t once;
  pthread_mutex_t lock;
  pthread_cond_t wake;      /* the earliest timer changed */
  pthread_cond_t fired;     /* a fire function returned */
  dl_timer **heap;
  size_t n, cap;
  dl_timer *firing;         /* whose fire function runs now */
  int disarming;            /* threads waiting for `firing` to change */
  double sleep_until;       /* the thread sleeps until this (-1: no timer) */
  int started;
} service = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

double weft_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double dl_after(double seconds) {
  if (!(seconds >= 0) || isinf(seconds)) return -1;
  return weft_now() + seconds;
}

/* A deadline far past any time_t (a timeout of 1e300 s) is clamped to one
 * some thirty million years away: converting it as it is would overflow
 * time_t (undefined; on x86 a time in the past, so a wait returned at once
 * and the deadline service spun). */
#define DL_FAR 1e15

void dl_timespec(double deadline, struct timespec *ts) {
  double s;
  if (!(deadline < DL_FAR)) deadline = DL_FAR;
  s = floor(deadline);
  ts->tv_sec = (time_t)s;
  ts->tv_nsec = (long)((deadline - s) * 1e9);
  if (ts->tv_nsec >= 1000000000L) { ts->tv_sec++; ts->tv_nsec -= 1000000000L; }
  if (ts->tv_nsec < 0) ts->tv_nsec = 0;
}

/* === the heap (service.lock held) ======================================== */

static void heap_set(size_t i, dl_timer *t) {
  service.heap[i] = t;
  t->slot = i + 1;
}

static void sift_up(size_t i) {
  dl_timer *t = service.heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (service.heap[parent]->when <= t->when) break;
    heap_set(i, service.heap[parent]);
    i = parent;
  }
  heap_set(i, t);
}

static void sift_down(size_t i) {
  dl_timer *t = service.heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= service.n) break;
    if (c + 1 < service.n && service.heap[c + 1]->when < service.heap[c]->when) c++;
    if (t->when <= service.heap[c]->when) break;
    heap_set(i, service.heap[c]);
    i = c;
  }
  heap_set(i, t);
}

static void heap_remove(size_t i) {
  dl_timer *gone = service.heap[i];
  dl_timer *last = service.heap[--service.n];
  gone->slot = 0;
  if (i == service.n) return;
  heap_set(i, last);
  if (i > 0 && service.heap[(i - 1) / 2]->when > last->when) sift_up(i); else sift_down(i);
}

/* === the thread ========================================================== */

/* Linux's sched_attr (glibc has no wrapper), up to sched_util_max. */
struct dl_sched_attr {
  uint32_t size, policy;
  uint64_t flags;
  int32_t nice;
  uint32_t priority;
  uint64_t runtime, deadline, period;
  uint32_t util_min, util_max;
};

static void raise_priority(void) {
  struct sched_param sp;
  memset(&sp, 0, sizeof sp);
  sp.sched_priority = sched_get_priority_min(SCHED_FIFO);
  if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0) {
#ifdef SYS_sched_setattr
    struct dl_sched_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.policy = SCHED_OTHER;
    errno = 0;
    a.nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));   /* (kept as it is) */
    if (errno != 0) return;
    a.runtime = 100000;   /* ns: the shortest slice Linux takes */
    syscall(SYS_sched_setattr, 0, &a, 0);   /* (older kernels ignore it) */
#endif
  }
}

static __thread int on_service_thread;

int dl_on_service_thread(void) { return on_service_thread; }

static void *service_main(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "weft:deadline");
  on_service_thread = 1;
  /* The default timer slack (50 us) would be most of a deadline's error. */
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  raise_priority();
  pthread_mutex_lock(&service.lock);
  for (;;) {
    dl_timer *t;
    dl_fire_fn fire;
    if (service.n == 0) {
      service.sleep_until = -1;
      pthread_cond_wait(&service.wake, &service.lock);
      continue;
    }
    t = service.heap[0];
    if (t->when > weft_now()) {
      struct timespec ts;
      service.sleep_until = t->when;
      dl_timespec(t->when, &ts);
      pthread_cond_timedwait(&service.wake, &service.lock, &ts);
      continue;
    }
    heap_remove(0);
    fire = t->fire;
    service.firing = t;
    pthread_mutex_unlock(&service.lock);
    fire(t);
    pthread_mutex_lock(&service.lock);
    service.firing = NULL;
    if (service.disarming) pthread_cond_broadcast(&service.fired);
  }
  return NULL;
}

static void service_init(void) {
  pthread_condattr_t ca;
  pthread_attr_t attr;
  pthread_t thread;
  sigset_t all, old;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&service.wake, &ca);
  pthread_condattr_destroy(&ca);
  pthread_cond_init(&service.fired, NULL);
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256u << 10);
  service.started = pthread_create(&thread, &attr, service_main, NULL) == 0;
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* === arming ============================================================== */

int dl_arm(dl_timer *t, double when, dl_fire_fn fire) {
  pthread_once(&service.once, service_init);
  if (!service.started) return -1;
  pthread_mutex_lock(&service.lock);
  if (t->slot) heap_remove(t->slot - 1);
  if (service.n == service.cap) {
    size_t cap = service.cap ? 2 * service.cap : 64;
    dl_timer **heap = realloc(service.heap, cap * sizeof *heap);
    if (heap == NULL) {
      pthread_mutex_unlock(&service.lock);
      return -1;
    }
    service.heap = heap;
    service.cap = cap;
  }
  t->when = when;
  t->fire = fire;
  heap_set(service.n++, t);
  sift_up(service.n - 1);
  /* Wake the thread only if it sleeps past the new earliest deadline. */
  if (service.heap[0] == t && (service.sleep_until < 0 || when < service.sleep_until)) {
    service.sleep_until = when;
    pthread_cond_signal(&service.wake);
  }
  pthread_mutex_unlock(&service.lock);
  return 0;
}

int dl_disarm(dl_timer *t) {
  int armed = 0;
  pthread_mutex_lock(&service.lock);
  while (service.firing == t) {
    service.disarming++;
    pthread_cond_wait(&service.fired, &service.lock);
    service.disarming--;
  }
  if (t->slot) {
    heap_remove(t->slot - 1);
    armed = 1;
  }
  pthread_mutex_unlock(&service.lock);
  return armed;
}
