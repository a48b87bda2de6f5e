/*
 * child.c -- one call in a fresh child process (weft.timeout.process).
 */
#include "child.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "deadline.h"
#include "frame.h"
#include "future.h"
#include "run.h"
#include "stop.h"
#include "wire.h"

extern char **environ;

#define CHILD_FD 3

/* === finding the worker program ========================================== */

static int executable(const char *path) { return path[0] && access(path, X_OK) == 0; }

/* `dir` of `file` + "/weft-worker" into out. */
static void sibling(char *out, size_t size, const char *file) {
  const char *slash = strrchr(file, '/');
  int dirlen = slash ? (int)(slash - file) : 1;
  snprintf(out, size, "%.*s/weft-worker", dirlen, slash ? file : ".");
}

/* The host's default (weft_set_worker_path), or NULL. */
static _Atomic(char *) host_default;

/* Set by a host at start-up, before it makes any pool. */
void child_set_worker_path(const char *path) {
  free(atomic_exchange(&host_default, path ? strdup(path) : NULL));
}

const char *child_worker_path(char *looked, size_t size) {
  static __thread char path[PATH_MAX];
  const char *env = getenv("WEFT_WORKER"), *dflt = atomic_load(&host_default);
  Dl_info info;
  if (looked && size) looked[0] = '\0';
  if (env && env[0]) {
    snprintf(path, sizeof path, "%s", env);
    if (executable(path)) return path;
    if (looked) snprintf(looked, size, "%s (from WEFT_WORKER)", env);
    return NULL;
  }
  if (dflt) {
    snprintf(path, sizeof path, "%s", dflt);
    if (executable(path)) return path;
    if (looked) snprintf(looked, size, "%s (from weft_set_worker_path)", dflt);
    return NULL;
  }
  /* Beside the file that holds this code: weft/core.so in a Lua module
   * tree, or the program that links weft in. */
  if (dladdr((void *)child_call, &info) && info.dli_fname && strstr(info.dli_fname, ".so")) {
    sibling(path, sizeof path, info.dli_fname);
  } else {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    sibling(path, sizeof path, exe);
  }
  if (executable(path)) return path;
  if (looked) snprintf(looked, size, "%s", path);
#ifdef WEFT_LIBDIR
  {
    size_t used = looked ? strlen(looked) : 0;
    snprintf(path, sizeof path, "%s/weft/weft-worker", WEFT_LIBDIR);
    if (executable(path)) return path;
    if (looked && used + 2 < size) snprintf(looked + used, size - used, ", %s", path);
  }
#endif
  return NULL;
}

/* === the parent's side =================================================== */

/* Waits until fd is ready for `events` or the deadline: 1 ready, 0 the
 * deadline passed, -1 a signal arrived. */
static int wait_fd(int fd, short events, double deadline) {
  struct pollfd p = {fd, events, 0};
  struct timespec ts;
  double left = deadline - weft_now();
  int r;
  if (left <= 0) return 0;
  if (left > 1e9) left = 1e9;   /* a huge timeout: (time_t) would overflow */
  ts.tv_sec = (time_t)left;
  ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
  r = ppoll(&p, 1, &ts, NULL);
  if (r > 0) return 1;
  if (r == 0) return 0;
  return errno == EINTR ? -1 : 1;   /* an error shows on the next read/write */
}

static void put_u64(buf *b, uint64_t v) {
  buf_put_u32(b, (uint32_t)v);
  buf_put_u32(b, (uint32_t)(v >> 32));
}

#define get_u frame_get

/* Moves *fd out of the way of child_spawn's dup2s when it sits on one of
 * their targets (onto itself, a dup2 would keep close-on-exec; onto the
 * other's target, it would clobber it).  *moved is the copy to close
 * after the spawn, or -1.  0 or an errno. */
static int out_of_the_way(int *fd, int *moved) {
  *moved = -1;
  if (*fd != CHILD_FD && *fd != FRAME_SHARED_FD) return 0;
  if ((*moved = fcntl(*fd, F_DUPFD_CLOEXEC, 10)) < 0) return errno;
  *fd = *moved;
  return 0;
}

