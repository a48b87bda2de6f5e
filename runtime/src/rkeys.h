/*
 * rkeys.h -- the names the Redis executor uses on the server, shared by
 * the client (rclient.c) and the workers (rworker.c).  For queue q:
 *
 *   weft:q:tasks            the task stream, read by consumer group "weft"
 *   weft:q:dead             dead letters: refused entries, and tasks whose
 *                           workers died max_deliveries times
 *   weft:q:result:<task>    a task's result, written once, with a TTL
 *   weft:q:client:<client>  a client's result list (it blocks on it)
 *   weft:q:kill             kill marks: task id -> 1 (forced cancels)
 *   weft:q:workers          live workers: consumer -> expiry (wallclock)
 *   weft:q:seen:<nonce>     the stream entry a task (by its nonce, hex) was
 *                           first taken from, kept until a while after the
 *                           task's message expires: a copy of the task
 *                           under another entry id is a replay
 */
#ifndef WEFT_RKEYS_H
#define WEFT_RKEYS_H

#include <stdio.h>
#include <string.h>
#include <time.h>

#define RKEYS_GROUP "weft"
#define RKEYS_QUEUE_MAX 100

typedef struct rkeys {
  char queue[RKEYS_QUEUE_MAX + 1];
  char stream[128], dead[128], result[128], kill[128], workers[128], seen[128];
  char reply[160];
} rkeys;

/* 0, or -1 with a message when the queue name is not usable. */
static inline int rkeys_init(rkeys *k, const char *queue, char *err, size_t errlen) {
  size_t i, n = strlen(queue);
  if (n == 0 || n > RKEYS_QUEUE_MAX) {
    snprintf(err, errlen, "the queue name must be 1 to %d characters, got %zu", RKEYS_QUEUE_MAX, n);
    return -1;
  }
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)queue[i];
    if (c <= ' ' || c >= 127) {
      snprintf(err, errlen, "the queue name %s has a space or control character", queue);
      return -1;
    }
  }
  snprintf(k->queue, sizeof k->queue, "%s", queue);
  snprintf(k->stream, sizeof k->stream, "weft:%s:tasks", queue);
  snprintf(k->dead, sizeof k->dead, "weft:%s:dead", queue);
  snprintf(k->result, sizeof k->result, "weft:%s:result:", queue);
  snprintf(k->kill, sizeof k->kill, "weft:%s:kill", queue);
  snprintf(k->workers, sizeof k->workers, "weft:%s:workers", queue);
  snprintf(k->seen, sizeof k->seen, "weft:%s:seen:", queue);
  k->reply[0] = '\0';
  return 0;
}

static inline void rkeys_reply(rkeys *k, const char *client) {
  snprintf(k->reply, sizeof k->reply, "weft:%s:client:%s", k->queue, client);
}

/* Seconds since the epoch (worker registrations are kept in wall time:
 * clients on other machines read them). */
static inline double rkeys_wallclock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
