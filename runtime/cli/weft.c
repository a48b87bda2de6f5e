/*
 * weft.c -- the `weft` program: Lua 5.4 with weft preloaded.
 *
 *   weft run [options] FILE [args...]   run a flow script
 *   weft [repl]                         the interactive REPL
 *   weft --version | --help
 *
 * It embeds Lua the way a host application does (weft.h): a new state, the
 * standard libraries, luaopen_weft, and the Lua layer found on package.path
 * (the source tree next to a build directory, or the installed
 * share/lua/5.4).  The program is the C glue only; what `weft run` does
 * around a script (log lines, the live progress line, flow summaries, the
 * JSON report, the exit status) is lua/weft/runner.lua.
 *
 * weft run.  Options are parsed here, the script is loaded (a missing file
 * or a syntax error is a usage error: exit 2, nothing ran), then
 * runner.start(options) sets the default executor, the log sink, the
 * ticker and the flow observer (a bad value is a usage error too), the
 * script runs, and session:finish(outcome) says the exit status.
 *
 * Ctrl-C.  One SIGINT handler for the whole program; what it does depends
 * on `cli.mode`, which says what the main thread is doing:
 *   MODE_SCRIPT  weft run's script runs: the first Ctrl-C calls
 *                weft_interrupt(L) (a hook raises "interrupted" in the
 *                script, a wait force-cancels its futures, a flow records
 *                its runs); the program then stops every executor and exits
 *                130.  A second one exits at once.
 *   MODE_LINE    a REPL line (or a done-callback) runs: weft_interrupt(L);
 *                the REPL prints the error and goes on.  A third Ctrl-C on
 *                the same line exits at once (a line stuck in a C call).
 *   MODE_PROMPT  the REPL is idle: the handler only raises a flag.  SIGINT
 *                is blocked outside ppoll(), so the flag is never missed.
 *   MODE_EXIT    anything else (start-up, the end of weft run, closing):
 *                exit at once.
 * "At once" is write() and _exit(130): all a handler may do.  Worker
 * processes die with their parent (PR_SET_PDEATHSIG), threads with the
 * process.
 *
 * The REPL.  GNU readline's callback interface, so that the main loop can
 * poll() the terminal AND the state's completion source: done-callbacks
 * and log records of tasks run while the prompt is idle (the prompt is
 * cleared before they print and redrawn after).  Lines are read and
 * evaluated as lua5.4 does: "return <line>" first, then the line as a
 * statement, continuation lines while the chunk ends in <eof>, results
 * printed with print().  Tab completes globals and fields.  `weft` with
 * no arguments and stdin not a terminal runs stdin, as lua5.4 does.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "weft.h"

#ifndef WEFT_LUADIR
#define WEFT_LUADIR "/usr/local/share/lua/5.4"
#endif

#define PROGNAME "weft"
#define HISTORY_LINES 1000

enum { MODE_EXIT, MODE_SCRIPT, MODE_LINE, MODE_PROMPT };

/* The program's mutable global state: what the SIGINT handler and
 * readline's line callback (neither takes an argument) need. */
static struct {
  lua_State *L;                       /* the state Ctrl-C interrupts */
  volatile sig_atomic_t mode;         /* MODE_*: what Ctrl-C does now */
  volatile sig_atomic_t sigints;      /* Ctrl-Cs since the mode began */
  volatile sig_atomic_t prompt_sigint;/* a Ctrl-C came at the idle prompt */
  char *line;                         /* the line readline handed over */
  int line_ready;                     /* ... and whether it did (line may be NULL: EOF) */
  int idle_dispatch;                  /* the REPL dispatches at its idle prompt */
  int prompt_hidden;                  /* ... and has cleared the prompt for output */
} cli;

/* ==================================================================== */
/* === messages                                                     === */
/* ==================================================================== */

/* One line on stderr: "weft: <message>". */
static void say(const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  fputs(PROGNAME ": ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: weft run [options] FILE [args...]   run a Lua flow script\n"
          "       weft [repl]                         interactive REPL\n"
          "       weft worker URL [options]           serve a Redis executor's queue\n"
          "       weft --version                      print the version\n"
          "       weft --help                         this text\n"
          "\n"
          "'weft run --help', 'weft repl --help' and 'weft worker --help' describe\n"
          "each command.\n");
}

