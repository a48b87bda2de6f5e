/*
 * procs.c -- the process pool's supervisor.  See procs.h for the design and
 * frame.h for what travels over the workers' sockets.
 *
 * Everything about the workers belongs to the supervisor thread: nothing
 * here is touched by another thread except the kill list (procs->lock),
 * the wake flag and the pids stats() reads.  The supervisor sleeps in
 * ppoll on an eventfd (woken by submits, shutdown and forced cancels), the
 * workers' sockets and their pidfds (readable when the process has
 * exited), with the nearest deadline as its timeout.
 *
 * Pipelining.  A worker answers each task before it reads the next, so
 * tasks can be queued in its socket behind the one it runs: the supervisor
 * hands a worker up to PIPE_BUDGET seconds of work (by the running average
 * of a task's time), at least one task and at most FRAME_PIPE_MAX.  Trivial
 * tasks then flow in batches; long ones go one at a time, so one slow task
 * does not hold others back while a worker idles.  The oldest unanswered
 * task of a worker is the one it runs: its deadline counts from when the
 * worker claimed it (frame_shared.began), whatever the worker did before
 * (init, rebuilding its state after a stop).  A task that turns out long
 * would still hold back the ones queued behind it while another worker
 * idles: when a worker is idle, the queue is empty and another worker's
 * running task has taken longer than PIPE_BUDGET, the supervisor RECALLs
 * that worker's queued tasks (its reader thread gives them back while the
 * task runs) and hands them to the idle ones.
 */
#include "procs.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "frame.h"
#include "log.h"
#include "wire.h"

#define PIPE_BUDGET 1e-3      /* seconds of queued work a worker may hold */
#define START_TIMEOUT 30.0    /* a worker not READY by then is killed */
#define START_FAILURES 3      /* workers in a row that die before READY: broken */
#define CLOSE_TIMEOUT 5.0     /* a worker told to exit and still there is killed */
#define NO_PIDFD_TICK 0.05    /* without pidfds, look for dead workers this often */

enum { PROC_NONE, PROC_STARTING, PROC_READY, PROC_CLOSING };

typedef struct proc {
  worker *w;                  /* the pool's slot: counters for stats() */
  frame_shared *sh;           /* shared with its process (claims) */
  int shfd;                   /* ...a memfd, its fd 4 */
  atomic_int pid;             /* 0 when none (read by stats()) */
  int fd, pidfd;              /* -1 when none */
  int state;
  int ready;                  /* it said READY */
  int eof;                    /* its socket is closed for reading */
  int bad;                    /* it sent garbage: frames are ignored */
  int retiring;               /* max_tasks reached: closed once idle */
  int exiting;                /* it said STOPPED and exits: runs nothing more */
  int recalling;              /* RECALL sent, RECALLED not yet back */
  int oom;                    /* killed: no memory here to read what it sent */
  buf in, out;                /* bytes read and not parsed; to send */
  size_t in_off, out_off;
  task *sent[FRAME_PIPE_MAX];       /* tasks sent, oldest first, a ring */
  size_t first, nsent;
  uint32_t next_id;           /* the oldest sent task's id is next_id - nsent */
  double head_since;          /* when the oldest sent task began */
  int stop;                   /* WK_TIMEOUT or WK_CANCELLED: asked of it */
  double kill_at;             /* SIGKILL then; 0: not due */
  double spawn_at;            /* start a new process then */
  long served;                /* tasks sent to this process */
  long answered;              /* tasks it answered */
  char why[160];              /* why we killed it, for its task's error */
} proc;

typedef struct procs {
  pool *p;
  pthread_t thread;
  int efd;                    /* eventfd: wakes the supervisor */
  atomic_int wake_pending;    /* efd was written and not read yet */
  pthread_mutex_t lock;       /* rank 3 ("procs"), a leaf: guards kills */
  /* Rank 0 ("claim"): taken before a home or pool lock, never under one.
   * Makes "is it sent? then claim it" atomic between the supervisor
   * handing a task out and the owner cancelling its future. */
  pthread_mutex_t claim_lock;
  future **kills;             /* forced cancels to carry out (owned refs) */
  size_t nkills, capkills;
  atomic_int nkills_hint;     /* nkills, read unlocked before sleeping */
  atomic_int abort;           /* procs_abort: stop everything */
  proc *procs;
  int n;
  char *worker_path;
  double kill_grace;
  long max_tasks;
  /* The supervisor thread's own. */
  double avg;                 /* running average of seconds per task */
  int start_failures;
  int barren;                 /* deaths in a row of workers that answered
                                 nothing: respawns back off */
  char broken[400];           /* not empty: workers cannot start; why */
  int closing;                /* shut down and drained: workers told to go */
  atomic_long restarts;       /* processes started to replace others */
} procs;

static task *head_task(proc *pr) { return pr->nsent ? pr->sent[pr->first] : NULL; }
static uint32_t head_id(proc *pr) { return pr->next_id - (uint32_t)pr->nsent; }

static task *shift_task(proc *pr) {
  task *t = pr->sent[pr->first];
  pr->first = (pr->first + 1) % FRAME_PIPE_MAX;
  pr->nsent--;
  return t;
}

static atomic_uint *claim_of(proc *pr, uint32_t id) {
  return &pr->sh->claim[id % FRAME_PIPE_MAX];
}

