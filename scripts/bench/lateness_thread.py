"""Baseline for lateness_thread.lua: a spinning task on ThreadPoolExecutor(1)
and f.result(timeout=0.02), 200 trials. Prints the p99 of how long after
the deadline result() raised TimeoutError.

Python cannot stop a running thread: the timeout only ends the wait. So
each trial then sleeps 100 ms and checks whether the task is still running
(it always is), and only then sets the Event that lets the spin return.
`stopped` counts the trials in which the task had stopped by then; the note
in the table says so when it is not all of them. The figure is therefore
NOT comparable with weft's, which includes stopping the task."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError

from benchlib import lateness_fields, now, result

TRIALS = 200
T = 0.02  # the wait's timeout, seconds
CHECK_AFTER = 0.1  # when to look whether the task is still running


def spin(stop):
    # Pure-Python busy loop; the only way to end it is to ask it to end.
    while not stop.is_set():
        pass


def trial(ex):
    """One trial: returns the raise lateness (seconds) and whether the task
    had stopped CHECK_AFTER seconds after the raise."""
    stop = threading.Event()
    t0 = now()
    f = ex.submit(spin, stop)
    try:
        f.result(timeout=T)
        raise AssertionError("the spin finished on its own")
    except TimeoutError:
        late = now() - (t0 + T)
    time.sleep(CHECK_AFTER)
    stopped = f.done()
    stop.set()
    f.result()
    return late, stopped


def main():
    with ThreadPoolExecutor(max_workers=1) as ex:
        trial(ex)  # warm-up: starts the worker thread
        lates, stopped = [], 0
        for _ in range(TRIALS):
            late, s = trial(ex)
            lates.append(late)
            stopped += s
    fields = lateness_fields(lates, T)
    fields["stopped"] = stopped
    if stopped < TRIALS:
        fields["note"] = "task NOT stopped in %d of %d" % (TRIALS - stopped, TRIALS)
    result(**fields)


if __name__ == "__main__":
    main()
