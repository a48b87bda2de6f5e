"""Baseline for proc_map.lua: ProcessPoolExecutor(2).map(double, range(1,
N + 1), chunksize=1000) with N = 1,000,000, every result iterated and summed.
chunksize=1000 is the one proc_map.lua passes to weft (Python's default of 1
sends one message per item: ~7,000 items/s here). Best of 3 runs after a
warm-up on 100,000 items."""
from concurrent.futures import ProcessPoolExecutor

from benchlib import best_of, now, result

N = 1_000_000
CHUNKSIZE = 1000
RUNS = 3


def double(x):
    return x * 2


def once(ex, n):
    t0 = now()
    total = 0
    for v in ex.map(double, range(1, n + 1), chunksize=CHUNKSIZE):
        total += v
    elapsed = now() - t0
    assert total == n * (n + 1), total
    return elapsed


def main():
    with ProcessPoolExecutor(max_workers=2) as ex:
        once(ex, N // 10)  # warm-up: starts the worker processes
        best = best_of(RUNS, lambda: once(ex, N))
    result(items_per_s=N / best, items=N, chunksize=CHUNKSIZE, runs=RUNS,
           note="chunksize=1000")


if __name__ == "__main__":
    main()