int child_spawn(const char *path, const char *mode, int fd, int shared_fd, pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none, dfl;
  char *argv[3];
  int rc, moved, moved_shared = -1;
  if ((rc = out_of_the_way(&fd, &moved)) != 0 ||
      (rc = out_of_the_way(&shared_fd, &moved_shared)) != 0) {
    if (moved >= 0) close(moved);
    return rc;
  }
  argv[0] = (char *)path;
  argv[1] = (char *)mode;
  argv[2] = NULL;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fd, CHILD_FD);
  if (shared_fd >= 0) posix_spawn_file_actions_adddup2(&fa, shared_fd, FRAME_SHARED_FD);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawnattr_init(&attr);
  sigemptyset(&none);
  sigemptyset(&dfl);
  sigaddset(&dfl, SIGURG);
  sigaddset(&dfl, SIGALRM);
  sigaddset(&dfl, SIGTERM);
  sigaddset(&dfl, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &dfl);
  /* Its own process group: Ctrl-C in a terminal goes to the parent, which
   * decides what becomes of the tasks, not straight to every worker. */
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
  rc = posix_spawn(pid, path, &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (moved >= 0) close(moved);
  if (moved_shared >= 0) close(moved_shared);
  return rc;
}

/* === process groups ====================================================== */

void child_kill_group(pid_t pid) {
  /* The group's id is the worker's pid (child_spawn); a worker that left
   * its group (a foreign worker program) is still killed itself. */
  if (pid <= 0) return;
  if (kill(-pid, SIGKILL) != 0) kill(pid, SIGKILL);
}

void child_end_group(pid_t pid) {
  siginfo_t si;
  int r;
  if (pid <= 0) return;
  si.si_pid = 0;
  while ((r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT | WNOHANG)) < 0 && errno == EINTR) {}
  /* Only while it is a zombie: its pid cannot be reused, so the group
   * named after it is still its own. */
  if (r == 0 && si.si_pid == pid) kill(-pid, SIGKILL);
}

/* The process group of process `pid` from /proc/pid/stat ("pid (comm) S
 * ppid pgrp ..."; comm may hold anything, so after its last ')'); -1 when
 * it is gone or a zombie (nothing left to kill). */
static pid_t group_of(pid_t pid) {
  char path[64], text[512], state;
  const char *close_paren;
  long ppid, pgrp;
  ssize_t n;
  int fd;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) return -1;
  n = read(fd, text, sizeof text - 1);
  close(fd);
  if (n <= 0) return -1;
  text[n] = '\0';
  if ((close_paren = strrchr(text, ')')) == NULL ||
      sscanf(close_paren + 1, " %c %ld %ld", &state, &ppid, &pgrp) != 3 || state == 'Z')
    return -1;
  return (pid_t)pgrp;
}

int child_sweep_group(void) {
  pid_t me = getpid();
  int killed = 0, round;
  if (getpgrp() != me) return 0;   /* not a group of our own: nothing is ours alone */
  /* Rounds: a member may be forking while we look; its child joins the
   * group, so a round that finds nobody is the last. */
  for (round = 0; round < 16; round++) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int found = 0;
    if (d == NULL) break;
    while ((e = readdir(d)) != NULL) {
      pid_t pid;
      if (!isdigit((unsigned char)e->d_name[0])) continue;
      pid = (pid_t)strtol(e->d_name, NULL, 10);
      if (pid != me && group_of(pid) == me && kill(pid, SIGKILL) == 0) found++;
    }
    closedir(d);
    killed += found;
    if (found == 0) break;
  }
  return killed;
}

/* The parent died (PR_SET_PDEATHSIG): whatever the worker started goes
 * with it (kill is async-signal-safe; SIGKILL ends us too). */
static void on_parent_death(int sig) {
  (void)sig;
  if (getpgrp() == getpid()) kill(0, SIGKILL);
  _exit(1);
}

int child_die_with_parent(void) {
  struct sigaction sa;
  pid_t parent = getppid();
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_parent_death;
  sigemptyset(&sa.sa_mask);
  if (sigaction(CHILD_DEATH_SIGNAL, &sa, NULL) != 0 ||
      prctl(PR_SET_PDEATHSIG, CHILD_DEATH_SIGNAL) != 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);   /* at least the worker itself */
  }
  /* Gone before the prctl: no signal will come. */
  return parent == 1 || getppid() != parent ? -1 : 0;
}

static void reap(pid_t pid, int *status, int kill_it) {
  siginfo_t si;
  if (kill_it) child_kill_group(pid);
  /* Exited (a zombie until we reap it): what it started goes too. */
  while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {}
  child_end_group(pid);
  while (waitpid(pid, status, 0) < 0 && errno == EINTR) {}
}

void child_describe_exit(char *out, size_t size, int status) {
  if (WIFSIGNALED(status)) {
    const char *abbrev = sigabbrev_np(WTERMSIG(status));
    snprintf(out, size, "was killed by signal %d (SIG%s)", WTERMSIG(status),
             abbrev ? abbrev : "?");
  } else if (WIFEXITED(status)) {
    snprintf(out, size, "exited with status %d", WEXITSTATUS(status));
  } else {
    snprintf(out, size, "ended (wait status %d)", status);
  }
}

