"""Baseline for cpu_scaling.lua: CPU-bound pure-Python loops split into 8
tasks, on ThreadPoolExecutor(1) and then (2). Prints the speedup
time(1 worker) / time(2 workers); the GIL keeps it near 1.

Python runs 1,000,000 iterations per task where weft runs 10,000,000
(Python is ~5x slower per iteration); a speedup does not depend on the
size, as long as each run is long enough to time."""
from concurrent.futures import ThreadPoolExecutor, wait

from benchlib import best_of, now, result

TASKS = 8
ITERS = 1_000_000  # per task
RUNS = 3


def spin(n):
    # The same loop as cpu_scaling.lua: a few float operations per turn.
    x = 0.0
    for i in range(1, n + 1):
        x = x + (i % 7) * 0.5 - x * 1e-9
    return x


def time_with(workers, expected):
    with ThreadPoolExecutor(max_workers=workers) as ex:
        wait([ex.submit(spin, 1000) for _ in range(workers)])  # start threads

        def once():
            t0 = now()
            futs = [ex.submit(spin, ITERS) for _ in range(TASKS)]
            for f in futs:
                assert f.result() == expected
            return now() - t0

        return best_of(RUNS, once)


def main():
    expected = spin(ITERS)
    t1 = time_with(1, expected)
    t2 = time_with(2, expected)
    result(speedup=t1 / t2, t1_s=t1, t2_s=t2, tasks=TASKS, iters=ITERS)


if __name__ == "__main__":
    main()
