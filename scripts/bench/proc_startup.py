"""Baseline for proc_startup.lua: from creating ProcessPoolExecutor(2) to
the result of its first trivial task, with the "fork" start method (Linux's
default in this Python) and with "spawn" (a fresh interpreter per worker,
the default on macOS and Windows, and from Python 3.14 on Linux). The pool
is shut down after the timed part. Prints the median over 20 trials; the
figure is fork's, spawn's median is in spawn_p50_ms and the note."""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from benchlib import now, percentile, result

TRIALS = 20
WORKERS = 2


def inc(x):
    return x + 1


def trial(ctx):
    """One trial: returns the seconds from creating the pool to its first result."""
    t0 = now()
    ex = ProcessPoolExecutor(max_workers=WORKERS, mp_context=ctx)
    value = ex.submit(inc, 1).result()
    elapsed = now() - t0
    ex.shutdown(wait=True)
    assert value == 2, value
    return elapsed


def run(method):
    ctx = multiprocessing.get_context(method)
    trial(ctx)  # warm-up: imports, page cache
    return [trial(ctx) for _ in range(TRIALS)]


def main():
    fork = run("fork")
    spawn = run("spawn")
    spawn_p50 = percentile(spawn, 50) * 1e3
    result(p50_ms=percentile(fork, 50) * 1e3,
           min_ms=min(fork) * 1e3,
           max_ms=percentile(fork, 100) * 1e3,
           spawn_p50_ms=spawn_p50,
           spawn_min_ms=min(spawn) * 1e3,
           trials=TRIALS, workers=WORKERS,
           note="fork; spawn %.0f ms" % spawn_p50)


if __name__ == "__main__":
    main()
