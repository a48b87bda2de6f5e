/*
 * child.h -- running one call in a fresh child process (child_*): the
 * weft.timeout.process mechanism.
 *
 * The child is the weft-worker program, started with posix_spawn (an exec,
 * never a bare fork of a parent that has threads).  The call travels in the
 * wire format with its bytecode, over a socket pair on the child's fd 3:
 *
 *   parent -> child   path:u32-string cpath:u32-string message:u64-string
 *   child -> parent   state:u8 outcome:u64-string     (then it exits)
 *
 * At the deadline the child is killed with SIGKILL and reaped.
 *
 * Process groups.  Every worker process (this child, a pool's workers)
 * leads its own process group, which the programs its tasks start
 * (os.execute, io.popen) join.  Whoever kills a worker kills its group,
 * and when a worker ends its group is killed too (before the worker is
 * reaped, while its pid, the group's id, cannot be reused): nothing a
 * task started outlives its worker.  A worker whose parent dies kills
 * its group (CHILD_DEATH_SIGNAL, the PR_SET_PDEATHSIG it asks for).
 */
#ifndef WEFT_CHILD_H
#define WEFT_CHILD_H

#include <lua.h>
#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

/* Calls fn(...) (stack: seconds, fn, args...) in a child process; returns
 * its results, or raises: fn's own error, kind timeout at the deadline,
 * kind worker_died if the child died without answering. */
int child_call(lua_State *L, double seconds, const char *what);

/* The worker program's path: $WEFT_WORKER, else the host's default
 * (child_set_worker_path), else weft-worker next to the file holding this
 * code, else the installed default.  NULL if none is executable; `looked`
 * (if not NULL) then lists where it looked. */
const char *child_worker_path(char *looked, size_t size);
void child_set_worker_path(const char *path);

/* Starts the worker program at `path` with argument `mode`, fd as its
 * fd 3, shared_fd (if >= 0) as its fd 4 and stdin on /dev/null, in its own
 * process group, with default signal handling.  Returns 0 or an errno. */
int child_spawn(const char *path, const char *mode, int fd, int shared_fd, pid_t *pid);

/* SIGKILL to the process group that worker `pid` leads (to pid alone if
 * it leads none). */
void child_kill_group(pid_t pid);

/* If worker `pid` has exited and is not reaped yet, SIGKILL to what is
 * left of its group; else nothing. */
void child_end_group(pid_t pid);

/* In a worker: SIGKILL to every other process of the group it leads (what
 * its tasks started); returns how many.  For a task stopped while the
 * worker serves on. */
int child_sweep_group(void);

/* In a worker, first thing: on the parent's death, kill our group and
 * exit.  -1 if the parent is already gone. */
#define CHILD_DEATH_SIGNAL SIGHUP
int child_die_with_parent(void);

/* "was killed by signal 9 (SIGKILL)", "exited with status 3"... */
void child_describe_exit(char *out, size_t size, int status);

/* The child's side, for the worker program: reads the call from fd,
 * runs it in a new state, writes the outcome; returns an exit status. */
int child_serve_oneshot(int fd, int (*open_core)(lua_State *L));

#endif
