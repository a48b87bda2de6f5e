"""Baseline for memory_burst.lua: RSS after a burst of 100,000 tasks on a
ThreadPoolExecutor (one worker per CPU) and its shutdown, divided by RSS
before the burst (after a warm-up pool). Each task returns a small list;
every future is held until all results are collected, then everything is
dropped, collected, and RSS measured 0.2 s later."""
import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor

from benchlib import result, rss_bytes

N = 100_000


def task(x):
    return [x, str(x)]


def settled_rss():
    gc.collect()
    time.sleep(0.2)
    gc.collect()
    return rss_bytes()


def burst():
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as ex:
        futs = [ex.submit(task, i) for i in range(N)]
        for i, f in enumerate(futs):
            assert f.result()[0] == i
        gc.collect()
        return rss_bytes()


def main():
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as ex:
        ex.submit(task, 1).result()
    pre = settled_rss()
    peak = burst()
    after = settled_rss()
    result(after_per_pre=after / pre, pre_mb=pre / 1e6, peak_mb=peak / 1e6,
           after_mb=after / 1e6, tasks=N)


if __name__ == "__main__":
    main()
