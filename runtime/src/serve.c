/*
 * serve.c -- a process pool's worker: the weft-worker program's loop.
 *
 * Three threads.  The main thread runs the tasks, one at a time, in its
 * Lua state, each inside a stop level, and answers each before it takes
 * the next.  A reader thread reads frames from fd 3 (frame.h) into the
 * queue of tasks not started yet, so it hears RECALL while a task runs and
 * gives those tasks back.  A watcher thread waits for SIGTERM (blocked
 * everywhere else): from the pool, with the id of the task to stop, it
 * fires that task's level as a deadline would in a thread pool (the hook
 * raises at the next instruction, SIGURG breaks a blocking system call),
 * and the worker answers STOPPED, rebuilds its state and serves on; with
 * FRAME_STOP_EXIT, or from anybody else, it stops the task and exits.  The
 * worker also exits when its socket closes (the pool shut it down, or the
 * parent died) and dies with its parent (PR_SET_PDEATHSIG), taking its
 * process group along.  A stop kills the programs the task started (the
 * rest of the worker's process group, child.h).
 */
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "child.h"
#include "frame.h"
#include "future.h"
#include "log.h"
#include "run.h"
#include "stop.h"
#include "wire.h"

/* A task frame's body, queued until the main thread takes it. */
typedef struct queued {
  struct queued *next;
  uint32_t id;
  size_t len;
  unsigned char body[];
} queued;

static struct {
  /* Rank 2 ("worker"): taken by all three threads; a stop lock may be
   * taken under it (stop_fire), never the send lock. */
  pthread_mutex_t lock;
  pthread_cond_t cond;       /* a task was queued, or the end came */
  queued *head, *tail;       /* tasks not started */
  int end;                   /* 1: the socket closed; -1: it sent garbage */
  stop_level *level;         /* the running task's level, or NULL */
  uint32_t id;               /* its id */
  int quit;                  /* exit once the running task has unwound */
  /* Rank 3 ("send"), a leaf: one frame at a time on the socket. */
  pthread_mutex_t send_lock;
  int fd;
  frame_shared *sh;          /* claims, shared with the pool (fd 4) */
} wk = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, NULL, 0, 0,
        PTHREAD_MUTEX_INITIALIZER, -1, NULL};

static void *watch_sigterm(void *arg) {
  sigset_t term;
  siginfo_t si;
  (void)arg;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  for (;;) {
    int ours, v, stopping = 0;
    if (sigwaitinfo(&term, &si) != SIGTERM) continue;
    ours = si.si_code == SI_QUEUE && si.si_pid == getppid();
    v = ours ? si.si_value.sival_int : FRAME_STOP_EXIT;
    pthread_mutex_lock(&wk.lock);
    if (!ours || (wk.level && (uint32_t)(v & FRAME_ID_MASK) == (wk.id & FRAME_ID_MASK))) {
      if (wk.level)
        stopping = stop_fire(wk.level, (v & FRAME_STOP_EXIT) ? WK_CANCELLED : WK_TIMEOUT);
      if (v & FRAME_STOP_EXIT) {
        wk.quit = 1;
        pthread_cond_signal(&wk.cond);   /* (an idle main thread) */
      }
    }
    pthread_mutex_unlock(&wk.lock);
    /* The programs the task started die now: a task waiting for one
     * (os.execute) returns and unwinds, and none outlives the stop. */
    if (stopping) child_sweep_group();
  }
  return NULL;
}

/* === frames ============================================================== */

typedef struct reader {
  int fd;
  buf in;
  size_t off;                /* where the next frame starts in `in` */
} reader;

/* The next frame: its type, body and body length (valid until the next
 * call).  0 at the end of the input, -1 on a malformed frame or a read
 * error. */
