#!/usr/bin/env python3
"""terminal.py -- run a program on a pseudo-terminal and play a script at it.

    python3 spec/helpers/terminal.py STEPS.json -- PROGRAM [ARGS...]

The specs drive interactive programs (the weft REPL) through this: a real
terminal for the program (readline, Ctrl-C from the line discipline), a
fixed list of steps instead of a person.  STEPS.json is a list of objects:

    {"send": "1 + 1\\r"}           write these characters to the terminal
                                   ("\\u0003" is Ctrl-C, "\\u0004" Ctrl-D)
    {"expect": "2"}                wait until this text (plain) shows up in
                                   the output after the previous match
    {"expect": "...", "timeout": 30}   (seconds; default 60)
    {"shell": "echo go > fifo"}    run a shell command (an event the
                                   program waits for), up to "timeout";
                                   $TERMINAL_PID is the program's pid
    {"exit": true}                 wait for the program to exit

Matching is on the output with terminal escape sequences taken out.
Waiting is on the terminal's output (select), never a fixed sleep: a step
that times out fails the whole run.

Prints one JSON object on stdout: {"ok": bool, "step": index of the step
that failed (1-based) or null, "why": text, "status": exit status or null
(128+N after signal N), "transcript": everything the program wrote, with
escapes taken out}.  The program is killed if it is still running at the
end.  Exit status 0 either way; the caller checks "ok".
"""
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>]|\x07")


def clean(data):
    return ESCAPES.sub("", data.decode("utf-8", "replace"))


class Session:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.raw = b""
        self.seen = 0          # where the next expect starts looking
        self.status = None

    def text(self):
        return clean(self.raw)

    def read_some(self, deadline):
        """Reads what the program wrote: "data", "timeout" or "eof"."""
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        ready, _, _ = select.select([self.fd], [], [], left)
        if not ready:
            return "timeout"
        try:
            data = os.read(self.fd, 65536)
        except OSError:        # EIO: no process has the terminal open any more
            return "eof"
        if not data:
            return "eof"
        self.raw += data
        return "data"

    def expect(self, want, timeout):
        deadline = time.monotonic() + timeout
        while True:
            at = self.text().find(want, self.seen)
            if at >= 0:
                self.seen = at + len(want)
                return None
            got = self.read_some(deadline)
            if got == "timeout":
                return "did not see %r within %gs" % (want, timeout)
            if got == "eof":
                return "did not see %r before the program closed the terminal" % want

    def reap(self, flags):
        pid, status = os.waitpid(self.pid, flags)
        if pid == self.pid:
            self.status = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                           else 128 + os.WTERMSIG(status))
        return self.status is not None

    def wait_exit(self, timeout):
        """Waits for the program's exit, reading its output meanwhile (a
        program blocked on a full terminal would never exit)."""
        deadline = time.monotonic() + timeout
        eof = False
        while not self.reap(os.WNOHANG):
            if time.monotonic() >= deadline:
                return "the program did not exit within %gs" % timeout
            if not eof:
                eof = self.read_some(min(deadline, time.monotonic() + 0.1)) == "eof"
            else:
                time.sleep(0.02)   # terminal closed, exit imminent: poll waitpid
        while self.read_some(time.monotonic() + 5) == "data":
            pass               # what it wrote just before exiting
        return None

    def kill(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.stderr.write("usage: terminal.py STEPS.json -- PROGRAM [ARGS...]\n")
        return 2
    with open(sys.argv[1]) as f:
        steps = json.load(f)
    session = Session(sys.argv[3:])
    result = {"ok": True, "step": None, "why": None}
    for i, step in enumerate(steps, 1):
        timeout = step.get("timeout", 60)
        why = None
        if "send" in step:
            os.write(session.fd, step["send"].encode("utf-8"))
        elif "expect" in step:
            why = session.expect(step["expect"], timeout)
        elif "shell" in step:
            try:
                env = dict(os.environ, TERMINAL_PID=str(session.pid))
                done = subprocess.run(step["shell"], shell=True, timeout=timeout, env=env)
                if done.returncode != 0:
                    why = "%r exited with status %d" % (step["shell"], done.returncode)
            except subprocess.TimeoutExpired:
                why = "%r did not finish within %gs" % (step["shell"], timeout)
        elif step.get("exit"):
            why = session.wait_exit(timeout)
        else:
            why = "unknown step %r" % (step,)
        if why:
            result.update(ok=False, step=i, why=why)
            break
    session.kill()
    result["status"] = session.status
    result["transcript"] = session.text()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
