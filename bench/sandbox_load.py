"""/run_code through the router at saturation, and scaling from 1 to 2 sandbox replicas (loopback only).

Not a test: it starts ``genrm up``'s stack with no judge and N sandbox servers (``--sandbox-workers W`` each),
drives ``POST /run_code`` (a 10-line program reading stdin, as verl's sandbox_fusion client sends one test)
with ``--concurrency`` requests in flight for ``--seconds``, and prints a table per N: requests/s, p50 and p99
latency, errors; medians of ``--repeats`` runs. On a machine with few cores, give each replica few workers
(the default 1) so that 2 replicas have cores to scale onto.

    python bench/sandbox_load.py --replicas 1 2 --concurrency 16 --seconds 10 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.local_stack import LocalStack

PROGRAM = "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums), max(nums))\n"


async def drive(url: str, concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    body = {"code": PROGRAM, "language": "python", "stdin": " ".join(map(str, range(100))), "run_timeout": 5}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            async with session.post(url + "/run_code", json=body) as resp:
                answer = await resp.json()
            if resp.status != 200 or answer.get("status") != "Success":
                errors += 1
            else:
                latencies.append(time.perf_counter() - t0)

    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.monotonic() - t0, latencies, errors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="sandbox replicas to compare")
    p.add_argument("--workers", type=int, default=1, help="--sandbox-workers of each replica")
    p.add_argument("--concurrency", type=int, default=16, help="/run_code requests in flight")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    rows = []
    base = None
    for n in args.replicas:
        with LocalStack(0, sandbox_replicas=n, sandbox_args=["--sandbox-workers", str(args.workers)],
                        router_args=["--policy", "least_outstanding"]) as stack:
            asyncio.run(drive(stack.url, args.concurrency, 2.0))  # warm up
            runs = [asyncio.run(drive(stack.url, args.concurrency, args.seconds)) for _ in range(args.repeats)]
        rates = [len(lat) / wall for wall, lat, _ in runs]
        rate = statistics.median(rates)
        base = base or rate
        p50 = statistics.median(pct(lat, 0.50) for _, lat, _ in runs) * 1000
        p99 = statistics.median(pct(lat, 0.99) for _, lat, _ in runs) * 1000
        errors = sum(e for _, _, e in runs)
        rows.append(f"| {n} x {args.workers} | {rate:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {rate / base:.2f}x "
                    f"| {p50:.1f} | {p99:.1f} | {errors} |")
    print(f"\n/run_code through the router, {args.concurrency} in flight, {args.seconds:g} s x {args.repeats}")
    print(f"| sandbox replicas x workers | requests/s (range) | vs {args.replicas[0]} | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
