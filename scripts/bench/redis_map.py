"""Ceiling for redis_map.lua, not a Python baseline: Python only drives
redis-benchmark. On a private redis-server set up as redis_map.lua's
(scripts/bench/redislib.py), `redis-benchmark -n 200000 -P 16` (50
connections, 16 commands pipelined on each) runs XADD weft:bench:tasks *
m <200 bytes> s <32 bytes>, a message the size of a trivial weft task.
Its rate is how many tasks per second the server could take in at all;
a task through weft also needs its read by a worker, its ack, its result
and the client's read of it, so weft stays well below. Best of 3."""
from benchlib import result
from redislib import TASK_FIELDS, benchmark_csv, redis_server

N = 200_000
PIPELINE = 16
RUNS = 3


def main():
    with redis_server() as sock:
        best = 0.0
        for _ in range(RUNS):
            row = benchmark_csv(sock, "-n", str(N), "-P", str(PIPELINE),
                                "XADD", "weft:bench:tasks", "*", *TASK_FIELDS)
            best = max(best, row["rps"])
    result(tasks_per_s=best, requests=N, pipeline=PIPELINE, runs=RUNS,
           note="redis-benchmark XADD -P %d: the server's ceiling" % PIPELINE)


if __name__ == "__main__":
    main()