/* The claim state of the k-th task sent (0 is the oldest). */
static int claim_state(proc *pr, size_t k) {
  uint32_t id = head_id(pr) + (uint32_t)k, v = atomic_load(claim_of(pr, id));
  return (v >> 2) == (id & FRAME_ID_MASK) ? (int)(v & 3) : 0;
}

/* Notes that f's task began in the worker whose page holds `claim` (seen
 * STARTED): when the worker claimed it, and which process that is. */
static void note_began(future *f, atomic_uint *claim, uint32_t id) {
  uint32_t slot = id % FRAME_PIPE_MAX;
  frame_shared *sh = (frame_shared *)(void *)((char *)(claim - slot) -
                                              offsetof(frame_shared, claim));
  future_mark_started(f, META_PROCESS, atomic_load(&sh->pid), atomic_load(&sh->began[slot]));
}

/* A task that goes back to the queue is no longer claimable in a worker. */
static void unclaim(procs *ps, task *t) {
  pthread_mutex_lock(&ps->claim_lock);
  atomic_store(&t->f->claim, NULL);
  pthread_mutex_unlock(&ps->claim_lock);
}

/* === outcomes ============================================================ */

/* An attempt of t on pr ended (see pool_attempt_end). */
static void attempt_end(procs *ps, proc *pr, task *t, run_outcome *out, int kind) {
  future_start(t->f);   /* (it ran, whether or not anybody looked) */
  t->begun = 1;
  if (pool_attempt_end(ps->p, pr->w, t, out, kind) == TASK_DONE) pool_task_done(ps->p, t);
}

/* Fails an attempt of t with a record of `kind` made here. */
static void attempt_fail(procs *ps, proc *pr, task *t, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void attempt_fail(procs *ps, proc *pr, task *t, const char *kind, const char *fmt, ...) {
  run_outcome out = {FS_FAILED, NULL, 0};
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  out.data = wire_record(kind, msg, future_name(t->f), &out.len);
  attempt_end(ps, pr, t, &out, 0);
}

/* === a worker's life ===================================================== */

/* Starts a process for pr and queues its HELLO. */
static void proc_spawn(procs *ps, proc *pr, double now) {
  pool *p = ps->p;
  int sv[2], rc;
  pid_t pid;
  size_t at;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    rc = errno;
    goto failed;
  }
  rc = child_spawn(ps->worker_path, "--pool", sv[1], pr->shfd, &pid);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    goto failed;
  }
  pr->fd = sv[0];
  fcntl(pr->fd, F_SETFL, O_NONBLOCK);
  pr->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  atomic_store(&pr->pid, pid);
  atomic_store(&pr->sh->pid, pid);
  pr->state = PROC_STARTING;
  pr->ready = pr->eof = pr->bad = pr->retiring = pr->exiting = pr->recalling = pr->oom = 0;
  pr->stop = 0;
  pr->served = pr->answered = 0;
  pr->why[0] = '\0';
  pr->kill_at = now + START_TIMEOUT;   /* until it says READY */
  pr->in.len = pr->in_off = pr->out.len = pr->out_off = 0;
  at = frame_begin(&pr->out, FRAME_HELLO);
  if (at == (size_t)-1 || buf_putc(&pr->out, FRAME_VERSION) ||
      buf_put_u32(&pr->out, (uint32_t)pr->w->index) ||
      buf_put_str(&pr->out, p->path ? p->path : "", p->path ? strlen(p->path) : 0) ||
      buf_put_str(&pr->out, p->cpath ? p->cpath : "", p->cpath ? strlen(p->cpath) : 0) ||
      buf_put_str(&pr->out, p->init_msg, p->init_msg ? p->init_len : 0) ||
      frame_end(&pr->out, at)) {
    snprintf(pr->why, sizeof pr->why, "could not be started: out of memory");
    child_kill_group(pid);
    pr->state = PROC_CLOSING;
  }
  return;
failed:
  ps->start_failures++;
  pr->spawn_at = now + 0.01 * ps->start_failures;
  if (ps->start_failures >= START_FAILURES)
    snprintf(ps->broken, sizeof ps->broken, "cannot start the worker program %s: %s",
             ps->worker_path, strerror(rc));
}

/* Kills pr's process now; `why` (if not NULL) goes into the error of the
 * task it runs. */
static void proc_kill(proc *pr, const char *why) {
  if (why && !pr->why[0]) snprintf(pr->why, sizeof pr->why, "%s", why);
  child_kill_group(atomic_load(&pr->pid));   /* it and what its tasks started */
  pr->state = PROC_CLOSING;
  pr->kill_at = 0;
}

/* Asks pr to stop the task it runs (kind WK_TIMEOUT: then serve on;
 * WK_CANCELLED: then exit), and to be killed if it has not by kill_grace. */
static void proc_stop(procs *ps, proc *pr, int kind, double now) {
  union sigval v;
  v.sival_int = (int)(head_id(pr) & FRAME_ID_MASK) | (kind == WK_CANCELLED ? FRAME_STOP_EXIT : 0);
  pr->stop = kind;
  if (ps->kill_grace <= 0 || sigqueue(atomic_load(&pr->pid), SIGTERM, v) != 0)
    proc_kill(pr, NULL);
  else
    pr->kill_at = now + ps->kill_grace;
}

/* Tells an idle pr to exit (it reads end-of-file), killing it if it has
 * not within CLOSE_TIMEOUT. */
static void proc_close(proc *pr, double now) {
  shutdown(pr->fd, SHUT_WR);
  pr->state = PROC_CLOSING;
  if (pr->kill_at == 0) pr->kill_at = now + CLOSE_TIMEOUT;
}

