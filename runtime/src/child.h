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
 */
#ifndef WEFT_CHILD_H
#define WEFT_CHILD_H

#include <lua.h>
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

/* "was killed by signal 9 (SIGKILL)", "exited with status 3"... */
void child_describe_exit(char *out, size_t size, int status);

/* The child's side, for the worker program: reads the call from fd,
 * runs it in a new state, writes the outcome; returns an exit status. */
int child_serve_oneshot(int fd, int (*open_core)(lua_State *L));

#endif