static void usage_run(FILE *out) {
  fprintf(out,
          "usage: weft run [options] FILE [args...]\n"
          "\n"
          "Runs the Lua script FILE ('-' reads standard input) with weft loaded.\n"
          "The script gets its arguments in `arg` and `...`, as with lua5.4.\n"
          "\n"
          "options (before FILE, or after it; '--' ends them):\n"
          "  --executor SPEC    the default executor of flows: inline, threads,\n"
          "                     threads:N, processes, processes:N, or a Redis URL\n"
          "                     (redis://host:port/db?queue=q, unix:///path?queue=q)\n"
          "                     (default: $WEFT_EXECUTOR, else threads)\n"
          "  --workers N        workers of the default executor (default: one per CPU)\n"
          "  --log-level L      debug, info, warn or error (default: info)\n"
          "  --report FILE      write every flow run and task run as JSON to FILE\n"
          "  --no-progress      no live progress line and no flow summaries\n"
          "  --help             this text\n"
          "\n"
          "exit status: 0 the script and its flows completed, 1 a flow failed or\n"
          "the script raised, 2 a usage error (nothing ran), 130 interrupted.\n"
          "Ctrl-C stops the running tasks and exits; a second Ctrl-C exits at once.\n");
}

static void usage_repl(FILE *out) {
  fprintf(out,
          "usage: weft repl   (or just: weft)\n"
          "\n"
          "An interactive Lua 5.4 prompt with the module `weft` loaded as a global.\n"
          "Expressions print their values; incomplete chunks continue on the next\n"
          "line.  Ctrl-C interrupts the running line (and cancels the futures it\n"
          "waits on); at the prompt it clears the line, and a second one exits, as\n"
          "does Ctrl-D.  History: $WEFT_HISTORY, else ~/.weft_history.\n");
}

/* lua.c's message handler: the error with a traceback.  A weft.Error (any
 * value with __tostring) prints through its __tostring. */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* The text of the error at idx, without a traceback: a weft.Error's
 * message field, else what tostring gives. */
static const char *error_message(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TTABLE && lua_getfield(L, idx, "message") == LUA_TSTRING)
    return lua_tostring(L, -1);
  if (lua_type(L, idx) == LUA_TTABLE) lua_pop(L, 1);
  return luaL_tolstring(L, idx, NULL);
}

/* Whether the error at idx is a weft.Error of kind "config". */
static int is_config_error(lua_State *L, int idx) {
  int yes;
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  lua_getfield(L, idx, "kind");
  yes = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "config") == 0;
  lua_pop(L, 1);
  return yes;
}

/* ==================================================================== */
/* === the Lua state                                                === */
/* ==================================================================== */

/* Whether dir holds weft's Lua layer. */
static int has_weft(const char *dir) {
  char path[PATH_MAX];
  int n = snprintf(path, sizeof path, "%s/weft/init.lua", dir);
  return n > 0 && (size_t)n < sizeof path && access(path, R_OK) == 0;
}

/* Finds weft's Lua layer for this program, into out: the source tree when
 * it runs from a build directory (<tree>/<any build dir>/weft/weft ->
 * <tree>/lua), the prefix it is installed in (<prefix>/bin/weft ->
 * <prefix>/share/lua/5.4), else the configured WEFT_LUADIR. */
static void find_luadir(char *out, size_t size) {
  static const char *const beside[] = { "/../../lua", "/../share/lua/5.4" };
  char exe[PATH_MAX], *slash;
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  size_t i;
  if (n > 0) {
    exe[n] = '\0';
    if ((slash = strrchr(exe, '/')) != NULL) {
      *slash = '\0';                              /* the program's directory */
      for (i = 0; i < sizeof beside / sizeof beside[0]; i++) {
        int len = snprintf(out, size, "%s%s", exe, beside[i]);
        if (len > 0 && (size_t)len < size && has_weft(out)) return;
      }
    }
  }
  snprintf(out, size, "%s", WEFT_LUADIR);
}

/* Puts weft's Lua layer in front of package.path (LUA_PATH stays behind
 * it; luaopen_weft appends WEFT_LUADIR as a last resort). */
static void set_paths(lua_State *L) {
  char dir[PATH_MAX];
  find_luadir(dir, sizeof dir);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}

static int open_weft(lua_State *L) {
  luaL_requiref(L, "weft", luaopen_weft, lua_toboolean(L, 1));
  return 0;
}

/* A new state with the standard libraries and weft (a global `weft` when
 * as_global), or NULL after saying why. */