/* === frames from a worker ================================================ */

/* A task sent to pr that did not start goes back to the queue's front, or
 * is dropped if its future was cancelled. */
static void hand_back(procs *ps, task *t, int claim) {
  unclaim(ps, t);
  if (atomic_load(&ps->abort) && future_cancel(t->f)) claim = CLAIM_CANCELLED;
  if (claim == CLAIM_CANCELLED || FS_IS_FINAL(future_state(t->f)))
    pool_task_done(ps->p, t);
  else
    pool_requeue(ps->p, t);
}

/* pr sent garbage (`detail` says what): it is killed, and nothing more it
 * says is read. */
static void proc_malformed(proc *pr, const char *detail) {
  char why[128];
  snprintf(why, sizeof why, "sent a malformed message (%s)", detail);
  proc_kill(pr, why);
  pr->bad = 1;
}

/* A LOG frame: a weft.log record of the task pr runs, for its home. */
static int proc_log(proc *pr, frame_reader *fr) {
  uint32_t id = frame_u32(fr);
  int level = frame_u8(fr);
  uint64_t usec = frame_u32(fr);
  task *t;
  log_record *r;
  usec |= (uint64_t)frame_u32(fr) << 32;
  if (fr->bad || !pr->ready || (t = head_task(pr)) == NULL || id != head_id(pr) ||
      level < LOG_DEBUG || level > LOG_ERROR)
    return -1;
  r = log_record_new(level, (double)usec * 1e-6, (const char *)fr->p, (size_t)(fr->end - fr->p));
  if (r == NULL) return 0;   /* (out of memory: the record is lost, not the task) */
  r->attempt = t->attempt;
  r->worker_kind = META_PROCESS;
  r->worker_id = atomic_load(&pr->pid);
  future_ref(t->f);
  r->f = t->f;
  log_post(t->f->home, r);
  return 0;
}

/* Handles one frame; returns -1 (and kills pr) when it is malformed. */
static int proc_frame(procs *ps, proc *pr, int type, const unsigned char *body, size_t len,
                      double now) {
  frame_reader fr = {body, body + len, 0};
  run_outcome out = {FS_FAILED, NULL, 0};
  uint32_t id;
  int state = 0, kind;
  double took;
  task *t;
  char detail[64];
  if (type == FRAME_READY) {
    if (pr->ready || len != 0) goto bad;
    pr->ready = 1;
    if (pr->state == PROC_STARTING) {
      pr->state = PROC_READY;
      pr->kill_at = 0;
    }
    pr->head_since = now;
    ps->start_failures = 0;
    return 0;
  }
  if (type == FRAME_RECALLED) {
    size_t n = frame_u32(&fr), k;
    if (fr.bad || !pr->recalling || n > pr->nsent ||
        len != 4 + 4 * n)
      goto bad;
    for (k = 0; k < n; k++)   /* the newest n sent, oldest first */
      if (frame_u32(&fr) != pr->next_id - (uint32_t)(n - k)) goto bad;
    pr->recalling = 0;
    /* Back to the front of the queue, the oldest first. */
    for (k = 0; k < n; k++) {
      size_t at = (pr->first + pr->nsent - 1) % FRAME_PIPE_MAX;
      hand_back(ps, pr->sent[at], claim_state(pr, pr->nsent - 1));
      pr->nsent--;
    }
    pr->next_id -= (uint32_t)n;   /* (ids are positions in the worker's stream) */
    return 0;
  }
  if (type == FRAME_LOG) {
    if (proc_log(pr, &fr) != 0) goto bad;
    return 0;
  }
  if (type != FRAME_DONE && type != FRAME_STOPPED && type != FRAME_SKIPPED) goto bad;
  id = frame_u32(&fr);
  if (type == FRAME_SKIPPED) {   /* its future was cancelled in time */
    if (fr.bad || fr.p != fr.end || pr->nsent == 0 || id != head_id(pr) ||
        claim_state(pr, 0) != CLAIM_CANCELLED)
      goto bad;
    pool_task_done(ps->p, shift_task(pr));
    pr->answered++;
    return 0;
  }
  if (type == FRAME_DONE) state = frame_u8(&fr);
  if (fr.bad || !pr->ready || pr->nsent == 0 || id != head_id(pr) ||
      (type == FRAME_DONE && state != FS_FINISHED && state != FS_FAILED) ||
      (type == FRAME_STOPPED && fr.p != fr.end))
    goto bad;
  note_began(head_task(pr)->f, claim_of(pr, id), id);
  t = shift_task(pr);
  pr->answered++;
  took = now - pr->head_since;
  ps->avg = ps->avg > 0 ? 0.9 * ps->avg + 0.1 * took : took;
  pr->head_since = now;
  kind = pr->stop;
  pr->stop = 0;
  /* A worker stopped other than for a deadline exits next. */
  if (type == FRAME_STOPPED && kind != WK_TIMEOUT) pr->exiting = 1;
  if (pr->state != PROC_CLOSING && !pr->exiting) pr->kill_at = 0;
  if (type == FRAME_DONE) {
    out.state = state;
    out.len = (size_t)(fr.end - fr.p);
    if (out.len && (out.data = malloc(out.len)) == NULL) {
      attempt_fail(ps, pr, t, "memory", "out of memory in the pool's process: no room for the "
                   "task's results (%zu bytes)", out.len);
      return 0;
    }
    if (out.len) memcpy(out.data, fr.p, out.len);
    attempt_end(ps, pr, t, &out, kind);
  } else if (kind) {
    attempt_end(ps, pr, t, &out, kind);
  } else {
    attempt_fail(ps, pr, t, "worker_died",
                 "the worker process %d was stopped by a SIGTERM from outside weft",
                 atomic_load(&pr->pid));
  }
  return 0;
bad:
  snprintf(detail, sizeof detail, "frame type %d, %zu bytes", type, len);
  proc_malformed(pr, detail);
  return -1;
}

