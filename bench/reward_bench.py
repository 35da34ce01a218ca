"""Benchmark the math recipe on a GRPO-shaped batch: in-process vs the batch endpoint vs per-item requests.

4,096 samples (512 prompts x 8 responses, ~1,500-character solutions ending in a boxed answer, half of
them correct) are scored (1) in-process with ``compute_math``, (2) with ``POST /v1/reward/batch`` on one
server and through the router, (3) with per-item ``POST /v1/reward`` calls (aiohttp, bounded concurrency)
on one server and through the router. A local stack (2 GenRM servers + router, tiny model) is started
and stopped by the script. Every result is checked against the in-process scores. Median of --repeats runs,
modes interleaved per repeat.

    python bench/reward_bench.py                 # defaults: 512 x 8 samples, 3 repeats, concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import aiohttp

from services.local_stack import LocalStack
from trainer_client.math_rule import compute_math

Samples = list[dict]


def make_samples(prompts: int, group: int) -> Samples:
    filler = "We expand the expression and simplify each term carefully, checking the arithmetic. " * 18
    samples = []
    for p in range(prompts):
        answer = str(p * 7 + 3)
        for r in range(group):
            given = answer if r % 2 == 0 else str(p * 7 + 4)
            samples.append({"recipe": "math", "question": f"Problem {p}: compute the value.",
                            "solution": f"Step 1: {filler}\nStep 2: so the result is \\boxed{{{given}}}.",
                            "ground_truth": answer, "group_id": str(p), "extra_info": {"index": p, "split": "train"}})
    return samples


def in_process(samples: Samples) -> list[float]:
    return [compute_math(s["solution"], s["ground_truth"]).score for s in samples]


async def batch(session: aiohttp.ClientSession, url: str, samples: Samples, chunk: int) -> list[float]:
    async def one(part: Samples) -> list[float]:
        async with session.post(url + "/v1/reward/batch", json={"samples": part}) as resp:
            assert resp.status == 200, await resp.text()
            return [item["result"]["score"] for item in (await resp.json())["results"]]

    parts = await asyncio.gather(*(one(samples[i : i + chunk]) for i in range(0, len(samples), chunk)))
    return [score for part in parts for score in part]


async def per_item(session: aiohttp.ClientSession, url: str, samples: Samples, concurrency: int) -> list[float]:
    scores: list[float] = [0.0] * len(samples)
    indices = iter(range(len(samples)))

    async def worker() -> None:
        for i in indices:
            async with session.post(url + "/v1/reward", json=samples[i]) as resp:
                assert resp.status == 200, await resp.text()
                scores[i] = (await resp.json())["score"]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return scores


async def run(stack: LocalStack, samples: Samples, args: argparse.Namespace) -> dict[str, list[float]]:
    expected = in_process(samples)
    server = stack.servers[0].url
    modes: dict[str, Callable[[aiohttp.ClientSession], Awaitable[list[float]]]] = {
        "batch endpoint, one server": lambda s: batch(s, server, samples, args.chunk),
        "batch endpoint, via router": lambda s: batch(s, stack.url, samples, args.chunk),
        "per-item, one server": lambda s: per_item(s, server, samples, args.concurrency),
        "per-item, via router": lambda s: per_item(s, stack.url, samples, args.concurrency),
    }
    rates: dict[str, list[float]] = {"in-process compute_math": [], **{m: [] for m in modes}}
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        for mode in modes.values():  # warm-up: connections, caches, first-call imports
            await mode(session)
        for r in range(args.repeats):
            t0 = time.perf_counter()
            in_process(samples)
            rates["in-process compute_math"].append(len(samples) / (time.perf_counter() - t0))
            for name, mode in modes.items():
                t0 = time.perf_counter()
                scores = await mode(session)
                rates[name].append(len(samples) / (time.perf_counter() - t0))
                assert scores == expected, f"{name}: scores differ from in-process"
                print(f"repeat {r + 1}/{args.repeats} {name}: {rates[name][-1]:,.0f} samples/s", file=sys.stderr)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=512, help="GRPO prompts [default: 512].")
    parser.add_argument("--group", type=int, default=8, help="Responses per prompt [default: 8].")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per mode [default: 3].")
    parser.add_argument("--chunk", type=int, default=1024, help="Samples per batch request [default: 1024].")
    parser.add_argument("--concurrency", type=int, default=64, help="Per-item requests in flight [default: 64].")
    args = parser.parse_args(argv)
    samples = make_samples(args.prompts, args.group)
    with tempfile.TemporaryDirectory(prefix="genrm-bench-") as logs, LocalStack(2, log_dir=logs) as stack:
        rates = asyncio.run(run(stack, samples, args))
    base = statistics.median(rates["in-process compute_math"])
    print(f"\n{len(samples)} samples ({args.prompts} prompts x {args.group}), math recipe, median of {args.repeats}\n")
    print("| mode | samples/s | vs in-process |\n|---|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / base:.3f}x |")
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"batch chunk {args.chunk}, per-item concurrency {args.concurrency}; all scores checked against in-process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
