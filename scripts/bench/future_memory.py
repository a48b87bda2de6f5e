"""Baseline for future_memory.lua: the RSS growth of pending
concurrent.futures.Future objects kept in a list, in bytes per future.
The list itself is allocated before the first measurement, so only the
futures are counted.

Python needs ~7 us to make one Future (each holds a Condition and an
RLock), so it makes 200,000 where weft makes 1,000,000: a million would
take 12 s here and give the same bytes per future (1,716 measured)."""
import gc
from concurrent.futures import Future

from benchlib import result, rss_bytes

N = 200_000


def main():
    futs = [None] * N
    gc.collect()
    before = rss_bytes()
    for i in range(N):
        futs[i] = Future()
    gc.collect()
    after = rss_bytes()
    assert not futs[-1].done()
    result(bytes_per_future=(after - before) / N, futures=N)


if __name__ == "__main__":
    main()