static int next_frame(reader *r, int *type, const unsigned char **body, size_t *len) {
  for (;;) {
    size_t have = r->in.len - r->off, size;
    ssize_t n;
    /* (nothing read yet: in.data is NULL, and NULL + 0 is undefined) */
    int got = have ? frame_parse((unsigned char *)r->in.data + r->off, have, type, body, len,
                                 &size)
                   : 0;
    if (got < 0) return -1;
    if (got > 0) {
      r->off += size;
      return 1;
    }
    if (r->off > 0) {   /* keep the partial frame at the front */
      memmove(r->in.data, r->in.data + r->off, have);
      r->in.len = have;
      r->off = 0;
    }
    if (buf_reserve(&r->in, have >= 4 ? 4 + (size_t)frame_get((unsigned char *)r->in.data, 4)
                                      : 65536))
      return -1;
    n = read(r->fd, r->in.data + r->in.len, r->in.cap - r->in.len);
    if (n > 0) r->in.len += (size_t)n;
    else if (n == 0) return 0;
    else if (errno != EINTR) return -1;
  }
}

static int send_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Sends a frame: a head of `nhead` bytes (size and type filled in here),
 * then, without copying, `len` bytes of data. */
static int send_frame(unsigned char *head, size_t nhead, int type, const char *data,
                      size_t len) {
  int rc;
  if (nhead - 4 + len > FRAME_MAX) return -1;
  frame_put_u32(head, (uint32_t)(nhead - 4 + len));
  head[4] = (unsigned char)type;
  pthread_mutex_lock(&wk.send_lock);
  rc = send_all(wk.fd, (char *)head, nhead) || send_all(wk.fd, data, len);
  pthread_mutex_unlock(&wk.send_lock);
  return rc;
}

/* DONE (with its state and outcome), STOPPED or SKIPPED. */
static int send_answer(int type, uint32_t id, int state, const char *data, size_t len) {
  unsigned char head[FRAME_HEAD + 5];
  frame_put_u32(head + FRAME_HEAD, id);
  head[FRAME_HEAD + 4] = (unsigned char)state;
  return send_frame(head, FRAME_HEAD + (type == FRAME_DONE ? 5 : 4), type, data, len);
}

/* A weft.log record of the running task goes to the pool (log.h). */
static int forward_log(const log_task *lt, int level, double time, const char *msg, size_t len) {
  unsigned char head[FRAME_HEAD + 13];
  uint64_t usec = (uint64_t)(time * 1e6);
  frame_put_u32(head + FRAME_HEAD, lt->id);
  head[FRAME_HEAD + 4] = (unsigned char)level;
  frame_put_u32(head + FRAME_HEAD + 5, (uint32_t)usec);
  frame_put_u32(head + FRAME_HEAD + 9, (uint32_t)(usec >> 32));
  return send_frame(head, sizeof head, FRAME_LOG, msg, len);
}

/* RECALL: every task not started goes back, in the order they came. */
static int give_back(void) {
  buf ids = BUF_INIT;
  unsigned char head[FRAME_HEAD + 4];
  uint32_t n = 0;
  int rc;
  pthread_mutex_lock(&wk.lock);
  while (wk.head) {
    queued *q = wk.head;
    wk.head = q->next;
    if (buf_put_u32(&ids, q->id) == 0) n++;
    free(q);
  }
  wk.tail = NULL;
  pthread_mutex_unlock(&wk.lock);
  frame_put_u32(head + FRAME_HEAD, n);
  rc = ids.len == 4 * (size_t)n ? send_frame(head, sizeof head, FRAME_RECALLED, ids.data, ids.len)
                                : -1;
  buf_free(&ids);
  return rc;
}

/* The reader thread: frames into the queue until the socket closes. */
static void *read_frames(void *arg) {
  reader *r = arg;
  int end;
  for (;;) {
    const unsigned char *body;
    size_t len;
    int type, got = next_frame(r, &type, &body, &len);
    if (got <= 0) {
      end = got == 0 ? 1 : -1;
      break;
    }
    if (type == FRAME_TASK && len >= 4) {
      queued *q = malloc(sizeof *q + len);
      if (q == NULL) {
        end = -1;
        break;
      }
      q->next = NULL;
      q->id = (uint32_t)frame_get(body, 4);
      q->len = len;
      memcpy(q->body, body, len);
      pthread_mutex_lock(&wk.lock);
      if (wk.tail) wk.tail->next = q; else wk.head = q;
      wk.tail = q;
      pthread_cond_signal(&wk.cond);
      pthread_mutex_unlock(&wk.lock);
    } else if (type == FRAME_RECALL && len == 0) {
      if (give_back() != 0) {
        end = -1;
        break;
      }
    } else {
      end = -1;
      break;
    }
  }
  pthread_mutex_lock(&wk.lock);
  wk.end = end;
  pthread_cond_signal(&wk.cond);
  pthread_mutex_unlock(&wk.lock);
  return NULL;
}

