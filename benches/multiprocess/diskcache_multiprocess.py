"""diskcache with several processes: the workload of logcache-benches' `multiprocess` bin.

    python3 diskcache_multiprocess.py DIR KEYS SECONDS PROCESSES

Loads KEYS 16-byte keys with 100-byte values into a diskcache.Cache (default settings), then
runs PROCESSES processes (multiprocessing), each with its own Cache on DIR, looping over a
random key, 9 gets for each put, for SECONDS. Prints the aggregate operations per second.
"""

import multiprocessing
import random
import sys
import time

import diskcache


def key16(i):
    """The 16-byte key of item `i`: its number in sixteen decimal digits (as key16 in Rust)."""
    return b"%016d" % i


def worker(args):
    directory, keys, seconds, seed = args
    cache = diskcache.Cache(directory)
    rng = random.Random(seed)
    value = bytes([7]) * 100
    deadline = time.monotonic() + seconds
    ops = 0
    while time.monotonic() < deadline:
        for _ in range(100):
            k = key16(rng.randrange(keys))
            if ops % 10 == 9:
                cache.set(k, value)
            else:
                cache.get(k)
            ops += 1
    cache.close()
    return ops


def main():
    directory, keys, seconds, processes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    with diskcache.Cache(directory) as cache:
        value = bytes([7]) * 100
        for i in range(keys):
            cache.set(key16(i), value)
    with multiprocessing.Pool(processes) as pool:
        ops = sum(pool.map(worker, [(directory, keys, seconds, p + 1) for p in range(processes)]))
    print(ops / seconds)


if __name__ == "__main__":
    main()
