"""Shared helpers for the Python baselines in scripts/bench/.

Each baseline prints its figure as one machine-readable line, the same
format the weft benchmarks use (scripts/bench/benchlib.lua):

    RESULT us_per_task=31.2 tasks=20000 runs=5

The first key is the figure scripts/bench/run compares; the rest are notes.
Values are numbers, except an optional note="..." (a string without double
quotes), which the table shows beside the figure.
"""
import gc
import math
import sys
import time

PAGE_SIZE = 4096  # /proc/self/statm counts pages


def now():
    """Wall-clock seconds from a monotonic clock."""
    return time.perf_counter()


def best_of(runs, fn):
    """Calls fn() `runs` times (collecting garbage before each) and returns
    the smallest value it returned: the run least disturbed by the machine."""
    best = None
    for _ in range(runs):
        gc.collect()
        t = fn()
        if best is None or t < best:
            best = t
    return best


def percentile(samples, p):
    """The p-th percentile (0 < p <= 100) of a list of numbers, by nearest
    rank: the smallest sample that at least p % of the samples do not exceed."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


def lateness_fields(lates, timeout):
    """The usual figures of a lateness benchmark, in milliseconds, as
    keyword arguments for result(): p99 first, then p50, max, trials and
    the timeout used."""
    return dict(p99_ms=percentile(lates, 99) * 1e3,
                p50_ms=percentile(lates, 50) * 1e3,
                max_ms=percentile(lates, 100) * 1e3,
                trials=len(lates), timeout_ms=timeout * 1e3)


def rss_bytes():
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def fmt(v):
    if isinstance(v, str):
        assert '"' not in v, "a RESULT string cannot hold a double quote"
        return '"%s"' % v
    if isinstance(v, float):
        return "%.0f" % v if abs(v) >= 1000 else "%.4g" % v
    return str(v)


def result(**fields):
    """Prints the RESULT line; keyword order is kept, the first is the figure."""
    print("RESULT " + " ".join("%s=%s" % (k, fmt(v)) for k, v in fields.items()))
    sys.stdout.flush()
