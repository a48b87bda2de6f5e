"""Baseline for lateness_process.lua: a spinning multiprocessing.Process
(fork start method, the cheapest on Linux), join(timeout) until the
deadline, then kill() (SIGKILL) and join() to reap it; 200 trials with a
20 ms timeout. Prints the p99 of how long after t0 + 0.02 the child had
been reaped. t0 is taken before the child starts, as in the Lua script."""
import multiprocessing

from benchlib import lateness_fields, now, result

TRIALS = 200
T = 0.02  # the timeout, seconds


def spin():
    while True:
        pass


def trial(ctx):
    """One trial: returns the lateness, in seconds."""
    t0 = now()
    p = ctx.Process(target=spin)
    p.start()
    p.join(max(0.0, t0 + T - now()))
    assert p.is_alive(), "the spin finished on its own"
    p.kill()
    p.join()
    return now() - (t0 + T)


def main():
    ctx = multiprocessing.get_context("fork")
    trial(ctx)  # warm-up
    lates = [trial(ctx) for _ in range(TRIALS)]
    result(**lateness_fields(lates, T))


if __name__ == "__main__":
    main()