/* The main thread's next task; NULL when it is time to exit. */
static queued *take_task(void) {
  queued *q = NULL;
  pthread_mutex_lock(&wk.lock);
  while (!wk.quit && wk.head == NULL && wk.end == 0) pthread_cond_wait(&wk.cond, &wk.lock);
  if (!wk.quit && wk.end >= 0 && (q = wk.head) != NULL) {
    wk.head = q->next;
    if (wk.head == NULL) wk.tail = NULL;
  }
  pthread_mutex_unlock(&wk.lock);
  return q;
}

/* === the loop ============================================================ */

typedef struct hello {
  char *path, *cpath, *init;
  size_t init_len;
} hello;

static int read_hello(reader *r, hello *h) {
  const unsigned char *body;
  const char *s;
  size_t len, n;
  int type;
  frame_reader fr;
  if (next_frame(r, &type, &body, &len) != 1 || type != FRAME_HELLO) return -1;
  fr.p = body;
  fr.end = body + len;
  fr.bad = 0;
  if (frame_u8(&fr) != FRAME_VERSION) return -1;
  frame_u32(&fr);   /* the worker's index: for names, unused yet */
  s = frame_str(&fr, &n);
  h->path = strndup(s, n);
  s = frame_str(&fr, &n);
  h->cpath = strndup(s, n);
  s = frame_str(&fr, &n);
  h->init = n ? malloc(n) : NULL;
  if (h->init) memcpy(h->init, s, n);
  h->init_len = n;
  return fr.bad || !h->path || !h->cpath || (n && !h->init) ? -1 : 0;
}

/* Runs one task; returns 0, or -1 when it is malformed or the answer
 * cannot be sent.  *stopped: a SIGTERM stopped it (rebuild the state). */
static int run_task(lua_State *L, const queued *q, const run_outcome *broken, int *stopped) {
  frame_reader fr = {q->body + 4, q->body + q->len, 0};
  wire_dep small[8], *deps = small;
  run_outcome out = {FS_FAILED, NULL, 0};
  atomic_uint *claim = &wk.sh->claim[q->id % FRAME_PIPE_MAX];
  uint32_t queued = CLAIM(q->id, CLAIM_QUEUED);
  stop_level lv;
  log_task lt = {NULL, 0, 0, 0, q->id, forward_log, 0}, *outer;
  const char *name;
  char namebuf[256];
  size_t nlen, ndeps, i;
  int kind, rc, first = frame_u8(&fr), level = frame_u8(&fr);
  /* Ours unless its future was cancelled first (frame.h, "Claims"). */
  atomic_store(&wk.sh->began[q->id % FRAME_PIPE_MAX], weft_now());
  if (!atomic_compare_exchange_strong(claim, &queued, CLAIM(q->id, CLAIM_STARTED)))
    return send_answer(FRAME_SKIPPED, q->id, 0, NULL, 0);
  atomic_store(&wk.sh->busy, 1);
  if (first) atomic_fetch_add(&wk.sh->started, 1);
  lt.level = level;   /* the submitting state's */
  name = frame_str(&fr, &nlen);
  snprintf(namebuf, sizeof namebuf, "%.*s", (int)nlen, name);
  ndeps = frame_u32(&fr);
  if (fr.bad || ndeps > (size_t)(fr.end - fr.p) / 4 ||
      (ndeps > 8 && (deps = malloc(ndeps * sizeof *deps)) == NULL)) {
    atomic_store(&wk.sh->busy, 0);
    return -1;
  }
  for (i = 0; i < ndeps; i++) deps[i].data = frame_str(&fr, &deps[i].len);
  if (fr.bad) {
    if (deps != small) free(deps);
    atomic_store(&wk.sh->busy, 0);
    return -1;
  }
  memset(&lv, 0, sizeof lv);
  stop_push(&lv, L, -1, SIGURG);
  pthread_mutex_lock(&wk.lock);
  wk.level = &lv;
  wk.id = q->id;
  pthread_mutex_unlock(&wk.lock);
  outer = log_enter(&lt);
  if (broken->data)
    run_error_record(L, WK_BROKEN, "the worker's init function failed", broken->data,
                     broken->len, &out);
  else
    run_message(L, (const char *)fr.p, (size_t)(fr.end - fr.p), deps, ndeps,
                nlen ? namebuf : NULL, 0, &out);
  log_leave(outer);
  pthread_mutex_lock(&wk.lock);
  wk.level = NULL;
  pthread_mutex_unlock(&wk.lock);
  kind = stop_pop(&lv);
  atomic_store(&wk.sh->busy, 0);
  if (deps != small) free(deps);
  fflush(NULL);   /* what the task printed goes out before its answer */
  if (kind) {
    *stopped = 1;
    free(out.data);
    return send_answer(FRAME_STOPPED, q->id, 0, NULL, 0);
  }
  if (out.data == NULL && out.state == FS_FAILED)   /* not even a record (no memory) */
    out.data = wire_record("memory", "out of memory in the worker process: the task's outcome "
                           "could not be recorded", NULL, &out.len);
  rc = send_answer(FRAME_DONE, q->id, out.state, out.data, out.len);
  free(out.data);
  return rc;
}

