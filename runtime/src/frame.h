/*
 * frame.h -- the frames a process pool and its worker processes exchange
 * over the worker's socket (fd 3 in the worker), and little-endian helpers.
 *
 *   frame := size:u32 type:u8 body      (size counts type and body)
 *   str   := len:u32 bytes
 *
 *   pool -> worker
 *     HELLO   version:u8 index:u32 path:str cpath:str init:str
 *             (init: an encoded init call, or empty)
 *     TASK    id:u32 first:u8 level:u8 name:str ndeps:u32 dep:str* message:rest
 *             (first: 1 on a task's first attempt; level: the submitting
 *             state's weft.log level; dep: the encoded results of the
 *             task's i-th dependency)
 *     RECALL  (give back the tasks not started yet)
 *   worker -> pool
 *     READY   (the worker's state is open and init has run)
 *     DONE    id:u32 state:u8 outcome:rest    (FS_FINISHED or FS_FAILED)
 *     STOPPED id:u32                          (a SIGTERM stopped the task)
 *     SKIPPED id:u32                          (it was cancelled: not run)
 *     RECALLED n:u32 id:u32*n                 (the tasks given back, oldest
 *                                              first: the newest ones sent)
 *     LOG     id:u32 level:u8 usec:u32*2 message:rest
 *             (a weft.log record of the running task; usec: microseconds
 *             since the epoch, low word first)
 *
 * A worker runs its tasks in the order they came and answers each before it
 * starts the next, so the oldest unanswered task is the one it runs (a
 * thread of the worker reads the socket meanwhile, so RECALL is heard while
 * a task runs).  The
 * pool stops a task by sending SIGTERM with sigqueue; the value names the
 * task (FRAME_ID_MASK bits of its id) and FRAME_STOP_EXIT asks the worker
 * to exit once the task has unwound.  Everything a worker sends is checked:
 * a malformed frame gets the worker killed.
 *
 * Claims.  The pool and the worker also share a page (frame_shared, a
 * memfd on the worker's fd 4) with one claim word per task sent: the pool
 * sets it QUEUED before sending; the worker turns it STARTED with a CAS
 * before it runs the task, and the owner turns it CANCELLED with a CAS to
 * cancel a task that waits in the worker's socket.  Whoever wins decides,
 * so a task handed to a worker stays pending (and cancellable) until it
 * really starts, and no cancelled task ever runs.
 */
#ifndef WEFT_FRAME_H
#define WEFT_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define FRAME_VERSION 3
#define FRAME_MAX (1u << 30)           /* larger frames are refused */
#define FRAME_HEAD 5                   /* size:u32 type:u8 */
#define FRAME_ID_MASK 0x3fffffff
#define FRAME_STOP_EXIT 0x40000000

enum {
  FRAME_HELLO = 1, FRAME_TASK, FRAME_RECALL,
  FRAME_READY, FRAME_DONE, FRAME_STOPPED, FRAME_RECALLED, FRAME_SKIPPED, FRAME_LOG
};

#define FRAME_PIPE_MAX 64              /* tasks a worker may hold */
#define FRAME_SHARED_FD 4

enum { CLAIM_QUEUED = 1, CLAIM_STARTED = 2, CLAIM_CANCELLED = 3 };
#define CLAIM(id, state) ((((uint32_t)(id) & FRAME_ID_MASK) << 2) | (uint32_t)(state))

typedef struct frame_shared {
  atomic_uint busy;                    /* the worker runs a task now */
  atomic_ulong started;                /* first attempts it started (all
                                          processes of this pool slot) */
  atomic_uint claim[FRAME_PIPE_MAX];   /* task id % FRAME_PIPE_MAX */
  /* When the worker claimed each task, written before the claim (so
   * whoever sees STARTED sees it): weft_now(), CLOCK_MONOTONIC, the same
   * clock in both processes. */
  _Atomic double began[FRAME_PIPE_MAX];
  atomic_int pid;                      /* the slot's process (the pool's write) */
} frame_shared;

static inline void frame_put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

static inline uint64_t frame_get(const unsigned char *p, int n) {
  uint64_t v = 0;
  int i;
  for (i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static inline int buf_put_u32(buf *b, uint32_t v) {
  unsigned char c[4];
  frame_put_u32(c, v);
  return buf_put(b, c, 4);
}

static inline int buf_put_str(buf *b, const char *s, size_t len) {
  return buf_put_u32(b, (uint32_t)len) || buf_put(b, s, len);
}

/* Starts a frame of `type` in b; returns the offset to pass to frame_end,
 * or (size_t)-1 when out of memory. */
static inline size_t frame_begin(buf *b, int type) {
  size_t at = b->len;
  unsigned char head[FRAME_HEAD] = {0, 0, 0, 0, (unsigned char)type};
  return buf_put(b, head, FRAME_HEAD) ? (size_t)-1 : at;
}

/* Fills in the size of the frame begun at `at`; -1 if it is too large. */
static inline int frame_end(buf *b, size_t at) {
  size_t size = b->len - at - 4;
  if (size > FRAME_MAX) return -1;
  frame_put_u32((unsigned char *)b->data + at, (uint32_t)size);
  return 0;
}

/* The frame at the start of `have` bytes at p: 1 when it is whole (its
 * type, body and body length, and *size the bytes it takes), 0 when more
 * bytes are needed, -1 when its size is impossible. */
static inline int frame_parse(const unsigned char *p, size_t have, int *type,
                              const unsigned char **body, size_t *len, size_t *size) {
  size_t n;
  if (have < 4) return 0;
  n = (size_t)frame_get(p, 4);
  if (n < 1 || n > FRAME_MAX) return -1;
  if (have < 4 + n) return 0;
  *type = p[4];
  *body = p + 5;
  *len = n - 1;
  *size = 4 + n;
  return 1;
}

/* A reader over a frame's body: every get checks the bounds first. */
typedef struct frame_reader {
  const unsigned char *p, *end;
  int bad;
} frame_reader;

static inline uint32_t frame_u32(frame_reader *r) {
  uint32_t v;
  if (r->end - r->p < 4) { r->bad = 1; return 0; }
  v = (uint32_t)frame_get(r->p, 4);
  r->p += 4;
  return v;
}

static inline int frame_u8(frame_reader *r) {
  if (r->p >= r->end) { r->bad = 1; return 0; }
  return *r->p++;
}

static inline const char *frame_str(frame_reader *r, size_t *len) {
  const char *s;
  *len = frame_u32(r);
  if (r->bad || (size_t)(r->end - r->p) < *len) { r->bad = 1; *len = 0; return ""; }
  s = (const char *)r->p;
  r->p += *len;
  return s;
}

#endif