static lua_State *open_state(int as_global) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    say("cannot create a Lua state (out of memory)");
    return NULL;
  }
  luaL_openlibs(L);
  set_paths(L);
  lua_pushcfunction(L, open_weft);
  lua_pushboolean(L, as_global);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    say("cannot load weft: %s", lua_tostring(L, -1));
    lua_close(L);
    return NULL;
  }
  return L;
}

/* ==================================================================== */
/* === Ctrl-C                                                       === */
/* ==================================================================== */

/* Async-signal-safe: weft_interrupt, write and _exit only. */
static void on_sigint(int sig) {
  (void)sig;
  cli.sigints++;
  switch (cli.mode) {
  case MODE_SCRIPT:
    if (cli.sigints == 1) {
      weft_interrupt(cli.L);
      return;
    }
    break;
  case MODE_LINE:
    if (cli.sigints < 3) {
      weft_interrupt(cli.L);
      return;
    }
    break;
  case MODE_PROMPT:
    cli.prompt_sigint = 1;
    return;
  default:
    break;
  }
  if (write(STDERR_FILENO, "\n", 1) < 0) { /* nothing more to do */ }
  _exit(130);
}

static void enter_mode(int mode) {
  cli.sigints = 0;
  cli.mode = mode;
}

/* No SA_RESTART: a Ctrl-C at the REPL's prompt wakes its ppoll(). */
static void catch_sigint(lua_State *L) {
  struct sigaction sa;
  cli.L = L;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

static void block_sigint(int block) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigprocmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

/* After Lua code that may have been interrupted: forget the interrupt,
 * and the hook weft_interrupt left if the code ended before it fired. */
static void clear_interrupt(lua_State *L) {
  if (!weft_interrupted()) return;
  weft_clear_interrupt();
  lua_sethook(L, NULL, 0, 0);
}

/* ==================================================================== */
/* === weft run                                                     === */
/* ==================================================================== */

typedef struct {
  const char *executor, *workers, *log_level, *report;
  int progress;          /* 0 after --no-progress */
  int file;              /* argv index of FILE, 0 if none */
  char **args;           /* the script's arguments (weft's options taken out) */
  int nargs;
} run_options;

/* Takes argv[*i] if it is one of weft run's options (moving *i past its
 * value).  1: taken, 0: not an option of ours, -1: said what is wrong. */
static int take_option(run_options *o, int argc, char **argv, int *i) {
  static const char *const names[] = { "--executor", "--workers", "--log-level", "--report" };
  const char **slots[] = { &o->executor, &o->workers, &o->log_level, &o->report };
  const char *a = argv[*i];
  size_t k;
  if (strcmp(a, "--no-progress") == 0) {
    o->progress = 0;
    return 1;
  }
  for (k = 0; k < sizeof names / sizeof names[0]; k++) {
    size_t n = strlen(names[k]);
    if (strncmp(a, names[k], n) != 0 || (a[n] != '\0' && a[n] != '=')) continue;
    if (a[n] == '=') {
      *slots[k] = a + n + 1;
    } else if (*i + 1 < argc) {
      *slots[k] = argv[++*i];
    } else {
      say("%s needs a value (see 'weft run --help')", names[k]);
      return -1;
    }
    return 1;
  }
  return 0;
}

/* Parses `weft run`'s command line.  Before FILE, every word starting
 * with '-' must be an option; after it, weft takes only its own options
 * and the rest goes to the script.  "--" ends the options, before FILE or
 * after it.  0: ok, 1: help printed, -1: usage error said. */
static int parse_run(int argc, char **argv, run_options *o) {
  int i = 2, rc, verbatim = 0;
  memset(o, 0, sizeof *o);
  o->progress = 1;
  if ((o->args = malloc(sizeof(char *) * (size_t)argc)) == NULL) {
    say("out of memory");
    return -1;
  }
  for (; i < argc && o->file == 0; i++) {      /* before FILE */
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      verbatim = 1;
      if (i + 1 < argc) o->file = ++i;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage_run(stdout);
      return 1;
    } else if (a[0] != '-' || a[1] == '\0') {   /* FILE, or "-": stdin */
      o->file = i;
    } else if ((rc = take_option(o, argc, argv, &i)) <= 0) {
      if (rc == 0) say("unknown option '%s' (see 'weft run --help')", a);
      return -1;
    }
  }
  if (o->file == 0) {
    say("no script given: weft run [options] FILE [args...]");
    return -1;
  }
  for (; i < argc; i++) {                      /* after FILE */
    if (!verbatim && strcmp(argv[i], "--") == 0)
      verbatim = 1;
    else if (verbatim || (rc = take_option(o, argc, argv, &i)) == 0)
      o->args[o->nargs++] = argv[i];
    else if (rc < 0)
      return -1;
  }
  return 0;
}

