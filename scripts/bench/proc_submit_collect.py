"""Baseline for proc_submit_collect.lua: 20,000 trivial tasks (inc(i), a
module-level function: a lambda cannot be pickled) submitted to
ProcessPoolExecutor(max_workers=2) (Linux default start method, fork), then
all results collected. Prints microseconds per task, best of 5 runs after a
warm-up (Python needs 80-300 us per task here: 5 runs take 8-30 s)."""
from concurrent.futures import ProcessPoolExecutor

from benchlib import best_of, now, result

N = 20_000
RUNS = 5


def inc(x):
    return x + 1


def once(ex, n):
    t0 = now()
    futs = [ex.submit(inc, i) for i in range(1, n + 1)]
    total = 0
    for f in futs:
        total += f.result()
    elapsed = now() - t0
    assert total == n * (n + 1) // 2 + n, total
    return elapsed


def main():
    with ProcessPoolExecutor(max_workers=2) as ex:
        once(ex, 1000)  # warm-up: starts the worker processes
        best = best_of(RUNS, lambda: once(ex, N))
    result(us_per_task=best / N * 1e6, tasks=N, runs=RUNS)


if __name__ == "__main__":
    main()
