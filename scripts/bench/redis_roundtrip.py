"""Floor for redis_roundtrip.lua, not a Python baseline: Python only
drives redis-benchmark. On a private redis-server set up as
redis_roundtrip.lua's (scripts/bench/redislib.py), `redis-benchmark -n
20000 -c 1 PING`: one connection, one command at a time. Its median
latency is one Redis round trip, as redis-benchmark (a C client) sees it;
a weft task takes several (the client's XADD, the worker's read, its result
write, the client's read of the result), so this is the floor, not a
figure to beat. Best (lowest median) of 3 runs: on 2 busy cores it swings
between under 10 and about 80 us with where the scheduler puts the two
processes."""
from benchlib import result
from redislib import benchmark_csv, redis_server

N = 20_000
RUNS = 3


def main():
    with redis_server() as sock:
        benchmark_csv(sock, "-n", "2000", "-c", "1", "PING")  # warm-up
        rows = [benchmark_csv(sock, "-n", str(N), "-c", "1", "PING")
                for _ in range(RUNS)]
    row = min(rows, key=lambda r: r["p50_latency_ms"])
    result(p50_ms=row["p50_latency_ms"], p99_ms=row["p99_latency_ms"],
           rps=row["rps"], requests=N, runs=RUNS,
           note="one Redis round trip (PING, 1 connection): the floor; p99 %.3f ms"
           % row["p99_latency_ms"])


if __name__ == "__main__":
    main()
