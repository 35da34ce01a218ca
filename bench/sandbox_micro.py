"""Per-run cost of the sandbox's variants against a bare subprocess (no isolation at all).

A "sample" is one program run on --tests stdins (a 10-test stdin/stdout problem), the unit the code reward
scores. Variants, each checked for the right output on every run:

- bare subprocess   ``python3 -c CODE`` per test, no isolation (the floor a fresh interpreter sets)
- bwrap per test    a fresh bubblewrap sandbox + interpreter per test (full isolation, nothing reused)
- session, cold     one sandbox per sample, its runner started on demand, one forked child per test
- session, warm     the same with the sandbox started ahead of the sample (``Sandbox(prewarm=True)``)

Two programs: a trivial one (``print(sum(...))``) and one that imports what verl's call-based wrapper imports
(~20 stdlib modules: a fresh interpreter pays for them on every test; the runner has them pre-loaded).
Prints a table of medians over --repeats runs: ms per test, ms per sample (sequential), and samples/s with
--concurrency samples in flight (the machine's cores by default).

    python bench/sandbox_micro.py                  # 10 tests a sample, 5 repeats
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from services.sandbox import BwrapConfig, Limits, Sandbox, bwrap
from services.sandbox.pool import BASE_UID

TRIVIAL = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"
IMPORTS = ("import string, re, datetime, collections, heapq, bisect, copy, math, random, statistics, itertools, "
           "functools, operator, io, sys, json, typing, decimal, fractions\n" + TRIVIAL)
PROGRAMS = {"trivial": TRIVIAL, "verl imports": IMPORTS}
STDIN = "1 2 3 4 5 6 7 8 9 {i}\n"


def expected(i: int) -> str:
    return f"{45 + i}\n"


def _as_user() -> dict:
    return {"user": BASE_UID, "group": BASE_UID, "extra_groups": []} if os.geteuid() == 0 else {}


def bare_subprocess(code: str, tests: int) -> None:
    python = BwrapConfig().python
    for i in range(tests):
        out = subprocess.run([python, "-c", code], input=STDIN.format(i=i).encode(), capture_output=True,
                             env=bwrap.SANDBOX_ENV, **_as_user())
        assert out.stdout.decode() == expected(i), out


def bwrap_per_test(code: str, tests: int) -> None:
    config = BwrapConfig()
    path = config.resolved_bwrap()
    assert path is not None, "bwrap is not installed"
    argv = bwrap.command(config, path, [config.python, "-c", code], Limits().files_bytes)
    for i in range(tests):
        out = subprocess.run(argv, input=STDIN.format(i=i).encode(), capture_output=True, env=bwrap.SANDBOX_ENV,
                             cwd="/", **_as_user())
        assert out.stdout.decode() == expected(i), out


async def session(sandbox: Sandbox, code: str, tests: int) -> None:
    async with sandbox.open("python", code) as s:
        for i in range(tests):
            raw = await s.run(STDIN.format(i=i))
            assert (raw.status, raw.stdout) == ("ok", expected(i)), raw


async def timed_samples(one: Callable[[], Awaitable[None]], samples: int, concurrency: int) -> float:
    """Seconds for ``samples`` samples with ``concurrency`` in flight."""
    queue = list(range(samples))

    async def worker() -> None:
        while queue:
            queue.pop()
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(name: str, code: str, tests: int, repeats: int, samples: int, concurrency: int) -> dict:
    """Median ms/sample (sequential) and samples/s (concurrent) of each variant."""
    cold = Sandbox(workers=concurrency, prewarm=False)
    warm = Sandbox(workers=concurrency, prewarm=True)
    await cold.check()
    await warm.check()
    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "bare subprocess": lambda: asyncio.to_thread(bare_subprocess, code, tests),
        "bwrap per test": lambda: asyncio.to_thread(bwrap_per_test, code, tests),
        "session, cold": lambda: session(cold, code, tests),
        "session, warm": lambda: session(warm, code, tests),
    }
    sequential: dict[str, list[float]] = {v: [] for v in variants}
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for one in variants.values():  # one untimed pass each: caches, the warm pool's first sandboxes
        await one()
    for _ in range(repeats):
        for variant, one in variants.items():  # interleaved: drift on a shared machine hits every variant
            if variant == "session, warm":
                await asyncio.sleep(0.05)  # the sandbox started ahead is ready, as between a trainer's samples
            started = time.perf_counter()
            await one()
            sequential[variant].append(time.perf_counter() - started)
            rates[variant].append(samples / await timed_samples(one, samples, concurrency))
    await cold.aclose()
    await warm.aclose()
    return {v: (statistics.median(sequential[v]) * 1000, statistics.median(rates[v])) for v in variants}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=10, help="tests a sample")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=16, help="samples per throughput measurement")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} cores, python {sys.version.split()[0]} "
          f"(sandbox: {BwrapConfig().python}), {args.tests} tests a sample, median of {args.repeats}, "
          f"concurrency {args.concurrency}, as {'root (sandbox uids 61000+)' if os.geteuid() == 0 else 'user'}")
    print(f"{'program':<14} {'variant':<17} {'ms/test':>8} {'ms/sample':>10} {'vs bare':>8} {'samples/s':>10}")
    for name, code in PROGRAMS.items():
        table = await measure(name, code, args.tests, args.repeats, args.samples, args.concurrency)
        bare = table["bare subprocess"][0]
        for variant, (ms, rate) in table.items():
            print(f"{name:<14} {variant:<17} {ms / args.tests:8.2f} {ms:10.1f} {ms / bare:7.2f}x {rate:10.1f}")


if __name__ == "__main__":
    asyncio.run(main())