/* Loads the script; on failure says why (missing file, syntax error). */
static int load_script(lua_State *L, const char *file) {
  if (luaL_loadfile(L, strcmp(file, "-") == 0 ? NULL : file) == LUA_OK) return 1;
  say("%s", lua_tostring(L, -1));
  lua_pop(L, 1);
  return 0;
}

/* `arg` as lua5.4 sets it: the script at 0, what came before it below. */
static void set_arg(lua_State *L, char **argv, const run_options *o) {
  int i;
  lua_createtable(L, o->nargs, o->file + 1);
  for (i = 0; i <= o->file; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - o->file);
  }
  for (i = 0; i < o->nargs; i++) {
    lua_pushstring(L, o->args[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
}

static void set_field(lua_State *L, const char *key, const char *value) {
  if (value == NULL) return;
  lua_pushstring(L, value);
  lua_setfield(L, -2, key);
}

/* Pushes runner.start(options): the session.  On failure says why and
 * returns the exit status (2 for a usage error), else 0. */
static int start_runner(lua_State *L, char **argv, const run_options *o) {
  lua_pushcfunction(L, msghandler);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "weft.runner");
  if (lua_pcall(L, 1, 1, -3) != LUA_OK) {
    say("%s", lua_tostring(L, -1));
    return 1;
  }
  lua_getfield(L, -1, "start");
  lua_replace(L, -2);
  lua_newtable(L);
  set_field(L, "script", argv[o->file]);
  set_field(L, "executor", o->executor);
  set_field(L, "workers", o->workers);
  set_field(L, "log_level", o->log_level);
  set_field(L, "report", o->report);
  lua_pushboolean(L, o->progress);
  lua_setfield(L, -2, "progress");
  lua_pushboolean(L, isatty(STDERR_FILENO));
  lua_setfield(L, -2, "tty");
  lua_getglobal(L, "arg");
  lua_setfield(L, -2, "arg");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {       /* no traceback: we want one line */
    int config = is_config_error(L, -1);
    say("%s", error_message(L, -1));
    return config ? 2 : 1;
  }
  lua_remove(L, -2);                           /* the message handler */
  return 0;
}

/* session:finish(outcome, message) -> the exit status. */
static int finish_runner(lua_State *L, int session, const char *outcome, const char *message) {
  int status;
  lua_pushcfunction(L, msghandler);
  lua_getfield(L, session, "finish");
  lua_pushvalue(L, session);
  lua_pushstring(L, outcome);
  if (message) lua_pushstring(L, message); else lua_pushnil(L);
  if (lua_pcall(L, 3, 1, -5) != LUA_OK) {
    say("%s", lua_tostring(L, -1));
    return 1;
  }
  status = (int)luaL_optinteger(L, -1, 1);
  lua_pop(L, 2);
  return status;
}

/* Runs the script (on the stack under the session, with its arguments as
 * `...`) and the session's finish; returns the exit status. */
static int run_script(lua_State *L, const run_options *o) {
  int session = lua_gettop(L), chunk = session - 1, i, status;
  const char *outcome = "completed", *message = NULL;
  lua_pushcfunction(L, msghandler);
  lua_pushvalue(L, chunk);
  for (i = 0; i < o->nargs; i++) lua_pushstring(L, o->args[i]);
  enter_mode(MODE_SCRIPT);
  status = lua_pcall(L, o->nargs, 0, session + 1);
  enter_mode(MODE_EXIT);
  if (weft_interrupted()) {
    outcome = "interrupted";
    weft_shutdown(L);                /* stop every executor: nothing runs on */
    clear_interrupt(L);
  } else if (status != LUA_OK) {
    outcome = "error";
    message = lua_tostring(L, -1);
  }
  status = finish_runner(L, session, outcome, message);
  if (strcmp(outcome, "interrupted") == 0)
    say("interrupted");
  else if (message != NULL)
    say("%s", message);
  return status;
}

static int cmd_run(int argc, char **argv) {
  run_options o;
  lua_State *L;
  int rc = parse_run(argc, argv, &o);
  if (rc != 0) {
    free(o.args);
    return rc > 0 ? 0 : 2;
  }
  enter_mode(MODE_EXIT);
  if ((L = open_state(0)) == NULL) {
    free(o.args);
    return 1;
  }
  catch_sigint(L);
  if (!load_script(L, argv[o.file])) {
    rc = 2;
  } else {
    set_arg(L, argv, &o);
    rc = start_runner(L, argv, &o);
    if (rc == 0) rc = run_script(L, &o);
  }
  lua_close(L);
  free(o.args);
  return rc;
}

/* `weft worker URL [options]`: lua/weft/worker.lua reads the options and
 * serves (rworker.c); its result is the exit status.  A weft.Error of kind
 * config (a bad option, URL or password) is a usage error: one line, 2. */
static int cmd_worker(int argc, char **argv) {
  lua_State *L;
  int i, rc;
  if ((L = open_state(0)) == NULL) return 1;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "weft.worker");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    say("%s", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc - 2, 0);
  for (i = 2; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    int config = 0;
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "kind");
      config = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "config") == 0;
      lua_pop(L, 1);
      lua_getfield(L, -1, "message");
      lua_replace(L, -2);
    }
    say("%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error object)");
    rc = config ? 2 : 1;
  } else {
    rc = (int)lua_tointeger(L, -1);
  }
  weft_shutdown(L);
  lua_close(L);
  return rc;
}

