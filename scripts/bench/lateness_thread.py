"""Baseline for lateness_thread.lua: a spinning task on ThreadPoolExecutor(1)
and f.result(timeout=0.02), 200 trials. Prints the p99 of how long after
the deadline result() raised TimeoutError.

Python cannot stop a running thread: the timeout only ends the wait. So
each trial then sleeps 100 ms and checks whether the task is still running
(it always is), and only then sets the Event that lets the spin return.
`stopped` counts the trials in which the task had stopped by then; the note
in the table says so when it is not all of them. The figure is therefore
NOT comparable with weft's, which includes stopping the task.

With a worker count W as first argument (lateness_thread_4.py passes 4),
each trial runs W spins at once on ThreadPoolExecutor(W), the i-th waited
for with timeout T + (i - 1) * 3 ms, as lateness_thread.lua does."""
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError

from benchlib import lateness_fields, now, result

TRIALS = 200
T = 0.02  # the wait's timeout, seconds
CHECK_AFTER = 0.1  # when to look whether the task is still running
STAGGER = 0.003  # seconds between the deadlines of one trial's spins


def spin(stop):
    # Pure-Python busy loop; the only way to end it is to ask it to end.
    while not stop.is_set():
        pass


def trial(ex, w):
    """One trial: returns the raise latenesses (seconds) of its w spins and
    how many had stopped CHECK_AFTER seconds after the last raise."""
    stop = threading.Event()
    futs, deadlines, lates = [], [], []
    for i in range(w):
        deadlines.append(now() + T + i * STAGGER)
        futs.append(ex.submit(spin, stop))
    for f, d in zip(futs, deadlines):
        try:
            f.result(timeout=max(0, d - now()))
            raise AssertionError("the spin finished on its own")
        except TimeoutError:
            lates.append(now() - d)
    time.sleep(CHECK_AFTER)
    stopped = sum(f.done() for f in futs)
    stop.set()
    for f in futs:
        f.result()
    return lates, stopped


def main():
    w = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    with ThreadPoolExecutor(max_workers=w) as ex:
        trial(ex, w)  # warm-up: starts the worker threads
        lates, stopped = [], 0
        for _ in range(TRIALS):
            late, s = trial(ex, w)
            lates.extend(late)
            stopped += s
    fields = lateness_fields(lates, T)
    fields["stopped"] = stopped
    fields["workers"] = w
    if stopped < TRIALS * w:
        fields["note"] = "task NOT stopped in %d of %d" % (TRIALS * w - stopped, TRIALS * w)
    result(**fields)


if __name__ == "__main__":
    main()
