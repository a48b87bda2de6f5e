/*
 * log.c -- weft.log's records: made anywhere, delivered in the submitting
 * state.  See log.h for the design.
 */
#include "log.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static const char SINK = 's';        /* registry: the state's sink, or nil */

static __thread log_task *running;   /* the calling thread's task */

log_task *log_enter(log_task *lt) {
  log_task *prev = running;
  running = lt;
  return prev;
}

void log_leave(log_task *prev) { running = prev; }

/* === levels ============================================================== */

static const struct {
  const char *name, *label;   /* label: as the default line shows it */
  int level;
} levels[] = {{"debug", "DEBUG", LOG_DEBUG}, {"info", "INFO", LOG_INFO},
              {"warn", "WARN", LOG_WARN}, {"error", "ERROR", LOG_ERROR}};

#define NLEVELS (sizeof levels / sizeof levels[0])

static int level_index(int level) {
  int i;
  for (i = 0; i < (int)NLEVELS - 1 && levels[i].level < level; i++) {}
  return i;
}

static const char *level_name(int level) { return levels[level_index(level)].name; }

/* 0 for a name that is not a level. */
static int level_of(const char *name) {
  size_t i;
  for (i = 0; name && i < NLEVELS; i++)
    if (strcasecmp(levels[i].name, name) == 0) return levels[i].level;
  return 0;
}

int log_default_level(void) {
  int level = level_of(getenv("WEFT_LOG_LEVEL"));
  return level ? level : LOG_INFO;
}

/* === records ============================================================= */

static double epoch_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A record with `extra` more bytes after its message (for a label). */
static log_record *record_make(int level, double time, const char *msg, size_t len,
                               size_t extra) {
  log_record *r = malloc(sizeof *r + len + 1 + extra);
  if (r == NULL) return NULL;
  memset(r, 0, sizeof *r);
  r->level = level;
  r->time = time;
  r->len = len;
  memcpy(r->message, msg, len);
  r->message[len] = '\0';
  return r;
}

log_record *log_record_new(int level, double time, const char *msg, size_t len) {
  return record_make(level, time, msg, len, 0);
}

log_record *log_record_remote(int level, double time, const char *msg, size_t len,
                              const char *worker, size_t wlen) {
  log_record *r = record_make(level, time, msg, len, wlen + 1);
  char *label;
  if (r == NULL) return NULL;
  label = r->message + len + 1;
  memcpy(label, worker, wlen);
  label[wlen] = '\0';
  r->worker = label;
  return r;
}

void log_record_free(log_record *r) {
  if (r->f) future_unref(r->f);
  free(r);
}

/* The worker a record names, as f:info() does. */
static void record_worker(const log_record *r, char *out, size_t size) {
  if (r->worker)
    snprintf(out, size, "%s", r->worker);
  else
    future_worker_label(r->worker_kind, r->worker_id, out, size);
}

void log_set_hook(home *h, log_hook hook, void *ctx) {
  h->log_hook = hook;
  h->log_hook_ctx = ctx;
}


/* The default line: "12:00:01 INFO  [flow/task#2 thread 1] message". */
static void write_line(const log_record *r, const char *flow, const char *task) {
  char when[16], who[300], ctx[640] = "", *line;
  time_t secs = (time_t)r->time;
  struct tm tm;
  size_t n;
  localtime_r(&secs, &tm);
  strftime(when, sizeof when, "%H:%M:%S", &tm);
  record_worker(r, who, sizeof who);
  if (flow || task || who[0]) {
    char attempt[16] = "";
    if (r->attempt > 1) snprintf(attempt, sizeof attempt, "#%d", r->attempt);
    snprintf(ctx, sizeof ctx, "[%s%s%s%s%s%s] ", flow ? flow : "", flow && task ? "/" : "",
             task ? task : "", attempt, (flow || task) && who[0] ? " " : "", who);
  }
  n = strlen(when) + strlen(ctx) + r->len + 16;
  if ((line = malloc(n)) == NULL) return;
  snprintf(line, n, "%s %-5s %s%s\n", when, levels[level_index(r->level)].label, ctx,
           r->message);
  fputs(line, stderr);
  free(line);
}

/* Delivers r in L: through the sink, or as a line on stderr. */
static void deliver(lua_State *L, const log_record *r) {
  const char *flow = r->f && r->f->meta ? r->f->meta->flow : NULL;
  const char *task = r->f ? future_name(r->f) : NULL;
  char who[300];
  int top = lua_gettop(L), status;
  if (r->level < atomic_load(&home_of(L)->log_level)) return;
  if (!r->f) flow = home_of(L)->flow;   /* made here: the flow running now */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &SINK) != LUA_TFUNCTION) {
    lua_settop(L, top);
    write_line(r, flow, task);
    return;
  }
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, r->time);
  lua_setfield(L, -2, "time");
  lua_pushstring(L, level_name(r->level));
  lua_setfield(L, -2, "level");
  lua_pushlstring(L, r->message, r->len);
  lua_setfield(L, -2, "message");
  if (flow) {
    lua_pushstring(L, flow);
    lua_setfield(L, -2, "flow");
  }
  if (task) {
    lua_pushstring(L, task);
    lua_setfield(L, -2, "task");
  }
  if (r->attempt > 0) {
    lua_pushinteger(L, r->attempt);
    lua_setfield(L, -2, "attempt");
  }
  record_worker(r, who, sizeof who);
  if (who[0]) {
    lua_pushstring(L, who);
    lua_setfield(L, -2, "worker");
  }
  home_of(L)->dispatching++;   /* (an interrupt waits until it returns) */
  status = lua_pcall(L, 1, 0, 0);
  home_of(L)->dispatching--;
  if (status != LUA_OK) {
    fprintf(stderr, "weft: error in the log sink (ignored): %s\n",
            lua_tostring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    write_line(r, flow, task);
  }
  lua_settop(L, top);
}