/* Reads what pr sent and handles every whole frame.  `drain`: it has
 * exited, read to the end. */
static void proc_read(procs *ps, proc *pr, double now, int drain) {
  for (;;) {
    ssize_t n;
    if (pr->eof || pr->bad) return;
    if (buf_reserve(&pr->in, 65536)) {
      proc_kill(pr, "could not be read from: out of memory");
      pr->oom = 1;
      return;
    }
    n = recv(pr->fd, pr->in.data + pr->in.len, pr->in.cap - pr->in.len, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      /* It is exiting (or was killed): its pidfd says how.  One that
       * closed its socket and lingers is killed after the grace. */
      pr->eof = 1;
      if (pr->state != PROC_CLOSING || pr->kill_at == 0) pr->kill_at = now + ps->kill_grace;
      pr->state = PROC_CLOSING;
    }
    if (n > 0) pr->in.len += (size_t)n;
    /* every whole frame */
    while (!pr->bad) {
      const unsigned char *body;
      size_t len, size;
      int type, got = frame_parse((unsigned char *)pr->in.data + pr->in_off,
                                  pr->in.len - pr->in_off, &type, &body, &len, &size);
      if (got < 0) {
        char detail[64];
        snprintf(detail, sizeof detail, "a frame of %llu bytes",
                 (unsigned long long)frame_get((unsigned char *)pr->in.data + pr->in_off, 4));
        proc_malformed(pr, detail);
        return;
      }
      if (got == 0) break;
      pr->in_off += size;
      proc_frame(ps, pr, type, body, len, now);
    }
    if (pr->in_off == pr->in.len) {
      pr->in.len = pr->in_off = 0;
    } else if (pr->in_off > 0) {
      memmove(pr->in.data, pr->in.data + pr->in_off, pr->in.len - pr->in_off);
      pr->in.len -= pr->in_off;
      pr->in_off = 0;
    }
    if (n <= 0 || !drain) return;
  }
}

/* Sends what is pending for pr, as far as its socket takes it. */
static void proc_flush(proc *pr) {
  while (pr->out_off < pr->out.len) {
    ssize_t n = send(pr->fd, pr->out.data + pr->out_off, pr->out.len - pr->out_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      pr->out_off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      return;
    } else {   /* it is gone; its pidfd says how */
      pr->out_off = pr->out.len;
      if (pr->state != PROC_CLOSING) proc_kill(pr, NULL);
    }
  }
  pr->out.len = pr->out_off = 0;
}

/* pr's process has ended with `status`: settle or hand back what it held,
 * and free the slot for a new process. */
static void proc_reaped(procs *ps, proc *pr, int status, double now) {
  char how[96];
  size_t k;
  int was_ready = pr->ready;
  pid_t pid = atomic_load(&pr->pid);
  proc_read(ps, pr, now, 1);   /* what it said before it went */
  if (status == -1)
    snprintf(how, sizeof how, "ended (its exit status was taken by someone else)");
  else
    child_describe_exit(how, sizeof how, status);
  /* The oldest was running; or the worker sent garbage, and then the
   * task is failed whatever its claim says (not handed on forever). */
  if (pr->nsent > 0 && (claim_state(pr, 0) == CLAIM_STARTED || pr->bad)) {
    task *t;
    if (claim_state(pr, 0) == CLAIM_STARTED)   /* (info().started, as for any task that ran) */
      note_began(head_task(pr)->f, claim_of(pr, head_id(pr)), head_id(pr));
    t = shift_task(pr);
    if (pr->stop)
      attempt_end(ps, pr, t, &(run_outcome){FS_FAILED, NULL, 0}, pr->stop);
    else if (pr->oom)   /* (its task's fault or not, memory is what failed) */
      attempt_fail(ps, pr, t, "memory", "out of memory in the pool's process: what worker "
                   "process %d sent could not be read, so it was killed", pid);
    else
      attempt_fail(ps, pr, t, "worker_died", "the worker process %d %s while running this task%s%s",
                   pid, how, pr->why[0] ? ": it " : "", pr->why);
  }
  /* The rest never started: back to the front of the queue, in order. */
  for (k = pr->nsent; k-- > 0;)
    hand_back(ps, pr->sent[(pr->first + k) % FRAME_PIPE_MAX], claim_state(pr, k));
  pr->nsent = pr->first = 0;
  atomic_store(&pr->sh->busy, 0);
  pr->stop = 0;
  close(pr->fd);
  if (pr->pidfd >= 0) close(pr->pidfd);
  pr->fd = pr->pidfd = -1;
  atomic_store(&pr->pid, 0);
  pr->state = PROC_NONE;
  pr->kill_at = 0;
  pr->ready = 0;
  if (!was_ready) {
    if (++ps->start_failures >= START_FAILURES && !ps->broken[0])
      snprintf(ps->broken, sizeof ps->broken,
               "worker processes die before they are ready (the last one %s%s%s)", how,
               pr->why[0] ? ": it " : "", pr->why);
    pr->spawn_at = now + 0.01 * ps->start_failures;
  } else {
    /* A worker that keeps dying before it answers anything (a broken
     * worker program, a machine out of memory) is not respawned in a
     * tight loop: 10 ms, 20 ms... up to 1 s between attempts. */
    ps->barren = pr->answered ? 0 : ps->barren + 1;
    pr->spawn_at = now + (ps->barren < 2 ? 0 : fmin(1.0, ldexp(0.01, ps->barren - 2)));
  }
}

