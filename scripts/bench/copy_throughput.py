"""Baseline for copy_throughput.lua: the same 100,000 records and 100,000
integers through pickle.dumps then pickle.loads (what ProcessPoolExecutor
does to every argument and result). Prints records per second, best of 5
runs after a warm-up."""
import pickle

from benchlib import best_of, now, result

N = 100_000
RUNS = 5


def main():
    records = [{"id": i, "name": "item-%d" % i, "score": i * 0.5,
                "tags": ["red", "green", "blue"], "where": {"x": i, "y": -i}}
               for i in range(1, N + 1)]
    value = {"records": records, "ints": [i * 7 for i in range(1, N + 1)]}
    size = [0]

    def once():
        t0 = now()
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        back = pickle.loads(data)
        elapsed = now() - t0
        assert back["records"][-1]["name"] == "item-%d" % N
        size[0] = len(data)
        return elapsed

    once()
    best = best_of(RUNS, once)
    result(records_per_s=N / best, mb_per_s=size[0] / best / 1e6,
           bytes=size[0], runs=RUNS)


if __name__ == "__main__":
    main()