/* ==================================================================== */
/* === the REPL: reading lines                                      === */
/* ==================================================================== */

typedef struct {
  lua_State *L;
  char *chunk;           /* the lines of an incomplete chunk, or NULL */
  int armed;             /* a Ctrl-C came at the prompt: one more at an empty prompt exits */
  int cfd;               /* the state's completion source, or -1 */
  char history[PATH_MAX];/* the history file, or "" for none */
} repl;

/* readline's line handler: hands the line to repl_read (NULL at EOF). */
static void on_line(char *line) {
  cli.line = line;
  cli.line_ready = 1;
  rl_callback_handler_remove();
}

/* The prompt: _PROMPT / _PROMPT2 if the user set them, as in lua5.4. */
static void show_prompt(repl *r) {
  lua_State *L = r->L;
  int first = r->chunk == NULL;
  const char *p;
  lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2");
  p = lua_tostring(L, -1);
  rl_callback_handler_install(p ? p : first ? "> " : ">> ", on_line);
  lua_pop(L, 1);
}

/* Ctrl-C at the prompt: drop the line (and an incomplete chunk); a second
 * one at an empty prompt ends the REPL (returns 1). */
static int prompt_interrupted(repl *r) {
  int empty = rl_end == 0 && r->chunk == NULL;
  rl_point = rl_end;
  rl_redisplay();
  rl_callback_sigcleanup();
  rl_replace_line("", 1);
  rl_callback_handler_remove();
  fputs("^C\n", stdout);
  free(r->chunk);
  r->chunk = NULL;
  if (empty && r->armed) return 1;
  r->armed = 1;
  fputs("(Ctrl-C again or Ctrl-D to exit)\n", stdout);
  fflush(stdout);
  show_prompt(r);
  return 0;
}

/* Clears the prompt line for output printed by an idle dispatch; a no-op
 * at any other time.  The REPL's log sink calls it too (l_hide_prompt). */
static void hide_prompt(void) {
  if (!cli.idle_dispatch || cli.prompt_hidden) return;
  rl_clear_visible_line();
  fflush(rl_outstream);
  cli.prompt_hidden = 1;
}

static int l_hide_prompt(lua_State *L) {
  (void)L;
  hide_prompt();
  return 0;
}

/* Runs the done-callbacks and log records that are ready, interruptible.
 * The prompt is cleared before anything prints (before callbacks, which
 * may print; by the sink before a log record) and redrawn after, so a
 * dispatch that prints nothing leaves the screen alone.  Returns whether
 * anything ran. */
static int dispatch_idle(repl *r) {
  int ran, hidden;
  cli.idle_dispatch = 1;
  if (weft_pending(r->L) > 0) hide_prompt();
  enter_mode(MODE_LINE);
  block_sigint(0);
  ran = weft_dispatch(r->L);
  block_sigint(1);
  enter_mode(MODE_PROMPT);
  cli.idle_dispatch = 0;
  clear_interrupt(r->L);
  hidden = cli.prompt_hidden;
  if (hidden) {
    fflush(stdout);
    fflush(stderr);
    rl_on_new_line();
    rl_redisplay();
    cli.prompt_hidden = 0;
  }
  return ran > 0 || hidden;
}

