"""Baseline for submit_collect.lua: 20,000 trivial tasks, each a new closure,
submitted to ThreadPoolExecutor(max_workers=2), then all results collected.
Prints microseconds per task, best of 5 runs after a warm-up."""
from concurrent.futures import ThreadPoolExecutor

from benchlib import best_of, now, result

N = 20_000
RUNS = 5


def make_task(x):
    # A new closure per task, with x as its free variable: the same shape as
    # `local x = i; ex:submit(function() return x + 1 end)` in Lua.
    return lambda: x + 1


def once(ex):
    t0 = now()
    futs = [None] * N
    for i in range(1, N + 1):
        futs[i - 1] = ex.submit(make_task(i))
    total = 0
    for f in futs:
        total += f.result()
    elapsed = now() - t0
    assert total == N * (N + 1) // 2 + N, total
    return elapsed


def main():
    with ThreadPoolExecutor(max_workers=2) as ex:
        once(ex)  # warm-up: starts the worker threads
        best = best_of(RUNS, lambda: once(ex))
    result(us_per_task=best / N * 1e6, tasks=N, runs=RUNS)


if __name__ == "__main__":
    main()
