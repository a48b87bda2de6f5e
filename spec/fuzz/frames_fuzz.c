/*
 * frames_fuzz.c -- libFuzzer target: what a worker process sends its
 * process pool, read the way the supervisor reads it (procs.c: proc_read,
 * frame_parse, proc_frame and the frame_reader, then proc_reaped when the
 * process is gone), and the outcomes it settles futures with decoded as
 * their owner would (wire.c).  A worker runs user code and may be broken
 * or hostile: whatever it sends, the pool must not crash; a malformed
 * frame only gets the worker killed.
 *
 * The static functions of procs.c are reached by including it; the rest
 * of the runtime is linked as it is.  The supervisor's side is set up as
 * if a pool had sent tasks to the worker: a real pool, home and futures,
 * one proc whose shared claim page, next task id, READY state, RECALL and
 * stop requests come from the input's header:
 *
 *   input  := nsent:u8 flags:u8 base_id:u32 claims:u16 status:u8 bytes*
 *     nsent   tasks sent and not answered (mod 65)
 *     flags   1 ready, 2 recalling, 4|8 stop asked (timeout, cancelled),
 *             16 the pool aborts, 32 tasks have names, 64 some futures
 *             were cancelled by their owner
 *     base_id the oldest sent task's id (ids wrap around)
 *     claims  the claim word of task k: 2 bits at (k % 8) * 2, 0 for a
 *             word that names another task, else QUEUED/STARTED/CANCELLED
 *     status  how the process ended: its exit code or (if >= 128) signal
 *     bytes   what the worker wrote on its socket before it closed it
 *
 * Everything is put back after each input: no task, future or log record
 * outlives it, so inputs do not influence each other.
 */
#include "../../runtime/src/procs.c"

#include <lauxlib.h>
#include <lualib.h>

#include "lua_reset.h"

int luaopen_weft_core(lua_State *L);