/* Looks whether pr's process has ended; reaps it if so. */
static void proc_check_exit(procs *ps, proc *pr, double now) {
  int status;
  pid_t pid = atomic_load(&pr->pid), r;
  if (pid <= 0) return;
  /* However it ended, the programs its tasks started go with it. */
  child_end_group(pid);
  while ((r = waitpid(pid, &status, WNOHANG)) < 0 && errno == EINTR) {}
  if (r == pid)
    proc_reaped(ps, pr, status, now);
  else if (r < 0 && errno == ECHILD)   /* reaped by someone else (SIGCHLD ignored?) */
    proc_reaped(ps, pr, -1, now);
}

/* === handing tasks out =================================================== */

/* How many tasks pr may hold now. */
static size_t proc_room(procs *ps, proc *pr) {
  size_t limit = 1;
  if ((pr->state != PROC_READY && pr->state != PROC_STARTING) || pr->retiring ||
      pr->exiting || pr->recalling || pr->stop)
    return 0;
  if (ps->avg > 0) limit += (size_t)fmin(FRAME_PIPE_MAX - 1, PIPE_BUDGET / ps->avg);
  return pr->nsent < limit ? limit - pr->nsent : 0;
}

/* Appends t's TASK frame to pr's output; -1 when it cannot be encoded. */
static int put_task(proc *pr, task *t) {
  buf *b = &pr->out;
  size_t at = frame_begin(b, FRAME_TASK), i;
  const char *name = future_name(t->f) ? future_name(t->f) : "";
  int bad = at == (size_t)-1 || buf_put_u32(b, pr->next_id) || buf_putc(b, !t->begun) ||
            buf_putc(b, atomic_load_explicit(&t->f->home->log_level, memory_order_relaxed)) ||
            buf_put_str(b, name, strlen(name)) || buf_put_u32(b, (uint32_t)t->ndeps);
  for (i = 0; !bad && i < t->ndeps; i++) {
    wire_dep dep = task_dep(t, i);
    bad = buf_put_str(b, dep.data, dep.len);
  }
  if (bad || buf_put(b, t->msg, t->len) || frame_end(b, at)) {
    if (at != (size_t)-1) b->len = at;
    return -1;
  }
  pr->next_id++;
  return 0;
}

static void dispatch(procs *ps) {
  pool *p = ps->p;
  for (;;) {
    proc *best = NULL;
    size_t room = 0;
    task *t;
    int i;
    for (i = 0; i < ps->n; i++) {
      size_t r = proc_room(ps, &ps->procs[i]);
      if (r > room) {
        room = r;
        best = &ps->procs[i];
      }
    }
    if (best == NULL && !ps->broken[0]) return;
    if ((t = pool_poll(p)) == NULL) return;
    if (FS_IS_FINAL(future_state(t->f))) {   /* cancelled while queued */
      pool_task_done(p, t);
      continue;
    }
    if (ps->broken[0]) {
      if (pool_attempt_start(ps->procs[0].w, t))
        attempt_fail(ps, &ps->procs[0], t, "broken", "%s", ps->broken);
      else
        pool_task_done(p, t);
      continue;
    }
    /* Claimable from here on: either the worker starts it or the owner
     * cancels it, never both (frame.h). */
    pthread_mutex_lock(&ps->claim_lock);
    if (FS_IS_FINAL(future_state(t->f))) {
      pthread_mutex_unlock(&ps->claim_lock);
      pool_task_done(p, t);
      continue;
    }
    atomic_store(claim_of(best, best->next_id), CLAIM(best->next_id, CLAIM_QUEUED));
    t->f->claim_id = best->next_id;
    atomic_store(&t->f->claim, claim_of(best, best->next_id));
    pthread_mutex_unlock(&ps->claim_lock);
    atomic_store_explicit(&t->f->attempts, t->attempt, memory_order_relaxed);
    if (put_task(best, t) != 0) {
      unclaim(ps, t);
      if (!t->begun) pool_bump(&best->w->started);   /* (as if it ran: stats) */
      attempt_fail(ps, best, t, "serialization",
                   "the task cannot be sent to a worker process (%zu bytes of message "
                   "and dependencies, at most %u)", t->len, FRAME_MAX);
      continue;
    }
    if (best->nsent == 0) best->head_since = weft_now();
    best->sent[(best->first + best->nsent) % FRAME_PIPE_MAX] = t;
    best->nsent++;
    if (ps->max_tasks > 0 && ++best->served >= ps->max_tasks) best->retiring = 1;
  }
}

/* When a worker idles with nothing queued while another one holds tasks
 * behind a long one, recalls those.  Returns when to look again. */