/* Waits for a line, dispatching completions meanwhile.  Returns 1 with the
 * line in *line (NULL at EOF), 0 when a second Ctrl-C ends the REPL.
 * A completion source found readable with nothing to run (a spurious
 * wake-up) is left out of the next poll for 100 ms: never a busy loop. */
static int repl_read(repl *r, char **line) {
  static const struct timespec pause = { 0, 100 * 1000 * 1000 };
  sigset_t during;
  int quiet = 0;
  sigprocmask(SIG_BLOCK, NULL, &during);
  sigdelset(&during, SIGINT);
  cli.line_ready = 0;
  show_prompt(r);
  for (;;) {
    struct pollfd fds[2] = { { STDIN_FILENO, POLLIN, 0 }, { r->cfd, POLLIN, 0 } };
    int n;
    if (cli.prompt_sigint) {
      cli.prompt_sigint = 0;
      if (prompt_interrupted(r)) return 0;
    }
    n = ppoll(fds, r->cfd >= 0 && !quiet ? 2 : 1, quiet ? &pause : NULL, &during);
    quiet = 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      say("poll: %s", strerror(errno));
      *line = NULL;
      return 1;
    }
    if (fds[1].revents & POLLIN) quiet = !dispatch_idle(r);
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      rl_callback_read_char();
      if (cli.line_ready) {
        *line = cli.line;
        return 1;
      }
    }
  }
}

/* $WEFT_HISTORY (empty: none), else ~/.weft_history; none off a terminal. */
static void open_history(repl *r) {
  const char *env = getenv("WEFT_HISTORY"), *home = getenv("HOME");
  r->history[0] = '\0';
  if (!isatty(STDIN_FILENO)) return;
  if (env != NULL)
    snprintf(r->history, sizeof r->history, "%s", env);
  else if (home != NULL)
    snprintf(r->history, sizeof r->history, "%s/.weft_history", home);
  if (r->history[0] == '\0') return;
  stifle_history(HISTORY_LINES);
  if (read_history(r->history) != 0) write_history(r->history);   /* create it */
}

static void remember(repl *r, const char *chunk) {
  if (chunk[0] == '\0') return;
  add_history(chunk);
  if (r->history[0] != '\0') append_history(1, r->history);
}

/* ==================================================================== */
/* === the REPL: Tab completion                                     === */
/* ==================================================================== */

/* Tab completes globals and field paths: "weft.thr" -> "weft.threads",
 * "ex:sub" -> "ex:submit".  Fields are read raw, from tables and from the
 * __index tables of metatables (methods of executors, futures...): no Lua
 * code runs while a key is being completed. */

#define COMPLETE_DEPTH 8         /* __index tables followed, at most */
#define COMPLETE_MAX 500         /* candidates offered, at most */

/* Pushes the __index table of the value at idx's metatable; 0 if none. */
static int push_index_table(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  lua_pushliteral(L, "__index");
  lua_rawget(L, -2);
  lua_remove(L, -2);
  if (lua_istable(L, -1)) return 1;
  lua_pop(L, 1);
  return 0;
}

