"""Baseline for lateness_signal.lua: signal.setitimer(ITIMER_REAL, 0.02)
with a SIGALRM handler that raises, around a pure-Python busy loop in the
main thread; 200 trials. Prints the p99 of how long after t0 + 0.02 the
exception reached the caller (the loop has stopped by then)."""
import signal

from benchlib import lateness_fields, now, result

TRIALS = 200
T = 0.02  # the timeout, seconds


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout()


def spin():
    while True:
        pass


def trial():
    """One trial: returns the lateness, in seconds."""
    t0 = now()
    signal.setitimer(signal.ITIMER_REAL, T)
    try:
        spin()
    except Timeout:
        late = now() - (t0 + T)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return late


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    trial()  # warm-up
    lates = [trial() for _ in range(TRIALS)]
    result(**lateness_fields(lates, T))


if __name__ == "__main__":
    main()
