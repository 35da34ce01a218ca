"""Benchmark the transformers engine of one GenRM server through real HTTP: dynamic batching vs sequential.

What it measures: one ``genrm serve`` process (transformers engine, tiny random-weight model unless
``--model DIR``) is started on loopback. For each mode (concurrency 1 = sequential, then e.g. 8, 32, 64
requests in flight) a fixed number of ``POST /v1/completions`` requests is sent from one shared
``aiohttp.ClientSession`` (lean enough not to be the bottleneck), each forced to
generate exactly ``--max-tokens`` tokens (``ignore_eos``, greedy).
Per run: wall time, output tokens/s (sum of ``usage.completion_tokens`` / wall), requests/s, p50/p99
request latency, and the mean engine batch size seen by the server (``genrm_server_batch_size``
histogram ``_sum``/``_count`` from ``/metrics``, before vs after the run).

One warm-up run at the highest concurrency (not counted) comes first, then ``--repeats`` rounds, each
running every mode once in order, so that drift affects all modes alike. The table shows the median
over repeats of each figure; the speed-up is tokens/s of the mode divided by tokens/s of the
sequential run of the same round (median over rounds).

Run from the repository root::

    python bench/engine_bench.py                       # defaults: tiny model, concurrency 1 8 32 64
    python bench/engine_bench.py --requests 32 --repeats 1 --json results.json
    python bench/engine_bench.py --model /models/FAPO-GenRM-4B --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from services.local_stack import free_port, spawn, wait_ready

HOST = "127.0.0.1"
BATCH_METRIC = "genrm_server_batch_size"
PROBLEMS = [
    "What is 17 * 23?",
    "Solve 2x + 3 = 11 for x.",
    "Find the remainder when 2^{100} is divided by 7.",
    "Compute the sum of the first 10 positive integers.",
]


@dataclass
class RunResult:
    """One run of one mode: ``requests`` requests with at most ``concurrency`` in flight."""

    concurrency: int
    requests: int
    wall_s: float
    completion_tokens: int
    prompt_tokens: int
    latencies_s: list[float]
    mean_batch: float

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_s, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_s, 99) * 1000


@dataclass
class ModeSummary:
    """Medians over the repeats of one mode."""

    mode: str
    concurrency: int
    requests: int
    tokens_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    speedup: float


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mode_name(concurrency: int) -> str:
    return "sequential" if concurrency == 1 else f"{concurrency} concurrent"


def make_prompt(i: int) -> str:
    """A judge-style prompt of a few dozen tokens; the request number and problem vary per request."""
    problem = PROBLEMS[i % len(PROBLEMS)]
    return (
        f"Request {i}. [Math Problem] {problem} [AI Solution] The answer is \\boxed{{4}}. "
        "Is the solution correct? Answer 'True' or 'False'."
    )


# -- server process ------------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(model: str, args: argparse.Namespace) -> Iterator[str]:
    """Start one ``genrm serve`` subprocess, yield its base URL once ready, always stop it."""
    port = free_port(HOST)
    cli = ["serve", "--model", model, "--host", HOST, "--port", str(port), "--max-batch-size",
           str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning"]
    child = spawn("bench-server", f"http://{HOST}:{port}", cli)
    try:
        wait_ready(child, time.monotonic() + args.ready_timeout)
        yield child.url
    finally:
        child.stop()


# -- load generation -----------------------------------------------------------------------------


async def batch_histogram(client: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """``(sum, count)`` of the server's batch-size histogram, over all label sets."""
    async with client.get(f"{url}/metrics") as resp:
        resp.raise_for_status()
        text = await resp.text()
    totals = {"_sum": 0.0, "_count": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        metric = name.split("{", 1)[0]
        for suffix in totals:
            if metric == BATCH_METRIC + suffix:
                totals[suffix] += float(value)
    return totals["_sum"], totals["_count"]


async def complete(
    client: aiohttp.ClientSession, url: str, i: int, max_tokens: int
) -> tuple[float, dict[str, int]]:
    """One completion forced to ``max_tokens`` tokens; returns its latency and ``usage``."""
    body = {"prompt": make_prompt(i), "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    t0 = time.perf_counter()
    async with client.post(f"{url}/v1/completions", json=body) as resp:
        payload = await resp.read()
        latency = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"request {i}: HTTP {resp.status}: {payload[:300]!r}")
    return latency, json.loads(payload)["usage"]


async def run_mode(
    client: aiohttp.ClientSession, url: str, concurrency: int, requests: int, max_tokens: int
) -> RunResult:
    """Closed loop: ``concurrency`` workers send ``requests`` requests in total, one at a time each."""
    numbers = iter(range(requests))
    results: list[tuple[float, dict[str, int]]] = []

    async def worker() -> None:
        for i in numbers:  # a shared iterator: each request number is taken by exactly one worker
            results.append(await complete(client, url, i, max_tokens))

    sum0, count0 = await batch_histogram(client, url)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    sum1, count1 = await batch_histogram(client, url)
    batches = count1 - count0
    return RunResult(
        concurrency=concurrency,
        requests=requests,
        wall_s=wall,
        completion_tokens=sum(usage["completion_tokens"] for _, usage in results),
        prompt_tokens=sum(usage["prompt_tokens"] for _, usage in results),
        latencies_s=[latency for latency, _ in results],
        mean_batch=(sum1 - sum0) / batches if batches else 0.0,
    )


async def benchmark(url: str, args: argparse.Namespace) -> list[list[RunResult]]:
    """A warm-up run, then ``args.repeats`` rounds of every mode in order; returns the rounds."""
    peak = max(args.concurrency)
    # aiohttp, not httpx, generates the load: on 2 cores an httpx client saturated its own core at ~130 req/s
    # and measured itself (4.0k vs 23k tokens/s at 64 concurrent, same server; see docs/benchmarks.md).
    connector = aiohttp.TCPConnector(limit=peak)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        print(f"warm-up: {mode_name(peak)} ...", file=sys.stderr, flush=True)
        await run_mode(client, url, peak, max(args.requests, peak), args.max_tokens)
        rounds = []
        for r in range(1, args.repeats + 1):
            runs = []
            for c in args.concurrency:
                run = await run_mode(client, url, c, max(args.requests, c), args.max_tokens)
                print(f"repeat {r}/{args.repeats} {mode_name(c)}: {run.tokens_per_s:.0f} tokens/s, "
                      f"mean batch {run.mean_batch:.1f}", file=sys.stderr, flush=True)
                runs.append(run)
            rounds.append(runs)
        return rounds


# -- report --------------------------------------------------------------------------------------


def summarize(rounds: list[list[RunResult]]) -> list[ModeSummary]:
    """Median of each figure over the rounds; speed-up is taken against sequential of the same round."""
    baselines = [next(r for r in runs if r.concurrency == 1).tokens_per_s for runs in rounds]
    summaries = []
    for m, first in enumerate(rounds[0]):
        runs = [runs[m] for runs in rounds]
        summaries.append(ModeSummary(
            mode=mode_name(first.concurrency),
            concurrency=first.concurrency,
            requests=first.requests,
            tokens_per_s=statistics.median(r.tokens_per_s for r in runs),
            requests_per_s=statistics.median(r.requests_per_s for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            mean_batch=statistics.median(r.mean_batch for r in runs),
            speedup=statistics.median(r.tokens_per_s / b for r, b in zip(runs, baselines, strict=True)),
        ))
    return summaries


def markdown_table(summaries: list[ModeSummary]) -> str:
    header = "| mode | requests | tokens/s | req/s | p50 ms | p99 ms | mean batch | speed-up vs sequential |"
    rows = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [
        f"| {s.mode} | {s.requests} | {s.tokens_per_s:.0f} | {s.requests_per_s:.1f} | {s.p50_ms:.0f} | "
        f"{s.p99_ms:.0f} | {s.mean_batch:.1f} | {s.speedup:.2f}x |"
        for s in summaries
    ]
    return "\n".join(rows)


def machine_info() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": importlib.metadata.version("torch"),
        "python": platform.python_version(),
    }


def settings_info(args: argparse.Namespace, rounds: list[list[RunResult]]) -> dict[str, object]:
    runs = [r for runs in rounds for r in runs]
    return {
        "model": args.model or "tiny random-weight model (services.tiny_model)",
        "concurrency": args.concurrency,
        "requests_per_run": args.requests,
        "max_tokens": args.max_tokens,
        "mean_prompt_tokens": round(sum(r.prompt_tokens for r in runs) / sum(r.requests for r in runs), 1),
        "repeats": args.repeats,
        "warmup_runs": 1,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
    }


def report(args: argparse.Namespace, rounds: list[list[RunResult]]) -> None:
    summaries = summarize(rounds)
    machine, settings = machine_info(), settings_info(args, rounds)
    print(markdown_table(summaries))
    print()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"figures: median over {args.repeats} repeat(s); p99 of {args.requests} requests is near the maximum")
    short = sum(r.requests * args.max_tokens - r.completion_tokens for runs in rounds for r in runs)
    if short:
        print(f"warning: {short} tokens fewer than requested were generated (max_tokens not honoured)")
    if args.json:
        data = {
            "machine": machine,
            "settings": settings,
            "results": [asdict(s) for s in summaries],
            "runs": [[{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in runs] for runs in rounds],
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.json}")


# -- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/engine_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=None,
                   help="Local model directory [default: a tiny random-weight model written to a temp dir].")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64], metavar="N",
                   help="Requests in flight per mode; must include 1 (the sequential baseline) [default: 1 8 32 64].")
    p.add_argument("--requests", type=int, default=64,
                   help="Requests per run; a mode with higher concurrency sends that many instead [default: 64].")
    p.add_argument("--max-tokens", type=int, default=32,
                   help="Tokens each request generates (ignore_eos, greedy) [default: 32].")
    p.add_argument("--repeats", type=int, default=3, help="Measured rounds over all modes [default: 3].")
    p.add_argument("--max-batch-size", type=int, default=64, help="Server --max-batch-size [default: 64].")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="Server --max-wait-ms [default: 5].")
    p.add_argument("--ready-timeout", type=float, default=120.0,
                   help="Seconds to wait for the server's /ready [default: 120].")
    p.add_argument("--request-timeout", type=float, default=300.0, help="Per-request timeout, s [default: 300].")
    p.add_argument("--json", metavar="FILE", default=None, help="Also write the results as JSON to FILE.")
    args = p.parse_args(argv)
    if 1 not in args.concurrency:
        p.error("--concurrency must include 1: speed-ups are relative to sequential requests")
    if min(*args.concurrency, args.requests, args.max_tokens, args.repeats) < 1:
        p.error("--concurrency, --requests, --max-tokens and --repeats must be at least 1")
    args.concurrency = sorted(set(args.concurrency))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on SIGTERM too
    with tempfile.TemporaryDirectory(prefix="genrm-bench-") as tmp:
        model = args.model
        if model is None:
            from services.tiny_model import write_tiny_model

            model = str(Path(tmp) / "tiny-model")
            write_tiny_model(Path(model))
        print(f"starting the server on {model} ...", file=sys.stderr, flush=True)
        with running_server(model, args) as url:
            rounds = asyncio.run(benchmark(url, args))
    report(args, rounds)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