static double rebalance(procs *ps, double now) {
  proc *victim = NULL;
  double next = INFINITY;
  int i, idle = 0;
  for (i = 0; i < ps->n; i++) idle |= ps->procs[i].nsent == 0 && proc_room(ps, &ps->procs[i]);
  if (!idle || pool_has_queued(ps->p)) return next;
  for (i = 0; i < ps->n; i++) {
    proc *pr = &ps->procs[i];
    if (pr->nsent < 2 || !pr->ready || pr->recalling || pr->state != PROC_READY) continue;
    if (now - pr->head_since < PIPE_BUDGET) {
      next = fmin(next, pr->head_since + PIPE_BUDGET);
    } else if (victim == NULL || pr->nsent > victim->nsent) {
      victim = pr;
    }
  }
  if (victim) {
    size_t at = frame_begin(&victim->out, FRAME_RECALL);
    if (at != (size_t)-1 && frame_end(&victim->out, at) == 0) victim->recalling = 1;
    next = now;
  }
  return next;
}

/* Carries out the forced cancels the owner asked for, or procs_abort. */
static void take_kills(procs *ps, double now) {
  future **list;
  size_t n, k, kept = 0;
  int i;
  if (atomic_load(&ps->abort)) {
    for (i = 0; i < ps->n; i++) {
      proc *pr = &ps->procs[i];
      task *t = head_task(pr);
      if (!t || claim_state(pr, 0) != CLAIM_STARTED || pr->stop == WK_CANCELLED ||
          pr->state == PROC_CLOSING)
        continue;
      note_began(t->f, claim_of(pr, head_id(pr)), head_id(pr));
      if (future_settle(t->f, FS_CANCELLED, NULL, 0, NULL) == 0)
        atomic_fetch_add(&ps->p->stopped, 1);
      proc_stop(ps, pr, WK_CANCELLED, now);
    }
  }
  if (atomic_load(&ps->nkills_hint) == 0) return;
  pthread_mutex_lock(&ps->lock);
  list = ps->kills;
  n = ps->nkills;
  ps->kills = NULL;
  ps->nkills = ps->capkills = 0;
  atomic_store(&ps->nkills_hint, 0);
  pthread_mutex_unlock(&ps->lock);
  for (k = 0; k < n; k++) {
    int later = 0;
    for (i = 0; i < ps->n; i++) {
      proc *pr = &ps->procs[i];
      task *t = head_task(pr);
      size_t j;
      if (t && t->f == list[k] && pr->ready && pr->stop != WK_CANCELLED &&
          pr->state != PROC_CLOSING && claim_state(pr, 0) == CLAIM_STARTED) {
        note_began(t->f, claim_of(pr, head_id(pr)), head_id(pr));
        proc_stop(ps, pr, WK_CANCELLED, now);
      }
      /* Started behind tasks whose answers are not read yet (a worker
       * answers each task before it claims the next): the worker runs it
       * now, but the stop must name it, so it waits until those answers
       * are read and it is the oldest. */
      for (j = 1; j < pr->nsent && pr->state != PROC_CLOSING; j++)
        if (pr->sent[(pr->first + j) % FRAME_PIPE_MAX]->f == list[k] &&
            claim_state(pr, j) == CLAIM_STARTED)
          later = 1;
    }
    if (later) {
      list[kept++] = list[k];   /* (keeps the reference) */
    } else {
      future_unref(list[k]);
    }
  }
  if (kept) {   /* back on the list, for the next round */
    pthread_mutex_lock(&ps->lock);
    for (k = 0; k < kept; k++) {
      if (ps->nkills == ps->capkills) {
        size_t cap = ps->capkills ? 2 * ps->capkills : 8;
        future **more = realloc(ps->kills, cap * sizeof *more);
        if (more == NULL) {   /* (the future is cancelled all the same) */
          future_unref(list[k]);
          continue;
        }
        ps->kills = more;
        ps->capkills = cap;
      }
      ps->kills[ps->nkills++] = list[k];
    }
    atomic_store(&ps->nkills_hint, ps->nkills > 0);
    pthread_mutex_unlock(&ps->lock);
  }
  free(list);
}

/* === the supervisor ====================================================== */

/* One round of bookkeeping; returns the time of the next deadline (or
 * INFINITY), or -1 when every worker is gone after shutdown. */