void log_here(lua_State *L, int level, const char *msg) {
  log_record *r = log_record_new(level, epoch_now(), msg, strlen(msg));
  if (r == NULL) {
    fprintf(stderr, "%s\n", msg);
    return;
  }
  deliver(L, r);
  log_record_free(r);
}

/* === queues ============================================================== */

void log_post(home *h, log_record *r) {
  pthread_mutex_lock(&h->lock);
  if (h->closed) {
    pthread_mutex_unlock(&h->lock);
    write_line(r, r->f && r->f->meta ? r->f->meta->flow : NULL, r->f ? future_name(r->f) : NULL);
    log_record_free(r);
    return;
  }
  if (h->nlogs >= LOG_QUEUE_MAX) {
    h->dropped_logs++;
    pthread_mutex_unlock(&h->lock);
    log_record_free(r);
    return;
  }
  if (h->log_tail) h->log_tail->next = r; else h->log_head = r;
  h->log_tail = r;
  h->nlogs++;
  home_post_unlock(h);
}

log_record *log_take_locked(home *h, long *dropped) {
  log_record *r = h->log_head;
  h->log_head = h->log_tail = NULL;
  h->nlogs = 0;
  *dropped = h->dropped_logs;
  h->dropped_logs = 0;
  return r;
}

void log_deliver(lua_State *L, log_record *r, long dropped) {
  home *h = home_of(L);
  while (r) {
    log_record *next = r->next;
    if (!(r->f && h->log_hook && h->log_hook(h->log_hook_ctx, r))) deliver(L, r);
    log_record_free(r);
    r = next;
  }
  if (dropped > 0) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "weft.log: %ld records from tasks were dropped (this state did not "
             "wait on its futures to take them)", dropped);
    log_here(L, LOG_WARN, msg);
  }
}

void log_flush_closed(home *h) {
  log_record *r;
  long dropped;
  pthread_mutex_lock(&h->lock);
  r = log_take_locked(h, &dropped);
  pthread_mutex_unlock(&h->lock);
  while (r) {
    log_record *next = r->next;
    if (r->level >= atomic_load(&h->log_level))
      write_line(r, r->f && r->f->meta ? r->f->meta->flow : NULL, r->f ? future_name(r->f) : NULL);
    log_record_free(r);
    r = next;
  }
}

/* === the Lua side ======================================================== */

/* core.log_emit(level, message): a record from here, wherever here is. */
static int l_log_emit(lua_State *L) {
  int level = level_of(luaL_checkstring(L, 1));
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len);
  log_task *lt = running;
  home *h = home_of(L);
  log_record *r;
  if (level == 0) return luaL_argerror(L, 1, "debug, info, warn or error expected");
  if (lt && lt->forward) {   /* a task in a worker process */
    if (level >= lt->level) lt->forward(lt, level, epoch_now(), msg, len);
    return 0;
  }
  if (lt && lt->f && level < atomic_load(&lt->f->home->log_level)) return 0;
  if (!lt && level < atomic_load(&h->log_level)) return 0;
  if ((r = log_record_new(level, epoch_now(), msg, len)) == NULL)
    return luaL_error(L, "weft: out of memory");
  if (lt) {
    r->attempt = lt->attempt;
    r->worker_kind = lt->worker_kind;
    r->worker_id = lt->worker_id;
    if (lt->f) {
      future_ref(lt->f);
      r->f = lt->f;
    }
  }
  if (lt && lt->f && lt->f->home != h) {   /* a task on a worker thread */
    log_post(lt->f->home, r);
    return 0;
  }
  deliver(L, r);
  log_record_free(r);
  return 0;
}

/* core.set_log_sink(fn | nil) */
static int l_set_log_sink(lua_State *L) {
  if (!lua_isnoneornil(L, 1) && lua_type(L, 1) != LUA_TFUNCTION)
    return weft_error(L, WK_CONFIG, "weft.log.set_sink: the sink must be a function or nil, got %s",
                      luaL_typename(L, 1));
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SINK);
  return 0;
}

/* core.set_log_level(name) */
static int l_set_log_level(lua_State *L) {
  int level;
  if (lua_type(L, 1) != LUA_TSTRING)
    return weft_error(L, WK_CONFIG, "weft.log.set_level: the level must be a string "
                      "(debug, info, warn or error), got %s", luaL_typename(L, 1));
  level = level_of(lua_tostring(L, 1));
  if (level == 0)
    return weft_error(L, WK_CONFIG, "weft.log.set_level: unknown level %s "
                      "(debug, info, warn or error)", lua_tostring(L, 1));
  atomic_store(&home_of(L)->log_level, level);
  return 0;
}

/* core.in_task() -> true while the calling thread runs a task (an inline
 * task included): a weft.task called there is a plain call, even inside a
 * flow. */
static int l_in_task(lua_State *L) {
  lua_pushboolean(L, running != NULL);
  return 1;
}

/* core.wallclock() -> seconds since the epoch (core.now() is monotonic) */
static int l_wallclock(lua_State *L) {
  lua_pushnumber(L, epoch_now());
  return 1;
}

/* core.log_level() -> name */
static int l_log_level(lua_State *L) {
  lua_pushstring(L, level_name(atomic_load(&home_of(L)->log_level)));
  return 1;
}

void log_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"log_emit", l_log_emit},
      {"set_log_sink", l_set_log_sink},
      {"set_log_level", l_set_log_level},
      {"log_level", l_log_level},
      {"wallclock", l_wallclock},
      {"in_task", l_in_task},
      {NULL, NULL},
  };
  luaL_setfuncs(L, fns, 0);
}