static lua_State *L;
static pool *P;
static procs *PS;
static home *H;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  size_t k;
  proc *pr;
  (void)argc;
  (void)argv;
  L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  luaL_requiref(L, "weft.core", luaopen_weft_core, 0);
  lua_settop(L, 0);
  H = home_of(L);
  lua_settop(L, 0);
  lua_reset_snapshot(L);
  /* A process pool of one worker, as l_pool and procs_start make it, with
   * no supervisor thread and no process: this harness is the supervisor. */
  P = aligned_alloc(CACHE_LINE, (sizeof *P + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
  memset(P, 0, sizeof *P);
  atomic_init(&P->refs, 1);
  P->kind = POOL_PROCESSES;
  P->nworkers = 1;
  P->timeout = -1;
  atomic_init(&P->all, NULL);
  pthread_mutex_init(&P->lock, NULL);
  pthread_cond_init(&P->work, NULL);
  P->slots = calloc(1, sizeof *P->slots);
  P->slots[0] = pool_worker_new(P, 1);
  P->home = H;
  home_ref(H);
  P->ring = aligned_alloc(CACHE_LINE, POOL_RING * sizeof *P->ring);
  for (k = 0; k < POOL_RING; k++) {
    atomic_init(&P->ring[k].seq, k);
    P->ring[k].t = NULL;
  }
  PS = calloc(1, sizeof *PS);
  PS->p = P;
  PS->n = 1;
  PS->kill_grace = 0.5;
  PS->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  PS->procs = calloc(1, sizeof *PS->procs);
  pthread_mutex_init(&PS->lock, NULL);
  pthread_mutex_init(&PS->claim_lock, NULL);
  P->procs = PS;
  pr = &PS->procs[0];
  pr->w = P->slots[0];
  pr->shfd = -1;
  pr->sh = calloc(1, sizeof *pr->sh);
  if (!P->slots[0] || !P->ring || PS->efd < 0 || !PS->procs || !pr->sh) abort();
  return 0;
}

/* A task as submit_encoded makes one (its message is never sent here). */
static task *task_new(int named) {
  task *t = calloc(1, sizeof *t);
  future *f = future_new(H, P);
  if (t == NULL || f == NULL) abort();
  if (named) future_meta_init(f, "fuzz", NULL);
  pool_ref(P);
  t->f = f;
  t->pool = P;
  t->timeout = 1.5;
  t->attempt = 1;
  return t;
}

/* Decodes what the future holds, as its owner would, then drops it. */
static int look_at(lua_State *L) {
  future *f = lua_touserdata(L, 1);
  lua_settop(L, 0);
  if (future_state(f) == FS_FINISHED && f->data)
    wire_decode_tuple(L, f->data, f->len, 0, 0);
  else if (future_state(f) != FS_PENDING && future_state(f) != FS_RUNNING)
    future_push_error(L, f);
  return 0;
}

static void settle_and_drop(future *f) {
  lua_pushcfunction(L, look_at);
  lua_pushlightuserdata(L, f);
  lua_pcall(L, 1, 0, 0);
  lua_settop(L, 0);
  f->observed = 1;
  future_unref(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  proc *pr = &PS->procs[0];
  future *fs[FRAME_PIPE_MAX];
  size_t nsent, k, nf = 0;
  int flags, sv[2], status;
  uint32_t base;
  unsigned claims;
  task *t;
  double now = weft_now();
  if (size < 9) return 0;
  nsent = data[0] % (FRAME_PIPE_MAX + 1);
  flags = data[1];
  base = (uint32_t)frame_get(data + 2, 4);
  claims = (unsigned)frame_get(data + 6, 2);
  status = data[8] >= 128 ? (data[8] & 31) : data[8] << 8;   /* as waitpid says */
  data += 9;
  size -= 9;

  /* The worker's side: a socket holding what it wrote, then closed. */
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  {
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  }
  while (size > 0) {
    ssize_t n = send(sv[1], data, size, MSG_NOSIGNAL);
    if (n <= 0) break;   /* (the socket is full: the rest is cut) */
    data += n;
    size -= (size_t)n;
  }
  close(sv[1]);

  /* The supervisor's side, as after spawning and dispatching. */
  memset(pr->sh, 0, sizeof *pr->sh);
  buf_free(&pr->in);
  buf_free(&pr->out);
  pr->in_off = pr->out_off = 0;   /* (as proc_spawn: a malformed frame leaves them) */
  pr->fd = sv[0];
  pr->pidfd = -1;
  atomic_store(&pr->pid, 0);   /* (proc_kill signals only pids > 0) */
  pr->state = PROC_READY;
  pr->ready = flags & 1;
  pr->eof = pr->bad = pr->retiring = pr->exiting = 0;
  pr->recalling = (flags & 2) != 0;
  pr->stop = (flags & 12) == 4 ? WK_TIMEOUT : (flags & 12) == 8 ? WK_CANCELLED : 0;
  pr->kill_at = pr->spawn_at = 0;
  pr->served = pr->answered = 0;
  pr->why[0] = '\0';
  pr->first = base % FRAME_PIPE_MAX;
  pr->nsent = 0;
  pr->next_id = base;
  pr->head_since = now;
  atomic_store(&PS->abort, (flags & 16) != 0);
  PS->avg = 0;
  PS->start_failures = PS->barren = 0;
  PS->broken[0] = '\0';
  for (k = 0; k < nsent; k++) {
    uint32_t id = pr->next_id;
    int c = (claims >> (2 * (k % 8))) & 3;
    t = task_new(flags & 32);
    fs[nf++] = t->f;
    future_ref(t->f);   /* the owner's reference, for look_at */
    atomic_store(claim_of(pr, id), c ? CLAIM(id, c) : CLAIM(id + 1, CLAIM_STARTED));
    t->f->claim_id = id;
    atomic_store(&t->f->claim, claim_of(pr, id));
    if (c == CLAIM_STARTED) future_start(t->f);
    if (c == CLAIM_CANCELLED && (flags & 64)) future_settle(t->f, FS_CANCELLED, NULL, 0, NULL);
    pr->sent[(pr->first + pr->nsent) % FRAME_PIPE_MAX] = t;
    pr->nsent++;
    pr->next_id++;
  }

  proc_read(PS, pr, now, 1);
  proc_reaped(PS, pr, status, now);   /* closes the socket */

  /* What went back to the queue, then the owner's look at each future. */
  while ((t = pool_poll(P)) != NULL) pool_task_done(P, t);
  for (k = 0; k < nf; k++) settle_and_drop(fs[k]);
  pthread_mutex_lock(&P->lock);
  while (P->failed) {
    flink *l = P->failed;
    P->failed = l->next;
    future_unref(l->f);
    free(l);
  }
  P->nfailed = 0;
  while (P->nfree > 0) free(P->free_tasks[--P->nfree]);
  pthread_mutex_unlock(&P->lock);
  pthread_mutex_lock(&H->lock);
  {
    long dropped;
    log_record *r = log_take_locked(H, &dropped);
    pthread_mutex_unlock(&H->lock);
    while (r) {
      log_record *next = r->next;
      log_record_free(r);
      r = next;
    }
  }
  {
    uint64_t v;
    while (read(PS->efd, &v, sizeof v) > 0) {}
    atomic_store(&PS->wake_pending, 0);
  }
  lua_reset(L);
  return 0;
}