static double tend(procs *ps, double now) {
  pool *p = ps->p;
  double next = INFINITY;
  int i, idle = 1, alive = 0;
  take_kills(ps, now);
  for (i = 0; i < ps->n; i++) {
    proc *pr = &ps->procs[i];
    if (pr->state == PROC_NONE && !ps->closing && !ps->broken[0]) {
      if (now >= pr->spawn_at) {
        if (pr->spawn_at > 0) atomic_fetch_add(&ps->restarts, 1);
        proc_spawn(ps, pr, now);
      } else {
        next = fmin(next, pr->spawn_at);
      }
    }
  }
  dispatch(ps);
  next = fmin(next, rebalance(ps, now));
  for (i = 0; i < ps->n; i++) {
    proc *pr = &ps->procs[i];
    task *t = head_task(pr);
    if (pr->state == PROC_NONE) continue;
    alive++;
    if (pr->nsent) idle = 0;
    if (pr->out.len > pr->out_off) proc_flush(pr);
    if (t && pr->ready && !pr->stop && t->timeout >= 0 && pr->state != PROC_CLOSING) {
      /* A deadline counts from when the worker claimed the task (began[],
       * written before the claim): not from when the previous answer came,
       * or a worker rebuilding its state (or running init) after a stop
       * would spend the next task's budget. */
      uint32_t id = head_id(pr);
      if (claim_state(pr, 0) != CLAIM_STARTED) {
        /* not picked up yet (or skipped): its time has not begun.  It
         * cannot end before head_since + timeout; look again then, and
         * every quarter of its timeout after (1 to 50 ms), until it
         * starts: seen that soon, its deadline is still kept (a worker
         * running init for seconds is not polled a thousand times a
         * second). */
        double poll = fmin(fmax(t->timeout / 4, 1e-3), 0.05);
        next = fmin(next, fmax(now + poll, pr->head_since + t->timeout));
      } else {
        double deadline = atomic_load(&pr->sh->began[id % FRAME_PIPE_MAX]) + t->timeout;
        if (now >= deadline) {
          /* (info().started is there once the future has failed) */
          note_began(t->f, claim_of(pr, id), id);
          if (t->attempt > t->retries) pool_settle_timeout(p, t->f, t->timeout);
          proc_stop(ps, pr, WK_TIMEOUT, now);
        } else {
          next = fmin(next, deadline);
        }
      }
    }
    if (pr->retiring && pr->nsent == 0 && pr->state == PROC_READY) proc_close(pr, now);
    if (pr->kill_at > 0) {
      if (now >= pr->kill_at) {
        proc_kill(pr, pr->ready ? NULL : "did not become ready in time");
      } else {
        next = fmin(next, pr->kill_at);
      }
    }
    if (pr->pidfd < 0) next = fmin(next, now + NO_PIDFD_TICK);
  }
  if (!ps->closing && idle && pool_is_drained(p)) {
    ps->closing = 1;
    for (i = 0; i < ps->n; i++) {
      proc *pr = &ps->procs[i];
      if (pr->state != PROC_NONE) {
        proc_close(pr, now);
        next = fmin(next, pr->kill_at);
      }
    }
  }
  if (ps->closing && alive == 0) return -1;
  return next;
}

static void *supervise(void *arg) {
  procs *ps = arg;
  pool *p = ps->p;
  struct pollfd *fds = calloc((size_t)(1 + 2 * ps->n), sizeof *fds);
  char name[16];
  snprintf(name, sizeof name, "weft:%.7s", p->name ? p->name : "procs");
  pthread_setname_np(pthread_self(), name);
  prctl(PR_SET_TIMERSLACK, 1000UL);   /* wake for deadlines within ~1 us */
  while (fds) {
    double now = weft_now(), next = tend(ps, now), wait;
    struct timespec ts;
    int i, nfds = 1;
    if (next < 0) break;
    fds[0].fd = ps->efd;
    fds[0].events = POLLIN;
    for (i = 0; i < ps->n; i++) {
      proc *pr = &ps->procs[i];
      struct pollfd *a = &fds[1 + 2 * i], *b = a + 1;
      a->fd = pr->state != PROC_NONE && !pr->eof ? pr->fd : -1;
      a->events = (short)(POLLIN | (pr->out.len > pr->out_off ? POLLOUT : 0));
      b->fd = pr->state != PROC_NONE ? pr->pidfd : -1;
      b->events = POLLIN;
      a->revents = b->revents = 0;
      nfds = 3 + 2 * i;
    }
    /* Count ourselves asleep, then look once more (see pool_submit_ready). */
    atomic_store(&p->nidle, 1);
    wait = next - weft_now();
    if (atomic_load(&ps->nkills_hint) > 0 || (pool_has_queued(p) && next > now)) {
      int room = 0;
      for (i = 0; i < ps->n; i++) room |= proc_room(ps, &ps->procs[i]) > 0;
      if (room || ps->broken[0] || atomic_load(&ps->nkills_hint) > 0) wait = 0;
    }
    if (wait < 0) wait = 0;
    if (wait > 1e9 && !isinf(wait)) wait = 1e9;   /* a huge deadline: ts is set all the same */
    if (!isinf(wait)) {
      ts.tv_sec = (time_t)wait;
      ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
    }
    ppoll(fds, (nfds_t)nfds, isinf(wait) ? NULL : &ts, NULL);
    atomic_store(&p->nidle, 0);
    if (fds[0].revents) {
      uint64_t v;
      while (read(ps->efd, &v, sizeof v) < 0 && errno == EINTR) {}
      atomic_store(&ps->wake_pending, 0);
    }
    now = weft_now();
    for (i = 0; i < ps->n; i++) {
      proc *pr = &ps->procs[i];
      struct pollfd *a = &fds[1 + 2 * i], *b = a + 1;
      if (pr->state == PROC_NONE) continue;
      if (a->revents & (POLLIN | POLLHUP | POLLERR)) proc_read(ps, pr, now, 0);
      if (a->revents & POLLOUT) proc_flush(pr);
      if ((b->revents & POLLIN) || pr->pidfd < 0) proc_check_exit(ps, pr, now);
    }
  }
  free(fds);
  atomic_fetch_sub(&p->nalive, 1);
  pool_wake_owner(p);
  pool_unref(p);
  return NULL;
}

/* === the owner's side ==================================================== */

