"""Python's diskcache on the peer workloads of logcache-peers (benches/workload/src/run.rs).

    python diskcache_bench.py DIR KEYS VALUE_LEN
    python diskcache_bench.py DIR KEYS VALUE_LEN --processes P SECONDS

Prints one JSON object with the same fields as the Rust harness's `Run`. The harness runs
it with a virtualenv it makes under its work directory (`pip install diskcache`).

Durability: diskcache's SQLite runs in WAL mode with synchronous=NORMAL by default, which
does not fsync at commit; the durable workloads use a second Cache on the same directory
with sqlite_synchronous=2 (FULL), which fsyncs the WAL at every commit. diskcache has no
explicit compaction (SQLite reuses freed pages), so compact_secs is 0.

With --processes, it runs the multi-process workload (logcache_workload's `process_mix`) on
the store a run left in DIR: P processes (multiprocessing), each with its own Cache on DIR
(default settings), doing 9 reads of a random key for every write for SECONDS; it prints
their ops/s in all.
"""

import json
import multiprocessing
import os
import random
import sys
import threading
import time

import diskcache

BATCH = 1000
DURABLE_BATCH = 100
DURABLE_OPS = 1000
TIME_LIMIT = 2.0
MIX_TIME = 3.0
OVERWRITE_BYTES = 1 << 30
POOL = 1 << 20


class Memory:
    """Peak VmRSS and RssAnon of this process, sampled every 10 ms."""

    def __init__(self):
        self.rss = 0
        self.anon = 0
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def sample(self):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    self.rss = max(self.rss, int(line.split()[1]))
                elif line.startswith("RssAnon:"):
                    self.anon = max(self.anon, int(line.split()[1]))

    def loop(self):
        while not self.stop:
            self.sample()
            time.sleep(0.01)

    def finish(self):
        self.stop = True
        self.thread.join()
        self.sample()
        return self.rss * 1024 / 1e6, self.anon * 1024 / 1e6


def key16(i):
    return b"%016d" % i


def dir_bytes(d):
    total = 0
    for root, _, files in os.walk(d):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def bounded(max_ops, op):
    start = time.perf_counter()
    done = 0
    while done < max_ops:
        end = min(done + 64, max_ops)
        for i in range(done, end):
            op(i)
        done = end
        if time.perf_counter() - start >= TIME_LIMIT:
            break
    return done / (time.perf_counter() - start)


def values(value_len):
    """The value of key `i` in round `rnd_round`, as `Values` in the Rust harness."""
    pool = random.Random(7).randbytes(POOL + value_len)

    def value(i, rnd_round):
        off = ((i * 2654435761) ^ (rnd_round * 40503)) % POOL
        return pool[off : off + value_len]

    return value


def mix_until(cache, n, value, rng, rnd_round, deadline):
    """9 reads of a random one of the n loaded keys for every write of one (its value of
    round rnd_round), in steps of 64 until deadline (perf_counter); the operations done."""
    done = 0
    while time.perf_counter() < deadline:
        for _ in range(64):
            x = rng.getrandbits(64)
            i = (x >> 8) % n
            if x % 10 == 0:
                cache.set(key16(i), value(i, rnd_round))
            else:
                cache.get(key16(i))
        done += 64
    return done


def process_mix(args):
    """One process of the multi-process workload; its ops/s."""
    path, n, value_len, seconds, seed = args
    cache = diskcache.Cache(path)
    start = time.perf_counter()
    done = mix_until(cache, n, values(value_len), random.Random(1000 + seed), 3, start + seconds)
    rate = done / (time.perf_counter() - start)
    cache.close()
    return rate


def main():
    path, n, value_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4 and sys.argv[4] == "--processes":
        processes, seconds = int(sys.argv[5]), float(sys.argv[6])
        args = [(path, n, value_len, seconds, p) for p in range(processes)]
        with multiprocessing.Pool(processes) as workers:
            print(sum(workers.map(process_mix, args)))
        return
    value = values(value_len)

    mem = Memory()
    r = {}
    order = list(range(n))
    random.Random(11).shuffle(order)
    cache = diskcache.Cache(path, size_limit=1 << 62, eviction_policy="none")
    durable = diskcache.Cache(
        path, size_limit=1 << 62, eviction_policy="none", sqlite_synchronous=2
    )

    start = time.perf_counter()
    for b in range(0, n, BATCH):
        with cache.transact():
            for i in range(b, min(b + BATCH, n)):
                cache.set(key16(i), value(i, 0))
    # The load is made durable by a FULL-synchronous checkpoint of the WAL.
    durable._sql("PRAGMA wal_checkpoint(FULL)")
    r["load"] = n / (time.perf_counter() - start)
    r["disk_load_mb"] = dir_bytes(path) / 1e6

    def read_hit(i):
        assert cache.get(key16(order[i])) is not None

    def read_miss(i):
        assert cache.get(key16(n + order[i])) is None

    r["read_hit"] = bounded(n, read_hit)
    r["read_miss"] = bounded(n, read_miss)

    total = [0, 0]
    mix_start = time.perf_counter()

    def worker(t):
        total[t] = mix_until(cache, n, value, random.Random(100 + t), 1, mix_start + MIX_TIME)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r["mix"] = sum(total) / (time.perf_counter() - mix_start)

    r["durable_put"] = bounded(
        DURABLE_OPS, lambda i: durable.set(key16(2 * n + i), value(i, 0))
    )

    def durable_batch(b):
        first = 3 * n + b * DURABLE_BATCH
        with durable.transact():
            for i in range(first, first + DURABLE_BATCH):
                durable.set(key16(i), value(i, 0))

    r["durable_batch"] = DURABLE_BATCH * bounded(DURABLE_OPS, durable_batch)

    overwrites = max(1, min(n, OVERWRITE_BYTES // (16 + value_len)))
    targets = list(range(n))
    random.Random(12).shuffle(targets)
    start = time.perf_counter()
    for b in range(0, overwrites, BATCH):
        with cache.transact():
            for i in targets[b : min(b + BATCH, overwrites)]:
                cache.set(key16(i), value(i, 2))
    durable._sql("PRAGMA wal_checkpoint(FULL)")
    r["overwrite"] = overwrites / (time.perf_counter() - start)
    r["compact_secs"] = 0.0
    assert cache.get(key16(targets[0])) == value(targets[0], 2)
    mem.sample()
    cache.close()
    durable.close()
    r["disk_end_mb"] = dir_bytes(path) / 1e6

    start = time.perf_counter()
    reopened = diskcache.Cache(path)
    assert reopened.get(key16(order[0])) is not None
    r["open_ms"] = (time.perf_counter() - start) * 1e3
    reopened.close()
    r["peak_rss_mb"], r["peak_anon_mb"] = mem.finish()
    print(json.dumps(r))


if __name__ == "__main__":
    main()
