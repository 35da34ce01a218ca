"""What one routing decision costs as the pool grows: the router's own policies and worker pool, in process.

For 4, 8, 80 and 800 workers (today's tests use up to 8; 10x and 100x), each policy picks a worker for reward
requests the way the router does: the available workers are listed from the pool, then the policy selects.
Requests carry GRPO group keys (``X-Affinity-Key: g:<id>``), groups of ``--group`` samples, with the loads
moving as the picks add in-flight requests and finished ones leave. Printed per pool size:

- µs per decision (pool listing + select), median of ``--repeats``;
- affinity: ms to build its ring when the set of available workers changes (a worker ejected, drained or
  added, more often the larger the pool), and the placed-key memory (its LRU of group keys, full);
- cache_aware: bytes per remembered prefix block, and its memory at the default cap per worker.

    python bench/policy_scale_bench.py
    python bench/policy_scale_bench.py --sizes 8 800 --decisions 20000
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.policies import create_policy
from router.policies.cache_aware import CacheAware, CacheAwareConfig
from router.request_info import RequestInfo
from router.workers import WorkerPool


def _pool(n: int) -> WorkerPool:
    pool = WorkerPool([f"http://10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(n)])
    for w in pool.workers:
        w.ready = True
    return pool


def _requests(count: int, group: int, prompt_chars: int) -> list[RequestInfo]:
    """Reward requests of consecutive GRPO groups, each with its key header and a prompt of its group."""
    out = []
    for i in range(count):
        g = i // group
        body = f'{{"question": "{(f"problem {g} ") * (prompt_chars // 12)}", "solution": "s{i}"}}'.encode()
        out.append(RequestInfo("/v1/reward", body, [(b"x-affinity-key", f"g:{g}".encode())]))
    return out


def decision_us(policy_name: str, n: int, decisions: int, group: int, in_flight_per_worker: int) -> float:
    """Mean µs per decision with about ``in_flight_per_worker`` requests in flight on each worker."""
    pool = _pool(n)
    policy = create_policy(policy_name)
    requests = _requests(decisions, group, 2000)
    for r in requests:
        r.affinity_hash  # noqa: B018 - parsed by the router before the policy runs: not the policy's cost
        r.text  # noqa: B018
    live: list = []
    target = max(1, n * in_flight_per_worker)
    rng = random.Random(0)
    gc.collect()
    started = time.perf_counter()
    for request in requests:
        workers = pool.eligible()
        chosen = policy.select(workers, request)
        chosen.in_flight += 1
        live.append(chosen)
        if len(live) > target:  # a request ends somewhere: loads move as in service
            done = live.pop(rng.randrange(len(live)))
            done.in_flight -= 1
    return (time.perf_counter() - started) / decisions * 1e6


def ring_rebuild_ms(n: int, group: int) -> float:
    """Median ms of a decision right after the available set changed (it includes the ring rebuild)."""
    pool = _pool(n)
    policy = create_policy("affinity")
    requests = _requests(41, 1, 200)  # a new group each time: placed by the ring, not by its remembered worker
    for r in requests:
        r.affinity_hash  # noqa: B018
    workers = pool.eligible()
    policy.select(workers, requests[-1])  # every worker's vnode positions hashed once (kept across sets)
    times = []
    for k in range(min(40, n)):  # a different worker missing each time: a new set, a new ring
        subset = workers[:k] + workers[k + 1:]
        started = time.perf_counter()
        policy.select(subset, requests[k])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def listing_us(n: int, decisions: int) -> float:
    """µs to list the available workers (the part of every decision that is the pool's, not the policy's)."""
    pool = _pool(n)
    started = time.perf_counter()
    for _ in range(decisions):
        pool.eligible()
    return (time.perf_counter() - started) / decisions * 1e6


def placed_memory_mb(keys: int) -> float:
    """Memory of affinity's placed-key LRU holding ``keys`` group keys."""
    pool = _pool(8)
    policy = create_policy("affinity")
    workers = pool.eligible()
    requests = _requests(keys, 1, 40)
    for r in requests:
        r.affinity_hash  # noqa: B018
    return _bytes_kept(policy, workers, requests) / 2**20


def cache_block_bytes(blocks: int = 20000) -> float:
    """Bytes per prefix block cache_aware remembers for one worker."""
    pool = _pool(1)
    policy = CacheAware(CacheAwareConfig(max_blocks=10**9))
    chars = CacheAwareConfig().block_chars
    requests = [RequestInfo("/v1/chat/completions", b"", json={"messages": [
        {"role": "user", "content": f"{i:08d}" * (chars // 8)}]}) for i in range(blocks)]
    for r in requests:
        r.text  # noqa: B018
    return _bytes_kept(policy, pool.eligible(), requests) / blocks


def _bytes_kept(policy, workers: list, requests: list[RequestInfo]) -> int:
    """Memory the policy holds after deciding ``requests`` (their own parsing done beforehand, not counted)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for r in requests:
        policy.select(workers, r)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 80, 800])
    parser.add_argument("--policies", nargs="+", default=["least_outstanding", "affinity", "cache_aware"])
    parser.add_argument("--decisions", type=int, default=20000, help="decisions per measurement")
    parser.add_argument("--group", type=int, default=16, help="samples per GRPO group")
    parser.add_argument("--in-flight", type=int, default=16, help="requests in flight per worker")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"load {os.getloadavg()[0]:.1f}; median of {args.repeats}; {args.in_flight} in flight per worker, "
          f"groups of {args.group}")
    print(f"| workers | pool listing µs | {' | '.join(f'{p} µs/decision' for p in args.policies)} "
          "| affinity decision after a set change ms (ring rebuilt) |")
    print("|---|---|" + "---|" * (len(args.policies) + 1))
    for n in args.sizes:
        cells = []
        for name in args.policies:
            runs = [decision_us(name, n, args.decisions, args.group, args.in_flight) for _ in range(args.repeats)]
            cells.append(f"{statistics.median(runs):.1f}")
        rebuild = statistics.median(ring_rebuild_ms(n, args.group) for _ in range(args.repeats))
        listing = statistics.median(listing_us(n, args.decisions) for _ in range(args.repeats))
        print(f"| {n} | {listing:.1f} | {' | '.join(cells)} | {rebuild:.2f} |")
    from router.policies.affinity import _PLACED_KEPT

    print(f"\naffinity placed-key LRU, full ({_PLACED_KEPT:,} keys): {placed_memory_mb(_PLACED_KEPT):.1f} MB")
    per_block = cache_block_bytes()
    cap = CacheAwareConfig().max_blocks
    print(f"cache_aware: {per_block:.0f} bytes per block; at the default cap ({cap:,} blocks per worker): "
          f"{per_block * cap / 2**20:.0f} MB per worker (that rate times the cap, not measured at it)")


if __name__ == "__main__":
    main()