/* Replaces the value on top with its field `key` (nil if none). */
static void step_into(lua_State *L, const char *key, size_t len) {
  int depth;
  for (depth = 0; depth < COMPLETE_DEPTH; depth++) {
    if (lua_istable(L, -1)) {
      lua_pushlstring(L, key, len);
      if (lua_rawget(L, -2) != LUA_TNIL) {
        lua_remove(L, -2);
        return;
      }
      lua_pop(L, 1);
    }
    if (!push_index_table(L, -1)) break;
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
}

/* Whether key is a name completion offers: an identifier starting with
 * prefix, and not a private "_name" unless the prefix asks for one. */
static int offered(const char *key, size_t n, const char *prefix, size_t len) {
  static const char ident[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
  return n >= len && strncmp(key, prefix, len) == 0 && (key[0] != '_' || len > 0) &&
         strspn(key, ident) == n;
}

/* Adds to the list at `set` the keys of the value on top (and of its
 * __index tables) that are offered for prefix; pops the value. */
static void collect_keys(lua_State *L, int set, const char *prefix, size_t len) {
  int depth;
  for (depth = 0; depth < COMPLETE_DEPTH; depth++) {
    if (lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        size_t n;
        const char *key;
        lua_pop(L, 1);                             /* the value */
        if (lua_type(L, -1) != LUA_TSTRING) continue;
        key = lua_tolstring(L, -1, &n);
        if (!offered(key, n, prefix, len)) continue;
        lua_pushvalue(L, -1);
        lua_rawseti(L, set, (lua_Integer)lua_rawlen(L, set) + 1);
        if (lua_rawlen(L, set) >= COMPLETE_MAX) {
          lua_pop(L, 2);                           /* the key, the value */
          return;
        }
      }
    }
    if (!push_index_table(L, -1)) break;
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
}

/* complete_in_lua(text) -> list of completions (under lua_pcall: an
 * allocation error must not escape into readline). */
static int complete_in_lua(lua_State *L) {
  const char *text = lua_tostring(L, 1), *p = text, *q;
  int set;
  lua_newtable(L);
  set = lua_gettop(L);
  lua_pushglobaltable(L);
  while ((q = strpbrk(p, ".:")) != NULL) {
    step_into(L, p, (size_t)(q - p));
    p = q + 1;
  }
  collect_keys(L, set, p, strlen(p));
  lua_pushinteger(L, (lua_Integer)(p - text));    /* length of the path before the key */
  return 2;
}

/* readline's attempted-completion function: matches[0] is what they
 * share, then each match; NULL for none. */
static char **complete(const char *text, int start, int end) {
  lua_State *L = cli.L;
  int top = lua_gettop(L), n, i;
  size_t head, common = 0;
  char **matches = NULL;
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1;              /* never file names */
  rl_completion_append_character = '\0';
  lua_pushcfunction(L, complete_in_lua);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK || (n = (int)lua_rawlen(L, -2)) == 0) goto done;
  head = (size_t)lua_tointeger(L, -1);
  if ((matches = calloc((size_t)n + 2, sizeof *matches)) == NULL) goto done;
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *key;
    lua_rawgeti(L, -2, i);
    key = lua_tolstring(L, -1, &len);
    if ((matches[i] = malloc(head + len + 1)) == NULL) break;
    memcpy(matches[i], text, head);
    memcpy(matches[i] + head, key, len + 1);
    lua_pop(L, 1);
    if (i == 1) common = head + len;
    while (common > 0 && strncmp(matches[1], matches[i], common) != 0) common--;
  }
  if (i <= n || (matches[0] = strndup(matches[1], common)) == NULL) {
    for (i = 1; i <= n; i++) free(matches[i]);
    free(matches);
    matches = NULL;
  }
done:
  lua_settop(L, top);
  return matches;
}

/* ==================================================================== */
/* === the REPL: evaluating                                         === */
/* ==================================================================== */

/* Whether a load failed only because the chunk is not finished yet. */
static int incomplete(lua_State *L, int status) {
  static const char mark[] = "<eof>";
  size_t len;
  const char *msg;
  if (status != LUA_ERRSYNTAX) return 0;
  msg = lua_tolstring(L, -1, &len);
  return len >= sizeof mark - 1 && strcmp(msg + len - (sizeof mark - 1), mark) == 0;
}