enum { CHILD_OK, CHILD_TIMEOUT, CHILD_INTERRUPTED, CHILD_DIED };

static int interrupted(lua_State *L, const home_watch *w) {
  return stop_pending() || lua_gethook(L) != w->hook || lua_gethookmask(L) != w->mask;
}

/* Sends the request and reads the answer until the child closes its end.
 * Raises nothing: the child is reaped before anything can raise. */
static int converse(int fd, pid_t pid, const buf *req, buf *ans, double deadline,
                    lua_State *L, const home_watch *watch, int *status) {
  size_t sent = 0;
  int r;
  while (sent < req->len) {
    ssize_t n;
    if ((r = wait_fd(fd, POLLOUT, deadline)) == 0) goto timeout;
    if (r < 0) {
      if (interrupted(L, watch)) goto interrupt;
      continue;
    }
    n = send(fd, req->data + sent, req->len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) sent += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR) break;   /* it died */
  }
  shutdown(fd, SHUT_WR);
  for (;;) {
    ssize_t n;
    if ((r = wait_fd(fd, POLLIN, deadline)) == 0) goto timeout;
    if (r < 0) {
      if (interrupted(L, watch)) goto interrupt;
      continue;
    }
    if (buf_reserve(ans, 65536)) break;
    n = recv(fd, ans->data + ans->len, 65536, MSG_DONTWAIT);
    if (n > 0) ans->len += (size_t)n;
    else if (n == 0 || (errno != EAGAIN && errno != EINTR)) break;
  }
  reap(pid, status, 0);
  return CHILD_OK;
interrupt:
  reap(pid, status, 1);
  return CHILD_INTERRUPTED;
timeout:
  reap(pid, status, 1);
  return CHILD_TIMEOUT;
}

/* Raises the error of a failed call: fn's own error value when it was a
 * task error that could be copied, else the record as a weft.Error. */
static int raise_record(lua_State *L, const char *data, size_t len) {
  if (wire_decode_tuple(L, data, len, 0, 1) != 1 || !lua_istable(L, -1))
    return weft_error(L, WK_SERIALIZATION, "the child's error cannot be decoded");
  int rec = lua_gettop(L);
  lua_getfield(L, rec, "kind");
  if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "task") == 0 &&
      lua_getfield(L, rec, "value") != LUA_TNIL)
    return lua_error(L);
  lua_settop(L, rec);
  weft_bless_error(L);
  return lua_error(L);
}

