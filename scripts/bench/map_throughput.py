"""Baseline for map_throughput.lua: ThreadPoolExecutor(2).map(lambda x: x * 2)
over 1..N, every result iterated and summed. Python needs ~17 us per item
here, so it runs on 100,000 items (weft runs 1,000,000); items/s is
comparable either way. Best of 3 runs after a warm-up."""
from concurrent.futures import ThreadPoolExecutor

from benchlib import best_of, now, result

N = 100_000
RUNS = 3


def once(ex, n):
    items = range(1, n + 1)
    t0 = now()
    total = 0
    for v in ex.map(lambda x: x * 2, items):
        total += v
    elapsed = now() - t0
    assert total == n * (n + 1), total
    return elapsed


def main():
    with ThreadPoolExecutor(max_workers=2) as ex:
        once(ex, N // 10)  # warm-up
        best = best_of(RUNS, lambda: once(ex, N))
    result(items_per_s=N / best, items=N, runs=RUNS)


if __name__ == "__main__":
    main()