int procs_start(pool *p, const procs_opts *o) {
  procs *ps = calloc(1, sizeof *ps);
  int i, rc;
  if (ps == NULL) return ENOMEM;
  ps->p = p;
  ps->n = p->nworkers;
  ps->kill_grace = o->kill_grace;
  ps->max_tasks = o->max_tasks;
  ps->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ps->worker_path = strdup(o->worker_path);
  ps->procs = calloc((size_t)ps->n, sizeof *ps->procs);
  pthread_mutex_init(&ps->lock, NULL);
  pthread_mutex_init(&ps->claim_lock, NULL);
  p->procs = ps;
  if (ps->efd < 0 || ps->worker_path == NULL || ps->procs == NULL) return ENOMEM;
  for (i = 0; i < ps->n; i++) {
    proc *pr = &ps->procs[i];
    pr->w = p->slots[i];
    pr->fd = pr->pidfd = -1;
    pr->sh = MAP_FAILED;
    pr->shfd = memfd_create("weft-claims", MFD_CLOEXEC);
    if (pr->shfd < 0 || ftruncate(pr->shfd, sizeof *pr->sh) != 0) return errno;
    pr->sh = mmap(NULL, sizeof *pr->sh, PROT_READ | PROT_WRITE, MAP_SHARED, pr->shfd, 0);
    if (pr->sh == MAP_FAILED) return errno;
  }
  if ((rc = pool_start_thread(p, &ps->thread, supervise, ps, 0)) != 0) return rc;
  p->slots[0]->running = 1;   /* the supervisor: joined by procs_join */
  return 0;
}

void procs_wake(pool *p) {
  procs *ps = p->procs;
  uint64_t one = 1;
  if (ps == NULL || atomic_exchange(&ps->wake_pending, 1)) return;
  while (write(ps->efd, &one, sizeof one) < 0 && errno == EINTR) {}
}

void procs_force_cancel(pool *p, future *f) {
  procs *ps = p->procs;
  pthread_mutex_lock(&ps->lock);
  if (ps->nkills == ps->capkills) {
    size_t cap = ps->capkills ? 2 * ps->capkills : 8;
    future **k = realloc(ps->kills, cap * sizeof *k);
    if (k == NULL) {   /* the future is cancelled all the same */
      pthread_mutex_unlock(&ps->lock);
      return;
    }
    ps->kills = k;
    ps->capkills = cap;
  }
  future_ref(f);
  ps->kills[ps->nkills++] = f;
  atomic_store(&ps->nkills_hint, 1);
  pthread_mutex_unlock(&ps->lock);
  procs_wake(p);
}

void procs_abort(pool *p) {
  atomic_store(&p->procs->abort, 1);
  procs_wake(p);
}

void procs_join(pool *p) {
  if (p->procs && p->slots[0]->running) {
    pthread_join(p->procs->thread, NULL);
    p->slots[0]->running = 0;
  }
}

void procs_free(pool *p) {
  procs *ps = p->procs;
  size_t k;
  int i;
  if (ps == NULL) return;
  for (k = 0; k < ps->nkills; k++) future_unref(ps->kills[k]);
  free(ps->kills);
  for (i = 0; ps->procs && i < ps->n; i++) {
    proc *pr = &ps->procs[i];
    buf_free(&pr->in);
    buf_free(&pr->out);
    if (pr->sh && pr->sh != MAP_FAILED) munmap(pr->sh, sizeof *pr->sh);
    if (pr->shfd > 0) close(pr->shfd);
  }
  free(ps->procs);
  free(ps->worker_path);
  if (ps->efd >= 0) close(ps->efd);
  pthread_mutex_destroy(&ps->lock);
  pthread_mutex_destroy(&ps->claim_lock);
  free(ps);
  p->procs = NULL;
}

int procs_cancel_pending(pool *p, future *f) {
  procs *ps = p->procs;
  atomic_uint *claim;
  int rc = -1;
  pthread_mutex_lock(&ps->claim_lock);
  claim = atomic_load(&f->claim);
  if (claim) {   /* in a worker's socket: it must not have started it */
    uint32_t queued = CLAIM(f->claim_id, CLAIM_QUEUED);
    if (atomic_compare_exchange_strong(claim, &queued, CLAIM(f->claim_id, CLAIM_CANCELLED))) {
      rc = future_settle(f, FS_CANCELLED, NULL, 0, NULL);
    } else {
      note_began(f, claim, f->claim_id);
      future_start(f);
    }
  } else {       /* still queued here: the supervisor drops it */
    rc = future_settle(f, FS_CANCELLED, NULL, 0, NULL);
  }
  pthread_mutex_unlock(&ps->claim_lock);
  return rc;
}

void procs_refresh(future *f) {
  atomic_uint *claim = atomic_load(&f->claim);
  uint32_t id = f->claim_id;
  if (claim && atomic_load(claim) == CLAIM(id, CLAIM_STARTED)) {
    note_began(f, claim, id);
    future_start(f);
  }
}

void procs_counts(pool *p, long *started, long *busy) {
  procs *ps = p->procs;
  int i;
  for (i = 0; ps && i < ps->n; i++) {
    *started += (long)atomic_load(&ps->procs[i].sh->started);
    *busy += atomic_load(&ps->procs[i].sh->busy) != 0;
  }
}

void procs_stats(lua_State *L, pool *p) {
  procs *ps = p->procs;
  int i, n = 0;
  if (ps == NULL) return;
  lua_pushinteger(L, (lua_Integer)atomic_load(&ps->restarts));
  lua_setfield(L, -2, "restarts");
  lua_createtable(L, ps->n, 0);
  for (i = 0; i < ps->n; i++) {
    pid_t pid = atomic_load(&ps->procs[i].pid);
    if (pid > 0) {
      lua_pushinteger(L, pid);
      lua_rawseti(L, -2, ++n);
    }
  }
  lua_setfield(L, -2, "pids");
}