/* Calls the function on top; prints its results, or the error. */
static void evaluate(repl *r) {
  lua_State *L = r->L;
  int base = lua_gettop(L), status, n, interrupted;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  enter_mode(MODE_LINE);
  block_sigint(0);
  status = lua_pcall(L, 0, LUA_MULTRET, base);
  block_sigint(1);
  enter_mode(MODE_PROMPT);
  interrupted = weft_interrupted();
  clear_interrupt(L);
  lua_remove(L, base);
  if (status != LUA_OK) {
    fflush(stdout);
    fprintf(stderr, "%s%s\n", interrupted ? "\n" : "", lua_tostring(L, -1));
    fflush(stderr);
    lua_settop(L, base - 1);
    return;
  }
  n = lua_gettop(L) - base + 1;
  if (n > 0) {                                   /* as lua5.4: print(...) */
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, base);
    if (lua_pcall(L, n, 0, 0) != LUA_OK) {
      fprintf(stderr, "error calling 'print' (%s)\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  fflush(stdout);
  lua_settop(L, base - 1);
}

/* Tries the first line of a chunk as an expression ("=expr" too). */
static int load_expression(lua_State *L, const char *line) {
  const char *code = lua_pushfstring(L, "return %s;", line[0] == '=' ? line + 1 : line);
  int status = luaL_loadbuffer(L, code, strlen(code), "=stdin");
  lua_remove(L, -2);
  if (status == LUA_OK) return 1;
  lua_pop(L, 1);
  return 0;
}

/* Appends " \n line" to the chunk (taking line); NULL if out of memory. */
static char *extend(char *chunk, char *line) {
  size_t a = strlen(chunk), b = strlen(line);
  char *both = malloc(a + b + 2);
  if (both != NULL) {
    memcpy(both, chunk, a);
    both[a] = '\n';
    memcpy(both + a + 1, line, b + 1);
  }
  free(chunk);
  free(line);
  return both;
}

/* Takes one line: runs the chunk when it is complete, keeps it otherwise. */
static void repl_take(repl *r, char *line) {
  lua_State *L = r->L;
  char *chunk;
  int status;
  r->armed = 0;
  if (r->chunk == NULL && load_expression(L, line)) {
    remember(r, line);
    free(line);
    evaluate(r);
    return;
  }
  chunk = r->chunk ? extend(r->chunk, line) : line;
  r->chunk = NULL;
  if (chunk == NULL) {
    fprintf(stderr, "out of memory\n");
    return;
  }
  status = luaL_loadbuffer(L, chunk, strlen(chunk), "=stdin");
  if (incomplete(L, status)) {
    lua_pop(L, 1);
    r->chunk = chunk;
    return;
  }
  remember(r, chunk);
  free(chunk);
  if (status == LUA_OK) {
    evaluate(r);
  } else {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static int cmd_repl(void) {
  repl r;
  char *line;
  memset(&r, 0, sizeof r);
  enter_mode(MODE_EXIT);
  if ((r.L = open_state(1)) == NULL) return 1;
  catch_sigint(r.L);
  block_sigint(1);
  r.cfd = weft_completion_fd(r.L);
  lua_getglobal(r.L, "require");               /* log records print above the prompt */
  lua_pushliteral(r.L, "weft.runner");
  if (lua_pcall(r.L, 1, 1, 0) != LUA_OK || lua_getfield(r.L, -1, "repl") != LUA_TFUNCTION ||
      (lua_pushcfunction(r.L, l_hide_prompt), lua_pcall(r.L, 1, 0, 0)) != LUA_OK)
    say("%s", lua_tostring(r.L, -1));
  lua_settop(r.L, 0);
  open_history(&r);
  rl_readline_name = "weft";
  rl_catch_signals = 0;                       /* Ctrl-C is ours (on_sigint) */
  rl_attempted_completion_function = complete;
  rl_completer_word_break_characters = " \t\n\"\\'`@$><=;|&{(,[+-*/%^~#})]";
  printf("weft %s (%s): `weft` is loaded; Ctrl-C interrupts, Ctrl-D exits\n",
         WEFT_VERSION, LUA_RELEASE);
  enter_mode(MODE_PROMPT);
  while (repl_read(&r, &line)) {
    if (line == NULL) {                       /* Ctrl-D */
      fputc('\n', stdout);
      break;
    }
    repl_take(&r, line);
  }
  fflush(stdout);
  enter_mode(MODE_EXIT);
  block_sigint(0);
  rl_callback_handler_remove();
  free(r.chunk);
  if (r.history[0] != '\0') history_truncate_file(r.history, HISTORY_LINES);
  weft_shutdown(r.L);                         /* stop what the session left running */
  lua_close(r.L);
  return 0;
}

/* ==================================================================== */
/* === main                                                         === */
/* ==================================================================== */

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : NULL;
  if (cmd == NULL) {
    if (isatty(STDIN_FILENO)) return cmd_repl();
    char *as_run[] = { argv[0], "run", "-", NULL };   /* lua5.4 < script */
    return cmd_run(3, as_run);
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-v") == 0) {
    printf("weft %s (%s)\n", WEFT_VERSION, LUA_RELEASE);
    return 0;
  }
  if (strcmp(cmd, "run") == 0) return cmd_run(argc, argv);
  if (strcmp(cmd, "worker") == 0) return cmd_worker(argc, argv);
  if (strcmp(cmd, "repl") == 0) {
    if (argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
      usage_repl(stdout);
      return 0;
    }
    if (argc > 2) {
      say("weft repl takes no arguments, got '%s' (see 'weft repl --help')", argv[2]);
      return 2;
    }
    return cmd_repl();
  }
  if (cmd[0] == '-')
    say("unknown option '%s' (see 'weft --help')", cmd);
  else
    say("unknown command '%s' (to run a script: weft run %s)", cmd, cmd);
  return 2;
}