int serve_pool(int fd, lua_CFunction open_core) {
  static reader r;
  hello h = {NULL, NULL, NULL, 0};
  run_outcome broken = {FS_FAILED, NULL, 0};
  unsigned char ready[FRAME_HEAD];
  stop_ctx ctx;
  sigset_t term;
  pthread_t watcher, rd;
  lua_State *L;
  queued *q;
  int rc = 0;
  /* Die with the parent; programs a task starts must not inherit fd. */
  if (child_die_with_parent() != 0) return 1;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  wk.fd = r.fd = fd;
  wk.sh = mmap(NULL, sizeof *wk.sh, PROT_READ | PROT_WRITE, MAP_SHARED, FRAME_SHARED_FD, 0);
  if (wk.sh == MAP_FAILED) return 1;
  close(FRAME_SHARED_FD);
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, NULL);
  stop_init();
  stop_attach(&ctx, 1);
  if (read_hello(&r, &h) != 0) return 1;
  L = run_state_new(h.path, h.cpath, h.init, h.init_len, 0, open_core, &broken);
  if (L == NULL || send_frame(ready, sizeof ready, FRAME_READY, NULL, 0) != 0) return 1;
  if (pthread_create(&watcher, NULL, watch_sigterm, NULL) != 0 ||
      pthread_create(&rd, NULL, read_frames, &r) != 0)
    return 1;
  pthread_detach(watcher);   /* both end with the process */
  pthread_detach(rd);
  while ((q = take_task()) != NULL) {
    int stopped = 0, quit;
    rc = run_task(L, q, &broken, &stopped);
    free(q);
    if (rc != 0) break;
    pthread_mutex_lock(&wk.lock);
    quit = wk.quit;
    pthread_mutex_unlock(&wk.lock);
    if (quit) break;
    if (stopped) {   /* the stopped code may have left anything half done */
      child_sweep_group();   /* (started after the watcher's sweep) */
      lua_close(L);
      free(broken.data);
      L = run_state_new(h.path, h.cpath, h.init, h.init_len, 0, open_core, &broken);
      if (L == NULL) return 1;
    }
  }
  pthread_mutex_lock(&wk.lock);
  if (wk.end < 0) rc = 1;
  pthread_mutex_unlock(&wk.lock);
  /* __gc and __close handlers of the state run before we go. */
  lua_close(L);
  fflush(NULL);
  free(broken.data);
  free(h.path);
  free(h.cpath);
  free(h.init);
  return rc;
}
