/*
 * buf.h -- a growable byte buffer (buf_*), used by the wire encoder and by
 * anything that builds a message.  Allocation failure is reported, never
 * ignored: every append returns 0 on success and -1 when memory ran out, and
 * the buffer then stays valid (its old contents intact) so the caller can
 * report the error and free it.
 */
#ifndef WEFT_BUF_H
#define WEFT_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
  char *data;
  size_t len;
  size_t cap;
} buf;

#define BUF_INIT {NULL, 0, 0}

static inline int buf__grow(buf *b, size_t need) {
  size_t cap = b->cap ? b->cap : 64;
  char *p;
  if (need > SIZE_MAX - b->len) return -1;
  while (cap < b->len + need) {
    if (cap > SIZE_MAX / 2) return -1;
    cap *= 2;
  }
  p = realloc(b->data, cap);
  if (p == NULL) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

/* Makes room for `need` more bytes; returns 0 or -1 (out of memory). */
static inline int buf_reserve(buf *b, size_t need) {
  if (b->cap - b->len >= need) return 0;
  return buf__grow(b, need);
}

static inline int buf_put(buf *b, const void *p, size_t n) {
  if (n == 0) return 0;   /* p and b->data may be NULL: memcpy may not take it */
  if (buf_reserve(b, n)) return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static inline int buf_putc(buf *b, int c) {
  if (buf_reserve(b, 1)) return -1;
  b->data[b->len++] = (char)c;
  return 0;
}

/* Unsigned LEB128: 7 bits a byte, low first, high bit set = more follows. */
static inline int buf_putvar(buf *b, uint64_t v) {
  if (buf_reserve(b, 10)) return -1;
  while (v >= 0x80) {
    b->data[b->len++] = (char)(v | 0x80);
    v >>= 7;
  }
  b->data[b->len++] = (char)v;
  return 0;
}

static inline void buf_free(buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Hands the bytes over to the caller (who frees them) and empties `b`. */
static inline char *buf_steal(buf *b, size_t *len) {
  char *p = b->data;
  *len = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return p;
}

#endif