int child_call(lua_State *L, double seconds, const char *what) {
  double deadline = weft_now() + (seconds > 1e9 ? 1e9 : seconds);
  int n = lua_gettop(L), i, sv[2], rc, status = 0;
  char looked[2 * PATH_MAX + 64], how[96];
  const char *path, *cpath, *worker;
  buf req = BUF_INIT, ans = BUF_INIT;
  wire_enc e;
  home_watch watch;
  pid_t pid;
  size_t plen, clen;
  /* The call, with its bytecode: nothing in it points into this process. */
  wire_enc_init(&e, L, 1, 0);
  if (wire_put_byte(&e, RUN_CALL) || wire_put_size(&e, (size_t)(n - 1)) ||
      wire_put(&e, 2, "function", 0)) {
    lua_pushfstring(L, "%s: %s", what, wire_error(&e));
    wire_enc_free(&e);
    return weft_error(L, WK_SERIALIZATION, "%s", lua_tostring(L, -1));
  }
  for (i = 3; i <= n; i++) {
    if (wire_put(&e, i, "argument", i - 2)) {
      lua_pushfstring(L, "%s: %s", what, wire_error(&e));
      wire_enc_free(&e);
      return weft_error(L, WK_SERIALIZATION, "%s", lua_tostring(L, -1));
    }
  }
  if ((worker = child_worker_path(looked, sizeof looked)) == NULL) {
    wire_enc_free(&e);
    return weft_error(L, WK_CONFIG,
                      "%s: cannot find the weft-worker program (looked for %s); "
                      "set WEFT_WORKER to its path",
                      what, looked);
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_getfield(L, -2, "cpath");
  path = lua_tolstring(L, -2, &plen);
  cpath = lua_tolstring(L, -1, &clen);
  if (!path) { path = ""; plen = 0; }
  if (!cpath) { cpath = ""; clen = 0; }
  buf_put_str(&req, path, plen);
  buf_put_str(&req, cpath, clen);
  put_u64(&req, e.out.len);
  if (buf_put(&req, e.out.data, e.out.len)) {
    size_t need = e.out.len;
    wire_enc_free(&e);
    buf_free(&req);
    return weft_error(L, WK_MEMORY, "%s: out of memory for the call's message (%I bytes)", what,
                      (lua_Integer)need);
  }
  wire_enc_free(&e);
  lua_pop(L, 3);
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    buf_free(&req);
    return luaL_error(L, "%s: socketpair: %s", what, strerror(errno));
  }
  rc = child_spawn(worker, "--oneshot", sv[1], -1, &pid);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    buf_free(&req);
    return weft_error(L, WK_CONFIG, "%s: cannot start %s: %s", what, worker, strerror(rc));
  }
  home_watch_init(L, &watch);
  rc = converse(sv[0], pid, &req, &ans, deadline, L, &watch, &status);
  close(sv[0]);
  buf_free(&req);
  /* The child is gone; from here on raising is safe. */
  if (rc == CHILD_INTERRUPTED) {
    buf_free(&ans);
    stop_check(L);
    home_deliver_interrupt(L, &watch);
    return weft_error(L, WK_CANCELLED, "%s: interrupted", what);
  }
  if (rc == CHILD_TIMEOUT) {
    buf_free(&ans);
    return weft_error(L, WK_TIMEOUT, "%s: the function did not finish within %f s "
                      "(its process was killed)", what, seconds);
  }
  if (ans.len < 9 || get_u((unsigned char *)ans.data + 1, 8) != ans.len - 9 ||
      (ans.data[0] != FS_FINISHED && ans.data[0] != FS_FAILED)) {
    buf_free(&ans);
    child_describe_exit(how, sizeof how, status);
    return weft_error(L, WK_WORKER_DIED, "%s: the child process %s before it returned",
                      what, how);
  }
  lua_settop(L, 0);
  if (ans.data[0] == FS_FAILED) {
    lua_pushlstring(L, ans.data + 9, ans.len - 9);
    buf_free(&ans);
    return raise_record(L, lua_tostring(L, 1), lua_rawlen(L, 1));
  }
  lua_pushlstring(L, ans.data + 9, ans.len - 9);
  buf_free(&ans);
  n = wire_decode_tuple(L, lua_tostring(L, 1), lua_rawlen(L, 1), 0, 0);
  if (n < 0)
    return weft_error(L, WK_SERIALIZATION, "%s: cannot decode the results: %s", what,
                      lua_tostring(L, -1));
  return n;
}

/* === the child's side ==================================================== */

static int read_all(int fd, buf *b) {
  for (;;) {
    ssize_t n;
    if (buf_reserve(b, 65536)) return -1;
    n = read(fd, b->data + b->len, 65536);
    if (n > 0) b->len += (size_t)n;
    else if (n == 0) return 0;
    else if (errno != EINTR) return -1;
  }
}

static int write_all(int fd, const void *p, size_t len) {
  const char *c = p;
  while (len > 0) {
    ssize_t n = write(fd, c, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    c += n;
    len -= (size_t)n;
  }
  return 0;
}

int child_serve_oneshot(int fd, int (*open_core)(lua_State *L)) {
  buf in = BUF_INIT, head = BUF_INIT;
  const unsigned char *p, *end;
  size_t plen, clen, mlen;
  run_outcome out;
  lua_State *L;
  /* Die with the parent; programs this task starts must not keep fd open. */
  if (child_die_with_parent() != 0) return 1;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  if (read_all(fd, &in) != 0) return 1;
  p = (const unsigned char *)in.data;
  end = p + in.len;
  if (end - p < 4 || (plen = get_u(p, 4)) > (size_t)(end - p - 4)) return 1;
  const char *path = (const char *)p + 4;
  p += 4 + plen;
  if (end - p < 4 || (clen = get_u(p, 4)) > (size_t)(end - p - 4)) return 1;
  const char *cpath = (const char *)p + 4;
  p += 4 + clen;
  if (end - p < 8 || (mlen = get_u(p, 8)) != (size_t)(end - p - 8)) return 1;
  p += 8;
  if ((L = luaL_newstate()) == NULL) return 1;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushlstring(L, path, plen);
  lua_setfield(L, -2, "path");
  lua_pushlstring(L, cpath, clen);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  luaL_requiref(L, "weft.core", open_core, 0);
  lua_pop(L, 1);
  run_message(L, (const char *)p, mlen, NULL, 0, NULL, 0, &out);
  buf_putc(&head, out.state);
  put_u64(&head, out.len);
  fflush(NULL);   /* what the task printed goes out before we do */
  if (write_all(fd, head.data, head.len) || write_all(fd, out.data, out.len)) return 1;
  return 0;
}
