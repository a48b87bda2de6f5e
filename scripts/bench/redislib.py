"""Shared by the Redis "baselines" (redis_map.py, redis_roundtrip.py).

These are not Python baselines: Python only drives redis-benchmark here,
to print the ceiling (or floor) the Redis server itself sets, beside
weft's figure. redis_server() starts /usr/bin/redis-server (REDIS_SERVER
overrides) the way scripts/bench/redislib.lua does: in a fresh temporary
directory, on a Unix socket only (--port 0 --save "" --appendonly no),
waiting for the socket and a PING (redis-cli -s). It yields the socket
path; on the way out (an error or SIGTERM too) it stops the server
(SIGTERM, SIGKILL 5 s later) and removes the directory.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")

# A task message as weft sends one: field m (the task, ~190-210 bytes for a
# trivial function and argument) and field s (its 32-byte signature).
TASK_FIELDS = ["m", "x" * 200, "s", "y" * 32]


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def redis_server():
    signal.signal(signal.SIGTERM, _sigterm)
    tmp = tempfile.mkdtemp(prefix="weft-bench-redis.")
    sock = os.path.join(tmp, "r.sock")
    log = open(os.path.join(tmp, "redis.log"), "w")
    server = None
    try:
        server = subprocess.Popen(
            [REDIS_SERVER, "--port", "0", "--unixsocket", sock,
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", tmp],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if server.poll() is not None:
                raise RuntimeError("redis-server exited: "
                                   + open(log.name).read())
            if os.path.exists(sock) and subprocess.run(
                    ["redis-cli", "-s", sock, "ping"], capture_output=True,
                    text=True).stdout.strip() == "PONG":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in 10 s")
            time.sleep(0.02)
        yield sock
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def benchmark_csv(sock, *args):
    """Runs redis-benchmark -s sock --csv ARGS... and returns its one row of
    figures as a dict (rps, p50_latency_ms, ...), as floats."""
    out = subprocess.run(["redis-benchmark", "-s", sock, "--csv", *args],
                         capture_output=True, text=True, check=True,
                         timeout=120).stdout
    rows = [line for line in out.splitlines() if line.startswith('"')]
    header = [h.strip('"') for h in rows[0].split(",")]
    # The first column (the command) may hold commas; the numbers are last.
    values = rows[1].split('","')
    values = values[-(len(header) - 1):]
    return {k: float(v.strip('"')) for k, v in zip(header[1:], values)}
