"""Baseline for proc_respawn.lua: SIGKILL the busy worker of
ProcessPoolExecutor(1) (fork) and time how long until a task runs again.

A killed worker breaks a ProcessPoolExecutor for good: the running task's
future and every later submit raise BrokenProcessPool. So the user's
recovery is: notice (the busy task's result() raises BrokenProcessPool),
shut the broken pool down, make a new pool, run a task. Each trial times
from os.kill to the new pool's first result; the new pool is the one the
next trial uses. Before the kill, the busy task is seen running and using
CPU time (its worker's utime + stime in /proc/<pid>/stat has grown by 2
clock ticks), as in proc_respawn.lua. Prints p50 and max over 20 trials;
the figure is p50."""
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from benchlib import now, percentile, result

TRIALS = 20


def spin():
    while True:
        pass


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after "pid (comm) ": state is field 3, utime 14, stime 15
    return int(fields[11]) + int(fields[12])


def wait_spinning(fut, pid):
    deadline = now() + 5
    while not fut.running():
        assert now() < deadline, "the spinning task did not start"
        time.sleep(0.001)
    ticks = cpu_ticks(pid)
    while cpu_ticks(pid) < ticks + 2:
        assert now() < deadline, "the spinning task does not spin"
        time.sleep(0.001)


def trial(ex):
    """One trial: returns the seconds from the kill to a task's result, the
    seconds to noticing the broken pool, and the pool to use next."""
    pid = ex.submit(os.getpid).result()
    busy = ex.submit(spin)
    wait_spinning(busy, pid)
    t0 = now()
    os.kill(pid, signal.SIGKILL)
    try:
        busy.result()
        raise AssertionError("the spinning task returned")
    except BrokenProcessPool:
        pass
    noticed = now() - t0
    ex.shutdown(wait=True)  # the broken pool: nothing left to wait for
    ex = ProcessPoolExecutor(max_workers=1)
    new_pid = ex.submit(os.getpid).result()
    elapsed = now() - t0
    assert new_pid != pid, new_pid
    return elapsed, noticed, ex


def main():
    ex = ProcessPoolExecutor(max_workers=1)
    _, _, ex = trial(ex)  # warm-up
    times, noticed = [], []
    for _ in range(TRIALS):
        t, n, ex = trial(ex)
        times.append(t)
        noticed.append(n)
    ex.shutdown(wait=True)
    result(p50_ms=percentile(times, 50) * 1e3,
           max_ms=percentile(times, 100) * 1e3,
           noticed_p50_ms=percentile(noticed, 50) * 1e3,
           trials=TRIALS,
           note="pool broken, had to be recreated")


if __name__ == "__main__":
    main()
